r"""The group inverse of the finite-element generator of a no-flux problem (docs/theory.md §1–2).

Without Dirichlet conditions and with a conservative velocity (:math:`u\cdot n = 0`
on the walls, :math:`\operatorname{div}u = 0`, e.g. a stream function constant on
the boundary) the operator matrix has the constants as its kernel on both sides,

.. math::

    A\mathbf 1 = 0,\qquad \mathbf 1^TA = 0,

so :math:`Q = -M^{-1}A` is a rate matrix in the :math:`M` inner product (docs/theory.md §2):
:math:`Q\mathbf 1 = 0`, and its stationary vector (:math:`\pi^TQ = 0`, :math:`\pi^T\mathbf 1 = 1`) is

.. math::

    \pi = \frac{M^Tw}{\mathbf 1^TM^Tw},\qquad A^Tw = 0,\quad w = \mathbf 1,

i.e. :math:`\pi^T\theta` is the mean of :math:`\theta` (with SUPG, :math:`M^T\mathbf 1` is still
the plain :math:`\int\phi_j`). With :math:`\Pi = \mathbf 1\pi^T` the group inverse
:math:`Q^\# = (Q + \Pi)^{-1} - \Pi` (docs/theory.md §1, the corrected seed Theorem 2.1) is applied
through its defining equations, :math:`Q^\#y = x` with

.. math::

    Qx = (I - \Pi)y,\quad \Pi x = 0
    \quad\Longleftrightarrow\quad
    Ax = -M(I - \Pi)y \;\text{(consistent: } \mathbf 1^TM(I-\Pi) = 0\text{)},\quad x \leftarrow x - \mathbf 1\,\pi^Tx,

and its transpose, :math:`(Q^\#)^Tz = M^Ty` with

.. math::

    A^Ty' = -(I - \Pi^T)z,\qquad y = y' - \mathbf 1\,\frac{(M\mathbf 1)^Ty'}{\mathbf 1^TM\mathbf 1}
    \quad(\text{so } \mathbf 1^T(Q^\#)^Tz = 0),

where :math:`y = M^{-T}(Q^\#)^Tz` itself is what gradient pairings need (:meth:`GroupInverse.dual_transpose`).

**Singular solves.** Both systems are solved with one LU factorization of the
singular :math:`A` by MUMPS with null-pivot detection (``mat_mumps_icntl_24: 1``):
the kernel is one-dimensional on both sides, so MUMPS finds exactly one null
pivot, returns one solution of the consistent system, and the projection above
fixes the free constant. One factorization serves :math:`Q^\#` and
:math:`(Q^\#)^T` (a transposed solve), exactly and independently of the Péclet
number, which a Krylov method with an incomplete factorization would not
guarantee for a non-symmetric, advection-dominated :math:`A`. The constant
:class:`PETSc.NullSpace` is attached to (a copy of) :math:`A` on both sides as well,
so ``petsc_options`` may select a Krylov solver instead. Every solve is checked
by its residual.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import backend
from sensitivity.fem.models.base import Generator

__all__ = ["DEFAULT_GROUP_INVERSE_OPTIONS", "GroupInverse", "conservation_defect"]

#: MUMPS LU of the singular operator with null-pivot detection.
DEFAULT_GROUP_INVERSE_OPTIONS: dict[str, Any] = {
    "ksp_type": "preonly",
    "pc_type": "lu",
    "pc_factor_mat_solver_type": "mumps",
    "mat_mumps_icntl_24": 1,
}

#: Relative residual above which a singular solve is declared failed.
_RESIDUAL_RTOL = 1e-8


def conservation_defect(problem: Generator) -> tuple[float, float]:
    r"""Relative defects :math:`\|A^T\mathbf 1\|_\infty/\|A\|_1` and :math:`\|A\mathbf 1\|_\infty/\|A\|_\infty` (collective).

    Both vanish (to round-off) for a no-flux problem with a conservative velocity;
    :math:`A\mathbf 1 = 0` holds for every velocity.
    """
    A = problem.A
    ones, r = A.createVecRight(), A.createVecLeft()
    ones.set(1.0)
    A.multTranspose(ones, r)
    left = r.norm(PETSc.NormType.NORM_INFINITY) / max(A.norm(PETSc.NormType.NORM_1), 1e-300)
    A.mult(ones, r)
    right = r.norm(PETSc.NormType.NORM_INFINITY) / max(A.norm(PETSc.NormType.NORM_INFINITY), 1e-300)
    ones.destroy()
    r.destroy()
    return float(left), float(right)


def check_no_flux(problem: Generator, rtol: float = 1e-10, what: str = "the group inverse") -> tuple[float, float]:
    """Raise :class:`InvalidArgumentError` unless ``problem`` is a conservative no-flux problem (collective).

    Returns the two defects of :func:`conservation_defect`.
    """
    if not isinstance(problem, Generator):
        raise InvalidArgumentError(f"problem must be a Generator, got {type(problem).__name__}")
    if problem.bcs:
        raise InvalidArgumentError(
            f"{what} needs a no-flux problem without Dirichlet conditions, got {len(problem.bcs)} "
            "Dirichlet condition(s): Q = -M^-1 A then has no kernel and no stationary state")
    left, right = conservation_defect(problem)
    if left > rtol:
        raise InvalidArgumentError(
            f"{what} needs a conservative velocity (u.n = 0 on the walls, div u = 0, so that 1^T A = 0), "
            f"got ||A^T 1||_inf / ||A||_1 = {left:.3e} > rtol = {rtol:.1e}")
    if right > rtol:
        raise InvalidArgumentError(f"A 1 must vanish, got ||A 1||_inf / ||A||_inf = {right:.3e} > rtol = {rtol:.1e}")
    return left, right


class GroupInverse:
    r"""Stationary vector :math:`\pi`, projector :math:`\Pi = \mathbf 1\pi^T` and group inverse :math:`Q^\#` of :math:`Q = -M^{-1}A`.

    Parameters
    ----------
    problem : Generator
        A scalar no-flux generator, e.g. advection–diffusion with no Dirichlet conditions and a
        conservative velocity (checked:
        :func:`check_no_flux`). The operators are taken as they are now; build a new
        object after the control changes.
    petsc_options : dict, optional
        Solver for the singular :math:`A` (default
        :data:`DEFAULT_GROUP_INVERSE_OPTIONS`, MUMPS with null-pivot detection).
    rtol : float
        Tolerance of the conservation check.

    Attributes
    ----------
    pi : PETSc.Vec
        :math:`\pi = M^T\mathbf 1/(\mathbf 1^TM\mathbf 1)`.
    ones : PETSc.Vec
        :math:`\mathbf 1` (:math:`w`, the left kernel of :math:`A`).
    mass : float
        :math:`\mathbf 1^TM\mathbf 1` (the area of the domain).
    defects : tuple of float
        The measured :func:`conservation_defect`.
    """

    def __init__(self, problem: Generator, petsc_options: Mapping[str, Any] | None = None,
                 *, rtol: float = 1e-10):
        self.defects = check_no_flux(problem, rtol)
        self.problem = problem
        M = problem.M
        self.ones = problem.create_vector()
        self.ones.set(1.0)
        self.pi = problem.create_vector()
        M.multTranspose(self.ones, self.pi)
        self.mass = self.pi.sum()
        self.pi.scale(1.0 / self.mass)
        self._m_ones = problem.create_vector()  # M 1, for the transposed normalization
        M.mult(self.ones, self._m_ones)
        self._A = problem.A.duplicate(copy=True)
        self._nullspace = PETSc.NullSpace().create(constant=True, comm=self._A.getComm())
        self._A.setNullSpace(self._nullspace)
        self._A.setTransposeNullSpace(self._nullspace)
        options = DEFAULT_GROUP_INVERSE_OPTIONS if petsc_options is None else petsc_options
        self.ksp = backend.create_ksp(self._A, options, "group_inverse")
        self._b, self._r, self._y = (problem.create_vector() for _ in range(3))

    # ------------------------------------------------------------------ projector

    def mean(self, x: PETSc.Vec) -> float:
        r""":math:`\pi^Tx` (collective)."""
        return self.pi.dot(x)

    def project(self, x: PETSc.Vec) -> PETSc.Vec:
        r"""``x <- (I - Π) x`` in place (collective)."""
        x.axpy(-self.mean(x), self.ones)
        return x

    # ------------------------------------------------------------------ Q^# and its transpose

    def apply(self, y: PETSc.Vec, out: PETSc.Vec) -> PETSc.Vec:
        r""":math:`Q^\#y`: solve :math:`Ax = -M(I-\Pi)y`, then :math:`x \leftarrow (I-\Pi)x` (collective)."""
        b = self._b
        y.copy(self._r)
        self.project(self._r)
        self.problem.M.mult(self._r, b)
        b.scale(-1.0)
        self._solve(b, out, transpose=False)
        return self.project(out)

    def dual_transpose(self, z: PETSc.Vec, out: PETSc.Vec) -> PETSc.Vec:
        r""":math:`M^{-T}(Q^\#)^Tz`: solve :math:`A^Ty' = -(I - \Pi^T)z`, then fix the constant (collective).

        The constant is fixed by :math:`(M\mathbf 1)^T y = 0`, i.e. :math:`\mathbf 1^T(Q^\#)^Tz = 0`.
        No mass solve is needed.
        """
        b = self._b
        z.copy(b)
        b.axpy(-z.sum(), self.pi)  # (I - pi 1^T) z
        b.scale(-1.0)
        self._solve(b, out, transpose=True)
        out.axpy(-self._m_ones.dot(out) / self.mass, self.ones)
        return out

    def apply_transpose(self, z: PETSc.Vec, out: PETSc.Vec) -> PETSc.Vec:
        r""":math:`(Q^\#)^Tz = M^T\,M^{-T}(Q^\#)^Tz` (collective)."""
        self.dual_transpose(z, self._y)
        self.problem.M.multTranspose(self._y, out)
        return out

    def _solve(self, b: PETSc.Vec, x: PETSc.Vec, *, transpose: bool) -> None:
        if transpose:
            backend.solve_hermitian_transpose(self.ksp, b, x)
            self._A.multTranspose(x, self._r)
        else:
            self.ksp.solve(b, x)
            self._A.mult(x, self._r)
        self._r.axpy(-1.0, b)
        res, scale = self._r.norm(), b.norm()
        if not res <= _RESIDUAL_RTOL * scale:  # also catches NaN
            raise backend.SolverError(
                f"singular solve with A{'^T' if transpose else ''} failed: residual {res:.3e} > "
                f"{_RESIDUAL_RTOL:.0e} * ||b|| = {_RESIDUAL_RTOL * scale:.3e} (is the null pivot detected?)")

    def destroy(self) -> None:
        for obj in (self.ksp, self._A, self._nullspace, self.ones, self.pi, self._m_ones, self._b, self._r, self._y):
            obj.destroy()
