r"""Tangent (sensitivity) solver: :math:`\rho = \nabla_v S_u(t)\theta_0` for the discrete scheme.

The continuous tangent equation (docs/theory.md §2; the seed's 4.6 has a sign error and a
missing :math:`\rho`) is :math:`\partial_t\rho = \kappa\Delta\rho - u\cdot\nabla\rho - v\cdot\nabla\theta`,
:math:`\rho(0) = 0`. Differentiating the θ-scheme of
:mod:`sensitivity.fem.timestepping.theta` exactly gives, on the free rows,

.. math::

    L\rho_{n+1} = R\rho_n - \bigl[\partial M[v](\theta_{n+1}-\theta_n)
                 + \Delta t\,\partial A[v](\vartheta\theta_{n+1} + (1-\vartheta)\theta_n)\bigr],

and :math:`\rho_{n+1} = 0` on Dirichlet rows. For Crank–Nicolson without SUPG this is
:math:`(M + \tfrac{\Delta t}{2}A)\rho_{n+1} = (M - \tfrac{\Delta t}{2}A)\rho_n - \tfrac{\Delta t}{2}C(v)(\theta_n + \theta_{n+1})`.
It reuses the forward factorization :math:`L`; the derivative matrices
:math:`\partial A[v]`, :math:`\partial M[v]` are assembled once per direction.
Because it differentiates the discrete scheme, finite differences of the solver
agree with it to :math:`O(\varepsilon^2)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dolfinx.fem as fem
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem.backend import dense_column
from sensitivity.fem.timestepping.theta import ThetaScheme, copy_state
from sensitivity.validation import integer

__all__ = ["Tangent", "tangent_derivative"]


class Tangent:
    r"""Tangents :math:`\rho_k(t_n)` for directions :math:`v_1..v_K`, sharing the forward factorization.

    Parameters
    ----------
    scheme : ThetaScheme
        The forward propagator (its operators and solver are reused).
    directions : sequence of dolfinx.fem.Function
        Directions in the control space.
    """

    def __init__(self, scheme: ThetaScheme, directions: Sequence[fem.Function]):
        if not isinstance(scheme, ThetaScheme):
            raise InvalidArgumentError(f"scheme must be a ThetaScheme, got {type(scheme).__name__}")
        directions = list(directions)
        if not directions:
            raise InvalidArgumentError("at least one direction is needed")
        self.scheme = scheme
        problem = scheme.problem
        for k, v in enumerate(directions):
            problem.control.check_direction(v, f"directions[{k}]")
        self.dA = [problem.dA(v) for v in directions]
        dM = [problem.dM(v) for v in directions]
        self.dM = dM if dM[0] is not None else None

    @property
    def ndirections(self) -> int:
        return len(self.dA)

    def run(
        self,
        theta0: fem.Function | PETSc.Vec,
        nsteps: int,
        *,
        callback: Callable[[int, PETSc.Vec, list[PETSc.Vec]], None] | None = None,
    ) -> tuple[PETSc.Vec, list[PETSc.Vec]]:
        r"""Advance forward and tangents together; return :math:`(\theta_N, [\rho_{k,N}])`.

        ``callback(n, theta_n, rhos_n)`` is called for n = 0..N (collective code may run in it).

        Notes
        -----
        The forward state and the K tangents are solved as one block
        :math:`L[\theta_{n+1}, \rho_{1,n}, \dots, \rho_{K,n}] = B_n` (one
        ``KSPMatSolve`` per step), pipelined: the right-hand side of
        :math:`\rho_{n}` needs :math:`\theta_{n}` and :math:`\theta_{n-1}`, both known
        when :math:`\theta_{n+1}` is solved for. This makes N + 1 block solves of
        K + 1 columns instead of N(K + 1) single solves.
        """
        nsteps = integer(nsteps, "nsteps", minimum=0)
        s = self.scheme
        K, th, dt = self.ndirections, s.theta, s.dt
        B, X = s.create_block(K + 1), s.create_block(K + 1)
        prev, cur, mix, diff, work = (s.create_vector() for _ in range(5))
        copy_state(theta0, cur)
        rhos = [s.create_vector() for _ in range(K)]
        # At the start of iteration n: cur = theta_{n-1}, prev = theta_{n-2},
        # X[:, 1 + k] = rho_{k, n-2}.  The block solve gives theta_n and rho_{k, n-1}.
        for n in range(1, nsteps + 2):
            with dense_column(B, 0, "w") as b:
                if n <= nsteps:
                    s.R.mult(cur, b)
                    s.set_dirichlet(b)
                else:  # the last solve only completes rho_N
                    b.set(0.0)
            if n >= 2:
                mix.axpby(th, 0.0, cur)  # theta * theta_{n-1} + (1 - theta) * theta_{n-2}
                mix.axpy(1.0 - th, prev)
                if self.dM is not None:
                    diff.waxpy(-1.0, prev, cur)
            for k in range(K):
                with dense_column(X, 1 + k, "r") as rho, dense_column(B, 1 + k, "w") as b:
                    if n == 1:  # rho_0 = 0
                        b.set(0.0)
                        continue
                    s.R.mult(rho, b)
                    self.dA[k].mult(mix, work)
                    b.axpy(-dt, work)
                    if self.dM is not None:
                        self.dM[k].mult(diff, work)
                        b.axpy(-1.0, work)
                    s.set_dirichlet(b, homogeneous=True)
            s.solve_block(B, X)
            if callback is not None or n == nsteps + 1:
                for k in range(K):
                    with dense_column(X, 1 + k, "r") as rho:
                        rho.copy(rhos[k])
            if callback is not None:
                callback(n - 1, cur, rhos)
            if n <= nsteps:
                prev, cur = cur, prev
                with dense_column(X, 0, "r") as x:
                    x.copy(cur)
        for obj in (B, X, prev, mix, diff, work):
            obj.destroy()
        return cur, rhos

    def destroy(self) -> None:
        for mat in self.dA + (self.dM or []):
            mat.destroy()


def tangent_derivative(objective, v: fem.Function) -> float:
    r""":math:`dF(c)[v] = \sum_n\langle\nabla f_n(\theta_n), \rho_n(v)\rangle + \langle\nabla\mathcal R, v\rangle` by one tangent run.

    The independent check of an adjoint derivative: forward in time, one direction, no
    backward sweep (collective). ``objective`` is used through the public methods of
    :class:`~sensitivity.fem.objective.reduced.ReducedFunctional` (``scheme``,
    ``initial_state``, ``nsteps``, ``observed``, ``add_misfit_gradient``,
    ``regularization_derivative``).
    """
    objective.control_space.check(v)
    tangent = Tangent(objective.scheme, [v])
    g = objective.scheme.create_vector()
    total = [0.0]

    def accumulate(n, theta, rhos):
        if objective.observed(n):
            g.set(0.0)
            objective.add_misfit_gradient(n, theta, g)
            total[0] += g.dot(rhos[0]).real  # Re(rho^H g): a real objective of a complex state

    thetaN, rhos = tangent.run(objective.initial_state, objective.nsteps, callback=accumulate)
    for obj in (thetaN, *rhos, g, tangent):
        obj.destroy()
    return total[0] + objective.regularization_derivative(v)
