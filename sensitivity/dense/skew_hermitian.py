r"""Skew-Hermitian generators and the secular surrogate (docs/theory.md §1, seed §4.1).

For :math:`A^* = -A` write :math:`A = W\,\mathrm{diag}(i\mu)\,W^*` with unitary
:math:`W` and real frequencies :math:`\mu`. In the eigenbasis the exact derivative
is :math:`\hat Y_{jk} = \hat J_{jk}\,\Phi_{jk}(t)` with
:math:`|\Phi_{jk}| \le 2/|\mu_j - \mu_k|` off the degenerate blocks and
:math:`\Phi_{jk} = t e^{i\mu_j t}` on them: bounded off the eigen-diagonal,
secular on it. Hence the **secular surrogate**

.. math:: t\,e^{tA}\,\mathcal P(J),\qquad
          \mathcal P(J) = \sum_\mu P_\mu J P_\mu
          = \lim_{T\to\infty}\frac1T\int_0^T e^{-sA}Je^{sA}\,ds,

(:math:`P_\mu` the spectral projectors; :math:`W\mathrm{diag}(W^*JW)W^*` when the
spectrum is simple) has an error bounded uniformly in ``t``, while the first-order
surrogate :math:`t e^{tA}J` has an error growing linearly in ``t``.

Both tolerances (of skew-Hermitian-ness and of the clustering of frequencies) are
relative to the size of ``A``, so ``A`` and ``sA`` (another unit of time) get the
same verdict and the same eigenspaces.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from sensitivity.dense.daleckii_krein import EigenFrechet
from sensitivity.errors import NotSkewHermitianError
from sensitivity.validation import direction_matrix, non_negative, real_time, square_matrix

__all__ = ["SkewHermitian", "check_skew_hermitian", "hermitian_defect", "secular_projection", "secular_surrogate"]


def hermitian_defect(A: np.ndarray, sign: int) -> tuple[float, int, int, float]:
    r"""``(defect, i, j, scale)``: the worst entry of :math:`|A - \mathrm{sign}\cdot A^*|` and :math:`\max|A_{ij}|`.

    ``sign = +1`` measures how far ``A`` is from Hermitian, ``-1`` from skew-Hermitian.
    """
    dev = np.abs(A - sign * A.conj().T)
    i, j = np.unravel_index(int(np.argmax(dev)), dev.shape)
    return float(dev[i, j]), int(i), int(j), float(np.max(np.abs(A)))


def check_skew_hermitian(A: ArrayLike, *, rtol: float = 1e-12) -> np.ndarray:
    """Check :math:`\\|A + A^*\\|_{max} \\le` ``rtol`` ``* |A|_max`` and return ``A`` as complex."""
    A = square_matrix(A, "A").astype(np.complex128)
    rtol = non_negative(rtol, "rtol")
    dev, i, j, scale = hermitian_defect(A, -1)
    if dev > rtol * scale:
        raise NotSkewHermitianError(
            f"A is not skew-Hermitian: |A[{i}, {j}] + conj(A[{j}, {i}])| = {dev:.3e} "
            f"> rtol * |A|_max = {rtol * scale:.3e}"
        )
    return A


class SkewHermitian:
    r"""A skew-Hermitian generator with its unitary eigendecomposition.

    Parameters
    ----------
    A : array_like, shape (d, d)
        Skew-Hermitian (e.g. :math:`A = -iH` with Hermitian :math:`H`).
    rtol : float
        Tolerance of :func:`check_skew_hermitian`.
    cluster_tol : float, optional
        Frequencies closer than this are one degenerate eigenspace for
        :math:`\mathcal P`; default ``1e-8 * max|mu|``.

    Attributes
    ----------
    frequencies : numpy.ndarray, shape (d,)
        :math:`\mu`, with eigenvalues :math:`i\mu`, ascending.
    W : numpy.ndarray, shape (d, d)
        Unitary eigenvectors.
    """

    def __init__(self, A: ArrayLike, *, rtol: float = 1e-12, cluster_tol: float | None = None):
        A = check_skew_hermitian(A, rtol=rtol)
        # iA is Hermitian: iA = W diag(h) W*, so A = W diag(-i h) W*, mu = -h.
        h, W = np.linalg.eigh(1j * A)
        order = np.argsort(-h)
        self.A = A
        self.frequencies = -h[order]
        self.W = W[:, order]
        scale = float(np.max(np.abs(self.frequencies)))
        self.cluster_tol = 1e-8 * scale if cluster_tol is None else non_negative(cluster_tol, "cluster_tol")
        # Label the eigenspaces: consecutive sorted frequencies closer than cluster_tol share one.
        gaps = np.diff(self.frequencies) > self.cluster_tol
        self._cluster = np.concatenate([[0], np.cumsum(gaps)])
        self._same = self._cluster[:, None] == self._cluster[None, :]

    @property
    def dim(self) -> int:
        return self.A.shape[0]

    @property
    def eigenvalues(self) -> np.ndarray:
        return 1j * self.frequencies

    def expm(self, t: float) -> np.ndarray:
        """The unitary e^{tA}."""
        return (self.W * np.exp(1j * real_time(t, "t") * self.frequencies)) @ self.W.conj().T

    def frechet(self, t: float) -> EigenFrechet:
        """Exact ∇_J e^{tA} evaluator (Daleckii–Krein with the unitary W)."""
        return EigenFrechet.from_eigendecomposition(self.eigenvalues, self.W, self.W.conj().T, t)

    def secular_projection(self, J: ArrayLike) -> np.ndarray:
        r""":math:`\mathcal P(J) = \sum_\mu P_\mu J P_\mu`, ``J`` of shape (d, d)."""
        J = direction_matrix(J, self.dim)
        Jhat = self.W.conj().T @ J @ self.W
        return self.W @ np.where(self._same, Jhat, 0.0) @ self.W.conj().T

    def secular_surrogate(self, J: ArrayLike, t: float) -> np.ndarray:
        r"""Secular surrogate :math:`t\,e^{tA}\mathcal P(J)` of ∇_J e^{tA}."""
        t = real_time(t, "t")
        return t * self.expm(t) @ self.secular_projection(J)

    def first_order_surrogate(self, J: ArrayLike, t: float) -> np.ndarray:
        """First-order surrogate ``t e^{tA} J`` (seed 1.6)."""
        J = direction_matrix(J, self.dim)
        t = real_time(t, "t")
        return t * self.expm(t) @ J

    def secular_error_bound(self, J: ArrayLike) -> float:
        r"""A ``t``-uniform bound on :math:`\|\nabla_J e^{tA} - t e^{tA}\mathcal P(J)\|_F`.

        Off the degenerate blocks :math:`|\Phi_{jk}| \le 2/|\mu_j-\mu_k|`, so the
        error is at most :math:`(\sum_{j\not\sim k} 4|\hat J_{jk}|^2/|\mu_j-\mu_k|^2)^{1/2}`.
        """
        J = direction_matrix(J, self.dim)
        Jhat = self.W.conj().T @ J @ self.W
        dmu = np.abs(self.frequencies[:, None] - self.frequencies[None, :])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(self._same, 0.0, 2.0 * np.abs(Jhat) / dmu)
        return float(np.linalg.norm(ratio))


def secular_projection(A: ArrayLike, J: ArrayLike) -> np.ndarray:
    r""":math:`\mathcal P(J)` for the skew-Hermitian ``A`` (see :class:`SkewHermitian`)."""
    return SkewHermitian(A).secular_projection(J)


def secular_surrogate(A: ArrayLike, J: ArrayLike, t: float) -> np.ndarray:
    r"""Secular surrogate :math:`t e^{tA}\mathcal P(J)` (see :class:`SkewHermitian`)."""
    return SkewHermitian(A).secular_surrogate(J, t)
