r"""Mass-matrix solves for the surrogates: :math:`M^{-1}`, the generator :math:`\hat Q = P(-M^{-1}A)` and the
perturbation :math:`J(v)` (docs/theory.md §2).

The surrogates apply :math:`Q = -M^{-1}A` and :math:`J = -PM^{-1}(\partial A[v] + \partial M[v]Q)` without
factoring :math:`M`: CG + Jacobi for a symmetric mass matrix (Galerkin), GMRES + Jacobi otherwise
(SUPG), relative residual 1e-12, so their peak memory stays that of the forward solve.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from petsc4py import PETSc

from sensitivity.fem import backend

__all__ = ["MassOperator", "default_mass_options"]


def default_mass_options(symmetric: bool) -> dict[str, Any]:
    r"""Iterative solver options for the mass matrix: CG + Jacobi for a symmetric :math:`M` (Galerkin),
    GMRES + Jacobi otherwise (SUPG); relative residual 1e-12 (unpreconditioned norm)."""
    if not symmetric:
        return {"ksp_type": "gmres", "ksp_gmres_restart": 100, "ksp_pc_side": "right", "pc_type": "jacobi",
                "ksp_rtol": 1e-12, "ksp_atol": 0.0, "ksp_max_it": 2000}
    return {"ksp_type": "cg", "ksp_norm_type": "unpreconditioned", "pc_type": "jacobi",
            "ksp_rtol": 1e-12, "ksp_atol": 0.0, "ksp_max_it": 2000}



class MassOperator:
    r""":math:`M^{-1}`, :math:`M^{-T}`, :math:`\hat Q = P(-M^{-1}A)`, :math:`\hat Q^T`, :math:`J(v)` (iterative mass solves)."""

    def __init__(self, functional, petsc_options: Mapping[str, Any] | None):
        """``functional``: a :class:`~sensitivity.fem.objective.reduced.ReducedFunctional` (its scheme and problem)."""
        self.scheme = functional.scheme
        self.problem = functional.problem
        if petsc_options is None:
            M = self.problem.M
            options = default_mass_options(bool(M.isSymmetric(1e-14 * M.norm(PETSc.NormType.INFINITY))))
        else:
            options = petsc_options
        self.ksp = backend.create_ksp(self.problem.M, options, "surrogate_mass")
        self._w1, self._w2 = self.scheme.create_vector(), self.scheme.create_vector()
        self.solves = 0
        self.iterations = 0

    def solve(self, b: PETSc.Vec, x: PETSc.Vec, *, transpose: bool = False) -> PETSc.Vec:
        """:math:`Mx = b` (or :math:`M^Tx = b`); ``b`` and ``x`` distinct (collective)."""
        if transpose:
            backend.solve_hermitian_transpose(self.ksp, b, x)
        else:
            self.ksp.solve(b, x)
        self.solves += 1
        self.iterations += self.ksp.getIterationNumber()
        return x

    def generator(self, x: PETSc.Vec, out: PETSc.Vec, *, project: bool = True) -> PETSc.Vec:
        r"""``out`` = :math:`-M^{-1}Ax`, with its Dirichlet rows zeroed if ``project`` (:math:`\hat Qx`)."""
        self.problem.A.mult(x, self._w1)
        self.solve(self._w1, out)
        out.scale(-1.0)
        if project:
            self.scheme.set_dirichlet(out, homogeneous=True)
        return out

    def generator_transpose(self, y: PETSc.Vec, out: PETSc.Vec) -> PETSc.Vec:
        r"""``out`` = :math:`\hat Q^Ty = -A^TM^{-T}Py`; ``y`` and ``out`` may coincide."""
        y.copy(self._w1)
        self.scheme.set_dirichlet(self._w1, homogeneous=True)
        self.solve(self._w1, self._w2, transpose=True)
        self.problem.A.multHermitian(self._w2, out)
        out.scale(-1.0)
        return out

    def perturbation(self, dA: PETSc.Mat, dM: PETSc.Mat | None, x: PETSc.Vec, qx: PETSc.Vec | None,
                     out: PETSc.Vec) -> PETSc.Vec:
        r"""``out`` = :math:`Jx = -PM^{-1}(\partial A[v]x + \partial M[v]\,Qx)` (``qx`` = :math:`Qx`, SUPG only)."""
        dA.mult(x, self._w1)
        if dM is not None:
            dM.multAdd(qx, self._w1, self._w1)
        self.solve(self._w1, out)
        out.scale(-1.0)
        self.scheme.set_dirichlet(out, homogeneous=True)
        return out

    def destroy(self) -> None:
        for obj in (self.ksp, self._w1, self._w2):
            obj.destroy()
