r"""Controls: the Functions whose degrees of freedom are the parameters of a model.

A control is a :class:`dolfinx.fem.Function` ``c`` whose degrees of freedom are the
parameters. Generators differentiate their forms with respect to it. The potential of
the Schrödinger model is a :class:`PotentialField` (docs/theory.md §3). A velocity control
also defines a map :math:`c \mapsto u(c)`, linear in ``c``, to the velocity as a UFL
expression (docs/theory.md §2):

- :class:`VelocityField`: :math:`u = c` in a vector Lagrange space;
- :class:`StreamFunction`: :math:`u = \mathrm{curl}\,\psi = (\partial_y\psi, -\partial_x\psi)` in 2-D,
  divergence-free by construction and tangential on any boundary where
  :math:`\psi` is constant — the natural control for estimation.

Because :math:`u` is linear in :math:`c`, a direction :math:`v` (a Function in the
same space) gives the velocity perturbation :math:`u(v)`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import dolfinx.fem as fem
import ufl

from sensitivity.errors import InvalidArgumentError
from sensitivity.validation import finite_vector, function_in

__all__ = ["Control", "PotentialField", "StreamFunction", "VelocityControl", "VelocityField"]


class Control:
    """A control: the Function whose degrees of freedom are the parameters.

    Generators (:class:`~sensitivity.fem.models.base.Generator`) differentiate their
    forms with respect to :attr:`function`; directions are Functions in :attr:`space`.
    """

    def __init__(self, function: fem.Function):
        if not isinstance(function, fem.Function):
            raise InvalidArgumentError(f"a control must be a dolfinx.fem.Function, got {type(function).__name__}")
        self.function = function

    @property
    def space(self) -> fem.FunctionSpace:
        return self.function.function_space

    @property
    def mesh(self):
        return self.space.mesh

    def check_direction(self, v: fem.Function, name: str = "direction") -> fem.Function:
        """Raise on every rank unless ``v`` is a finite Function in the control space (collective)."""
        return finite_vector(function_in(v, self.space, name, "the control space"), name)


class VelocityControl(Control, ABC):
    """Base class of the velocity controls: a control Function and the (linear) velocity it defines."""

    #: True if u is a first derivative of the control (one polynomial degree lower).
    velocity_is_derivative: bool = False

    @abstractmethod
    def velocity(self, c: fem.Function | None = None):
        """The UFL velocity :math:`u(c)` (default: of the control itself)."""


class VelocityField(VelocityControl):
    """The velocity itself as a vector Lagrange Function (``u = c``).

    Parameters
    ----------
    function : dolfinx.fem.Function
        In a vector space with ``gdim`` components, e.g.
        ``functionspace(mesh, ("Lagrange", 1, (gdim,)))``.
    """

    def __init__(self, function: fem.Function):
        super().__init__(function)
        gdim = self.mesh.geometry.dim
        shape = self.space.value_shape
        if tuple(shape) != (gdim,):
            raise InvalidArgumentError(
                f"velocity must be a vector field with {gdim} components, got value shape {tuple(shape)}"
            )

    def velocity(self, c: fem.Function | None = None):
        return self.function if c is None else c


class StreamFunction(VelocityControl):
    r"""Velocity from a stream function, :math:`u = (\partial_y\psi, -\partial_x\psi)` (2-D).

    Parameters
    ----------
    function : dolfinx.fem.Function
        Scalar Lagrange Function :math:`\psi` on a 2-D mesh; P2 gives a
        piecewise-linear, exactly divergence-free velocity.
    """

    velocity_is_derivative = True

    def __init__(self, function: fem.Function):
        super().__init__(function)
        if self.mesh.geometry.dim != 2:
            raise InvalidArgumentError(f"a stream function needs a 2-D mesh, got gdim = {self.mesh.geometry.dim}")
        if tuple(self.space.value_shape) != ():
            raise InvalidArgumentError(f"a stream function is scalar, got value shape {tuple(self.space.value_shape)}")

    def velocity(self, c: fem.Function | None = None):
        psi = self.function if c is None else c
        return ufl.as_vector((psi.dx(1), -psi.dx(0)))


class PotentialField(Control):
    """The potential :math:`V` as a scalar Function (e.g. P1 or DG0); its dofs are the parameters."""

    def __init__(self, function: fem.Function):
        super().__init__(function)
        if tuple(self.space.value_shape) != ():
            raise InvalidArgumentError(f"a potential is scalar, got value shape {tuple(self.space.value_shape)}")
