"""Argument checks: the one home of every validation the package does before it computes.

Each check returns the normalized value or raises
:class:`~sensitivity.errors.InvalidArgumentError` with a message that names the
argument and the bad value. The checks are deterministic functions of their
arguments, so a call made with the same arguments on every MPI rank fails on
every rank alike, before any collective operation; :func:`same_on_all_ranks`
checks data that must agree between ranks.

This module needs only NumPy (and mpi4py for :func:`same_on_all_ranks`); checks of
DOLFINx objects use their attributes, not their types, so the dense toolkit can
use it without DOLFINx.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sensitivity.errors import InvalidArgumentError

__all__ = [
    "callable_",
    "choice",
    "direction_matrix",
    "finite_array",
    "finite_number",
    "finite_vector",
    "function_in",
    "in_range",
    "integer",
    "non_negative",
    "path",
    "positive",
    "real_time",
    "same_mesh",
    "same_on_all_ranks",
    "square_matrix",
]


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def finite_number(value: Any, name: str) -> float:
    """``value`` as a finite float (not a bool, not NaN or infinite)."""
    if not _is_real(value) or not np.isfinite(float(value)):
        raise InvalidArgumentError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def real_time(value: Any, name: str = "t") -> float:
    """A finite real time: "must be a real number" for a non-number, "must be finite" for NaN or infinity."""
    if not _is_real(value):
        raise InvalidArgumentError(f"{name} must be a real number, got {value!r}")
    if not np.isfinite(float(value)):
        raise InvalidArgumentError(f"{name} must be finite, got {value!r}")
    return float(value)


def positive(value: Any, name: str) -> float:
    """``value`` as a positive finite float."""
    if not _is_real(value) or not np.isfinite(float(value)) or float(value) <= 0.0:
        raise InvalidArgumentError(f"{name} must be positive and finite, got {value!r}")
    return float(value)


def non_negative(value: Any, name: str) -> float:
    """``value`` as a non-negative finite float."""
    if not _is_real(value) or not np.isfinite(float(value)) or float(value) < 0.0:
        raise InvalidArgumentError(f"{name} must be a non-negative finite number, got {value!r}")
    return float(value)


def in_range(value: Any, name: str, low: float, high: float, *, low_open: bool = False,
             high_open: bool = False) -> float:
    """``value`` as a finite float in the interval from ``low`` to ``high`` (closed unless told)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    ok = _is_real(value) and np.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        raise InvalidArgumentError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def integer(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int (not a bool, not a float) in ``[minimum, maximum]``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if ok and minimum is not None and value < minimum:
        ok = False
    if ok and maximum is not None and value > maximum:
        ok = False
    if not ok:
        if minimum is not None and maximum is not None:
            bounds = f" in [{minimum}, {maximum}]"
        elif minimum == 1:
            raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
        elif minimum is not None:
            bounds = f" >= {minimum}"
        else:
            bounds = f" <= {maximum}" if maximum is not None else ""
        raise InvalidArgumentError(f"{name} must be an integer{bounds}, got {value!r}")
    return int(value)


def choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``."""
    options = list(choices)
    try:
        found = value in options
    except TypeError:  # unhashable or incomparable
        found = False
    if not found:
        raise InvalidArgumentError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


def callable_(value: Any, name: str) -> Callable:
    """``value`` if it is callable."""
    if not callable(value):
        raise InvalidArgumentError(f"{name} must be callable, got {type(value).__name__}")
    return value


def path(value: Any, name: str) -> Path:
    """``value`` as a :class:`~pathlib.Path` (a non-empty ``str`` or ``os.PathLike``)."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise InvalidArgumentError(f"{name} must be a non-empty path, got {value!r}")
    return Path(value)


def finite_array(value: Any, name: str, *, shape: Sequence[int | None] | None = None,
                 dtype: Any = float) -> np.ndarray:
    """``value`` as a NumPy array of ``dtype`` with every entry finite and, if given, this ``shape``.

    ``None`` in ``shape`` matches any length along that axis. The message names the
    first bad entry.
    """
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be a numeric array, got {type(value).__name__}") from None
    if shape is not None:
        want = tuple(shape)
        if arr.ndim != len(want) or any(w is not None and w != s for w, s in zip(want, arr.shape)):
            text = "(" + ", ".join("any" if w is None else str(w) for w in want) + ("," if len(want) == 1 else "") + ")"
            raise InvalidArgumentError(f"{name} must have shape {text}, got {arr.shape}")
    bad = ~np.isfinite(arr)
    if np.any(bad):
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f"{name}[{', '.join(map(str, index))}]" if index else name
        raise InvalidArgumentError(f"{name} must be finite: {where} = {arr[index].item() if index else arr.item()!r}")
    return arr


def finite_vector(value: Any, name: str) -> Any:
    """``value`` (a PETSc Vec or a dolfinx Function) if every owned entry on every rank is finite (collective).

    Otherwise every rank raises the same error, naming the count of non-finite entries
    and the first one by global index: a NaN or infinity in an initial state, a
    direction or a coefficient field would otherwise spread silently to every result.
    """
    x = getattr(value, "x", None)
    vec = x.petsc_vec if x is not None and hasattr(x, "petsc_vec") else value
    local = np.asarray(vec.array_r)
    bad = np.flatnonzero(~np.isfinite(local))
    start = vec.getOwnershipRange()[0]
    first = (start + int(bad[0]), complex(local[bad[0]])) if bad.size else None
    comm = vec.getComm().tompi4py()
    counts = comm.allgather((int(bad.size), first))
    total = sum(c for c, _ in counts)
    if total:
        index, entry = min(f for _, f in counts if f is not None)
        shown = entry.real if entry.imag == 0 else entry
        raise InvalidArgumentError(f"{name} must be finite: {total} non-finite entr{'y' if total == 1 else 'ies'}, "
                                   f"the first {shown} at global index {index}")
    return value


def square_matrix(value: Any, name: str = "Q") -> np.ndarray:
    """A finite non-empty square 2-D array as float64 or complex128."""
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InvalidArgumentError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise InvalidArgumentError(f"{name} must be a non-empty square 2-D array, got shape {arr.shape}")
    arr = arr.astype(np.complex128 if np.iscomplexobj(arr) else np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        i, j = np.argwhere(~np.isfinite(arr))[0]
        raise InvalidArgumentError(f"{name} has a non-finite entry {name}[{i}, {j}] = {arr[i, j]}")
    return arr


def direction_matrix(value: Any, d: int, name: str = "J", *, stack: bool = False) -> np.ndarray:
    """A perturbation direction of shape ``(d, d)``, or ``(k, d, d)`` if ``stack``."""
    arr = np.asarray(value)
    if stack and arr.ndim == 3:
        if arr.shape[1:] != (d, d):
            raise InvalidArgumentError(f"{name} must have shape (k, {d}, {d}), got {arr.shape}")
        for k in range(arr.shape[0]):
            square_matrix(arr[k], f"{name}[{k}]")
        return arr.astype(np.complex128 if np.iscomplexobj(arr) else np.float64, copy=False)
    arr = square_matrix(arr, name)
    if arr.shape != (d, d):
        raise InvalidArgumentError(f"{name} must have shape ({d}, {d}) like Q, got {arr.shape}")
    return arr


def function_in(value: Any, space: Any, name: str, space_name: str = "the space") -> Any:
    """``value`` if it is a ``dolfinx.fem.Function`` in ``space`` (called ``space_name`` in the message)."""
    if getattr(value, "function_space", None) is None or not hasattr(value, "x"):
        raise InvalidArgumentError(f"{name} must be a dolfinx.fem.Function in {space_name} {_element(space)}, "
                                   f"got {type(value).__name__}")
    if value.function_space != space:
        raise InvalidArgumentError(f"{name} must be a dolfinx.fem.Function in {space_name} {_element(space)}, "
                                   f"got one in {_element(value.function_space)}")
    return value


def same_mesh(a: Any, b: Any, what: str) -> None:
    """Raise unless the function spaces (or meshes) ``a`` and ``b`` live on the same mesh."""
    mesh_a, mesh_b = getattr(a, "mesh", a), getattr(b, "mesh", b)
    if mesh_a is not mesh_b:
        raise InvalidArgumentError(f"{what} must live on the same mesh")


def _element(space: Any) -> str:
    try:
        return str(space.ufl_element())
    except AttributeError:
        return repr(space)


def same_on_all_ranks(comm: Any, value: Any, name: str) -> Any:
    """Raise on every rank unless ``value`` (a number or array) is bit-identical on all ranks of ``comm``.

    Collective. Data that enter every rank's copy of a computation — observations,
    noise levels, seeds — must agree, or each rank would see a different objective.
    NaNs compare equal to NaNs (their presence is another check's business).
    """
    arr = np.ascontiguousarray(np.asarray(value))
    header = (arr.dtype.str, arr.shape)
    headers = comm.allgather(header)
    if any(h != header for h in headers):
        raise InvalidArgumentError(f"{name} differs between MPI ranks: dtype/shape {sorted(set(map(str, headers)))}")
    first = comm.bcast(arr if comm.rank == 0 else None, root=0)
    mismatch = int(not np.array_equal(arr, first, equal_nan=arr.dtype.kind in "fc"))
    bad = comm.allgather(mismatch)
    if any(bad):
        ranks = [r for r, b in enumerate(bad) if b]
        raise InvalidArgumentError(f"{name} differs between MPI ranks (rank 0 and rank(s) {ranks} disagree); "
                                   "give every rank the same data, e.g. from a seeded generator")
    return value
