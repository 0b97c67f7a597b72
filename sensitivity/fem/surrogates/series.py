r"""The order-K series surrogate of the derivative of a reduced objective (docs/theory.md §1–2, seed 1.5, 1.6).

The exact derivative of the discrete state, :math:`\rho_n = \nabla_v\theta_n`, is replaced by
a surrogate of :math:`\nabla_J e^{t_nQ}\theta_0` from docs/theory.md §1 applied to the finite-element
generator, with the one-step θ-scheme propagator :math:`S` standing in for
:math:`e^{\Delta t Q}` (:math:`t_n = n\Delta t`).

**Generator and direction.** :math:`Q = -M^{-1}A` and :math:`P` the projector that zeroes
the Dirichlet rows; the surrogates use :math:`\hat Q = PQ` and its derivative along a
control direction :math:`v`,

.. math::

    J = J(v) = \partial\hat Q[v] = -PM^{-1}\bigl(\partial A[v] + \partial M[v]\,Q\bigr)

(the :math:`\partial M` term only when the mass depends on the control, as with SUPG). Without Dirichlet conditions
:math:`P = I` and :math:`\hat Q = Q`.

**Order K** (:class:`SurrogateGradient`; seed 1.5 truncated, :math:`K = 0` is seed 1.6):

.. math::

    \rho_n \approx S^n\sum_{k=0}^{K}\frac{t_n^{k+1}}{(k+1)!}\,\mathrm{ad}_{-\hat Q}^k(J)\,\theta_0,\qquad
    \mathrm{ad}_{-\hat Q}^k(J) = \sum_{l=0}^{k}(-1)^l\binom kl \hat Q^lJ\hat Q^{k-l},

so the surrogate derivative of :math:`F = \sum_n f_n(\theta_n) + \mathcal R` along :math:`v` is

.. math::

    dF_K\cdot v = \langle\nabla\mathcal R, v\rangle + \sum_{k=0}^K\langle\mu_k, \mathrm{ad}^k(J)\theta_0\rangle,\qquad
    \mu_k = \sum_n \frac{t_n^{k+1}}{(k+1)!}(S^T)^n\nabla f_n(\theta_n).

The :math:`K + 1` vectors :math:`\mu_k` come from one backward Horner sweep
:math:`B \leftarrow S^T(B + [\tfrac{t_n}{1!}, \dots, \tfrac{t_n^{K+1}}{(K+1)!}]\otimes\nabla f_n)`,
one transposed block solve of :math:`K + 1` columns per step with the forward
factorization (``KSPMatSolveTranspose``). Grouping by the power of
:math:`\hat Q` acting on :math:`\theta_0`,

.. math::

    dF_K\cdot v - \langle\nabla\mathcal R, v\rangle = \sum_{m=0}^K\langle a_m, J x_m\rangle,\qquad
    x_m = \hat Q^m\theta_0,\quad
    a_m = \sum_{j=0}^{K-m}(-1)^j\binom{m+j}{j}(\hat Q^T)^j\mu_{m+j},

and :math:`\langle a, Jx\rangle = -\nu^T(\partial A[v]x + \partial M[v]Qx)`, :math:`M^T\nu = Pa`,
so the gradient needs :math:`K + 1` assemblies,

.. math::

    \nabla F_K = \nabla\mathcal R - \sum_{m=0}^K\bigl(\partial_cA^T[\nu_m, x_m] + \partial_cM^T[\nu_m, Qx_m]\bigr).

No forward trajectory is stored: only :math:`\nabla f_n` at the observation steps,
the :math:`2(K + 1)` block columns and :math:`O(K)` work vectors. The mass matrix is
solved iteratively (CG + Jacobi, GMRES + Jacobi with SUPG, where :math:`M` is not
symmetric), so the surrogate's peak memory stays that of the forward solve.

In a complex build (the Schrödinger module with native complex states) every transpose above
is the Hermitian one and every pairing the real part, as in :mod:`sensitivity.fem.derivatives.adjoint`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import dolfinx.fem as fem
from petsc4py import PETSc

from sensitivity.fem import backend
from sensitivity.fem.backend import dense_column
from sensitivity.fem.objective.reduced import ReducedFunctional
from sensitivity.fem.surrogates.base import Surrogate
from sensitivity.fem.surrogates.mass import MassOperator
from sensitivity.validation import integer

__all__ = ["FirstOrderSurrogate", "SurrogateGradient"]


class SurrogateGradient(Surrogate):
    r"""The order-K surrogate derivative of a :class:`ReducedFunctional` (docs/theory.md §1 "order K", seed 1.5).

    Parameters
    ----------
    functional : ReducedFunctional
        The objective; its scheme, misfits and regularization are used.
    order : int
        K >= 0, the last term of the truncated series; ``order=0`` is the
        first-order surrogate :math:`t_nS^nJ\theta_0` (seed 1.6).
    petsc_options : dict, optional
        Solver for the mass matrix (default :func:`default_mass_options`:
        CG + Jacobi, GMRES + Jacobi with SUPG, relative residual 1e-12).

    Attributes
    ----------
    stats : dict
        After :meth:`value_and_derivative`: ``order``, ``stored_vectors`` (misfit gradients
        kept from the forward sweep), ``observation_steps``, ``block_columns``,
        ``transposed_block_solves``, ``assemblies``, ``mass_solves``, ``mass_iterations``.

    Notes
    -----
    Exact when :math:`J` and :math:`\hat Q` commute. The first omitted term is
    :math:`\frac{t^{K+2}}{(K+2)!}\mathrm{ad}^{K+1}(J)`, so for short times each order gains
    a factor of about :math:`t\|\mathrm{ad}_{-\hat Q}\|/(K+2)` against the exact discrete
    gradient, down to the time-discretization floor (:math:`S^n` is not :math:`e^{t_nQ}`).
    Cost: one forward sweep, one backward sweep of transposed block solves with
    :math:`K + 1` columns, :math:`K(K+1)/2 + 2K + 1` mass solves (one more with SUPG) and
    :math:`K + 1` assemblies (twice that with SUPG).
    """

    def __init__(self, functional: ReducedFunctional, order: int = 0,
                 petsc_options: Mapping[str, Any] | None = None):
        super().__init__(functional)
        self.order = integer(order, "order", minimum=0)
        self._petsc_options = None if petsc_options is None else dict(petsc_options)

    # ------------------------------------------------------------------ derivative

    def value_and_derivative(self) -> tuple[float, fem.Function]:
        r""":math:`F(c)` (exact) and :math:`\nabla F_K` (the ℓ² derivative, a Function of the control space; collective)."""
        F = self.functional
        s, prob, K = F.scheme, F.problem, self.order
        grads: dict[int, PETSc.Vec] = {}
        total = [0.0]

        def record(n: int, theta: PETSc.Vec) -> None:
            if F.observed(n):
                total[0] += F.misfit_value(n, theta)
                if n > 0:  # t_0 = 0: step 0 does not enter the surrogate
                    g = s.create_vector()
                    g.set(0.0)
                    F.add_misfit_gradient(n, theta, g)
                    grads[n] = g

        s.run(F.initial_state, F.nsteps, callback=record).destroy()
        mus = self._horner(grads)
        mass = MassOperator(F, self._petsc_options)
        grad, work = F.control_space.create_vector(), F.control_space.create_vector()
        grad.set(0.0)
        x, q, a, nu = (s.create_vector() for _ in range(4))
        F.initial_state.copy(x)
        assemblies = 0
        for m in range(K + 1):
            # a_m = sum_j (-1)^j C(m+j, j) (Q^T)^j mu_{m+j}, by Horner in Q^T
            a.set(0.0)
            for j in range(K - m, -1, -1):
                if j < K - m:
                    mass.generator_transpose(a, a)
                a.axpy((-1.0) ** j * math.comb(m + j, j), mus[m + j])
            s.set_dirichlet(a, homogeneous=True)
            mass.solve(a, nu, transpose=True)  # nu_m = M^-T P a_m
            grad.axpy(-1.0, prob.dA_adjoint_action(nu, x, work))
            assemblies += 1
            if prob.mass_depends_on_control or m < K:
                mass.generator(x, q, project=False)  # Q x_m
            if prob.mass_depends_on_control:
                grad.axpy(-1.0, prob.dM_adjoint_action(nu, q, work))
                assemblies += 1
            if m < K:  # x_{m+1} = P Q x_m
                q.copy(x)
                s.set_dirichlet(x, homogeneous=True)
        value = total[0] + F.regularization_value()
        F.add_regularization_gradient(grad)
        out = F.control_space.function(grad, f"surrogate_gradient_order_{K}")
        self.stats = {
            "order": K,
            "stored_vectors": len(grads),
            "observation_steps": sorted(grads),
            "block_columns": K + 1,
            "transposed_block_solves": max(grads, default=0),
            "assemblies": assemblies,
            "mass_solves": mass.solves,
            "mass_iterations": mass.iterations,
        }
        for obj in (*grads.values(), *mus, grad, work, x, q, a, nu, mass):
            obj.destroy()
        return value, out

    def _horner(self, grads: dict[int, PETSc.Vec]) -> list[PETSc.Vec]:
        r""":math:`\mu_k = \sum_n \frac{t_n^{k+1}}{(k+1)!}(S^T)^n\nabla f_n`, k = 0..K, by one backward block sweep.

        :math:`S^T = \tilde R^T\tilde L^{-T} = R^TP\tilde L^{-T}`: a transposed block solve with the
        forward factorization, the Dirichlet rows zeroed, and one sparse-times-dense product.
        """
        s, K, dt = self.functional.scheme, self.order, self.functional.scheme.dt
        B, Y = s.create_block(K + 1), s.create_block(K + 1)
        product = False
        for n in range(max(grads, default=0), 0, -1):
            if n in grads:
                t = n * dt
                for k in range(K + 1):
                    with dense_column(B, k, "rw") as col:
                        col.axpy(t ** (k + 1) / math.factorial(k + 1), grads[n])
            backend.mat_solve_hermitian_transpose(s.ksp, B, Y)
            for k in range(K + 1):
                with dense_column(Y, k, "rw") as col:
                    s.set_dirichlet(col, homogeneous=True)
            if product:
                backend.hermitian_transpose_mat_mult(s.R, Y, B)
            else:  # the first product creates the matrix every later one reuses
                B.destroy()
                B = backend.hermitian_transpose_mat_mult(s.R, Y)
                product = True
        mus = []
        for k in range(K + 1):
            mu = s.create_vector()
            with dense_column(B, k, "r") as col:
                col.copy(mu)
            mus.append(mu)
        B.destroy()
        Y.destroy()
        return mus

    # ------------------------------------------------------------------ directional form

    def directional_derivative(self, v: fem.Function) -> float:
        r"""The surrogate :math:`dF_K\cdot v`, propagated forward (an independent check of the gradient; collective).

        Builds :math:`w_k = \mathrm{ad}_{-\hat Q}^k(J(v))\theta_0` from its binomial sum,
        propagates :math:`S^nw_k` alongside :math:`\theta_n` and accumulates
        :math:`\sum_n\sum_k \frac{t_n^{k+1}}{(k+1)!}\langle\nabla f_n(\theta_n), S^nw_k\rangle + \langle\nabla\mathcal R, v\rangle`.
        """
        F = self.functional
        s, prob, K = F.scheme, F.problem, self.order
        prob.control.check_direction(v)
        dA, dM = prob.dA(v), prob.dM(v)
        mass = MassOperator(F, self._petsc_options)
        ws = [s.create_vector() for _ in range(K + 1)]
        for w in ws:
            w.set(0.0)
        x, q, u, tmp = (s.create_vector() for _ in range(4))
        F.initial_state.copy(x)
        for m in range(K + 1):  # x = Q^m theta0
            if prob.mass_depends_on_control or m < K:
                mass.generator(x, q, project=False)
            mass.perturbation(dA, dM, x, q if prob.mass_depends_on_control else None, u)  # u = J x_m
            for l in range(K - m + 1):  # u = Q^l J x_m enters w_{m+l} with (-1)^l C(m+l, l)
                if l > 0:
                    mass.generator(u, tmp)
                    tmp.copy(u)
                ws[m + l].axpy((-1.0) ** l * math.comb(m + l, l), u)
            if m < K:
                q.copy(x)
                s.set_dirichlet(x, homogeneous=True)
        # Propagate [theta_n, S^n w_0, ..., S^n w_K] as one block: B = R X, Dirichlet rows, L X = B.
        X = s.create_block(K + 2)
        with dense_column(X, 0, "w") as col:
            F.initial_state.copy(col)
        for k, w in enumerate(ws):
            with dense_column(X, k + 1, "w") as col:
                w.copy(col)
        B = None
        g = s.create_vector()
        total = 0.0
        for n in range(1, F.nsteps + 1):
            B = s.R.matMult(X) if B is None else s.R.matMult(X, B)
            for j in range(K + 2):
                with dense_column(B, j, "rw") as col:
                    s.set_dirichlet(col, homogeneous=j > 0)
            s.solve_block(B, X)
            if F.observed(n):
                g.set(0.0)
                with dense_column(X, 0, "r") as theta:
                    F.add_misfit_gradient(n, theta, g)
                t = n * s.dt
                for k in range(K + 1):
                    with dense_column(X, k + 1, "r") as z:
                        total += t ** (k + 1) / math.factorial(k + 1) * g.dot(z).real
        for obj in (dA, *ws, x, q, u, tmp, g, X, mass):
            obj.destroy()
        if B is not None:
            B.destroy()
        if dM is not None:
            dM.destroy()
        return total + F.regularization_derivative(v)


class FirstOrderSurrogate(SurrogateGradient):
    r"""The first-order surrogate gradient (seed 1.6): :class:`SurrogateGradient` with ``order=0``.

    :math:`\nabla F_0 = \nabla\mathcal R - \partial_cA^T[\nu, \theta_0] - \partial_cM^T[\nu, Q\theta_0]`,
    :math:`M^T\nu = P\mu_0`, :math:`\mu_0 = \sum_n t_n(S^T)^n\nabla f_n`: one backward recursion and
    one assembly (two with SUPG).

    Parameters
    ----------
    functional : ReducedFunctional
    petsc_options : dict, optional
        Solver for the mass matrix (default :func:`default_mass_options`).
    """

    def __init__(self, functional: ReducedFunctional, petsc_options: Mapping[str, Any] | None = None):
        super().__init__(functional, order=0, petsc_options=petsc_options)
