r"""The base of every PDE generator: :math:`M(c)\,w' = -A(c)\,w` from UFL forms, and its control derivatives.

A model (:mod:`.advection_diffusion`, :mod:`.schrodinger`) supplies the mass and
operator forms :math:`m(c; w, \phi)`, :math:`a(c; w, \phi)` of its semi-discrete system;
:class:`Generator` compiles them and, by UFL differentiation with respect to the control
Function :math:`c`, every derivative the time schemes, tangent, adjoint and surrogates use
(docs/theory.md §2: :math:`Q = -M^{-1}A`, :math:`J = \partial Q[v]`).
"""

from __future__ import annotations


import dolfinx.fem as fem
import numpy as np
import ufl
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import backend
from sensitivity.fem.models.controls import Control
from sensitivity.validation import finite_vector, same_mesh

__all__ = ["Generator"]


class Generator:
    r"""Mass and operator matrices of :math:`M(c)\,w' = -A(c)\,w` from UFL forms, and their control derivatives.

    The base of every generator (:class:`AdvectionDiffusion`, :class:`~sensitivity.fem.schrodinger.Schrodinger`):
    a subclass sets its parameters and calls :meth:`setup`, which compiles its
    :meth:`forms` ``m(c; w, φ)``, ``a(c; w, φ)`` and, by UFL differentiation with
    respect to the control Function ``c``, every derivative the propagator,
    tangent, adjoint and surrogates use (docs/theory.md §2: :math:`Q = -M^{-1}A`,
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

    def setup(self, V: fem.FunctionSpace, control: Control, bcs, quadrature_degree: int) -> None:
        """Compile the forms of :meth:`forms` and their control derivatives, and assemble :attr:`M`, :attr:`A`
        (called once by a subclass constructor; collective)."""
        if not isinstance(control, Control):
            raise InvalidArgumentError(f"control must be a sensitivity.fem Control, got {type(control).__name__}")
        same_mesh(V, control.space, "the state space and the control")
        self.V = V
        self.control = control
        self.quadrature_degree = quadrature_degree
        self.bcs = list(bcs)
        for bc in self.bcs:
            if not isinstance(bc, fem.DirichletBC):
                raise InvalidArgumentError(f"bcs must be dolfinx.fem.DirichletBC objects, got {type(bc).__name__}")
        finite_vector(control.function, f"the control ({type(control).__name__})")
        theta, phi = ufl.TrialFunction(V), ufl.TestFunction(V)
        self._arguments = (theta, phi)
        self._m_ufl, self._a_ufl = self.forms(theta, phi)
        self._m, self._a = backend.form(self._m_ufl), backend.form(self._a_ufl)
        # Derivatives along a direction held in a work Function of the control space.
        self._direction = fem.Function(control.space, name="direction")
        c = control.function
        self._dm = backend.form(ufl.derivative(self._m_ufl, c, self._direction)) if self.mass_depends_on_control else None
        self._da = backend.form(ufl.derivative(self._a_ufl, c, self._direction))
        # Adjoint action: for fixed theta, lam, the linear form c* -> d/dc (lam^T A(c) theta)[c*].
        self._theta_fn = fem.Function(V)
        self._lam_fn = fem.Function(V)
        # (lam^H A theta in a complex build, where the test function of a sesquilinear form is conjugated)
        scalar_a = ufl.action(ufl.action(self._a_ufl, self._theta_fn), self._lam_fn)
        da_adj = backend.control_derivative(scalar_a, c)
        self._da_adj = backend.form(da_adj)
        self._dm_adj = self._d2m_adj = self._d2a_adj = None
        if self.mass_depends_on_control:
            scalar_m = ufl.action(ufl.action(self._m_ufl, self._theta_fn), self._lam_fn)
            dm_adj = backend.control_derivative(scalar_m, c)
            self._dm_adj = backend.form(dm_adj)
            if not self.affine_in_control:
                self._d2m_adj = backend.form(ufl.derivative(dm_adj, c, self._direction))
        if not self.affine_in_control:  # second derivatives, for Hessian actions
            self._d2a_adj = backend.form(ufl.derivative(da_adj, c, self._direction))
        self.M = backend.assemble_matrix(self._m)
        self.A = backend.assemble_matrix(self._a)

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
        """Reassemble :attr:`M` and :attr:`A` after the control's values changed (collective; raises on every
        rank if they are not finite)."""
        finite_vector(self.control.function, f"the control ({type(self.control).__name__})")
        for mat, compiled in ((self.M, self._m), (self.A, self._a)):
            backend.reassemble_matrix(mat, compiled)

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
        return backend.assemble_matrix(self._da)

    def dM(self, v: fem.Function) -> PETSc.Mat | None:
        r""":math:`\partial M/\partial c\,[v]` (``None`` if :math:`M` does not depend on the control)."""
        if self._dm is None:
            return None
        self._set_direction(v)
        return backend.assemble_matrix(self._dm)

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
        return backend.real_part(backend.assemble_vector(compiled, out))

    # ------------------------------------------------------------------ helpers

    def dirichlet_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Owned Dirichlet dofs as ``(local indices, prescribed values)`` (not collective)."""
        rows = [bc.dof_indices()[0][: bc.dof_indices()[1]] for bc in self.bcs]
        local = np.unique(np.concatenate(rows)).astype(np.int32) if rows else np.zeros(0, np.int32)
        g = backend.dirichlet_values(self.V, self.bcs)
        values = g.array[local].copy()
        g.destroy()
        return local, values

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
        return tuple(backend.to_dense(mat) for mat in (self.M, self.A))
