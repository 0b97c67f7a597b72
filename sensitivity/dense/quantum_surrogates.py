r"""How good the surrogates of the toy quantum model's probability Jacobian are (docs/theory.md §1, §3).

The exact probability Jacobian :math:`\partial p(t)/\partial V` of
:class:`~sensitivity.dense.quantum.ToyQuantumModel` is compared over time with its
first-order surrogate (seed 1.6, :math:`\partial x/\partial V_k \approx te^{tA}J_kx_0`),
whose error grows like ``t``, and its secular surrogate
(:math:`te^{tA}\mathcal P(J_k)x_0`), whose error stays below the ``t``-uniform bound
:math:`2(\sum_k b_k^2)^{1/2}` with :math:`b_k` the secular error bound of
:math:`J_k = -ie_ke_k^T`, so that its relative error decays like :math:`1/t`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from sensitivity.dense.quantum import ToyQuantumModel

__all__ = ["ErrorCurves", "SurrogateErrors", "surrogate_errors"]


@dataclass(frozen=True)
class ErrorCurves:
    r"""Errors of the first-order and secular surrogates against an exact derivative, versus ``t``.

    Attributes
    ----------
    times : numpy.ndarray, shape (n,)
    exact_norm : numpy.ndarray, shape (n,)
        The norm of the exact derivative at each time.
    first_order_error, secular_error : numpy.ndarray, shape (n,)
        The norm of (surrogate − exact) for each surrogate.
    """

    times: np.ndarray
    exact_norm: np.ndarray
    first_order_error: np.ndarray
    secular_error: np.ndarray

    @property
    def first_order_relative(self) -> np.ndarray:
        return self.first_order_error / self.exact_norm

    @property
    def secular_relative(self) -> np.ndarray:
        return self.secular_error / self.exact_norm


@dataclass(frozen=True)
class SurrogateErrors(ErrorCurves):
    r"""Errors of the surrogate probability Jacobians versus ``t`` (Frobenius norms per time).

    Attributes
    ----------
    times, first_order_error, secular_error : numpy.ndarray
        As for :class:`ErrorCurves`.
    exact_norm : numpy.ndarray
        :math:`\|\partial p(t)/\partial V\|_F`.
    secular_bound : float
        ``t``-uniform bound :math:`2(\sum_k b_k^2)^{1/2}` on ``secular_error``, with
        :math:`b_k` = :meth:`~sensitivity.dense.skew_hermitian.SkewHermitian.secular_error_bound`
        of :math:`J_k` (uses
        :math:`|x_j| \le 1`, :math:`\|x_0\| = 1`).
    """

    secular_bound: float


def surrogate_errors(H0: ArrayLike, x0: ArrayLike, V: ArrayLike, times: ArrayLike) -> SurrogateErrors:
    r"""Measure the first-order and secular surrogates of :math:`\partial p/\partial V` against the exact one.

    For each ``t`` in ``times`` the exact Jacobian (:meth:`ToyQuantumModel.jacobian`)
    and both surrogates (:meth:`ToyQuantumModel.surrogate_jacobian`, seed 1.6 and the
    secular form of docs/theory.md §1) are computed and
    compared in the Frobenius norm over all ``(j, k)``. Expected (docs/theory.md §1): the
    first-order error grows like ``t``; the secular error stays below
    :attr:`SurrogateErrors.secular_bound`, so its relative error decays like ``1/t``.

    Parameters
    ----------
    H0, x0 : array_like
        As in :class:`ToyQuantumModel`.
    V : array_like, shape (d,)
    times : array_like, shape (n,)

    Returns
    -------
    SurrogateErrors
    """
    model = ToyQuantumModel(H0, x0, times)
    V = model.check_potential(V)
    exact = model.jacobian(V)
    fo = model.surrogate_jacobian(V, "first_order")
    sec = model.surrogate_jacobian(V, "secular")

    def norms(a):
        return np.linalg.norm(a.reshape(model.m, -1), axis=1)

    skew = model.skew_hermitian(V)
    bounds = [skew.secular_error_bound(model.potential_direction(k)) for k in range(model.d)]
    return SurrogateErrors(
        times=model.times,
        exact_norm=norms(exact),
        first_order_error=norms(exact - fo),
        secular_error=norms(exact - sec),
        secular_bound=2.0 * float(np.linalg.norm(bounds)),
    )
