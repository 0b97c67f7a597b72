r"""The control space: vectors of parameters, and the inner product that turns derivatives into gradients.

A reduced objective :math:`F(c)` of a control Function :math:`c = \sum_k c_k\phi_k` has two
first-order objects, kept apart by name as in pyadjoint (docs/theory.md §4):

- the **derivative** :math:`d_k = \partial F/\partial c_k`, the ℓ² dual vector that an adjoint
  sweep assembles, which pairs with a direction by the plain dot product,
  :math:`dF[v] = d^Tv`;
- the **gradient** :math:`g`, its Riesz representer in the control space's inner product
  :math:`\langle a, b\rangle_W = a^TWb`: :math:`\langle g, v\rangle_W = dF[v]` for every
  :math:`v`, i.e. :math:`Wg = d`.

By default :math:`W` is the :math:`L^2` mass matrix :math:`W_{kl} = \int\phi_k\phi_l\,dx` of the
control space, so the gradient is a field that converges under mesh refinement while the
derivative scales with the cell size; any symmetric positive definite matrix (an
:math:`H^1` form, a prior precision) may be given instead. Optimizers and samplers that
work in the control space's geometry use the gradient; dot products with directions
use the derivative.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dolfinx.fem as fem
import ufl
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import backend
from sensitivity.validation import finite_vector, function_in

__all__ = ["ControlSpace"]


class ControlSpace:
    r"""Vectors, Functions and the inner product :math:`W` of a control's function space.

    Parameters
    ----------
    space : dolfinx.fem.FunctionSpace
        The control's space (a potential, stream function or velocity field).
    inner_product : petsc4py.PETSc.Mat, optional
        Symmetric positive definite :math:`W` on the control dofs (default the :math:`L^2`
        mass matrix). Kept by reference, not copied.
    petsc_options : dict, optional
        Solver of :math:`Wg = d` (default MUMPS LU, so the Riesz map is exact to round-off).
    """

    def __init__(self, space: fem.FunctionSpace, inner_product: PETSc.Mat | None = None,
                 petsc_options: Mapping[str, Any] | None = None):
        self.space = space
        size = space.dofmap.index_map.size_global * space.dofmap.index_map_bs
        if inner_product is not None:
            if not isinstance(inner_product, PETSc.Mat) or inner_product.getSize() != (size, size):
                raise InvalidArgumentError(
                    f"inner_product must be a PETSc Mat of size ({size}, {size}) on the control dofs, got "
                    f"{getattr(inner_product, 'getSize', lambda: type(inner_product).__name__)()}")
        self._template = fem.Function(space)
        self._owned = inner_product is None
        self._matrix = inner_product
        self._options = petsc_options
        self._ksp: PETSc.KSP | None = None

    @property
    def matrix(self) -> PETSc.Mat:
        """:math:`W` (assembled on first use when it is the default mass matrix; collective then)."""
        if self._matrix is None:
            u, w = ufl.TrialFunction(self.space), ufl.TestFunction(self.space)
            self._matrix = backend.assemble_matrix(backend.form(ufl.inner(u, w) * ufl.dx))
        return self._matrix

    def create_vector(self) -> PETSc.Vec:
        """A new zero vector of control dofs, distributed and ghosted like a Function of the space (so forms
        can be assembled into it)."""
        vec = self._template.x.petsc_vec.duplicate()
        with vec.localForm() as local:
            local.set(0.0)
        return vec

    def function(self, vec: PETSc.Vec | None = None, name: str = "control") -> fem.Function:
        """A new Function of the space holding a copy of ``vec`` (zero if ``None``; ghosts updated)."""
        out = fem.Function(self.space, name=name)
        if vec is not None:
            vec.copy(out.x.petsc_vec)
            out.x.scatter_forward()
        return out

    def check(self, v: Any, name: str = "direction") -> fem.Function:
        """Raise on every rank unless ``v`` is a finite Function in this space (collective)."""
        return finite_vector(function_in(v, self.space, name, "the control space"), name)

    def riesz_map(self, derivative: fem.Function | PETSc.Vec, name: str = "gradient") -> fem.Function:
        r"""The gradient :math:`g = W^{-1}d` of a derivative :math:`d` (collective)."""
        d = derivative.x.petsc_vec if isinstance(derivative, fem.Function) else derivative
        if self._ksp is None:
            self._ksp = backend.create_ksp(self.matrix, self._options, "riesz_map")
        out = fem.Function(self.space, name=name)
        self._ksp.solve(d, out.x.petsc_vec)
        out.x.scatter_forward()
        return out

    def dual_map(self, gradient: fem.Function | PETSc.Vec, name: str = "derivative") -> fem.Function:
        r"""The derivative :math:`d = Wg` of a gradient (the inverse of :meth:`riesz_map`; collective)."""
        g = gradient.x.petsc_vec if isinstance(gradient, fem.Function) else gradient
        out = fem.Function(self.space, name=name)
        self.matrix.mult(g, out.x.petsc_vec)
        out.x.scatter_forward()
        return out

    def inner(self, a: fem.Function | PETSc.Vec, b: fem.Function | PETSc.Vec) -> float:
        r""":math:`\langle a, b\rangle_W = a^TWb` (collective)."""
        va = a.x.petsc_vec if isinstance(a, fem.Function) else a
        vb = b.x.petsc_vec if isinstance(b, fem.Function) else b
        wb = self.matrix.createVecLeft()
        self.matrix.mult(vb, wb)
        value = float(wb.dot(va).real)
        wb.destroy()
        return value

    def destroy(self) -> None:
        if self._ksp is not None:
            self._ksp.destroy()
            self._ksp = None
        if self._owned and self._matrix is not None:
            self._matrix.destroy()
            self._matrix = None
