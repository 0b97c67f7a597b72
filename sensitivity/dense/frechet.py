r"""Exact derivative of the matrix exponential (docs/theory.md §1, seed §1).

The object is the Fréchet derivative of :math:`Q \mapsto e^{tQ}` in the
direction :math:`J`,

.. math::

    Y(t) = \nabla_J \exp(tQ) = \int_0^t e^{(t-s)Q} J e^{sQ}\,ds
         = e^{tQ} \sum_{n\ge 0} \frac{t^{n+1}}{(n+1)!}\,\mathrm{ad}_{-Q}^n(J)
    \qquad \text{(seed 1.4, 1.5)},

with :math:`\mathrm{ad}_{-Q}(X) = XQ - QX`. It is the solution of the sensitivity
equation :math:`Y' = QY + J e^{tQ}`, :math:`Y(0) = 0` (seed 1.3), and equals the
Fréchet derivative :math:`L(tQ, tJ)` of :func:`scipy.linalg.expm_frechet`.

Four independent exact methods are offered; they agree to round-off on
well-conditioned problems and are checked against each other in the tests:

``"scipy"`` (default)
    Al-Mohy & Higham's scaling-and-squaring Padé algorithm, via
    :func:`scipy.linalg.expm_frechet`.
``"block"``
    Van Loan's block exponential: the upper-right block of
    :math:`\exp\begin{pmatrix} tQ & tJ \\ 0 & tQ\end{pmatrix}`.
``"eig"``
    Daleckii–Krein divided differences for diagonalizable :math:`Q = V D V^{-1}`:
    :math:`Y = V(\hat J \circ \Phi)V^{-1}`, :math:`\hat J = V^{-1}JV`,
    :math:`\Phi_{ij} = (e^{t\lambda_i}-e^{t\lambda_j})/(\lambda_i-\lambda_j)`,
    :math:`\Phi_{ii} = t e^{t\lambda_i}`. :class:`EigenFrechet` shares one
    eigendecomposition between many directions (module
    :mod:`~sensitivity.dense.daleckii_krein`, which also says when it refuses a matrix).
``"series"``
    The NH95 series (seed 1.5) with a rigorous truncation criterion, inside
    scaling and squaring (:math:`Y(2t) = Y(t)e^{tQ} + e^{tQ}Y(t)`).

The gradient of a scalar :math:`F(Q) = f(e^{tQ})` with respect to every entry of
:math:`Q` costs one Fréchet evaluation by the adjoint identity
:math:`L(A)^* = L(A^*)` (:mod:`~sensitivity.dense.gradient`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike

from sensitivity.dense.daleckii_krein import expm_frechet_eig
from sensitivity.errors import InvalidArgumentError, SensitivityError
from sensitivity.validation import choice, direction_matrix, integer, positive, real_time, square_matrix

__all__ = [
    "METHODS",
    "Method",
    "ad_terms",
    "check_frechet_arguments",
    "expm_frechet",
    "expm_frechet_block",
    "expm_frechet_scipy",
    "expm_frechet_series",
]

Method = Literal["scipy", "block", "eig", "series"]
METHODS: tuple[str, ...] = ("scipy", "block", "eig", "series")


def _result_dtype(*arrays: np.ndarray) -> type:
    return np.complex128 if any(np.iscomplexobj(a) for a in arrays) else np.float64


# --------------------------------------------------------------------------- scipy / block


def check_frechet_arguments(Q: ArrayLike, J: ArrayLike, t: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The arguments ``(Q, J, t)`` of every ∇_J exp(tQ) function, checked and normalized.

    ``Q`` finite, square and non-empty, ``J`` finite of ``Q``'s shape (float64 or
    complex128 each), ``t`` a finite real; the message names the bad argument.
    """
    Q = square_matrix(Q, "Q")
    return Q, direction_matrix(J, Q.shape[0]), real_time(t, "t")


def expm_frechet_scipy(Q: ArrayLike, J: ArrayLike, t: float = 1.0) -> np.ndarray:
    """∇_J exp(tQ) by Al-Mohy & Higham's algorithm (:func:`scipy.linalg.expm_frechet`).

    Parameters
    ----------
    Q, J : array_like, shape (d, d)
        Generator and perturbation direction, real or complex.
    t : float
        Time.

    Returns
    -------
    numpy.ndarray, shape (d, d)
        :math:`Y(t) = L(tQ, tJ)` (seed 1.4).
    """
    Q, J, t = check_frechet_arguments(Q, J, t)
    return scipy.linalg.expm_frechet(t * Q, t * J, compute_expm=False, check_finite=False)


def expm_frechet_block(Q: ArrayLike, J: ArrayLike, t: float = 1.0) -> np.ndarray:
    r"""∇_J exp(tQ) as the upper-right block of a block exponential (Van Loan 1978).

    .. math::
        \exp\begin{pmatrix} tQ & tJ\\ 0 & tQ \end{pmatrix}
        = \begin{pmatrix} e^{tQ} & Y(t)\\ 0 & e^{tQ}\end{pmatrix}.

    Costs one exponential of a ``(2d, 2d)`` matrix (about 8 times a ``d``-sized one).
    """
    Q, J, t = check_frechet_arguments(Q, J, t)
    d = Q.shape[0]
    big = np.zeros((2 * d, 2 * d), dtype=_result_dtype(Q, J))
    big[:d, :d] = t * Q
    big[d:, d:] = t * Q
    big[:d, d:] = t * J
    return scipy.linalg.expm(big)[:d, d:]


# --------------------------------------------------------------------------- NH95 series


def ad_terms(Q: ArrayLike, J: ArrayLike) -> Iterator[np.ndarray]:
    r"""Yield :math:`\mathrm{ad}_{-Q}^n(J) = \sum_{l=0}^n (-1)^l\binom{n}{l} Q^l J Q^{n-l}`, n = 0, 1, ...

    By the recursion :math:`A_0 = J`, :math:`A_{n+1} = A_n Q - Q A_n` (seed 1.5). The
    arguments are checked at the call, before the first term is asked for.
    """
    Q = square_matrix(Q, "Q")
    return _ad_recursion(Q, direction_matrix(J, Q.shape[0]))


def _ad_recursion(Q: np.ndarray, J: np.ndarray) -> Iterator[np.ndarray]:
    A = J
    while True:
        yield A
        A = A @ Q - Q @ A


def _taylor_expm(A: np.ndarray, rtol: float, max_terms: int) -> np.ndarray:
    """e^A by its Taylor series (meant for ||A||_1 <= 1), stopped by a rigorous tail bound."""
    a = np.linalg.norm(A, 1)
    X = np.eye(A.shape[0], dtype=A.dtype)
    term = X
    for n in range(1, max_terms + 1):
        term = term @ A / n
        X = X + term
        q = a / (n + 1)  # ||term_{n+k}|| <= ||term_n|| q^k
        if q < 1.0 and np.linalg.norm(term, 1) * q / (1.0 - q) <= rtol * np.linalg.norm(X, 1):
            return X
    raise SensitivityError(f"Taylor series of exp did not converge in {max_terms} terms")


def expm_frechet_series(
    Q: ArrayLike,
    J: ArrayLike,
    t: float = 1.0,
    *,
    rtol: float = 2.0**-53,
    theta: float = 1.0,
    max_terms: int = 60,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, int]]:
    r"""∇_J exp(tQ) by the NH95 series (seed 1.5) inside scaling and squaring.

    With :math:`A = tQ/2^s`, :math:`E = tJ/2^s` and :math:`s` the least integer with
    :math:`\|A\|_1 \le \theta`, the series
    :math:`L(A, E) = e^{A}\sum_n \mathrm{ad}_{-A}^n(E)/(n+1)!` is summed until the
    rigorous tail bound :math:`\|T_K\|\,q/(1-q)`, :math:`q = 2\|A\|_1/(K+2)`
    (from :math:`\|\mathrm{ad}_{-A}(X)\|\le 2\|A\|\|X\|`), falls below
    ``rtol`` times the partial sum; then
    :math:`Y(2\tau) = Y(\tau)e^{\tau Q} + e^{\tau Q}Y(\tau)` is applied ``s`` times.

    Parameters
    ----------
    Q, J : array_like, shape (d, d)
    t : float
    rtol : float
        Relative truncation tolerance of the series, > 0.
    theta : float
        Scaling threshold for :math:`\|tQ\|_1/2^s`, > 0; ``numpy.inf`` disables scaling
        (then the raw series is summed, which cancels badly when ``t||Q||`` is large).
    max_terms : int
        Raise :class:`SensitivityError` if the series needs more terms.
    return_info : bool
        Also return ``{"terms": K + 1, "squarings": s}``.
    """
    Q, J, t = check_frechet_arguments(Q, J, t)
    rtol = positive(rtol, "rtol")
    if not (isinstance(theta, float) and theta == np.inf):
        theta = positive(theta, "theta")
    max_terms = integer(max_terms, "max_terms", minimum=1)
    dtype = _result_dtype(Q, J)
    norm = t * np.linalg.norm(Q, 1)
    s = 0 if (norm <= theta or not np.isfinite(theta)) else int(np.ceil(np.log2(norm / theta)))
    scale = t / 2.0**s
    A = (scale * Q).astype(dtype, copy=False)
    E = (scale * J).astype(dtype, copy=False)
    a = np.linalg.norm(A, 1)
    S = np.zeros_like(E)
    terms = 0
    factorial = 1.0
    for n, T in enumerate(_ad_recursion(A, E)):
        factorial *= n + 1  # (n+1)!
        term = T / factorial
        S = S + term
        terms = n + 1
        q = 2.0 * a / (n + 2)
        tn = np.linalg.norm(term, 1)
        if tn == 0.0 or (q < 1.0 and tn * q / (1.0 - q) <= rtol * np.linalg.norm(S, 1)):
            break
        if terms >= max_terms:
            raise SensitivityError(
                f"NH95 series did not converge in max_terms = {max_terms} terms "
                f"(||tQ||_1/2^s = {a:.3g}); lower theta or raise max_terms"
            )
    X = _taylor_expm(A, rtol, max_terms) if a <= 1.0 else scipy.linalg.expm(A)
    Y = X @ S
    for _ in range(s):
        Y = Y @ X + X @ Y
        X = X @ X
    if return_info:
        return Y, {"terms": terms, "squarings": s}
    return Y


# --------------------------------------------------------------------------- dispatch

_DISPATCH: dict[str, Callable[..., np.ndarray]] = {
    "scipy": expm_frechet_scipy,
    "block": expm_frechet_block,
    "eig": expm_frechet_eig,
    "series": expm_frechet_series,
}


def expm_frechet(Q: ArrayLike, J: ArrayLike, t: float = 1.0, *, method: Method = "scipy") -> np.ndarray:
    r"""The exact derivative :math:`\nabla_J \exp(tQ)` (seed 1.1, 1.4).

    Parameters
    ----------
    Q : array_like, shape (d, d)
        Generator, real or complex.
    J : array_like, shape (d, d)
        Perturbation direction.
    t : float
        Time (any finite real).
    method : {"scipy", "block", "eig", "series"}
        See the module docstring. ``"scipy"`` is the default: it is the fastest
        and handles defective ``Q``. ``"eig"`` raises
        :class:`~sensitivity.errors.NotDiagonalizableError` for a ``Q`` whose
        eigenvectors are too ill-conditioned for an accurate result (no fallback:
        :mod:`~sensitivity.dense.daleckii_krein`).

    Returns
    -------
    numpy.ndarray, shape (d, d)
        Real when ``Q`` and ``J`` are real.

    Examples
    --------
    >>> import numpy as np
    >>> from sensitivity.dense import expm_frechet
    >>> Q = np.array([[-1.0, 1.0], [2.0, -2.0]]); J = np.array([[0.0, 1.0], [0.0, 0.0]])
    >>> a = expm_frechet(Q, J, 0.5); b = expm_frechet(Q, J, 0.5, method="series")
    >>> bool(np.allclose(a, b, rtol=1e-13, atol=0))
    True
    """
    try:
        choice(method, "method", METHODS)
    except InvalidArgumentError as err:  # the message callers have always matched
        raise InvalidArgumentError(f"unknown method {method!r}; choose one of {METHODS}") from err
    return _DISPATCH[method](Q, J, t)
