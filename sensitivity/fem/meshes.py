r"""Tagged gmsh meshes: the geometries of ``meshes/`` and reading them in parallel.

Two geometries are defined here once, for the scripts in ``meshes/`` (which
write the committed ``.msh`` files) and for :func:`build_mesh` (which makes
them in memory at any resolution):

``"channel_obstacle"``
    The channel :math:`[0, L]\times[0, H]` minus the disk of radius :math:`r`
    about :math:`c` (by default the DFG flow-around-a-cylinder geometry,
    :math:`L = 2.2`, :math:`H = 0.41`, :math:`c = (0.2, 0.2)`, :math:`r = 0.05`),
    refined towards the obstacle. Physical groups: ``"fluid"`` (cells, tag 1),
    ``"inlet"`` (:math:`x = 0`, tag 2), ``"outlet"`` (:math:`x = L`, tag 3),
    ``"walls"`` (:math:`y = 0` and :math:`y = H`, tag 4), ``"obstacle"`` (the
    circle, tag 5).
``"unit_square"``
    :math:`[0, 1]^2` with a uniform size. Physical groups: ``"domain"``
    (cells, tag 1), ``"left"`` (2), ``"right"`` (3), ``"bottom"`` (4),
    ``"top"`` (5).

Parallel reading follows the package rule that an error found on one rank is
raised on every rank: the file is opened, parsed and checked on rank 0 only,
the verdict is broadcast, and every rank raises
:class:`~sensitivity.errors.InvalidArgumentError` with the same message before
the collective mesh distribution (``dolfinx.io.gmsh.model_to_mesh``) starts.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from dolfinx.io.gmsh import extract_geometry, extract_topology_and_markers, model_to_mesh
from dolfinx.mesh import GhostMode, Mesh, MeshTags, create_cell_partitioner
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError
from sensitivity.io import atomic_write

__all__ = [
    "KINDS",
    "TaggedMesh",
    "build_mesh",
    "cells",
    "channel_obstacle_model",
    "facets",
    "read_mesh",
    "unit_square_model",
    "write_msh",
]

#: gmsh cell types DOLFINx 0.11 can read (``dolfinx.io.gmsh._gmsh_to_cells``, points excluded).
_SUPPORTED_CELLS = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 21, 26, 29, 36, 92}

#: gmsh options set while this module uses gmsh (restored afterwards).
_GMSH_OPTIONS: dict[str, float] = {
    "General.Terminal": 0,
    "General.Verbosity": 2,
    "General.NumThreads": 1,
    "Mesh.MaxNumThreads1D": 1,
    "Mesh.MaxNumThreads2D": 1,
    "Mesh.MaxNumThreads3D": 1,
    "Mesh.RandomSeed": 1,
    "Mesh.Algorithm": 6,  # Frontal-Delaunay
    "Mesh.MeshSizeFromPoints": 0,
    "Mesh.MeshSizeFromCurvature": 0,
    "Mesh.MeshSizeExtendFromBoundary": 0,
    "Mesh.MshFileVersion": 4.1,
    "Mesh.Binary": 0,
    "Mesh.SaveAll": 0,
}


class TaggedMesh(NamedTuple):
    """A distributed mesh with its gmsh physical groups.

    Attributes
    ----------
    mesh : dolfinx.mesh.Mesh
        The mesh, distributed over the communicator it was read on.
    cell_tags : dolfinx.mesh.MeshTags or None
        Cell markers (the values are the physical-group tags of ``tags``).
    facet_tags : dolfinx.mesh.MeshTags or None
        Facet markers; ``None`` if the file has no physical group of facets.
    tags : dict[str, int]
        Physical-group name -> tag, identical on every rank. Unnamed groups are
        left out.
    dims : dict[str, int]
        Physical-group name -> topological dimension of the group.
    """

    mesh: Mesh
    cell_tags: MeshTags | None
    facet_tags: MeshTags | None
    tags: dict[str, int]
    dims: dict[str, int]


# --------------------------------------------------------------------------- gmsh sessions


@contextlib.contextmanager
def _gmsh_session(model_name: str) -> Iterator[Any]:
    """A fresh gmsh model with this module's options; yields the ``gmsh`` module (rank-local).

    Initializes gmsh (one thread, no configuration files, no SIGINT handler)
    if it is not running and finalizes it afterwards; inside an existing gmsh
    session it adds a model, and afterwards removes it and restores the
    options and the previously current model.
    """
    import gmsh

    owner = not gmsh.isInitialized()
    if owner:
        gmsh.initialize(["", "-nt", "1"], readConfigFiles=False, interruptible=False)
        previous_model, saved = None, {}
    else:
        previous_model = gmsh.model.getCurrent()
        saved = {key: gmsh.option.getNumber(key) for key in _GMSH_OPTIONS}
    try:
        for key, value in _GMSH_OPTIONS.items():
            gmsh.option.setNumber(key, value)
        gmsh.model.add(model_name)
        yield gmsh
    finally:
        if owner:
            gmsh.finalize()
        else:
            with contextlib.suppress(Exception):
                gmsh.model.setCurrent(model_name)
                gmsh.model.remove()
            for key, value in saved.items():
                gmsh.option.setNumber(key, value)
            if previous_model:
                with contextlib.suppress(Exception):
                    gmsh.model.setCurrent(previous_model)


# --------------------------------------------------------------------------- geometries


def _positive(name: str, value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(x) or x <= 0.0:
        raise InvalidArgumentError(f"{name} must be positive and finite, got {value!r}")
    return x


def _order(order: Any) -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order not in (1, 2, 3):
        raise InvalidArgumentError(f"order must be 1, 2 or 3, got {order!r}")
    return int(order)


def _check_channel(length, height, center, radius, h, h_obstacle, order) -> dict[str, Any]:
    length = _positive("length", length)
    height = _positive("height", height)
    radius = _positive("radius", radius)
    h = _positive("h", h)
    h_obstacle = h / 4.0 if h_obstacle is None else _positive("h_obstacle", h_obstacle)
    try:
        cx, cy = (float(c) for c in center)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"center must be a pair of numbers, got {center!r}") from None
    if not (math.isfinite(cx) and math.isfinite(cy)):
        raise InvalidArgumentError(f"center must be finite, got {center!r}")
    if not (radius < cx < length - radius and radius < cy < height - radius):
        raise InvalidArgumentError(
            f"the obstacle (center {center!r}, radius {radius!r}) must lie strictly inside "
            f"the channel [0, {length!r}] x [0, {height!r}]"
        )
    return dict(length=length, height=height, center=(cx, cy), radius=radius, h=h,
                h_obstacle=h_obstacle, order=_order(order))


def _classify_curves(gmsh, dim2_tags: list[int], sides: dict[str, Callable[[float, float], bool]],
                     rest: str | None) -> dict[str, list[int]]:
    """Boundary curves of the surfaces, grouped by a predicate on their centre of mass."""
    boundary = gmsh.model.getBoundary([(2, t) for t in dim2_tags], combined=True, oriented=False)
    groups: dict[str, list[int]] = {name: [] for name in sides}
    if rest is not None:
        groups[rest] = []
    for _, curve in sorted(boundary):
        x, y, _ = gmsh.model.occ.getCenterOfMass(1, curve)
        for name, test in sides.items():
            if test(x, y):
                groups[name].append(curve)
                break
        else:
            if rest is None:
                raise InvalidArgumentError(f"unexpected boundary curve {curve} at ({x:g}, {y:g})")
            groups[rest].append(curve)
    for name, curves in groups.items():
        if not curves:
            raise InvalidArgumentError(f"no boundary curve found for {name!r}")
    return groups


def channel_obstacle_model(gmsh, *, length: float = 2.2, height: float = 0.41,
                           center: tuple[float, float] = (0.2, 0.2), radius: float = 0.05,
                           h: float = 0.04, h_obstacle: float | None = None, order: int = 1) -> None:
    """Add the meshed channel with a circular obstacle to gmsh's current model (rank-local).

    Parameters
    ----------
    gmsh : module
        The initialized ``gmsh`` module; the geometry, physical groups and mesh
        are added to its current model.
    length, height : float
        Channel :math:`[0, L]\\times[0, H]`.
    center : tuple of float
        Centre of the obstacle; the disk must lie strictly inside the channel.
    radius : float
        Radius of the obstacle.
    h : float
        Element size away from the obstacle.
    h_obstacle : float, optional
        Element size on the obstacle (default ``h / 4``); the size grows
        linearly to ``h`` over a distance ``4 * radius`` from the circle.
    order : int
        Geometric order of the elements (1, 2 or 3); higher-order nodes lie on
        the circle.

    Raises
    ------
    InvalidArgumentError
        If a parameter is invalid or the obstacle does not fit in the channel.
    """
    p = _check_channel(length, height, center, radius, h, h_obstacle, order)
    L, H, (cx, cy), r = p["length"], p["height"], p["center"], p["radius"]
    occ = gmsh.model.occ
    rect = occ.addRectangle(0.0, 0.0, 0.0, L, H)
    disk = occ.addDisk(cx, cy, 0.0, r, r)
    out, _ = occ.cut([(2, rect)], [(2, disk)])
    occ.synchronize()
    surfaces = sorted(t for d, t in out if d == 2)
    tol = 1e-8 * max(L, H)
    curves = _classify_curves(
        gmsh, surfaces,
        {
            "inlet": lambda x, y: abs(x) < tol,
            "outlet": lambda x, y: abs(x - L) < tol,
            "walls": lambda x, y: abs(y) < tol or abs(y - H) < tol,
        },
        rest="obstacle",
    )
    gmsh.model.addPhysicalGroup(2, surfaces, tag=1, name="fluid")
    for tag, name in enumerate(("inlet", "outlet", "walls", "obstacle"), start=2):
        gmsh.model.addPhysicalGroup(1, curves[name], tag=tag, name=name)

    field = gmsh.model.mesh.field
    distance = field.add("Distance")
    field.setNumbers(distance, "CurvesList", curves["obstacle"])
    field.setNumber(distance, "Sampling", 200)
    threshold = field.add("Threshold")
    field.setNumber(threshold, "InField", distance)
    field.setNumber(threshold, "SizeMin", p["h_obstacle"])
    field.setNumber(threshold, "SizeMax", p["h"])
    field.setNumber(threshold, "DistMin", 0.0)
    field.setNumber(threshold, "DistMax", 4.0 * r)
    field.setAsBackgroundMesh(threshold)

    gmsh.model.mesh.generate(2)
    gmsh.model.mesh.setOrder(p["order"])


def unit_square_model(gmsh, *, h: float = 0.1, order: int = 1) -> None:
    """Add the meshed unit square (uniform element size ``h``) to gmsh's current model (rank-local).

    Parameters
    ----------
    gmsh : module
        The initialized ``gmsh`` module.
    h : float
        Element size.
    order : int
        Geometric order of the elements (1, 2 or 3).

    Raises
    ------
    InvalidArgumentError
        If a parameter is invalid.
    """
    h = _positive("h", h)
    order = _order(order)
    occ = gmsh.model.occ
    square = occ.addRectangle(0.0, 0.0, 0.0, 1.0, 1.0)
    occ.synchronize()
    tol = 1e-8
    curves = _classify_curves(
        gmsh, [square],
        {
            "left": lambda x, y: abs(x) < tol,
            "right": lambda x, y: abs(x - 1.0) < tol,
            "bottom": lambda x, y: abs(y) < tol,
            "top": lambda x, y: abs(y - 1.0) < tol,
        },
        rest=None,
    )
    gmsh.model.addPhysicalGroup(2, [square], tag=1, name="domain")
    for tag, name in enumerate(("left", "right", "bottom", "top"), start=2):
        gmsh.model.addPhysicalGroup(1, curves[name], tag=tag, name=name)
    size = gmsh.model.mesh.field.add("MathEval")
    gmsh.model.mesh.field.setString(size, "F", repr(h))
    gmsh.model.mesh.field.setAsBackgroundMesh(size)
    gmsh.model.mesh.generate(2)
    gmsh.model.mesh.setOrder(order)


#: The geometries :func:`build_mesh` and :func:`write_msh` know, by name.
KINDS: dict[str, Callable[..., None]] = {
    "channel_obstacle": channel_obstacle_model,
    "unit_square": unit_square_model,
}


def _kind(kind: Any) -> Callable[..., None]:
    try:
        return KINDS[kind]
    except (KeyError, TypeError):
        raise InvalidArgumentError(f"kind must be one of {sorted(KINDS)}, got {kind!r}") from None


def write_msh(kind: str, path: str | os.PathLike, **params: Any) -> Path:
    """Generate a geometry of :data:`KINDS` with gmsh and write it to a ``.msh`` file (rank-local).

    The file (gmsh MSH 4.1, ASCII, physical groups only) is written to a
    temporary file in the same directory and moved into place with
    :func:`os.replace`, so readers never see a partial file. The output is
    deterministic (one thread, fixed algorithm and seed).

    Parameters
    ----------
    kind : str
        ``"channel_obstacle"`` or ``"unit_square"``.
    path : str or os.PathLike
        Output file; must end in ``.msh``.
    **params
        Keyword arguments of :func:`channel_obstacle_model` or
        :func:`unit_square_model`.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    build = _kind(kind)
    path = Path(path)
    if path.suffix != ".msh":
        raise InvalidArgumentError(f"path must end in .msh, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)

    def writer(tmp: str) -> None:
        with _gmsh_session(kind) as gmsh:
            build(gmsh, **params)
            gmsh.write(tmp)

    return atomic_write(path, writer)


# --------------------------------------------------------------------------- reading


def _inspect_model(gmsh, gdim: int, required: tuple[str, ...]) -> tuple[dict[str, int], dict[str, int]]:
    """Check on the root rank that ``model_to_mesh`` will succeed; returns (tags, dims)."""
    model = gmsh.model
    groups = model.getPhysicalGroups()
    if not groups:
        raise InvalidArgumentError("it has no physical groups")
    element_dims = [d for d in range(4) if len(model.mesh.getElementTypes(d)) > 0]
    if not element_dims:
        raise InvalidArgumentError("it has no mesh elements")
    tdim = max(element_dims)
    if tdim > gdim:
        raise InvalidArgumentError(f"its cells have dimension {tdim} > gdim={gdim}")
    cell_types = list(model.mesh.getElementTypes(tdim))
    if len(cell_types) != 1:
        raise InvalidArgumentError(f"it mixes cell types {cell_types}; one cell type is required")
    if cell_types[0] not in _SUPPORTED_CELLS:
        raise InvalidArgumentError(f"its cell type (gmsh element type {cell_types[0]}) is not supported")
    if not any(d == tdim for d, _ in groups):
        raise InvalidArgumentError(f"it has no physical group of cells (dimension {tdim})")

    node_tags, _, _ = model.mesh.getNodes()
    if len(node_tags) == 0:
        raise InvalidArgumentError("it has no nodes")
    if np.any(np.sort(node_tags) != np.arange(1, len(node_tags) + 1)):
        model.mesh.renumberNodes()
    x = extract_geometry(model)
    if gdim < 3:
        scale = max(1.0, float(np.max(np.abs(x))))
        if float(np.max(np.abs(x[:, gdim:]))) > 1e-10 * scale:
            raise InvalidArgumentError(f"its nodes do not lie in the first {gdim} coordinates (gdim={gdim})")

    topologies, _ = extract_topology_and_markers(model)
    _, all_cells, _ = model.mesh.getElements(dim=tdim, tag=-1)
    tagged = topologies.get(cell_types[0], {}).get("entity_tags", np.empty(0))
    all_cells = np.concatenate([np.asarray(c) for c in all_cells]) if all_cells else np.empty(0)
    if len(tagged) != len(all_cells) or len(np.unique(tagged)) != len(tagged):
        raise InvalidArgumentError(
            f"its cells must each be in exactly one physical group of dimension {tdim} "
            f"({len(all_cells)} cells, {len(tagged)} tagged, {len(np.unique(tagged))} distinct)"
        )

    tags: dict[str, int] = {}
    dims: dict[str, int] = {}
    for dim, tag in groups:
        name = model.getPhysicalName(dim, tag)
        if not name:
            continue
        if name in tags:
            raise InvalidArgumentError(f"physical group name {name!r} is used twice")
        tags[name], dims[name] = int(tag), int(dim)
    missing = [name for name in required if name not in tags]
    if missing:
        raise InvalidArgumentError(f"it lacks the physical groups {missing} (it has {sorted(tags)})")
    return tags, dims


def _distribute(comm: MPI.Comm, load: Callable[[Any], None], what: str, gdim: int,
                required: tuple[str, ...], ghost_mode: GhostMode, root: int = 0) -> TaggedMesh:
    """Load a gmsh model on ``root``, check it, broadcast the verdict, then distribute (collective)."""
    partitioner = create_cell_partitioner(ghost_mode, 2) if comm.size > 1 else None
    if comm.rank != root:
        verdict = comm.bcast(None, root=root)
        if isinstance(verdict, str):
            raise InvalidArgumentError(verdict)
        data = model_to_mesh(None, comm, root, gdim=gdim, partitioner=partitioner)
        tags, dims = verdict
        return TaggedMesh(data.mesh, data.cell_tags, data.facet_tags, tags, dims)

    with contextlib.ExitStack() as stack:
        verdict: str | tuple[dict[str, int], dict[str, int]]
        try:
            gmsh = stack.enter_context(_gmsh_session("sensitivity"))
            load(gmsh)
            verdict = _inspect_model(gmsh, gdim, required)
        except InvalidArgumentError as exc:
            verdict = f"{what}: {exc}"
        except Exception as exc:  # gmsh raises bare Exception; re-raised on every rank below
            kind = "" if type(exc) is Exception else f"{type(exc).__name__}: "
            verdict = f"{what}: {kind}{exc}"
        comm.bcast(verdict, root=root)
        if isinstance(verdict, str):
            raise InvalidArgumentError(verdict)
        data = model_to_mesh(gmsh.model, comm, root, gdim=gdim, partitioner=partitioner)
    tags, dims = verdict
    return TaggedMesh(data.mesh, data.cell_tags, data.facet_tags, tags, dims)


def _check_common(comm: Any, gdim: Any, required: Any, ghost_mode: Any) -> tuple[str, ...]:
    if not isinstance(comm, MPI.Comm) or comm == MPI.COMM_NULL:
        raise InvalidArgumentError(f"comm must be an mpi4py communicator, got {comm!r}")
    if isinstance(gdim, bool) or gdim not in (1, 2, 3):
        raise InvalidArgumentError(f"gdim must be 1, 2 or 3, got {gdim!r}")
    if not isinstance(ghost_mode, GhostMode):
        raise InvalidArgumentError(f"ghost_mode must be a dolfinx.mesh.GhostMode, got {ghost_mode!r}")
    if isinstance(required, str):
        required = (required,)
    try:
        names = tuple(required)
    except TypeError:
        raise InvalidArgumentError(f"required must be an iterable of names, got {required!r}") from None
    if not all(isinstance(n, str) for n in names):
        raise InvalidArgumentError(f"required must hold physical-group names, got {required!r}")
    return names


def _looks_like_msh(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(256)
    return head.lstrip().startswith(b"$MeshFormat")


def read_mesh(path: str | os.PathLike, comm: MPI.Comm = MPI.COMM_WORLD, gdim: int = 2, *,
              required: Iterable[str] = (), ghost_mode: GhostMode = GhostMode.none) -> TaggedMesh:
    """Read a gmsh ``.msh`` file on rank 0 and distribute the mesh and its tags (collective).

    Rank 0 opens and parses the file and checks it; every rank receives the
    verdict, so a missing or malformed file raises the same error on all ranks
    and none is left waiting in a collective. The mesh is then distributed with
    ``dolfinx.io.gmsh.model_to_mesh``.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.msh`` file (MSH 2 or 4, ASCII or binary); only rank 0's value is
        used.
    comm : mpi4py.MPI.Comm
        Communicator to distribute the mesh over.
    gdim : int
        Geometric dimension; coordinates beyond it must be zero.
    required : iterable of str
        Physical-group names the file must have.
    ghost_mode : dolfinx.mesh.GhostMode
        Ghosting of the distributed mesh (``shared_facet`` for interior-facet
        integrals).

    Returns
    -------
    TaggedMesh
        The mesh, cell and facet tags and the physical-group names.

    Raises
    ------
    InvalidArgumentError
        On every rank, if the file does not exist, is not a gmsh mesh, cannot be
        parsed, has no physical group covering every cell exactly once, mixes
        cell types, or lacks a ``required`` group; the message names the path.
    """
    names = _check_common(comm, gdim, required, ghost_mode)
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgumentError(f"path must be a str or os.PathLike, got {path!r}")
    file = Path(path)

    def load(gmsh) -> None:
        if not file.exists():
            raise InvalidArgumentError("no such file")
        if not file.is_file():
            raise InvalidArgumentError("not a regular file")
        # gmsh parses any file it does not recognise as a .geo script; refuse those.
        if not _looks_like_msh(file):
            raise InvalidArgumentError("not a gmsh .msh file (no $MeshFormat header)")
        gmsh.merge(str(file))

    return _distribute(comm, load, f"cannot read mesh file {str(file)!r}", gdim, names, ghost_mode)


def build_mesh(kind: str, comm: MPI.Comm = MPI.COMM_WORLD, *, h: float | None = None, order: int = 1,
               ghost_mode: GhostMode = GhostMode.none, **geometry: Any) -> TaggedMesh:
    """Generate a geometry of :data:`KINDS` on rank 0 with gmsh, in memory, and distribute it (collective).

    Parameters
    ----------
    kind : str
        ``"channel_obstacle"`` or ``"unit_square"``.
    comm : mpi4py.MPI.Comm
        Communicator to distribute the mesh over.
    h : float, optional
        Element size (far from the obstacle for the channel); the default is the
        geometry function's (0.04 for the channel, 0.1 for the square).
    order : int
        Geometric order of the elements (1, 2 or 3).
    ghost_mode : dolfinx.mesh.GhostMode
        Ghosting of the distributed mesh.
    **geometry
        Further keyword arguments of :func:`channel_obstacle_model`
        (``length``, ``height``, ``center``, ``radius``, ``h_obstacle``).

    Returns
    -------
    TaggedMesh
        The mesh (``gdim = 2``) with its cell and facet tags.

    Raises
    ------
    InvalidArgumentError
        On every rank, for an unknown ``kind``, a bad parameter, or if gmsh
        fails to mesh the geometry.
    """
    build = _kind(kind)
    _check_common(comm, 2, (), ghost_mode)
    params = dict(geometry, order=order)
    if h is not None:
        params["h"] = h
    allowed = {"length", "height", "center", "radius", "h_obstacle"} if kind == "channel_obstacle" else set()
    unknown = sorted(set(geometry) - allowed)
    if unknown:
        raise InvalidArgumentError(f"unknown parameters {unknown} for kind {kind!r}")
    if kind == "channel_obstacle":
        defaults = dict(length=2.2, height=0.41, center=(0.2, 0.2), radius=0.05, h=0.04, h_obstacle=None)
        _check_channel(**{**defaults, **params})
    else:
        _positive("h", params.get("h", 0.1))
        _order(order)

    def load(gmsh) -> None:
        build(gmsh, **params)

    return _distribute(comm, load, f"cannot build mesh {kind!r}", 2, (), ghost_mode)


# --------------------------------------------------------------------------- lookups


def _lookup(mesh_data: TaggedMesh, name: Any, dim: int, what: str) -> int:
    if not isinstance(mesh_data, TaggedMesh):
        raise InvalidArgumentError(f"mesh_data must be a TaggedMesh, got {type(mesh_data).__name__}")
    if name not in mesh_data.tags:
        raise InvalidArgumentError(f"no physical group {name!r}; the mesh has {sorted(mesh_data.tags)}")
    if mesh_data.dims[name] != dim:
        raise InvalidArgumentError(
            f"physical group {name!r} has dimension {mesh_data.dims[name]}, not the {what} dimension {dim}"
        )
    return mesh_data.tags[name]


def facets(mesh_data: TaggedMesh, name: str) -> npt.NDArray[np.int32]:
    """Local indices of the facets of the boundary ``name`` (not collective).

    Suitable for ``dolfinx.fem.locate_dofs_topological(V, tdim - 1, facets(...))``.

    Parameters
    ----------
    mesh_data : TaggedMesh
        From :func:`read_mesh` or :func:`build_mesh`.
    name : str
        A physical group of facets, e.g. ``"inlet"``.

    Returns
    -------
    numpy.ndarray of int32
        Process-local facet indices (possibly empty on some ranks).

    Raises
    ------
    InvalidArgumentError
        If ``name`` is not a physical group of facets.
    """
    tdim = mesh_data.mesh.topology.dim if isinstance(mesh_data, TaggedMesh) else -1
    tag = _lookup(mesh_data, name, tdim - 1, "facet")
    if mesh_data.facet_tags is None:  # pragma: no cover - a facet group always gives facet tags
        raise InvalidArgumentError("the mesh has no facet tags")
    return mesh_data.facet_tags.find(tag)


def cells(mesh_data: TaggedMesh, name: str) -> npt.NDArray[np.int32]:
    """Local indices of the cells of the physical group ``name`` (not collective).

    Parameters
    ----------
    mesh_data : TaggedMesh
        From :func:`read_mesh` or :func:`build_mesh`.
    name : str
        A physical group of cells, e.g. ``"fluid"``.

    Returns
    -------
    numpy.ndarray of int32
        Process-local cell indices.

    Raises
    ------
    InvalidArgumentError
        If ``name`` is not a physical group of cells.
    """
    tdim = mesh_data.mesh.topology.dim if isinstance(mesh_data, TaggedMesh) else -1
    tag = _lookup(mesh_data, name, tdim, "cell")
    if mesh_data.cell_tags is None:  # pragma: no cover
        raise InvalidArgumentError("the mesh has no cell tags")
    return mesh_data.cell_tags.find(tag)
