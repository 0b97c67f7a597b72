r"""Measured errors of the Schrödinger surrogates of the state derivative against the exact tangent (docs/theory.md §3).

The finite-element counterpart of :func:`sensitivity.dense.surrogate_errors`: along one
trajectory, the secular surrogate :math:`t_nS^n\mathcal P(J)\psi_0` and the first-order one
:math:`t_nS^nJ\psi_0` are compared with the exact discrete tangent :math:`\rho_n`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dolfinx.fem as fem
import numpy as np
from petsc4py import PETSc

from sensitivity.dense.quantum_surrogates import ErrorCurves
from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import backend
from sensitivity.fem.derivatives.tangent import Tangent
from sensitivity.fem.surrogates.eigenbasis import Eigenbasis, project_perturbation
from sensitivity.fem.surrogates.mass import default_mass_options
from sensitivity.fem.timestepping.theta import ThetaScheme

__all__ = ["SurrogateStateErrors", "surrogate_state_errors"]


@dataclass(frozen=True)
class SurrogateStateErrors(ErrorCurves):
    r"""Errors of the surrogate state derivatives against the exact tangent :math:`\rho_n`, in the :math:`\mathbf M` norm.

    Attributes
    ----------
    times : numpy.ndarray, shape (m,)
    exact_norm : numpy.ndarray
        :math:`\|\rho_n\|_{\mathbf M}`.
    secular_error, first_order_error : numpy.ndarray
        :math:`\|t_nS^n\mathcal P(J)\psi_0 - \rho_n\|_{\mathbf M}` and :math:`\|t_nS^nJ\psi_0 - \rho_n\|_{\mathbf M}`.
    outside_fraction : float
        The part of :math:`\psi_0` outside the eigenbasis (:meth:`Eigenbasis.outside_fraction`).
    """

    outside_fraction: float


def surrogate_state_errors(scheme: ThetaScheme, psi0: fem.Function | PETSc.Vec, v: fem.Function,
                           steps: Sequence[int], nev: int, **eigen_options) -> SurrogateStateErrors:
    r"""Measure the secular and first-order surrogates of :math:`\rho_n = \partial w_n[v]` along one trajectory.

    The FE counterpart of :func:`sensitivity.dense.surrogate_errors`: one tangent run
    gives :math:`\rho_n`; the surrogates propagate :math:`\mathcal P(J)\psi_0` and
    :math:`J\psi_0 = -P\mathbf M^{-1}\partial\mathbf A[v]\psi_0` with the same θ-scheme and are
    scaled by :math:`t_n`. Expected (docs/theory.md §1): the secular error stays bounded, so its relative
    error falls like :math:`1/t`; the first-order error grows like :math:`t`.

    Parameters
    ----------
    scheme : ThetaScheme
        On a :class:`~sensitivity.fem.schrodinger.Schrodinger` problem.
    psi0 : dolfinx.fem.Function or petsc4py.PETSc.Vec
        Initial state, in the span of the ``nev`` lowest eigenpairs.
    v : dolfinx.fem.Function
        Direction in the potential's space.
    steps : sequence of int
        Steps :math:`n \ge 1` at which to measure.
    nev : int
        Eigenpairs of the secular surrogate; ``eigen_options`` go to :class:`Eigenbasis`.
    """
    prob = scheme.problem
    steps = sorted({int(n) for n in steps})
    if not steps or steps[0] < 1:
        raise InvalidArgumentError(f"steps must be positive integers, got {steps!r}")
    prob.control.check_direction(v)
    w0 = psi0.x.petsc_vec if isinstance(psi0, fem.Function) else psi0
    basis = Eigenbasis(prob, nev, **eigen_options)
    z = project_perturbation(basis, prob, v, w0, scale=basis.discrete_factor(scheme.dt, scheme.theta))
    dA, y = prob.dA(v), prob.create_vector()
    u = prob.create_vector()  # J psi0 = -P M^-1 dA psi0
    dA.mult(w0, y)
    ksp = backend.create_ksp(prob.M, default_mass_options(True), "secular_errors_mass")
    ksp.solve(y, u)
    u.scale(-1.0)
    scheme.set_dirichlet(u, homogeneous=True)
    nxt = prob.create_vector()
    rows = {"exact": [], "secular": [], "first_order": []}

    def record(n: int, theta: PETSc.Vec, rhos: list[PETSc.Vec]) -> None:
        if n == 0:
            return
        for vec in (z, u):  # one more θ-scheme step for each surrogate state
            scheme.step(vec, nxt)
            nxt.copy(vec)
        if n in steps:
            t = n * scheme.dt
            rows["exact"].append(prob.norm(rhos[0]))
            for name, vec in (("secular", z), ("first_order", u)):
                vec.copy(nxt)
                nxt.scale(t)
                nxt.axpy(-1.0, rhos[0])
                rows[name].append(prob.norm(nxt))

    tangent = Tangent(scheme, [v])
    wN, rhoN = tangent.run(w0, steps[-1], callback=record)
    outside = basis.outside_fraction(w0)
    for obj in (tangent, wN, *rhoN, basis, dA, y, z, u, nxt, ksp):
        obj.destroy()
    return SurrogateStateErrors(times=np.asarray(steps) * scheme.dt, exact_norm=np.asarray(rows["exact"]),
                                first_order_error=np.asarray(rows["first_order"]),
                                secular_error=np.asarray(rows["secular"]), outside_fraction=outside)
