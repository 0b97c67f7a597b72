r"""Rate matrices and the long-time asymptotics of ∇_J exp(tQ) (docs/theory.md §1, §5; seed §2).

Classes (seed 2.1, 2.2): ℛ, the irreducible rate matrices (non-negative
off-diagonal rates, zero row sums, strongly connected transition graph; the seed
asks for strictly positive rates, available as ``strict=True``), and 𝒟 ⊂ ℛ,
the diagonalizable ones. For :math:`Q \in 𝒟` let :math:`\pi` be the stationary
distribution (:math:`\pi^T Q = 0`, :math:`\pi^T 1 = 1`), :math:`\Pi = 1\pi^T`, the
group inverse :math:`Q^\# = (Q + \Pi)^{-1} - \Pi` and the spectral gap
:math:`\kappa = \min\{|\Re\lambda| : \lambda \ne 0\}`.

**Corrected asymptotics** (docs/theory.md §1, §5; the seed's Theorem 2.1, with the
pseudo-inverse :math:`Q^+`, is false). Writing :math:`e^{sQ} = \Pi + E(s)`,
:math:`E(s) = e^{sQ}(I - \Pi)`, and using :math:`\int_0^t E = E(t)Q^\# - Q^\#`,

.. math::

    \nabla_J e^{tQ} = t\Pi J\Pi - \Pi J Q^\# - Q^\# J \Pi + R(t),\qquad
    R(t) = \Pi J E(t)Q^\# + E(t)Q^\# J\Pi + \int_0^t E(t-s) J E(s)\,ds .

With :math:`Q = V\,\mathrm{diag}(\lambda)V^{-1}` and :math:`c_V = \|V\|_2\|V^{-1}\|_2`,
:math:`\|E(s)\|_2 \le c_V e^{-\kappa s}` and
:math:`\|E(t)Q^\#\|_2 \le c_V e^{-\kappa t}\min(\|Q^\#\|_2, 1/e_m)`, so

.. math::

    \|R(t)\|_2 \le (C_0 + C_1 t)e^{-\kappa t} \le C(1+t)e^{-\kappa t},\quad
    C_0 = 2\|\Pi\|_2\|J\|_2\,c_V\min(\|Q^\#\|_2, 1/e_m),\;
    C_1 = c_V^2\|J\|_2,\; C = \max(C_0, C_1)

(:class:`AsymptoticBound`). For :math:`J1 = 0` the limit
:math:`-\Pi J Q^\#` is the derivative of the stationary projector,
:math:`d\pi^T = -\pi^T J Q^\#` (Meyer 1975).

**Units of time.** Every tolerance is relative to the scale
:math:`\sigma(Q) = \max_{ij}|Q_{ij}|` (:func:`rate_scale`; the fastest exit rate
:math:`\max_i|Q_{ii}|` for a rate matrix), and the linear algebra works with
:math:`Q/\sigma`, so :math:`Q` and :math:`sQ` (:math:`s > 0`) get the same verdicts and
:math:`\pi(sQ) = \pi(Q)`, :math:`(sQ)^\# = Q^\#/s`, :math:`\kappa(sQ) = s\kappa(Q)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse.csgraph
from numpy.typing import ArrayLike

from sensitivity.dense.daleckii_krein import DEFAULT_MAX_EIGVEC_CONDITION, UNIT_ROUNDOFF
from sensitivity.errors import NotARateMatrixError, NotDiagonalizableError
from sensitivity.validation import direction_matrix, finite_array, non_negative, positive, real_time, square_matrix

__all__ = [
    "DEFAULT_RTOL",
    "AsymptoticBound",
    "RateMatrix",
    "check_rate_matrix",
    "group_inverse",
    "is_rate_matrix",
    "rate_scale",
    "spectral_gap",
    "stationary_distribution",
]

#: Default relative tolerance of the membership checks (times :func:`rate_scale`).
DEFAULT_RTOL = 1e-10


def rate_scale(Q: np.ndarray) -> float:
    r"""The scale :math:`\sigma(Q) = \max_{ij}|Q_{ij}|`; for a rate matrix the fastest exit rate :math:`\max_i|Q_{ii}|`.

    Every tolerance of this module is relative to it.
    """
    return float(np.max(np.abs(Q)))


def check_rate_matrix(
    Q: ArrayLike, *, atol: float | None = None, strict: bool = False, rtol: float = DEFAULT_RTOL
) -> np.ndarray:
    """Check that ``Q`` is in ℛ (seed 2.1) and return it as a float array.

    Parameters
    ----------
    Q : array_like, shape (d, d), real
    atol : float, optional
        Absolute tolerance for row sums, negative rates and (rates at most ``atol``
        are no edge) the transition graph; default ``rtol *`` :func:`rate_scale` ``(Q)``,
        so that the verdict does not depend on the unit of time.
    strict : bool
        Require strictly positive off-diagonal rates, as the seed's 2.1 does.
        Otherwise zero rates are allowed but the transition graph must be
        strongly connected (irreducibility).
    rtol : float
        Relative tolerance used when ``atol`` is not given.

    Raises
    ------
    NotARateMatrixError
        Naming the offending entry, row or unreachable state.
    InvalidArgumentError
        ``Q`` not a finite square array, or a bad tolerance.
    """
    Q = square_matrix(Q, "Q")
    if np.iscomplexobj(Q):
        raise NotARateMatrixError(f"Q must be real to be a rate matrix, got dtype {Q.dtype}")
    d = Q.shape[0]
    if d < 2:
        raise NotARateMatrixError(f"a rate matrix Q needs at least 2 states, got shape {Q.shape}")
    rtol = non_negative(rtol, "rtol")
    atol = rtol * rate_scale(Q) if atol is None else non_negative(atol, "atol")
    off = Q.copy()
    np.fill_diagonal(off, 0.0)
    bad = np.argwhere(off < -atol)
    if strict:
        bad = np.argwhere((off <= 0.0) & ~np.eye(d, dtype=bool))
    if bad.size:
        i, j = bad[0]
        kind = "not strictly positive" if strict else "negative"
        raise NotARateMatrixError(f"off-diagonal rate Q[{i}, {j}] = {Q[i, j]:.6g} is {kind}")
    rows = Q.sum(axis=1)
    worst = int(np.argmax(np.abs(rows)))
    if abs(rows[worst]) > atol:
        raise NotARateMatrixError(f"row {worst} of Q sums to {rows[worst]:.3e}, not 0 (atol = {atol:.1e})")
    ncomp, labels = scipy.sparse.csgraph.connected_components(off > atol, directed=True, connection="strong")
    if ncomp > 1:
        other = int(np.argmax(labels != labels[0]))
        raise NotARateMatrixError(
            f"Q is reducible: its transition graph has {ncomp} strongly connected components "
            f"(states 0 and {other} are in different ones)"
        )
    return Q


def is_rate_matrix(
    Q: ArrayLike, *, atol: float | None = None, strict: bool = False, rtol: float = DEFAULT_RTOL
) -> bool:
    """Whether ``Q`` is in ℛ (see :func:`check_rate_matrix`; a non-finite or non-square ``Q`` raises)."""
    try:
        check_rate_matrix(Q, atol=atol, strict=strict, rtol=rtol)
    except NotARateMatrixError:
        return False
    return True


@dataclass(frozen=True)
class AsymptoticBound:
    r"""Explicit bound :math:`\|R(t)\|_2 \le (C_0 + C_1 t)e^{-\kappa t} \le C(1+t)e^{-\kappa t}`.

    Attributes
    ----------
    kappa : float
        Spectral gap :math:`\min\{|\Re\lambda|:\lambda\ne 0\}`.
    C0, C1 : float
        Constant and linear coefficients (see the module docstring).
    eigvec_condition : float
        :math:`c_V = \|V\|_2\|V^{-1}\|_2`.
    """

    kappa: float
    C0: float
    C1: float
    eigvec_condition: float

    @property
    def C(self) -> float:
        return max(self.C0, self.C1)

    def __call__(self, t: ArrayLike) -> np.ndarray:
        """The bound :math:`(C_0 + C_1 t)e^{-\\kappa t}` at ``t`` (scalar or array, finite)."""
        t = finite_array(t, "t")
        return (self.C0 + self.C1 * t) * np.exp(-self.kappa * t)


class RateMatrix:
    r"""A rate matrix :math:`Q \in 𝒟` with its stationary and spectral data (docs/theory.md §1).

    Parameters
    ----------
    Q : array_like, shape (d, d)
        Irreducible, diagonalizable rate matrix.
    atol, strict, rtol :
        As in :func:`check_rate_matrix`.
    max_condition : float
        Largest accepted eigenvector-matrix condition number (membership in 𝒟).

    Attributes
    ----------
    Q, pi, Pi, group_inverse, eigenvalues, eigvecs, spectral_gap, eigvec_condition, e_m
    scale : float
        :func:`rate_scale` of ``Q``; the solves below work with :math:`Q/\sigma`
        (module docstring): :math:`\pi^T(Q/\sigma + 11^T) = 1^T` and
        :math:`Q^\# = ((Q/\sigma + \Pi)^{-1} - \Pi)/\sigma`.

    Raises
    ------
    NotARateMatrixError
        Not in ℛ, or a second eigenvalue not separated from 0 by more than its
        rounding error :math:`d\,u\,c_V\,\sigma` (then :math:`Q^\#` would be noise).
    NotDiagonalizableError
        The eigenvector condition number :math:`c_V` exceeds ``max_condition``.
    """

    def __init__(
        self,
        Q: ArrayLike,
        *,
        atol: float | None = None,
        strict: bool = False,
        rtol: float = DEFAULT_RTOL,
        max_condition: float = DEFAULT_MAX_EIGVEC_CONDITION,
    ):
        Q = check_rate_matrix(Q, atol=atol, strict=strict, rtol=rtol)
        max_condition = positive(max_condition, "max_condition")
        d = Q.shape[0]
        scale = rate_scale(Q)  # > 0: an irreducible Q with d >= 2 has a positive rate
        lam, V = np.linalg.eig(Q)
        cond = float(np.linalg.cond(V))
        if not np.isfinite(cond) or cond > max_condition:
            raise NotDiagonalizableError(
                f"Q is not in 𝒟: its eigenvector matrix has condition number {cond:.3e} "
                f"> max_condition = {max_condition:.1e}"
            )
        zero = int(np.argmin(np.abs(lam)))
        others = np.delete(lam, zero)
        # A backward-stable eig moves each eigenvalue by about d u c_V sigma.
        resolution = d * UNIT_ROUNDOFF * cond * scale
        if np.any(others.real >= -resolution):
            worst = others[int(np.argmax(others.real))]
            raise NotARateMatrixError(
                f"Q has a second eigenvalue {worst} with Re >= -{resolution:.1e} (its rounding error "
                f"at the scale max|Q| = {scale:.3e}): not separated from the eigenvalue 0"
            )
        ones = np.ones(d)
        Qn = Q / scale
        # pi^T (Q/sigma + 1 1^T) = 1^T: Q + 1 1^T is nonsingular for irreducible Q (Brauer).
        pi = scipy.linalg.solve((Qn + np.outer(ones, ones)).T, ones)
        pi = pi / pi.sum()
        Pi = np.outer(ones, pi)
        self.Q = Q
        self.scale = scale
        self.pi = pi
        self.Pi = Pi
        self.group_inverse = (scipy.linalg.inv(Qn + Pi) - Pi) / scale
        self.eigenvalues = lam
        self.eigvecs = V
        self.eigvec_condition = cond
        self.spectral_gap = float(np.min(np.abs(others.real)))
        self.e_m = float(np.min(np.abs(others)))
        self._pinv: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return self.Q.shape[0]

    def expm(self, t: float) -> np.ndarray:
        """e^{tQ}."""
        return scipy.linalg.expm(real_time(t, "t") * self.Q)

    def asymptotic_derivative(self, J: ArrayLike, t: float) -> np.ndarray:
        r""":math:`t\Pi J\Pi - \Pi J Q^\# - Q^\# J\Pi`, the corrected long-time form of ∇_J e^{tQ}."""
        J = direction_matrix(J, self.dim)
        t = real_time(t, "t")
        P, G = self.Pi, self.group_inverse
        return t * (P @ J @ P) - P @ J @ G - G @ J @ P

    def asymptotic_bound(self, J: ArrayLike) -> AsymptoticBound:
        """Explicit constants of :math:`\\|R(t)\\|_2 \\le C(1+t)e^{-\\kappa t}` for direction ``J``."""
        J = direction_matrix(J, self.dim)
        nJ = np.linalg.norm(J, 2)
        cV = self.eigvec_condition
        resolvent = min(np.linalg.norm(self.group_inverse, 2), 1.0 / self.e_m)
        C0 = 2.0 * np.linalg.norm(self.Pi, 2) * nJ * cV * resolvent
        C1 = cV**2 * nJ
        return AsymptoticBound(kappa=self.spectral_gap, C0=float(C0), C1=float(C1), eigvec_condition=cV)

    def stationary_derivative(self, J: ArrayLike) -> np.ndarray:
        r"""Derivative of :math:`\pi` along ``J`` with :math:`J1 = 0`: :math:`d\pi^T = -\pi^T J Q^\#`."""
        J = direction_matrix(J, self.dim)
        return -(self.pi @ J @ self.group_inverse)

    def seed_theorem_2_1(self, J: ArrayLike, t: float) -> np.ndarray:
        r"""The seed's (false) Theorem 2.1 approximation of ∇_J e^{tQ}, kept for comparison.

        .. math:: t e^{tQ}J - e^{tQ}JQ^+(I + tQ) + Q^+J(I - QQ^+)

        with the Moore–Penrose pseudo-inverse :math:`Q^+` (seed 2.7, 2.10).
        Its error does not decay in ``t`` (docs/theory.md §1, §5).
        """
        J = direction_matrix(J, self.dim)
        t = real_time(t, "t")
        Qp = self.pseudo_inverse
        X = self.expm(t)
        eye = np.eye(self.dim)
        return t * X @ J - X @ J @ Qp @ (eye + t * self.Q) + Qp @ J @ (eye - self.Q @ Qp)

    @property
    def pseudo_inverse(self) -> np.ndarray:
        """Moore–Penrose pseudo-inverse :math:`Q^+` (the seed's choice)."""
        if self._pinv is None:
            self._pinv = np.linalg.pinv(self.Q)
        return self._pinv


def stationary_distribution(Q: ArrayLike) -> np.ndarray:
    """Stationary distribution π of an irreducible rate matrix (πᵀQ = 0, πᵀ1 = 1)."""
    return RateMatrix(Q).pi


def group_inverse(Q: ArrayLike) -> np.ndarray:
    """Group inverse Q^# = (Q + 1πᵀ)⁻¹ − 1πᵀ of a rate matrix in 𝒟."""
    return RateMatrix(Q).group_inverse


def spectral_gap(Q: ArrayLike) -> float:
    """``κ = min{|Re λ| : λ ≠ 0}`` of a rate matrix in 𝒟."""
    return RateMatrix(Q).spectral_gap
