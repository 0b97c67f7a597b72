"""The Stokes background flow, the field output (VTX series, gathered PNG snapshots) and
input checks of the tracer set-up, serially and under MPI (tests marked ``mpi``)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import ufl
from dolfinx import fem, mesh
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import (
    AdvectionDiffusion,
    FieldSeries,
    TriangleGather,
    VelocityField,
    facets,
    gather_by_coordinates,
    plot_fields,
    read_mesh,
    scatter_by_coordinates,
    stokes_velocity,
)
from sensitivity.parallel import run_on_root
from tests.mpi_harness import ROOT

H = 0.41


def _inflow(x):
    return np.vstack([4 * x[1] * (H - x[1]) / H**2, np.zeros_like(x[0])])


@pytest.fixture(scope="module")
def channel():
    data = read_mesh(ROOT / "meshes" / "channel_obstacle.msh", MPI.COMM_WORLD)
    return data, stokes_velocity(data, _inflow)


def _boundary_max(u, data, name):
    """max |u| over the dofs on a facet group (on every rank)."""
    V = u.function_space
    dofs = fem.locate_dofs_topological(V, 1, facets(data, name))
    bs = V.dofmap.index_map_bs
    local = np.abs(u.x.array.reshape(-1, bs)[dofs]).max(initial=0.0)
    return V.mesh.comm.allreduce(local, op=MPI.MAX)


@pytest.mark.mpi
def test_stokes_flow_satisfies_its_boundary_conditions(channel):
    data, u = channel
    comm = data.mesh.comm
    assert u.function_space.value_shape == (2,)
    assert _boundary_max(u, data, "walls") == 0.0 and _boundary_max(u, data, "obstacle") == 0.0
    # the inflow profile is imposed exactly at the inlet dofs
    V = u.function_space
    inlet = fem.locate_dofs_topological(V, 1, facets(data, "inlet"))
    x = V.tabulate_dof_coordinates()[inlet]
    err = np.abs(u.x.array.reshape(-1, 2)[inlet] - _inflow(x.T).T).max(initial=0.0)
    assert comm.allreduce(err, op=MPI.MAX) < 1e-13
    # flux through the outlet equals the inflow flux 2H/3 (discretely divergence-free velocity)
    n = ufl.FacetNormal(data.mesh)
    ds = ufl.Measure("ds", domain=data.mesh, subdomain_data=data.facet_tags)
    flux = {name: comm.allreduce(fem.assemble_scalar(fem.form(ufl.dot(u, n) * ds(data.tags[name]))))
            for name in ("inlet", "outlet")}
    assert flux["inlet"] == pytest.approx(-2 * H / 3, rel=1e-12)
    assert flux["outlet"] == pytest.approx(2 * H / 3, rel=1e-3)
    # the velocity (1.5 x the mean inflow at the centre, faster beside the cylinder) is rank-independent
    assert u.x.petsc_vec.norm() == pytest.approx(46.230092870939394, rel=1e-10)


@pytest.mark.mpi
def test_stokes_bad_input(channel):
    data, _ = channel
    with pytest.raises(InvalidArgumentError, match="no physical group 'inflow'"):
        stokes_velocity(data, _inflow, inlet="inflow")
    with pytest.raises(InvalidArgumentError, match="viscosity must be positive and finite, got -1"):
        stokes_velocity(data, _inflow, viscosity=-1)
    with pytest.raises(InvalidArgumentError, match="inflow must be callable"):
        stokes_velocity(data, 1.0)


@pytest.mark.mpi
def test_tracer_setup_rejects_a_velocity_in_the_wrong_space(channel, load_demo):
    data, u = channel
    demo = load_demo("velocity_sensitivity")
    args = argparse.Namespace(degree=1, kappa=1e-3, supg=True)
    scalar = fem.Function(fem.functionspace(data.mesh, ("Lagrange", 2)))
    with pytest.raises(InvalidArgumentError, match="velocity must be a vector field with 2 components"):
        demo.setup_problem(data, scalar, args)
    other = mesh.create_unit_square(data.mesh.comm, 3, 3)
    foreign = fem.Function(fem.functionspace(other, ("Lagrange", 1, (2,))))
    with pytest.raises(InvalidArgumentError, match="same mesh"):
        AdvectionDiffusion(fem.functionspace(data.mesh, ("Lagrange", 1)), VelocityField(foreign), 1e-3)
    setup = demo.setup_problem(data, u, args)  # the right space works
    assert setup.sensors.num_sensors == 4


def _square_functions(comm, degree=1):
    msh = mesh.create_unit_square(comm, 6, 5)
    V = fem.functionspace(msh, ("Lagrange", degree))
    f, g = fem.Function(V, name="theta"), fem.Function(V, name="rho")
    f.interpolate(lambda x: x[0] + 2 * x[1])
    g.interpolate(lambda x: np.sin(3 * x[0]))
    return V, f, g


@pytest.mark.mpi
def test_field_series_is_renamed_into_place_only_when_complete(comm, tmp_path_factory):
    base = run_on_root(comm, lambda: tmp_path_factory.mktemp("vtx"))
    base = comm.bcast(base, root=0)
    V, f, g = _square_functions(comm)
    with FieldSeries(base / "ok.bp", [f, g]) as series:
        for t in (0.0, 0.5):
            series.write(t)
        assert not (base / "ok.bp").exists()  # still under the temporary name
    assert (base / "ok.bp" / "md.idx").is_file()
    with pytest.raises(RuntimeError, match="interrupted"):
        with FieldSeries(base / "broken.bp", [f]) as series:
            series.write(0.0)
            raise RuntimeError("interrupted")
    comm.Barrier()
    assert sorted(p.name for p in base.iterdir()) == ["ok.bp"]
    with pytest.raises(InvalidArgumentError, match="needs a .bp path"):
        FieldSeries(base / "x.vtk", [f])
    W = fem.functionspace(V.mesh, ("Lagrange", 2))
    with pytest.raises(InvalidArgumentError, match="not in the same space"):
        FieldSeries(base / "mixed.bp", [f, fem.Function(W, name="p2")])


@pytest.mark.mpi
@pytest.mark.parametrize("degree", [1, 2])
def test_gathered_fields_cover_the_mesh_and_plot(comm, tmp_path_factory, degree):
    V, f, g = _square_functions(comm, degree)
    gather = TriangleGather(V)
    values = gather.values(f)
    if comm.rank == 0:
        assert gather.xy.shape == (60, 3, 2) and values.shape == (60, 3)
        # each vertex value is the (linear) field at that vertex
        np.testing.assert_allclose(values, gather.xy[..., 0] + 2 * gather.xy[..., 1], atol=1e-13)
    else:
        assert values is None and gather.xy is None
    out = comm.bcast(run_on_root(comm, lambda: tmp_path_factory.mktemp("png")), root=0)
    path = plot_fields(gather, [("f", values), ("g", gather.values(g))], out / "fields.png", symmetric=[False, True])
    comm.Barrier()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_needs_a_scalar_triangle_space(comm):
    msh = mesh.create_unit_square(comm, 2, 2, cell_type=mesh.CellType.quadrilateral)
    with pytest.raises(InvalidArgumentError, match="triangle"):
        TriangleGather(fem.functionspace(msh, ("Lagrange", 1)))


@pytest.mark.mpi
@pytest.mark.parametrize("shape", [(), (2,)])
def test_fields_move_between_partitions_by_coordinates(comm, shape):
    """gather_by_coordinates on the distributed mesh, scatter_by_coordinates into a COMM_SELF
    copy: the same field; a space without stored values at its dofs is refused on every rank."""
    def field(c):
        msh = mesh.create_unit_square(c, 5, 4)
        f = fem.Function(fem.functionspace(msh, ("Lagrange", 2, shape) if shape else ("Lagrange", 2)))
        f.interpolate(lambda x: np.sin(3 * x[0]) + x[1] ** 2 if not shape else np.vstack([x[0] * x[1], np.cos(x[1])]))
        return f

    coords, values = gather_by_coordinates(field(comm))
    assert values.shape == ((coords.shape[0],) + shape)
    copy = field(MPI.COMM_SELF)
    copy.x.array[:] = 0.0
    scatter_by_coordinates(copy, coords, values)
    expected = field(MPI.COMM_SELF)
    np.testing.assert_allclose(copy.x.array, expected.x.array, rtol=0, atol=1e-15)
    with pytest.raises(InvalidArgumentError, match=r"no stored value at \d+ dof coordinates"):
        scatter_by_coordinates(field(comm), coords[:-3], values[:-3])
