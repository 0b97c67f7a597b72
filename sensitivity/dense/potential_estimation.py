r"""Estimation of the toy quantum model's potential from noisy probabilities (docs/theory.md §3–4, seed §4.1).

Gauge-fixed, optionally Tikhonov-regularized least squares on the exact
probability Jacobian of :class:`~sensitivity.dense.quantum.ToyQuantumModel`, with
several starts (the problem is non-convex) and the invariances of
:mod:`~sensitivity.dense.quantum_invariances` accounted for: the constant shift is fixed by the
gauge, the chiral partner is reported, and starts at the chiral fixed point
(vanishing Jacobian) are skipped. The result carries the linearized
(Gauss–Newton) covariance, the singular values and the rank of the weighted
Jacobian.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize
from numpy.typing import ArrayLike

from sensitivity.dense.ensembles import random_generator
from sensitivity.dense.quantum import ToyQuantumModel
from sensitivity.dense.quantum_invariances import Gauge, fix_gauge, gauge_index
from sensitivity.errors import InvalidArgumentError, SensitivityError
from sensitivity.validation import finite_number, integer, non_negative, positive

__all__ = ["PotentialEstimate", "estimate_potential"]


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


def _weight(value: float, name: str) -> float:
    """``value`` as a finite real >= 0 (the message this API has always given)."""
    try:
        return non_negative(value, name)
    except InvalidArgumentError as err:
        raise InvalidArgumentError(f"{name} must be a finite real >= 0, got {value!r}") from err


def _gauge_basis(d: int, gauge: Gauge, value: float) -> tuple[np.ndarray, np.ndarray]:
    """V = v0 + B theta parametrizes the gauge-fixed potentials (B: d x (d-1))."""
    if isinstance(gauge, str) and gauge == "mean":
        B = np.linalg.svd(np.eye(d) - 1.0 / d)[0][:, : d - 1]  # orthonormal basis of 1^perp
        return np.full(d, value), B
    k = gauge_index(gauge, d)
    B = np.delete(np.eye(d), k, axis=1)
    v0 = np.zeros(d)
    v0[k] = value
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
    r"""Estimate :math:`V` from noisy probability vectors by least squares (docs/theory.md §3–4, seed §4.1).

    Minimizes

    .. math:: \Phi(V) + \frac\alpha2\|\Pi(V - V_{ref})\|^2,\qquad
              \Phi(V) = \frac12\sum_i\Bigl\|\frac{p(t_i;V) - d_i}{\sigma}\Bigr\|^2,\quad
              \Pi = I - \tfrac1d\mathbf 1\mathbf 1^T,

    over the gauge-fixed potentials :math:`V = v_0 + B\theta` (invariance 1 of
    :mod:`~sensitivity.dense.quantum_invariances`; the Tikhonov term acts on the gauge-free
    part only, so the answer does not depend on the gauge), with
    :func:`scipy.optimize.least_squares` (trust-region reflective) and the exact Jacobian
    :meth:`ToyQuantumModel.jacobian`.

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
    if not isinstance(model, ToyQuantumModel):
        raise InvalidArgumentError(f"model must be a ToyQuantumModel, got {type(model).__name__}")
    d = model.d
    data, sigma = model.check_data(data, sigma)
    alpha = _weight(alpha, "alpha")
    start_scale = _weight(start_scale, "start_scale")
    n_starts = integer(n_starts, "n_starts", minimum=1)
    tol = positive(tol, "tol")
    max_nfev = integer(max_nfev, "max_nfev", minimum=1)
    V_ref = np.zeros(d) if V_ref is None else model.check_potential(V_ref)
    V0 = V_ref if V0 is None else model.check_potential(V0)
    v0, B = _gauge_basis(d, gauge, finite_number(gauge_value, "gauge_value"))
    Pi = np.eye(d) - 1.0 / d
    sqa = np.sqrt(alpha)
    rng = random_generator(seed, "seed")
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
