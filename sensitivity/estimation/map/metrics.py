r"""The geometry of :func:`~sensitivity.estimation.map.find_map`: a metric :math:`W` on the parameter vectors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.prior import Prior
from sensitivity.estimation.vectors import FunctionVectors, ParameterSpace

from petsc4py import PETSc

__all__ = ["MatrixMetric", "Metric", "PriorMetric", "default_metric"]


class Metric(ABC):
    r"""A symmetric positive definite inner product :math:`\langle a, b\rangle_W = a^TWb` on parameter vectors.

    :meth:`apply` maps a direction to a dual vector (:math:`Wv`), :meth:`solve` a derivative to the
    gradient in this metric (:math:`W^{-1}d`); both are collective for distributed vectors, and both
    write into ``out`` when it is given (else into a new vector), which they return.
    """

    space: ParameterSpace
    #: A short description ("prior precision", "control mass matrix", ...).
    name: str = "metric"

    @abstractmethod
    def apply(self, v: Any, out: Any | None = None) -> Any:
        r""":math:`Wv`, the dual vector of a direction."""

    def destroy(self) -> None:
        """Release what the metric owns."""

    @abstractmethod
    def solve(self, d: Any, out: Any | None = None) -> Any:
        r""":math:`W^{-1}d`, the gradient in this metric of a derivative."""


class PriorMetric(Metric):
    r"""The prior's metric :math:`W = \mathcal C^{-1}` (so :math:`W^{-1}d = \mathcal Cd`)."""

    name = "prior precision"

    def __init__(self, prior: Prior):
        if not isinstance(prior, Prior):
            raise InvalidArgumentError(f"prior must be a Prior, got {type(prior).__name__}")
        self.prior = prior
        self.space = prior.space

    def apply(self, v, out=None):
        return self.prior.precision_action(v, out)

    def solve(self, d, out=None):
        return self.prior.covariance_action(d, out)


class MatrixMetric(Metric):
    r"""The metric of a symmetric positive definite PETSc matrix :math:`W` on :class:`FunctionVectors`.

    Parameters
    ----------
    space : FunctionVectors
    matrix : petsc4py.PETSc.Mat
        :math:`W` (kept by reference), e.g. the control space's mass matrix
        (``ControlSpace.matrix``).
    petsc_options : dict, optional
        The solver of :math:`Wx = d` (default MUMPS LU).
    name : str
    """

    def __init__(self, space: FunctionVectors, matrix: PETSc.Mat, petsc_options: Mapping[str, Any] | None = None,
                 name: str = "control mass matrix"):
        if not isinstance(space, FunctionVectors):
            raise InvalidArgumentError(f"space must be a FunctionVectors, got {type(space).__name__}")
        if not isinstance(matrix, PETSc.Mat) or matrix.getSize() != (space.size, space.size):
            raise InvalidArgumentError(f"matrix must be a PETSc Mat of size ({space.size}, {space.size}), got "
                                       f"{getattr(matrix, 'getSize', lambda: type(matrix).__name__)()}")
        from sensitivity.fem import backend

        self.space, self.matrix, self.name = space, matrix, str(name)
        self._ksp = backend.create_ksp(matrix, petsc_options, "map_metric")

    def apply(self, v, out=None):
        out = self.space.zeros() if out is None else out
        self.matrix.mult(v, out)
        return out

    def solve(self, d, out=None):
        out = self.space.zeros() if out is None else out
        self._ksp.solve(d, out)
        return out

    def destroy(self) -> None:
        self._ksp.destroy()


def default_metric(objective) -> Metric | None:
    """The metric of ``metric="auto"``: ``objective.metric``, else the prior metric of ``objective.prior``, or none."""
    metric = getattr(objective, "metric", None)
    if metric is not None:
        return metric
    prior = getattr(objective, "prior", None)
    return PriorMetric(prior) if isinstance(prior, Prior) else None
