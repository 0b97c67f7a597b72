r"""Point observations :math:`y_k = \theta(x_k) = \sum_j \phi_j(x_k)\,\theta_j` across MPI ranks.

The observation operator is a sparse matrix :math:`P` with one row per sensor.
Each sensor is owned by exactly one rank (the lowest rank whose owned cells
contain it); that rank stores the row as (local dofs, basis values), computed
once by evaluating the cell's basis functions at the point. Then

- :meth:`PointSensors.evaluate` gives :math:`P\theta` on every rank (collective), and
- :meth:`PointSensors.apply_transpose` adds :math:`P^T w` into a dof vector, the
  source term of adjoint equations.

Points outside the mesh raise :class:`~sensitivity.errors.InvalidArgumentError`
on every rank.
"""

from __future__ import annotations

import dolfinx.fem as fem
import dolfinx.geometry as geometry
import numpy as np
import ufl
from mpi4py import MPI
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import _backend

__all__ = ["PointSensors", "RegionAverages"]


class PointSensors:
    r"""Point-evaluation operator :math:`P` for a scalar Lagrange space.

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
        # Rows of P for the local sensors: evaluate each basis function of the cell at the point.
        work = fem.Function(V)
        self._dofs, self._weights = [], []
        for k in self._local:
            cell = colliding.links(k)[0]
            dofs = V.dofmap.cell_dofs(cell)
            weights = np.empty(len(dofs))
            for i, dof in enumerate(dofs):
                work.x.array[:] = 0.0
                work.x.array[dof] = 1.0
                weights[i] = work.eval(self.points[k], np.array([cell], dtype=np.int32))[0]
            self._dofs.append(np.asarray(dofs, dtype=np.int32))
            self._weights.append(weights)
        self._work = work

    @property
    def num_sensors(self) -> int:
        return len(self.points)

    def evaluate(self, theta: fem.Function | PETSc.Vec) -> np.ndarray:
        r""":math:`P\theta` as an array of shape (n,) on every rank (collective)."""
        if isinstance(theta, fem.Function):
            values = theta.x.array
        else:
            theta.copy(self._work.x.petsc_vec)
            self._work.x.scatter_forward()
            values = self._work.x.array
        local = np.zeros(self.num_sensors)
        for k, dofs, w in zip(self._local, self._dofs, self._weights):
            local[k] = w @ values[dofs]
        out = np.empty_like(local)
        self.comm.Allreduce(local, out, op=MPI.SUM)
        return out

    def apply_transpose(self, w, out: PETSc.Vec) -> PETSc.Vec:
        r"""``out += P^T w`` for sensor weights ``w`` of shape (n,), the same on every rank (collective)."""
        w = np.asarray(w, dtype=float)
        if w.shape != (self.num_sensors,):
            raise InvalidArgumentError(f"w must have shape ({self.num_sensors},), got {w.shape}")
        work = self._work
        work.x.array[:] = 0.0
        for k, dofs, weights in zip(self._local, self._dofs, self._weights):
            np.add.at(work.x.array, dofs, w[k] * weights)
        work.x.petsc_vec.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        out.array[:] += work.x.petsc_vec.array
        return out


class RegionAverages:
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
        self.tags = [int(t) for t in np.atleast_1d(tags)]
        if not self.tags:
            raise InvalidArgumentError("at least one region tag is needed")
        self.comm = V.mesh.comm
        dx = ufl.Measure("dx", domain=V.mesh, subdomain_data=cell_tags)
        phi = ufl.TestFunction(V)
        self.rows = []
        for tag in self.tags:
            area = self.comm.allreduce(fem.assemble_scalar(fem.form(fem.Constant(V.mesh, 1.0) * dx(tag))))
            if area <= 0.0:
                raise InvalidArgumentError(f"region tag {tag} has no cells")
            self.rows.append(_backend.assemble_vector(_backend.form(phi / area * dx(tag))))

    @property
    def num_sensors(self) -> int:
        return len(self.rows)

    def evaluate(self, theta: fem.Function | PETSc.Vec) -> np.ndarray:
        """The region averages, shape (r,), on every rank (collective)."""
        vec = theta.x.petsc_vec if isinstance(theta, fem.Function) else theta
        return np.array([row.dot(vec) for row in self.rows])

    def apply_transpose(self, w, out: PETSc.Vec) -> PETSc.Vec:
        """``out += sum_r w_r m_r`` (collective)."""
        w = np.asarray(w, dtype=float)
        if w.shape != (self.num_sensors,):
            raise InvalidArgumentError(f"w must have shape ({self.num_sensors},), got {w.shape}")
        for wr, row in zip(w, self.rows):
            out.axpy(float(wr), row)
        return out
