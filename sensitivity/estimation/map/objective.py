r"""A reduced functional with its own regularization as an objective of :func:`~sensitivity.estimation.map.find_map`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.map.metrics import MatrixMetric, Metric
from sensitivity.estimation.posterior import FunctionalCalls
from sensitivity.estimation.vectors import FunctionVectors
from sensitivity.validation import positive

__all__ = ["FunctionalObjective"]


class FunctionalObjective(FunctionalCalls):
    r"""A :class:`~sensitivity.fem.ReducedFunctional` with its own regularization as a :func:`find_map` objective.

    :math:`U(q) = F(q)`: the functional's misfits plus its Tikhonov term, over the dofs of its control
    (:class:`FunctionVectors`), with a metric of the control space (the initial ``lmvm`` Hessian, scaled
    by the curvature, and the Newton–CG preconditioner).

    Parameters
    ----------
    functional : sensitivity.fem.ReducedFunctional
    metric : Metric, "mass" or "h1"
        ``"mass"`` (default): the control space's inner product ``functional.control_space.matrix`` (its
        :math:`L^2` mass matrix :math:`M` unless the functional was given another); ``"h1"``: the
        :math:`H^1` inner product :math:`M + \ell^2K` (:math:`K` the stiffness matrix), the geometry of an
        :math:`H^1` Tikhonov term; or any :class:`Metric`.
    length : float
        :math:`\ell` of ``"h1"`` (default 1).
    petsc_options : dict, optional
        The solver of the metric's systems :math:`Wx = d` (default MUMPS LU).

    Notes
    -----
    Calls at the functional's current control (compared bit for bit on every rank) do not set it
    again, so a value and a derivative at one point cost one factorization.
    """

    def __init__(self, functional, metric: Metric | str = "mass", *, length: float = 1.0,
                 petsc_options: Mapping[str, Any] | None = None):
        from sensitivity.fem import ReducedFunctional

        if not isinstance(functional, ReducedFunctional):
            raise InvalidArgumentError(f"functional must be a ReducedFunctional, got {type(functional).__name__}")
        if not isinstance(metric, Metric) and metric not in ("mass", "h1"):
            raise InvalidArgumentError(f"metric must be a Metric, 'mass' or 'h1', got {metric!r}")
        length = positive(length, "length")
        self.functional = functional
        self.space = FunctionVectors(functional.control_space)
        self._own_metric = not isinstance(metric, Metric)
        self._h1 = None
        if metric == "mass":
            metric = MatrixMetric(self.space, functional.control_space.matrix, petsc_options)
        elif metric == "h1":
            from sensitivity.fem import backend

            import ufl

            V = functional.control_space.space
            u, w = ufl.TrialFunction(V), ufl.TestFunction(V)
            form = ufl.inner(u, w) * ufl.dx + length**2 * ufl.inner(ufl.grad(u), ufl.grad(w)) * ufl.dx
            self._h1 = backend.assemble_matrix(backend.form(form))
            metric = MatrixMetric(self.space, self._h1, petsc_options, name=f"H1 inner product (length {length:g})")
        self.metric = metric

    def regularization_value(self, q) -> float:
        """The functional's regularization :math:`\\mathcal R(q)` (0 without one; collective)."""
        if self.functional.regularization is None:
            return 0.0
        return self.functional.regularization.value(self.functional.control_space.function(q))

    def destroy(self) -> None:
        if self._own_metric:
            self.metric.destroy()
        if self._h1 is not None:
            self._h1.destroy()
