r"""The long-time (dissipative asymptotics) surrogate of a no-flux problem (docs/theory.md §1–2, corrected seed Theorem 2.1).

**Asymptotic** (:class:`AsymptoticSurrogate`; docs/theory.md §1 dissipative asymptotics with the
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

from collections.abc import Mapping
from typing import Any

import dolfinx.fem as fem
from petsc4py import PETSc

from sensitivity.fem.objective.reduced import ReducedFunctional
from sensitivity.fem.surrogates.base import Surrogate
from sensitivity.fem.surrogates.group_inverse import GroupInverse, check_no_flux
from sensitivity.fem.surrogates.mass import MassOperator
from sensitivity.validation import positive

__all__ = ["AsymptoticSurrogate"]


class AsymptoticSurrogate(Surrogate):
    r"""The long-time (dissipative asymptotics) surrogate gradient of a no-flux problem (docs/theory.md §1).

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
        Mass solver of :meth:`directional_derivative` (default :func:`default_mass_options`).
    rtol : float
        Tolerance of the conservation check :math:`\|A^T\mathbf 1\|_\infty \le` rtol :math:`\|A\|_1`.

    Attributes
    ----------
    stats : dict
        After :meth:`value_and_derivative`: ``stored_vectors`` (2: :math:`G_0, G_1`),
        ``assemblies``, ``conservation_defect``, ``stationary_mean`` (:math:`\pi^T\theta_0`).
    """

    def __init__(self, functional: ReducedFunctional, petsc_options: Mapping[str, Any] | None = None,
                 *, mass_petsc_options: Mapping[str, Any] | None = None, rtol: float = 1e-10):
        super().__init__(functional)
        self.rtol = positive(rtol, "rtol")
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
            if F.observed(n):
                total[0] += F.misfit_value(n, theta)
                g.set(0.0)
                F.add_misfit_gradient(n, theta, g)
                G0.axpy(1.0, g)
                G1.axpy(n * s.dt, g)

        s.run(F.initial_state, F.nsteps, callback=record).destroy()
        g.destroy()
        return total[0], G0, G1

    def value_and_derivative(self) -> tuple[float, fem.Function]:
        r""":math:`F(c)` (exact) and :math:`\nabla F_\infty` (the ℓ² derivative, a Function of the control space; collective)."""
        F = self.functional
        prob = F.problem
        misfit, G0, G1 = self._sums()
        gi = GroupInverse(prob, self._petsc_options, rtol=self.rtol)
        mean0 = gi.mean(F.initial_state)  # pi^T theta0
        sG0, sG1 = G0.sum(), G1.sum()
        nu_pi = gi.ones.copy()  # M^-T pi = 1 / (1^T M 1)
        nu_pi.scale(1.0 / gi.mass)
        b, qb, y = (prob.create_vector() for _ in range(3))
        # (a) + (b) = -<pi, J b> with b = -(1^T G1)(pi^T theta0) 1 + (1^T G0) Q^# theta0,
        # Q b = (1^T G0)(I - Pi) theta0   (Q 1 = 0, Q Q^# = I - Pi)
        gi.apply(F.initial_state, b)
        b.scale(sG0)
        b.axpy(-sG1 * mean0, gi.ones)
        grad, work = F.control_space.create_vector(), F.control_space.create_vector()
        grad.set(0.0)
        assemblies = 0
        # <a, J b> = -<M^-T a, dA[v] b + dM[v] Q b>, and (a), (b) carry a minus sign each.
        grad.axpy(1.0, prob.dA_adjoint_action(nu_pi, b, work))
        assemblies += 1
        if prob.mass_depends_on_control:
            F.initial_state.copy(qb)
            gi.project(qb)
            qb.scale(sG0)
            grad.axpy(1.0, prob.dM_adjoint_action(nu_pi, qb, work))
            assemblies += 1
        # (c): -(pi^T theta0) <(Q^#)^T G0, J 1>  ->  +(pi^T theta0) dA^T[M^-T (Q^#)^T G0, 1]  (Q 1 = 0: no dM term)
        gi.dual_transpose(G0, y)
        grad.axpy(mean0, prob.dA_adjoint_action(y, gi.ones, work))
        assemblies += 1
        value = misfit + F.regularization_value()
        F.add_regularization_gradient(grad)
        out = F.control_space.function(grad, "asymptotic_surrogate_gradient")
        self.stats = {"stored_vectors": 2, "assemblies": assemblies, "conservation_defect": gi.defects,
                      "stationary_mean": mean0}
        for obj in (G0, G1, nu_pi, b, qb, y, grad, work, gi):
            obj.destroy()
        return value, out

    def directional_derivative(self, v: fem.Function) -> float:
        r"""The asymptotic surrogate :math:`dF_\infty\cdot v` by applying the formula to :math:`\theta_0` (collective).

        Forward counterpart of :meth:`value_and_derivative`: :math:`J` by mass solves,
        :math:`Q^\#` forward, :math:`\sum_n\langle\nabla f_n, (t_n\Pi J\Pi - \Pi JQ^\# - Q^\#J\Pi)\theta_0\rangle`.
        """
        F = self.functional
        prob = F.problem
        prob.control.check_direction(v)
        _, G0, G1 = self._sums()
        gi = GroupInverse(prob, self._petsc_options, rtol=self.rtol)
        mass = MassOperator(F, self._mass_options)
        dA, dM = prob.dA(v), prob.dM(v)
        J1, y, Jy, q, z = (prob.create_vector() for _ in range(5))
        zero = prob.create_vector()
        zero.set(0.0)
        mass.perturbation(dA, dM, gi.ones, zero, J1)  # J 1  (Q 1 = 0)
        gi.apply(F.initial_state, y)  # Q^# theta0
        F.initial_state.copy(q)
        gi.project(q)  # Q Q^# theta0 = (I - Pi) theta0
        mass.perturbation(dA, dM, y, q, Jy)
        mean0 = gi.mean(F.initial_state)
        gi.apply(J1, z)  # Q^# J 1
        total = (G1.sum() * gi.mean(J1) * mean0  # <G1, Pi J Pi theta0>
                 - G0.sum() * gi.mean(Jy)  # <G0, Pi J Q^# theta0>
                 - mean0 * G0.dot(z))  # <G0, Q^# J Pi theta0>
        for obj in (G0, G1, gi, mass, dA, J1, y, Jy, q, z, zero):
            obj.destroy()
        if dM is not None:
            dM.destroy()
        return total + F.regularization_derivative(v)
