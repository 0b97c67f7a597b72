r"""The secular surrogate of Schrödinger sensitivities, from a few eigenpairs (docs/theory.md §1 skew-Hermitian, §3).

**Secular surrogate** (:class:`SecularSurrogate`, on the eigenbasis of
:mod:`sensitivity.fem.surrogates.eigenbasis`; docs/theory.md §1: :math:`t\,e^{tA}\mathcal P(J)`,
:math:`\mathcal P(J) = W\mathrm{diag}(W^*JW)W^*` with degenerate eigenspaces kept whole). The
perturbation of the generator along :math:`v` is :math:`J = -iM^{-1}M_v`,
:math:`(M_v)_{ij} = \int v\phi_j\phi_i`, and with :math:`S^n` for :math:`e^{t_nQ}`

.. math::

    \rho_n \approx t_nS^n\mathcal P(J)\psi_0,\qquad
    \mathcal P(J)\psi_0 = \sum_kd_k(v)\phi_k,\qquad
    d_k(v) = -i\sum_{l\in C(k)}\langle\phi_k, M_v\phi_l\rangle\,c_l,

:math:`C(k)` the cluster of eigenvalues degenerate with :math:`E_k`. This keeps exactly the part
of the derivative that grows like :math:`t` (the frequency shifts
:math:`\partial E_k[v] = \langle\phi_k, M_v\phi_k\rangle` and their mixing inside degenerate
eigenspaces); the omitted off-diagonal part stays bounded in :math:`t`, so the relative error
falls like :math:`1/t`. :math:`\psi_0` must lie in the span of the computed eigenpairs; the part
outside is ignored and reported (``stats["outside_fraction"]``).

**Discrete time.** With :math:`S^n` in place of :math:`e^{t_nQ}` the secular part of the
*discrete* derivative is :math:`\partial(r_k^n) = -it_n\sigma_kr_k^n\,\partial E_k`,
:math:`\sigma_k = 1/((1 - (1-\vartheta)iE_k\Delta t)(1 + \vartheta iE_k\Delta t))`
(:meth:`Eigenbasis.discrete_factor`; :math:`1/(1 + E_k^2\Delta t^2/4)` for Crank–Nicolson,
:math:`\to 1` as :math:`\Delta t \to 0`), so the surrogate uses :math:`\sigma_kd_k` for
:math:`d_k`: without it the error of the surrogate against the exact discrete derivative would
grow like :math:`t\,E_k^2\Delta t^2/4`.

**Gradient.** A real-split misfit gradient :math:`g = (g_a, g_b)` pairs with
:math:`\sum_kz_k\phi_k` as :math:`\mathrm{Re}\sum_kz_k\overline{\gamma_k}`,
:math:`\gamma_k = \phi_k\cdot g_a + i\,\phi_k\cdot g_b`, so

.. math::

    dF_{\rm sec}\cdot v = \langle\nabla\mathcal R, v\rangle + \mathrm{Re}\sum_k\beta_kd_k(v),\qquad
    \beta_k = \sigma_k\sum_nt_nr_k^n\,\overline{\gamma_{n,k}},

accumulated during the forward sweep (no backward sweep; nothing but :math:`\beta` is stored),
and

.. math::

    \nabla F_{\rm sec} = \nabla\mathcal R + \sum_k\sum_{l\in C(k)}\mathrm{Im}(\beta_kc_l)\,
    \partial_c\langle\phi_k, M_v\phi_l\rangle,\qquad
    \langle\phi_k, M_v\phi_l\rangle = f_k^T\,\partial\mathbf A[v]\,e_l,

:math:`e_l = (\phi_l, 0)`, :math:`f_k = (0, \phi_k)`: one assembly per eigenpair. In a complex
build :math:`e_l = \phi_l` and :math:`f_k = i\phi_k` (the states :math:`\psi = \phi` and
:math:`\psi = i\phi`), every pairing is :math:`\mathrm{Re}(x^Hy)` and the same formulas hold. The first-order
surrogate :math:`t_nS^nJ\psi_0` for comparison is :class:`~sensitivity.fem.surrogates.series.FirstOrderSurrogate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dolfinx.fem as fem
import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem.models.schrodinger import Schrodinger
from sensitivity.fem.objective.reduced import ReducedFunctional
from sensitivity.fem.surrogates.base import Surrogate
from sensitivity.fem.surrogates.eigenbasis import Eigenbasis, project_perturbation
from sensitivity.validation import integer

__all__ = ["SecularSurrogate"]


class SecularSurrogate(Surrogate):
    r"""The secular surrogate gradient of a Schrödinger :class:`ReducedFunctional` (module docstring).

    Parameters
    ----------
    functional : ReducedFunctional
        Its problem must be a :class:`~sensitivity.fem.schrodinger.Schrodinger` generator and its
        initial state should lie in the span of the ``nev`` lowest eigenpairs.
    nev : int
        Number of eigenpairs (see :class:`Eigenbasis`).
    eigen_options : dict, optional
        Keyword arguments of :class:`Eigenbasis` (``target``, ``tol``, ``degeneracy_tol``,
        ``petsc_options``).

    Attributes
    ----------
    basis : Eigenbasis
        Recomputed when the control changes.
    stats : dict
        After :meth:`value_and_derivative`: ``eigenpairs``, ``energies``, ``cluster_sizes``,
        ``outside_fraction``, ``eigen_residual``, ``assemblies``, ``eigensolves`` (so far),
        ``stored_vectors`` (0).
    """

    def __init__(self, functional: ReducedFunctional, nev: int, *, eigen_options: Mapping[str, Any] | None = None):
        super().__init__(functional)
        if not isinstance(self.functional.problem, Schrodinger):
            raise InvalidArgumentError("the secular surrogate needs a Schrodinger problem, got "
                                       f"{type(self.functional.problem).__name__}")
        self.nev = integer(nev, "nev", minimum=1)
        self._eigen_options = dict(eigen_options or {})
        self.basis: Eigenbasis | None = None
        self._basis_control: np.ndarray | None = None
        self.eigensolves = 0

    def current_basis(self) -> Eigenbasis:
        """The eigenbasis of the current potential (recomputed when it changed; collective)."""
        F = self.functional
        values = F.control.x.array
        comm = F.problem.V.mesh.comm
        same = self._basis_control is not None and np.array_equal(values, self._basis_control)
        if self.basis is None or not comm.allreduce(same, op=MPI.LAND):
            if self.basis is not None:
                self.basis.destroy()
            self.basis = Eigenbasis(F.problem, self.nev, **self._eigen_options)
            self._basis_control = values.copy()
            self.eigensolves += 1
        return self.basis

    def value_and_derivative(self) -> tuple[float, fem.Function]:
        r""":math:`F(c)` (exact) and :math:`\nabla F_{\rm sec}` (the ℓ² derivative, a Function of the control space; collective)."""
        F = self.functional
        s, prob = F.scheme, F.problem
        basis = self.current_basis()
        c = basis.coefficients(F.initial_state)
        r = basis.amplification(s.dt, s.theta)
        beta = np.zeros(basis.size, dtype=complex)
        g = s.create_vector()
        total = [0.0]

        def record(n: int, theta: PETSc.Vec) -> None:
            if F.observed(n):
                total[0] += F.misfit_value(n, theta)
                if n > 0:
                    g.set(0.0)
                    F.add_misfit_gradient(n, theta, g)
                    beta[:] += n * s.dt * r**n * np.conj(basis.pairings(g))

        s.run(F.initial_state, F.nsteps, callback=record).destroy()
        beta *= basis.discrete_factor(s.dt, s.theta)
        grad, work = F.control_space.create_vector(), F.control_space.create_vector()
        grad.set(0.0)
        x = s.create_vector()
        for cluster in basis.clusters:
            for k in cluster:  # sum_l Im(beta_k c_l) f_k^T dA e_l = f_k^T dA x_k
                x.set(0.0)
                x.maxpy(np.imag(beta[k] * c[cluster]), [basis.real_modes[l] for l in cluster])
                grad.axpy(1.0, prob.dA_adjoint_action(basis.imag_modes[k], x, work))
        value = total[0] + F.regularization_value()
        F.add_regularization_gradient(grad)
        out = F.control_space.function(grad, "secular_surrogate_gradient")
        self.stats = {
            "eigenpairs": basis.size,
            "energies": basis.energies.copy(),
            "cluster_sizes": [len(cl) for cl in basis.clusters],
            "outside_fraction": basis.outside_fraction(F.initial_state),
            "eigen_residual": float(basis.residuals.max()),
            "assemblies": basis.size,
            "eigensolves": self.eigensolves,
            "stored_vectors": 0,
        }
        for obj in (g, grad, work, x):
            obj.destroy()
        return value, out

    def projected_perturbation(self, v: fem.Function, out: PETSc.Vec | None = None) -> PETSc.Vec:
        r""":math:`\mathcal P(J(v))\psi_0 = \sum_kd_k(v)\phi_k` in the real-split layout, from the assembled :math:`\partial\mathbf A[v]` (collective)."""
        F = self.functional
        F.problem.control.check_direction(v)
        return project_perturbation(self.current_basis(), F.problem, v, F.initial_state, out)

    def directional_derivative(self, v: fem.Function) -> float:
        r"""The surrogate :math:`dF_{\rm sec}\cdot v`, by propagating :math:`\mathcal P(J(v))\psi_0` with the
        θ-scheme itself (an independent check of the eigen-factor shortcut and of the gradient; collective)."""
        F = self.functional
        s = F.scheme
        F.problem.control.check_direction(v)
        basis = self.current_basis()
        z = project_perturbation(basis, F.problem, v, F.initial_state, scale=basis.discrete_factor(s.dt, s.theta))
        theta, z_next, theta_next, g = (s.create_vector() for _ in range(4))
        F.initial_state.copy(theta)
        total = 0.0
        for n in range(1, F.nsteps + 1):
            s.step(theta, theta_next)
            s.step(z, z_next)  # homogeneous walls: the same step propagates the perturbation
            theta, theta_next = theta_next, theta
            z, z_next = z_next, z
            if F.observed(n):
                g.set(0.0)
                F.add_misfit_gradient(n, theta, g)
                total += n * s.dt * g.dot(z).real
        for obj in (theta, z_next, theta_next, g, z):
            obj.destroy()
        return total + F.regularization_derivative(v)

    def destroy(self) -> None:
        if self.basis is not None:
            self.basis.destroy()
            self.basis = None
