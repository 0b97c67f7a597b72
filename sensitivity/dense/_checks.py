"""Argument validation shared by the dense toolkit.

Every public function validates before it computes, and the messages name the
offending argument and value, so that a bad call fails identically on every MPI
rank instead of somewhere inside LAPACK.
"""

from __future__ import annotations

import numbers

import numpy as np

from sensitivity.errors import InvalidArgumentError

__all__ = ["as_square_matrix", "as_direction", "as_time", "as_positive_int"]


def as_square_matrix(A, name: str = "Q") -> np.ndarray:
    """Return ``A`` as a finite float64 or complex128 square 2-D array."""
    arr = np.asarray(A)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InvalidArgumentError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise InvalidArgumentError(f"{name} must be a non-empty square 2-D array, got shape {arr.shape}")
    arr = arr.astype(np.complex128 if np.iscomplexobj(arr) else np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        i, j = np.argwhere(~np.isfinite(arr))[0]
        raise InvalidArgumentError(f"{name} has a non-finite entry {name}[{i}, {j}] = {arr[i, j]}")
    return arr


def as_direction(J, d: int, name: str = "J", *, stack: bool = False) -> np.ndarray:
    """Return a perturbation direction of shape ``(d, d)`` (or ``(k, d, d)`` if ``stack``)."""
    arr = np.asarray(J)
    if stack and arr.ndim == 3:
        if arr.shape[1:] != (d, d):
            raise InvalidArgumentError(f"{name} must have shape (k, {d}, {d}), got {arr.shape}")
        for k in range(arr.shape[0]):
            as_square_matrix(arr[k], f"{name}[{k}]")
        return arr.astype(np.complex128 if np.iscomplexobj(arr) else np.float64, copy=False)
    arr = as_square_matrix(arr, name)
    if arr.shape != (d, d):
        raise InvalidArgumentError(f"{name} must have shape ({d}, {d}) like Q, got {arr.shape}")
    return arr


def as_time(t, name: str = "t") -> float:
    """Return ``t`` as a finite real float."""
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Real):
        raise InvalidArgumentError(f"{name} must be a real number, got {t!r}")
    t = float(t)
    if not np.isfinite(t):
        raise InvalidArgumentError(f"{name} must be finite, got {t}")
    return t


def as_positive_int(n, name: str, *, minimum: int = 1) -> int:
    """Return ``n`` as an int ``>= minimum``."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or n < minimum:
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}, got {n!r}")
    return int(n)
