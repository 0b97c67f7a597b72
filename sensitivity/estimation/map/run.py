r"""One :func:`~sensitivity.estimation.map.find_map` call: its record (history, counts, checkpoints, result) and
TAO's callbacks (objective, gradient, Hessian, monitor, the LMVM scaling)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.map.checkpoint import (
    CHECKPOINT_FORMAT,
    HISTORY_KEYS,
    MAPCheckpoint,
    MAPResult,
    reason_message,
)
from sensitivity.estimation.map.metrics import Metric
from sensitivity.estimation.map.shells import HessianMat, MetricMat, TaoVectors
from sensitivity.estimation.vectors import ParameterSpace
from sensitivity.io import write_h5
from sensitivity.parallel import collect_garbage

import numpy as np
from petsc4py import PETSc

__all__ = ["GARBAGE_EVERY", "MAPRecord", "MAPRun", "TemporaryOptions"]

#: Every this many iterations the monitor frees the PETSc objects Python has dropped (collectively).
GARBAGE_EVERY = 10


class MAPRecord:
    """What one :func:`find_map` call records: the history per iteration, the counts, the checkpoints, the result."""

    def __init__(self, space: ParameterSpace, method: str, metric: Metric | None, monitor, checkpoint: Path | None,
                 checkpoint_every: int, config: Mapping[str, Any]):
        self.space, self.method, self.metric = space, method, metric
        self.user_monitor, self.checkpoint, self.checkpoint_every = monitor, checkpoint, checkpoint_every
        self.config = dict(config)
        self.history: dict[str, list] = {k: [] for k in HISTORY_KEYS}
        self.extra_keys: list[str] | None = None
        self.counts = {"evaluations": 0, "gradients": 0, "hessian_actions": 0, "krylov_iterations": 0}
        self.offset = 0
        self.resumed = False
        self.gnorm0: float | None = None
        self.lmvm_scaling = False
        self.lmvm_scale: float | None = None  # None until a curvature pair (or a checkpoint) gives it

    def record(self, k: int, q, f: float, gnorm: float, step: float, dnorm: float) -> None:
        """Append iterate ``k`` (with the columns of the caller's monitor); checkpoint every ``checkpoint_every``."""
        if self.gnorm0 is None:
            self.gnorm0 = gnorm
        extra = {}
        if self.user_monitor is not None:
            extra = self.user_monitor(k, q, f, gnorm) or {}
            if not isinstance(extra, Mapping):
                raise InvalidArgumentError(f"monitor must return a mapping of numbers or None, got "
                                           f"{type(extra).__name__}")
            keys = sorted(str(key) for key in extra)
            if self.extra_keys is None:
                self.extra_keys = keys
                for key in keys:
                    if key in HISTORY_KEYS:
                        raise InvalidArgumentError(f"monitor returned {key!r}, a column find_map records itself")
                    self.history.setdefault(key, [])
            if keys != self.extra_keys:
                raise InvalidArgumentError(f"monitor returned the columns {keys}, but the history has "
                                           f"{self.extra_keys}")
        row = {"objective": f, "gradient_norm": gnorm, "derivative_norm": dnorm,
               "step": step, **self.counts, **{str(key): float(v) for key, v in extra.items()}}
        for key, column in self.history.items():
            column.append(row.get(key, math.nan))  # a stored column no monitor fills any more: NaN
        if self.checkpoint is not None and k > 0 and k % self.checkpoint_every == 0:
            self.write_checkpoint(q)

    def write_checkpoint(self, q, reason: str | None = None) -> None:
        data = {"iterate": self.space.to_array(q),
                "history": {k: np.asarray(v, dtype=float) for k, v in self.history.items()},
                "config": self.config, "state": {"lmvm_scale": -1.0 if self.lmvm_scale is None else self.lmvm_scale}}
        attrs = {"format": CHECKPOINT_FORMAT, "method": self.method}
        if reason is not None:
            attrs["reason"] = reason
        data.update(attrs)  # strings are written as attributes of the file
        write_h5(self.space.comm, self.checkpoint, data)

    def restore(self, ck: MAPCheckpoint) -> None:
        length = len(ck.history["objective"])
        self.history = {k: [float(x) for x in ck.history.get(k, np.zeros(length))] for k in HISTORY_KEYS}
        extra = sorted(k for k in ck.history if k not in HISTORY_KEYS)
        for key in extra:
            self.history[key] = [float(x) for x in ck.history[key]]
        self.extra_keys = extra if self.user_monitor is not None else None
        for key in self.counts:
            self.counts[key] = round(self.history[key][-1])
        self.offset = ck.iterations
        self.resumed = True
        scale = ck.state.get("lmvm_scale")
        if ck.method == "lmvm" and self.lmvm_scaling and isinstance(scale, float) and scale > 0:
            self.lmvm_scale = scale
        self.gnorm0 = float(self.history["gradient_norm"][0])

    def result(self, point, reason: str, seconds: float, resumed_at, finished_before: bool) -> MAPResult:
        h = {k: np.asarray(v, dtype=float) for k, v in self.history.items()}
        return MAPResult(
            point=point, value=float(h["objective"][-1]), gradient_norm=float(h["gradient_norm"][-1]),
            derivative_norm=float(h["derivative_norm"][-1]), iterations=len(h["objective"]) - 1,
            evaluations=int(self.counts["evaluations"]), gradients=int(self.counts["gradients"]),
            hessian_actions=int(self.counts["hessian_actions"]),
            krylov_iterations=int(self.counts["krylov_iterations"]), reason=reason, message=reason_message(reason),
            converged=reason.startswith("CONVERGED"), history=h, method=self.method,
            metric=self.metric.name if self.metric is not None else "l2", resumed_at=resumed_at,
            finished_before_resume=finished_before, seconds=seconds)


class MAPRun(MAPRecord):
    """One :func:`find_map` call: TAO's callbacks (objective calls counted, errors kept) and its record."""

    def __init__(self, objective, method: str, metric: Metric | None, precondition: bool, gauss_newton: bool,
                 monitor, checkpoint: Path | None, checkpoint_every: int, config: Mapping[str, Any]):
        super().__init__(objective.space, method, metric, monitor, checkpoint, checkpoint_every, config)
        self.objective = objective
        self.vectors = TaoVectors(self.space)
        self.precondition, self.gauss_newton = precondition, gauss_newton
        self.error: BaseException | None = None
        self.first_call = True
        self.newton_point = None
        self.krylov_rtol: float | None = None
        self.hessian_shell: HessianMat | None = None
        self.ksp: PETSc.KSP | None = None
        # lmvm with lmvm_scaling: the initial Hessian tau W, tau from the last curvature pair
        self.h0: PETSc.Mat | None = None
        self.h0_ctx: MetricMat | None = None
        self.norm_ctx: MetricMat | None = None
        self.previous: tuple[PETSc.Vec, PETSc.Vec] | None = None

    # -- objective calls, counted; exceptions kept to be re-raised after TAO returns

    def call(self, func, what: str):
        try:
            return func()
        except BaseException as exc:
            if self.error is None:
                self.error = exc
            raise

    def hessian_action(self, q, v):
        self.counts["hessian_actions"] += 1
        if self.gauss_newton:
            return self.objective.hessian_action(q, v, gauss_newton=True)
        return self.objective.hessian_action(q, v)

    def _check_first(self, value, d) -> None:
        if self.first_call:
            self.first_call = False
            if not math.isfinite(value):
                raise InvalidArgumentError(f"the objective is not finite at the starting point: value = {value!r}")
            if d is not None and not math.isfinite(self.space.norm(d)):
                raise InvalidArgumentError("the objective's derivative is not finite at the starting point")

    def tao_value(self, tao, x):
        def work():
            q = self.vectors.to_param(x)
            self.counts["evaluations"] += 1
            value = float(self.objective.value(q))
            self._check_first(value, None)
            self.space.destroy(q)
            return value

        return self.call(work, "value")

    def tao_value_and_gradient(self, tao, x, g):
        def work():
            q = self.vectors.to_param(x)
            self.counts["evaluations"] += 1
            self.counts["gradients"] += 1
            value, d = self.objective.value_and_derivative(q)
            value = float(value)
            self._check_first(value, d)
            self.vectors.to_vec(d, g)
            self.space.destroy(q)
            self.space.destroy(d)
            return value

        return self.call(work, "value_and_derivative")

    def tao_hessian(self, tao, x, H, P):
        def work():
            if self.newton_point is None:
                self.newton_point = self.vectors.to_param(x)
            else:
                self.newton_point = self.vectors.to_param(x, self.newton_point) if self.vectors.distributed \
                    else self.vectors.to_param(x)
            self.hessian_shell.shift_value = 0.0
            gnorm = float(tao.getSolutionStatus()[2])
            if self.krylov_rtol is None:  # Eisenstat-Walker forcing, relative to the run's first gradient
                g0 = self.gnorm0 if self.gnorm0 else gnorm
                rtol = min(0.5, math.sqrt(gnorm / g0)) if g0 > 0 else 0.5
                self.ksp.setTolerances(rtol=max(rtol, 1e-12))

        return self.call(work, "hessian")

    def ksp_monitor(self, ksp, its, rnorm):
        if its > 0:
            self.counts["krylov_iterations"] += 1

    # -- the monitor and the LMVM scaling

    def tao_monitor(self, tao):
        def work():
            its, f, gnorm, _, step, _ = tao.getSolutionStatus()
            k = self.offset + int(its)
            last = len(self.history["objective"]) - 1
            if k <= last:  # the resumed iterate (already recorded) or a rejected trust-region step
                if self.method == "lmvm" and int(its) == 0:
                    self.lmvm_update(tao, 0, float(gnorm))
                return
            if self.method == "lmvm":  # first: a checkpoint written by record holds the scale of this step
                self.lmvm_update(tao, int(its), float(gnorm))
            q = self.vectors.to_param(tao.getSolution())
            dnorm = float(tao.getGradient()[0].norm())
            self.record(k, q, float(f), float(gnorm), float(step), dnorm)
            self.space.destroy(q)
            if k % GARBAGE_EVERY == 0:  # at the same iterations on every rank
                collect_garbage(self.space.comm)

        self.call(work, "monitor")

    def lmvm_update(self, tao, its: int, gnorm: float) -> None:
        """Rescale the initial ``lmvm`` Hessian (with ``lmvm_scaling``) and choose the next initial step.

        With ``lmvm_scaling`` the initial Hessian is :math:`\\tau W`, :math:`\\tau = y^TW^{-1}y/s^Ty` from the
        last step :math:`s` and gradient change :math:`y` (Shanno and Phua's scaling, Nocedal & Wright
        (6.20), in the metric): a metric that is only a geometry (a mass matrix) then gets the
        objective's scale. A prior precision is left unscaled: it is the exact Hessian of the prior term,
        and the quasi-Newton pairs only have to learn the data's low-rank curvature. Until a pair (or a
        checkpoint) gives a scale, the step -W^-1 d ignores the data's curvature and may be far too long
        (an objective that overflows there stops the Moré-Thuente search), so that line search starts
        at 1/||d|| and extrapolates; the others start at the full quasi-Newton step.
        """
        if self.lmvm_scaling and self.h0 is not None:
            x, g = tao.getSolution(), tao.getGradient()[0]
            if its > 0:
                s, y = self.previous
                s.aypx(-1.0, x)  # s = x_k - x_{k-1}
                y.aypx(-1.0, g)  # y = g_k - g_{k-1}
                sy = float(s.dot(y))
                if sy > 0.0:
                    wy = y.duplicate()
                    self.norm_ctx.mult(None, y, wy)
                    tau = float(y.dot(wy)) / sy
                    wy.destroy()
                    if math.isfinite(tau) and tau > 0.0:
                        self.lmvm_scale = self.h0_ctx.tau = tau
                        self.h0.stateIncrease()  # LMVM recomputes its products with J0
            x.copy(self.previous[0])
            g.copy(self.previous[1])
        first = its == 0 and self.lmvm_scale is None and gnorm > 1.0
        tao.getLineSearch().setInitialStepLength(1.0 / gnorm if first else 1.0)


class TemporaryOptions:
    """Put options in PETSc's database while a solver reads them, then restore the database."""

    def __init__(self, values: Mapping[str, Any]):
        self.values = dict(values)
        self.saved: dict[str, str | None] = {}

    def __enter__(self):
        db = PETSc.Options()
        for key, value in self.values.items():
            self.saved[key] = db.getString(key) if db.hasName(key) else None
            db.setValue(key, value)
        return self

    def __exit__(self, *exc):
        db = PETSc.Options()
        for key, old in self.saved.items():
            db.delValue(key)
            if old is not None:
                db.setValue(key, old)
