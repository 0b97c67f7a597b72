r"""Data misfits over time steps: the terms :math:`f_n(\theta_n)` of a reduced objective (docs/theory.md §2, §4).

The reduced objective of :mod:`sensitivity.fem.objective.reduced` is

.. math::

    F(c) = \sum_{n} f_n(\theta_n(c)) + \mathcal R(c),

where each misfit term contributes :math:`f_n` at its observation steps:

- :class:`ObservationMisfit`: :math:`f_n = \tfrac12\sum_j \bigl((P\theta_n - d_n)_j/\sigma_j\bigr)^2`
  for a linear observation operator :math:`P` — point sensors
  (:class:`~sensitivity.fem.PointSensors`) or region averages
  (:class:`~sensitivity.fem.RegionAverages`) — with noise standard deviations
  :math:`\sigma_j`;
- :class:`FieldMisfit`: :math:`f_n = \tfrac{w}{2}\,(\theta_n - d_n)^T M_0 (\theta_n - d_n)`,
  the :math:`L^2` misfit to a whole field (:math:`M_0` the plain mass matrix);

and :class:`~sensitivity.fem.objective.regularization.Tikhonov` is the regularization
:math:`\mathcal R(c)`. Every term gives its value, its gradient with respect to the state
(as a dof vector: the ℓ² derivative an adjoint sweep needs) and its Hessian action.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import dolfinx.fem as fem
import numpy as np
import ufl
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import backend
from sensitivity.validation import finite_array, positive, same_on_all_ranks

__all__ = ["FieldMisfit", "Misfit", "ObservationMisfit", "steps_at"]


def steps_at(times: Sequence[float], dt: float, nsteps: int) -> np.ndarray:
    """Step indices ``n = t/dt`` of observation times (each must be a multiple of ``dt`` in [dt, nsteps dt])."""
    t = np.atleast_1d(np.asarray(times, dtype=float))
    if t.ndim != 1 or not np.all(np.isfinite(t)):
        raise InvalidArgumentError(f"observation times must be a finite 1-D sequence, got {times!r}")
    n = np.rint(t / dt).astype(int)
    bad = np.flatnonzero((np.abs(n * dt - t) > 1e-9 * max(dt, 1.0)) | (n < 1) | (n > nsteps))
    if bad.size:
        raise InvalidArgumentError(
            f"observation time {float(t[bad[0]])!r} is not a multiple of dt = {dt!r} in [dt, {nsteps} dt]")
    return n


def _check_steps(steps) -> np.ndarray:
    s = np.atleast_1d(np.asarray(steps))
    if s.ndim != 1 or s.size == 0 or s.dtype.kind not in "iu" or np.any(s < 1):
        raise InvalidArgumentError(f"steps must be a non-empty 1-D sequence of integers >= 1, got {steps!r}")
    if np.unique(s).size != s.size:
        raise InvalidArgumentError(f"steps must not repeat, got {steps!r}")
    return s.astype(int)


class Misfit(ABC):
    """A data term active at some time steps: value :math:`f_n(\\theta_n)`, gradient and Hessian action."""

    def __init__(self, steps: Sequence[int]):
        self.steps = _check_steps(steps)
        self._index = {int(n): k for k, n in enumerate(self.steps)}

    def active(self, n: int) -> bool:
        return n in self._index

    @abstractmethod
    def value(self, n: int, theta: PETSc.Vec) -> float:
        """:math:`f_n(\\theta)` (collective); ``n`` must be an active step."""

    @abstractmethod
    def add_gradient(self, n: int, theta: PETSc.Vec, out: PETSc.Vec) -> None:
        """``out += ∇f_n(θ)`` (collective)."""

    @abstractmethod
    def add_hessian_action(self, n: int, theta: PETSc.Vec, rho: PETSc.Vec, out: PETSc.Vec) -> None:
        """``out += ∇²f_n(θ) ρ`` (collective)."""


class ObservationMisfit(Misfit):
    r"""Weighted least squares of observations, :math:`\tfrac12\|\Sigma^{-1}(y(\theta_n) - d_n)\|^2`.

    Gradient :math:`y'(\theta)^T\Sigma^{-2}r`; Hessian action
    :math:`y'^T\Sigma^{-2}y'\rho + \sum_j(\Sigma^{-2}r)_j\nabla^2y_j\,\rho` (the second term
    vanishes for linear observations).

    Parameters
    ----------
    observation : Observation
        :class:`~sensitivity.fem.PointSensors`, :class:`~sensitivity.fem.RegionAverages`
        (linear), :class:`~sensitivity.fem.DensitySensors`,
        :class:`~sensitivity.fem.RegionProbabilities` (quadratic), or anything with
        the methods of :class:`~sensitivity.fem.observation.Observation`.
    steps : sequence of int
        The observation steps n (times n·dt).
    data : array_like, shape (len(steps), m)
        Observed values, the same on every rank.
    noise : float or array_like of shape (m,) or (len(steps), m)
        Noise standard deviations :math:`\sigma` (> 0).
    """

    def __init__(self, observation, steps: Sequence[int], data, noise=1.0):
        super().__init__(steps)
        self.observation = observation
        m = observation.num_sensors
        d = finite_array(data, "data", shape=(len(self.steps), m))
        sigma = _noise(noise, d.shape)
        comm = getattr(observation, "comm", None)
        if comm is not None:  # every rank evaluates the whole misfit: the numbers must agree
            same_on_all_ranks(comm, d, "data")
            same_on_all_ranks(comm, sigma, "noise")
        self.data = d
        self.weights = 1.0 / sigma**2

    def residual(self, n: int, theta: PETSc.Vec) -> np.ndarray:
        k = self._index[n]
        return self.observation.evaluate(theta) - self.data[k]

    def value(self, n, theta):
        r = self.residual(n, theta)
        return 0.5 * float(np.sum(self.weights[self._index[n]] * r**2))

    def add_gradient(self, n, theta, out):
        self.observation.add_jacobian_transpose(theta, self.weights[self._index[n]] * self.residual(n, theta), out)

    def add_hessian_action(self, n, theta, rho, out):
        obs, weights = self.observation, self.weights[self._index[n]]
        obs.add_jacobian_transpose(theta, weights * obs.jacobian_action(theta, rho), out)
        if not obs.linear:
            obs.add_hessian_action(theta, weights * self.residual(n, theta), rho, out)


def _noise(noise, shape: tuple[int, int]) -> np.ndarray:
    """Noise standard deviations as an array of ``shape`` (a number, one per sensor, or one per step and sensor)."""
    sigma = finite_array(noise, "noise")
    if sigma.ndim > 2 or sigma.shape not in ((), (shape[1],), shape):
        raise InvalidArgumentError(f"noise must be a number or an array of shape ({shape[1]},) or {shape} "
                                   f"(steps x sensors), got shape {sigma.shape}")
    if np.any(sigma <= 0):
        raise InvalidArgumentError(f"noise must be positive and finite, got {noise!r}")
    return np.array(np.broadcast_to(sigma, shape))


class FieldMisfit(Misfit):
    r"""The :math:`L^2` misfit :math:`\tfrac w2\|\theta_n - d_n\|_{L^2}^2` to whole fields.

    Parameters
    ----------
    V : dolfinx.fem.FunctionSpace
        The θ space.
    steps : sequence of int
    data : sequence of dolfinx.fem.Function
        One field per step, in ``V``.
    weight : float
        :math:`w > 0`.
    """

    def __init__(self, V: fem.FunctionSpace, steps: Sequence[int], data: Sequence[fem.Function], weight: float = 1.0):
        super().__init__(steps)
        data = list(data)
        if len(data) != len(self.steps) or not all(isinstance(f, fem.Function) and f.function_space == V for f in data):
            raise InvalidArgumentError(f"data must be {len(self.steps)} Functions in the theta space")
        self.weight = positive(weight, "weight")
        u, w = ufl.TrialFunction(V), ufl.TestFunction(V)
        self.M = backend.assemble_matrix(backend.form(ufl.inner(u, w) * ufl.dx))
        self.fields = data  # keeps the Functions (and so their vectors) alive
        self.data = [f.x.petsc_vec for f in data]
        self._r = self.M.createVecLeft()
        self._Mr = self.M.createVecLeft()

    def _residual(self, n, theta):
        self._r.waxpy(-1.0, self.data[self._index[n]], theta)
        self.M.mult(self._r, self._Mr)

    def value(self, n, theta):
        self._residual(n, theta)
        return 0.5 * self.weight * self._Mr.dot(self._r).real  # r^H M r (real in a complex build)

    def add_gradient(self, n, theta, out):
        self._residual(n, theta)
        out.axpy(self.weight, self._Mr)

    def add_hessian_action(self, n, theta, rho, out):
        self.M.mult(rho, self._Mr)
        out.axpy(self.weight, self._Mr)
