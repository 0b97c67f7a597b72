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
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem.checkpointing import make_trajectory
from sensitivity.fem.objective import Misfit, Tikhonov
from sensitivity.fem.propagator import ThetaScheme, _copy_in
from sensitivity.fem.tangent import Tangent

__all__ = ["ReducedFunctional"]


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
        """:math:`F(c)` and :math:`\\nabla F` (a Function in the control space) by one backward sweep (collective)."""
        s, prob = self.scheme, self.problem
        th, dt = s.theta, s.dt
        trajectory = make_trajectory(s.step, s.create_vector, self.nsteps, **self._trajectory_options)
        total = [0.0]

        def accumulate(n, theta):
            total[0] += self._misfit_value(n, theta)

        trajectory.forward(self.theta0, accumulate).destroy()
        grad, work = self._new_control_vector(), self._new_control_vector()
        grad.set(0.0)
        lam, lam_next, rhs, upper, mix, diff = (s.create_vector() for _ in range(6))
        have_upper = False
        for n, x in trajectory.reverse():
            if have_upper:  # step n -> n+1 with lam_next = hat(lambda_{n+1}), upper = theta_{n+1}
                mix.axpby(th, 0.0, upper)
                mix.axpy(1.0 - th, x)
                grad.axpy(-dt, prob.dA_adjoint_action(lam_next, mix, work))
                if prob.supg:
                    diff.waxpy(-1.0, x, upper)
                    grad.axpy(-1.0, prob.dM_adjoint_action(lam_next, diff, work))
            if n == 0:
                break
            self._adjoint_step(n, x, lam_next if have_upper else None, lam, rhs)
            lam, lam_next = lam_next, lam
            x.copy(upper)
            have_upper = True
        self.stats = dict(trajectory.stats)
        trajectory.destroy()
        value = total[0] + self._regularization_value()
        if self.regularization is not None:
            self.regularization.add_gradient(self.control, grad)
        out = self._as_function(grad, "gradient")
        for v in (grad, work, lam, lam_next, rhs, upper, mix, diff):
            v.destroy()
        return value, out

    def _adjoint_step(self, n: int, theta: PETSc.Vec, lam_next: PETSc.Vec | None, lam: PETSc.Vec,
                      rhs: PETSc.Vec, extra: PETSc.Vec | None = None) -> None:
        """Solve :math:`\\tilde L^T\\lambda_n = \\nabla f_n + R^T\\hat\\lambda_{n+1}` (+ ``extra``) into ``lam`` as :math:`\\hat\\lambda_n`."""
        s = self.scheme
        rhs.set(0.0)
        self._add_misfit_gradient(n, theta, rhs)
        if lam_next is not None:
            s.R.multTransposeAdd(lam_next, rhs, rhs)
        if extra is not None:
            rhs.axpy(1.0, extra)
        s.ksp.solveTranspose(rhs, lam)
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
                total[0] += grad.dot(rhos[0])

        thetaN, rhos = tangent.run(self.theta0, self.nsteps, callback=accumulate)
        for obj in (thetaN, *rhos, grad, tangent):
            obj.destroy()
        if self.regularization is not None:
            g = self._new_control_vector()
            g.set(0.0)
            self.regularization.add_gradient(self.control, g)
            total[0] += g.dot(v.x.petsc_vec)
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
                    m.add_hessian_action(n, rhos[n], extra)
            dA_v.multTranspose(lam, tmp)
            extra.axpy(-th * dt, tmp)
            if n < N:
                dA_v.multTranspose(lam_next, tmp)
                extra.axpy(-(1.0 - th) * dt, tmp)
            if dM_v is not None:
                dM_v.multTranspose(lam, tmp)
                extra.axpy(-1.0, tmp)
                if n < N:
                    dM_v.multTranspose(lam_next, tmp)
                    extra.axpy(1.0, tmp)
            rhs.set(0.0)
            if n < N:
                s.R.multTransposeAdd(lam2_next, rhs, rhs)
            rhs.axpy(1.0, extra)
            s.ksp.solveTranspose(rhs, lam2)
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
        if prob.supg:
            hv.axpy(-dt, prob.d2A_adjoint_action(lam1, mix, v, work))
            tmp.waxpy(-1.0, x0, x1)
            hv.axpy(-1.0, prob.dM_adjoint_action(lam2_1, tmp, work))
            hv.axpy(-1.0, prob.d2M_adjoint_action(lam1, tmp, v, work))
            tmp.waxpy(-1.0, r0, r1)
            hv.axpy(-1.0, prob.dM_adjoint_action(lam1, tmp, work))

    def destroy(self) -> None:
        self.theta0.destroy()
