r"""The interface of every surrogate derivative: the exact value, a surrogate derivative, and its gradient.

A surrogate (docs/theory.md §1–3) replaces the exact derivative of the discrete state
:math:`\rho_n = \nabla_v\theta_n` by a cheaper approximation and so gives a surrogate derivative of a
:class:`~sensitivity.fem.objective.reduced.ReducedFunctional`. Every one offers the objective's
own interface, so that an optimizer or a sampler takes either:
:meth:`Surrogate.value_and_derivative` (the exact value :math:`F(c)` and the surrogate ℓ² derivative),
:meth:`Surrogate.derivative`, :meth:`Surrogate.gradient` (its Riesz representer in the objective's
control space) and :meth:`Surrogate.directional_derivative`, the same surrogate computed forward
along one direction, the independent check of the derivative.
"""

from __future__ import annotations

import dolfinx.fem as fem

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem.objective.reduced import ReducedFunctional

__all__ = ["Surrogate"]


class Surrogate:
    """Base of the surrogate derivatives of a :class:`ReducedFunctional` (used through its public methods).

    Attributes
    ----------
    functional : ReducedFunctional
    stats : dict
        Counters of the last evaluation (each subclass documents its own).
    """

    def __init__(self, functional: ReducedFunctional):
        if not isinstance(functional, ReducedFunctional):
            raise InvalidArgumentError(f"functional must be a ReducedFunctional, got {type(functional).__name__}")
        self.functional = functional
        self.stats: dict = {}

    def value_and_derivative(self) -> tuple[float, fem.Function]:
        """The exact :math:`F(c)` and the surrogate derivative, a dual vector as a Function (collective)."""
        raise NotImplementedError(f"{type(self).__name__} does not define value_and_derivative")

    def directional_derivative(self, v: fem.Function) -> float:
        """The surrogate :math:`dF[v]` computed forward along ``v`` (collective)."""
        raise NotImplementedError(f"{type(self).__name__} does not define directional_derivative")

    def derivative(self) -> fem.Function:
        """The surrogate derivative only (see :meth:`value_and_derivative`; collective)."""
        return self.value_and_derivative()[1]

    def gradient(self) -> fem.Function:
        """The Riesz representer of the surrogate derivative in the control space's inner product (collective)."""
        return self.functional.control_space.riesz_map(self.derivative())

    def destroy(self) -> None:
        """Release PETSc objects held between evaluations (none by default)."""
