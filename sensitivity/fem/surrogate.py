r"""The first-order surrogate of the velocity gradient, in O(n) memory (SPEC §1–2).

The surrogate replaces the exact derivative of the discrete state,
:math:`\rho_n = \nabla_v\theta_n`, by :math:`t_n S^n J\theta_0` (seed 1.6 applied to the
finite-element generator), with :math:`S` the one-step propagator of the θ-scheme,
:math:`t_n = n\Delta t` and the generator perturbation

.. math::

    J\theta_0 = \partial Q[v]\,\theta_0 = -M^{-1}\bigl(\partial A[v]\,\theta_0 + \partial M[v]\,Q\theta_0\bigr),
    \qquad Q\theta_0 = -M^{-1}A\theta_0

(the :math:`\partial M` term only with SUPG), set to zero on Dirichlet rows. For
:math:`F = \sum_n f_n(\theta_n) + \mathcal R` its directional derivative is
:math:`\langle\mu, J\theta_0\rangle` with

.. math::

    \mu = \sum_n t_n (S^T)^n\,\nabla f_n(\theta_n),

computed by one backward Horner recursion :math:`b_n = t_n\nabla f_n + S^T b_{n+1}`,
:math:`\mu = S^Tb_1` (one transposed solve per step with the forward factorization).
The whole gradient is then a single assembly,

.. math::

    \nabla F_{\mathrm{sur}} = \nabla\mathcal R - \partial_c A^T[\nu, \theta_0] - \partial_c M^T[\nu, Q\theta_0],
    \qquad M^T\nu = \hat\mu,

so no forward trajectory is stored: only :math:`\nabla f_n` at the observation steps.
The surrogate is exact when :math:`J` and :math:`Q` commute and degrades as
:math:`t\,\|[Q, J]\|` grows (SPEC §1); :class:`FirstOrderSurrogate` reports it,
and callers compare it with :meth:`ReducedFunctional.value_and_gradient`.
"""

from __future__ import annotations

import dolfinx.fem as fem
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import _backend
from sensitivity.fem.adjoint import ReducedFunctional

__all__ = ["FirstOrderSurrogate"]


class FirstOrderSurrogate:
    """The first-order surrogate gradient of a :class:`ReducedFunctional`.

    Parameters
    ----------
    functional : ReducedFunctional
        The objective; its scheme, misfits and regularization are used.
    petsc_options : dict, optional
        Solver for the (transposed) mass matrix (default MUMPS LU).
    """

    def __init__(self, functional: ReducedFunctional, petsc_options=None):
        if not isinstance(functional, ReducedFunctional):
            raise InvalidArgumentError(f"functional must be a ReducedFunctional, got {type(functional).__name__}")
        self.functional = functional
        self._petsc_options = petsc_options
        self.stats: dict = {}

    def value_and_gradient(self) -> tuple[float, fem.Function]:
        """:math:`F(c)` (exact) and the surrogate gradient (a Function in the control space; collective)."""
        F = self.functional
        s, prob = F.scheme, F.problem
        # Forward: keep only the misfit gradients at the observation steps.
        grads: dict[int, PETSc.Vec] = {}
        total = [0.0]

        def record(n, theta):
            if any(m.active(n) for m in F.misfits):
                total[0] += F._misfit_value(n, theta)
                g = s.create_vector()
                g.set(0.0)
                F._add_misfit_gradient(n, theta, g)
                grads[n] = g

        s.run(F.theta0, F.nsteps, callback=record).destroy()
        # Backward Horner recursion for mu.
        b, rhs, y = s.create_vector(), s.create_vector(), s.create_vector()
        b.set(0.0)
        for n in range(F.nsteps, 0, -1):
            if n in grads:
                b.axpy(n * s.dt, grads[n])
            self._apply_transposed_step(b, rhs, y)
        mu = b
        s.set_dirichlet(mu, homogeneous=True)
        # nu = M^{-T} mu_hat;  gradient = -dA^T[nu, theta0] - dM^T[nu, Q theta0]
        mass_ksp = _backend.create_ksp(prob.M, self._petsc_options, "surrogate_mass")
        nu = s.create_vector()
        mass_ksp.solveTranspose(mu, nu)
        grad, work = F._new_control_vector(), F._new_control_vector()
        grad.set(0.0)
        grad.axpy(-1.0, prob.dA_adjoint_action(nu, F.theta0, work))
        if prob.supg:
            Atheta, Qtheta = s.create_vector(), s.create_vector()
            prob.A.mult(F.theta0, Atheta)
            mass_ksp.solve(Atheta, Qtheta)
            Qtheta.scale(-1.0)
            grad.axpy(-1.0, prob.dM_adjoint_action(nu, Qtheta, work))
            Atheta.destroy()
            Qtheta.destroy()
        value = total[0] + F._regularization_value()
        if F.regularization is not None:
            F.regularization.add_gradient(F.control, grad)
        out = F._as_function(grad, "surrogate_gradient")
        self.stats = {"stored_vectors": len(grads), "observation_steps": sorted(grads)}
        for v in (*grads.values(), b, rhs, y, nu, grad, work):
            v.destroy()
        mass_ksp.destroy()
        return value, out

    def _apply_transposed_step(self, b: PETSc.Vec, rhs: PETSc.Vec, y: PETSc.Vec) -> None:
        r"""``b <- S^T b`` with :math:`S = \tilde L^{-1}\tilde R`: :math:`S^T b = R^T\widehat{\tilde L^{-T}b}`."""
        s = self.functional.scheme
        s.ksp.solveTranspose(b, y)
        s.set_dirichlet(y, homogeneous=True)
        s.R.multTranspose(y, b)

    def gradient(self) -> fem.Function:
        return self.value_and_gradient()[1]
