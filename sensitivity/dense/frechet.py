r"""Exact derivative of the matrix exponential (SPEC §1, seed §1).

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
    eigendecomposition between many directions.
``"series"``
    The NH95 series (seed 1.5) with a rigorous truncation criterion, inside
    scaling and squaring (:math:`Y(2t) = Y(t)e^{tQ} + e^{tQ}Y(t)`).

The gradient of a scalar :math:`F(Q) = f(e^{tQ})` with respect to every entry of
:math:`Q` costs one Fréchet evaluation by the adjoint identity
:math:`L(A)^* = L(A^*)` (:func:`expm_gradient`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import scipy.linalg

from sensitivity.dense._checks import as_direction, as_square_matrix, as_time
from sensitivity.errors import InvalidArgumentError, NotDiagonalizableError, SensitivityError

__all__ = [
    "METHODS",
    "EigenFrechet",
    "ad_terms",
    "exp_divided_differences",
    "expm_frechet",
    "expm_frechet_block",
    "expm_frechet_eig",
    "expm_frechet_scipy",
    "expm_frechet_series",
    "expm_gradient",
    "value_and_gradient",
]

Method = Literal["scipy", "block", "eig", "series"]
METHODS: tuple[str, ...] = ("scipy", "block", "eig", "series")

#: Largest eigenvector-matrix condition number the ``"eig"`` method accepts by default.
DEFAULT_MAX_EIGVEC_CONDITION = 1e8


def _result_dtype(*arrays: np.ndarray) -> type:
    return np.complex128 if any(np.iscomplexobj(a) for a in arrays) else np.float64


# --------------------------------------------------------------------------- scipy / block


def expm_frechet_scipy(Q, J, t: float = 1.0) -> np.ndarray:
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
    Q = as_square_matrix(Q, "Q")
    J = as_direction(J, Q.shape[0])
    t = as_time(t)
    return scipy.linalg.expm_frechet(t * Q, t * J, compute_expm=False, check_finite=False)


def expm_frechet_block(Q, J, t: float = 1.0) -> np.ndarray:
    r"""∇_J exp(tQ) as the upper-right block of a block exponential (Van Loan 1978).

    .. math::
        \exp\begin{pmatrix} tQ & tJ\\ 0 & tQ \end{pmatrix}
        = \begin{pmatrix} e^{tQ} & Y(t)\\ 0 & e^{tQ}\end{pmatrix}.

    Costs one exponential of a ``(2d, 2d)`` matrix (about 8 times a ``d``-sized one).
    """
    Q = as_square_matrix(Q, "Q")
    J = as_direction(J, Q.shape[0])
    t = as_time(t)
    d = Q.shape[0]
    big = np.zeros((2 * d, 2 * d), dtype=_result_dtype(Q, J))
    big[:d, :d] = t * Q
    big[d:, d:] = t * Q
    big[:d, d:] = t * J
    return scipy.linalg.expm(big)[:d, d:]


# --------------------------------------------------------------------------- Daleckii–Krein


# 1/(2k+1)!, k = 0..8: the Taylor coefficients of sinh(z)/z in z^2.
_SINHC_COEFFS = tuple(1.0 / float(np.prod(np.arange(2, 2 * k + 2, dtype=float))) for k in range(9))


def _sinhc_series(z: np.ndarray) -> np.ndarray:
    """sinh(z)/z for |z| <= 1/2 by its Taylor series to z^16 (relative error < 1e-19)."""
    z2 = z * z
    out = np.full_like(z, _SINHC_COEFFS[-1])
    for c in reversed(_SINHC_COEFFS[:-1]):
        out = out * z2 + c
    return out


def exp_divided_differences(lam, t: float) -> np.ndarray:
    r"""First divided differences of :math:`\lambda \mapsto e^{t\lambda}` on ``lam``.

    .. math::
        \Phi_{ij} = \frac{e^{t\lambda_i} - e^{t\lambda_j}}{\lambda_i - \lambda_j},\qquad
        \Phi_{ii} = t e^{t\lambda_i},

    the matrix :math:`\Phi(t)` of the seed's proof of Theorem 2.1. Confluent and
    nearly confluent pairs (:math:`|t(\lambda_i-\lambda_j)| \le 1`) use
    :math:`\Phi_{ij} = t\,e^{t(\lambda_i+\lambda_j)/2}\,\mathrm{sinhc}(t(\lambda_i-\lambda_j)/2)`,
    which has no cancellation; the others the quotient, which has none either.

    Parameters
    ----------
    lam : array_like, shape (d,)
        Eigenvalues, real or complex.
    t : float

    Returns
    -------
    numpy.ndarray, shape (d, d)
    """
    lam = np.asarray(lam)
    t = as_time(t)
    tl = t * lam
    a, b = tl[:, None], tl[None, :]
    diff = a - b
    close = np.abs(diff) <= 1.0
    phi = np.empty(diff.shape, dtype=np.result_type(tl.dtype, np.float64))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lam_diff = lam[:, None] - lam[None, :]
        far = ~close
        ea = np.broadcast_to(np.exp(a), diff.shape)
        eb = np.broadcast_to(np.exp(b), diff.shape)
        phi[far] = (ea[far] - eb[far]) / lam_diff[far]
        mid = 0.5 * (a + b)
        phi[close] = (t * np.exp(mid) * _sinhc_series(0.5 * diff))[close]
    return phi


def _real_pair_order(lam: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Reorder an eigendecomposition of a *real* matrix as (conjugate pairs, real eigenvalues).

    LAPACK's ``geev`` returns real eigenvalues with real eigenvectors and each
    non-real pair as adjacent columns ``v, conj(v)`` (positive imaginary part
    first), exactly. Returns ``(order, n2)`` with the pairs ``(λ, conj λ)`` adjacent
    in the first ``n2`` places and the real eigenvalues after them, or ``None`` if
    that exact structure is not found (then the caller keeps complex arithmetic).
    """
    if not np.iscomplexobj(lam):
        return np.arange(lam.size), 0
    im = lam.imag
    real_idx = np.flatnonzero(im == 0)
    first = np.flatnonzero(im > 0)
    second = first + 1
    if real_idx.size + 2 * first.size != lam.size or (second.size and second[-1] >= lam.size):
        return None
    if np.any(V[:, real_idx].imag) or not (
        np.array_equal(lam[second], lam[first].conj()) and np.array_equal(V[:, second], V[:, first].conj())
    ):
        return None
    return np.concatenate([np.column_stack([first, second]).ravel(), real_idx]), int(2 * first.size)


class EigenFrechet:
    r"""Daleckii–Krein evaluation of ∇_J exp(tQ) sharing one eigendecomposition.

    For diagonalizable :math:`Q = V\,\mathrm{diag}(\lambda)\,V^{-1}`,

    .. math:: \nabla_J \exp(tQ) = V\,(\hat J \circ \Phi(t))\,V^{-1},\qquad \hat J = V^{-1} J V

    (SPEC §1; :func:`exp_divided_differences` gives Φ). The decomposition and
    :math:`\Phi` are computed once; each direction then costs four matrix
    products, and a stack of directions is processed in one batched call.

    For real ``Q`` the four products are real even when the spectrum is not:
    with :math:`V = WT`, where :math:`W` holds the real eigenvectors and the real
    and imaginary parts :math:`(\Re v, \Im v)` of one vector of each conjugate
    pair, and :math:`T` is block diagonal with blocks
    :math:`\begin{pmatrix}1&1\\ i&-i\end{pmatrix}`, one has
    :math:`\nabla_J \exp(tQ) = W\,\mathcal{H}(W^{-1}JW)\,W^{-1}` with
    :math:`\mathcal{H}(K) = T((T^{-1}KT)\circ\Phi)T^{-1}`, which acts on each
    (1 or 2) × (1 or 2) block of ``K`` separately and costs :math:`O(d^2)`. A
    complex direction is split into its real and imaginary parts. This is about
    four times cheaper than complex products.

    Parameters
    ----------
    Q : array_like, shape (d, d)
        Real or complex, diagonalizable. Hermitian (and real symmetric) matrices
        are recognised and use :func:`numpy.linalg.eigh` with a unitary ``V``.
    t : float
        Time.
    max_condition : float
        Largest accepted 2-norm condition number of ``V``; above it ``Q`` is
        treated as not diagonalizable and :class:`NotDiagonalizableError` is raised
        (use ``method="scipy"`` or ``"block"`` for such matrices).

    Attributes
    ----------
    eigenvalues : numpy.ndarray, shape (d,)
        Real when ``Q`` is real with a real spectrum; for real ``Q`` ordered as the
        conjugate pairs :math:`(\lambda, \bar\lambda)`, then the real eigenvalues.
    eigvec_condition : float
        :math:`\|V\|_2\|V^{-1}\|_2` with unit-norm columns (1 for normal ``Q``).
    """

    def __init__(self, Q, t: float = 1.0, *, max_condition: float = DEFAULT_MAX_EIGVEC_CONDITION):
        Q = as_square_matrix(Q, "Q")
        self.t = as_time(t)
        self._real = not np.iscomplexobj(Q)
        self._W = None
        if np.array_equal(Q, Q.conj().T):
            lam, V = np.linalg.eigh(Q)
            Vinv = V.conj().T
            self._set(lam, V, Vinv, 1.0)
            if self._real:
                self._set_real_basis(V, Vinv, 0)
            return
        lam, V = np.linalg.eig(Q)
        pairing = _real_pair_order(lam, V) if self._real else None
        if pairing is None:
            cond = float(np.linalg.cond(V))
            self._check_condition(cond, max_condition)
            self._set(lam, V, np.linalg.inv(V), cond)
            return
        order, n2 = pairing
        d = V.shape[0]
        lam, V = lam[order], V[:, order]
        W = np.empty((d, d))
        W[:, 0:n2:2] = V[:, 0:n2:2].real
        W[:, 1:n2:2] = V[:, 0:n2:2].imag
        W[:, n2:] = V[:, n2:].real
        # V = W T and T = diag(sqrt 2 | 1) U with U unitary, so cond(V) = cond(W diag(sqrt 2 | 1)).
        scale = np.ones(d)
        scale[:n2] = np.sqrt(2.0)
        cond = float(np.linalg.cond(W * scale))
        self._check_condition(cond, max_condition)
        Winv = np.linalg.inv(W)
        if n2 == 0:
            self._set(lam.real, W, Winv, cond)
        else:
            Vinv = np.empty((d, d), dtype=np.complex128)  # T^{-1} W^{-1}
            Vinv[0:n2:2] = 0.5 * (Winv[0:n2:2] - 1j * Winv[1:n2:2])
            Vinv[1:n2:2] = Vinv[0:n2:2].conj()
            Vinv[n2:] = Winv[n2:]
            self._set(lam, V, Vinv, cond)
        self._set_real_basis(W, Winv, n2)

    @staticmethod
    def _check_condition(cond: float, max_condition: float) -> None:
        if not np.isfinite(cond) or cond > max_condition:
            raise NotDiagonalizableError(
                f"Q is not numerically diagonalizable: its eigenvector matrix has condition "
                f"number {cond:.3e} > max_condition = {max_condition:.1e}; use method='scipy' or 'block'"
            )

    @classmethod
    def from_eigendecomposition(cls, lam, V, Vinv, t: float = 1.0, *, real: bool = False) -> "EigenFrechet":
        """Build from a known decomposition ``Q = V diag(lam) Vinv`` (no checks of it)."""
        self = cls.__new__(cls)
        self.t = as_time(t)
        self._real = bool(real)
        self._W = None
        V = np.asarray(V)
        Vinv = np.asarray(Vinv)
        self._set(np.asarray(lam), V, Vinv, float(np.linalg.norm(V, 2) * np.linalg.norm(Vinv, 2)))
        return self

    def _set(self, lam, V, Vinv, cond) -> None:
        self.eigenvalues = lam
        self.V = V
        self.Vinv = Vinv
        self.eigvec_condition = cond
        self.divided_differences = exp_divided_differences(lam, self.t)

    def _set_real_basis(self, W: np.ndarray, Winv: np.ndarray, n2: int) -> None:
        """Precompute the blocks of Φ that the real-arithmetic map H needs (see the class docstring).

        Indices ``0..n2-1`` of ``W`` hold ``(Re v, Im v)`` of each conjugate pair and of
        Φ its ``(λ, conj λ)``; indices ``n2..d-1`` are the real eigenvalues.
        """
        self._W, self._Winv, self._n2 = W, Winv, n2
        phi = self.divided_differences
        A, B, R = slice(0, n2, 2), slice(1, n2, 2), slice(n2, None)
        self._phi_rr = np.ascontiguousarray(phi[R, R].real)
        if n2:
            self._phi_pp1 = 0.5 * (phi[A, A] + phi[B, A])
            self._phi_pp2 = 0.5j * (phi[B, A] - phi[A, A])
            self._phi_ra = phi[R, A]
            self._phi_ar_re = np.ascontiguousarray(phi[A, R].real)
            self._phi_ar_im = np.ascontiguousarray(phi[A, R].imag)

    @property
    def dim(self) -> int:
        return self.V.shape[0]

    def expm(self) -> np.ndarray:
        """e^{tQ} from the decomposition."""
        X = (self.V * np.exp(self.t * self.eigenvalues)) @ self.Vinv
        return X.real if self._real else X

    def _hadamard_real(self, K: np.ndarray, Z: np.ndarray) -> None:
        r"""Z = H(K) = T((T^{-1} K T) ∘ Φ) T^{-1} for one real ``(d, d)`` matrix K.

        The pair columns ``(a, b)`` of ``K`` and ``Z``, adjacent in memory, are read
        as the complex numbers ``K[:, a] + i K[:, b]`` (a complex view, no copy):
        rows of pairs mix the two rows ``a, b`` with the coefficients ``_phi_pp1``,
        ``_phi_pp2``; real rows multiply by Φ. The pair rows of the real columns
        multiply ``K[a] + i K[b]`` by conj Φ, and the real block by Φ.
        """
        n2 = self._n2
        Kc = K[:, :n2].view(np.complex128)
        Zc = Z[:, :n2].view(np.complex128)
        ca, cb = Kc[0:n2:2], Kc[1:n2:2]
        za = ca * self._phi_pp1
        za += cb * self._phi_pp2
        Zc[0:n2:2] = za
        zb = cb * self._phi_pp1
        zb -= ca * self._phi_pp2
        Zc[1:n2:2] = zb
        if n2 < K.shape[0]:
            np.multiply(Kc[n2:], self._phi_ra, out=Zc[n2:])
            ka, kb = K[0:n2:2, n2:], K[1:n2:2, n2:]
            g, h = self._phi_ar_re, self._phi_ar_im  # conj Φ = g - i h
            Z[0:n2:2, n2:] = ka * g + kb * h
            Z[1:n2:2, n2:] = kb * g - ka * h
            np.multiply(K[n2:, n2:], self._phi_rr, out=Z[n2:, n2:])

    def _apply_real(self, J: np.ndarray) -> np.ndarray:
        """W H(W^{-1} J W) W^{-1} for a real direction or stack, in real arithmetic."""
        buf = np.matmul(self._Winv, np.ascontiguousarray(J))
        K = np.matmul(buf, self._W)
        if self._n2 == 0:
            K *= self._phi_rr
            Z = K
        else:
            Z = buf  # W^{-1} J is no longer needed
            if K.ndim == 2:
                self._hadamard_real(K, Z)
            else:  # one direction at a time keeps the temporaries small (in cache)
                for Kk, Zk in zip(K, Z):
                    self._hadamard_real(Kk, Zk)
        np.matmul(self._W, Z, out=buf if Z is K else K)
        return np.matmul(buf if Z is K else K, self._Winv)

    def __call__(self, J) -> np.ndarray:
        """∇_J exp(tQ) for one direction ``(d, d)`` or a stack ``(k, d, d)``."""
        J = as_direction(J, self.dim, stack=True)
        if self._W is not None:
            if np.iscomplexobj(J):
                return self._apply_real(J.real) + 1j * self._apply_real(J.imag)
            return self._apply_real(J)
        Jhat = self.Vinv @ J @ self.V
        Y = self.V @ (Jhat * self.divided_differences) @ self.Vinv
        return Y.real if (self._real and not np.iscomplexobj(J)) else Y


def expm_frechet_eig(Q, J, t: float = 1.0, *, max_condition: float = DEFAULT_MAX_EIGVEC_CONDITION) -> np.ndarray:
    """∇_J exp(tQ) by Daleckii–Krein divided differences (see :class:`EigenFrechet`)."""
    Q = as_square_matrix(Q, "Q")
    J = as_direction(J, Q.shape[0])
    return EigenFrechet(Q, t, max_condition=max_condition)(J)


# --------------------------------------------------------------------------- NH95 series


def ad_terms(Q: np.ndarray, J: np.ndarray) -> Iterator[np.ndarray]:
    r"""Yield :math:`\mathrm{ad}_{-Q}^n(J) = \sum_{l=0}^n (-1)^l\binom{n}{l} Q^l J Q^{n-l}`, n = 0, 1, ...

    By the recursion :math:`A_0 = J`, :math:`A_{n+1} = A_n Q - Q A_n` (seed 1.5).
    """
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
    Q,
    J,
    t: float = 1.0,
    *,
    rtol: float = 2.0**-53,
    theta: float = 1.0,
    max_terms: int = 60,
    return_info: bool = False,
):
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
        Relative truncation tolerance of the series.
    theta : float
        Scaling threshold for :math:`\|tQ\|_1/2^s`; ``numpy.inf`` disables scaling
        (then the raw series is summed, which cancels badly when ``t||Q||`` is large).
    max_terms : int
        Raise :class:`SensitivityError` if the series needs more terms.
    return_info : bool
        Also return ``{"terms": K + 1, "squarings": s}``.
    """
    Q = as_square_matrix(Q, "Q")
    J = as_direction(J, Q.shape[0])
    t = as_time(t)
    if not (theta > 0):
        raise InvalidArgumentError(f"theta must be positive, got {theta}")
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
    for n, T in enumerate(ad_terms(A, E)):
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


# --------------------------------------------------------------------------- dispatch and gradient

_DISPATCH: dict[str, Callable[..., np.ndarray]] = {
    "scipy": expm_frechet_scipy,
    "block": expm_frechet_block,
    "eig": expm_frechet_eig,
    "series": expm_frechet_series,
}


def _method(method: str) -> Callable[..., np.ndarray]:
    try:
        return _DISPATCH[method]
    except (KeyError, TypeError):
        raise InvalidArgumentError(f"unknown method {method!r}; choose one of {METHODS}") from None


def expm_frechet(Q, J, t: float = 1.0, *, method: Method = "scipy") -> np.ndarray:
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
        and handles defective ``Q``.

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
    return _method(method)(Q, J, t)


def expm_gradient(Q, G, t: float = 1.0, *, method: Method = "scipy") -> np.ndarray:
    r"""Gradient of :math:`F(Q) = f(e^{tQ})` with respect to every entry of ``Q``.

    Given :math:`G = \partial f/\partial X` at :math:`X = e^{tQ}` (for complex
    :math:`X`, :math:`G = \partial f/\partial\Re X + i\,\partial f/\partial\Im X`, so
    that :math:`df = \Re\langle G, dX\rangle_F`), the adjoint identity
    :math:`L(A)^* = L(A^*)` gives, at the cost of one Fréchet evaluation,

    .. math:: \nabla_Q F = t\,L(tQ^*, G),\qquad dF[J] = \Re\langle \nabla_Q F, J\rangle_F .

    Parameters
    ----------
    Q, G : array_like, shape (d, d)
    t : float
    method : {"scipy", "block", "eig", "series"}

    Returns
    -------
    numpy.ndarray, shape (d, d)
        Real when ``Q`` is real (the gradient with respect to real entries).
    """
    Q = as_square_matrix(Q, "Q")
    G = as_direction(G, Q.shape[0], "G")
    t = as_time(t)
    # expm_frechet(Q*, G, t) = L(tQ*, tG) = t L(tQ*, G)
    grad = _method(method)(Q.conj().T, G, t)
    return grad.real if not np.iscomplexobj(Q) else grad


def value_and_gradient(
    f: Callable[[np.ndarray], tuple[float, np.ndarray]],
    Q,
    t: float = 1.0,
    *,
    method: Method = "scipy",
) -> tuple[float, np.ndarray]:
    """``F(Q) = f(exp(tQ))`` and its gradient with respect to ``Q``.

    Parameters
    ----------
    f : callable
        ``f(X) -> (value, dfdX)`` with ``dfdX`` of shape ``(d, d)`` as in :func:`expm_gradient`.
    Q : array_like, shape (d, d)
    t : float
    method : str
        Fréchet method used for the gradient.
    """
    Q = as_square_matrix(Q, "Q")
    t = as_time(t)
    value, G = f(scipy.linalg.expm(t * Q))
    return float(value), expm_gradient(Q, G, t, method=method)
