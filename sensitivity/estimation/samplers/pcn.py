r"""The preconditioned Crank–Nicolson (pCN) sampler of Cotter, Roberts, Stuart & White (2013).

For a posterior :math:`\pi(q) \propto e^{-\Phi(q)}\,N(\bar m, \mathcal C)(q)` the proposal

.. math::

    q' = \bar m + \sqrt{1 - \beta^2}\,(q - \bar m) + \beta\,\xi,\qquad \xi \sim N(0, \mathcal C),\qquad 0 < \beta \le 1,

is reversible with respect to the prior, so the Metropolis–Hastings ratio involves the misfit only:
accept with probability :math:`\min(1, \exp(\Phi(q) - \Phi(q')))`; being defined in function space, its
acceptance rate does not degrade under mesh refinement (Cotter et al. 2013). :math:`\xi = L w` is drawn by the
prior's square root from white noise ``w`` of the chain's generator (rank-independent). The reported
``energy_error`` is :math:`\Phi(q') - \Phi(q)`; no force is evaluated. The step size is :math:`\beta` (at most
1); the adaptation targets an acceptance rate of 0.25, near the optimum 0.234 of random-walk Metropolis in high
dimension (Roberts, Gelman & Gilks 1997), a common choice for pCN.
"""

from __future__ import annotations

import math

from sensitivity.estimation.samplers.base import Kernel, evaluate

__all__ = ["PCN"]


class PCN(Kernel):
    """The pCN kernel (module docstring); the step size is :math:`\\beta \\in (0, 1]`."""

    name = "pCN"
    uses_force = False
    target_accept = 0.25
    max_step_size = 1.0

    def step(self, posterior, state, rng, step_size):
        space, prior = posterior.space, posterior.prior
        beta = min(float(step_size), 1.0)
        proposal = prior.sqrt_covariance_action(rng.standard_normal(prior.noise_size))  # xi ~ N(0, C)
        space.scale(proposal, beta)
        space.axpy(math.sqrt(1.0 - beta * beta), state.position, proposal)
        space.axpy(1.0 - math.sqrt(1.0 - beta * beta), prior.mean, proposal)
        moved = evaluate(posterior, proposal, with_force=False)
        return self._finish(posterior, state, moved, moved.misfit - state.misfit, rng, beta, 1, 0)
