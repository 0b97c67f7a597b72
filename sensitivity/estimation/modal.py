r"""A field control through a few modes: :math:`c(q) = c_0 + \sum_k q_k\varphi_k`, :math:`q \in \mathbb R^m`.

A PDE objective :math:`F(c)` of a field :math:`c` (a stream function, a potential) is estimated through the
coefficients :math:`q` of :math:`m` given modes :math:`\varphi_k` of its control space (sine modes of a stream
function, cosine modes of a potential; docs/theory.md §4.6). With :math:`B = [\varphi_1 \cdots \varphi_m]`,

.. math::

    \Phi(q) = F(c_0 + Bq), \qquad \partial_q\Phi = B^T\partial_cF, \qquad \nabla^2_q\Phi\,v = B^T\nabla^2_cF\,(Bv),

and any force on the field gives the force :math:`B^T f(c_0 + Bq)` on the coefficients (:class:`ModalForce`;
still a function of :math:`q` alone). The coefficients are an :class:`~sensitivity.estimation.ArraySpace` (the
same array on every rank), the field a distributed :class:`~sensitivity.estimation.FunctionVectors` vector; the
pairings :math:`B^Td` are one reduction for all modes, its result the same on every rank bit for bit.

:meth:`ModalBasis.field_moments` turns draws of :math:`q` into the pointwise posterior mean
:math:`c_0 + B\bar q` and standard deviation :math:`\sqrt{\mathrm{diag}(B\,\mathrm{Cov}(q)\,B^T)}` of the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.posterior import Force, Misfit
from sensitivity.estimation.vectors import ArraySpace, FunctionVectors

__all__ = ["ModalBasis", "ModalForce", "ModalMisfit"]


class ModalBasis:
    r"""The affine map :math:`q \mapsto c_0 + Bq` from :math:`m` coefficients to a field (module docstring).

    Parameters
    ----------
    space : FunctionVectors
        The field's vectors (the control space of the objective).
    modes : sequence of PETSc.Vec
        The :math:`m` modes :math:`\varphi_k` (dof vectors of ``space``; the basis keeps copies).
    offset : PETSc.Vec, optional
        :math:`c_0` (default zero).
    """

    def __init__(self, space: FunctionVectors, modes: Sequence[Any], offset: Any | None = None):
        if not isinstance(space, FunctionVectors):
            raise InvalidArgumentError(f"space must be a FunctionVectors, got {type(space).__name__}")
        if len(modes) == 0:
            raise InvalidArgumentError("a modal basis needs at least one mode, got none")
        self.field_space = space
        self.modes = [space.copy(space.check(m, f"modes[{k}]")) for k, m in enumerate(modes)]
        self.offset = space.zeros() if offset is None else space.copy(space.check(offset, "offset"))
        self.size = len(self.modes)
        self.space = ArraySpace(self.size, space.comm)

    def direction(self, v: np.ndarray) -> Any:
        r""":math:`Bv` (a new field vector; not collective)."""
        v = self.space.check(v, "coefficients")
        return self.field_space.combine(self.modes, v[:, None])[0]

    def field(self, q: np.ndarray) -> Any:
        r""":math:`c_0 + Bq` (a new field vector; not collective)."""
        c = self.direction(q)
        return self.field_space.axpy(1.0, self.offset, c)

    def pullback(self, d: Any) -> np.ndarray:
        r""":math:`B^Td` of an ℓ² dual vector of the field: the same array on every rank (collective)."""
        return self.field_space.gram(self.modes, [d])[:, 0]

    def coefficients(self, c: Any) -> np.ndarray:
        r"""The least-squares coefficients of ``c - c_0`` in the ℓ² pairing of the dofs,
        :math:`(B^TB)^{-1}B^T(c - c_0)` (the coefficients of a field in the span; collective)."""
        r = self.field_space.copy(c)
        self.field_space.axpy(-1.0, self.offset, r)
        out = np.linalg.solve(self.field_space.gram(self.modes, self.modes), self.pullback(r))
        self.field_space.destroy(r)
        return out

    def field_moments(self, draws: np.ndarray) -> tuple[Any, Any]:
        r"""The pointwise mean :math:`c_0 + B\bar q` and standard deviation of the field over ``draws`` of shape
        (N, m), N ≥ 2: two new field vectors (not collective; the same draws on every rank)."""
        draws = np.asarray(draws, dtype=float)
        if draws.ndim != 2 or draws.shape[1] != self.size or draws.shape[0] < 2:
            raise InvalidArgumentError(f"draws must have shape (N >= 2, {self.size}), got {draws.shape}")
        mean_q = draws.mean(axis=0)
        mean, std = self.field(mean_q), self.field_space.zeros()
        squares = np.zeros_like(np.asarray(std.array_r))
        for start in range(0, draws.shape[0], self.BATCH):  # at most BATCH field vectors at a time
            centred = self.field_space.combine(self.modes, (draws[start:start + self.BATCH] - mean_q).T)
            for x in centred:
                squares += np.asarray(x.array_r) ** 2
                self.field_space.destroy(x)
        std.array[:] = np.sqrt(squares / (draws.shape[0] - 1))
        return mean, std

    #: Draws turned into field vectors at a time by :meth:`field_moments`.
    BATCH = 256

    def destroy(self) -> None:
        for vec in (*self.modes, self.offset):
            self.field_space.destroy(vec)


class ModalMisfit(Misfit):
    r""":math:`\Phi(q) = \Phi_c(c_0 + Bq)` of a misfit :math:`\Phi_c` of the field (module docstring).

    Parameters
    ----------
    misfit : Misfit
        On the field's :class:`FunctionVectors` (e.g. a :class:`~sensitivity.estimation.ReducedMisfit`).
    basis : ModalBasis
        On the same space.
    """

    def __init__(self, misfit: Misfit, basis: ModalBasis):
        if not isinstance(misfit, Misfit):
            raise InvalidArgumentError(f"misfit must be a Misfit, got {type(misfit).__name__}")
        if not isinstance(basis, ModalBasis):
            raise InvalidArgumentError(f"basis must be a ModalBasis, got {type(basis).__name__}")
        if misfit.space.size != basis.field_space.size:
            raise InvalidArgumentError(f"the misfit's space has {misfit.space.size} dofs, the basis's field "
                                       f"{basis.field_space.size}")
        self.field_misfit, self.basis, self.space = misfit, basis, basis.space

    def _on_field(self, method, q, *args):
        c = self.basis.field(self.space.check(q, "q"))
        try:
            return method(c, *args)
        finally:
            self.basis.field_space.destroy(c)

    def value(self, q) -> float:
        return self._on_field(self.field_misfit.value, q)

    def value_and_derivative(self, q):
        value, d = self._on_field(self.field_misfit.value_and_derivative, q)
        out = self.basis.pullback(d)
        self.basis.field_space.destroy(d)
        return value, out

    def _second_order(self, method, q, v):
        w = self.basis.direction(v)
        h = self._on_field(method, q, w)
        out = self.basis.pullback(h)
        for vec in (w, h):
            self.basis.field_space.destroy(vec)
        return out

    def hessian_action(self, q, v):
        return self._second_order(self.field_misfit.hessian_action, q, v)

    def gauss_newton_action(self, q, v):
        return self._second_order(self.field_misfit.gauss_newton_action, q, v)


class ModalForce(Force):
    r"""The force :math:`B^Tf(c_0 + Bq)` on the coefficients of a force :math:`f` on the field (module docstring).

    Parameters
    ----------
    force : Force
        On the field (e.g. a :class:`~sensitivity.estimation.SurrogateForce`).
    basis : ModalBasis
    """

    def __init__(self, force: Force, basis: ModalBasis):
        if not isinstance(force, Force):
            raise InvalidArgumentError(f"force must be a Force, got {type(force).__name__}")
        if not isinstance(basis, ModalBasis):
            raise InvalidArgumentError(f"basis must be a ModalBasis, got {type(basis).__name__}")
        self.field_force, self.basis, self.name = force, basis, force.name

    def derivative(self, q):
        c = self.basis.field(self.basis.space.check(q, "q"))
        d = self.field_force.derivative(c)
        out = self.basis.pullback(d)
        for vec in (c, d):
            self.basis.field_space.destroy(vec)
        return out
