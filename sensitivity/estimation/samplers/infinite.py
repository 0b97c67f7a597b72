r"""Hamiltonian Monte Carlo in function space (Beskos, Pinski, Sanz-Serna & Stuart 2011), prior-preconditioned.

The Hamiltonian of a posterior :math:`\pi(q) \propto e^{-\Phi(q)}N(\bar m, \mathcal C)(q)` with the velocity
:math:`v \sim N(0, \mathcal C)` is

.. math::

    H(q, v) = \Phi(q) + \tfrac12\|q - \bar m\|^2_{\mathcal C^{-1}} + \tfrac12\|v\|^2_{\mathcal C^{-1}}.

One step of size :math:`h` splits it into the misfit, integrated by half kicks with the **force**
:math:`f \approx \partial\Phi/\partial q` (an ℓ² dual vector, mapped to a velocity by :math:`\mathcal C`), and the
Gaussian part, whose flow is an exact rotation about the prior mean:

.. math::

    v \leftarrow v - \tfrac h2\,\mathcal Cf(q),\qquad
    \begin{pmatrix} q - \bar m \\ v \end{pmatrix} \leftarrow
    \begin{pmatrix} \cos h & \sin h \\ -\sin h & \cos h \end{pmatrix}
    \begin{pmatrix} q - \bar m \\ v \end{pmatrix},\qquad
    v \leftarrow v - \tfrac h2\,\mathcal Cf(q).

**Exact energy change.** The rotation conserves :math:`\tfrac12\|q - \bar m\|^2_{\mathcal C^{-1}} +
\tfrac12\|v\|^2_{\mathcal C^{-1}}` exactly, and a kick :math:`v^+ = v - \tfrac h2\mathcal Cf` changes only the
kinetic term, by :math:`\tfrac12\|v^+\|^2_{\mathcal C^{-1}} - \tfrac12\|v\|^2_{\mathcal C^{-1}} =
-\tfrac h2\langle v, f\rangle + \tfrac{h^2}8\langle f, \mathcal Cf\rangle` (ℓ² pairings; :math:`\mathcal C^{-1}`
is never applied). Along the whole trajectory of :math:`L` steps

.. math::

    \Delta H = \Phi(q_L) - \Phi(q_0) + \sum_{\text{kicks}}\Bigl(-\tfrac h2\langle v_{\text{before}}, f\rangle
    + \tfrac{h^2}8\langle f, \mathcal Cf\rangle\Bigr),

which is the exact change of :math:`H` of the discrete trajectory, whatever the force. The map is a
composition of volume-preserving shears and rotations, symmetric, so reversible under :math:`v \to -v`; with
the exact :math:`\Phi` in :math:`\Delta H` the chain samples the exact posterior for any force that is a
function of :math:`q` alone (docs/theory.md §4.4). Being defined in function space, its acceptance rate does not
degrade under mesh refinement (Beskos et al. 2011; not measured here).

**∞-MALA.** With one step the proposal is
:math:`q' = \bar m + \cos h\,(q - \bar m) + \sin h\,(v - \tfrac h2\mathcal Cf(q))`, :math:`v \sim N(0, \mathcal C)`:
a Gaussian proposal :math:`N(\bar m + \cos h\,(q - \bar m) - \tfrac h2\sin h\,\mathcal Cf(q),\ \sin^2h\,\mathcal C)`:
the pCN proposal with :math:`\beta = \sin h` shifted by a Langevin drift. Its Metropolis–Hastings ratio with the
two Gaussian proposal densities equals :math:`e^{-\Delta H}` above (the reverse move needs the velocity
:math:`-v'`), so :class:`InfiniteMALA` is :class:`InfiniteHMC` with ``num_steps=1`` (cf. Beskos et al. 2011;
checked in ``tests/test_estimation_samplers.py``).

**Trajectory length.** Directions the data do not inform are rotated by exactly the angle :math:`T = Lh` per
transition (autocorrelation :math:`\cos T`): :math:`T \approx \pi/2` decorrelates them in one transition, while
:math:`T` near :math:`\pi` reflects them deterministically and near :math:`2\pi` leaves them in place. Choose
``num_steps`` with the adapted :math:`h` in mind, or give a ``jitter``. The step size is capped at :math:`\pi/2`
(a quarter turn). Default adaptation targets: 0.8 for HMC (Stan) and 0.574 for MALA (the optimal Langevin
acceptance rate, Roberts & Rosenthal 1998).
"""

from __future__ import annotations

import math

from sensitivity.estimation.samplers.base import Kernel, State, evaluate
from sensitivity.validation import in_range, integer

__all__ = ["InfiniteHMC", "InfiniteMALA"]


class InfiniteHMC(Kernel):
    r"""∞-dimensional HMC with ``num_steps`` steps of the prior-split integrator (module docstring).

    Parameters
    ----------
    num_steps : int
        :math:`L \ge 1` steps per trajectory (one force evaluation each).
    jitter : float
        Each trajectory uses the step size :math:`h(1 + j(2u - 1))`, :math:`u \sim U(0, 1)`, :math:`0 \le j < 1`
        (default 0): a random trajectory length avoids the near-periodic trajectories of a fixed one (Neal 2011,
        §5.4.2.2); ``step_size`` reports the nominal :math:`h`.
    """

    name = "infinite HMC"
    uses_force = True
    target_accept = 0.8
    max_step_size = 0.5 * math.pi

    def __init__(self, num_steps: int = 10, jitter: float = 0.0):
        self.num_steps = integer(num_steps, "num_steps", minimum=1)
        self.jitter = in_range(jitter, "jitter", 0.0, 1.0, high_open=True)

    def settings(self):
        return {"name": self.name, "num_steps": self.num_steps, "jitter": self.jitter}

    def step(self, posterior, state, rng, step_size):
        h = self._jittered(rng, step_size)
        velocity = posterior.prior.sqrt_covariance_action(rng.standard_normal(posterior.prior.noise_size))
        proposal, velocity, energy_error, evaluations = self.trajectory(posterior, state, velocity, h)
        posterior.space.destroy(velocity)
        return self._finish(posterior, state, proposal, energy_error, rng, step_size, self.num_steps, evaluations)

    def trajectory(self, posterior, state: State, velocity, step_size: float):
        r"""Integrate from ``(state.position, velocity)`` (the velocity is taken over).

        Returns ``(end state, end velocity, ΔH, force evaluations)``; the end state is ``None`` (and
        :math:`\Delta H = \infty`) if a kick became non-finite, which stops the trajectory.
        """
        space, prior = posterior.space, posterior.prior
        h = float(step_size)
        c, s = math.cos(h), math.sin(h)
        x = space.copy(state.position)
        space.axpy(-1.0, prior.mean, x)  # x = q - m
        force, owned = state.force, False
        metric_force, kinetic = self._metric_force(posterior, force), 0.0  # C f, and the kicks' kinetic change
        end, evaluations = None, 0
        for k in range(self.num_steps):
            kinetic += self._kick(posterior, velocity, force, metric_force, h)
            if not math.isfinite(kinetic):
                break
            rotated = space.copy(x)  # (x, v) <- (c x + s v, -s x + c v)
            space.scale(x, c)
            space.axpy(s, velocity, x)
            space.scale(velocity, c)
            space.axpy(-s, rotated, velocity)
            space.destroy(rotated)
            q = space.copy(x)
            space.axpy(1.0, prior.mean, q)
            if owned:
                space.destroy(force)
            space.destroy(metric_force[0])
            evaluations += 1
            if k == self.num_steps - 1:
                end = evaluate(posterior, q, with_force=True)
                force, owned = end.force, False
            else:
                force, owned = posterior.force.derivative(q), True
                space.destroy(q)
            metric_force = self._metric_force(posterior, force)
            kinetic += self._kick(posterior, velocity, force, metric_force, h)
        if owned:
            space.destroy(force)
        space.destroy(metric_force[0])
        space.destroy(x)
        if end is None or not math.isfinite(kinetic) or not math.isfinite(end.misfit):
            if end is not None:
                end.release(space)
            return None, velocity, math.inf, evaluations
        return end, velocity, end.misfit - state.misfit + kinetic, evaluations

    @staticmethod
    def _metric_force(posterior, force) -> tuple:
        r""":math:`(\mathcal Cf, \langle f, \mathcal Cf\rangle)`: one covariance action serves both kicks at a point."""
        metric_force = posterior.prior.covariance_action(force)
        return metric_force, posterior.space.dot(force, metric_force)

    @staticmethod
    def _kick(posterior, velocity, force, metric_force: tuple, h: float) -> float:
        r""":math:`v \leftarrow v - \tfrac h2\mathcal Cf`; returns the kinetic change
        :math:`-\tfrac h2\langle v, f\rangle + \tfrac{h^2}8\langle f, \mathcal Cf\rangle`."""
        change = -0.5 * h * posterior.space.dot(velocity, force) + 0.125 * h * h * metric_force[1]
        posterior.space.axpy(-0.5 * h, metric_force[0], velocity)
        return change


class InfiniteMALA(InfiniteHMC):
    """∞-MALA: :class:`InfiniteHMC` with one step (the equivalence is in the module docstring)."""

    name = "infinite MALA"
    target_accept = 0.574

    def __init__(self, jitter: float = 0.0):
        super().__init__(num_steps=1, jitter=jitter)

    def settings(self):
        return {"name": self.name, "jitter": self.jitter}
