r"""Regularization of a control: the term :math:`\mathcal R(c)` of a reduced objective (docs/theory.md §2).

:class:`Tikhonov` is :math:`\mathcal R(c) = \tfrac\alpha2\|c - c_0\|_{L^2}^2 + \tfrac\beta2\|\nabla(c - c_0)\|_{L^2}^2`
(:math:`\beta > 0`: the :math:`H^1` seminorm), a quadratic form :math:`\tfrac12(c - c_0)^TR(c - c_0)`
with :math:`R = \alpha M_c + \beta K_c`: its value, gradient :math:`R(c - c_0)` (a dof vector) and
constant Hessian :math:`R`.
"""

from __future__ import annotations

import dolfinx.fem as fem
import ufl
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import backend
from sensitivity.validation import function_in, non_negative

__all__ = ["Tikhonov"]


class Tikhonov:
    r"""Regularization :math:`\tfrac\alpha2\|c - c_0\|_{L^2}^2 + \tfrac\beta2\|\nabla(c - c_0)\|_{L^2}^2` of a control.

    Parameters
    ----------
    space : dolfinx.fem.FunctionSpace
        The control space (scalar stream function or vector velocity).
    alpha, beta : float
        Non-negative weights, not both zero.
    reference : dolfinx.fem.Function, optional
        :math:`c_0` (default zero).
    """

    def __init__(self, space: fem.FunctionSpace, alpha: float = 0.0, beta: float = 0.0,
                 reference: fem.Function | None = None):
        alpha, beta = non_negative(alpha, "alpha"), non_negative(beta, "beta")
        if alpha == 0 and beta == 0:
            raise InvalidArgumentError("alpha and beta are both zero: no regularization")
        if reference is not None:
            function_in(reference, space, "reference")
        u, w = ufl.TrialFunction(space), ufl.TestFunction(space)
        terms = []  # (a zero weight would make UFL drop the term and its integration domain)
        if alpha > 0:
            terms.append(float(alpha) * ufl.inner(u, w) * ufl.dx)
        if beta > 0:
            terms.append(float(beta) * ufl.inner(ufl.grad(u), ufl.grad(w)) * ufl.dx)
        form = sum(terms[1:], terms[0])
        self.space = space
        self.alpha, self.beta = float(alpha), float(beta)
        self.matrix = backend.assemble_matrix(backend.form(form))
        self.reference = reference
        self._d = self.matrix.createVecRight()
        self._Md = self.matrix.createVecLeft()

    def _difference(self, c: fem.Function) -> None:
        c.x.petsc_vec.copy(self._d)
        if self.reference is not None:
            self._d.axpy(-1.0, self.reference.x.petsc_vec)
        self.matrix.mult(self._d, self._Md)

    def value(self, c: fem.Function) -> float:
        """:math:`\\mathcal R(c)` (collective)."""
        self._difference(c)
        return 0.5 * self._Md.dot(self._d).real

    def add_gradient(self, c: fem.Function, out: PETSc.Vec) -> None:
        """``out += (αM + βK)(c − c_0)`` (collective)."""
        self._difference(c)
        out.axpy(1.0, self._Md)

    def add_hessian_action(self, v: PETSc.Vec, out: PETSc.Vec) -> None:
        """``out += (αM + βK) v`` (collective)."""
        self.matrix.multAdd(v, out, out)
