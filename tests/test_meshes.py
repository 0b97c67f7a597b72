"""The gmsh meshes of ``meshes/`` and :mod:`sensitivity.fem.meshes` (reading, building, lookups).

Checks: the committed meshes read serially and distributed have the same global
cell count and the right tagged lengths and areas; ``build_mesh`` makes the same
mesh in memory as the script wrote; the scripts are deterministic; a missing or
malformed file raises ``InvalidArgumentError`` on every rank instead of hanging."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from mpi4py import MPI

import sensitivity  # noqa: F401  (imports dolfinx_solver first)
import ufl
from dolfinx import default_scalar_type, fem
from sensitivity.errors import InvalidArgumentError
from sensitivity.fem.meshes import TaggedMesh, build_mesh, cells, facets, read_mesh, write_msh
from tests.mpi_harness import ROOT

MESHES = ROOT / "meshes"
CHANNEL = MESHES / "channel_obstacle.msh"
SQUARE = MESHES / "unit_square.msh"
L, H, R = 2.2, 0.41, 0.05


def _num_cells(data: TaggedMesh) -> int:
    return data.mesh.topology.index_map(data.mesh.topology.dim).size_global


def _measure(data: TaggedMesh, name: str | None = None) -> float:
    """Global length of the facet group ``name``, or the area if ``name`` is None (collective)."""
    msh = data.mesh
    one = fem.Constant(msh, default_scalar_type(1.0))
    if name is None:
        form = one * ufl.dx(domain=msh)
    else:
        ds = ufl.Measure("ds", domain=msh, subdomain_data=data.facet_tags)
        form = one * ds(data.tags[name])
    return msh.comm.allreduce(fem.assemble_scalar(fem.form(form)), op=MPI.SUM)


def _on_all_ranks(comm: MPI.Comm, ok: bool) -> bool:
    return comm.allreduce(bool(ok), op=MPI.LAND)


def _raises_everywhere(comm: MPI.Comm, match: str, func, *args, **kwargs) -> str:
    """Call ``func`` on every rank; each must raise InvalidArgumentError matching ``match``.

    Returns the message, which must be the same on every rank."""
    with pytest.raises(InvalidArgumentError, match=match) as info:
        func(*args, **kwargs)
    messages = comm.allgather(str(info.value))
    assert len(set(messages)) == 1, messages
    return messages[0]


def _rank0_path(comm: MPI.Comm, tmp_path, name: str, content: bytes | None = None):
    """A file written on rank 0 only; its path is broadcast (tmp_path differs per rank)."""
    path = None
    if comm.rank == 0:
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
    return comm.bcast(path, root=0)


# --------------------------------------------------------------------------- committed meshes


@pytest.mark.mpi
def test_channel_obstacle_distributed_matches_serial(comm):
    data = read_mesh(CHANNEL, comm)
    serial = read_mesh(CHANNEL, MPI.COMM_SELF)
    assert data.tags == {"fluid": 1, "inlet": 2, "outlet": 3, "walls": 4, "obstacle": 5}
    assert data.dims == {"fluid": 2, "inlet": 1, "outlet": 1, "walls": 1, "obstacle": 1}
    assert data.mesh.geometry.dim == 2 and data.mesh.topology.dim == 2
    n = _num_cells(data)
    assert n == _num_cells(serial)
    assert 500 < n < 5000
    owned = data.mesh.topology.index_map(2).size_local
    assert comm.allreduce(owned, op=MPI.MIN) > 0  # really distributed
    assert data.mesh.topology.index_map(0).size_global == serial.mesh.topology.index_map(0).size_global

    assert _measure(data, "inlet") == pytest.approx(H, rel=1e-12)
    assert _measure(data, "outlet") == pytest.approx(H, rel=1e-12)
    assert _measure(data, "walls") == pytest.approx(2 * L, rel=1e-12)
    obstacle = _measure(data, "obstacle")
    assert obstacle < 2 * math.pi * R  # an inscribed polygon
    assert obstacle == pytest.approx(2 * math.pi * R, rel=5e-3)
    area = _measure(data)
    assert area > L * H - math.pi * R**2
    assert area == pytest.approx(L * H - math.pi * R**2, rel=1e-3)
    assert area == pytest.approx(_measure(serial), rel=1e-12)


@pytest.mark.mpi
def test_unit_square_distributed_matches_serial(comm):
    data = read_mesh(SQUARE, comm)
    serial = read_mesh(SQUARE, MPI.COMM_SELF)
    assert data.tags == {"domain": 1, "left": 2, "right": 3, "bottom": 4, "top": 5}
    assert _num_cells(data) == _num_cells(serial)
    assert 50 < _num_cells(data) < 1000
    for side in ("left", "right", "bottom", "top"):
        assert _measure(data, side) == pytest.approx(1.0, rel=1e-12)
    assert _measure(data) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.mpi
def test_facets_locate_boundary_dofs(comm):
    data = read_mesh(CHANNEL, comm)
    msh = data.mesh
    V = fem.functionspace(msh, ("Lagrange", 1))
    fdim = msh.topology.dim - 1
    x = V.tabulate_dof_coordinates()
    owned = V.dofmap.index_map.size_local
    counts = {}
    for name in ("inlet", "outlet", "walls", "obstacle"):
        dofs = fem.locate_dofs_topological(V, fdim, facets(data, name))
        counts[name] = comm.allreduce(int(np.count_nonzero(dofs < owned)), op=MPI.SUM)
        pts = x[dofs]
        if name == "inlet":
            assert _on_all_ranks(comm, np.allclose(pts[:, 0], 0.0))
        elif name == "outlet":
            assert _on_all_ranks(comm, np.allclose(pts[:, 0], L))
        elif name == "walls":
            assert _on_all_ranks(comm, np.all(np.isclose(pts[:, 1], 0.0) | np.isclose(pts[:, 1], H)))
        else:
            radii = np.hypot(pts[:, 0] - 0.2, pts[:, 1] - 0.2)
            assert _on_all_ranks(comm, np.allclose(radii, R, rtol=1e-6))
    serial = read_mesh(CHANNEL, MPI.COMM_SELF)
    for name, count in counts.items():
        # an open polyline has one vertex more than edges, a closed one as many
        edges = len(facets(serial, name))
        polylines = {"inlet": 1, "outlet": 1, "walls": 2, "obstacle": 0}[name]  # 0: closed
        assert count == edges + polylines, name
    n_cells = comm.allreduce(int(np.count_nonzero(cells(data, "fluid") < msh.topology.index_map(2).size_local)))
    assert n_cells == _num_cells(data)


def test_lookup_errors():
    data = read_mesh(SQUARE, MPI.COMM_SELF)
    with pytest.raises(InvalidArgumentError, match="no physical group 'inlet'.*left"):
        facets(data, "inlet")
    with pytest.raises(InvalidArgumentError, match="dimension 2"):
        facets(data, "domain")
    with pytest.raises(InvalidArgumentError, match="dimension 1"):
        cells(data, "left")
    with pytest.raises(InvalidArgumentError, match="TaggedMesh"):
        facets(data.mesh, "left")


# --------------------------------------------------------------------------- build_mesh


@pytest.mark.mpi
def test_build_mesh_matches_committed_file(comm):
    built = build_mesh("channel_obstacle", comm, h=0.04)
    read = read_mesh(CHANNEL, comm)
    assert built.tags == read.tags and built.dims == read.dims
    assert _num_cells(built) == _num_cells(read)
    assert _measure(built) == pytest.approx(_measure(read), rel=1e-12)
    square = build_mesh("unit_square", comm)
    assert _num_cells(square) == _num_cells(read_mesh(SQUARE, comm))


@pytest.mark.mpi
def test_build_mesh_other_geometry_and_order(comm):
    center, radius, length, height = (0.5, 0.25), 0.1, 1.5, 0.5
    data = build_mesh("channel_obstacle", comm, h=0.1, length=length, height=height, center=center,
                      radius=radius, h_obstacle=0.03)
    assert _measure(data, "inlet") == pytest.approx(height, rel=1e-12)
    assert _measure(data, "walls") == pytest.approx(2 * length, rel=1e-12)
    assert _measure(data, "obstacle") == pytest.approx(2 * math.pi * radius, rel=5e-3)
    assert _measure(data) == pytest.approx(length * height - math.pi * radius**2, rel=2e-3)

    # quadratic geometry: the circle is resolved far better than by the polygon
    p1 = build_mesh("channel_obstacle", comm, h=0.1)
    p2 = build_mesh("channel_obstacle", comm, h=0.1, order=2)
    assert p2.mesh.geometry.cmaps[0].degree == 2
    assert _num_cells(p2) == _num_cells(p1)
    err1 = abs(_measure(p1, "obstacle") - 2 * math.pi * R)
    err2 = abs(_measure(p2, "obstacle") - 2 * math.pi * R)
    assert err2 < 1e-2 * err1

    coarse = build_mesh("unit_square", comm, h=0.25)
    assert _num_cells(coarse) < _num_cells(build_mesh("unit_square", comm, h=0.1))
    assert _measure(coarse, "top") == pytest.approx(1.0, rel=1e-12)


@pytest.mark.mpi
@pytest.mark.parametrize(
    ("kind", "kwargs", "match"),
    [
        ("disk", {}, "kind must be one of"),
        ("unit_square", {"h": -1.0}, "h must be positive"),
        ("unit_square", {"h": 0.1, "order": 4}, "order must be"),
        ("unit_square", {"radius": 0.1}, "unknown parameters"),
        ("channel_obstacle", {"radius": 0.3}, "strictly inside"),
        ("channel_obstacle", {"center": (0.2,)}, "center must be a pair"),
    ],
)
def test_build_mesh_rejects_bad_arguments(comm, kind, kwargs, match):
    _raises_everywhere(comm, match, build_mesh, kind, comm, **kwargs)


# --------------------------------------------------------------------------- bad files


@pytest.mark.mpi
def test_missing_file_raises_on_every_rank(comm):
    path = MESHES / "no_such_mesh.msh"
    message = _raises_everywhere(comm, "no such file", read_mesh, path, comm)
    assert str(path) in message


def _msh_without_physical_groups(path) -> None:
    import gmsh

    gmsh.initialize(["", "-nt", "1"], readConfigFiles=False, interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.occ.addRectangle(0, 0, 0, 1, 1)
        gmsh.model.occ.synchronize()
        gmsh.option.setNumber("Mesh.MeshSizeMax", 0.5)
        gmsh.model.mesh.generate(2)
        gmsh.option.setNumber("Mesh.SaveAll", 1)
        gmsh.write(str(path))
    finally:
        gmsh.finalize()


@pytest.mark.mpi
@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"hello garbage\n1 2 3\n", "no \\$MeshFormat header"),
        (b'Printf("a .geo script must not be run");\n', "no \\$MeshFormat header"),
        (b"", "no \\$MeshFormat header"),
        (b"$MeshFormat\n4.1 0 8\n$EndMeshFormat\n$Nodes\n1 2 garbage\n", "cannot read mesh file"),
        (SQUARE.read_bytes()[: len(SQUARE.read_bytes()) // 2], "cannot read mesh file"),
    ],
    ids=["text", "geo-script", "empty", "bad-nodes", "truncated"],
)
def test_malformed_file_raises_on_every_rank(comm, tmp_path, content, match):
    path = _rank0_path(comm, tmp_path, "bad.msh", content)
    message = _raises_everywhere(comm, match, read_mesh, path, comm)
    assert str(path) in message


@pytest.mark.mpi
def test_msh_without_physical_groups_raises_on_every_rank(comm, tmp_path):
    path = _rank0_path(comm, tmp_path, "nogroups.msh")
    if comm.rank == 0:
        _msh_without_physical_groups(path)
    comm.Barrier()
    _raises_everywhere(comm, "no physical groups", read_mesh, path, comm)


@pytest.mark.mpi
def test_missing_required_group_raises_on_every_rank(comm):
    _raises_everywhere(comm, r"lacks the physical groups \['inlet'\]", read_mesh, SQUARE, comm,
                       required=["left", "inlet"])
    data = read_mesh(CHANNEL, comm, required=("inlet", "outlet", "walls", "obstacle"))
    assert "obstacle" in data.tags


def test_bad_arguments():
    with pytest.raises(InvalidArgumentError, match="gdim"):
        read_mesh(SQUARE, MPI.COMM_SELF, gdim=4)
    with pytest.raises(InvalidArgumentError, match="path must be"):
        read_mesh(None, MPI.COMM_SELF)
    with pytest.raises(InvalidArgumentError, match="comm must be"):
        read_mesh(SQUARE, "world")
    with pytest.raises(InvalidArgumentError, match="gdim=1"):
        read_mesh(SQUARE, MPI.COMM_SELF, gdim=1)


# --------------------------------------------------------------------------- scripts


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_mesh_script_{name}", MESHES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scripts_reproduce_committed_meshes(tmp_path):
    square = _load_script("unit_square").build(tmp_path / "unit_square.msh")
    assert square.read_bytes() == SQUARE.read_bytes()
    _load_script("channel_obstacle").main(["--h", "0.04", "--output", str(tmp_path / "channel.msh")])
    assert (tmp_path / "channel.msh").read_bytes() == CHANNEL.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["channel.msh", "unit_square.msh"]  # no temp left


def test_write_msh_is_atomic_on_failure(tmp_path):
    target = tmp_path / "square.msh"
    target.write_bytes(b"old")
    with pytest.raises(InvalidArgumentError, match="strictly inside"):
        write_msh("channel_obstacle", target.with_name("c.msh"), radius=1.0)
    with pytest.raises(InvalidArgumentError, match="end in .msh"):
        write_msh("unit_square", tmp_path / "square.txt")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["square.msh"]


def test_user_gmsh_session_is_left_alone():
    import gmsh

    gmsh.initialize(["", "-nt", "1"], readConfigFiles=False, interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("mine")
        gmsh.option.setNumber("Mesh.Algorithm", 5)
        models = gmsh.model.list()
        data = read_mesh(SQUARE, MPI.COMM_SELF)
        build_mesh("unit_square", MPI.COMM_SELF, h=0.5)
        assert gmsh.isInitialized()
        assert gmsh.model.getCurrent() == "mine"
        assert gmsh.option.getNumber("Mesh.Algorithm") == 5
        assert gmsh.model.list() == models
    finally:
        gmsh.finalize()
    assert _num_cells(data) > 0
