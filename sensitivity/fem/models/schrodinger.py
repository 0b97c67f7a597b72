r"""The Schrödinger generator in real split form, and its sensitivity to the potential (docs/theory.md §3, seed §4.1).

:math:`i\psi_t = -\tfrac12\Delta\psi + V\psi` on a bounded domain with :math:`\psi = 0`
on the walls (:math:`\hbar = m = 1`). With :math:`\psi = a + ib` and Lagrange test
functions the semi-discrete system is

.. math::

    M a' = H b,\qquad M b' = -H a,\qquad
    H_{ij} = \tfrac12\int\nabla\phi_j\cdot\nabla\phi_i\,dx + \int V\phi_j\phi_i\,dx,

i.e. :math:`\mathbf M w' = -\mathbf A(V) w` for :math:`w = (a, b)` in a two-component
Lagrange space, with :math:`\mathbf M = \mathrm{diag}(M, M)` and the skew-symmetric

.. math::

    \mathbf A(V) = \begin{pmatrix}0 & -H\\ H & 0\end{pmatrix},\qquad
    \partial\mathbf A[v] = \begin{pmatrix}0 & -M_v\\ M_v & 0\end{pmatrix},\quad
    (M_v)_{ij} = \int v\,\phi_j\phi_i\,dx .

So :math:`Q = -\mathbf M^{-1}\mathbf A` is skew-adjoint in the :math:`\mathbf M` inner
product (the real form of the skew-Hermitian :math:`-iM^{-1}H`), the norm
:math:`\|w\|_{\mathbf M}^2 = \int|\psi|^2` is conserved, and Crank–Nicolson (the
Cayley transform of :math:`\Delta t\,Q`) conserves it exactly.

**Complex PETSc build** (``dolfinx-solver-complex``): the state is :math:`\psi` itself in a
scalar complex Lagrange space and :math:`\mathbf A = iH`, :math:`\mathbf M = M`
(:math:`M\psi' = -iH\psi`); the same code gives the same numbers (``tests/test_complex_build.py``),
with Hermitian transposes in the adjoints (:mod:`sensitivity.fem.derivatives.adjoint`). Everything else —
the θ-scheme, tangent, adjoint, checkpointing, surrogates — is the machinery of
:mod:`sensitivity.fem.models.base` and its users, unchanged: this module only
supplies the forms.
"""

from __future__ import annotations

from collections.abc import Sequence

import dolfinx.fem as fem
import dolfinx.mesh as dmesh
import numpy as np
import ufl
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem.backend import COMPLEX
from sensitivity.fem.models.base import Generator
from sensitivity.fem.models.controls import PotentialField
from sensitivity.validation import integer, positive

__all__ = ["Schrodinger", "gaussian_packet", "schrodinger_space", "wall_conditions"]


def schrodinger_space(msh: dmesh.Mesh, degree: int = 1) -> fem.FunctionSpace:
    """The state space: Lagrange of ``degree`` with the two components :math:`(a, b) = (\\Re\\psi, \\Im\\psi)`
    (real build), or scalar complex Lagrange holding :math:`\\psi` itself (complex build)."""
    degree = integer(degree, "degree", minimum=1)
    if COMPLEX:
        return fem.functionspace(msh, ("Lagrange", int(degree)))
    return fem.functionspace(msh, ("Lagrange", int(degree), (2,)))


def wall_conditions(W: fem.FunctionSpace) -> list[fem.DirichletBC]:
    """:math:`\\psi = 0` (both components) on every exterior facet."""
    msh = W.mesh
    fdim = msh.topology.dim - 1
    msh.topology.create_connectivity(fdim, msh.topology.dim)
    facets = dmesh.exterior_facet_indices(msh.topology)
    dofs = fem.locate_dofs_topological(W, fdim, facets)
    zero = PETSc.ScalarType(0.0) if COMPLEX else np.zeros(2, dtype=PETSc.ScalarType)
    return [fem.dirichletbc(zero, dofs, W)]


def _check_space(W: fem.FunctionSpace) -> None:
    if COMPLEX and tuple(W.value_shape) != ():
        raise InvalidArgumentError(
            f"the Schrödinger state of a complex build is one complex component (schrodinger_space), "
            f"got value shape {tuple(W.value_shape)}")
    if not COMPLEX and tuple(W.value_shape) != (2,):
        raise InvalidArgumentError(
            f"the Schrödinger state needs a two-component (Re, Im) space (schrodinger_space), "
            f"got value shape {tuple(W.value_shape)}")


class Schrodinger(Generator):
    r"""Real-split Schrödinger generator :math:`\mathbf M w' = -\mathbf A(V)w` (module docstring).

    Parameters
    ----------
    W : dolfinx.fem.FunctionSpace
        Two-component Lagrange space (:func:`schrodinger_space`).
    potential : PotentialField
        The control :math:`V`.
    bcs : sequence of dolfinx.fem.DirichletBC, optional
        Default :func:`wall_conditions` (:math:`\psi = 0` on the whole boundary).
        Must be homogeneous to conserve the norm.
    quadrature_degree : int, optional
        One rule for every form and derivative; default exact,
        :math:`2p + \deg V`.

    Attributes
    ----------
    M, A : petsc4py.PETSc.Mat
        :math:`\mathbf M` (symmetric) and :math:`\mathbf A(V)` (skew-symmetric).
    """

    mass_depends_on_control = False
    affine_in_control = True

    def __init__(
        self,
        W: fem.FunctionSpace,
        potential: PotentialField,
        *,
        bcs: Sequence[fem.DirichletBC] | None = None,
        quadrature_degree: int | None = None,
    ):
        _check_space(W)
        if not isinstance(potential, PotentialField):
            raise InvalidArgumentError(f"potential must be a PotentialField, got {type(potential).__name__}")
        if quadrature_degree is None:
            p = W.ufl_element().embedded_superdegree
            quadrature_degree = 2 * p + potential.space.ufl_element().embedded_superdegree
        else:
            quadrature_degree = integer(quadrature_degree, "quadrature_degree", minimum=0)
        self.setup(W, potential, wall_conditions(W) if bcs is None else bcs, int(quadrature_degree))

    def forms(self, w, phi):
        r""":math:`m(w, \phi) = \int a\phi_a + b\phi_b`, :math:`a(V; w, \phi) = h(a, \phi_b) - h(b, \phi_a)`."""
        V = self.control.function
        dx = ufl.dx(metadata={"quadrature_degree": self.quadrature_degree})

        def h(u, v):  # the Hamiltonian form
            return 0.5 * ufl.inner(ufl.grad(u), ufl.grad(v)) + V * u * v

        m = ufl.inner(w, phi) * dx
        if COMPLEX:  # M psi' = -i H psi: A = iH
            return m, 1j * (0.5 * ufl.inner(ufl.grad(w), ufl.grad(phi)) + V * ufl.inner(w, phi)) * dx
        a = (h(w[0], phi[1]) - h(w[1], phi[0])) * dx
        return m, a

    # ------------------------------------------------------------------ state helpers

    def norm(self, w: fem.Function | PETSc.Vec) -> float:
        r""":math:`\|w\|_{\mathbf M} = (\int|\psi|^2)^{1/2}` (collective)."""
        vec = w.x.petsc_vec if isinstance(w, fem.Function) else w
        Mw = self.M.createVecLeft()
        self.M.mult(vec, Mw)
        value = float(np.sqrt(max(Mw.dot(vec).real, 0.0)))  # w^H M w
        Mw.destroy()
        return value

    def energy(self, w: fem.Function | PETSc.Vec) -> float:
        r""":math:`\langle\psi, \hat H\psi\rangle = a^THa + b^THb`, also conserved by Crank–Nicolson (collective)."""
        vec = w.x.petsc_vec if isinstance(w, fem.Function) else w
        Aw = self.A.createVecLeft()
        self.A.mult(vec, Aw)
        if COMPLEX:  # A = iH: psi^H H psi = Re(-i psi^H A psi)
            value = float((-1j * Aw.dot(vec)).real)
            Aw.destroy()
            return value
        # (A w) = (-H b, H a): swap the components back
        arr = Aw.array.reshape(-1, 2)
        own = vec.array.reshape(-1, 2)
        local = float(np.dot(arr[:, 1], own[:, 0]) - np.dot(arr[:, 0], own[:, 1]))
        Aw.destroy()
        return self.V.mesh.comm.allreduce(local)

    def density(self, w: fem.Function | PETSc.Vec, out: fem.Function | None = None) -> fem.Function:
        """:math:`|\\psi|^2 = a^2 + b^2` interpolated into the scalar space of the same degree (collective)."""
        if out is None:
            out = fem.Function(fem.functionspace(self.V.mesh, ("Lagrange", self.V.ufl_element().embedded_superdegree)),
                               name="density")
        fn = w if isinstance(w, fem.Function) else self._as_state(w)
        out.interpolate(fem.Expression(ufl.real(ufl.inner(fn, fn)), out.function_space.element.interpolation_points))
        return out

    def _as_state(self, vec: PETSc.Vec) -> fem.Function:
        fn = fem.Function(self.V)
        vec.copy(fn.x.petsc_vec)
        fn.x.scatter_forward()
        return fn


def gaussian_packet(problem: Schrodinger, center: Sequence[float], width: float,
                    momentum: Sequence[float] | None = None) -> fem.Function:
    r"""A Gaussian wave packet :math:`\psi_0 \propto e^{-|x - x_0|^2/(2\sigma^2) + ik\cdot(x - x_0)}`,
    zero on the Dirichlet rows and normalized, :math:`\|\psi_0\|_{\mathbf M} = 1` (collective)."""
    W = problem.V
    gdim = W.mesh.geometry.dim
    x0 = np.asarray(center, dtype=float)
    k = np.zeros(gdim) if momentum is None else np.asarray(momentum, dtype=float)
    if x0.shape != (gdim,) or k.shape != (gdim,) or not (np.all(np.isfinite(x0)) and np.all(np.isfinite(k))):
        raise InvalidArgumentError(f"center and momentum must be finite with {gdim} components, got {center!r}, {momentum!r}")
    width = positive(width, "width")

    def values(x):
        d = x[:gdim] - x0[:, None]
        envelope = np.exp(-np.sum(d**2, axis=0) / (2.0 * width**2))
        phase = k @ d
        if COMPLEX:
            return envelope * np.exp(1j * phase)
        return np.vstack([envelope * np.cos(phase), envelope * np.sin(phase)])

    psi = fem.Function(W, name="psi")
    psi.interpolate(values)
    rows, _ = problem.dirichlet_rows()
    psi.x.petsc_vec.array[rows] = 0.0
    norm = problem.norm(psi)
    if norm == 0.0:
        raise InvalidArgumentError(f"the packet at {center!r} with width {width!r} vanishes on the mesh")
    psi.x.petsc_vec.scale(1.0 / norm)
    psi.x.scatter_forward()
    return psi
