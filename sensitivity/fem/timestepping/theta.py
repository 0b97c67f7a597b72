r"""The propagator :math:`S_u(t)`: the θ-scheme time stepper (docs/theory.md §2).

For :math:`M\theta' = -A\theta` and step :math:`\Delta t`, the θ-scheme
(:math:`\vartheta = 1/2` Crank–Nicolson, the default; :math:`\vartheta = 1` backward Euler) is

.. math::

    (M + \vartheta\Delta t A)\,\theta_{n+1} = (M - (1-\vartheta)\Delta t A)\,\theta_n

on the free rows, and :math:`\theta_{n+1} = g` on Dirichlet rows. The left
operator :math:`L` is assembled and factored (or its preconditioner set up) once
and reused for every step and every right-hand side, including the tangent's
(:mod:`sensitivity.fem.derivatives.tangent`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import dolfinx.fem as fem
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import backend
from sensitivity.fem.models.base import Generator
from sensitivity.validation import finite_vector, in_range, integer, positive

__all__ = ["ThetaScheme", "copy_state"]


class ThetaScheme:
    r"""θ-scheme propagator for a :class:`~sensitivity.fem.models.base.Generator` (advection–diffusion, Schrödinger).

    Parameters
    ----------
    problem : Generator
    dt : float
        Time step, > 0.
    theta : float
        Implicitness in [1/2, 1]: 0.5 Crank–Nicolson (default), 1 backward Euler.
    petsc_options : dict, optional
        Options of the linear solver for :math:`L = M + \vartheta\Delta t A`
        (default MUMPS LU; e.g. ``{"ksp_type": "gmres", "pc_type": "gamg"}`` or
        ``{"ksp_type": "gmres", "pc_type": "asm", "sub_pc_type": "ilu"}``).

    Notes
    -----
    Call :meth:`refresh` after ``problem.update()`` (a new velocity) to rebuild
    the operators; the solver object is reused.
    """

    def __init__(
        self,
        problem: Generator,
        dt: float,
        *,
        theta: float = 0.5,
        petsc_options: Mapping[str, Any] | None = None,
    ):
        if not isinstance(problem, Generator):
            raise InvalidArgumentError(f"problem must be a Generator (e.g. AdvectionDiffusion), got {type(problem).__name__}")
        self.problem = problem
        self.dt = positive(dt, "dt")
        self.theta = in_range(theta, "theta", 0.5, 1.0)
        # Owned Dirichlet rows, local (for vectors) and global (for MatZeroRows).
        self._bc_local, self._g_values = problem.dirichlet_rows()
        self._bc_global = problem.dirichlet_global_rows(self._bc_local)
        self.L = problem.M.duplicate(copy=True)
        self.R = problem.M.duplicate(copy=True)
        self._fill_operators()
        self.ksp = backend.create_ksp(self.L, petsc_options, "theta_scheme")
        self._b = self.L.createVecLeft()

    def _fill_operators(self) -> None:
        M, A = self.problem.M, self.problem.A
        structure = PETSc.Mat.Structure.DIFFERENT_NONZERO_PATTERN
        M.copy(self.L, structure)
        self.L.axpy(self.theta * self.dt, A, structure)
        M.copy(self.R, structure)
        self.R.axpy(-(1.0 - self.theta) * self.dt, A, structure)
        self.L.zeroRows(self._bc_global, diag=1.0)

    def refresh(self) -> None:
        """Rebuild :math:`L, R` from the problem's current matrices and refactor (collective)."""
        self._fill_operators()
        self.ksp.setOperators(self.L)
        backend.set_up(self.ksp, "theta_scheme")

    def create_vector(self) -> PETSc.Vec:
        return self.L.createVecRight()

    def set_dirichlet(self, b: PETSc.Vec, homogeneous: bool = False) -> None:
        """Put the Dirichlet values (or zeros) into the owned entries of ``b``."""
        b.array[self._bc_local] = 0.0 if homogeneous else self._g_values

    def solve_rows(self, b: PETSc.Vec, out: PETSc.Vec) -> None:
        """Solve :math:`L x = b` with the shared factorization (collective)."""
        self.ksp.solve(b, out)

    def create_block(self, ncols: int) -> PETSc.Mat:
        """A dense matrix of ``ncols`` columns distributed like the state (for :meth:`solve_block`)."""
        nloc, n = self.L.getLocalSize()[0], self.L.getSize()[0]
        block = PETSc.Mat().createDense([(nloc, n), (PETSc.DECIDE, ncols)], comm=self.L.getComm())
        block.setUp()
        block.zeroEntries()
        block.assemble()
        return block

    def solve_block(self, B: PETSc.Mat, X: PETSc.Mat) -> None:
        """Solve :math:`LX = B` for all columns at once (``KSPMatSolve``; collective).

        With a direct solver (MUMPS) the triangular solves of all columns share
        one pass over the factors, which is much cheaper than one solve per column.
        """
        self.ksp.matSolve(B, X)

    def step(self, x: PETSc.Vec, out: PETSc.Vec) -> PETSc.Vec:
        r"""One step :math:`\theta_n \mapsto \theta_{n+1}` (collective); ``x`` and ``out`` distinct."""
        self.R.mult(x, self._b)
        self.set_dirichlet(self._b)
        self.solve_rows(self._b, out)
        return out

    def run(
        self,
        theta0: fem.Function | PETSc.Vec,
        nsteps: int,
        *,
        callback: Callable[[int, PETSc.Vec], None] | None = None,
    ) -> PETSc.Vec:
        """Advance ``nsteps`` steps from ``theta0``; return :math:`\\theta_{N}` (a new vector).

        ``callback(n, theta_n)`` is called for n = 0..N (collective code may run in it).
        """
        nsteps = integer(nsteps, "nsteps", minimum=0)
        x = self.create_vector()
        copy_state(theta0, x)
        y = self.create_vector()
        if callback is not None:
            callback(0, x)
        for n in range(1, nsteps + 1):
            self.step(x, y)
            x, y = y, x
            if callback is not None:
                callback(n, x)
        y.destroy()
        return x

    def destroy(self) -> None:
        for obj in (self.ksp, self.L, self.R, self._b):
            obj.destroy()


def copy_state(src: fem.Function | PETSc.Vec, dst: PETSc.Vec) -> PETSc.Vec:
    """Copy a state (a Function in the state space, or a PETSc Vec of its size) into ``dst``; raise on every
    rank if it is not finite (collective)."""
    vec = src.x.petsc_vec if isinstance(src, fem.Function) else src
    if not isinstance(vec, PETSc.Vec) or vec.getSize() != dst.getSize():
        raise InvalidArgumentError(
            f"initial state must be a Function in the theta space or a PETSc Vec of size {dst.getSize()}"
        )
    vec.copy(dst)
    return finite_vector(dst, "the initial state")
