r"""The advection–diffusion generator (SPEC §2, seed 4.3).

Strong form :math:`\partial_t\theta = \kappa\Delta\theta - u\cdot\nabla\theta`. With
Lagrange test functions :math:`\phi` the semi-discrete system is
:math:`M\theta' = -A(u)\theta`,

.. math::

    M_{ij} = \int \phi_j\phi_i\,dx,\qquad
    A(u)_{ij} = \kappa\int\nabla\phi_j\cdot\nabla\phi_i\,dx + \int (u\cdot\nabla\phi_j)\,\phi_i\,dx
              = \kappa K_{ij} + C(u)_{ij},

so the generator is :math:`Q(u) = -M^{-1}A(u)` and a velocity perturbation
:math:`v` enters as :math:`J = -M^{-1}C(v)`. Walls without a Dirichlet condition
are no-flux (natural); Dirichlet conditions (e.g. an inflow value) are given as
DOLFINx ``DirichletBC`` objects and hold at every time; outflow is natural
(zero diffusive flux).

Optional SUPG stabilization adds, with :math:`\tau(u) = ((2|u|/h)^2 + 9(4\kappa/h^2)^2)^{-1/2}`
(smooth in :math:`u`),

.. math::

    M^{s}_{ij} = \int\tau\,(u\cdot\nabla\phi_i)\,\phi_j,\qquad
    A^{s}_{ij} = \int\tau\,(u\cdot\nabla\phi_i)\,(u\cdot\nabla\phi_j - \kappa\Delta\phi_j),

so :math:`M` depends on :math:`u` too; its derivative is included exactly in
:meth:`AdvectionDiffusion.dM` and :meth:`AdvectionDiffusion.dA`, which UFL
derives from the same forms.
"""

from __future__ import annotations

from collections.abc import Sequence

import dolfinx.fem as fem
import dolfinx.fem.petsc as fem_petsc
import numpy as np
import ufl
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import _backend
from sensitivity.fem.velocity import Control, VelocityControl

__all__ = ["AdvectionDiffusion", "Generator"]


def _check_kappa(kappa) -> float:
    try:
        value = float(kappa)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"kappa must be a positive number, got {kappa!r}") from None
    if not np.isfinite(value) or value <= 0.0:
        raise InvalidArgumentError(f"kappa must be positive and finite, got {kappa!r}")
    return value


class Generator:
    r"""Mass and operator matrices of :math:`M(c)\,w' = -A(c)\,w` from UFL forms, and their control derivatives.

    The base of every generator (:class:`AdvectionDiffusion`, :class:`~sensitivity.fem.schrodinger.Schrodinger`):
    a subclass sets its parameters and calls :meth:`_build`, which compiles its
    :meth:`forms` ``m(c; w, φ)``, ``a(c; w, φ)`` and, by UFL differentiation with
    respect to the control Function ``c``, every derivative the propagator,
    tangent, adjoint and surrogates use (SPEC §2: :math:`Q = -M^{-1}A`,
    :math:`J = \partial Q[v]`). One quadrature degree serves every form and
    derivative, so the derivatives are exact derivatives of the assembled matrices.

    Attributes
    ----------
    V : dolfinx.fem.FunctionSpace
        The state space.
    control : Control
        The parameter Function.
    bcs : list of dolfinx.fem.DirichletBC
        Time-independent Dirichlet conditions on the state.
    M, A : petsc4py.PETSc.Mat
        Assembled without boundary conditions (the time stepper imposes them);
        reassembled by :meth:`update` after the control changes.
    mass_depends_on_control : bool
        Whether :math:`M` depends on :math:`c` (then :meth:`dM` and friends are not ``None``).
    affine_in_control : bool
        Whether :math:`A` (and :math:`M`) are affine in :math:`c` (no second derivatives).
    """

    mass_depends_on_control: bool = False
    affine_in_control: bool = True

    def forms(self, w, phi):
        """UFL mass and operator forms :math:`m(c; w, \\phi)`, :math:`a(c; w, \\phi)` (subclasses)."""
        raise NotImplementedError

    def _build(self, V: fem.FunctionSpace, control: Control, bcs, quadrature_degree: int) -> None:
        if not isinstance(control, Control):
            raise InvalidArgumentError(f"control must be a sensitivity.fem Control, got {type(control).__name__}")
        if V.mesh is not control.mesh:
            raise InvalidArgumentError("the state space and the control must live on the same mesh")
        self.V = V
        self.control = control
        self.quadrature_degree = quadrature_degree
        self.bcs = list(bcs)
        for bc in self.bcs:
            if not isinstance(bc, fem.DirichletBC):
                raise InvalidArgumentError(f"bcs must be dolfinx.fem.DirichletBC objects, got {type(bc).__name__}")
        theta, phi = ufl.TrialFunction(V), ufl.TestFunction(V)
        self._arguments = (theta, phi)
        self._m_ufl, self._a_ufl = self.forms(theta, phi)
        self._m, self._a = _backend.form(self._m_ufl), _backend.form(self._a_ufl)
        # Derivatives along a direction held in a work Function of the control space.
        self._direction = fem.Function(control.space, name="direction")
        c = control.function
        self._dm = _backend.form(ufl.derivative(self._m_ufl, c, self._direction)) if self.mass_depends_on_control else None
        self._da = _backend.form(ufl.derivative(self._a_ufl, c, self._direction))
        # Adjoint action: for fixed theta, lam, the linear form c* -> d/dc (lam^T A(c) theta)[c*].
        self._theta_fn = fem.Function(V)
        self._lam_fn = fem.Function(V)
        # (lam^H A theta in a complex build, where the test function of a sesquilinear form is conjugated)
        scalar_a = ufl.action(ufl.action(self._a_ufl, self._theta_fn), self._lam_fn)
        da_adj = _backend.control_derivative(scalar_a, c)
        self._da_adj = _backend.form(da_adj)
        self._dm_adj = self._d2m_adj = self._d2a_adj = None
        if self.mass_depends_on_control:
            scalar_m = ufl.action(ufl.action(self._m_ufl, self._theta_fn), self._lam_fn)
            dm_adj = _backend.control_derivative(scalar_m, c)
            self._dm_adj = _backend.form(dm_adj)
            if not self.affine_in_control:
                self._d2m_adj = _backend.form(ufl.derivative(dm_adj, c, self._direction))
        if not self.affine_in_control:  # second derivatives, for Hessian actions
            self._d2a_adj = _backend.form(ufl.derivative(da_adj, c, self._direction))
        self.M = _backend.assemble_matrix(self._m)
        self.A = _backend.assemble_matrix(self._a)

    def paired_forms(self, pairs_a, pairs_m=()):
        r"""The functional :math:`\sum_r a(u(c); \theta_r, \lambda_r) + \sum_r m(u(c); \theta_r, \mu_r)` of the control (UFL).

        ``pairs_a`` and ``pairs_m`` are sequences of ``(theta_r, lambda_r)`` Functions
        (any space whose cell restrictions the forms accept, e.g. discontinuous
        Lagrange); they replace the trial and test functions of :math:`a` and
        :math:`m`, with the same quadrature. Its derivative with respect to the
        control contracts :math:`\partial_c A` and :math:`\partial_c M` with
        cell-local matrices (:class:`sensitivity.fem.adjoint.OuterProductSums`).
        """
        trial, test = self._arguments
        terms = [ufl.replace(self._a_ufl, {trial: t, test: s}) for t, s in pairs_a]
        terms += [ufl.replace(self._m_ufl, {trial: t, test: s}) for t, s in pairs_m]
        return sum(terms[1:], terms[0])

    def update(self) -> None:
        """Reassemble :attr:`M` and :attr:`A` after the control's values changed (collective)."""
        for mat, compiled in ((self.M, self._m), (self.A, self._a)):
            mat.zeroEntries()
            fem_petsc.assemble_matrix(mat, compiled)
            mat.assemble()

    # ------------------------------------------------------------------ derivatives

    def _set_direction(self, v: fem.Function) -> None:
        self.control.check_direction(v)
        self._direction.x.array[:] = v.x.array

    def dA(self, v: fem.Function) -> PETSc.Mat:
        r""":math:`\partial A/\partial c\,[v]` as an assembled matrix (collective).

        For advection–diffusion without SUPG it is :math:`C(u(v))`; with SUPG it includes
        :math:`\partial\tau/\partial u`.
        """
        self._set_direction(v)
        return _backend.assemble_matrix(self._da)

    def dM(self, v: fem.Function) -> PETSc.Mat | None:
        r""":math:`\partial M/\partial c\,[v]` (``None`` if :math:`M` does not depend on the control)."""
        if self._dm is None:
            return None
        self._set_direction(v)
        return _backend.assemble_matrix(self._dm)

    def dA_action(self, v: fem.Function, theta: PETSc.Vec, out: PETSc.Vec | None = None) -> PETSc.Vec:
        r""":math:`(\partial A/\partial c\,[v])\,\theta` (collective)."""
        dA = self.dA(v)
        out = dA.createVecLeft() if out is None else out
        dA.mult(theta, out)
        dA.destroy()
        return out

    def dA_adjoint_action(self, lam: PETSc.Vec, theta: PETSc.Vec, out: PETSc.Vec | None = None) -> PETSc.Vec:
        r"""The control-space vector :math:`g_k = \lambda^T (\partial A/\partial c_k)\,\theta` (collective).

        The transpose of :meth:`dA_action`: :math:`\langle g, v\rangle = \lambda^T\,\partial A[v]\,\theta`
        (:math:`\mathrm{Re}\,\lambda^H\partial A[v]\theta` in a complex build).
        """
        return self._adjoint_action(self._da_adj, lam, theta, out)

    def dM_adjoint_action(self, lam: PETSc.Vec, theta: PETSc.Vec, out: PETSc.Vec | None = None) -> PETSc.Vec | None:
        r""":math:`\lambda^T (\partial M/\partial c_k)\,\theta` (``None`` if :math:`M` does not depend on the control)."""
        if self._dm_adj is None:
            return None
        return self._adjoint_action(self._dm_adj, lam, theta, out)

    def d2A_adjoint_action(self, lam: PETSc.Vec, theta: PETSc.Vec, v: fem.Function,
                           out: PETSc.Vec | None = None) -> PETSc.Vec | None:
        r"""The derivative along :math:`v` of :meth:`dA_adjoint_action`: :math:`\lambda^T\partial^2 A/\partial c_k\partial c[v]\,\theta`.

        ``None`` where :math:`A` is affine in the control (collective).
        """
        if self._d2a_adj is None:
            return None
        self._set_direction(v)
        return self._adjoint_action(self._d2a_adj, lam, theta, out)

    def d2M_adjoint_action(self, lam: PETSc.Vec, theta: PETSc.Vec, v: fem.Function,
                           out: PETSc.Vec | None = None) -> PETSc.Vec | None:
        r"""The derivative along :math:`v` of :meth:`dM_adjoint_action` (``None`` if :math:`M` does not depend on the control)."""
        if self._d2m_adj is None:
            return None
        self._set_direction(v)
        return self._adjoint_action(self._d2m_adj, lam, theta, out)

    def _adjoint_action(self, compiled, lam, theta, out):
        for fn, vec in ((self._lam_fn, lam), (self._theta_fn, theta)):
            vec.copy(fn.x.petsc_vec)
            fn.x.scatter_forward()
        # complex build: the real part, the derivative of Re(lam^H A theta) for a real control
        return _backend.real_part(_backend.assemble_vector(compiled, out))

    # ------------------------------------------------------------------ helpers

    def dirichlet_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Owned Dirichlet dofs as ``(local indices, prescribed values)`` (not collective)."""
        rows = [bc.dof_indices()[0][: bc.dof_indices()[1]] for bc in self.bcs]
        local = np.unique(np.concatenate(rows)).astype(np.int32) if rows else np.zeros(0, np.int32)
        g = fem.Function(self.V)
        fem_petsc.set_bc(g.x.petsc_vec, self.bcs)
        return local, g.x.petsc_vec.array[local].copy()

    def dirichlet_global_rows(self, local: np.ndarray | None = None) -> np.ndarray:
        """Global matrix rows of owned Dirichlet dofs (default those of :meth:`dirichlet_rows`; not collective)."""
        local = self.dirichlet_rows()[0] if local is None else local
        imap, bs = self.V.dofmap.index_map, self.V.dofmap.index_map_bs  # the rows are unrolled dofs
        return (imap.local_to_global(local // bs) * bs + local % bs).astype(PETSc.IntType)

    def create_vector(self) -> PETSc.Vec:
        """A PETSc vector compatible with :attr:`M` (distributed like ``V``)."""
        return self.M.createVecRight()

    def to_dense(self) -> tuple[np.ndarray, np.ndarray]:
        """``(M, A)`` as dense NumPy arrays gathered on every rank (small meshes only; collective)."""
        return tuple(_dense(mat) for mat in (self.M, self.A))




class AdvectionDiffusion(Generator):
    r"""Mass and operator matrices of :math:`M\theta' = -A(u)\theta` and their velocity derivatives.

    Parameters
    ----------
    V : dolfinx.fem.FunctionSpace
        Scalar Lagrange space (P1 or P2) for :math:`\theta`.
    control : VelocityControl
        The velocity parametrization (:class:`VelocityField` or :class:`StreamFunction`).
    kappa : float
        Diffusivity, > 0.
    bcs : sequence of dolfinx.fem.DirichletBC, optional
        Dirichlet conditions on :math:`\theta` (time-independent values).
    supg : bool
        Add SUPG stabilization (for large Péclet numbers).
    quadrature_degree : int, optional
        One quadrature rule for every form and every derivative form, so that
        the derivatives are exact derivatives of the assembled matrices (SUPG's τ
        is not polynomial, and UFL would otherwise pick different degrees for a
        form and its derivative). Default: exact for the Galerkin terms, two more
        with SUPG.

    Attributes
    ----------
    M, A : petsc4py.PETSc.Mat
        Assembled without boundary conditions (the time stepper imposes them);
        reassembled by :meth:`update` after the control changes.
    """

    def __init__(
        self,
        V: fem.FunctionSpace,
        control: VelocityControl,
        kappa: float,
        *,
        bcs: Sequence[fem.DirichletBC] = (),
        supg: bool = False,
        quadrature_degree: int | None = None,
    ):
        if _backend.COMPLEX:
            raise InvalidArgumentError("advection-diffusion needs the real PETSc build (dolfinx-solver-real); "
                                       "this one is complex")
        if not isinstance(control, VelocityControl):
            raise InvalidArgumentError(f"control must be a VelocityField or StreamFunction, got {type(control).__name__}")
        if tuple(V.value_shape) != ():
            raise InvalidArgumentError(f"theta needs a scalar space, got value shape {tuple(V.value_shape)}")
        self.kappa = _check_kappa(kappa)
        self.supg = bool(supg)
        # SUPG makes M depend on u, and A, M non-linear in u (through tau).
        self.mass_depends_on_control, self.affine_in_control = self.supg, not self.supg
        self._build(V, control, bcs, _quadrature_degree(V, control, self.supg, quadrature_degree))

    # ------------------------------------------------------------------ forms

    def forms(self, theta, phi):
        """UFL mass and operator forms :math:`m(u;\\theta,\\phi)`, :math:`a(u;\\theta,\\phi)`, :math:`u = u(c)`."""
        kappa, u = self.kappa, self.control.velocity()
        dx = ufl.dx(metadata={"quadrature_degree": self.quadrature_degree})
        m = theta * phi * dx
        a = kappa * ufl.inner(ufl.grad(theta), ufl.grad(phi)) * dx + ufl.dot(u, ufl.grad(theta)) * phi * dx
        if self.supg:
            h = ufl.CellDiameter(self.V.mesh)
            tau = ((2.0 / h) ** 2 * ufl.dot(u, u) + 9.0 * (4.0 * kappa / h**2) ** 2) ** -0.5
            streamline = tau * ufl.dot(u, ufl.grad(phi))
            m = m + streamline * theta * dx
            a = a + streamline * (ufl.dot(u, ufl.grad(theta)) - kappa * ufl.div(ufl.grad(theta))) * dx
        return m, a


def _quadrature_degree(V: fem.FunctionSpace, control: VelocityControl, supg: bool, degree) -> int:
    """The quadrature degree of every form (see :class:`AdvectionDiffusion`)."""
    if degree is not None:
        if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)) or degree < 0:
            raise InvalidArgumentError(f"quadrature_degree must be a non-negative integer, got {degree!r}")
        return int(degree)
    p = V.ufl_element().embedded_superdegree
    k = control.space.ufl_element().embedded_superdegree
    k_u = k - 1 if control.velocity_is_derivative else k  # polynomial degree of u
    q = max(2 * p, 2 * p - 1 + k_u)  # mass and advection exactly
    if supg:
        q = max(q, 2 * p - 2 + 2 * k_u + 2)  # streamline terms, with two degrees for tau
    return q


def _dense(mat: PETSc.Mat) -> np.ndarray:
    """Gather a (small) distributed PETSc matrix as a dense array on every rank."""
    comm = mat.getComm().tompi4py()
    rstart, rend = mat.getOwnershipRange()
    n = mat.getSize()[1]
    local = np.zeros((rend - rstart, n), dtype=PETSc.ScalarType)
    for i in range(rstart, rend):
        cols, vals = mat.getRow(i)
        local[i - rstart, cols] = vals
    return np.vstack(comm.allgather(local))
