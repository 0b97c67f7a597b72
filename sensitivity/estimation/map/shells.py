r"""PETSc's side of :func:`~sensitivity.estimation.map.find_map`: TAO's vectors, and the shell contexts of the metric
(TAO's gradient norm and initial LMVM Hessian, the CG preconditioner) and of the Hessian."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sensitivity.estimation.map.metrics import Metric
from sensitivity.estimation.vectors import FunctionVectors, ParameterSpace

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

if TYPE_CHECKING:
    from sensitivity.estimation.map.run import MAPRun

__all__ = ["HessianMat", "MetricMat", "MetricPC", "TaoVectors"]


class TaoVectors:
    """TAO's PETSc Vecs and the parameter vectors of a space."""

    def __init__(self, space: ParameterSpace):
        self.space = space
        self.distributed = isinstance(space, FunctionVectors)
        self.comm = space.comm if self.distributed else MPI.COMM_SELF

    def create(self) -> PETSc.Vec:
        if self.distributed:
            return self.space.zeros()
        return PETSc.Vec().createSeq(self.space.size, comm=MPI.COMM_SELF)

    def to_param(self, x: PETSc.Vec, out=None):
        """A parameter vector equal to TAO's ``x`` (ghosts updated)."""
        if not self.distributed:
            return np.array(x.getArray(readonly=True), dtype=float)
        out = self.space.zeros() if out is None else out
        x.copy(out)
        out.ghostUpdate(addv=PETSc.InsertMode.INSERT, mode=PETSc.ScatterMode.FORWARD)
        return out

    def to_vec(self, q, out: PETSc.Vec) -> PETSc.Vec:
        if self.distributed:
            q.copy(out)
        else:
            out.array[:] = np.asarray(q, dtype=float)
        return out


class MetricMat:
    """Shell matrix of a metric: ``mult`` applies tau W (or W^-1 with ``inverse``), ``solve`` the other one."""

    def __init__(self, vectors: TaoVectors, metric: Metric, inverse: bool):
        self.vectors, self.metric, self.inverse = vectors, metric, inverse
        self.tau = 1.0  # the scale of the initial LMVM Hessian tau W

    def _apply(self, op, x, y, scale=1.0):
        q = self.vectors.to_param(x)
        r = op(q)
        self.vectors.to_vec(r, y)
        if scale != 1.0:
            y.scale(scale)
        self.vectors.space.destroy(q)
        self.vectors.space.destroy(r)

    def mult(self, mat, x, y):
        if self.inverse:
            self._apply(self.metric.solve, x, y)
        else:
            self._apply(self.metric.apply, x, y, self.tau)

    def solve(self, mat, x, y):
        if self.inverse:
            self._apply(self.metric.apply, x, y)
        else:
            self._apply(self.metric.solve, x, y, 1.0 / self.tau)


class MetricPC:
    """Shell preconditioner applying W^-1."""

    def __init__(self, vectors: TaoVectors, metric: Metric):
        self.mat = MetricMat(vectors, metric, inverse=True)

    def apply(self, pc, x, y):
        self.mat.mult(None, x, y)


class HessianMat:
    """Shell matrix of the objective's Hessian at the current Newton point, plus TAO's shift (times W)."""

    def __init__(self, run: MAPRun):
        self.run = run
        self.shift_value = 0.0

    def mult(self, mat, x, y):
        run = self.run
        v = run.vectors.to_param(x)
        h = run.call(lambda: run.hessian_action(run.newton_point, v), "hessian")
        if self.shift_value:
            w = run.metric.apply(v) if run.metric is not None else run.space.copy(v)
            run.space.axpy(self.shift_value, w, h)
            run.space.destroy(w)
        run.vectors.to_vec(h, y)
        run.space.destroy(v)
        run.space.destroy(h)

    def shift(self, mat, a):
        self.shift_value += float(a)
