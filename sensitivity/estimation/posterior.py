r"""The posterior :math:`\pi(q) \propto e^{-\Phi(q)}\,N(\bar m, \mathcal C)(q)` and the forces that drive trajectories.

The negative log posterior (docs/theory.md §4) is

.. math::

    U(q) = \Phi(q) + \tfrac12\|q - \bar m\|^2_{\mathcal C^{-1}},

with the data misfit :math:`\Phi` (:class:`Misfit`: a least-squares misfit of a PDE objective, a
multinomial likelihood, ...) and a :class:`~sensitivity.estimation.prior.Prior`. :class:`Posterior`
gives its value, its ℓ² derivative, its gradient in the prior's metric
(:math:`\mathcal C\,\partial U/\partial q`) and Hessian actions.

A **force** is the derivative of :math:`\Phi` *used inside a trajectory* (HMC, MALA): the exact one
(:class:`ExactForce`, the adjoint) or any surrogate (:class:`SurrogateForce`, around every
surrogate of :mod:`sensitivity.fem.surrogates`; the rate-matrix forces of the dense toolkit).
Any force that is a function of :math:`q` alone keeps the integrator volume-preserving and
reversible, and the samplers accept with the exact :math:`U`, so a surrogate changes the
acceptance rate, never the target. A force that depends on anything else — a warm-started
iterative solver, a surrogate refitted mid-chain — would break that: the forces here are
deterministic functions of :math:`q`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.prior import Prior
from sensitivity.estimation.vectors import FunctionVectors, ParameterSpace

__all__ = ["ExactForce", "Force", "FunctionalCalls", "Misfit", "Posterior", "ReducedMisfit", "SurrogateForce"]


class Misfit(ABC):
    r"""A data misfit :math:`\Phi(q)` (a negative log-likelihood up to a constant) on a :class:`ParameterSpace`.

    Subclasses implement :meth:`value_and_derivative`; :meth:`value` and the Hessian actions
    have defaults (the exact Hessian is optional: :meth:`hessian_action` raises unless defined).
    Every method is collective for distributed parameters.
    """

    space: ParameterSpace

    def value(self, q: Any) -> float:
        r""":math:`\Phi(q)`."""
        value, d = self.value_and_derivative(q)
        self.space.destroy(d)
        return value

    @abstractmethod
    def value_and_derivative(self, q: Any) -> tuple[float, Any]:
        r""":math:`\Phi(q)` and the ℓ² derivative :math:`\partial\Phi/\partial q` (a new vector the caller owns)."""

    def hessian_action(self, q: Any, v: Any) -> Any:
        r""":math:`\nabla^2\Phi(q)\,v` (a new vector)."""
        raise NotImplementedError(f"{type(self).__name__} has no exact Hessian action")

    def gauss_newton_action(self, q: Any, v: Any) -> Any:
        r"""The Gauss–Newton part of :meth:`hessian_action` (default: the exact Hessian)."""
        return self.hessian_action(q, v)


class FunctionalCalls:
    r"""The calls of a :class:`~sensitivity.fem.ReducedFunctional` at a point of its control.

    Shared by :class:`ReducedMisfit` and :class:`~sensitivity.estimation.map.FunctionalObjective`, which set
    ``functional`` and ``space`` (the :class:`FunctionVectors` of its control space). A call at the
    functional's current control (compared bit for bit on every rank) does not set it again, so a value
    and a derivative at one point cost one factorization. Every method is collective.
    """

    functional: Any
    space: FunctionVectors

    def set_point(self, q) -> None:
        """Make ``q`` the functional's control unless it already is, bit for bit on every rank (collective)."""
        self.space.check(q, "q")
        same = np.array_equal(np.asarray(q.array_r), self.functional.control.x.petsc_vec.array_r)
        if not self.space.comm.allreduce(same, op=MPI.LAND):
            self.functional.set_control(q)

    def value(self, q) -> float:
        self.set_point(q)
        return self.functional.value()

    def value_and_derivative(self, q):
        self.set_point(q)
        value, d = self.functional.value_and_derivative()
        return value, self.space.copy(d.x.petsc_vec)

    def hessian_action(self, q, v):
        self.set_point(q)
        direction = self.functional.control_space.function(v, "direction")
        h = self.functional.hessian_action(direction)
        return self.space.copy(h.x.petsc_vec)


class ReducedMisfit(FunctionalCalls, Misfit):
    r"""The misfit :math:`\Phi(q) = F(q)` of a PDE objective without regularization (the prior takes its place).

    Parameters
    ----------
    functional : sensitivity.fem.ReducedFunctional
        Its ``regularization`` must be ``None``. The parameter vectors are the dofs of its control
        (:class:`FunctionVectors` of its control space).

    Notes
    -----
    Setting the control reassembles and refactors the time stepper; calls at the functional's current
    control (compared bit for bit on every rank) skip it, so a value and a derivative at one point
    cost one factorization.
    """

    def __init__(self, functional):
        from sensitivity.fem import ReducedFunctional

        if not isinstance(functional, ReducedFunctional):
            raise InvalidArgumentError(f"functional must be a ReducedFunctional, got {type(functional).__name__}")
        if functional.regularization is not None:
            raise InvalidArgumentError("the functional of a posterior must have no regularization (the prior is the "
                                       "regularization); build it with regularization=None")
        self.functional = functional
        self.space = FunctionVectors(functional.control_space)


class Force(ABC):
    r"""The derivative of the misfit used inside trajectories: a function of :math:`q` alone."""

    #: The name reported with chains and benchmarks ("exact", "first order", ...).
    name: str = "force"

    @abstractmethod
    def derivative(self, q: Any) -> Any:
        r"""The force :math:`\approx\partial\Phi/\partial q` at ``q`` (a new vector the caller owns)."""


class ExactForce(Force):
    """The exact derivative of a :class:`Misfit` (for a PDE objective: the discrete adjoint)."""

    name = "exact"

    def __init__(self, misfit: Misfit):
        self.misfit = misfit

    def derivative(self, q):
        return self.misfit.value_and_derivative(q)[1]


class SurrogateForce(Force):
    r"""A surrogate derivative of a :class:`ReducedMisfit`, from any surrogate of :mod:`sensitivity.fem.surrogates`.

    Parameters
    ----------
    misfit : ReducedMisfit
    surrogate : callable
        ``surrogate(functional)`` returns a :class:`~sensitivity.fem.surrogates.Surrogate`, e.g.
        ``lambda F: SurrogateGradient(F, order=1)`` or ``lambda F: SecularSurrogate(F, nev=4)``; it is
        built once and evaluated at each point.
    name : str
        Reported with the chain.
    """

    def __init__(self, misfit: ReducedMisfit, surrogate: Callable[[Any], Any], name: str = "surrogate"):
        if not isinstance(misfit, ReducedMisfit):
            raise InvalidArgumentError(f"misfit must be a ReducedMisfit, got {type(misfit).__name__}")
        self.misfit = misfit
        self.surrogate = surrogate(misfit.functional)
        self.name = str(name)

    def derivative(self, q):
        self.misfit.set_point(q)
        d = self.surrogate.derivative()  # keep the Function alive while its Vec is copied
        return self.misfit.space.copy(d.x.petsc_vec)


class Posterior:
    r"""The negative log posterior :math:`U(q) = \Phi(q) + \tfrac12\|q - \bar m\|^2_{\mathcal C^{-1}}` (module docstring).

    Parameters
    ----------
    misfit : Misfit
    prior : Prior
        On the same :class:`ParameterSpace` kind and size as the misfit.
    force : Force, optional
        The derivative of the misfit used inside trajectories (default :class:`ExactForce`).
    """

    def __init__(self, misfit: Misfit, prior: Prior, force: Force | None = None):
        if not isinstance(misfit, Misfit):
            raise InvalidArgumentError(f"misfit must be a Misfit, got {type(misfit).__name__}")
        if not isinstance(prior, Prior):
            raise InvalidArgumentError(f"prior must be a Prior, got {type(prior).__name__}")
        if type(misfit.space) is not type(prior.space) or misfit.space.size != prior.space.size:
            raise InvalidArgumentError(
                f"the prior ({type(prior.space).__name__} of size {prior.space.size}) is not on the misfit's parameter "
                f"space ({type(misfit.space).__name__} of size {misfit.space.size})")
        if isinstance(misfit.space, FunctionVectors) and \
                misfit.space.control_space.space != prior.space.control_space.space:
            raise InvalidArgumentError("the prior is on another function space than the misfit's control")
        if force is not None and not isinstance(force, Force):
            raise InvalidArgumentError(f"force must be a Force, got {type(force).__name__}")
        self.misfit, self.prior = misfit, prior
        self.space = misfit.space
        self.force = ExactForce(misfit) if force is None else force

    def value(self, q) -> float:
        """:math:`U(q)`."""
        return self.misfit.value(q) + self.prior.cost(q)

    def value_and_derivative(self, q) -> tuple[float, Any]:
        r""":math:`U(q)` and :math:`\partial U/\partial q` (ℓ²; a new vector)."""
        value, d = self.misfit.value_and_derivative(q)
        p = self.prior.derivative(q)
        self.space.axpy(1.0, p, d)
        self.space.destroy(p)
        return value + self.prior.cost(q), d

    def gradient(self, q) -> Any:
        r"""The gradient in the prior's metric, :math:`\mathcal C\,\partial U/\partial q` (a new vector)."""
        _, d = self.value_and_derivative(q)
        g = self.prior.covariance_action(d)
        self.space.destroy(d)
        return g

    def hessian_action(self, q, v, *, gauss_newton: bool = False) -> Any:
        r""":math:`\nabla^2U(q)\,v` (or with the Gauss–Newton misfit Hessian): a new vector."""
        h = self.misfit.gauss_newton_action(q, v) if gauss_newton else self.misfit.hessian_action(q, v)
        p = self.prior.hessian_action(v)
        self.space.axpy(1.0, p, h)
        self.space.destroy(p)
        return h
