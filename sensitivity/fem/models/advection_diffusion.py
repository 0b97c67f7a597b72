r"""The advection–diffusion generator (docs/theory.md §2, seed 4.3).

Strong form :math:`\partial_t\theta = \kappa\Delta\theta - u\cdot\nabla\theta`. With
Lagrange test functions :math:`\phi` the semi-discrete system is
:math:`M\theta' = -A(u)\theta`,

.. math::

    M_{ij} = \int \phi_j\phi_i\,dx,\qquad
    A(u)_{ij} = \kappa\int\nabla\phi_j\cdot\nabla\phi_i\,dx + \int (u\cdot\nabla\phi_j)\,\phi_i\,dx
              = \kappa K_{ij} + C(u)_{ij},

so the generator is :math:`Q(u) = -M^{-1}A(u)` and a velocity perturbation
:math:`v` enters as :math:`J = -M^{-1}C(v)`. Walls without a Dirichlet condition
are no-flux (natural); Dirichlet conditions (e.g. an inflow value) are given as
DOLFINx ``DirichletBC`` objects and hold at every time; outflow is natural
(zero diffusive flux).

Optional SUPG stabilization adds, with :math:`\tau(u) = ((2|u|/h)^2 + 9(4\kappa/h^2)^2)^{-1/2}`
(smooth in :math:`u`),

.. math::

    M^{s}_{ij} = \int\tau\,(u\cdot\nabla\phi_i)\,\phi_j,\qquad
    A^{s}_{ij} = \int\tau\,(u\cdot\nabla\phi_i)\,(u\cdot\nabla\phi_j - \kappa\Delta\phi_j),

so :math:`M` depends on :math:`u` too; its derivative is included exactly in
:meth:`AdvectionDiffusion.dM` and :meth:`AdvectionDiffusion.dA`, which UFL
derives from the same forms.
"""

from __future__ import annotations

from collections.abc import Sequence

import dolfinx.fem as fem
import ufl

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import backend
from sensitivity.fem.models.base import Generator
from sensitivity.fem.models.controls import VelocityControl
from sensitivity.validation import integer, positive

__all__ = ["AdvectionDiffusion"]


class AdvectionDiffusion(Generator):
    r"""Mass and operator matrices of :math:`M\theta' = -A(u)\theta` and their velocity derivatives.

    Parameters
    ----------
    V : dolfinx.fem.FunctionSpace
        Scalar Lagrange space (P1 or P2) for :math:`\theta`.
    control : VelocityControl
        The velocity parametrization (:class:`VelocityField` or :class:`StreamFunction`).
    kappa : float
        Diffusivity, > 0.
    bcs : sequence of dolfinx.fem.DirichletBC, optional
        Dirichlet conditions on :math:`\theta` (time-independent values).
    supg : bool
        Add SUPG stabilization (for large Péclet numbers).
    quadrature_degree : int, optional
        One quadrature rule for every form and every derivative form, so that
        the derivatives are exact derivatives of the assembled matrices (SUPG's τ
        is not polynomial, and UFL would otherwise pick different degrees for a
        form and its derivative). Default: exact for the Galerkin terms, two more
        with SUPG.

    Attributes
    ----------
    M, A : petsc4py.PETSc.Mat
        Assembled without boundary conditions (the time stepper imposes them);
        reassembled by :meth:`update` after the control changes.
    """

    def __init__(
        self,
        V: fem.FunctionSpace,
        control: VelocityControl,
        kappa: float,
        *,
        bcs: Sequence[fem.DirichletBC] = (),
        supg: bool = False,
        quadrature_degree: int | None = None,
    ):
        if backend.COMPLEX:
            raise InvalidArgumentError("advection-diffusion needs the real PETSc build (dolfinx-solver-real); "
                                       "this one is complex")
        if not isinstance(control, VelocityControl):
            raise InvalidArgumentError(f"control must be a VelocityField or StreamFunction, got {type(control).__name__}")
        if tuple(V.value_shape) != ():
            raise InvalidArgumentError(f"theta needs a scalar space, got value shape {tuple(V.value_shape)}")
        self.kappa = positive(kappa, "kappa")
        self.supg = bool(supg)
        # SUPG makes M depend on u, and A, M non-linear in u (through tau).
        self.mass_depends_on_control, self.affine_in_control = self.supg, not self.supg
        self.setup(V, control, bcs, _quadrature_degree(V, control, self.supg, quadrature_degree))

    # ------------------------------------------------------------------ forms

    def forms(self, theta, phi):
        """UFL mass and operator forms :math:`m(u;\\theta,\\phi)`, :math:`a(u;\\theta,\\phi)`, :math:`u = u(c)`."""
        kappa, u = self.kappa, self.control.velocity()
        dx = ufl.dx(metadata={"quadrature_degree": self.quadrature_degree})
        m = theta * phi * dx
        a = kappa * ufl.inner(ufl.grad(theta), ufl.grad(phi)) * dx + ufl.dot(u, ufl.grad(theta)) * phi * dx
        if self.supg:
            h = ufl.CellDiameter(self.V.mesh)
            tau = ((2.0 / h) ** 2 * ufl.dot(u, u) + 9.0 * (4.0 * kappa / h**2) ** 2) ** -0.5
            streamline = tau * ufl.dot(u, ufl.grad(phi))
            m = m + streamline * theta * dx
            a = a + streamline * (ufl.dot(u, ufl.grad(theta)) - kappa * ufl.div(ufl.grad(theta))) * dx
        return m, a


def _quadrature_degree(V: fem.FunctionSpace, control: VelocityControl, supg: bool, degree) -> int:
    """The quadrature degree of every form (see :class:`AdvectionDiffusion`)."""
    if degree is not None:
        return integer(degree, "quadrature_degree", minimum=0)
    p = V.ufl_element().embedded_superdegree
    k = control.space.ufl_element().embedded_superdegree
    k_u = k - 1 if control.velocity_is_derivative else k  # polynomial degree of u
    q = max(2 * p, 2 * p - 1 + k_u)  # mass and advection exactly
    if supg:
        q = max(q, 2 * p - 2 + 2 * k_u + 2)  # streamline terms, with two degrees for tau
    return q
