r"""Toy quantum model: states, probabilities, their exact derivatives in V (docs/theory.md §3, seed §4.1).

The model (seed 4.2 with a skew-Hermitian generator) is

.. math::

    \frac{dx}{dt} = A(V)\,x,\quad x(0) = x_0,\quad A(V) = -i\,H(V),\quad
    H(V) = H_0 + \mathrm{diag}(V),

with :math:`H_0` Hermitian (real symmetric or complex), :math:`V \in \mathbb R^d`
and :math:`\|x_0\|_2 = 1`. The observations are the probability vectors
:math:`p_j(t_i) = |x_j(t_i)|^2` (docs/theory.md §3: the seed's :math:`|x(t)|` means the squared
moduli) at times :math:`t_1, \dots, t_m`, :math:`x(t) = e^{tA}x_0`.

**Exact derivatives** (docs/theory.md §1, seed 1.4). With :math:`J_k = \partial A/\partial V_k
= -i e_k e_k^T`, :math:`\partial x(t)/\partial V_k = \nabla_{J_k} e^{tA}\,x_0` and, since
:math:`p_j` is real,

.. math::

    \frac{\partial p_j}{\partial V_k}
    = 2\,\Re\Bigl(\overline{x_j}\,\frac{\partial x_j}{\partial V_k}\Bigr).

Everything uses one Hermitian eigendecomposition :math:`H = U\Lambda U^*`, i.e.
:math:`A = W\mathrm{diag}(i\mu)W^*` (:class:`~sensitivity.dense.skew_hermitian.SkewHermitian`,
:math:`W = U`, :math:`\mu = -\lambda`), and the Daleckii–Krein formula
:math:`\nabla_J e^{tA} = W(\hat J\circ\Phi(t))W^*` with the divided differences
:math:`\Phi` of :func:`~sensitivity.dense.daleckii_krein.exp_divided_differences` (docs/theory.md §1).
Because :math:`\hat J_k = -i\,\overline{W_{k,:}}^T W_{k,:}` has rank one, all ``d``
columns of :math:`\partial x/\partial V` cost :math:`O(d^3)` per time, not
:math:`O(d^4)`. The misfit gradient uses the adjoint identity
:math:`L(tA)^* = L(tA^*)` (the one behind
:func:`~sensitivity.dense.gradient.expm_gradient`) once for all times together:
:math:`O(md^2 + d^3)`, no Jacobian formed.

**Surrogates** of the probability Jacobian (the state derivative replaced, then the
same real-part map applied): first order (seed 1.6)
:math:`\partial x/\partial V_k \approx t e^{tA}J_k x_0`, and secular (docs/theory.md §1)
:math:`t e^{tA}\mathcal P(J_k)x_0` with the time average :math:`\mathcal P` of
:func:`~sensitivity.dense.skew_hermitian.secular_projection`. The first-order
error grows like ``t``; the secular error is bounded uniformly in ``t`` (by
:math:`2(\sum_k b_k^2)^{1/2}`, :math:`b_k` =
:meth:`~sensitivity.dense.skew_hermitian.SkewHermitian.secular_error_bound` of :math:`J_k`), so its relative error
decays like :math:`1/t` (measured by
:func:`~sensitivity.dense.quantum_surrogates.surrogate_errors`).

**Invariances** (what the data cannot see: the constant shift of ``V``, time reversal,
the chiral partner of ``V``, spatial symmetries) are stated and handled in
:mod:`~sensitivity.dense.quantum_invariances`; :attr:`ToyQuantumModel.chiral_signature`
and :meth:`ToyQuantumModel.chiral_partner` expose the chiral one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from sensitivity.dense.daleckii_krein import exp_divided_differences
from sensitivity.dense.quantum_invariances import chiral_signature
from sensitivity.dense.skew_hermitian import SkewHermitian, hermitian_defect
from sensitivity.errors import InvalidArgumentError, NotSkewHermitianError
from sensitivity.validation import choice, finite_array, integer, non_negative, square_matrix

__all__ = ["SURROGATE_KINDS", "PotentialFamily", "SurrogateKind", "ToyQuantumModel"]

SurrogateKind = Literal["first_order", "secular"]
SURROGATE_KINDS: tuple[str, ...] = ("first_order", "secular")


# --------------------------------------------------------------------------- validation


def _check_hermitian(H0: ArrayLike, rtol: float) -> np.ndarray:
    H0 = square_matrix(H0, "H0")
    dev, i, j, scale = hermitian_defect(H0, +1)
    if dev > rtol * scale:
        raise NotSkewHermitianError(
            f"H0 is not Hermitian (so A = -i(H0 + diag V) is not skew-Hermitian): "
            f"|H0[{i}, {j}] - conj(H0[{j}, {i}])| = {dev:.3e} > rtol * |H0|_max = {rtol * scale:.3e}"
        )
    H0 = 0.5 * (H0 + H0.conj().T)  # exactly Hermitian
    return H0.real.copy() if np.iscomplexobj(H0) and not np.any(H0.imag) else H0


def _check_state(x0: ArrayLike, d: int, norm_tol: float) -> np.ndarray:
    x0 = finite_array(x0, "x0", shape=(d,), dtype=np.complex128)
    norm = float(np.linalg.norm(x0))
    if abs(norm - 1.0) > norm_tol:
        raise InvalidArgumentError(f"x0 must be normalized, got ||x0||_2 = {norm!r} (tolerance {norm_tol:.1e})")
    return x0


def _real_array(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iuf":
        raise InvalidArgumentError(f"{name} must be real, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _check_times(times: ArrayLike) -> np.ndarray:
    t = np.atleast_1d(_real_array(times, "times"))
    if t.ndim != 1 or t.size == 0:
        raise InvalidArgumentError(f"times must be a non-empty 1-D array, got shape {t.shape}")
    t = finite_array(t, "times")
    if np.any(t < 0):
        k = int(np.argmax(t < 0))
        raise InvalidArgumentError(f"times must be finite and >= 0, got times[{k}] = {t[k]}")
    return t


def _check_sigma(sigma: ArrayLike, shape: tuple[int, int]) -> np.ndarray:
    try:
        s = np.broadcast_to(_real_array(sigma, "sigma"), shape)
    except ValueError:
        raise InvalidArgumentError(
            f"sigma of shape {np.shape(sigma)} does not broadcast to the data shape {shape}"
        ) from None
    bad = np.argwhere(~(np.isfinite(s) & (s > 0)))
    if bad.size:
        i, j = bad[0]
        raise InvalidArgumentError(
            f"noise sigma must be finite and > 0, got sigma = {s[i, j]} at (time {i}, site {j})"
        )
    return s


def _check_potential(V: ArrayLike, d: int) -> np.ndarray:
    arr = np.asarray(V)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InvalidArgumentError(f"V must be a numeric vector, got dtype {arr.dtype}")
    if arr.shape != (d,):
        raise InvalidArgumentError(f"V must have shape ({d},), got shape {arr.shape}")
    if np.iscomplexobj(arr):
        if np.any(arr.imag):
            k = int(np.argmax(arr.imag != 0))
            raise InvalidArgumentError(f"V must be real (H must be Hermitian), got V[{k}] = {arr[k]}")
        arr = arr.real
    return finite_array(arr, "V")


def _check_data(data: ArrayLike, shape: tuple[int, int]) -> np.ndarray:
    arr = _real_array(data, "data")
    if arr.shape != shape:
        raise InvalidArgumentError(f"data must have shape (m, d) = {shape}, got shape {arr.shape}")
    return finite_array(arr, "data")


# --------------------------------------------------------------------------- the generators A(V)


class PotentialFamily:
    r"""The generators :math:`A(V) = -i(H_0 + \mathrm{diag}\,V)`, :math:`V \in \mathbb R^d` (seed 4.2).

    Skew-Hermitian for every real ``V``, with :math:`\partial A/\partial V_k = J_k = -ie_ke_k^T`.
    The eigendecomposition of the last ``A(V)`` asked for is kept.

    Parameters
    ----------
    H0 : array_like, shape (d, d)
        Hermitian (real symmetric or complex) "kinetic" part.
    rtol : float
        Hermitian tolerance :math:`\max|H_0 - H_0^*| \le` ``rtol`` :math:`\max|H_0|`.

    Raises
    ------
    NotSkewHermitianError
        ``H0`` is not Hermitian (the message names the worst entry).
    """

    def __init__(self, H0: ArrayLike, *, rtol: float = 1e-12):
        self.H0 = _check_hermitian(H0, non_negative(rtol, "rtol"))
        self.d = self.H0.shape[0]
        self._cache: tuple[bytes, SkewHermitian] | None = None

    def check_potential(self, V: ArrayLike) -> np.ndarray:
        """Return ``V`` as a finite real vector of shape ``(d,)``; raise naming the bad value."""
        return _check_potential(V, self.d)

    def hamiltonian(self, V: ArrayLike) -> np.ndarray:
        """:math:`H = H_0 + \\mathrm{diag}(V)`."""
        return self.H0 + np.diag(self.check_potential(V))

    def generator(self, V: ArrayLike) -> np.ndarray:
        """The skew-Hermitian :math:`A = -i(H_0 + \\mathrm{diag}\\,V)` (seed 4.2)."""
        return -1j * self.hamiltonian(V)

    def potential_direction(self, k: int) -> np.ndarray:
        """:math:`J_k = \\partial A/\\partial V_k = -i e_k e_k^T`, shape ``(d, d)``."""
        k = integer(k, "k", minimum=0, maximum=self.d - 1)
        J = np.zeros((self.d, self.d), dtype=np.complex128)
        J[k, k] = -1j
        return J

    def skew_hermitian(self, V: ArrayLike) -> SkewHermitian:
        """:math:`A(V)` with its unitary eigendecomposition (kept for the last ``V``)."""
        V = self.check_potential(V)
        key = V.tobytes()
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, SkewHermitian(-1j * (self.H0 + np.diag(V))))
        return self._cache[1]


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class _Spectral:
    """Eigendecomposition of A(V) = W diag(i mu) W* and the modal initial state W* x0."""

    skew: SkewHermitian
    c: np.ndarray  # W* x0

    @property
    def W(self) -> np.ndarray:
        return self.skew.W

    @property
    def mu(self) -> np.ndarray:
        return self.skew.frequencies


class ToyQuantumModel(PotentialFamily):
    r"""The toy quantum model of seed §4.1 / docs/theory.md §3 with exact sensitivities in ``V``.

    The generators :math:`A(V)` of :class:`PotentialFamily`, one initial state and the
    observation times.

    Parameters
    ----------
    H0 : array_like, shape (d, d)
        Hermitian (real symmetric or complex) "kinetic" part.
    x0 : array_like, shape (d,)
        Initial state, :math:`\|x_0\|_2 = 1`.
    times : array_like, shape (m,)
        Observation times :math:`t_i \ge 0`.
    rtol : float
        Hermitian tolerance :math:`\max|H_0 - H_0^*| \le` ``rtol`` :math:`\max|H_0|`.
    norm_tol : float
        Tolerance of :math:`|\|x_0\| - 1|`.

    Notes
    -----
    Every array argument must be finite; a bad one raises
    :class:`~sensitivity.errors.InvalidArgumentError` naming it.

    Attributes
    ----------
    d, m : int
    H0, x0, times : numpy.ndarray
    chiral_signature : numpy.ndarray or None
        The signature ``S`` of invariance 4 (:mod:`~sensitivity.dense.quantum_invariances`)
        when it applies.

    Raises
    ------
    NotSkewHermitianError
        ``H0`` is not Hermitian (the message names the worst entry).
    InvalidArgumentError
        ``x0`` of the wrong length or not normalized; a negative or non-finite time.

    Examples
    --------
    >>> import numpy as np
    >>> from sensitivity.dense import ToyQuantumModel
    >>> H0 = -(np.eye(4, k=1) + np.eye(4, k=-1)); x0 = np.eye(4)[0]
    >>> model = ToyQuantumModel(H0, x0, [0.5, 1.0])
    >>> V = np.array([0.3, -0.2, 0.1, 0.0])
    >>> bool(np.allclose(model.probabilities(V).sum(axis=1), 1.0))
    True
    >>> model.jacobian(V).shape
    (2, 4, 4)
    """

    def __init__(
        self, H0: ArrayLike, x0: ArrayLike, times: ArrayLike, *, rtol: float = 1e-12, norm_tol: float = 1e-10
    ):
        super().__init__(H0, rtol=rtol)
        self.x0 = _check_state(x0, self.d, non_negative(norm_tol, "norm_tol"))
        self.times = _check_times(times)
        self.m = self.times.size
        self.chiral_signature = chiral_signature(self.H0, self.x0)

    # ------------------------------------------------------------------ basics

    def check_data(self, data: ArrayLike, sigma: ArrayLike = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Validate observed probabilities ``(m, d)`` and the noise ``sigma`` (> 0, broadcastable)."""
        shape = (self.m, self.d)
        return _check_data(data, shape), _check_sigma(sigma, shape)

    def _spectral(self, V: np.ndarray) -> _Spectral:
        skew = self.skew_hermitian(V)
        return _Spectral(skew, skew.W.conj().T @ self.x0)

    def _validated_times(self, times: ArrayLike | None) -> np.ndarray:
        return self.times if times is None else _check_times(times)

    def states(self, V: ArrayLike, times: ArrayLike | None = None) -> np.ndarray:
        r"""States :math:`x(t_i) = e^{t_iA}x_0 = W e^{it_i\mu}\circ(W^*x_0)`, shape ``(m, d)``."""
        V = self.check_potential(V)
        t = self._validated_times(times)
        sp = self._spectral(V)
        return (np.exp(1j * np.outer(t, sp.mu)) * sp.c) @ sp.W.T

    def probabilities(self, V: ArrayLike, times: ArrayLike | None = None) -> np.ndarray:
        r"""Observed probabilities :math:`p_j(t_i) = |x_j(t_i)|^2`, shape ``(m, d)``; rows sum to 1."""
        return np.abs(self.states(V, times)) ** 2

    # ------------------------------------------------------------------ exact derivatives

    def state_jacobian(self, V: ArrayLike, times: ArrayLike | None = None) -> np.ndarray:
        r"""Exact :math:`D_{ijk} = \partial x_j(t_i)/\partial V_k`, shape ``(m, d, d)``, complex.

        Column ``k`` is :math:`\nabla_{J_k}e^{tA}x_0` (seed 1.4) with :math:`J_k = -ie_ke_k^T`, by
        Daleckii–Krein (docs/theory.md §1): :math:`D = W Z`, :math:`Z_{ak} = -i\,\overline{W_{ka}}
        \sum_b\Phi_{ab}(t)W_{kb}c_b`, :math:`c = W^*x_0`, exact to round-off.
        """
        V = self.check_potential(V)
        t = self._validated_times(times)
        sp = self._spectral(V)
        W, Wc = sp.W, sp.W.conj()
        M = (W * sp.c).T  # M[b, k] = W_kb c_b
        out = np.empty((t.size, self.d, self.d), dtype=np.complex128)
        for i, ti in enumerate(t):
            phi = exp_divided_differences(1j * sp.mu, ti)
            out[i] = W @ (-1j * Wc.T * (phi @ M))
        return out

    def jacobian(self, V: ArrayLike, times: ArrayLike | None = None) -> np.ndarray:
        r"""Exact probability Jacobian :math:`\partial p_j(t_i)/\partial V_k`, shape ``(m, d, d)``, real.

        :math:`\partial p_j/\partial V_k = 2\Re(\overline{x_j}\,\partial x_j/\partial V_k)`.
        Rows and columns of each ``(d, d)`` slice sum to zero (invariances 1, 2).
        """
        X = self.states(V, times)
        return 2.0 * np.real(X.conj()[:, :, None] * self.state_jacobian(V, times))

    def misfit(self, V: ArrayLike, data: ArrayLike, sigma: ArrayLike = 1.0) -> float:
        r"""Least-squares misfit :math:`\Phi(V) = \tfrac12\sum_i\|(p(t_i;V) - d_i)/\sigma\|^2`."""
        data, sigma = self.check_data(data, sigma)
        r = (self.probabilities(V) - data) / sigma
        return 0.5 * float(np.sum(r * r))

    def misfit_gradient(
        self, V: ArrayLike, data: ArrayLike, sigma: ArrayLike = 1.0
    ) -> tuple[float, np.ndarray]:
        r"""Misfit :math:`\Phi(V)` and its gradient in every :math:`V_k` by one adjoint pass.

        With :math:`w_i = (p_i - d_i)/\sigma^2` and the adjoint end states
        :math:`g_i = 2w_i\circ x(t_i)` (so that :math:`d\Phi = \sum_i\Re\langle g_i, dx(t_i)\rangle`),
        the adjoint identity :math:`L(tA)^* = L(tA^*)` (as in
        :func:`~sensitivity.dense.gradient.expm_gradient`) gives in
        the eigenbasis, summed over all times before returning to site coordinates,

        .. math::

            K = \sum_i (\overline{\hat g_i}\,c^T)\circ\Phi(t_i),\quad \hat g_i = W^*g_i,\qquad
            \frac{\partial\Phi}{\partial V_k} = \Im\bigl(\overline{W}KW^T\bigr)_{kk},

        at cost :math:`O(md^2 + d^3)`; no Jacobian is formed. This is the gradient in the
        Euclidean inner product of :math:`\mathbb R^d`.

        Returns
        -------
        value : float
        gradient : numpy.ndarray, shape (d,)
        """
        V = self.check_potential(V)
        data, sigma = self.check_data(data, sigma)
        sp = self._spectral(V)
        X = self.states(V)
        p = np.abs(X) ** 2
        r = (p - data) / sigma
        g_hat = (2.0 * (r / sigma) * X) @ sp.W.conj()  # rows: (W* g_i)^T
        K = np.zeros((self.d, self.d), dtype=np.complex128)
        for i, ti in enumerate(self.times):
            K += np.outer(g_hat[i].conj(), sp.c) * exp_divided_differences(1j * sp.mu, ti)
        grad = np.imag(np.sum((sp.W.conj() @ K) * sp.W, axis=1))
        return 0.5 * float(np.sum(r * r)), grad

    # ------------------------------------------------------------------ surrogates

    def surrogate_state_jacobian(
        self, V: ArrayLike, kind: SurrogateKind, times: ArrayLike | None = None
    ) -> np.ndarray:
        r"""Surrogate of :meth:`state_jacobian`, shape ``(m, d, d)``.

        ``"first_order"`` (seed 1.6): column ``k`` is :math:`t e^{tA}J_kx_0 = -it\,x_{0,k}\,e^{tA}e_k`.
        ``"secular"`` (docs/theory.md §1): column ``k`` is :math:`t e^{tA}\mathcal P(J_k)x_0` with
        :math:`\mathcal P` from :meth:`SkewHermitian.secular_projection` (degenerate
        eigenspaces kept whole).
        """
        V = self.check_potential(V)
        t = self._validated_times(times)
        sp = self._spectral(V)
        if choice(kind, "kind", SURROGATE_KINDS) == "first_order":
            B = -1j * np.diag(self.x0)  # columns J_k x0
        else:
            B = np.empty((self.d, self.d), dtype=np.complex128)
            for k in range(self.d):
                B[:, k] = sp.skew.secular_projection(self.potential_direction(k)) @ self.x0
        Bhat = sp.W.conj().T @ B
        return np.stack([ti * (sp.W * np.exp(1j * ti * sp.mu)) @ Bhat for ti in t])

    def surrogate_jacobian(
        self, V: ArrayLike, kind: SurrogateKind, times: ArrayLike | None = None
    ) -> np.ndarray:
        r"""Surrogate probability Jacobian :math:`2\Re(\overline{x_j}\,\tilde D_{jk})`, shape ``(m, d, d)``.

        Note: for real :math:`x_0` supported on one site the first-order surrogate is
        identically zero (:math:`2\Re(-it|x_j|^2) = 0`); it carries no information there.
        """
        X = self.states(V, times)
        return 2.0 * np.real(X.conj()[:, :, None] * self.surrogate_state_jacobian(V, kind, times))

    # ------------------------------------------------------------------ invariances

    def chiral_partner(self, V: ArrayLike) -> np.ndarray | None:
        r"""The potential :math:`V' = -V - 2\,\mathrm{diag}(H_0)` with the same data (invariance 4), or None."""
        V = self.check_potential(V)
        if self.chiral_signature is None:
            return None
        return -V - 2.0 * np.real(np.diag(self.H0))

