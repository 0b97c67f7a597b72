r"""Toy quantum model: sensitivities and estimation of the potential (SPEC §3, seed §4.1).

The model (seed 4.2 with a skew-Hermitian generator) is

.. math::

    \frac{dx}{dt} = A(V)\,x,\quad x(0) = x_0,\quad A(V) = -i\,H(V),\quad
    H(V) = H_0 + \mathrm{diag}(V),

with :math:`H_0` Hermitian (real symmetric or complex), :math:`V \in \mathbb R^d`
and :math:`\|x_0\|_2 = 1`. The observations are the probability vectors
:math:`p_j(t_i) = |x_j(t_i)|^2` (SPEC §3: the seed's :math:`|x(t)|` means the squared
moduli) at times :math:`t_1, \dots, t_m`, :math:`x(t) = e^{tA}x_0`.

**Exact derivatives** (SPEC §1, seed 1.4). With :math:`J_k = \partial A/\partial V_k
= -i e_k e_k^T`, :math:`\partial x(t)/\partial V_k = \nabla_{J_k} e^{tA}\,x_0` and, since
:math:`p_j` is real,

.. math::

    \frac{\partial p_j}{\partial V_k}
    = 2\,\Re\Bigl(\overline{x_j}\,\frac{\partial x_j}{\partial V_k}\Bigr).

Everything uses one Hermitian eigendecomposition :math:`H = U\Lambda U^*`, i.e.
:math:`A = W\mathrm{diag}(i\mu)W^*` (:class:`~sensitivity.dense.skew_hermitian.SkewHermitian`,
:math:`W = U`, :math:`\mu = -\lambda`), and the Daleckii–Krein formula
:math:`\nabla_J e^{tA} = W(\hat J\circ\Phi(t))W^*` with the divided differences
:math:`\Phi` of :func:`~sensitivity.dense.frechet.exp_divided_differences` (SPEC §1).
Because :math:`\hat J_k = -i\,\overline{W_{k,:}}^T W_{k,:}` has rank one, all ``d``
columns of :math:`\partial x/\partial V` cost :math:`O(d^3)` per time, not
:math:`O(d^4)`. The misfit gradient uses the adjoint identity
:math:`L(tA)^* = L(tA^*)` (the one behind
:func:`~sensitivity.dense.frechet.expm_gradient`) once for all times together:
:math:`O(md^2 + d^3)`, no Jacobian formed.

**Surrogates** of the probability Jacobian (the state derivative replaced, then the
same real-part map applied): first order (seed 1.6)
:math:`\partial x/\partial V_k \approx t e^{tA}J_k x_0`, and secular (SPEC §1)
:math:`t e^{tA}\mathcal P(J_k)x_0` with the time average :math:`\mathcal P` of
:func:`~sensitivity.dense.skew_hermitian.secular_projection`. The first-order
error grows like ``t``; the secular error is bounded uniformly in ``t`` (by
:math:`2(\sum_k b_k^2)^{1/2}`, :math:`b_k` =
:meth:`SkewHermitian.secular_error_bound` of :math:`J_k`), so its relative error
decays like :math:`1/t` (:func:`surrogate_errors`).

**Invariances** (what the data cannot see):

1. *Gauge.* :math:`V \to V + c\mathbf 1` multiplies :math:`x(t)` by the global phase
   :math:`e^{-ict}`, so :math:`p` is unchanged and :math:`\frac{\partial p}{\partial V}\mathbf 1 = 0`:
   at most ``d - 1`` directions are identifiable. The estimator fixes the gauge
   (zero mean, or one pinned entry, :func:`fix_gauge`) and compares modulo the shift.
   (If the hopping graph of :math:`H_0` is disconnected, one shift per connected
   component is invisible, and components where :math:`x_0 = 0` are not seen at
   all; the reported Jacobian rank shows it.)
2. *Probability conservation.* :math:`\sum_j p_j(t) = 1`, so each time gives at most
   ``d - 1`` independent numbers and :math:`\mathbf 1^T\,\partial p/\partial V = 0`.
3. *Time reversal.* If :math:`H_0` and :math:`x_0` are real (:math:`x_0` up to a global
   phase), :math:`\overline{x(t)} = x(-t)`: complex conjugation reverses time, so
   :math:`p(-t) = p(t)` and, equivalently, :math:`p(t; H) = p(t; -H)`: the model
   :math:`(H_0, V)` and the model :math:`(-H_0, -V)` give the same data.
4. *Chiral (sublattice) symmetry.* If moreover the off-diagonal part of :math:`H_0`
   is bipartite — :math:`S\,\mathrm{offdiag}(H_0)S = -\mathrm{offdiag}(H_0)` for a
   signature :math:`S = \mathrm{diag}(\pm 1)`, as for every chain with
   nearest-neighbour hopping — and :math:`Sx_0 = \pm x_0` (e.g. :math:`x_0` localized
   on one site), then 3. and :math:`-H = S(H_0 + \mathrm{diag}(V'))S` give

   .. math:: p(t; V) = p(t; V'),\qquad V' = -V - 2\,\mathrm{diag}(H_0),

   a second potential with *exactly the same data*. Least squares then has two
   global minima (mod the shift), and at the fixed point :math:`V = -\mathrm{diag}(H_0)`
   (e.g. ``V = 0`` for a hopping chain) ``p`` is even in ``V``, so the Jacobian vanishes
   there: do not start an optimizer at it. :attr:`ToyQuantumModel.chiral_signature`
   detects the case (for real :math:`H_0`; a complex hopping that is only gauge
   equivalent to a real one is not recognised) and
   :meth:`ToyQuantumModel.chiral_partner` returns :math:`V'`.
5. *Spatial symmetry (equivariance, not invariance).* If a permutation :math:`P`
   has :math:`PH_0P^T = H_0` and :math:`Px_0 = x_0`, then :math:`x(t; PV) = P\,x(t; V)`,
   so :math:`p(t; PV) = P\,p(t; V)`: the data of :math:`PV` are the *permuted* data of
   :math:`V` — identical only when :math:`p(t;V)` is itself :math:`P`-symmetric (e.g.
   :math:`PV = V`, or observations summed over the orbits of :math:`P`). It does not
   make ``V`` unidentifiable from the full probability vectors.
"""

from __future__ import annotations

import numbers
from collections import deque
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np
import scipy.optimize
from numpy.typing import ArrayLike

from sensitivity.dense._checks import as_square_matrix
from sensitivity.dense.frechet import exp_divided_differences
from sensitivity.dense.skew_hermitian import SkewHermitian
from sensitivity.errors import InvalidArgumentError, NotSkewHermitianError, SensitivityError

__all__ = [
    "PotentialEstimate",
    "SurrogateErrors",
    "ToyQuantumModel",
    "estimate_potential",
    "fix_gauge",
    "surrogate_errors",
]

SurrogateKind = Literal["first_order", "secular"]
Gauge = Union[Literal["mean"], int]


# --------------------------------------------------------------------------- validation


def _check_hermitian(H0, rtol: float) -> np.ndarray:
    H0 = as_square_matrix(H0, "H0")
    dev = np.abs(H0 - H0.conj().T)
    i, j = np.unravel_index(int(np.argmax(dev)), dev.shape)
    scale = max(1.0, float(np.max(np.abs(H0))))
    if dev[i, j] > rtol * scale:
        raise NotSkewHermitianError(
            f"H0 is not Hermitian (so A = -i(H0 + diag V) is not skew-Hermitian): "
            f"|H0[{i}, {j}] - conj(H0[{j}, {i}])| = {dev[i, j]:.3e} "
            f"> rtol * max(1, |H0|_max) = {rtol * scale:.3e}"
        )
    H0 = 0.5 * (H0 + H0.conj().T)  # exactly Hermitian
    return H0.real.copy() if np.iscomplexobj(H0) and not np.any(H0.imag) else H0


def _check_state(x0, d: int, norm_tol: float) -> np.ndarray:
    x0 = np.asarray(x0)
    if x0.dtype == object or not np.issubdtype(x0.dtype, np.number):
        raise InvalidArgumentError(f"x0 must be a numeric vector, got dtype {x0.dtype}")
    if x0.shape != (d,):
        raise InvalidArgumentError(f"x0 must have shape ({d},) like H0, got shape {x0.shape}")
    x0 = x0.astype(np.complex128)
    if not np.all(np.isfinite(x0)):
        k = int(np.argmax(~np.isfinite(x0)))
        raise InvalidArgumentError(f"x0 has a non-finite entry x0[{k}] = {x0[k]}")
    norm = float(np.linalg.norm(x0))
    if abs(norm - 1.0) > norm_tol:
        raise InvalidArgumentError(f"x0 must be normalized, got ||x0||_2 = {norm!r} (tolerance {norm_tol:.1e})")
    return x0


def _real_array(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iuf":
        raise InvalidArgumentError(f"{name} must be real, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _check_times(times) -> np.ndarray:
    t = np.atleast_1d(_real_array(times, "times"))
    if t.ndim != 1 or t.size == 0:
        raise InvalidArgumentError(f"times must be a non-empty 1-D array, got shape {t.shape}")
    bad = np.flatnonzero(~np.isfinite(t) | (t < 0))
    if bad.size:
        k = int(bad[0])
        raise InvalidArgumentError(f"times must be finite and >= 0, got times[{k}] = {t[k]}")
    return t


def _check_sigma(sigma, shape: tuple[int, int]) -> np.ndarray:
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


def _bipartite_signature(H0: np.ndarray, x0: np.ndarray) -> np.ndarray | None:
    """Signature S (±1) with S offdiag(H0) S = -offdiag(H0) and S x0 = x0, if it exists (real H0, x0)."""
    if np.iscomplexobj(H0):
        return None
    k = int(np.argmax(np.abs(x0)))
    xr = x0 * (abs(x0[k]) / x0[k])  # remove the global phase
    if np.any(np.abs(xr.imag) > 1e-14):
        return None
    d = H0.shape[0]
    adj = (H0 != 0) & ~np.eye(d, dtype=bool)
    s = np.zeros(d, dtype=int)
    for root in range(d):
        if s[root]:
            continue
        comp, queue = [root], deque([root])
        s[root] = 1
        while queue:
            a = queue.popleft()
            for b in np.flatnonzero(adj[a]):
                if s[b] == 0:
                    s[b] = -s[a]
                    comp.append(b)
                    queue.append(b)
                elif s[b] == s[a]:
                    return None  # an odd cycle: not bipartite
        support = [a for a in comp if x0[a] != 0]
        if support:  # x0 must live on one colour class of each component; make it colour +1
            colours = set(s[support].tolist())
            if len(colours) > 1:
                return None
            if colours == {-1}:
                s[comp] = -s[comp]
    return s.astype(float)


def fix_gauge(V: ArrayLike, gauge: Gauge = "mean", value: float = 0.0) -> np.ndarray:
    """Representative of the class ``V + c 1`` (invariance 1 of the module docstring).

    Parameters
    ----------
    V : array_like, shape (d,)
    gauge : "mean" or int
        ``"mean"``: the representative with mean ``value``; an index ``k``: the one
        with ``V[k] = value``.
    value : float

    Returns
    -------
    numpy.ndarray, shape (d,)
    """
    V = np.asarray(V, dtype=np.float64)
    if V.ndim != 1:
        raise InvalidArgumentError(f"V must be a 1-D array, got shape {V.shape}")
    if isinstance(gauge, str) and gauge == "mean":
        return V - V.mean() + value
    if isinstance(gauge, numbers.Integral) and not isinstance(gauge, (bool, np.bool_)) and 0 <= gauge < V.size:
        return V - V[gauge] + value
    raise InvalidArgumentError(f"gauge must be 'mean' or an index in [0, {V.size}), got {gauge!r}")


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


class ToyQuantumModel:
    r"""The toy quantum model of seed §4.1 / SPEC §3 with exact sensitivities in ``V``.

    Parameters
    ----------
    H0 : array_like, shape (d, d)
        Hermitian (real symmetric or complex) "kinetic" part.
    x0 : array_like, shape (d,)
        Initial state, :math:`\|x_0\|_2 = 1`.
    times : array_like, shape (m,)
        Observation times :math:`t_i \ge 0`.
    rtol : float
        Hermitian tolerance :math:`\max|H_0 - H_0^*| \le` ``rtol`` :math:`\max(1, \max|H_0|)`.
    norm_tol : float
        Tolerance of :math:`|\|x_0\| - 1|`.

    Attributes
    ----------
    d, m : int
    H0, x0, times : numpy.ndarray
    chiral_signature : numpy.ndarray or None
        The signature ``S`` of invariance 4 (module docstring) when it applies.

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
        self.H0 = _check_hermitian(H0, rtol)
        self.d = self.H0.shape[0]
        self.x0 = _check_state(x0, self.d, norm_tol)
        self.times = _check_times(times)
        self.m = self.times.size
        self.chiral_signature = _bipartite_signature(self.H0, self.x0)
        self._cache: tuple[bytes, _Spectral] | None = None

    # ------------------------------------------------------------------ basics

    def check_potential(self, V: ArrayLike) -> np.ndarray:
        """Return ``V`` as a finite real vector of shape ``(d,)``; raise naming the bad value."""
        arr = np.asarray(V)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise InvalidArgumentError(f"V must be a numeric vector, got dtype {arr.dtype}")
        if arr.shape != (self.d,):
            raise InvalidArgumentError(f"V must have shape ({self.d},), got shape {arr.shape}")
        if np.iscomplexobj(arr):
            if np.any(arr.imag):
                k = int(np.argmax(arr.imag != 0))
                raise InvalidArgumentError(f"V must be real (H must be Hermitian), got V[{k}] = {arr[k]}")
            arr = arr.real
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            k = int(np.argmax(~np.isfinite(arr)))
            raise InvalidArgumentError(f"V has a non-finite entry V[{k}] = {arr[k]}")
        return arr

    def check_data(self, data: ArrayLike, sigma: ArrayLike = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Validate observed probabilities ``(m, d)`` and the noise ``sigma`` (> 0, broadcastable)."""
        arr = _real_array(data, "data")
        if arr.shape != (self.m, self.d):
            raise InvalidArgumentError(
                f"data must have shape (m, d) = ({self.m}, {self.d}), got shape {arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            i, j = np.argwhere(~np.isfinite(arr))[0]
            raise InvalidArgumentError(f"data has a non-finite entry data[{i}, {j}] = {arr[i, j]}")
        return arr, _check_sigma(sigma, (self.m, self.d))

    def hamiltonian(self, V: ArrayLike) -> np.ndarray:
        """:math:`H = H_0 + \\mathrm{diag}(V)`."""
        return self.H0 + np.diag(self.check_potential(V))

    def generator(self, V: ArrayLike) -> np.ndarray:
        """The skew-Hermitian :math:`A = -i(H_0 + \\mathrm{diag}\\,V)` (seed 4.2)."""
        return -1j * self.hamiltonian(V)

    def _spectral(self, V: np.ndarray) -> _Spectral:
        key = V.tobytes()
        if self._cache is None or self._cache[0] != key:
            skew = SkewHermitian(-1j * (self.H0 + np.diag(V)))
            self._cache = (key, _Spectral(skew, skew.W.conj().T @ self.x0))
        return self._cache[1]

    def _validated_times(self, times) -> np.ndarray:
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
        Daleckii–Krein (SPEC §1): :math:`D = W Z`, :math:`Z_{ak} = -i\,\overline{W_{ka}}
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
        the adjoint identity :math:`L(tA)^* = L(tA^*)` (as in :func:`expm_gradient`) gives in
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
        ``"secular"`` (SPEC §1): column ``k`` is :math:`t e^{tA}\mathcal P(J_k)x_0` with
        :math:`\mathcal P` from :meth:`SkewHermitian.secular_projection` (degenerate
        eigenspaces kept whole).
        """
        V = self.check_potential(V)
        t = self._validated_times(times)
        sp = self._spectral(V)
        if kind == "first_order":
            B = -1j * np.diag(self.x0)  # columns J_k x0
        elif kind == "secular":
            B = np.empty((self.d, self.d), dtype=np.complex128)
            for k in range(self.d):
                Jk = np.zeros((self.d, self.d), dtype=np.complex128)
                Jk[k, k] = -1j
                B[:, k] = sp.skew.secular_projection(Jk) @ self.x0
        else:
            raise InvalidArgumentError(f"kind must be 'first_order' or 'secular', got {kind!r}")
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


# --------------------------------------------------------------------------- surrogate errors


@dataclass(frozen=True)
class SurrogateErrors:
    r"""Errors of the surrogate probability Jacobians versus ``t`` (Frobenius norms per time).

    Attributes
    ----------
    times : numpy.ndarray, shape (n,)
    exact_norm : numpy.ndarray
        :math:`\|\partial p(t)/\partial V\|_F`.
    first_order_error, secular_error : numpy.ndarray
        :math:`\|\partial p/\partial V - \widetilde{\partial p/\partial V}\|_F` for each surrogate.
    secular_bound : float
        ``t``-uniform bound :math:`2(\sum_k b_k^2)^{1/2}` on ``secular_error``, with
        :math:`b_k` = :meth:`SkewHermitian.secular_error_bound` of :math:`J_k` (uses
        :math:`|x_j| \le 1`, :math:`\|x_0\| = 1`).
    """

    times: np.ndarray
    exact_norm: np.ndarray
    first_order_error: np.ndarray
    secular_error: np.ndarray
    secular_bound: float

    @property
    def first_order_relative(self) -> np.ndarray:
        return self.first_order_error / self.exact_norm

    @property
    def secular_relative(self) -> np.ndarray:
        return self.secular_error / self.exact_norm


def surrogate_errors(H0: ArrayLike, x0: ArrayLike, V: ArrayLike, times: ArrayLike) -> SurrogateErrors:
    r"""Measure the first-order and secular surrogates of :math:`\partial p/\partial V` against the exact one.

    For each ``t`` in ``times`` the exact Jacobian (:meth:`ToyQuantumModel.jacobian`)
    and both surrogates (:meth:`ToyQuantumModel.surrogate_jacobian`) are computed and
    compared in the Frobenius norm over all ``(j, k)``. Expected (SPEC §1): the
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

    skew = model._spectral(V).skew
    bounds = []
    for k in range(model.d):
        Jk = np.zeros((model.d, model.d), dtype=np.complex128)
        Jk[k, k] = -1j
        bounds.append(skew.secular_error_bound(Jk))
    return SurrogateErrors(
        times=model.times,
        exact_norm=norms(exact),
        first_order_error=norms(exact - fo),
        secular_error=norms(exact - sec),
        secular_bound=2.0 * float(np.linalg.norm(bounds)),
    )


# --------------------------------------------------------------------------- estimation


@dataclass
class PotentialEstimate:
    r"""Result of :func:`estimate_potential`.

    Attributes
    ----------
    V : numpy.ndarray, shape (d,)
        Estimate in the requested gauge.
    misfit : float
        Final objective :math:`\Phi(V) + \tfrac\alpha2\|\Pi(V - V_{ref})\|^2`.
    data_misfit : float
        Final :math:`\Phi(V)` alone.
    misfit_history : numpy.ndarray
        Objective at every function evaluation, in order.
    iterations : int
        Trust-region iterations (Jacobian evaluations).
    nfev : int
    success : bool
    message : str
    gradient : numpy.ndarray, shape (d,)
        Adjoint gradient of the data misfit at the estimate.
    singular_values : numpy.ndarray, shape (d,)
        Of the weighted data Jacobian :math:`\sigma^{-1}\partial p/\partial V` (all ``m d``
        rows, all ``d`` columns), descending; the last is ~0 (the gauge direction 1).
    rank : int
        Numerical rank of that Jacobian (``d - 1`` when all gauge-free directions are seen).
    covariance : numpy.ndarray, shape (d, d)
        Linearized (Gauss–Newton) covariance of the gauge-fixed estimate,
        :math:`B(B^TJ^TJB + \alpha B^T\Pi B)^{-1}B^T`: the noise-level error to expect.
    chiral_partner : numpy.ndarray or None
        The other potential with the same data (invariance 4), in the same gauge.
    start_objectives : numpy.ndarray, shape (n_starts,)
        Final objective of every start (``inf``: skipped, Jacobian zero at the start).
    gauge : "mean" or int
    """

    V: np.ndarray
    misfit: float
    data_misfit: float
    misfit_history: np.ndarray
    iterations: int
    nfev: int
    success: bool
    message: str
    gradient: np.ndarray
    singular_values: np.ndarray
    rank: int
    covariance: np.ndarray
    chiral_partner: np.ndarray | None
    start_objectives: np.ndarray
    gauge: Gauge = "mean"

    @property
    def standard_errors(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.covariance), 0.0, None))


def _nonnegative(x, name: str) -> float:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real) or not (np.isfinite(x) and x >= 0):
        raise InvalidArgumentError(f"{name} must be a finite real >= 0, got {x!r}")
    return float(x)


def _gauge_basis(d: int, gauge: Gauge, value: float) -> tuple[np.ndarray, np.ndarray]:
    """V = v0 + B theta parametrizes the gauge-fixed potentials (B: d x (d-1))."""
    fix_gauge(np.zeros(d), gauge, value)  # validates gauge
    if isinstance(gauge, str):
        B = np.linalg.svd(np.eye(d) - 1.0 / d)[0][:, : d - 1]  # orthonormal basis of 1^perp
        return np.full(d, float(value)), B
    B = np.delete(np.eye(d), gauge, axis=1)
    v0 = np.zeros(d)
    v0[gauge] = value
    return v0, B


def estimate_potential(
    model: ToyQuantumModel,
    data: ArrayLike,
    sigma: ArrayLike = 1.0,
    *,
    alpha: float = 0.0,
    V_ref: ArrayLike | None = None,
    V0: ArrayLike | None = None,
    n_starts: int = 1,
    start_scale: float = 1.0,
    seed: int | np.random.Generator | None = None,
    gauge: Gauge = "mean",
    gauge_value: float = 0.0,
    tol: float = 1e-12,
    max_nfev: int = 500,
) -> PotentialEstimate:
    r"""Estimate :math:`V` from noisy probability vectors by least squares (SPEC §3, seed §4.1).

    Minimizes

    .. math:: \Phi(V) + \frac\alpha2\|\Pi(V - V_{ref})\|^2,\qquad
              \Phi(V) = \frac12\sum_i\Bigl\|\frac{p(t_i;V) - d_i}{\sigma}\Bigr\|^2,\quad
              \Pi = I - \tfrac1d\mathbf 1\mathbf 1^T,

    over the gauge-fixed potentials :math:`V = v_0 + B\theta` (invariance 1 of the module
    docstring; the Tikhonov term acts on the gauge-free part only, so the answer does
    not depend on the gauge), with :func:`scipy.optimize.least_squares` (trust-region
    reflective) and the exact Jacobian :meth:`ToyQuantumModel.jacobian`.

    The problem is non-convex: local minima are common (for a 7-site chain observed
    at 4 times, about one random start in three reaches the global minimum), hence
    ``n_starts``. With a chiral model (invariance 4) there are two global minima, ``V``
    and :meth:`ToyQuantumModel.chiral_partner` (only a Tikhonov term or prior knowledge
    tells them apart; both are returned), and the fixed point
    :math:`V = -\mathrm{diag}(H_0)` (``V = 0`` for a hopping chain) is a critical point
    where the Jacobian vanishes; starts there are skipped.

    Parameters
    ----------
    model : ToyQuantumModel
    data : array_like, shape (m, d)
        Observed probabilities at ``model.times``.
    sigma : float or array_like broadcastable to (m, d)
        Noise standard deviations, > 0.
    alpha : float
        Tikhonov weight, >= 0.
    V_ref : array_like, shape (d,), optional
        Tikhonov reference (default 0); also the default first start.
    V0 : array_like, shape (d,), optional
        First start (default ``V_ref``).
    n_starts : int
        Number of starts: ``V0``, then ``V0 + start_scale * N(0, I)`` draws from ``seed``.
        The start with the smallest final objective wins.
    start_scale : float
        Spread of the random starts.
    seed : int or numpy.random.Generator, optional
    gauge : "mean" or int
        Report and estimate ``V`` with mean ``gauge_value`` or with ``V[gauge] = gauge_value``.
    gauge_value : float
    tol : float
        ``ftol = xtol = gtol`` of the optimizer.
    max_nfev : int
        Per start.

    Returns
    -------
    PotentialEstimate
        For the winning start; ``start_objectives`` lists every start's final objective
        (``inf`` for a skipped one).

    Raises
    ------
    InvalidArgumentError
        Bad data, noise, weight, reference, start or gauge (the message names it).
    SensitivityError
        Every start sits at a critical point (vanishing Jacobian).
    """
    d = model.d
    data, sigma = model.check_data(data, sigma)
    alpha = _nonnegative(alpha, "alpha")
    start_scale = _nonnegative(start_scale, "start_scale")
    if isinstance(n_starts, (bool, np.bool_)) or not isinstance(n_starts, numbers.Integral) or n_starts < 1:
        raise InvalidArgumentError(f"n_starts must be an integer >= 1, got {n_starts!r}")
    V_ref = np.zeros(d) if V_ref is None else model.check_potential(V_ref)
    V0 = V_ref if V0 is None else model.check_potential(V0)
    v0, B = _gauge_basis(d, gauge, gauge_value)
    Pi = np.eye(d) - 1.0 / d
    sqa = np.sqrt(alpha)
    rng = np.random.default_rng(seed)
    jac_floor = 1e-10 * max(1.0, float(model.times.max()))

    def potential(theta):
        return v0 + B @ theta

    def solve(theta0):
        history: list[float] = []

        def residual(theta):
            V = potential(theta)
            r = ((model.probabilities(V) - data) / sigma).ravel()
            if alpha > 0:
                r = np.concatenate([r, sqa * (Pi @ (V - V_ref))])
            history.append(0.5 * float(r @ r))
            return r

        def jac(theta):
            Jd = (model.jacobian(potential(theta)) / sigma[:, :, None]).reshape(-1, d) @ B
            return np.vstack([Jd, sqa * (Pi @ B)]) if alpha > 0 else Jd

        if np.max(np.abs(model.jacobian(potential(theta0)))) <= jac_floor:
            return None, history
        sol = scipy.optimize.least_squares(
            residual, theta0, jac=jac, method="trf", ftol=tol, xtol=tol, gtol=tol, max_nfev=max_nfev
        )
        return sol, history

    starts = [fix_gauge(V0, gauge, gauge_value)]
    for _ in range(n_starts - 1):
        starts.append(fix_gauge(V0 + start_scale * rng.standard_normal(d), gauge, gauge_value))
    best, objectives = None, []
    for start in starts:
        sol, history = solve(B.T @ (start - v0) if isinstance(gauge, str) else np.delete(start, gauge))
        objectives.append(np.inf if sol is None else float(sol.cost))
        if sol is not None and (best is None or sol.cost < best[0].cost):
            best = (sol, history)
    if best is None:
        raise SensitivityError(
            "the Jacobian vanishes at every start (a critical point, e.g. the fixed point "
            "V = -diag(H0) of the chiral symmetry, which is V = 0 for a hopping chain); choose another V0"
        )
    sol, history = best
    V = potential(sol.x)
    data_misfit, grad = model.misfit_gradient(V, data, sigma)
    Jw = (model.jacobian(V) / sigma[:, :, None]).reshape(-1, d)
    partner = model.chiral_partner(V)
    return PotentialEstimate(
        V=V,
        misfit=float(sol.cost),
        data_misfit=data_misfit,
        misfit_history=np.asarray(history),
        iterations=int(sol.njev),
        nfev=int(sol.nfev),
        success=bool(sol.success),
        message=str(sol.message),
        gradient=grad,
        singular_values=np.linalg.svd(Jw, compute_uv=False),
        rank=int(np.linalg.matrix_rank(Jw)),
        covariance=B @ np.linalg.pinv(sol.jac.T @ sol.jac) @ B.T,
        chiral_partner=None if partner is None else fix_gauge(partner, gauge, gauge_value),
        start_objectives=np.asarray(objectives),
        gauge=gauge,
    )
