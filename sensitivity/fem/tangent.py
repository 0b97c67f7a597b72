r"""Tangent (sensitivity) solver: :math:`\rho = \nabla_v S_u(t)\theta_0` for the discrete scheme.

The continuous tangent equation (SPEC §2; the seed's 4.6 has a sign error and a
missing :math:`\rho`) is :math:`\partial_t\rho = \kappa\Delta\rho - u\cdot\nabla\rho - v\cdot\nabla\theta`,
:math:`\rho(0) = 0`. Differentiating the θ-scheme of
:mod:`sensitivity.fem.propagator` exactly gives, on the free rows,

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

import numbers
from collections.abc import Callable, Sequence

import dolfinx.fem as fem
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem.propagator import ThetaScheme, _copy_in

__all__ = ["Tangent"]


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

        ``callback(n, theta_n, rhos_n)`` is called for n = 0..N.
        """
        if isinstance(nsteps, bool) or not isinstance(nsteps, numbers.Integral) or nsteps < 0:
            raise InvalidArgumentError(f"nsteps must be a non-negative integer, got {nsteps!r}")
        s = self.scheme
        th, dt = s.theta, s.dt
        x = s.create_vector()
        _copy_in(theta0, x)
        y = s.create_vector()
        rho = [s.create_vector() for _ in range(self.ndirections)]
        for r in rho:
            r.set(0.0)
        new = s.create_vector()
        mix = s.create_vector()  # theta*x_{n+1} + (1-theta)*x_n
        diff = s.create_vector()  # x_{n+1} - x_n
        rhs = s.create_vector()
        work = s.create_vector()
        if callback is not None:
            callback(0, x, rho)
        for n in range(1, nsteps + 1):
            s.step(x, y)
            x.copy(mix)  # mix = th*y + (1-th)*x
            mix.scale(1.0 - th)
            mix.axpy(th, y)
            if self.dM is not None:
                diff.waxpy(-1.0, x, y)
            for k in range(self.ndirections):
                s.R.mult(rho[k], rhs)
                self.dA[k].mult(mix, work)
                rhs.axpy(-dt, work)
                if self.dM is not None:
                    self.dM[k].mult(diff, work)
                    rhs.axpy(-1.0, work)
                s.set_dirichlet(rhs, homogeneous=True)
                s.solve_rows(rhs, new)
                new.copy(rho[k])
            x, y = y, x
            if callback is not None:
                callback(n, x, rho)
        for v in (y, new, mix, diff, rhs, work):
            v.destroy()
        return x, rho

    def destroy(self) -> None:
        for mat in self.dA + (self.dM or []):
            mat.destroy()
