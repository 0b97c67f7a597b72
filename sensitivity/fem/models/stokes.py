r"""A physical background flow: steady Stokes flow through a tagged domain.

Taylor–Hood (P2 velocity, P1 pressure) discretization of

.. math::

    -\nu\Delta u + \nabla p = 0,\qquad \nabla\cdot u = 0,

with a prescribed velocity on the inflow facets, no slip on the walls (and
obstacles) and the natural "do-nothing" condition :math:`\nu\partial_n u - pn = 0`
on the remaining (outflow) facets. The velocity is returned as a P2 vector
Function, ready for :class:`sensitivity.fem.VelocityField`; it is tangential on
the no-slip walls, so those walls are no-flux for the tracer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import basix.ufl
import dolfinx.fem as fem
import numpy as np
import ufl

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import backend
from sensitivity.fem.meshes import TaggedMesh, facets
from sensitivity.validation import callable_, positive

__all__ = ["stokes_velocity"]


def stokes_velocity(
    mesh_data: TaggedMesh,
    inflow: Callable[[np.ndarray], np.ndarray],
    *,
    inlet: str = "inlet",
    noslip: Sequence[str] = ("walls", "obstacle"),
    viscosity: float = 1.0,
    petsc_options: Mapping[str, Any] | None = None,
) -> fem.Function:
    r"""Solve the Stokes problem and return the velocity (collective).

    Parameters
    ----------
    mesh_data : TaggedMesh
        A mesh with named facet groups (e.g. from :func:`~sensitivity.fem.read_mesh`).
    inflow : callable
        ``inflow(x) -> array (gdim, n)``: the velocity on the ``inlet`` facets, for
        points ``x`` of shape (3, n) (a DOLFINx interpolation callback).
    inlet : str
        Facet group with the prescribed inflow.
    noslip : sequence of str
        Facet groups with :math:`u = 0`. Every other boundary facet is outflow.
    viscosity : float
        :math:`\nu > 0`; the velocity does not depend on it (only the pressure does).
    petsc_options : dict, optional
        Solver options for the saddle-point system (default MUMPS LU).

    Returns
    -------
    dolfinx.fem.Function
        The velocity in the P2 vector space, named ``"u"``.
    """
    if not isinstance(mesh_data, TaggedMesh):
        raise InvalidArgumentError(f"mesh_data must be a TaggedMesh, got {type(mesh_data).__name__}")
    callable_(inflow, "inflow")
    if isinstance(noslip, str):
        noslip = (noslip,)
    nu = positive(viscosity, "viscosity")
    inlet_facets = facets(mesh_data, inlet)
    wall_facets = [facets(mesh_data, name) for name in noslip]

    msh = mesh_data.mesh
    gdim, fdim = msh.geometry.dim, msh.topology.dim - 1
    cell = msh.topology.cell_name()
    P2 = basix.ufl.element("Lagrange", cell, 2, shape=(gdim,))
    P1 = basix.ufl.element("Lagrange", cell, 1)
    W = fem.functionspace(msh, basix.ufl.mixed_element([P2, P1]))
    U, _ = W.sub(0).collapse()

    u_in = fem.Function(U)
    u_in.interpolate(inflow)
    zero = fem.Function(U)
    bcs = [fem.dirichletbc(u_in, fem.locate_dofs_topological((W.sub(0), U), fdim, inlet_facets), W.sub(0))]
    for wf in wall_facets:
        bcs.append(fem.dirichletbc(zero, fem.locate_dofs_topological((W.sub(0), U), fdim, wf), W.sub(0)))

    (u, p), (w, q) = ufl.TrialFunctions(W), ufl.TestFunctions(W)
    a = (nu * ufl.inner(ufl.grad(u), ufl.grad(w)) - p * ufl.div(w) - q * ufl.div(u)) * ufl.dx
    L = ufl.inner(fem.Constant(msh, np.zeros(gdim)), w) * ufl.dx
    solution = backend.solve_linear_problem(a, L, bcs, petsc_options, "stokes")
    velocity = solution.sub(0).collapse()
    velocity.name = "u"
    return velocity
