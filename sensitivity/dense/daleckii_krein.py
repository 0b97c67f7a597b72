r"""∇_J exp(tQ) by Daleckii–Krein divided differences (docs/theory.md §1, seed §2).

For diagonalizable :math:`Q = V\,\mathrm{diag}(\lambda)\,V^{-1}`,

.. math::

    \nabla_J \exp(tQ) = V\,(\hat J \circ \Phi(t))\,V^{-1},\qquad \hat J = V^{-1} J V,\qquad
    \Phi_{ij} = \frac{e^{t\lambda_i}-e^{t\lambda_j}}{\lambda_i-\lambda_j},\quad \Phi_{ii} = t e^{t\lambda_i},

the matrix :math:`\Phi(t)` of the seed's proof of Theorem 2.1
(:func:`exp_divided_differences`). :class:`EigenFrechet` computes the
decomposition and :math:`\Phi` once and then costs four matrix products per
direction; :func:`expm_frechet_eig` is the one-direction form used by
``expm_frechet(..., method="eig")``.

**Accuracy.** The two similarity transforms amplify rounding errors by the
eigenvector condition number :math:`\kappa(V) = \|V\|_2\|V^{-1}\|_2`, once each: the
computed result has a normwise relative error of about

.. math:: \varepsilon_{\rm eig} = \sqrt d\;u\;\kappa(V)^2,\qquad u = 2^{-53},

(:func:`eig_error_estimate`; measured errors on nearly defective 2 × 2 blocks
:math:`[[a, 1], [\delta, a]]`, where :math:`\kappa(V) \approx 2/\sqrt\delta`, and on random
non-normal matrices stay below it). The estimate does not depend on ``t`` or ``J``:
it is the part of the error that the eigen approach adds to the conditioning of
the problem itself. When it exceeds ``tol`` (default :data:`DEFAULT_EIG_TOL`),
:class:`~sensitivity.errors.NotDiagonalizableError` is raised, naming
:math:`\kappa(V)` and the estimate. There is deliberately no silent fallback to
another method: ``"eig"`` is one of four *independent* methods that are checked
against each other, and an evaluator that shares one decomposition between many
directions has no cheaper substitute; ``method="scipy"`` or ``"block"`` handle
such matrices.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from sensitivity.errors import NotDiagonalizableError
from sensitivity.validation import direction_matrix, finite_array, positive, real_time, square_matrix

__all__ = [
    "DEFAULT_EIG_TOL",
    "DEFAULT_MAX_EIGVEC_CONDITION",
    "UNIT_ROUNDOFF",
    "EigenFrechet",
    "eig_error_estimate",
    "exp_divided_differences",
    "expm_frechet_eig",
]

#: Largest eigenvector-matrix condition number the eigen approach accepts at all.
DEFAULT_MAX_EIGVEC_CONDITION = 1e8
#: Largest accepted estimated relative error :func:`eig_error_estimate` of the eigen approach.
DEFAULT_EIG_TOL = 1e-8
#: Unit round-off u of float64.
UNIT_ROUNDOFF = float(np.finfo(np.float64).eps) / 2.0


def eig_error_estimate(eigvec_condition: float, d: int) -> float:
    r"""Estimated relative error :math:`\sqrt d\,u\,\kappa(V)^2` of the Daleckii–Krein formula (module docstring)."""
    return float(np.sqrt(d) * UNIT_ROUNDOFF * eigvec_condition**2)


def _check_accuracy(cond: float, d: int, max_condition: float, tol: float) -> float:
    """The error estimate for ``cond``, or raise :class:`NotDiagonalizableError` naming κ(V) and it."""
    est = eig_error_estimate(cond, d) if np.isfinite(cond) else np.inf
    if est > tol or not cond <= max_condition:
        limit = f"tol = {tol:.1e}" if cond <= max_condition else f"max_condition = {max_condition:.1e}"
        raise NotDiagonalizableError(
            f"Q is not numerically diagonalizable for the eigen method: its eigenvector matrix has "
            f"condition number kappa(V) = {cond:.3e}, so the estimated relative error "
            f"sqrt(d) u kappa(V)^2 = {est:.1e} is not acceptable ({limit}); use method='scipy' or 'block'"
        )
    return est


# 1/(2k+1)!, k = 0..8: the Taylor coefficients of sinh(z)/z in z^2.
_SINHC_COEFFS = tuple(1.0 / float(np.prod(np.arange(2, 2 * k + 2, dtype=float))) for k in range(9))


def _sinhc_series(z: np.ndarray) -> np.ndarray:
    """sinh(z)/z for |z| <= 1/2 by its Taylor series to z^16 (relative error < 1e-19)."""
    z2 = z * z
    out = np.full_like(z, _SINHC_COEFFS[-1])
    for c in reversed(_SINHC_COEFFS[:-1]):
        out = out * z2 + c
    return out


def exp_divided_differences(lam: ArrayLike, t: float) -> np.ndarray:
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
        Eigenvalues, real or complex, finite.
    t : float

    Returns
    -------
    numpy.ndarray, shape (d, d)
    """
    lam = finite_array(lam, "lam", shape=(None,), dtype=np.complex128 if np.iscomplexobj(lam) else np.float64)
    t = real_time(t, "t")
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


# --------------------------------------------------------------------------- real arithmetic for real Q


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


class _RealPairMap:
    r"""The map :math:`J \mapsto W\,\mathcal H(W^{-1}JW)\,W^{-1}` in real arithmetic (see :class:`EigenFrechet`).

    Indices ``0..n2-1`` of ``W`` hold ``(Re v, Im v)`` of each conjugate pair and of
    Φ its ``(λ, conj λ)``; indices ``n2..d-1`` are the real eigenvalues. The blocks of
    Φ that :math:`\mathcal H` needs are precomputed here.
    """

    def __init__(self, W: np.ndarray, Winv: np.ndarray, n2: int, phi: np.ndarray):
        self.W, self.Winv, self.n2 = W, Winv, n2
        A, B, R = slice(0, n2, 2), slice(1, n2, 2), slice(n2, None)
        self.phi_rr = np.ascontiguousarray(phi[R, R].real)
        if n2:
            self.phi_pp1 = 0.5 * (phi[A, A] + phi[B, A])
            self.phi_pp2 = 0.5j * (phi[B, A] - phi[A, A])
            self.phi_ra = phi[R, A]
            self.phi_ar_re = np.ascontiguousarray(phi[A, R].real)
            self.phi_ar_im = np.ascontiguousarray(phi[A, R].imag)

    def _hadamard(self, K: np.ndarray, Z: np.ndarray) -> None:
        r"""Z = H(K) = T((T^{-1} K T) ∘ Φ) T^{-1} for one real ``(d, d)`` matrix K.

        The pair columns ``(a, b)`` of ``K`` and ``Z``, adjacent in memory, are read
        as the complex numbers ``K[:, a] + i K[:, b]`` (a complex view, no copy):
        rows of pairs mix the two rows ``a, b`` with the coefficients ``phi_pp1``,
        ``phi_pp2``; real rows multiply by Φ. The pair rows of the real columns
        multiply ``K[a] + i K[b]`` by conj Φ, and the real block by Φ.
        """
        n2 = self.n2
        Kc = K[:, :n2].view(np.complex128)
        Zc = Z[:, :n2].view(np.complex128)
        ca, cb = Kc[0:n2:2], Kc[1:n2:2]
        za = ca * self.phi_pp1
        za += cb * self.phi_pp2
        Zc[0:n2:2] = za
        zb = cb * self.phi_pp1
        zb -= ca * self.phi_pp2
        Zc[1:n2:2] = zb
        if n2 < K.shape[0]:
            np.multiply(Kc[n2:], self.phi_ra, out=Zc[n2:])
            ka, kb = K[0:n2:2, n2:], K[1:n2:2, n2:]
            g, h = self.phi_ar_re, self.phi_ar_im  # conj Φ = g - i h
            Z[0:n2:2, n2:] = ka * g + kb * h
            Z[1:n2:2, n2:] = kb * g - ka * h
            np.multiply(K[n2:, n2:], self.phi_rr, out=Z[n2:, n2:])

    def __call__(self, J: np.ndarray) -> np.ndarray:
        """W H(W^{-1} J W) W^{-1} for a real direction or stack."""
        buf = np.matmul(self.Winv, np.ascontiguousarray(J))
        K = np.matmul(buf, self.W)
        if self.n2 == 0:
            K *= self.phi_rr
            Z = K
        else:
            Z = buf  # W^{-1} J is no longer needed
            if K.ndim == 2:
                self._hadamard(K, Z)
            else:  # one direction at a time keeps the temporaries small (in cache)
                for Kk, Zk in zip(K, Z):
                    self._hadamard(Kk, Zk)
        np.matmul(self.W, Z, out=buf if Z is K else K)
        return np.matmul(buf if Z is K else K, self.Winv)


def _real_basis(lam: np.ndarray, V: np.ndarray, order: np.ndarray, n2: int):
    """(λ, V, W, κ(V)) reordered as pairs then reals, with the real basis W of the pairs (class docstring)."""
    d = V.shape[0]
    lam, V = lam[order], V[:, order]
    W = np.empty((d, d))
    W[:, 0:n2:2] = V[:, 0:n2:2].real
    W[:, 1:n2:2] = V[:, 0:n2:2].imag
    W[:, n2:] = V[:, n2:].real
    # V = W T and T = diag(sqrt 2 | 1) U with U unitary, so cond(V) = cond(W diag(sqrt 2 | 1)).
    scale = np.ones(d)
    scale[:n2] = np.sqrt(2.0)
    return (lam.real if n2 == 0 else lam), V, W, float(np.linalg.cond(W * scale))


def _pair_inverse(Winv: np.ndarray, n2: int) -> np.ndarray:
    """V^{-1} = T^{-1} W^{-1} from W^{-1} (W^{-1} itself when the spectrum is real)."""
    if n2 == 0:
        return Winv
    Vinv = np.empty(Winv.shape, dtype=np.complex128)
    Vinv[0:n2:2] = 0.5 * (Winv[0:n2:2] - 1j * Winv[1:n2:2])
    Vinv[1:n2:2] = Vinv[0:n2:2].conj()
    Vinv[n2:] = Winv[n2:]
    return Vinv


# --------------------------------------------------------------------------- the evaluator


class EigenFrechet:
    r"""Daleckii–Krein evaluation of ∇_J exp(tQ) sharing one eigendecomposition.

    For diagonalizable :math:`Q = V\,\mathrm{diag}(\lambda)\,V^{-1}`,

    .. math:: \nabla_J \exp(tQ) = V\,(\hat J \circ \Phi(t))\,V^{-1},\qquad \hat J = V^{-1} J V

    (docs/theory.md §1; :func:`exp_divided_differences` gives Φ). The decomposition and
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
        Largest accepted 2-norm condition number of ``V``.
    tol : float
        Largest accepted estimated relative error :math:`\sqrt d\,u\,\kappa(V)^2` of the
        method (module docstring).

    Attributes
    ----------
    eigenvalues : numpy.ndarray, shape (d,)
        Real when ``Q`` is real with a real spectrum; for real ``Q`` ordered as the
        conjugate pairs :math:`(\lambda, \bar\lambda)`, then the real eigenvalues.
    eigvec_condition : float
        :math:`\|V\|_2\|V^{-1}\|_2` with unit-norm columns (1 for normal ``Q``).
    estimated_error : float
        :func:`eig_error_estimate` of ``eigvec_condition``.

    Raises
    ------
    NotDiagonalizableError
        ``Q`` is defective, or so close to it that the estimated error exceeds ``tol``
        or the condition number exceeds ``max_condition``; the message gives both.
    """

    def __init__(
        self,
        Q: ArrayLike,
        t: float = 1.0,
        *,
        max_condition: float = DEFAULT_MAX_EIGVEC_CONDITION,
        tol: float = DEFAULT_EIG_TOL,
    ):
        Q = square_matrix(Q, "Q")
        t = real_time(t, "t")
        max_condition, tol = positive(max_condition, "max_condition"), positive(tol, "tol")
        real, d = not np.iscomplexobj(Q), Q.shape[0]
        if np.array_equal(Q, Q.conj().T):
            lam, V = np.linalg.eigh(Q)
            self._set(lam, V, V.conj().T, 1.0, t, real)
            self._real_map = _RealPairMap(V, V.T, 0, self.divided_differences) if real else None
            return
        lam, V = np.linalg.eig(Q)
        pairing = _real_pair_order(lam, V) if real else None
        if pairing is None:
            cond = float(np.linalg.cond(V))
            _check_accuracy(cond, d, max_condition, tol)
            self._set(lam, V, np.linalg.inv(V), cond, t, real)
            self._real_map = None
            return
        n2 = pairing[1]
        lam, V, W, cond = _real_basis(lam, V, *pairing)
        _check_accuracy(cond, d, max_condition, tol)
        Winv = np.linalg.inv(W)
        self._set(lam, W if n2 == 0 else V, _pair_inverse(Winv, n2), cond, t, real)
        self._real_map = _RealPairMap(W, Winv, n2, self.divided_differences)

    @classmethod
    def from_eigendecomposition(
        cls, lam: ArrayLike, V: ArrayLike, Vinv: ArrayLike, t: float = 1.0, *, real: bool = False,
        tol: float = DEFAULT_EIG_TOL,
    ) -> "EigenFrechet":
        """Build from a known decomposition ``Q = V diag(lam) Vinv``.

        Only generic checks are made (finite entries, matching shapes, the error
        estimate of ``||V||_2 ||Vinv||_2`` below ``tol``): ``Vinv`` is trusted to be the
        inverse of ``V``. ``real`` says that ``Q`` is real (results are then real parts).
        """
        V = square_matrix(V, "V")
        d = V.shape[0]
        Vinv = direction_matrix(Vinv, d, "Vinv")
        lam = finite_array(lam, "lam", shape=(d,), dtype=np.complex128 if np.iscomplexobj(lam) else np.float64)
        t = real_time(t, "t")
        cond = float(np.linalg.norm(V, 2) * np.linalg.norm(Vinv, 2))
        _check_accuracy(cond, d, np.inf, positive(tol, "tol"))
        self = cls.__new__(cls)
        self._set(lam, V, Vinv, cond, t, bool(real))
        self._real_map = None
        return self

    def _set(self, lam: np.ndarray, V: np.ndarray, Vinv: np.ndarray, cond: float, t: float, real: bool) -> None:
        self.t = t
        self._real = real
        self.eigenvalues = lam
        self.V = V
        self.Vinv = Vinv
        self.eigvec_condition = cond
        self.estimated_error = eig_error_estimate(cond, V.shape[0])
        self.divided_differences = exp_divided_differences(lam, t)

    @property
    def dim(self) -> int:
        return self.V.shape[0]

    def expm(self) -> np.ndarray:
        """e^{tQ} from the decomposition."""
        X = (self.V * np.exp(self.t * self.eigenvalues)) @ self.Vinv
        return X.real if self._real else X

    def __call__(self, J: ArrayLike) -> np.ndarray:
        """∇_J exp(tQ) for one direction ``(d, d)`` or a stack ``(k, d, d)``."""
        J = direction_matrix(J, self.dim, stack=True)
        if self._real_map is not None:
            if np.iscomplexobj(J):
                return self._real_map(J.real) + 1j * self._real_map(J.imag)
            return self._real_map(J)
        Jhat = self.Vinv @ J @ self.V
        Y = self.V @ (Jhat * self.divided_differences) @ self.Vinv
        return Y.real if (self._real and not np.iscomplexobj(J)) else Y


def expm_frechet_eig(
    Q: ArrayLike,
    J: ArrayLike,
    t: float = 1.0,
    *,
    max_condition: float = DEFAULT_MAX_EIGVEC_CONDITION,
    tol: float = DEFAULT_EIG_TOL,
) -> np.ndarray:
    """∇_J exp(tQ) by Daleckii–Krein divided differences (see :class:`EigenFrechet`).

    Raises :class:`~sensitivity.errors.NotDiagonalizableError` rather than return a
    result whose estimated relative error exceeds ``tol`` (module docstring).
    """
    Q = square_matrix(Q, "Q")
    J = direction_matrix(J, Q.shape[0])
    return EigenFrechet(Q, t, max_condition=max_condition, tol=tol)(J)
