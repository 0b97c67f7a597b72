"""Exact derivatives of the discrete solution: the tangent (forward, per direction) and the discrete
adjoint (backward, every control dof at once; Hessian actions) (docs/theory.md §2)."""

from sensitivity.fem.derivatives.adjoint import Adjoint
from sensitivity.fem.derivatives.outer_products import OuterProductSums
from sensitivity.fem.derivatives.tangent import Tangent, tangent_derivative

__all__ = ["Adjoint", "OuterProductSums", "Tangent", "tangent_derivative"]
