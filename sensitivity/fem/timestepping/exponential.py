r"""Exponential propagator :math:`e^{tQ}\theta_0` and its exact tangent, by SLEPc MFN (docs/theory.md §2).

For a time-invariant problem the semi-discrete solution is
:math:`\theta(t) = e^{tQ}\theta_0` with :math:`Q = -M^{-1}A`. SLEPc's MFN computes
the action of the exponential by a Krylov method; :math:`Q` is applied as a
shell operator (one product with :math:`A` and one solve with :math:`M`, whose
factorization is shared).

The tangent along a control direction :math:`v` is :math:`\rho(t) = \nabla_J e^{tQ}\theta_0`
with :math:`J = \partial Q[v] = -M^{-1}(\partial A[v] + \partial M[v]\,Q)`
(:math:`-M^{-1}C(v)` without SUPG). It is computed exactly, as Van Loan's block
exponential (docs/theory.md §1) in Krylov form:

.. math::

    \exp\Bigl(t\begin{pmatrix}Q & J\\ 0 & Q\end{pmatrix}\Bigr)
    \begin{pmatrix}0\\ \theta_0\end{pmatrix} = \begin{pmatrix}\rho(t)\\ \theta(t)\end{pmatrix}.

It is the :math:`\Delta t \to 0` limit of the θ-scheme and its tangent, and equals
the dense toolkit's ``expm_frechet(Q, J, t) @ theta0`` on small meshes.
Dirichlet conditions must be homogeneous here (the affine case has no plain
exponential form). The walls are eliminated: on the free rows F,
:math:`Q = -M_{FF}^{-1}A_{FF}` (the :math:`\Delta t \to 0` limit of the θ-scheme, which
keeps the wall rows at zero), applied with :math:`M` factored with identity wall
rows and columns; wall rows of every result are zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dolfinx.fem as fem
import numpy as np
from mpi4py import MPI
from petsc4py import PETSc
from slepc4py import SLEPc

from sensitivity.errors import InvalidArgumentError, SensitivityError
from sensitivity.fem import backend
from sensitivity.fem.models.base import Generator
from sensitivity.fem.timestepping.theta import copy_state
from sensitivity.validation import real_time

__all__ = ["ExponentialPropagator"]


class _GeneratorShell:
    """Python context of the shell matrix :math:`x \\mapsto Qx = -M^{-1}Ax` (Dirichlet rows zero)."""

    def __init__(self, prop: "ExponentialPropagator"):
        self.prop = prop

    def mult(self, mat, x, y):
        self.prop.apply_Q(x, y)


class _BlockShell:
    """Python context of :math:`[a; b] \\mapsto [Qa + Jb; Qb]` on vectors of local size 2n."""

    def __init__(self, prop: "ExponentialPropagator", dA: PETSc.Mat, dM: PETSc.Mat | None):
        self.prop, self.dA, self.dM = prop, dA, dM
        self.a, self.b, self.qa, self.qb, self.w = (prop.problem.create_vector() for _ in range(5))

    def _split(self, vec, top, bottom):
        n = top.getLocalSize()
        arr = vec.getArray(readonly=True)
        top.array[:] = arr[:n]
        bottom.array[:] = arr[n:]

    def mult(self, mat, x, y):
        p = self.prop
        self._split(x, self.a, self.b)
        p.apply_Q(self.a, self.qa)
        p.apply_Q(self.b, self.qb)
        # J b = -M^{-1}(dA b + dM Q b)
        self.dA.mult(self.b, self.w)
        if self.dM is not None:
            self.dM.multAdd(self.qb, self.w, self.w)
        p.solve_mass(self.w, self.a)  # reuse a as output: a = M^{-1} w
        self.qa.axpy(-1.0, self.a)
        n = self.qa.getLocalSize()
        y.array[:n] = self.qa.array
        y.array[n:] = self.qb.array

    def destroy(self, mat):
        """Called by PETSc when the shell matrix is destroyed."""
        for v in (self.a, self.b, self.qa, self.qb, self.w):
            v.destroy()


class ExponentialPropagator:
    r""":math:`\theta(t) = e^{tQ}\theta_0` and :math:`\rho(t) = \nabla_J e^{tQ}\theta_0` by SLEPc MFN.

    Parameters
    ----------
    problem : Generator
        Time-invariant; Dirichlet conditions, if any, homogeneous.
    tol : float
        MFN relative tolerance.
    mass_petsc_options : dict, optional
        Solver for :math:`M` (default MUMPS LU).
    mfn_options : dict, optional
        Extra options for MFN (e.g. ``{"mfn_ncv": 40}``).
    """

    def __init__(
        self,
        problem: Generator,
        *,
        tol: float = 1e-12,
        mass_petsc_options: Mapping[str, Any] | None = None,
        mfn_options: Mapping[str, Any] | None = None,
    ):
        if not isinstance(problem, Generator):
            raise InvalidArgumentError(f"problem must be a Generator (e.g. AdvectionDiffusion), got {type(problem).__name__}")
        if not (0 < tol < 1):
            raise InvalidArgumentError(f"tol must be in (0, 1), got {tol!r}")
        self.problem = problem
        self.tol = float(tol)
        self.mfn_options = dict(mfn_options or {})
        self._bc_local, g_values = problem.dirichlet_rows()
        nonzero = problem.V.mesh.comm.allreduce(float(np.abs(g_values).max(initial=0.0)), op=MPI.MAX)
        if nonzero > 0.0:
            raise InvalidArgumentError(
                f"the exponential propagator needs homogeneous Dirichlet values, got max |g| = {nonzero:g}"
            )
        # M with identity wall rows and columns: its solve is M_FF^{-1} on the free rows.
        self._mass = problem.M.duplicate(copy=True)
        self._mass.zeroRowsColumns(problem.dirichlet_global_rows(self._bc_local), 1.0)
        self.mass_ksp = backend.create_ksp(self._mass, mass_petsc_options, "mass")
        self._w = problem.create_vector()

    # ------------------------------------------------------------------ operators

    def solve_mass(self, b: PETSc.Vec, out: PETSc.Vec) -> None:
        r"""``out`` = :math:`M_{FF}^{-1}b_F` on the free rows, zero on the walls (collective)."""
        b.array[self._bc_local] = 0.0
        self.mass_ksp.solve(b, out)
        out.array[self._bc_local] = 0.0

    def apply_Q(self, x: PETSc.Vec, y: PETSc.Vec) -> None:
        r""":math:`y = Qx = -M_{FF}^{-1}A_{FF}x_F`, zero on the walls (collective)."""
        self.problem.A.mult(x, self._w)
        self.solve_mass(self._w, y)
        y.scale(-1.0)

    def _mfn(self, mat: PETSc.Mat, t: float) -> SLEPc.MFN:
        mfn = SLEPc.MFN().create(mat.getComm())
        mfn.setOperator(mat)
        fn = mfn.getFN()
        fn.setType(SLEPc.FN.Type.EXP)
        fn.setScale(t)
        mfn.setTolerances(tol=self.tol)
        mfn.setErrorIfNotConverged(True)
        db = PETSc.Options()
        prefix = f"sensitivity_mfn_{id(mfn)}_"
        for key, value in self.mfn_options.items():
            db[f"{prefix}{key}"] = value
        mfn.setOptionsPrefix(prefix)
        mfn.setFromOptions()
        for key in self.mfn_options:
            del db[f"{prefix}{key}"]
        return mfn

    def _shell(self, context, local: int, size: int) -> PETSc.Mat:
        comm = self.problem.V.mesh.comm
        mat = PETSc.Mat().createPython(((local, size), (local, size)), context=context, comm=comm)
        mat.setUp()
        return mat

    # ------------------------------------------------------------------ public

    def apply(self, theta0: fem.Function | PETSc.Vec, t: float) -> PETSc.Vec:
        r""":math:`e^{tQ}\theta_0` (a new vector; collective)."""
        t = real_time(t, "t")
        x0 = self.problem.create_vector()
        copy_state(theta0, x0)
        x0.array[self._bc_local] = 0.0  # the state satisfies the homogeneous condition
        out = x0.duplicate()
        if t == 0.0:
            x0.copy(out)
            return out
        n, N = x0.getLocalSize(), x0.getSize()
        mat = self._shell(_GeneratorShell(self), n, N)
        mfn = self._mfn(mat, t)
        self._solve(mfn, x0, out)
        mfn.destroy()
        mat.destroy()
        x0.destroy()
        return out

    def tangent(self, theta0: fem.Function | PETSc.Vec, v: fem.Function, t: float) -> tuple[PETSc.Vec, PETSc.Vec]:
        r""":math:`(\theta(t), \rho(t))` with :math:`\rho = \nabla_J e^{tQ}\theta_0`, :math:`J = \partial Q[v]` (collective)."""
        t = real_time(t, "t")
        problem = self.problem
        problem.control.check_direction(v, "v")
        dA, dM = problem.dA(v), problem.dM(v)
        x0 = problem.create_vector()
        copy_state(theta0, x0)
        x0.array[self._bc_local] = 0.0  # the state satisfies the homogeneous condition
        n, N = x0.getLocalSize(), x0.getSize()
        context = _BlockShell(self, dA, dM)
        mat = self._shell(context, 2 * n, 2 * N)
        big0, big = mat.createVecRight(), mat.createVecRight()
        big0.array[:n] = 0.0
        big0.array[n:] = x0.array
        theta, rho = x0.duplicate(), x0.duplicate()
        if t == 0.0:
            x0.copy(theta)
            rho.set(0.0)
        else:
            mfn = self._mfn(mat, t)
            self._solve(mfn, big0, big)
            mfn.destroy()
            out = big.getArray(readonly=True)
            rho.array[:] = out[:n]
            theta.array[:] = out[n:]
        for obj in (big0, big, mat, dA, x0):
            obj.destroy()
        if dM is not None:
            dM.destroy()
        return theta, rho

    @staticmethod
    def _solve(mfn: SLEPc.MFN, b: PETSc.Vec, x: PETSc.Vec) -> None:
        mfn.solve(b, x)
        reason = mfn.getConvergedReason()
        if reason < 0:
            raise SensitivityError(f"SLEPc MFN did not converge (reason {reason})")

    def destroy(self) -> None:
        self.mass_ksp.destroy()
        self._mass.destroy()
        self._w.destroy()
