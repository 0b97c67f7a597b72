r"""Rate matrices by log-rates, the multinomial misfit of observed state counts, and its forces (docs/theory.md §4.5).

**Log-rates.** :math:`\theta \in \mathbb R^{d(d-1)}`, :math:`\theta_{ij} = \log q_{ij}` for :math:`i \ne j` in row-major
order of the off-diagonal entries, :math:`Q_{ii} = -\sum_{j\ne i}q_{ij}`: every :math:`\theta` gives a rate matrix with
positive rates (irreducible), and

.. math::

    \frac{\partial Q}{\partial\theta_{ij}} = q_{ij}(E_{ij} - E_{ii}),\qquad
    \frac{\partial f}{\partial\theta_{ij}}
    = q_{ij}\Bigl(\frac{\partial f}{\partial Q_{ij}} - \frac{\partial f}{\partial Q_{ii}}\Bigr)
    \tag{4.5a}

(:func:`log_rate_tangent`, :func:`log_rate_derivative`).

**Multinomial misfit** (:class:`MultinomialRateMisfit`). With a start distribution :math:`p_0`, times :math:`t_k` and
counts :math:`y_k`, the distributions :math:`p_k^T = p_0^Te^{t_kQ}` and

.. math::

    \Phi(\theta) = -\sum_k\sum_j y_{kj}\log p_{kj},\qquad
    G_k = \frac{\partial\Phi}{\partial e^{t_kQ}} = -p_0w_k^T,\quad w_k = y_k/p_k,\qquad
    \frac{\partial\Phi}{\partial Q} = \sum_k t_k\,L(t_kQ^T, G_k)
    \tag{4.5b}

by the adjoint identity (§1.3, :func:`~sensitivity.dense.expm_gradient`, which includes the factor :math:`t_k`),
then (4.5a): one adjoint Fréchet evaluation per time gives the derivative in every log-rate.

**Forces** (:class:`RateForce`): the exact derivative (4.5b), or (4.5b) with a surrogate :math:`\tilde Y` of
:math:`L(t_kQ, t_kJ) = \nabla_Je^{t_kQ}`, in its dual form
:math:`\langle G_k, \tilde Y\rangle = \langle\tilde Y^*(G_k), J\rangle`:

- ``"first order"`` (seed 1.6): :math:`\tilde Y = t\,e^{tQ}J`, :math:`\partial\Phi/\partial Q \approx
  \sum_kt_k(e^{t_kQ})^TG_k` (no Fréchet call). Error :math:`O(t^2)` at small :math:`t`, growing like
  :math:`t\,\Pi J(I - \Pi)` at large :math:`t` (§1.5);
- ``"affine"`` (affine-corrected): split :math:`e^{sQ} = \Pi + E(s)`, :math:`E(s) = e^{sQ} - \Pi`,
  :math:`\Pi = 1\pi^T`, in :math:`\nabla_Je^{tQ} = \int_0^te^{(t-s)Q}Je^{sQ}ds`. The three terms with a
  projector are exact and cheap, :math:`\int_0^tE(s)ds = (e^{tQ} - I)Q^\#`; only the transient-transient term
  :math:`\int_0^tE(t-s)JE(s)ds` is replaced by its first-order form :math:`tE(t)J(I - \Pi)`:

  .. math::

      \tilde Y = t\,\Pi J\Pi + \Pi J(e^{tQ} - I)Q^\# + (e^{tQ} - I)Q^\#J\Pi + t(e^{tQ} - \Pi)J(I - \Pi),

  whose part along the stationary projector is the exact one, affine in :math:`t`
  (:math:`t\Pi J\Pi - \Pi JQ^\# - Q^\#J\Pi` plus decaying terms): the error is :math:`O(t^2)` at small :math:`t`
  like the first-order one, and decays like :math:`te^{-\kappa t}` instead of growing like :math:`t\,\Pi J(I - \Pi)`.
  It needs :math:`Q^\# = (Q + \Pi)^{-1} - \Pi` once per point (one more :math:`d \times d` solve). In dual form
  :math:`\partial\Phi/\partial Q \approx \sum_k[t_k\Pi^TG_k\Pi^T + \Pi^TG_kB_k^T + B_k^TG_k\Pi^T
  + t_k(e^{t_kQ} - \Pi)^TG_k(I - \Pi)^T]`, :math:`B_k = (e^{t_kQ} - I)Q^\#`.

Each force is a function of :math:`\theta` alone and the samplers accept with the exact :math:`\Phi` (§4.4): a
surrogate changes the acceptance rate and the efficiency, never the target.
"""

from __future__ import annotations

from typing import Literal

from sensitivity.dense.frechet import Method
from sensitivity.dense.gradient import expm_gradient
from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.posterior import Force, Misfit
from sensitivity.estimation.vectors import ArraySpace
from sensitivity.validation import choice, direction_matrix, finite_array, integer, same_on_all_ranks, square_matrix

import numpy as np
import scipy.linalg
from mpi4py import MPI
from numpy.typing import ArrayLike

__all__ = ["RATE_FORCE_KINDS", "MultinomialRateMisfit", "RateForce", "log_rate_derivative", "log_rate_tangent",
           "log_rates", "rate_matrix_from_log_rates"]

#: The kinds of :class:`RateForce`.
RATE_FORCE_KINDS = ("exact", "first order", "affine")


def _off_diagonal(d: int) -> np.ndarray:
    return ~np.eye(d, dtype=bool)


def _rate_matrix(theta: np.ndarray, d: int) -> np.ndarray:
    """(4.5a) without checks; a rate that overflows makes entries infinite."""
    Q = np.zeros((d, d))
    with np.errstate(over="ignore"):
        Q[_off_diagonal(d)] = np.exp(theta)
    Q[np.diag_indices(d)] = -Q.sum(axis=1)
    return Q


def rate_matrix_from_log_rates(theta: ArrayLike, d: int) -> np.ndarray:
    r"""The rate matrix :math:`Q(\theta)` (4.5a) of ``d >= 2`` states from the log-rates ``theta``, shape (d(d-1),):
    :math:`\log q_{ij}`, :math:`i \ne j`, in row-major order of the off-diagonal entries."""
    d = integer(d, "d", minimum=2)
    theta = finite_array(theta, "theta", shape=(d * (d - 1),))
    Q = _rate_matrix(theta, d)
    if not np.all(np.isfinite(Q)):
        raise InvalidArgumentError(f"theta gives an infinite rate: max theta = {float(theta.max())!r}")
    return Q


def log_rates(Q: ArrayLike) -> np.ndarray:
    r""":math:`\theta_{ij} = \log q_{ij}` of a rate matrix with positive rates, the inverse of
    :func:`rate_matrix_from_log_rates` (row sums must vanish to ``1e-10`` times :math:`\max|Q_{ij}|`)."""
    Q = _real_square(Q, "Q")
    rates = Q[_off_diagonal(Q.shape[0])]
    if np.any(rates <= 0):
        i, j = np.argwhere((Q <= 0) & _off_diagonal(Q.shape[0]))[0]
        raise InvalidArgumentError(f"Q must have positive off-diagonal rates: Q[{i}, {j}] = {float(Q[i, j])!r}")
    rows = Q.sum(axis=1)
    worst = int(np.argmax(np.abs(rows)))
    if abs(rows[worst]) > 1e-10 * np.max(np.abs(Q)):
        raise InvalidArgumentError(f"Q must have zero row sums: row {worst} sums to {rows[worst]:.3e}")
    return np.log(rates)


def log_rate_tangent(Q: ArrayLike, v: ArrayLike) -> np.ndarray:
    r""":math:`dQ = \sum_{i\ne j}v_{ij}\,q_{ij}(E_{ij} - E_{ii})`, the derivative of :math:`Q(\theta)` along ``v``
    (4.5a; zero row sums)."""
    Q = _real_square(Q, "Q")
    d = Q.shape[0]
    v = finite_array(v, "v", shape=(d * (d - 1),))
    dQ = np.zeros((d, d))
    dQ[_off_diagonal(d)] = Q[_off_diagonal(d)] * v
    dQ[np.diag_indices(d)] = -dQ.sum(axis=1)
    return dQ


def log_rate_derivative(Q: ArrayLike, DQ: ArrayLike) -> np.ndarray:
    r"""The chain rule (4.5a): :math:`(\partial f/\partial\theta)_{ij} = q_{ij}(DQ_{ij} - DQ_{ii})` for
    :math:`DQ = \partial f/\partial Q` (shape (d, d)); returns shape (d(d-1),), the transpose of
    :func:`log_rate_tangent`."""
    Q = _real_square(Q, "Q")
    return _chain_rule(Q, direction_matrix(DQ, Q.shape[0], "DQ").real)


def _chain_rule(Q: np.ndarray, DQ: np.ndarray) -> np.ndarray:
    off = _off_diagonal(Q.shape[0])
    with np.errstate(over="ignore", invalid="ignore"):  # NaN far out in a divergent trajectory: rejected
        return Q[off] * (DQ - np.diag(DQ)[:, None])[off]


def _real_square(Q: ArrayLike, name: str) -> np.ndarray:
    Q = square_matrix(Q, name)
    if np.iscomplexobj(Q) or Q.shape[0] < 2:
        raise InvalidArgumentError(f"{name} must be a real matrix of at least 2 states, got {Q.dtype} {Q.shape}")
    return Q


class _Forward:
    """The forward quantities at one point: Q, the exponentials X_k = exp(t_k Q), p_k, Φ and G_k (4.5b)."""

    def __init__(self, misfit: MultinomialRateMisfit, theta: np.ndarray):
        self.Q = _rate_matrix(theta, misfit.d)
        self.value = np.inf
        if not np.all(np.isfinite(self.Q)):
            return
        self.X = scipy.linalg.expm(misfit.times[:, None, None] * self.Q)
        self.p = misfit.p0 @ self.X  # (K, d): p_k^T = p0^T X_k
        y = misfit.counts
        seen = y > 0
        if np.any(self.p[seen] <= 0) or not np.all(np.isfinite(self.p)):
            return
        logs = np.zeros_like(self.p)
        np.log(self.p, out=logs, where=seen)
        self.value = -float(np.sum(y * logs))
        with np.errstate(over="ignore"):
            w = np.divide(y, self.p, out=np.zeros_like(self.p), where=seen)
            self.G = -misfit.p0[None, :, None] * w[:, None, :]  # G_k = -p0 w_k^T

    @property
    def differentiable(self) -> bool:
        """Whether Φ and G_k are finite (else the forces are NaN: a sampler rejects the trajectory)."""
        return bool(np.isfinite(self.value)) and bool(np.all(np.isfinite(self.G)))


class MultinomialRateMisfit(Misfit):
    r""":math:`\Phi(\theta) = -\sum_k\sum_jy_{kj}\log p_{kj}`, :math:`p_k^T = p_0^Te^{t_kQ(\theta)}` (4.5b).

    The negative multinomial log-likelihood of the counts without its constant, on an :class:`ArraySpace` of the
    :math:`d(d-1)` log-rates. A point whose rates overflow or whose distributions vanish where a count is
    positive has :math:`\Phi = \infty` and a NaN derivative (a sampler rejects it).

    Parameters
    ----------
    p0 : array_like, shape (d,)
        The start distribution (non-negative, summing to 1 within 1e-10), d >= 2.
    times : array_like, shape (K,)
        Observation times :math:`t_k > 0`.
    counts : array_like, shape (K, d)
        Non-negative finite counts :math:`y_k` (integers for a multinomial; any weights work).
    comm : mpi4py.MPI.Comm, optional
        Of the :class:`ArraySpace` (default ``COMM_WORLD``); the data must be the same on every rank (collective).
    method : {"scipy", "block", "eig", "series"}
        The Fréchet method of the exact derivative (:func:`~sensitivity.dense.expm_gradient`).
    """

    def __init__(self, p0: ArrayLike, times: ArrayLike, counts: ArrayLike, comm: MPI.Comm | None = None, *,
                 method: Method = "scipy"):
        p0 = finite_array(p0, "p0", shape=(None,))
        if p0.size < 2:
            raise InvalidArgumentError(f"p0 must have at least 2 states, got shape {p0.shape}")
        if np.any(p0 < 0):
            k = int(np.argmax(p0 < 0))
            raise InvalidArgumentError(f"p0 must be a probability vector: p0[{k}] = {float(p0[k])!r} is negative")
        if abs(float(p0.sum()) - 1.0) > 1e-10:
            raise InvalidArgumentError(f"p0 must be a probability vector: it sums to {float(p0.sum())!r}, not 1")
        times = finite_array(times, "times", shape=(None,))
        if times.size == 0 or np.any(times <= 0):
            raise InvalidArgumentError(f"times must be a non-empty array of positive times, got {times.tolist()!r}")
        d = p0.size
        counts = finite_array(counts, "counts", shape=(times.size, d))
        if np.any(counts < 0):
            k, j = np.argwhere(counts < 0)[0]
            raise InvalidArgumentError(f"counts must be non-negative: counts[{k}, {j}] = {float(counts[k, j])!r}")
        self.method = choice(method, "method", ("scipy", "block", "eig", "series"))
        self.space = ArraySpace(d * (d - 1), comm)
        for value, name in ((p0, "p0"), (times, "times"), (counts, "counts")):
            same_on_all_ranks(self.space.comm, value, name)
        self.d, self.p0, self.times, self.counts = d, p0.copy(), times.copy(), counts.copy()

    @classmethod
    def synthetic(cls, theta: ArrayLike, p0: ArrayLike, times: ArrayLike, num_counts: int,
                  rng: np.random.Generator, comm: MPI.Comm | None = None, *,
                  method: Method = "scipy") -> MultinomialRateMisfit:
        r"""The misfit of counts drawn at the log-rates ``theta``: :math:`y_k \sim \mathrm{Multinomial}(N, p_k)`.

        ``num_counts`` is :math:`N` per time; ``rng`` must have the same state on every rank of ``comm``.
        """
        p0 = finite_array(p0, "p0", shape=(None,))
        Q = rate_matrix_from_log_rates(theta, p0.size)
        times = finite_array(times, "times", shape=(None,))
        N = integer(num_counts, "num_counts", minimum=1)
        if not isinstance(rng, np.random.Generator):
            raise InvalidArgumentError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        p = np.clip(p0 @ scipy.linalg.expm(times[:, None, None] * Q), 0.0, None)
        counts = rng.multinomial(N, p / p.sum(axis=1, keepdims=True)).astype(float)
        return cls(p0, times, counts, comm, method=method)

    def distributions(self, theta: ArrayLike) -> np.ndarray:
        r"""The distributions :math:`p_k` at the observation times, shape (K, d)."""
        Q = rate_matrix_from_log_rates(self.space.check(theta, "theta"), self.d)
        return self.p0 @ scipy.linalg.expm(self.times[:, None, None] * Q)

    def forward(self, theta: ArrayLike) -> _Forward:
        """The forward quantities at ``theta`` (``Q``, ``X``, ``p``, ``value``, ``G`` of 4.5b), shared by the forces."""
        return _Forward(self, self.space.check(theta, "theta"))

    def value(self, theta: ArrayLike) -> float:
        return self.forward(theta).value

    def value_and_derivative(self, theta: ArrayLike) -> tuple[float, np.ndarray]:
        r""":math:`\Phi` and its exact derivative (4.5b, then 4.5a)."""
        f = self.forward(theta)
        if not f.differentiable:
            return f.value, np.full(self.space.size, np.nan)
        return f.value, _chain_rule(f.Q, self.exact_matrix_derivative(f))

    def exact_matrix_derivative(self, f: _Forward) -> np.ndarray:
        r""":math:`\partial\Phi/\partial Q = \sum_kt_kL(t_kQ^T, G_k)` (4.5b; ``expm_gradient`` has the :math:`t_k`)."""
        return sum(expm_gradient(f.Q, f.G[k], float(t), method=self.method) for k, t in enumerate(self.times))


def _stationary_projector(Q: np.ndarray) -> np.ndarray:
    r""":math:`\Pi = 1\pi^T`, :math:`\pi^T(Q/\sigma + 11^T) = 1^T`: the equation of
    :func:`~sensitivity.dense.stationary_distribution` without its spectral checks of 𝒟 (one small solve, not an
    eigendecomposition; NaN where the solve fails, far out in a divergent trajectory)."""
    ones = np.ones(Q.shape[0])
    try:
        pi = np.linalg.solve((Q / np.max(np.abs(Q)) + 1.0).T, ones)
    except np.linalg.LinAlgError:
        pi = np.full_like(ones, np.nan)
    return np.outer(ones, pi / pi.sum())


def _affine_dual(Q: np.ndarray, X: np.ndarray, G: np.ndarray, times: np.ndarray) -> np.ndarray:
    r"""The affine-corrected :math:`\partial\Phi/\partial Q` (module docstring) from :math:`X_k = e^{t_kQ}` and
    :math:`G_k` (shapes (K, d, d)); NaN where the projector's solve fails."""
    P = _stationary_projector(Q)
    eye = np.eye(Q.shape[0])
    with np.errstate(all="ignore"):
        try:
            sharp = np.linalg.solve(Q + P, eye) - P  # the group inverse Q^#
        except np.linalg.LinAlgError:
            sharp = np.full_like(Q, np.nan)
    out = np.zeros_like(Q)
    for t, Xk, Gk in zip(times, X, G):
        B = (Xk - eye) @ sharp
        out += t * P.T @ Gk @ P.T + P.T @ Gk @ B.T + B.T @ Gk @ P.T + t * (Xk - P).T @ Gk @ (eye - P).T
    return out


class RateForce(Force):
    r"""A force of a :class:`MultinomialRateMisfit`: its exact derivative or a surrogate one (module docstring).

    Parameters
    ----------
    misfit : MultinomialRateMisfit
    kind : {"exact", "first order", "affine"}
        ``"exact"``: (4.5b); ``"first order"``: :math:`\partial\Phi/\partial Q \approx \sum_kt_k(e^{t_kQ})^TG_k`
        (seed 1.6); ``"affine"``: the affine-corrected form (module docstring),
        exact along the stationary projector, first order on the transient. The force's :attr:`name` is ``kind``.

    Notes
    -----
    Each is a function of :math:`\theta` alone, and the samplers accept with the exact :math:`\Phi`: a surrogate
    changes the efficiency, never the target (docs/theory.md §4.4).
    """

    def __init__(self, misfit: MultinomialRateMisfit, kind: Literal["exact", "first order", "affine"] = "exact"):
        if not isinstance(misfit, MultinomialRateMisfit):
            raise InvalidArgumentError(f"misfit must be a MultinomialRateMisfit, got {type(misfit).__name__}")
        self.misfit = misfit
        self.name = choice(kind, "kind", RATE_FORCE_KINDS)

    def matrix_derivative(self, theta: ArrayLike) -> tuple[_Forward, np.ndarray]:
        r"""The forward quantities and this force's :math:`\partial\Phi/\partial Q` (shape (d, d); NaN where
        :math:`\Phi = \infty`)."""
        f = self.misfit.forward(theta)
        if not f.differentiable:
            return f, np.full((self.misfit.d, self.misfit.d), np.nan)
        t = self.misfit.times
        if self.name == "exact":
            DQ = self.misfit.exact_matrix_derivative(f)
        elif self.name == "first order":
            DQ = np.tensordot(t, np.swapaxes(f.X, 1, 2) @ f.G, axes=1)  # sum_k t_k X_k^T G_k (BLAS, not einsum)
        else:
            DQ = _affine_dual(f.Q, f.X, f.G, t)
        return f, DQ

    def derivative(self, theta: ArrayLike) -> np.ndarray:
        f, DQ = self.matrix_derivative(theta)
        return _chain_rule(f.Q, DQ) if f.differentiable else np.full(self.misfit.space.size, np.nan)
