r"""The entry point :func:`find_map`: every argument checked alike on every rank, then one TAO solve
(module docstring of :mod:`sensitivity.estimation.map`)."""

from __future__ import annotations

import inspect
import itertools
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.map.checkpoint import MAPCheckpoint, MAPResult, reason_name
from sensitivity.estimation.map.metrics import Metric, PriorMetric, default_metric
from sensitivity.estimation.map.run import MAPRun, TemporaryOptions
from sensitivity.estimation.map.shells import HessianMat, MetricMat, MetricPC
from sensitivity.estimation.posterior import Misfit
from sensitivity.estimation.vectors import ArraySpace, FunctionVectors, ParameterSpace
from sensitivity.io import check_output_file
from sensitivity.validation import integer, same_on_all_ranks

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

__all__ = ["METHODS", "find_map"]

#: The TAO methods of :func:`find_map`.
METHODS = ("lmvm", "nls", "ntr")
_prefixes = itertools.count()


def _tolerance(value, name) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or float(value) < 0:
        raise InvalidArgumentError(f"{name} must be a non-negative finite number, got {value!r}")
    return float(value)


def _accepts(func, keyword: str) -> bool:
    try:
        return keyword in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def _has_hessian(objective, gauss_newton: bool) -> bool:
    action = getattr(objective, "hessian_action", None)
    if not callable(action):
        return False
    misfit = getattr(objective, "misfit", None)
    if isinstance(misfit, Misfit):
        if gauss_newton:
            return type(misfit).gauss_newton_action is not Misfit.gauss_newton_action or \
                type(misfit).hessian_action is not Misfit.hessian_action
        return type(misfit).hessian_action is not Misfit.hessian_action
    return True


def find_map(objective, q0, method: str = "nls", *, metric: Metric | str | None = "auto", precondition: bool = True,
             gatol: float = 0.0, grtol: float = 0.0, gttol: float = 1e-6, max_it: int = 200,
             max_evaluations: int | None = None, lmvm_history: int = 20, lmvm_scaling: bool | None = None,
             krylov_rtol: float | None = None,
             krylov_max_it: int | None = None, gauss_newton: bool = False, checkpoint=None,
             checkpoint_every: int = 10, resume: bool | MAPCheckpoint = False,
             config: Mapping[str, Any] | None = None,
             monitor: Callable[[int, Any, float, float], Mapping[str, float] | None] | None = None) -> MAPResult:
    r"""Minimize ``objective`` from ``q0`` with PETSc TAO (module docstring; collective).

    Parameters
    ----------
    objective
        A :class:`~sensitivity.estimation.posterior.Posterior`, a :class:`FunctionalObjective`, or any
        object with ``space``, ``value(q)``, ``value_and_derivative(q)`` and (Newton) ``hessian_action(q, v)``.
    q0 : vector
        The starting point, a vector of ``objective.space`` (copied).
    method : {"lmvm", "nls", "ntr"}
    metric : Metric, "auto" or None
        The geometry: ``"auto"`` (default) takes ``objective.metric``, else the prior metric of
        ``objective.prior``, else none; ``None`` or ``"l2"`` is the plain dof vector's.
    precondition : bool
        Use the metric in the iteration (initial LMVM Hessian, CG preconditioner); ``False`` keeps it
        only in the convergence test.
    gatol, grtol, gttol : float
        TAO's tests: stop when :math:`\|d\|_{W^{-1}} \le` ``gatol``, ``grtol``:math:`\,|U|` or
        ``gttol``:math:`\,\|d_0\|_{W^{-1}}` (:math:`d_0` at the run's first iterate). Non-negative, one positive.
    max_it : int
        Iterations of the whole run (a resumed run counts the stored ones).
    max_evaluations : int, optional
        Limit on objective evaluations of the whole run (default ``50 * max_it + 100``).
    lmvm_history : int
        Quasi-Newton pairs kept by ``lmvm``.
    lmvm_scaling : bool, optional
        Rescale the initial ``lmvm`` Hessian :math:`\tau W` by the last curvature pair (``MAPRun.lmvm_update``);
        default: for every metric but a prior's (whose precision is the exact Hessian of the prior term).
    krylov_rtol : float, optional
        Fixed relative tolerance of CG in (0, 1) (default: Eisenstat–Walker forcing).
    krylov_max_it : int, optional
        CG iterations per Newton step (default PETSc's 10000).
    gauss_newton : bool
        Newton on the Gauss–Newton Hessian (objectives whose ``hessian_action`` takes ``gauss_newton``).
    checkpoint : str or os.PathLike, optional
        HDF5 checkpoint file (module docstring).
    checkpoint_every : int
        Write it every this many iterations (and at the end).
    resume : bool or MAPCheckpoint
        Continue from ``checkpoint`` (or from a :class:`MAPCheckpoint` already read).
    config : mapping, optional
        Numbers, strings or arrays stored with the checkpoint and compared on resume (the
        configuration the run belongs to).
    monitor : callable, optional
        ``monitor(iteration, q, value, gradient_norm)`` at every new iterate, on every rank (it may be
        collective); a mapping it returns is added to the history (the same keys every time).

    Returns
    -------
    MAPResult
    """
    # ---- arguments: checked identically on every rank before any collective call
    if not isinstance(method, str) or method not in METHODS:
        raise InvalidArgumentError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    space = getattr(objective, "space", None)
    if not isinstance(space, ParameterSpace):
        raise InvalidArgumentError(f"objective must have a ParameterSpace 'space' (a Posterior, a FunctionalObjective, "
                                   f"...), got {type(objective).__name__}")
    for name in ("value", "value_and_derivative"):
        if not callable(getattr(objective, name, None)):
            raise InvalidArgumentError(f"objective must have a method {name}(q), {type(objective).__name__} has not")
    gatol, grtol, gttol = _tolerance(gatol, "gatol"), _tolerance(grtol, "grtol"), _tolerance(gttol, "gttol")
    if gatol == grtol == gttol == 0.0:
        raise InvalidArgumentError("gatol, grtol and gttol are all 0: give at least one positive tolerance")
    max_it = integer(max_it, "max_it", minimum=1)
    max_evaluations = 50 * max_it + 100 if max_evaluations is None else integer(max_evaluations, "max_evaluations",
                                                                                minimum=1)
    lmvm_history = integer(lmvm_history, "lmvm_history", minimum=1)
    checkpoint_every = integer(checkpoint_every, "checkpoint_every", minimum=1)
    if krylov_rtol is not None:
        krylov_rtol = _tolerance(krylov_rtol, "krylov_rtol")
        if not 0.0 < krylov_rtol < 1.0:
            raise InvalidArgumentError(f"krylov_rtol must be in (0, 1), got {krylov_rtol!r}")
    if krylov_max_it is not None:
        krylov_max_it = integer(krylov_max_it, "krylov_max_it", minimum=1)
    if not isinstance(precondition, bool) or not isinstance(gauss_newton, bool):
        raise InvalidArgumentError("precondition and gauss_newton must be True or False")
    if lmvm_scaling is not None and not isinstance(lmvm_scaling, bool):
        raise InvalidArgumentError(f"lmvm_scaling must be True, False or None, got {lmvm_scaling!r}")
    if method != "lmvm":
        if not _has_hessian(objective, gauss_newton):
            raise InvalidArgumentError(f"method {method!r} needs the objective's "
                                       f"{'Gauss-Newton ' if gauss_newton else ''}Hessian action, which "
                                       f"{type(objective).__name__} does not have; use method='lmvm'")
        if gauss_newton and not _accepts(objective.hessian_action, "gauss_newton"):
            raise InvalidArgumentError(f"gauss_newton=True needs hessian_action(q, v, gauss_newton=...); "
                                       f"{type(objective).__name__}.hessian_action does not take it")
    if isinstance(metric, str):
        if metric not in ("auto", "l2"):
            raise InvalidArgumentError(f"metric must be a Metric, 'auto', 'l2' or None, got {metric!r}")
        metric = default_metric(objective) if metric == "auto" else None
    elif metric is not None and not isinstance(metric, Metric):
        raise InvalidArgumentError(f"metric must be a Metric, 'auto', 'l2' or None, got {type(metric).__name__}")
    if metric is not None:
        mspace = metric.space
        if type(mspace) is not type(space) or mspace.size != space.size or (
                isinstance(space, FunctionVectors) and mspace.control_space.space != space.control_space.space):
            raise InvalidArgumentError(f"the metric ({metric.name}) is not on the objective's parameter space")
    if monitor is not None and not callable(monitor):
        raise InvalidArgumentError(f"monitor must be callable, got {type(monitor).__name__}")
    if resume is not False and resume is not True and not isinstance(resume, MAPCheckpoint):
        raise InvalidArgumentError(f"resume must be True, False or a MAPCheckpoint, got {resume!r}")
    if resume is True and checkpoint is None:
        raise InvalidArgumentError("resume=True needs a checkpoint path")
    if checkpoint is not None and (not isinstance(checkpoint, (str, Path)) or not str(checkpoint)):
        raise InvalidArgumentError(f"checkpoint must be a non-empty path, got {checkpoint!r}")
    config = {} if config is None else config
    if not isinstance(config, Mapping):
        raise InvalidArgumentError(f"config must be a mapping, got {type(config).__name__}")
    # ---- collective checks: the starting point, the checkpoint
    comm = space.comm
    q0 = space.check(q0, "q0")
    if isinstance(space, ArraySpace):
        same_on_all_ranks(comm, np.asarray(q0, dtype=float), "q0")
    ck = resume if isinstance(resume, MAPCheckpoint) else None
    if checkpoint is not None:
        checkpoint = check_output_file(comm, checkpoint, what="checkpoint")
        if resume is True:
            ck = MAPCheckpoint.read(checkpoint, comm, size=space.size, config=config, method=method)
    if ck is not None and len(ck.iterate) != space.size:
        raise InvalidArgumentError(f"the checkpoint {ck.path} holds {len(ck.iterate)} values for {space.size} "
                                   f"parameters")

    run = MAPRun(objective, method, metric, precondition, gauss_newton, monitor, checkpoint, checkpoint_every, config)
    run.krylov_rtol = krylov_rtol
    run.lmvm_scaling = (not isinstance(metric, PriorMetric)) if lmvm_scaling is None else lmvm_scaling
    if ck is not None:
        run.restore(ck)
        if ck.finished(max_it) is not None:  # nothing to do: the stored iterate and history are the result
            return run.result(space.from_array(ck.iterate), ck.reason or "DIVERGED_MAXITS", 0.0, ck.iterations, True)
    return _solve(run, q0 if ck is None else space.from_array(ck.iterate), gatol, grtol, gttol, max_it,
                  max_evaluations, lmvm_history, krylov_max_it, ck)


def _solve(run: MAPRun, start, gatol, grtol, gttol, max_it, max_evaluations, lmvm_history, krylov_max_it,
           ck: MAPCheckpoint | None) -> MAPResult:
    space, vectors, method, metric = run.space, run.vectors, run.method, run.metric
    comm = vectors.comm
    if ck is not None and run.gnorm0:  # gttol refers to the first iterate of the whole run
        last = float(run.history["gradient_norm"][-1])
        gttol = gttol * run.gnorm0 / last if last > 0 else gttol
    owned: list = []  # PETSc objects to destroy

    def keep(obj):
        owned.append(obj)
        return obj

    x = keep(vectors.create())
    vectors.to_vec(start, x)
    G = keep(vectors.create())
    n, nlocal = space.size, x.getLocalSize()
    sizes = ((nlocal, n), (nlocal, n))
    prefix = f"sensitivity_map_{next(_prefixes)}_"
    options: dict[str, Any] = {}
    tao = keep(PETSc.TAO().create(comm))
    try:
        tao.setOptionsPrefix(prefix)
        tao.setType(method)
        tao.setObjective(run.tao_value)
        tao.setObjectiveGradient(run.tao_value_and_gradient, G)
        tao.setTolerances(gatol=gatol, grtol=grtol, gttol=gttol)
        tao.setMaximumIterations(max_it - run.offset)
        tao.setMaximumFunctionEvaluations(max(max_evaluations - run.counts["evaluations"], 1))
        tao.setMonitor(run.tao_monitor)
        if metric is not None:
            norm = keep(PETSc.Mat().createPython(sizes, MetricMat(vectors, metric, inverse=True), comm=comm))
            norm.setUp()
            tao.setGradientNorm(norm)
        if method == "lmvm":
            # TAO gives its quasi-Newton matrix the fixed prefix "tao_lmvm_" (not the solver's)
            options["tao_lmvm_mat_lmvm_hist_size"] = lmvm_history
            if metric is not None and run.precondition:
                run.h0_ctx = MetricMat(vectors, metric, inverse=False)
                if run.lmvm_scaling and run.lmvm_scale is not None:  # resumed: the stored scale
                    run.h0_ctx.tau = run.lmvm_scale
                H0 = run.h0 = keep(PETSc.Mat().createPython(sizes, run.h0_ctx, comm=comm))
                H0.setUp()
                tao.setLMVMH0(H0)
                run.norm_ctx = MetricMat(vectors, metric, inverse=True)
                run.previous = (keep(vectors.create()), keep(vectors.create()))
        else:
            run.hessian_shell = HessianMat(run)
            H = keep(PETSc.Mat().createPython(sizes, run.hessian_shell, comm=comm))
            H.setOption(PETSc.Mat.Option.SYMMETRIC, True)
            H.setUp()
            tao.setHessian(run.tao_hessian, H)
            ksp = run.ksp = tao.getKSP()
            pc = ksp.getPC()
            if metric is not None and run.precondition:
                pc.setType(PETSc.PC.Type.PYTHON)
                pc.setPythonContext(MetricPC(vectors, metric))
            else:
                pc.setType(PETSc.PC.Type.NONE)
            ksp.setNormType(PETSc.KSP.NormType.NATURAL)
            ksp.setTolerances(rtol=run.krylov_rtol or 0.5, atol=0.0,
                              max_it=krylov_max_it if krylov_max_it is not None else 10000)
            ksp.setMonitor(run.ksp_monitor)
            options[f"{prefix}tao_{method}_init_type"] = "direction"  # the first Newton step sets the radius
            options[f"{prefix}tao_{method}_ksp_cg_dtype"] = "preconditioned"  # trust region in the W norm
        tao.setSolution(x)
        with TemporaryOptions(options):
            tao.setFromOptions()
            tao.setUp()
        start_time = time.perf_counter()
        try:
            tao.solve()
        except PETSc.Error:
            if run.error is not None:
                raise run.error from None
            raise
        if run.error is not None:
            raise run.error
        seconds = space.comm.allreduce(time.perf_counter() - start_time, op=MPI.MAX)
        reason = reason_name(tao.getConvergedReason())
        point = vectors.to_param(tao.getSolution())
        if run.checkpoint is not None:
            run.write_checkpoint(point, reason)
        return run.result(point, reason, seconds, ck.iterations if ck is not None else None, False)
    finally:
        for obj in reversed(owned):
            obj.destroy()
        if run.newton_point is not None:
            space.destroy(run.newton_point)
