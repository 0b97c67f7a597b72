r"""What :func:`~sensitivity.estimation.map.find_map` returns and writes: its result and its checkpoint file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensitivity.errors import InvalidArgumentError
from sensitivity.io import read_h5
from sensitivity.parallel import run_on_root

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

__all__ = ["CHECKPOINT_FORMAT", "HISTORY_KEYS", "REASONS", "MAPCheckpoint", "MAPResult", "reason_message",
           "reason_name"]

#: The ``format`` attribute of a checkpoint file.
CHECKPOINT_FORMAT = "sensitivity.estimation.map/1"
#: The history columns every run records (the caller's ``monitor`` may add more).
HISTORY_KEYS = ("objective", "gradient_norm", "derivative_norm", "step", "evaluations", "gradients",
                "hessian_actions", "krylov_iterations")
#: What each TAO reason means (for :attr:`MAPResult.message`).
REASONS = {
    "CONVERGED_GATOL": "converged: ||g|| <= gatol",
    "CONVERGED_GRTOL": "converged: ||g|| <= grtol |f|",
    "CONVERGED_GTTOL": "converged: ||g|| <= gttol ||g0||",
    "CONVERGED_STEPTOL": "converged: the step is smaller than steptol",
    "CONVERGED_MINF": "converged: f <= fmin",
    "CONVERGED_USER": "converged: stopped by the user",
    "DIVERGED_MAXITS": "stopped: the iteration limit max_it was reached",
    "DIVERGED_MAXFCN": "stopped: the limit on objective evaluations was reached",
    "DIVERGED_LS_FAILURE": "failed: the line search found no acceptable step",
    "DIVERGED_TR_REDUCTION": "failed: the trust region shrank below its minimum",
    "DIVERGED_NAN": "failed: the objective or its derivative is not finite",
    "DIVERGED_USER": "failed: stopped by the user",
}


def reason_name(reason) -> str:
    """The name of a TAO converged reason (e.g. ``CONVERGED_GTTOL``, ``DIVERGED_MAXITS``)."""
    R = PETSc.TAO.ConvergedReason
    names = [k for k in dir(R) if k.isupper() and getattr(R, k) == reason and "ITERATING" not in k]
    return names[0] if names else str(reason)


@dataclass
class MAPResult:
    """The outcome of :func:`find_map`.

    Attributes
    ----------
    point : vector
        The last iterate (a new vector of the space; the MAP point when :attr:`converged`).
    value : float
        The objective there.
    gradient_norm : float
        :math:`\\|d\\|_{W^{-1}}`, the norm TAO's tests use (the ℓ² norm without a metric).
    derivative_norm : float
        :math:`\\|d\\|_2`, the ℓ² norm of the derivative.
    iterations : int
        TAO iterations of the whole run (resumed runs included).
    evaluations, gradients, hessian_actions, krylov_iterations : int
        Objective evaluations (value only or with the derivative), of them those with the derivative,
        Hessian actions (Newton–CG: one per CG iteration, plus shifts), CG iterations.
    reason : str
        TAO's converged reason, e.g. ``"CONVERGED_GTTOL"`` or ``"DIVERGED_MAXITS"``.
    message : str
        What :attr:`reason` means.
    converged : bool
        Whether :attr:`reason` is a ``CONVERGED_*`` one.
    history : dict of numpy.ndarray
        Per iteration 0..iterations: ``objective``, ``gradient_norm``, ``derivative_norm``, ``step``
        and the cumulative counts ``evaluations``, ``gradients``, ``hessian_actions``,
        ``krylov_iterations``, and the columns of the caller's ``monitor``.
    method, metric : str
        The TAO method and the metric's name (``"l2"`` without one).
    resumed_at : int or None
        The iteration a resumed run continued from.
    finished_before_resume : bool
        A resumed checkpoint that already held a finished run (nothing was evaluated).
    seconds : float
        Wall time of this call's TAO solve (the slowest rank).
    """

    point: Any
    value: float
    gradient_norm: float
    derivative_norm: float
    iterations: int
    evaluations: int
    gradients: int
    hessian_actions: int
    krylov_iterations: int
    reason: str
    message: str
    converged: bool
    history: dict[str, np.ndarray]
    method: str
    metric: str
    resumed_at: int | None = None
    finished_before_resume: bool = False
    seconds: float = 0.0


def reason_message(reason: str) -> str:
    """What a TAO reason means, and its name."""
    return f"{REASONS.get(reason, reason)} ({reason})"


def _item(value: Any) -> Any:
    arr = np.asarray(value)
    if arr.dtype.kind in "SUO" and arr.ndim == 0:
        value = arr.item()
        return value.decode() if isinstance(value, bytes) else value
    return arr.item() if arr.ndim == 0 else arr


def _same(stored: Any, value: Any) -> bool:
    if stored is None:
        return False
    a, b = np.asarray(stored), np.asarray(value)
    if a.dtype.kind in "SUO" or b.dtype.kind in "SUO":
        return _item(stored) == value
    return a.shape == b.shape and bool(np.array_equal(a, b))


@dataclass
class MAPCheckpoint:
    """The state a :func:`find_map` checkpoint file holds (read by :meth:`read`; the same on every rank).

    Attributes
    ----------
    path : pathlib.Path
    iterate : numpy.ndarray
        The last checkpointed iterate in :meth:`ParameterSpace.to_array` order.
    history : dict of numpy.ndarray
        As in :class:`MAPResult`, up to that iterate.
    method : str
    reason : str or None
        TAO's reason if the run had ended when the file was written.
    config : dict
        The caller's ``config`` (compared on resume).
    state : dict
        What a resumed run reuses besides the iterate: ``lmvm_scale``, the scale of the ``lmvm`` initial
        Hessian (negative: none yet).
    """

    path: Path
    iterate: np.ndarray
    history: dict[str, np.ndarray]
    method: str
    reason: str | None
    config: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)

    @property
    def iterations(self) -> int:
        """The iteration of :attr:`iterate`."""
        return len(self.history["objective"]) - 1

    def finished(self, max_it: int) -> str | None:
        """Why the stored run needs no more iterations (TAO converged, or ``max_it`` reached), or ``None``."""
        if isinstance(self.reason, str) and self.reason.startswith("CONVERGED"):
            return f"reason {self.reason}, after {self.iterations} iterations"
        if self.iterations >= max_it:
            return f"{self.iterations} iterations, and max_it is {max_it}" + (
                f"; reason {self.reason}" if self.reason else "")
        return None

    @classmethod
    def read(cls, path, comm: MPI.Comm, *, size: int | None = None, config: Mapping[str, Any] | None = None,
             method: str | None = None, name: str = "find_map", prefix: str = "") -> MAPCheckpoint:
        """Read a checkpoint on rank 0 and broadcast it; refuse a file that is not one, is damaged, or was
        written for another problem (``size``), ``method`` or ``config`` — on every rank, with a message
        starting with ``prefix`` and naming the file (collective)."""
        path = Path(path)

        def read():
            try:
                data = read_h5(path)
            except Exception as exc:  # noqa: BLE001  (not HDF5, truncated, unreadable: a clean error on every rank)
                raise InvalidArgumentError(f"{prefix}cannot read the checkpoint {path}: {exc}") from None
            history = data.get("history")
            missing = [k for k in ("iterate",) if k not in data]
            if config is not None and not isinstance(data.get("config"), dict):
                missing.append("config")
            if isinstance(history, dict):
                missing += [f"history/{k}" for k in ("objective", "gradient_norm") if k not in history]
            else:
                missing.append("history")
            if missing:
                raise InvalidArgumentError(f"{prefix}{path} is not a checkpoint of {name} (no {missing[0]})")
            columns = {k: np.atleast_1d(np.asarray(v)) for k, v in history.items() if not isinstance(v, dict)}
            shapes = sorted({v.shape for v in columns.values()})
            iterate = np.asarray(data["iterate"])
            if (len(shapes) != 1 or len(shapes[0]) != 1 or shapes[0][0] < 1 or iterate.ndim != 1
                    or iterate.dtype.kind not in "fi" or not np.all(np.isfinite(iterate))):
                raise InvalidArgumentError(f"{prefix}the checkpoint {path} is damaged (history shapes {shapes}, "
                                           f"iterate of shape {iterate.shape})")
            reason = data.get("reason")
            state = data.get("state") if isinstance(data.get("state"), dict) else {}
            return cls(path, iterate.astype(float), {k: v.astype(float) for k, v in columns.items()},
                       str(data.get("method", "")), reason if isinstance(reason, str) else None,
                       dict(data.get("config", {})), {k: _item(v) for k, v in state.items()})

        ck = comm.bcast(run_on_root(comm, read), root=0)
        ck.path = path
        if config is not None:
            for key, value in config.items():
                stored = ck.config.get(key)
                if not _same(stored, value):
                    shown = None if stored is None else _item(stored)
                    raise InvalidArgumentError(f"{prefix}the checkpoint {path} was written with {key} = {shown!r}, "
                                               f"this run has {value!r}")
        if size is not None and len(ck.iterate) != size:
            raise InvalidArgumentError(f"{prefix}the checkpoint {path} is damaged or of another problem "
                                       f"({len(ck.iterate)} values for {size} parameters)")
        if method is not None and ck.method and ck.method != method:
            raise InvalidArgumentError(f"{prefix}the checkpoint {path} was written by method {ck.method!r}, "
                                       f"this run uses {method!r}")
        return ck
