r"""What every Markov-chain kernel shares: the chain state, the exact evaluation of a point, the Metropolis step.

A kernel (:class:`Kernel`) advances a :class:`State` by one :meth:`Kernel.step`: it proposes a point
with a rule of its own (a pCN move, a Hamiltonian trajectory) and accepts it with probability
:math:`\min(1, e^{-\Delta H})`, where :math:`\Delta H` is the change of the kernel's energy computed with
the **exact** posterior value :math:`U = \Phi + \tfrac12\|q - \bar m\|^2_{\mathcal C^{-1}}` (or the exact
:math:`\Phi` for kernels that are reversible with respect to the prior). The force that drives a
trajectory (:attr:`Posterior.force <sensitivity.estimation.posterior.Posterior.force>`) may be a surrogate;
it changes :math:`\Delta H`, hence the acceptance rate, never the target (docs/theory.md §4.4).

Every random number comes from the chain's ``numpy.random.Generator``, which has the same state on every
rank of the chain's communicator, and vectors are drawn through
:meth:`~sensitivity.estimation.vectors.ParameterSpace.standard_normal` or the prior's
``sqrt_covariance_action``, so a seed gives the same chain on any number of ranks (to solver round-off).
The accept decision is made on :math:`\Delta H` broadcast from rank 0, so the ranks never disagree.

Per-step statistics (ArviZ ``sample_stats`` names): ``acceptance_rate`` :math:`\min(1, e^{-\Delta H})`,
``energy_error`` :math:`\Delta H`, ``step_size``, ``diverging`` (:math:`\Delta H > 1000` or not finite; the
proposal is then rejected), ``accepted``, ``n_steps`` (integration steps), ``gradient_evaluations`` (force
evaluations) and ``lp`` :math:`= -U` at the chain's new position.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.posterior import ExactForce, Posterior

__all__ = ["DIVERGENCE", "Kernel", "State", "evaluate"]

#: An energy error above this (or a non-finite one) marks a divergent transition (Stan's threshold).
DIVERGENCE = 1000.0


@dataclass
class State:
    r"""A point of the chain with what the kernels need there.

    Attributes
    ----------
    position : vector
        :math:`q`.
    misfit : float
        :math:`\Phi(q)`, exact.
    prior_cost : float
        :math:`\tfrac12\|q - \bar m\|^2_{\mathcal C^{-1}}`.
    force : vector or None
        The force :math:`f(q)` (``posterior.force``) for kernels that integrate trajectories.
    """

    position: Any
    misfit: float
    prior_cost: float
    force: Any | None = None

    @property
    def potential(self) -> float:
        r""":math:`U(q) = \Phi(q) + \tfrac12\|q - \bar m\|^2_{\mathcal C^{-1}}`."""
        return self.misfit + self.prior_cost

    def release(self, space) -> None:
        """Destroy the vectors (PETSc); the state is unusable afterwards."""
        space.destroy(self.position)
        if self.force is not None:
            space.destroy(self.force)


def evaluate(posterior: Posterior, q: Any, with_force: bool) -> State:
    r"""The :class:`State` at ``q`` (which it takes over): exact :math:`\Phi(q)`, prior cost and, if asked, the force.

    With the exact force the value and the derivative come from one ``value_and_derivative`` (one forward
    and one adjoint solve for a PDE misfit); otherwise the value is exact and the force is the posterior's.
    """
    force = None
    if not with_force:
        misfit = posterior.misfit.value(q)
    elif isinstance(posterior.force, ExactForce) and posterior.force.misfit is posterior.misfit:
        misfit, force = posterior.misfit.value_and_derivative(q)
    else:
        misfit = posterior.misfit.value(q)
        force = posterior.force.derivative(q)
    return State(q, float(misfit), float(posterior.prior.cost(q)), force)


class Kernel(ABC):
    """A Markov-chain transition that leaves the posterior invariant (module docstring).

    A kernel holds only its options; the posterior is passed to every call, so one kernel serves chains
    on several communicators. Subclasses set the class attributes and implement :meth:`step`.

    Attributes
    ----------
    name : str
    uses_force : bool
        Whether the state must carry the force (trajectory kernels).
    target_accept : float
        The default target of the step-size adaptation.
    max_step_size : float
        The largest meaningful step size (the adaptation is capped there).
    jitter : float
        Relative jitter of the step size per transition (trajectory kernels; 0: none).
    """

    name: str = "kernel"
    uses_force: bool = False
    target_accept: float = 0.8
    max_step_size: float = math.inf
    jitter: float = 0.0

    def settings(self) -> dict[str, Any]:
        """The options that define the transition (JSON-serializable; stored with chains and compared on resume)."""
        return {"name": self.name}

    def check(self, posterior: Posterior) -> None:
        """Raise :class:`InvalidArgumentError` unless this kernel can sample ``posterior`` (same on every rank)."""
        if not isinstance(posterior, Posterior):
            raise InvalidArgumentError(f"the posterior must be a Posterior, got {type(posterior).__name__}")

    def init(self, posterior: Posterior, q: Any) -> State:
        """The state at ``q`` (taken over), with the force if the kernel uses one (collective)."""
        return evaluate(posterior, q, self.uses_force)

    @abstractmethod
    def step(self, posterior: Posterior, state: State, rng: np.random.Generator,
             step_size: float) -> tuple[State, dict[str, Any]]:
        """One transition from ``state`` (collective): the new state (``state`` itself if rejected; the loser's
        vectors are released) and the step's statistics (module docstring)."""

    def _jittered(self, rng: np.random.Generator, step_size: float) -> float:
        r"""The step size of one trajectory: :math:`h(1 + j(2u - 1))`, :math:`u \sim U(0, 1)`, for the kernel's
        :attr:`jitter` :math:`j` (no draw without jitter), capped at :attr:`max_step_size`."""
        if not self.jitter:
            return float(step_size)
        return min(float(step_size) * (1.0 + self.jitter * (2.0 * rng.uniform() - 1.0)), self.max_step_size)

    def _finish(self, posterior: Posterior, state: State, proposal: State | None, energy_error: float,
                rng: np.random.Generator, step_size: float, n_steps: int, evaluations: int):
        r"""Accept ``proposal`` with probability :math:`\min(1, e^{-\Delta H})` and report the step.

        The uniform variate is drawn whatever :math:`\Delta H` is, so the random stream does not depend on
        round-off; :math:`\Delta H` is taken from rank 0 of the posterior's communicator.
        """
        space = posterior.space
        energy_error = float(space.comm.bcast(energy_error if proposal is not None else math.inf, root=0))
        u = rng.uniform()
        diverging = not math.isfinite(energy_error) or energy_error > DIVERGENCE
        acceptance = 0.0 if diverging else math.exp(min(0.0, -energy_error))
        accepted = bool(not diverging and u < acceptance)
        if accepted:
            state.release(space)
            state = proposal
        elif proposal is not None:
            proposal.release(space)
        return state, {"acceptance_rate": acceptance, "energy_error": energy_error, "step_size": float(step_size),
                       "diverging": diverging, "accepted": accepted, "n_steps": int(n_steps),
                       "gradient_evaluations": int(evaluations), "lp": -state.potential}
