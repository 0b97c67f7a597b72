r"""Observations of the state across MPI ranks: linear (point values, region averages) and quadratic (densities).

Every observation :math:`y(\theta) \in \mathbb R^m` offers the methods of
:class:`Observation` (value, Jacobian action and transpose, Hessian action), which
:class:`~sensitivity.fem.objective.misfit.ObservationMisfit` uses. Linear ones:

Point observations :math:`y_k = \theta(x_k) = \sum_j \phi_j(x_k)\,\theta_j`.

The observation operator is a sparse matrix :math:`P` with one row per sensor.
Each sensor is owned by exactly one rank (the lowest rank whose owned cells
contain it); that rank stores the row as (local dofs, basis values), computed
once by evaluating the cell's basis functions at the point. Then

- :meth:`PointSensors.evaluate` gives :math:`P\theta` on every rank (collective), and
- :meth:`PointSensors.apply_transpose` adds :math:`P^T w` into a dof vector, the
  source term of adjoint equations.

Points outside the mesh raise :class:`~sensitivity.errors.InvalidArgumentError`
on every rank.

Quadratic ones, for the Schrödinger state :math:`w = (a, b)`, :math:`\psi = a + ib`
(docs/theory.md §3): :class:`DensitySensors`, :math:`y_k = |\psi(x_k)|^2 = a(x_k)^2 + b(x_k)^2`,
and :class:`RegionProbabilities`, :math:`y_r = \int_{\Omega_r}|\psi|^2 = w^TM_rw`.
"""

from __future__ import annotations

import dolfinx.fem as fem
import dolfinx.geometry as geometry
import numpy as np
import ufl
from mpi4py import MPI
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import backend
from sensitivity.validation import finite_array, same_on_all_ranks

__all__ = ["DensitySensors", "Observation", "PointSensors", "RegionAverages", "RegionProbabilities"]


class Observation:
    """The interface of an observation :math:`y(\\theta)` (``num_sensors`` values, the same on every rank)."""

    #: Whether y is linear in the state (then the Hessian term vanishes).
    linear: bool = True

    #: The communicator of the state's mesh (every rank holds all ``num_sensors`` values).
    comm = None

    @property
    def num_sensors(self) -> int:
        raise NotImplementedError

    def evaluate(self, theta) -> np.ndarray:
        """:math:`y(\\theta)`, shape (m,), on every rank (collective)."""
        raise NotImplementedError

    def apply_transpose(self, w, out: PETSc.Vec) -> PETSc.Vec:
        """``out += P^T w`` (linear observations only; collective)."""
        raise NotImplementedError

    def jacobian_action(self, theta: PETSc.Vec, rho: PETSc.Vec) -> np.ndarray:
        """:math:`y'(\\theta)\\rho`, shape (m,) (collective)."""
        return self.evaluate(rho)

    def add_jacobian_transpose(self, theta: PETSc.Vec, w, out: PETSc.Vec) -> PETSc.Vec:
        """``out += y'(θ)^T w`` (collective)."""
        return self.apply_transpose(w, out)

    def add_hessian_action(self, theta: PETSc.Vec, w, rho: PETSc.Vec, out: PETSc.Vec) -> PETSc.Vec:
        """``out += Σ_k w_k ∇²y_k(θ) ρ`` (zero for linear observations; collective)."""
        return out

    def _check_weights(self, w) -> np.ndarray:
        return finite_array(w, "w", shape=(self.num_sensors,))


def _regions(msh, cell_tags, tags) -> tuple[list[int], list[tuple]]:
    """The region tags (the same on every rank) and, per region, its measure ``dx(tag)`` and area (collective)."""
    tags = [int(t) for t in np.atleast_1d(tags)]
    if not tags:
        raise InvalidArgumentError("at least one region tag is needed")
    same_on_all_ranks(msh.comm, np.asarray(tags), "tags")
    dx = ufl.Measure("dx", domain=msh, subdomain_data=cell_tags)
    regions = []
    for tag in tags:
        area = backend.measure_size(msh, dx(tag))
        if area <= 0.0:
            raise InvalidArgumentError(f"region tag {tag} has no cells")
        regions.append((dx(tag), area))
    return tags, regions


class PointSensors(Observation):
    r"""Point-evaluation operator :math:`P` for a Lagrange space.

    For a space with ``bs`` components (blocked, e.g. the Schrödinger pair
    :math:`(a, b)`) :meth:`evaluate` and :meth:`apply_transpose` act on the first
    component; :meth:`evaluate_components` gives all, shape (n, bs).

    Parameters
    ----------
    V : dolfinx.fem.FunctionSpace
    points : array_like, shape (n, gdim) or (n, 3)
        The same on every rank.
    """

    def __init__(self, V: fem.FunctionSpace, points):
        msh = V.mesh
        comm = msh.comm
        pts = np.asarray(points, dtype=float)
        if pts.ndim != 2 or pts.shape[1] not in (msh.geometry.dim, 3) or not np.all(np.isfinite(pts)):
            raise InvalidArgumentError(f"points must be a finite array of shape (n, {msh.geometry.dim}), got {pts.shape}")
        same_on_all_ranks(comm, pts, "points")
        self.points = np.zeros((pts.shape[0], 3))
        self.points[:, : pts.shape[1]] = pts
        self.V = V
        self.comm = comm
        n = len(self.points)
        tdim = msh.topology.dim
        num_owned_cells = msh.topology.index_map(tdim).size_local
        tree = geometry.bb_tree(msh, tdim, padding=1e-10, entities=np.arange(num_owned_cells, dtype=np.int32))
        candidates = geometry.compute_collisions_points(tree, self.points)
        colliding = geometry.compute_colliding_cells(msh, candidates, self.points)
        found = np.array([len(colliding.links(k)) > 0 for k in range(n)])
        claim = np.where(found, comm.rank, comm.size)
        owner = np.empty_like(claim)
        comm.Allreduce(claim, owner, op=MPI.MIN)
        missing = np.flatnonzero(owner == comm.size)
        if missing.size:
            k = int(missing[0])
            raise InvalidArgumentError(f"sensor point {k} at {self.points[k, : msh.geometry.dim]} is outside the mesh")
        self.owner = owner
        self._local = [k for k in range(n) if owner[k] == comm.rank]
        # Rows of P for the local sensors: evaluate each (scalar) basis function of the cell at the point.
        work = fem.Function(V)
        self.bs = bs = V.dofmap.bs
        self._dofs, self._weights = [], []
        for k in self._local:
            cell = colliding.links(k)[0]
            nodes = V.dofmap.cell_dofs(cell)
            weights = np.empty(len(nodes))
            for i, node in enumerate(nodes):
                work.x.array[:] = 0.0
                work.x.array[node * bs] = 1.0
                weights[i] = work.eval(self.points[k], np.array([cell], dtype=np.int32))[0].real
            self._dofs.append(np.asarray(nodes, dtype=np.int32) * bs)  # first component; + j for component j
            self._weights.append(weights)
        self._work = work

    @property
    def num_sensors(self) -> int:
        return len(self.points)

    def evaluate(self, theta: fem.Function | PETSc.Vec) -> np.ndarray:
        r""":math:`P\theta` as an array of shape (n,) on every rank (collective)."""
        return self.evaluate_components(theta)[:, 0]

    def evaluate_components(self, theta: fem.Function | PETSc.Vec) -> np.ndarray:
        r"""All components at the points, shape (n, bs), on every rank (collective)."""
        if isinstance(theta, fem.Function):
            values = theta.x.array
        else:
            theta.copy(self._work.x.petsc_vec)
            self._work.x.scatter_forward()
            values = self._work.x.array
        local = np.zeros((self.num_sensors, self.bs), dtype=values.dtype)
        for k, dofs, w in zip(self._local, self._dofs, self._weights):
            for j in range(self.bs):
                local[k, j] = w @ values[dofs + j]
        out = np.empty_like(local)
        self.comm.Allreduce(local, out, op=MPI.SUM)
        return out

    def apply_transpose(self, w, out: PETSc.Vec) -> PETSc.Vec:
        r"""``out += P^T w`` for sensor weights ``w`` of shape (n,), the same on every rank (collective)."""
        w = self._check_weights(w)
        return self.apply_transpose_components(np.column_stack([w] + [np.zeros_like(w)] * (self.bs - 1)), out)

    def apply_transpose_components(self, w, out: PETSc.Vec) -> PETSc.Vec:
        r"""``out += P^T w`` for weights of shape (n, bs), one column per component (collective)."""
        work = self._work
        work.x.array[:] = 0.0
        for k, dofs, weights in zip(self._local, self._dofs, self._weights):
            for j in range(self.bs):
                np.add.at(work.x.array, dofs + j, w[k, j] * weights)
        work.x.petsc_vec.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        out.array[:] += work.x.petsc_vec.array
        return out


class RegionAverages(Observation):
    r"""Region averages :math:`y_r = \frac{1}{|\Omega_r|}\int_{\Omega_r}\theta\,dx`, a linear observation operator.

    Each row is the assembled vector :math:`m_r = \int_{\Omega_r}\phi_i\,dx / |\Omega_r|`,
    so :meth:`evaluate` is a dot product per region and :meth:`apply_transpose`
    adds :math:`\sum_r w_r m_r`.

    Parameters
    ----------
    V : dolfinx.fem.FunctionSpace
        Scalar Lagrange space.
    cell_tags : dolfinx.mesh.MeshTags
        Cell markers (e.g. ``TaggedMesh.cell_tags``).
    tags : sequence of int
        The markers of the regions, one observation each.
    """

    def __init__(self, V: fem.FunctionSpace, cell_tags, tags):
        self.comm = V.mesh.comm
        self.tags, regions = _regions(V.mesh, cell_tags, tags)
        phi = ufl.TestFunction(V)
        self.rows = [backend.assemble_vector(backend.form(phi / area * dx)) for dx, area in regions]

    @property
    def num_sensors(self) -> int:
        return len(self.rows)

    def evaluate(self, theta: fem.Function | PETSc.Vec) -> np.ndarray:
        """The region averages, shape (r,), on every rank (collective)."""
        vec = theta.x.petsc_vec if isinstance(theta, fem.Function) else theta
        return np.array([row.dot(vec) for row in self.rows])

    def apply_transpose(self, w, out: PETSc.Vec) -> PETSc.Vec:
        """``out += sum_r w_r m_r`` (collective)."""
        w = self._check_weights(w)
        for wr, row in zip(w, self.rows):
            out.axpy(float(wr), row)
        return out


class DensitySensors(Observation):
    r"""Probability densities :math:`y_k = |\psi(x_k)|^2 = a(x_k)^2 + b(x_k)^2` at points (docs/theory.md §3).

    With the point values :math:`(Pa)_k, (Pb)_k` of the two components:
    :math:`y' \rho = 2(Pa\circ P\rho_a + Pb\circ P\rho_b)`, the transpose
    :math:`2P^T(w\circ Pa),\ 2P^T(w\circ Pb)`, and :math:`\sum_k w_k\nabla^2 y_k\,\rho =
    2P^T(w\circ P\rho)` per component. In a complex build :math:`\psi` is one complex
    component: :math:`y'\rho = 2\mathrm{Re}(\overline{P\psi}\circ P\rho)` and the same
    transposes with :math:`P\psi`, :math:`P\rho` (gradients in the sense
    :math:`dy = \mathrm{Re}(g^H\delta\psi)`).

    Parameters
    ----------
    W : dolfinx.fem.FunctionSpace
        The Schrödinger state space (:func:`~sensitivity.fem.schrodinger.schrodinger_space`).
    points : array_like, shape (n, gdim)
    """

    linear = False

    def __init__(self, W: fem.FunctionSpace, points):
        want = 1 if backend.COMPLEX else 2
        if W.dofmap.bs != want:
            raise InvalidArgumentError(
                f"densities need the {'complex scalar' if backend.COMPLEX else 'two-component (Re, Im)'} "
                f"Schrödinger space, got block size {W.dofmap.bs}")
        self.sensors = PointSensors(W, points)
        self.points = self.sensors.points
        self.comm = self.sensors.comm

    @property
    def num_sensors(self) -> int:
        return self.sensors.num_sensors

    def evaluate(self, w) -> np.ndarray:
        return np.sum(np.abs(self.sensors.evaluate_components(w)) ** 2, axis=1)

    def jacobian_action(self, w, rho) -> np.ndarray:
        values = np.conj(self.sensors.evaluate_components(w)) * self.sensors.evaluate_components(rho)
        return 2.0 * np.sum(values.real, axis=1)

    def add_jacobian_transpose(self, w, weights, out):
        weights = self._check_weights(weights)
        return self.sensors.apply_transpose_components(2.0 * weights[:, None] * self.sensors.evaluate_components(w), out)

    def add_hessian_action(self, w, weights, rho, out):
        weights = self._check_weights(weights)
        return self.sensors.apply_transpose_components(2.0 * weights[:, None] * self.sensors.evaluate_components(rho), out)


class RegionProbabilities(Observation):
    r"""Probabilities :math:`y_r = \int_{\Omega_r}|\psi|^2\,dx = w^TM_rw` of tagged regions (docs/theory.md §3).

    Parameters
    ----------
    W : dolfinx.fem.FunctionSpace
        The Schrödinger state space (two real components, or one complex).
    cell_tags : dolfinx.mesh.MeshTags
    tags : sequence of int
    """

    linear = False

    def __init__(self, W: fem.FunctionSpace, cell_tags, tags):
        self.comm = W.mesh.comm
        self.tags, regions = _regions(W.mesh, cell_tags, tags)
        u, v = ufl.TrialFunction(W), ufl.TestFunction(W)
        self.mass = [backend.assemble_matrix(backend.form(ufl.inner(u, v) * dx)) for dx, _ in regions]
        self._work = self.mass[0].createVecLeft()

    @property
    def num_sensors(self) -> int:
        return len(self.mass)

    def evaluate(self, w) -> np.ndarray:
        w = w.x.petsc_vec if isinstance(w, fem.Function) else w
        out = np.empty(self.num_sensors)
        for r, Mr in enumerate(self.mass):
            Mr.mult(w, self._work)
            out[r] = self._work.dot(w).real  # w^H M_r w
        return out

    def jacobian_action(self, w, rho) -> np.ndarray:
        out = np.empty(self.num_sensors)
        for r, Mr in enumerate(self.mass):
            Mr.mult(w, self._work)
            out[r] = 2.0 * self._work.dot(rho).real  # 2 Re(rho^H M_r w)
        return out

    def add_jacobian_transpose(self, w, weights, out):
        for wr, Mr in zip(self._check_weights(weights), self.mass):
            Mr.mult(w, self._work)
            out.axpy(2.0 * float(wr), self._work)
        return out

    def add_hessian_action(self, w, weights, rho, out):
        return self.add_jacobian_transpose(rho, weights, out)
