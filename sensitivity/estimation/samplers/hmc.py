r"""Hamiltonian Monte Carlo for finite-dimensional parameters: leapfrog with a diagonal or the prior's mass matrix.

With the potential :math:`U(q) = \Phi(q) + \tfrac12\|q - \bar m\|^2_{\mathcal C^{-1}}`, a momentum
:math:`p \sim N(0, \mathbb M)` and :math:`\mathcal H(q, p) = U(q) + \tfrac12p^T\mathbb M^{-1}p`, one leapfrog step
of size :math:`\varepsilon` (docs/theory.md §4.4) is

.. math::

    p \leftarrow p - \tfrac\varepsilon2 F(q),\qquad q \leftarrow q + \varepsilon\,\mathbb M^{-1}p,\qquad
    p \leftarrow p - \tfrac\varepsilon2 F(q),\qquad F(q) = f(q) + \mathcal C^{-1}(q - \bar m),

where :math:`f` is the posterior's force (exact or surrogate derivative of :math:`\Phi`) and the prior term is
exact. :math:`L` steps are accepted with probability :math:`\min(1, e^{-\Delta\mathcal H})`, with
:math:`\Delta\mathcal H` from the exact :math:`U` and kinetic energy: for any force that depends on :math:`q`
alone the chain samples the exact posterior.

Mass matrices: ``mass=None`` (the identity), a positive diagonal (an array in
:meth:`~sensitivity.estimation.vectors.ParameterSpace.to_array` order; parameters on an
:class:`~sensitivity.estimation.vectors.ArraySpace`), a dense symmetric positive definite matrix (an
:class:`~sensitivity.estimation.vectors.ArraySpace`; e.g. the inverse of the Laplace approximation's covariance,
the Gaussian posterior's precision, so that the leapfrog sees a problem of condition number one where the
posterior is near Gaussian: the dense metric Stan adapts in its warm-up, here from the Hessian), or ``"prior"``: :math:`\mathbb M = \mathcal C^{-1}`, so
:math:`\mathbb M^{-1}p = \mathcal Cp` and :math:`p = \mathcal C^{-1}L\xi` (:math:`LL^T = \mathcal C`) has covariance
:math:`\mathcal C^{-1}`. Unlike :class:`~sensitivity.estimation.samplers.infinite.InfiniteHMC` this integrator
is not dimension-robust: its step size must shrink as a discretization is refined.
"""

from __future__ import annotations

import math

import numpy as np

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.samplers.base import Kernel, evaluate
from sensitivity.estimation.vectors import ArraySpace
from sensitivity.validation import finite_array, in_range, integer

__all__ = ["HMC"]


class _DiagonalMass:
    r""":math:`\mathbb M = \mathrm{diag}(m)` on an :class:`ArraySpace`."""

    def __init__(self, diagonal: np.ndarray):
        self.diagonal, self.root = diagonal, np.sqrt(diagonal)

    def momentum(self, posterior, rng):
        return posterior.space.standard_normal(rng) * self.root

    def velocity(self, posterior, p):
        return p / self.diagonal

    def kinetic(self, posterior, p) -> float:
        return 0.5 * float(np.sum(p * p / self.diagonal))


class _DenseMass:
    r""":math:`\mathbb M = LL^T` dense on an :class:`ArraySpace`: momenta :math:`L\xi`, velocities
    :math:`\mathbb M^{-1}p` by two triangular solves."""

    def __init__(self, matrix: np.ndarray, factor: np.ndarray):
        self.matrix, self.factor = matrix, factor

    def momentum(self, posterior, rng):
        return self.factor @ posterior.space.standard_normal(rng)

    def velocity(self, posterior, p):
        from scipy.linalg import cho_solve

        return cho_solve((self.factor, True), p)

    def kinetic(self, posterior, p) -> float:
        return 0.5 * float(np.dot(p, self.velocity(posterior, p)))


class _PriorMass:
    r""":math:`\mathbb M = \mathcal C^{-1}`: velocities :math:`\mathcal Cp`."""

    def momentum(self, posterior, rng):
        prior = posterior.prior
        s = prior.sqrt_covariance_action(rng.standard_normal(prior.noise_size))
        p = prior.precision_action(s)
        posterior.space.destroy(s)
        return p

    def velocity(self, posterior, p):
        return posterior.prior.covariance_action(p)

    def kinetic(self, posterior, p) -> float:
        v = posterior.prior.covariance_action(p)
        value = 0.5 * posterior.space.dot(p, v)
        posterior.space.destroy(v)
        return value


def _cholesky(matrix: np.ndarray) -> np.ndarray:
    """The lower Cholesky factor of a symmetric positive definite ``matrix``, or a clear error."""
    n = matrix.shape[0]
    if matrix.shape != (n, n) or n == 0:
        raise InvalidArgumentError(f"a dense mass must be a square matrix, got shape {matrix.shape}")
    asymmetry = float(np.max(np.abs(matrix - matrix.T)))
    if asymmetry > 1e-12 * float(np.max(np.abs(matrix))):
        raise InvalidArgumentError(f"a dense mass must be symmetric: max |M - M^T| = {asymmetry:.3g}")
    try:
        return np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        lam = float(np.linalg.eigvalsh(matrix).min())
        raise InvalidArgumentError(f"a dense mass must be positive definite: its smallest eigenvalue is {lam:.3g}") \
            from None


class HMC(Kernel):
    r"""Leapfrog HMC with ``num_steps`` steps and a diagonal or the prior's mass matrix (module docstring).

    Parameters
    ----------
    num_steps : int
        :math:`L \ge 1`.
    mass : None, "prior", array_like of shape (n,) or (n, n)
        The identity, :math:`\mathcal C^{-1}`, a positive diagonal, or a dense symmetric positive definite matrix
        (recorded in the settings by its SHA-256, so a resumed chain needs the same matrix bit for bit).
    jitter : float
        Random step sizes :math:`\varepsilon(1 + j(2u - 1))` per trajectory, as for
        :class:`~sensitivity.estimation.samplers.infinite.InfiniteHMC`.
    """

    name = "HMC"
    uses_force = True
    target_accept = 0.8

    def __init__(self, num_steps: int = 10, mass=None, jitter: float = 0.0):
        self.num_steps = integer(num_steps, "num_steps", minimum=1)
        self.jitter = in_range(jitter, "jitter", 0.0, 1.0, high_open=True)
        if isinstance(mass, str):
            if mass != "prior":
                raise InvalidArgumentError(f"mass must be None, 'prior' or a positive array, got {mass!r}")
            self.mass = "prior"
        elif mass is None:
            self.mass = None
        else:
            mass = finite_array(mass, "mass")
            if mass.ndim == 2:
                self.mass, self._factor = mass.copy(), _cholesky(mass)
            elif mass.ndim != 1 or mass.size == 0 or np.any(mass <= 0):
                raise InvalidArgumentError(f"a diagonal mass must be a 1-D array of positive numbers, got {mass!r}")
            else:
                self.mass = mass.copy()

    def settings(self):
        if self.mass is None or isinstance(self.mass, str):
            mass = "identity" if self.mass is None else self.mass
        elif self.mass.ndim == 2:
            import hashlib

            mass = {"dense": self.mass.shape[0], "sha256": hashlib.sha256(self.mass.tobytes()).hexdigest()}
        else:
            mass = self.mass.tolist()
        return {"name": self.name, "num_steps": self.num_steps, "mass": mass, "jitter": self.jitter}

    def check(self, posterior):
        super().check(posterior)
        if isinstance(self.mass, str):
            return
        if not isinstance(posterior.space, ArraySpace):
            raise InvalidArgumentError("a diagonal or dense mass matrix needs parameters on an ArraySpace; use "
                                       f"mass='prior' (or InfiniteHMC) for {type(posterior.space).__name__} parameters")
        n = posterior.space.size
        if self.mass is not None and self.mass.shape not in ((n,), (n, n)):
            raise InvalidArgumentError(f"the mass has shape {self.mass.shape}, the parameters {n} entries")

    def _metric(self, posterior):
        if isinstance(self.mass, str):
            return _PriorMass()
        if self.mass is not None and self.mass.ndim == 2:
            return _DenseMass(self.mass, self._factor)
        return _DiagonalMass(np.ones(posterior.space.size) if self.mass is None else self.mass)

    def step(self, posterior, state, rng, step_size):
        space, h = posterior.space, self._jittered(rng, step_size)
        metric = self._metric(posterior)
        p = metric.momentum(posterior, rng)
        initial_kinetic = metric.kinetic(posterior, p)
        q = space.copy(state.position)
        end, evaluations, finite = None, 0, True
        grad = self._potential_gradient(posterior, q, state.force)
        space.axpy(-0.5 * h, grad, p)
        space.destroy(grad)
        for k in range(self.num_steps):
            velocity = metric.velocity(posterior, p)
            space.axpy(h, velocity, q)
            space.destroy(velocity)
            evaluations += 1
            last = k == self.num_steps - 1
            if last:
                end = evaluate(posterior, space.copy(q), with_force=True)
                force = end.force
            else:
                force = posterior.force.derivative(q)
            grad = self._potential_gradient(posterior, q, force)
            if not last:
                space.destroy(force)
            finite = math.isfinite(space.dot(grad, grad))
            space.axpy(-(0.5 if last else 1.0) * h, grad, p)
            space.destroy(grad)
            if not finite:
                break
        space.destroy(q)
        energy_error = math.inf
        if end is not None and finite and math.isfinite(end.potential):
            energy_error = end.potential + metric.kinetic(posterior, p) - state.potential - initial_kinetic
        elif end is not None:
            end.release(space)
            end = None
        space.destroy(p)
        return self._finish(posterior, state, end, energy_error, rng, step_size, self.num_steps, evaluations)

    @staticmethod
    def _potential_gradient(posterior, q, force):
        r""":math:`F(q) = f(q) + \mathcal C^{-1}(q - \bar m)` (a new vector)."""
        grad = posterior.prior.derivative(q)
        posterior.space.axpy(1.0, force, grad)
        return grad
