r"""Surrogates for ∇_J exp(tQ) built from truncations of the NH95 series (docs/theory.md §1).

All three are of the form :math:`e^{tQ}\,P(t)` with a polynomial :math:`P`:

- first order (seed 1.6): :math:`\tilde Y_0(t) = t\,e^{tQ}J`, exact when :math:`[Q, J] = 0`;
- seed (4.1): :math:`e^{tQ}\bigl(tJ + \tfrac{t^2}{2}(JQ - QJ) - \tfrac{t^3}{3}QJQ\bigr)`,
  i.e. :math:`e^{tQ}\int_0^t (I - sQ)J(I + sQ)\,ds`;
- order K: :math:`e^{tQ}\sum_{n=0}^{K} \frac{t^{n+1}}{(n+1)!}\mathrm{ad}_{-Q}^n(J)` (seed 1.5
  truncated; K = 0 is 1.6).

Their errors against the exact derivative are studied in the rate-matrix and
skew-Hermitian modules and the demos; the surrogates that are uniformly good in
``t`` are :meth:`RateMatrix.asymptotic_derivative` and
:func:`~sensitivity.dense.skew_hermitian.secular_surrogate`.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike

from sensitivity.dense.frechet import ad_terms, check_frechet_arguments
from sensitivity.validation import integer

__all__ = ["first_order_surrogate", "seed_4_1_surrogate", "series_surrogate"]


def first_order_surrogate(Q: ArrayLike, J: ArrayLike, t: float = 1.0) -> np.ndarray:
    """First-order surrogate ``t exp(tQ) J`` (seed 1.6).

    Parameters
    ----------
    Q, J : array_like, shape (d, d)
    t : float

    Returns
    -------
    numpy.ndarray, shape (d, d)
    """
    Q, J, t = check_frechet_arguments(Q, J, t)
    return t * scipy.linalg.expm(t * Q) @ J


def seed_4_1_surrogate(Q: ArrayLike, J: ArrayLike, t: float = 1.0) -> np.ndarray:
    r"""The seed's "higher-order" surrogate (4.1).

    .. math:: e^{tQ}\Bigl(tJ + \frac{t^2}{2}(JQ - QJ) - \frac{t^3}{3}QJQ\Bigr)

    It is not the order-2 truncation of the series (whose last term is
    :math:`\frac{t^3}{6}(JQ^2 - 2QJQ + Q^2J)`); both are offered.
    """
    Q, J, t = check_frechet_arguments(Q, J, t)
    P = t * J + 0.5 * t**2 * (J @ Q - Q @ J) - (t**3 / 3.0) * (Q @ J @ Q)
    return scipy.linalg.expm(t * Q) @ P


def series_surrogate(Q: ArrayLike, J: ArrayLike, t: float = 1.0, order: int = 1) -> np.ndarray:
    r"""Order-K truncation of the NH95 series (seed 1.5).

    .. math:: \tilde Y_K(t) = e^{tQ}\sum_{n=0}^{K}\frac{t^{n+1}}{(n+1)!}\,\mathrm{ad}_{-Q}^n(J)

    Parameters
    ----------
    Q, J : array_like, shape (d, d)
    t : float
    order : int
        K >= 0; ``order=0`` is :func:`first_order_surrogate`.
    """
    Q, J, t = check_frechet_arguments(Q, J, t)
    K = integer(order, "order", minimum=0)
    S = np.zeros(Q.shape, dtype=np.result_type(Q, J))
    coeff = 1.0
    for n, A in zip(range(K + 1), ad_terms(Q, J)):
        coeff *= t / (n + 1)  # t^{n+1}/(n+1)!
        S = S + coeff * A
    return scipy.linalg.expm(t * Q) @ S
