r"""Surrogate velocity gradients: the order-K series and the long-time asymptotics (SPEC §1–2).

The exact derivative of the discrete state, :math:`\rho_n = \nabla_v\theta_n`, is replaced by
a surrogate of :math:`\nabla_J e^{t_nQ}\theta_0` from SPEC §1 applied to the finite-element
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
is the Hermitian one and every pairing the real part, as in :mod:`sensitivity.fem.adjoint`.

**Asymptotic** (:class:`AsymptoticSurrogate`; SPEC §1 dissipative asymptotics with the
group inverse, the corrected seed Theorem 2.1): for a conservative no-flux problem
(:mod:`sensitivity.fem.group_inverse`)

.. math::

    \nabla_Je^{tQ} \approx t\,\Pi J\Pi - \Pi JQ^\# - Q^\#J\Pi,

and with :math:`G_0 = \sum_n\nabla f_n`, :math:`G_1 = \sum_n t_n\nabla f_n` (no backward sweep),

.. math::

    dF_\infty\cdot v - \langle\nabla\mathcal R, v\rangle
      = (\mathbf 1^TG_1)(\pi^T\theta_0)\,\pi^TJ\mathbf 1 - (\mathbf 1^TG_0)\,\pi^TJQ^\#\theta_0
        - (\pi^T\theta_0)\,\langle (Q^\#)^TG_0, J\mathbf 1\rangle .

With :math:`M^{-T}\pi = \mathbf 1/(\mathbf 1^TM\mathbf 1)`, :math:`Q\mathbf 1 = 0` and
:math:`QQ^\# = I - \Pi` the gradient is two assemblies (three with SUPG) and one
transposed singular solve. :math:`J\mathbf 1 = 0` for every direction (so the
:math:`J\Pi` terms vanish), and :math:`\Pi J = 0` for divergence-free no-flux directions
(then the whole surrogate is :math:`\nabla\mathcal R`: the long-time state is the mean,
which such flows do not change); the general formula is evaluated regardless. (The
:math:`\partial M` pairing against :math:`M^{-T}\pi \propto \mathbf 1` vanishes as well, since the
SUPG term of :math:`\mathbf 1^T\partial M[v]` carries :math:`\nabla\sum_i\phi_i = 0`.)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dolfinx.fem as fem
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import _backend
from sensitivity.fem.adjoint import ReducedFunctional
from sensitivity.fem.group_inverse import GroupInverse, check_no_flux

__all__ = [
    "AsymptoticSurrogate",
    "FirstOrderSurrogate",
    "SurrogateGradient",
    "default_mass_options",
]


def default_mass_options(symmetric: bool) -> dict[str, Any]:
    r"""Iterative solver options for the mass matrix: CG + Jacobi for a symmetric :math:`M` (Galerkin),
    GMRES + Jacobi otherwise (SUPG); relative residual 1e-12 (unpreconditioned norm)."""
    if not symmetric:
        return {"ksp_type": "gmres", "ksp_gmres_restart": 100, "ksp_pc_side": "right", "pc_type": "jacobi",
                "ksp_rtol": 1e-12, "ksp_atol": 0.0, "ksp_max_it": 2000}
    return {"ksp_type": "cg", "ksp_norm_type": "unpreconditioned", "pc_type": "jacobi",
            "ksp_rtol": 1e-12, "ksp_atol": 0.0, "ksp_max_it": 2000}


def _check_functional(functional) -> ReducedFunctional:
    if not isinstance(functional, ReducedFunctional):
        raise InvalidArgumentError(f"functional must be a ReducedFunctional, got {type(functional).__name__}")
    return functional


def _check_order(order) -> int:
    if isinstance(order, bool) or not isinstance(order, numbers.Integral) or order < 0:
        raise InvalidArgumentError(f"order must be a non-negative integer, got {order!r}")
    return int(order)


@contextmanager
def _column(block: PETSc.Mat, j: int, mode: str) -> Iterator[PETSc.Vec]:
    """Column ``j`` of a dense matrix as a Vec view (``mode`` "r", "w" or "rw")."""
    vec = block.getDenseColumnVec(j, mode)
    try:
        yield vec
    finally:
        block.restoreDenseColumnVec(j, mode)


class _MassOperator:
    r""":math:`M^{-1}`, :math:`M^{-T}`, :math:`\hat Q = P(-M^{-1}A)`, :math:`\hat Q^T`, :math:`J(v)` (iterative mass solves)."""

    def __init__(self, functional: ReducedFunctional, petsc_options: Mapping[str, Any] | None):
        self.scheme = functional.scheme
        self.problem = functional.problem
        if petsc_options is None:
            M = self.problem.M
            options = default_mass_options(bool(M.isSymmetric(1e-14 * M.norm(PETSc.NormType.INFINITY))))
        else:
            options = petsc_options
        self.ksp = _backend.create_ksp(self.problem.M, options, "surrogate_mass")
        self._w1, self._w2 = self.scheme.create_vector(), self.scheme.create_vector()
        self.solves = 0
        self.iterations = 0

    def solve(self, b: PETSc.Vec, x: PETSc.Vec, *, transpose: bool = False) -> PETSc.Vec:
        """:math:`Mx = b` (or :math:`M^Tx = b`); ``b`` and ``x`` distinct (collective)."""
        if transpose:
            _backend.solve_hermitian_transpose(self.ksp, b, x)
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


class _SurrogateBase:
    """Shared plumbing: the functional, its regularization term and ``gradient``."""

    def __init__(self, functional: ReducedFunctional):
        self.functional = _check_functional(functional)
        self.stats: dict = {}

    def _regularization_gradient(self, out: PETSc.Vec) -> None:
        F = self.functional
        if F.regularization is not None:
            F.regularization.add_gradient(F.control, out)

    def _regularization_derivative(self, v: fem.Function) -> float:
        F = self.functional
        if F.regularization is None:
            return 0.0
        g = F._new_control_vector()
        g.set(0.0)
        F.regularization.add_gradient(F.control, g)
        value = g.dot(v.x.petsc_vec).real
        g.destroy()
        return value

    def gradient(self) -> fem.Function:
        """The surrogate gradient only (see ``value_and_gradient``; collective)."""
        return self.value_and_gradient()[1]

    def value_and_gradient(self) -> tuple[float, fem.Function]:  # pragma: no cover - abstract
        raise NotImplementedError


class SurrogateGradient(_SurrogateBase):
    r"""The order-K surrogate gradient of a :class:`ReducedFunctional` (SPEC §1 "order K", seed 1.5).

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
        After :meth:`value_and_gradient`: ``order``, ``stored_vectors`` (misfit gradients
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
        self.order = _check_order(order)
        self._petsc_options = None if petsc_options is None else dict(petsc_options)

    # ------------------------------------------------------------------ gradient

    def value_and_gradient(self) -> tuple[float, fem.Function]:
        r""":math:`F(c)` (exact) and :math:`\nabla F_K` (a Function in the control space; collective)."""
        F = self.functional
        s, prob, K = F.scheme, F.problem, self.order
        grads: dict[int, PETSc.Vec] = {}
        total = [0.0]

        def record(n: int, theta: PETSc.Vec) -> None:
            if any(m.active(n) for m in F.misfits):
                total[0] += F._misfit_value(n, theta)
                if n > 0:  # t_0 = 0: step 0 does not enter the surrogate
                    g = s.create_vector()
                    g.set(0.0)
                    F._add_misfit_gradient(n, theta, g)
                    grads[n] = g

        s.run(F.theta0, F.nsteps, callback=record).destroy()
        mus = self._horner(grads)
        mass = _MassOperator(F, self._petsc_options)
        grad, work = F._new_control_vector(), F._new_control_vector()
        grad.set(0.0)
        x, q, a, nu = (s.create_vector() for _ in range(4))
        F.theta0.copy(x)
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
        value = total[0] + F._regularization_value()
        self._regularization_gradient(grad)
        out = F._as_function(grad, f"surrogate_gradient_order_{K}")
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
                    with _column(B, k, "rw") as col:
                        col.axpy(t ** (k + 1) / math.factorial(k + 1), grads[n])
            _backend.mat_solve_hermitian_transpose(s.ksp, B, Y)
            for k in range(K + 1):
                with _column(Y, k, "rw") as col:
                    s.set_dirichlet(col, homogeneous=True)
            if product:
                _backend.hermitian_transpose_mat_mult(s.R, Y, B)
            else:  # the first product creates the matrix every later one reuses
                B.destroy()
                B = _backend.hermitian_transpose_mat_mult(s.R, Y)
                product = True
        mus = []
        for k in range(K + 1):
            mu = s.create_vector()
            with _column(B, k, "r") as col:
                col.copy(mu)
            mus.append(mu)
        B.destroy()
        Y.destroy()
        return mus

    # ------------------------------------------------------------------ directional form

    def derivative(self, v: fem.Function) -> float:
        r"""The surrogate :math:`dF_K\cdot v`, propagated forward (an independent check of the gradient; collective).

        Builds :math:`w_k = \mathrm{ad}_{-\hat Q}^k(J(v))\theta_0` from its binomial sum,
        propagates :math:`S^nw_k` alongside :math:`\theta_n` and accumulates
        :math:`\sum_n\sum_k \frac{t_n^{k+1}}{(k+1)!}\langle\nabla f_n(\theta_n), S^nw_k\rangle + \langle\nabla\mathcal R, v\rangle`.
        """
        F = self.functional
        s, prob, K = F.scheme, F.problem, self.order
        prob.control.check_direction(v)
        dA, dM = prob.dA(v), prob.dM(v)
        mass = _MassOperator(F, self._petsc_options)
        ws = [s.create_vector() for _ in range(K + 1)]
        for w in ws:
            w.set(0.0)
        x, q, u, tmp = (s.create_vector() for _ in range(4))
        F.theta0.copy(x)
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
        with _column(X, 0, "w") as col:
            F.theta0.copy(col)
        for k, w in enumerate(ws):
            with _column(X, k + 1, "w") as col:
                w.copy(col)
        B = None
        g = s.create_vector()
        total = 0.0
        for n in range(1, F.nsteps + 1):
            B = s.R.matMult(X) if B is None else s.R.matMult(X, B)
            for j in range(K + 2):
                with _column(B, j, "rw") as col:
                    s.set_dirichlet(col, homogeneous=j > 0)
            s.solve_block(B, X)
            if any(m.active(n) for m in F.misfits):
                g.set(0.0)
                with _column(X, 0, "r") as theta:
                    F._add_misfit_gradient(n, theta, g)
                t = n * s.dt
                for k in range(K + 1):
                    with _column(X, k + 1, "r") as z:
                        total += t ** (k + 1) / math.factorial(k + 1) * g.dot(z).real
        for obj in (dA, *ws, x, q, u, tmp, g, X, mass):
            obj.destroy()
        if B is not None:
            B.destroy()
        if dM is not None:
            dM.destroy()
        return total + self._regularization_derivative(v)


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


class AsymptoticSurrogate(_SurrogateBase):
    r"""The long-time (dissipative asymptotics) surrogate gradient of a no-flux problem (SPEC §1).

    Replaces :math:`\nabla_Je^{t_nQ}\theta_0` by :math:`(t_n\Pi J\Pi - \Pi JQ^\# - Q^\#J\Pi)\theta_0`
    (the corrected seed Theorem 2.1; error :math:`O((1+t)e^{-\kappa t})` with :math:`\kappa` the
    spectral gap). See the module docstring for the gradient formula.

    Parameters
    ----------
    functional : ReducedFunctional
        Its problem must have no Dirichlet conditions and a conservative velocity
        (:math:`\mathbf 1^TA = 0`; checked here and at every evaluation).
    petsc_options : dict, optional
        Solver of the singular :math:`A` (see :class:`~sensitivity.fem.group_inverse.GroupInverse`).
    mass_petsc_options : dict, optional
        Mass solver of :meth:`derivative` (default :func:`default_mass_options`).
    rtol : float
        Tolerance of the conservation check :math:`\|A^T\mathbf 1\|_\infty \le` rtol :math:`\|A\|_1`.

    Attributes
    ----------
    stats : dict
        After :meth:`value_and_gradient`: ``stored_vectors`` (2: :math:`G_0, G_1`),
        ``assemblies``, ``conservation_defect``, ``stationary_mean`` (:math:`\pi^T\theta_0`).
    """

    def __init__(self, functional: ReducedFunctional, petsc_options: Mapping[str, Any] | None = None,
                 *, mass_petsc_options: Mapping[str, Any] | None = None, rtol: float = 1e-10):
        super().__init__(functional)
        self.rtol = float(rtol)
        check_no_flux(self.functional.problem, self.rtol, "the asymptotic surrogate")
        self._petsc_options = None if petsc_options is None else dict(petsc_options)
        self._mass_options = None if mass_petsc_options is None else dict(mass_petsc_options)

    def _sums(self) -> tuple[float, PETSc.Vec, PETSc.Vec]:
        r"""One forward sweep: the misfit value, :math:`G_0 = \sum_n\nabla f_n`, :math:`G_1 = \sum_n t_n\nabla f_n`."""
        F = self.functional
        s = F.scheme
        G0, G1, g = s.create_vector(), s.create_vector(), s.create_vector()
        G0.set(0.0)
        G1.set(0.0)
        total = [0.0]

        def record(n: int, theta: PETSc.Vec) -> None:
            if any(m.active(n) for m in F.misfits):
                total[0] += F._misfit_value(n, theta)
                g.set(0.0)
                F._add_misfit_gradient(n, theta, g)
                G0.axpy(1.0, g)
                G1.axpy(n * s.dt, g)

        s.run(F.theta0, F.nsteps, callback=record).destroy()
        g.destroy()
        return total[0], G0, G1

    def value_and_gradient(self) -> tuple[float, fem.Function]:
        r""":math:`F(c)` (exact) and :math:`\nabla F_\infty` (a Function in the control space; collective)."""
        F = self.functional
        prob = F.problem
        misfit, G0, G1 = self._sums()
        gi = GroupInverse(prob, self._petsc_options, rtol=self.rtol)
        mean0 = gi.mean(F.theta0)  # pi^T theta0
        sG0, sG1 = G0.sum(), G1.sum()
        nu_pi = gi.ones.copy()  # M^-T pi = 1 / (1^T M 1)
        nu_pi.scale(1.0 / gi.mass)
        b, qb, y = (prob.create_vector() for _ in range(3))
        # (a) + (b) = -<pi, J b> with b = -(1^T G1)(pi^T theta0) 1 + (1^T G0) Q^# theta0,
        # Q b = (1^T G0)(I - Pi) theta0   (Q 1 = 0, Q Q^# = I - Pi)
        gi.apply(F.theta0, b)
        b.scale(sG0)
        b.axpy(-sG1 * mean0, gi.ones)
        grad, work = F._new_control_vector(), F._new_control_vector()
        grad.set(0.0)
        assemblies = 0
        # <a, J b> = -<M^-T a, dA[v] b + dM[v] Q b>, and (a), (b) carry a minus sign each.
        grad.axpy(1.0, prob.dA_adjoint_action(nu_pi, b, work))
        assemblies += 1
        if prob.mass_depends_on_control:
            F.theta0.copy(qb)
            gi.project(qb)
            qb.scale(sG0)
            grad.axpy(1.0, prob.dM_adjoint_action(nu_pi, qb, work))
            assemblies += 1
        # (c): -(pi^T theta0) <(Q^#)^T G0, J 1>  ->  +(pi^T theta0) dA^T[M^-T (Q^#)^T G0, 1]  (Q 1 = 0: no dM term)
        gi.dual_transpose(G0, y)
        grad.axpy(mean0, prob.dA_adjoint_action(y, gi.ones, work))
        assemblies += 1
        value = misfit + F._regularization_value()
        self._regularization_gradient(grad)
        out = F._as_function(grad, "asymptotic_surrogate_gradient")
        self.stats = {"stored_vectors": 2, "assemblies": assemblies, "conservation_defect": gi.defects,
                      "stationary_mean": mean0}
        for obj in (G0, G1, nu_pi, b, qb, y, grad, work, gi):
            obj.destroy()
        return value, out

    def derivative(self, v: fem.Function) -> float:
        r"""The asymptotic surrogate :math:`dF_\infty\cdot v` by applying the formula to :math:`\theta_0` (collective).

        Forward counterpart of :meth:`value_and_gradient`: :math:`J` by mass solves,
        :math:`Q^\#` forward, :math:`\sum_n\langle\nabla f_n, (t_n\Pi J\Pi - \Pi JQ^\# - Q^\#J\Pi)\theta_0\rangle`.
        """
        F = self.functional
        prob = F.problem
        prob.control.check_direction(v)
        _, G0, G1 = self._sums()
        gi = GroupInverse(prob, self._petsc_options, rtol=self.rtol)
        mass = _MassOperator(F, self._mass_options)
        dA, dM = prob.dA(v), prob.dM(v)
        J1, y, Jy, q, z = (prob.create_vector() for _ in range(5))
        zero = prob.create_vector()
        zero.set(0.0)
        mass.perturbation(dA, dM, gi.ones, zero, J1)  # J 1  (Q 1 = 0)
        gi.apply(F.theta0, y)  # Q^# theta0
        F.theta0.copy(q)
        gi.project(q)  # Q Q^# theta0 = (I - Pi) theta0
        mass.perturbation(dA, dM, y, q, Jy)
        mean0 = gi.mean(F.theta0)
        gi.apply(J1, z)  # Q^# J 1
        total = (G1.sum() * gi.mean(J1) * mean0  # <G1, Pi J Pi theta0>
                 - G0.sum() * gi.mean(Jy)  # <G0, Pi J Q^# theta0>
                 - mean0 * G0.dot(z))  # <G0, Q^# J Pi theta0>
        for obj in (G0, G1, gi, mass, dA, J1, y, Jy, q, z, zero):
            obj.destroy()
        if dM is not None:
            dM.destroy()
        return total + self._regularization_derivative(v)
