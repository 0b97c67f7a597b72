r"""The bi-Laplacian (Matérn) prior in function space, by the SPDE approach (docs/theory.md §4).

**Bi-Laplacian (Matérn) prior** (:class:`BiLaplacianPrior`; hIPPYlib's SPDE prior, Lindgren, Rue &
Lindström 2011). With :math:`\mathcal A = \delta I - \gamma\Delta` and natural (or Robin) boundary
conditions, :math:`\mathcal C = \mathcal A^{-2}`. Discretized on the control space with mass :math:`M`
and stiffness :math:`K`,

.. math::

    A = \delta M + \gamma K\ (+\ \beta\textstyle\int_{\partial\Omega}\phi_j\phi_i\,ds),\qquad
    C = A^{-1}MA^{-1},\qquad C^{-1} = AM^{-1}A,

with the Robin coefficient :math:`\beta = \sqrt{\gamma\delta}/1.42` (Roininen et al. 2014; it removes
most of the variance inflation that natural boundary conditions cause near the boundary). The
square root is :math:`L = A^{-1}G` with :math:`GG^T = M` exactly: :math:`G = B\,\mathrm{diag}(w)^{-1/2}`,
:math:`B_{iq} = \int\phi_i\psi_q\,dx = w_q\phi_i(x_q)` for the quadrature points :math:`x_q` (weights
:math:`w_q` including the cell Jacobian) of a rule exact for :math:`M`. The white noise :math:`\xi` lives
at the quadrature points; it is drawn per cell in the order of the cells' *original* (input) index,
so a seed gives the same draw on any number of ranks. The correlation length is about
:math:`\sqrt{8\nu}\sqrt{\gamma/\delta}` with :math:`\nu = 2 - d/2` and the pointwise variance away from
boundaries :math:`\Gamma(\nu)/(\Gamma(2)(4\pi)^{d/2}\delta^\nu\gamma^{d/2})` (Daon & Stadler 2018).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import basix.ufl
import dolfinx.fem as fem
import numpy as np
import ufl

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.prior import Prior
from sensitivity.estimation.vectors import FunctionVectors
from sensitivity.fem import backend
from sensitivity.validation import positive

__all__ = ["BiLaplacianPrior", "ROBIN_CONSTANT"]

#: The constant of the Robin coefficient :math:`\beta = \sqrt{\gamma\delta}/1.42` (Roininen et al. 2014).
ROBIN_CONSTANT = 1.42


class BiLaplacianPrior(Prior):
    r"""The SPDE prior :math:`\mathcal C = (\delta I - \gamma\Delta)^{-2}` on a control space (module docstring).

    Parameters
    ----------
    space : FunctionVectors
        The control's parameter vectors (a scalar or vector Lagrange space).
    gamma, delta : float
        :math:`\gamma, \delta > 0`: correlation length :math:`\approx\sqrt{8\nu\gamma/\delta}`.
    mean : petsc4py.PETSc.Vec or dolfinx.fem.Function, optional
        :math:`\bar m` (default zero); copied.
    robin : bool
        Add the Robin boundary term (default ``False``: natural conditions, as in hIPPYlib's default).
    petsc_options : dict, optional
        Solver of :math:`A` and :math:`M` (default MUMPS LU).
    """

    def __init__(self, space: FunctionVectors, gamma: float, delta: float, *, mean=None, robin: bool = False,
                 petsc_options: Mapping[str, Any] | None = None):
        if not isinstance(space, FunctionVectors):
            raise InvalidArgumentError(f"space must be a FunctionVectors, got {type(space).__name__}")
        self.space = space
        self.gamma, self.delta = positive(gamma, "gamma"), positive(delta, "delta")
        self.robin = bool(robin)
        V = space.control_space.space
        msh = V.mesh
        degree = 2 * V.ufl_element().embedded_superdegree  # exact for the mass matrix
        dx = ufl.dx(metadata={"quadrature_degree": degree})
        u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
        a = self.delta * ufl.inner(u, v) * dx + self.gamma * ufl.inner(ufl.grad(u), ufl.grad(v)) * dx
        if self.robin:
            a += np.sqrt(self.gamma * self.delta) / ROBIN_CONSTANT * ufl.inner(u, v) * ufl.ds
        self.A = backend.assemble_matrix(backend.form(a))
        self.M = backend.assemble_matrix(backend.form(ufl.inner(u, v) * dx))
        self._A_solver = backend.create_ksp(self.A, petsc_options, "prior_operator")
        self._M_solver = backend.create_ksp(self.M, petsc_options, "prior_mass")
        # G = B diag(w)^-1/2 with B_iq = int phi_i psi_q, w_q = int psi_q: G G^T = M
        Q = fem.functionspace(msh, basix.ufl.quadrature_element(msh.basix_cell(), value_shape=tuple(V.value_shape),
                                                                  degree=degree))
        q = ufl.TrialFunction(Q)
        self.G = backend.assemble_matrix(backend.form(ufl.inner(q, v) * dx))
        w = ufl.TestFunction(Q)
        ones = w if Q.dofmap.bs == 1 else ufl.inner(ufl.as_vector([1.0] * Q.dofmap.bs), w)
        weights = backend.assemble_vector(backend.form(ones * dx))  # w_q = int psi_q
        weights.sqrtabs()
        weights.reciprocal()
        self.G.diagonalScale(None, weights)
        self._xi = weights  # reused as the noise vector in the quadrature layout
        tdim = msh.topology.dim
        owned = msh.topology.index_map(tdim).size_local
        self._cells = np.asarray(msh.topology.original_cell_index[:owned], dtype=np.int64)
        self._per_cell = Q.dofmap.list.shape[1] * Q.dofmap.bs
        self._cell_dofs = (Q.dofmap.list[:owned][:, :, None] * Q.dofmap.bs + np.arange(Q.dofmap.bs)).reshape(
            owned, self._per_cell)
        self._num_cells = msh.comm.allreduce(owned)
        self.noise_size = self._num_cells * self._per_cell
        self._w1, self._w2 = self.A.createVecLeft(), self.A.createVecLeft()
        self.mean = space.zeros()
        if mean is not None:
            vec = getattr(getattr(mean, "x", None), "petsc_vec", mean)
            space.check(vec, "mean")
            vec.copy(self.mean)

    def _sandwich(self, outer, inner, x, out):
        """``outer(inner(outer(x)))`` into ``out`` (a new vector if ``None``), through the two work vectors."""
        out = self.space.zeros() if out is None else out
        outer(x, self._w1)
        inner(self._w1, self._w2)
        outer(self._w2, out)
        return out

    def precision_action(self, v, out=None):
        r""":math:`AM^{-1}Av`."""
        return self._sandwich(self.A.mult, self._M_solver.solve, v, out)

    def covariance_action(self, d, out=None):
        r""":math:`A^{-1}MA^{-1}d`."""
        return self._sandwich(self._A_solver.solve, self.M.mult, d, out)

    def sqrt_covariance_action(self, xi: np.ndarray, out=None):
        r""":math:`A^{-1}G\xi`; ``xi`` holds :attr:`noise_size` numbers in the order (original cell index, point)."""
        xi = np.asarray(xi, dtype=float)
        if xi.shape != (self.noise_size,):
            raise InvalidArgumentError(f"xi must have shape ({self.noise_size},), got {xi.shape}")
        self._xi.array[self._cell_dofs.ravel()] = xi.reshape(self._num_cells, self._per_cell)[self._cells].ravel()
        self.G.mult(self._xi, self._w1)
        out = self.space.zeros() if out is None else out
        self._A_solver.solve(self._w1, out)
        return out

    def pointwise_variance(self) -> Any:
        r"""The diagonal of :math:`C` as a parameter vector, exactly: one covariance action per dof (small problems)."""
        var, e, column = self.space.zeros(), self.space.zeros(), self.space.zeros()
        for k in range(self.space.size):
            unit = np.zeros(self.space.size)
            unit[k] = 1.0
            self.space.from_array(unit, e)
            self.covariance_action(e, column)
            e.pointwiseMult(column, e)  # C e_k restricted to entry k: C_kk
            var.axpy(1.0, e)
        e.destroy()
        column.destroy()
        return var

    def destroy(self) -> None:
        for obj in (self.A, self.M, self.G, self._A_solver, self._M_solver, self._xi, self._w1, self._w2, self.mean):
            obj.destroy()
