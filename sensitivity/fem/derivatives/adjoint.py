r"""Exact derivatives and Hessian actions of a reduced objective by the discrete adjoint (docs/theory.md §2).

The forward model is the θ-scheme of :mod:`sensitivity.fem.timestepping.theta` written with
its boundary rows, :math:`\tilde L\theta_{n+1} = \tilde R\theta_n + \tilde g`
(:math:`\tilde L = L` with identity rows and :math:`\tilde R = R` with zero rows on
the Dirichlet dofs). For :math:`F(c) = \sum_n f_n(\theta_n) + \mathcal R(c)` the
adjoint states solve, backwards from :math:`\lambda_{N+1} = 0`,

.. math::

    \tilde L^T\lambda_n = \nabla f_n(\theta_n) + R^T\hat\lambda_{n+1},\qquad n = N, \dots, 1,

where :math:`\hat\lambda` is :math:`\lambda` with its Dirichlet entries set to zero
(only those enter anything else), and the derivative with respect to every control
dof (the ℓ² dual vector) is

.. math::

    \nabla F = \nabla\mathcal R - \sum_{n=0}^{N-1}\Bigl[\Delta t\,\hat\lambda_{n+1}^T\,\partial_c A\,
    \bigl(\vartheta\theta_{n+1} + (1-\vartheta)\theta_n\bigr)
    + \hat\lambda_{n+1}^T\,\partial_c M\,(\theta_{n+1} - \theta_n)\Bigr],

the transpose of the tangent's right-hand side (:mod:`sensitivity.fem.derivatives.tangent`), so
:math:`\langle\nabla F, v\rangle` equals the tangent's :math:`dF\cdot\rho(v)` to
round-off. One transposed solve per step, with the forward factorization.

The forward trajectory is kept in memory when it fits the memory budget and is
otherwise rebuilt from revolve checkpoints (:mod:`sensitivity.fem.timestepping.trajectory`);
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

import weakref
from typing import TYPE_CHECKING

import dolfinx.fem as fem
from petsc4py import PETSc

from sensitivity.fem import backend
from sensitivity.fem.derivatives.outer_products import OuterProductSums
from sensitivity.fem.derivatives.tangent import Tangent
from sensitivity.fem.timestepping.trajectory import MemoryTrajectory

if TYPE_CHECKING:  # the objective is used through its public methods only
    from sensitivity.fem.objective.reduced import ReducedFunctional

__all__ = ["Adjoint"]


class Adjoint:
    r"""The discrete adjoint of a reduced objective: value and derivative in one backward sweep, Hessian actions.

    Parameters
    ----------
    objective : ReducedFunctional
        Used through its public methods: ``scheme``, ``problem``, ``nsteps``,
        ``initial_state``, ``control_space``, ``trajectory()``, ``observed(n)``,
        ``misfit_value``, ``add_misfit_gradient``, ``add_misfit_hessian_action``,
        ``regularization_value``, ``add_regularization_gradient``,
        ``add_regularization_hessian_action``.

    Attributes
    ----------
    stats : dict
        After :meth:`value_and_derivative`: the trajectory's counters
        (:class:`~sensitivity.fem.timestepping.trajectory.Trajectory`) and ``gradient_terms``.
    """

    def __init__(self, objective: ReducedFunctional):
        # A weak reference: the objective owns its Adjoint, and a reference cycle would leave both (and the
        # factorizations they hold) to the cyclic garbage collector, which runs at different moments on
        # different ranks -- destroying a MUMPS factorization is collective.
        self._objective = weakref.ref(objective)
        self.stats: dict = {}
        self._sums: OuterProductSums | None = None

    @property
    def objective(self) -> ReducedFunctional:
        """The objective differentiated (held weakly)."""
        objective = self._objective()
        if objective is None:  # pragma: no cover - the objective owns this object
            raise ReferenceError("the objective of this Adjoint no longer exists")
        return objective

    def value_and_derivative(self) -> tuple[float, PETSc.Vec]:
        r""":math:`F(c)` and the derivative :math:`\partial F/\partial c_k` (a control Vec the caller owns; collective).

        The terms are regrouped by state (:class:`OuterProductSums`), so each backward
        step needs :math:`\theta_m` only. With the whole trajectory in memory they are
        summed as outer products and assembled once; under a checkpointing memory
        limit they are assembled step by step, which needs no extra storage.
        """
        F = self.objective
        s, prob = F.scheme, F.problem
        th, dt = s.theta, s.dt
        trajectory = F.trajectory()
        total = [0.0]

        def accumulate(n, theta):
            if F.observed(n):
                total[0] += F.misfit_value(n, theta)

        trajectory.forward(F.initial_state, accumulate).destroy()
        grad, work = F.control_space.create_vector(), F.control_space.create_vector()
        sums = self._outer_product_sums() if isinstance(trajectory, MemoryTrajectory) else None
        if sums is not None:
            sums.reset()
        lam, lam_next, rhs, lam_a, lam_m = (s.create_vector() for _ in range(5))
        lam_next.set(0.0)  # hat(lambda_{N+1}) = 0
        active = False  # lambda_m = lambda_{m+1} = 0 after the last observation: nothing to add
        for m, x in trajectory.reverse():
            if m > 0:
                self._adjoint_step(m, x, lam_next, lam, rhs)
            else:
                lam.set(0.0)  # hat(lambda_0) = 0
            active = active or F.observed(m)
            if active:
                lam_a.axpby(-dt * th, 0.0, lam)
                lam_a.axpy(-dt * (1.0 - th), lam_next)
                if prob.mass_depends_on_control:
                    lam_m.waxpy(-1.0, lam, lam_next)
                if sums is not None:
                    sums.add(lam_a, lam_m, x)
                else:
                    grad.axpy(1.0, prob.dA_adjoint_action(lam_a, x, work))
                    if prob.mass_depends_on_control:
                        grad.axpy(1.0, prob.dM_adjoint_action(lam_m, x, work))
            lam, lam_next = lam_next, lam
        self.stats = dict(trajectory.stats)
        self.stats["gradient_terms"] = "outer products" if sums is not None else "assembled per step"
        trajectory.destroy()
        if sums is not None:
            sums.gradient(grad)
        F.add_regularization_gradient(grad)
        for vec in (work, lam, lam_next, rhs, lam_a, lam_m):
            vec.destroy()
        return total[0] + F.regularization_value(), grad

    def _outer_product_sums(self) -> OuterProductSums | None:
        """The (cached) outer-product sums of the problem, if its element supports them."""
        if self._sums is None and OuterProductSums.supports(self.objective.problem):
            self._sums = OuterProductSums(self.objective.problem)
        return self._sums

    def _adjoint_step(self, n: int, theta: PETSc.Vec, lam_next: PETSc.Vec | None, lam: PETSc.Vec,
                      rhs: PETSc.Vec) -> None:
        r"""Solve :math:`\tilde L^T\lambda_n = \nabla f_n + R^T\hat\lambda_{n+1}` into ``lam`` as :math:`\hat\lambda_n`."""
        F = self.objective
        s = F.scheme
        rhs.set(0.0)
        if F.observed(n):
            F.add_misfit_gradient(n, theta, rhs)
        if lam_next is not None:
            s.R.multHermitianAdd(lam_next, rhs, rhs)
        backend.solve_hermitian_transpose(s.ksp, rhs, lam)
        s.set_dirichlet(lam, homogeneous=True)

    def hessian_action(self, v: fem.Function) -> PETSc.Vec:
        r""":math:`\nabla^2F(c)\,v`, a control Vec the caller owns, by the second-order adjoint (collective).

        Keeps the forward and tangent trajectories in memory (2(N + 1) states).
        """
        F = self.objective
        s = F.scheme
        F.control_space.check(v)
        th, dt, N = s.theta, s.dt, F.nsteps
        thetas, rhos = [], []

        def keep(n, theta, rho):
            thetas.append(theta.copy())
            rhos.append(rho[0].copy())

        tangent = Tangent(s, [v])
        last, (rhoN,) = tangent.run(F.initial_state, N, callback=keep)
        dA_v, dM_v = tangent.dA[0], (tangent.dM[0] if tangent.dM is not None else None)
        hv, work = F.control_space.create_vector(), F.control_space.create_vector()
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
            if F.observed(n):
                F.add_misfit_hessian_action(n, thetas[n], rhos[n], extra)
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
            backend.solve_hermitian_transpose(s.ksp, rhs, lam2)
            s.set_dirichlet(lam2, homogeneous=True)
            lam, lam_next = lam_next, lam
            lam2, lam2_next = lam2_next, lam2
        F.add_regularization_hessian_action(v.x.petsc_vec, hv)
        for obj in (*thetas, *rhos, last, rhoN, work, lam, lam_next, lam2, lam2_next, rhs, extra, tmp, mix,
                    mix_rho, tangent):
            obj.destroy()
        return hv

    def _hessian_step_terms(self, x0, x1, r0, r1, lam1, lam2_1, v, hv, work, mix, mix_rho, tmp) -> None:
        """Add the step n -> n+1 terms of the differentiated gradient formula to ``hv``."""
        prob, th, dt = self.objective.problem, self.objective.scheme.theta, self.objective.scheme.dt
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
        if self._sums is not None:
            self._sums.destroy()
            self._sums = None
