r"""Sums of outer products on the sparsity of :math:`A`: the adjoint gradient as one assembly (docs/theory.md §2).

The per-step terms of the adjoint gradient, :math:`\partial_c[\Lambda^TA(c)\theta]`, would each
cost an assembly over the mesh. :class:`OuterProductSums` instead adds the outer products
:math:`\Lambda\theta^T` on the sparsity pattern of :math:`A` (one :math:`O(\mathrm{nnz})` scaling per
step) and assembles their contraction with :math:`\partial_cA` once at the end.
"""

from __future__ import annotations

import dolfinx.fem as fem
import numpy as np
import ufl
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import backend
from sensitivity.fem.models.base import Generator

__all__ = ["OuterProductSums"]


def _cell_dofs(space: fem.FunctionSpace, cells: np.ndarray) -> np.ndarray:
    """Local dof indices (blocks expanded, element order) of ``cells``: shape (len(cells), dofs per cell)."""
    bs = space.dofmap.bs
    per_cell = space.dofmap.list.shape[1] * bs  # explicit: a rank may own no cell
    return (space.dofmap.list[cells][:, :, None] * bs + np.arange(bs)).reshape(len(cells), per_cell)


class OuterProductSums:
    r"""Sums of outer products :math:`P = \sum_m \Lambda_m\theta_m^T` on the sparsity of :math:`A`; the adjoint gradient is then one assembly.

    The adjoint gradient (:mod:`sensitivity.fem.derivatives.adjoint`), regrouped by state,

    .. math::

        \nabla F - \nabla\mathcal R = \sum_{m=0}^{N}\partial_c\bigl[\Lambda_{A,m}^T A(c)\,\theta_m
          + \Lambda_{M,m}^T M(c)\,\theta_m\bigr],\qquad
        \Lambda_{A,m} = -\Delta t\bigl(\vartheta\hat\lambda_m + (1-\vartheta)\hat\lambda_{m+1}\bigr),\quad
        \Lambda_{M,m} = \hat\lambda_{m+1} - \hat\lambda_m

    (:math:`\hat\lambda_0 = \hat\lambda_{N+1} = 0`), equals
    :math:`\sum_{ij} P^A_{ij}\,\partial_c A_{ij} + P^M_{ij}\,\partial_c M_{ij}` with
    :math:`P^A = \sum_m \Lambda_{A,m}\theta_m^T` (and :math:`P^M` likewise, SUPG only)
    needed only on the sparsity pattern of :math:`A`. :meth:`add` costs one
    :math:`O(\mathrm{nnz})` diagonal scaling and one sum of matrices (PETSc, no
    assembly). :meth:`gradient` splits :math:`P` into the cell-local matrices
    :math:`P^c_{ab} = P_{d_c(a)d_c(b)}` and assembles, once,

    .. math::

        \partial_c\sum_b a\bigl(u(c); T_b, S_b\bigr),\qquad T_b|_c = \phi^c_b,\quad S_b|_c = \sum_a P^c_{ab}\phi^c_a

    with discontinuous Lagrange :math:`T_b, S_b` and the generator's own forms and
    quadrature (:meth:`~sensitivity.fem.models.base.Generator.paired_forms`), since
    :math:`\sum_{ij}P_{ij}\partial_cA_{ij} = \sum_c\sum_{ab}P^c_{ab}\,\partial_c A^c_{ab}`.
    Exact for the discrete scheme, SUPG (:math:`\tau(u)` non-polynomial) included.

    Memory: three (SUPG: four) matrices with the sparsity of :math:`A`.

    Parameters
    ----------
    problem : Generator
        The generator. Elements whose dofs need orientation transformations (Lagrange
        degree ≥ 3) are not supported: :meth:`supports` tells.
    """

    def __init__(self, problem: Generator):
        if not self.supports(problem):
            raise InvalidArgumentError(
                f"OuterProductSums needs Lagrange degree <= 2 on simplices, got {problem.V.ufl_element()}")
        self.problem = problem
        A = problem.A
        self._ones = A.duplicate(copy=True)
        rows, cols, values = A.getValuesCSR()
        self._ones.zeroEntries()
        self._ones.setValuesCSR(rows, cols, np.ones_like(values))
        self._ones.assemble()
        self._work = self._ones.duplicate(copy=True)
        self._sums = [self._ones.duplicate(copy=True) for _ in range(2 if problem.mass_depends_on_control else 1)]
        # Discontinuous Lagrange arguments T_b (local basis functions) and S_b (P^c columns).
        V = problem.V
        msh = V.mesh
        W = fem.functionspace(msh, ("Discontinuous Lagrange", V.ufl_element().embedded_superdegree,
                                    tuple(V.value_shape)))
        cells = np.arange(msh.topology.index_map(msh.topology.dim).size_local, dtype=np.int32)
        self._W_dofs, self._V_dofs = _cell_dofs(W, cells), _cell_dofs(V, cells)
        nloc = self._V_dofs.shape[1]
        self._T = [fem.Function(W) for _ in range(nloc)]
        for b, T in enumerate(self._T):
            T.x.array[self._W_dofs[:, b]] = 1.0
        self._S = [[fem.Function(W) for _ in range(nloc)] for _ in self._sums]
        pairs = [list(zip(self._T, S)) for S in self._S]
        functional = problem.paired_forms(pairs[0], pairs[1] if problem.mass_depends_on_control else ())
        control = problem.control
        self._form = backend.form(ufl.derivative(functional, control.function, ufl.TestFunction(control.space)))
        # Rows and columns of every local dof (owned and ghost), in local order, for the cell gather.
        imap, bs = V.dofmap.index_map, V.dofmap.index_map_bs
        nodes = imap.local_to_global(np.arange(imap.size_local + imap.num_ghosts, dtype=np.int32))
        rows = (nodes[:, None] * bs + np.arange(bs)).ravel()
        self._is = PETSc.IS().createGeneral(rows.astype(PETSc.IntType), comm=PETSc.COMM_SELF)

    @staticmethod
    def supports(problem: Generator) -> bool:
        """Whether the cell-local split works: real build (complex builds assemble per step) and an
        element without dof transformations."""
        return not backend.COMPLEX and not problem.V.element.needs_dof_transformations

    def reset(self) -> None:
        for P in self._sums:
            P.zeroEntries()

    def add(self, lam_a: PETSc.Vec, lam_m: PETSc.Vec | None, theta: PETSc.Vec) -> None:
        r""":math:`P^A \mathrel{+}= \Lambda_A\theta^T`, :math:`P^M \mathrel{+}= \Lambda_M\theta^T` on the pattern (collective)."""
        same = PETSc.Mat.Structure.SAME_NONZERO_PATTERN
        for P, lam in zip(self._sums, (lam_a, lam_m)):
            self._ones.copy(self._work, structure=same)
            self._work.diagonalScale(lam, theta)
            P.axpy(1.0, self._work, structure=same)

    def gradient(self, out: PETSc.Vec) -> PETSc.Vec:
        """Assemble :math:`\\sum_{ij}P_{ij}\\,\\partial_c A_{ij}` (+ M) into the control-space Vec ``out`` (collective)."""
        for P, S in zip(self._sums, self._S):
            (local,) = P.createSubMatrices(self._is, self._is)  # rows/columns of local + ghost dofs
            indptr, indices, values = local.getValuesCSR()
            local.destroy()
            ncols = self._is.getLocalSize()
            keys = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr)) * ncols + indices
            for b, S_b in enumerate(S):
                i, j = self._V_dofs, self._V_dofs[:, [b]]  # P^c_{ab} = P[d(a), d(b)], a = 0..nloc-1
                position = np.searchsorted(keys, i.astype(np.int64) * ncols + j)
                S_b.x.array[self._W_dofs] = values[position]
        return backend.assemble_vector(self._form, out)

    def destroy(self) -> None:
        for obj in (self._ones, self._work, *self._sums, self._is):
            obj.destroy()
