r"""Exact gradients and Hessian actions of a reduced objective by the discrete adjoint (SPEC §2).

The forward model is the θ-scheme of :mod:`sensitivity.fem.propagator` written with
its boundary rows, :math:`\tilde L\theta_{n+1} = \tilde R\theta_n + \tilde g`
(:math:`\tilde L = L` with identity rows and :math:`\tilde R = R` with zero rows on
the Dirichlet dofs). For :math:`F(c) = \sum_n f_n(\theta_n) + \mathcal R(c)` the
adjoint states solve, backwards from :math:`\lambda_{N+1} = 0`,

.. math::

    \tilde L^T\lambda_n = \nabla f_n(\theta_n) + R^T\hat\lambda_{n+1},\qquad n = N, \dots, 1,

where :math:`\hat\lambda` is :math:`\lambda` with its Dirichlet entries set to zero
(only those enter anything else), and the gradient with respect to every control
dof is

.. math::

    \nabla F = \nabla\mathcal R - \sum_{n=0}^{N-1}\Bigl[\Delta t\,\hat\lambda_{n+1}^T\,\partial_c A\,
    \bigl(\vartheta\theta_{n+1} + (1-\vartheta)\theta_n\bigr)
    + \hat\lambda_{n+1}^T\,\partial_c M\,(\theta_{n+1} - \theta_n)\Bigr],

the transpose of the tangent's right-hand side (:mod:`sensitivity.fem.tangent`), so
:math:`\langle\nabla F, v\rangle` equals the tangent's :math:`dF\cdot\rho(v)` to
round-off. One transposed solve per step, with the forward factorization.

The forward trajectory is kept in memory when it fits the memory budget and is
otherwise rebuilt from revolve checkpoints (:mod:`sensitivity.fem.checkpointing`);
the gradient is the same either way.

In a complex build (complex states, real control and objective) every transpose is the
Hermitian one, :math:`\tilde L^H\lambda_n = \nabla f_n + R^H\hat\lambda_{n+1}` with
:math:`df_n = \mathrm{Re}(\nabla f_n^H\delta\theta_n)`, and each pairing in the gradient is
:math:`\mathrm{Re}(\hat\lambda^H\,\partial_c A\,\cdots)`.

Hessian actions (second-order adjoint, "tangent on adjoint"): along a direction
:math:`v` with tangent :math:`\rho`, the differentiated adjoint

.. math::

    \tilde L^T\lambda'_n = \nabla^2 f_n\rho_n + R^T\hat\lambda'_{n+1}
      + (\partial M[v] - (1-\vartheta)\Delta t\,\partial A[v])^T\hat\lambda_{n+1}
      - (\partial M[v] + \vartheta\Delta t\,\partial A[v])^T\hat\lambda_n

and the derivative of the gradient formula along :math:`v` (including
:math:`\partial^2_c A`, :math:`\partial^2_c M`, non-zero only with SUPG) give
:math:`\nabla^2 F\,v`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import dolfinx.fem as fem
import numpy as np
import ufl
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import _backend
from sensitivity.fem.checkpointing import MemoryTrajectory, make_trajectory
from sensitivity.fem.generator import Generator
from sensitivity.fem.objective import Misfit, Tikhonov
from sensitivity.fem.propagator import ThetaScheme, _copy_in
from sensitivity.fem.tangent import Tangent

__all__ = ["OuterProductSums", "ReducedFunctional"]


def _cell_dofs(space: fem.FunctionSpace, cells: np.ndarray) -> np.ndarray:
    """Local dof indices (blocks expanded, element order) of ``cells``: shape (len(cells), dofs per cell)."""
    bs = space.dofmap.bs
    return (space.dofmap.list[cells][:, :, None] * bs + np.arange(bs)).reshape(len(cells), -1)


class OuterProductSums:
    r"""Sums of outer products :math:`P = \sum_m \Lambda_m\theta_m^T` on the sparsity of :math:`A`; the adjoint gradient is then one assembly.

    The gradient of this module, regrouped by state,

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
    quadrature (:meth:`Generator.paired_forms`), since
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
        self._form = _backend.form(ufl.derivative(functional, control.function, ufl.TestFunction(control.space)))
        # Rows and columns of every local dof (owned and ghost), in local order, for the cell gather.
        imap, bs = V.dofmap.index_map, V.dofmap.index_map_bs
        nodes = imap.local_to_global(np.arange(imap.size_local + imap.num_ghosts, dtype=np.int32))
        rows = (nodes[:, None] * bs + np.arange(bs)).ravel()
        self._is = PETSc.IS().createGeneral(rows.astype(PETSc.IntType), comm=PETSc.COMM_SELF)

    @staticmethod
    def supports(problem: Generator) -> bool:
        """Whether the cell-local split works: real build (complex builds assemble per step) and an
        element without dof transformations."""
        return not _backend.COMPLEX and not problem.V.element.needs_dof_transformations

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
        return _backend.assemble_vector(self._form, out)

    def destroy(self) -> None:
        for obj in (self._ones, self._work, *self._sums, self._is):
            obj.destroy()


class ReducedFunctional:
    r"""The reduced objective :math:`F(c) = \sum_n f_n(\theta_n(c)) + \mathcal R(c)` of a velocity control.

    Parameters
    ----------
    scheme : ThetaScheme
        The forward propagator; its problem's control Function is the parameter.
    theta0 : dolfinx.fem.Function or PETSc.Vec
        Initial state (independent of the control).
    nsteps : int
        Number of time steps N.
    misfits : sequence of Misfit
        Data terms (:class:`~sensitivity.fem.ObservationMisfit`, :class:`~sensitivity.fem.FieldMisfit`).
    regularization : Tikhonov, optional
        :math:`\mathcal R(c)`.
    memory_budget : int, optional
        Bytes the stored trajectory may use; beyond that the gradient checkpoints
        (revolve). Default: keep the whole trajectory.
    max_states : int, optional
        The same budget counted in state vectors.
    checkpoint_dir : str or os.PathLike, optional
        Directory for disk checkpoints (per-rank HDF5 files) when checkpointing.
    """

    def __init__(
        self,
        scheme: ThetaScheme,
        theta0: fem.Function | PETSc.Vec,
        nsteps: int,
        misfits: Sequence[Misfit],
        regularization: Tikhonov | None = None,
        *,
        memory_budget: int | None = None,
        max_states: int | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
    ):
        if not isinstance(scheme, ThetaScheme):
            raise InvalidArgumentError(f"scheme must be a ThetaScheme, got {type(scheme).__name__}")
        if isinstance(nsteps, bool) or not isinstance(nsteps, (int, np.integer)) or nsteps < 1:
            raise InvalidArgumentError(f"nsteps must be a positive integer, got {nsteps!r}")
        self.misfits = list(misfits)
        if not self.misfits or not all(isinstance(m, Misfit) for m in self.misfits):
            raise InvalidArgumentError("misfits must be a non-empty sequence of Misfit terms")
        for m in self.misfits:
            if m.steps.max() > nsteps:
                raise InvalidArgumentError(f"a misfit observes step {m.steps.max()} > nsteps = {nsteps}")
        if regularization is not None and not isinstance(regularization, Tikhonov):
            raise InvalidArgumentError(f"regularization must be a Tikhonov term, got {type(regularization).__name__}")
        self.scheme = scheme
        self.problem = scheme.problem
        self.nsteps = int(nsteps)
        self.regularization = regularization
        self.theta0 = scheme.create_vector()
        _copy_in(theta0, self.theta0)
        self._trajectory_options = {"memory_budget": memory_budget, "max_states": max_states,
                                    "directory": checkpoint_dir}
        self.stats: dict = {}
        self._sums: OuterProductSums | None = None

    # ------------------------------------------------------------------ control

    @property
    def control(self) -> fem.Function:
        """The control Function (stream function or velocity field)."""
        return self.problem.control.function

    def set_control(self, values: fem.Function | PETSc.Vec | np.ndarray) -> None:
        """Set the control's dofs (a Function in the control space, its Vec, or the owned dof values) and
        rebuild the operators (collective)."""
        c = self.control
        if isinstance(values, fem.Function):
            self.problem.control.check_direction(values, "control values")
            values = values.x.petsc_vec
        if isinstance(values, PETSc.Vec):
            values.copy(c.x.petsc_vec)
        else:
            arr = np.asarray(values, dtype=float)
            owned = c.x.petsc_vec.getLocalSize()
            if arr.shape != (owned,) or not np.all(np.isfinite(arr)):
                raise InvalidArgumentError(f"control values must be {owned} finite owned dof values, got shape {arr.shape}")
            c.x.petsc_vec.array[:] = arr
        c.x.scatter_forward()
        self.problem.update()
        self.scheme.refresh()

    def _new_control_vector(self) -> PETSc.Vec:
        return self.control.x.petsc_vec.duplicate()

    def _as_function(self, vec: PETSc.Vec, name: str) -> fem.Function:
        out = fem.Function(self.problem.control.space, name=name)
        vec.copy(out.x.petsc_vec)
        out.x.scatter_forward()
        return out

    # ------------------------------------------------------------------ value

    def _misfit_value(self, n: int, theta: PETSc.Vec) -> float:
        return sum(m.value(n, theta) for m in self.misfits if m.active(n))

    def _add_misfit_gradient(self, n: int, theta: PETSc.Vec, out: PETSc.Vec) -> None:
        for m in self.misfits:
            if m.active(n):
                m.add_gradient(n, theta, out)

    def _regularization_value(self) -> float:
        return 0.0 if self.regularization is None else self.regularization.value(self.control)

    def value(self) -> float:
        """:math:`F(c)` for the current control: one forward run, nothing stored (collective)."""
        total = [0.0]

        def accumulate(n, theta):
            total[0] += self._misfit_value(n, theta)

        self.scheme.run(self.theta0, self.nsteps, callback=accumulate).destroy()
        return total[0] + self._regularization_value()

    # ------------------------------------------------------------------ gradient

    def value_and_gradient(self) -> tuple[float, fem.Function]:
        """:math:`F(c)` and :math:`\\nabla F` (a Function in the control space) by one backward sweep (collective).

        The gradient terms are regrouped by state (see :class:`FeatureAccumulator`), so
        each backward step needs :math:`\\theta_m` only. With the whole trajectory in
        memory they are summed as quadrature-point features and assembled once;
        under a checkpointing memory limit they are assembled step by step, which
        needs no per-cell storage.
        """
        s, prob = self.scheme, self.problem
        th, dt = s.theta, s.dt
        trajectory = make_trajectory(s.step, s.create_vector, self.nsteps, **self._trajectory_options)
        total = [0.0]

        def accumulate(n, theta):
            total[0] += self._misfit_value(n, theta)

        trajectory.forward(self.theta0, accumulate).destroy()
        grad, work = self._new_control_vector(), self._new_control_vector()
        grad.set(0.0)
        accumulator = self._accumulator() if isinstance(trajectory, MemoryTrajectory) else None
        if accumulator is not None:
            accumulator.reset()
        lam, lam_next, rhs, lam_a, lam_m = (s.create_vector() for _ in range(5))
        lam_next.set(0.0)  # hat(lambda_{N+1}) = 0
        active = False  # lambda_m = lambda_{m+1} = 0 after the last observation: nothing to add
        for m, x in trajectory.reverse():
            if m > 0:
                self._adjoint_step(m, x, lam_next, lam, rhs)
            else:
                lam.set(0.0)  # hat(lambda_0) = 0
            active = active or any(mf.active(m) for mf in self.misfits)
            if active:
                lam_a.axpby(-dt * th, 0.0, lam)
                lam_a.axpy(-dt * (1.0 - th), lam_next)
                if prob.mass_depends_on_control:
                    lam_m.waxpy(-1.0, lam, lam_next)
                if accumulator is not None:
                    accumulator.add(lam_a, lam_m, x)
                else:
                    grad.axpy(1.0, prob.dA_adjoint_action(lam_a, x, work))
                    if prob.mass_depends_on_control:
                        grad.axpy(1.0, prob.dM_adjoint_action(lam_m, x, work))
            lam, lam_next = lam_next, lam
        self.stats = dict(trajectory.stats)
        self.stats["gradient_terms"] = "outer products" if accumulator is not None else "assembled per step"
        trajectory.destroy()
        if accumulator is not None:
            accumulator.gradient(grad)
        value = total[0] + self._regularization_value()
        if self.regularization is not None:
            self.regularization.add_gradient(self.control, grad)
        out = self._as_function(grad, "gradient")
        for v in (grad, work, lam, lam_next, rhs, lam_a, lam_m):
            v.destroy()
        return value, out

    def _accumulator(self) -> OuterProductSums | None:
        """The (cached) outer-product sums of this problem, if its element supports them."""
        if self._sums is None and OuterProductSums.supports(self.problem):
            self._sums = OuterProductSums(self.problem)
        return self._sums

    def _adjoint_step(self, n: int, theta: PETSc.Vec, lam_next: PETSc.Vec | None, lam: PETSc.Vec,
                      rhs: PETSc.Vec, extra: PETSc.Vec | None = None) -> None:
        """Solve :math:`\\tilde L^T\\lambda_n = \\nabla f_n + R^T\\hat\\lambda_{n+1}` (+ ``extra``) into ``lam`` as :math:`\\hat\\lambda_n`."""
        s = self.scheme
        rhs.set(0.0)
        self._add_misfit_gradient(n, theta, rhs)
        if lam_next is not None:
            s.R.multHermitianAdd(lam_next, rhs, rhs)
        if extra is not None:
            rhs.axpy(1.0, extra)
        _backend.solve_hermitian_transpose(s.ksp, rhs, lam)
        s.set_dirichlet(lam, homogeneous=True)

    def gradient(self) -> fem.Function:
        """:math:`\\nabla F` only (see :meth:`value_and_gradient`)."""
        return self.value_and_gradient()[1]

    # ------------------------------------------------------------------ checks and second order

    def derivative(self, v: fem.Function) -> float:
        """:math:`dF(c)\\cdot v` by the tangent (an independent check of the gradient; collective)."""
        self.problem.control.check_direction(v)
        tangent = Tangent(self.scheme, [v])
        grad = self.scheme.create_vector()
        total = [0.0]

        def accumulate(n, theta, rhos):
            if any(m.active(n) for m in self.misfits):
                grad.set(0.0)
                self._add_misfit_gradient(n, theta, grad)
                total[0] += grad.dot(rhos[0]).real  # Re(rho^H g): a real objective of a complex state

        thetaN, rhos = tangent.run(self.theta0, self.nsteps, callback=accumulate)
        for obj in (thetaN, *rhos, grad, tangent):
            obj.destroy()
        if self.regularization is not None:
            g = self._new_control_vector()
            g.set(0.0)
            self.regularization.add_gradient(self.control, g)
            total[0] += g.dot(v.x.petsc_vec).real
            g.destroy()
        return total[0]

    def hessian_action(self, v: fem.Function) -> fem.Function:
        """:math:`\\nabla^2F(c)\\,v` by the second-order adjoint (collective).

        Keeps the forward and tangent trajectories in memory (2(N + 1) states).
        """
        s, prob = self.scheme, self.problem
        prob.control.check_direction(v)
        th, dt, N = s.theta, s.dt, self.nsteps
        thetas, rhos = [], []

        def keep(n, theta, rho):
            thetas.append(theta.copy())
            rhos.append(rho[0].copy())

        tangent = Tangent(s, [v])
        last, (rhoN,) = tangent.run(self.theta0, N, callback=keep)
        dA_v, dM_v = tangent.dA[0], (tangent.dM[0] if tangent.dM is not None else None)
        hv, work = self._new_control_vector(), self._new_control_vector()
        hv.set(0.0)
        lam, lam_next, lam2, lam2_next, rhs, extra, tmp, mix, mix_rho = (s.create_vector() for _ in range(9))
        for n in range(N, -1, -1):
            if n < N:  # step n -> n+1: lam_next, lam2_next hold hat(lambda_{n+1}), hat(lambda'_{n+1})
                self._hessian_step_terms(thetas[n], thetas[n + 1], rhos[n], rhos[n + 1], lam_next, lam2_next, v,
                                         hv, work, mix, mix_rho, tmp)
            if n == 0:
                break
            self._adjoint_step(n, thetas[n], lam_next if n < N else None, lam, rhs)
            # extra = grad^2 f_n rho_n + (dM - (1-th) dt dA)^T lam_{n+1} - (dM + th dt dA)^T lam_n
            extra.set(0.0)
            for m in self.misfits:
                if m.active(n):
                    m.add_hessian_action(n, thetas[n], rhos[n], extra)
            dA_v.multHermitian(lam, tmp)
            extra.axpy(-th * dt, tmp)
            if n < N:
                dA_v.multHermitian(lam_next, tmp)
                extra.axpy(-(1.0 - th) * dt, tmp)
            if dM_v is not None:
                dM_v.multHermitian(lam, tmp)
                extra.axpy(-1.0, tmp)
                if n < N:
                    dM_v.multHermitian(lam_next, tmp)
                    extra.axpy(1.0, tmp)
            rhs.set(0.0)
            if n < N:
                s.R.multHermitianAdd(lam2_next, rhs, rhs)
            rhs.axpy(1.0, extra)
            _backend.solve_hermitian_transpose(s.ksp, rhs, lam2)
            s.set_dirichlet(lam2, homogeneous=True)
            lam, lam_next = lam_next, lam
            lam2, lam2_next = lam2_next, lam2
        if self.regularization is not None:
            self.regularization.add_hessian_action(v.x.petsc_vec, hv)
        out = self._as_function(hv, "hessian_action")
        for obj in (*thetas, *rhos, last, rhoN, hv, work, lam, lam_next, lam2, lam2_next, rhs, extra, tmp, mix,
                    mix_rho, tangent):
            obj.destroy()
        return out

    def _hessian_step_terms(self, x0, x1, r0, r1, lam1, lam2_1, v, hv, work, mix, mix_rho, tmp) -> None:
        """Add the step n -> n+1 terms of the differentiated gradient formula to ``hv``."""
        prob, th, dt = self.problem, self.scheme.theta, self.scheme.dt
        mix.axpby(th, 0.0, x1)
        mix.axpy(1.0 - th, x0)
        mix_rho.axpby(th, 0.0, r1)
        mix_rho.axpy(1.0 - th, r0)
        hv.axpy(-dt, prob.dA_adjoint_action(lam2_1, mix, work))
        hv.axpy(-dt, prob.dA_adjoint_action(lam1, mix_rho, work))
        if not prob.affine_in_control:
            hv.axpy(-dt, prob.d2A_adjoint_action(lam1, mix, v, work))
        if prob.mass_depends_on_control:
            tmp.waxpy(-1.0, x0, x1)
            hv.axpy(-1.0, prob.dM_adjoint_action(lam2_1, tmp, work))
            if not prob.affine_in_control:
                hv.axpy(-1.0, prob.d2M_adjoint_action(lam1, tmp, v, work))
            tmp.waxpy(-1.0, r0, r1)
            hv.axpy(-1.0, prob.dM_adjoint_action(lam1, tmp, work))

    def destroy(self) -> None:
        self.theta0.destroy()
        if self._sums is not None:
            self._sums.destroy()
            self._sums = None
