r"""Tagged gmsh meshes read or generated on one rank and distributed over all of them.

Parallel reading follows the package rule that an error found on one rank is
raised on every rank: the file is opened, parsed and checked on rank 0 only,
the verdict is broadcast, and every rank raises
:class:`~sensitivity.errors.InvalidArgumentError` with the same message before
the collective mesh distribution (:func:`sensitivity.fem.backend.gmsh_model_to_mesh`)
starts. The geometries themselves are in :mod:`sensitivity.fem.meshes.geometry`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from dolfinx.mesh import GhostMode, Mesh, MeshTags, create_cell_partitioner
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import backend
from sensitivity.fem.meshes.geometry import check_geometry, geometry, gmsh_session
from sensitivity.validation import integer

__all__ = ["TaggedMesh", "build_mesh", "cells", "facets", "read_mesh"]

#: gmsh cell types DOLFINx 0.11 can read (its gmsh-to-cell table, points excluded).
_SUPPORTED_CELLS = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 21, 26, 29, 36, 92}


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
    x = backend.gmsh_geometry(model)
    if gdim < 3:
        scale = max(1.0, float(np.max(np.abs(x))))
        if float(np.max(np.abs(x[:, gdim:]))) > 1e-10 * scale:
            raise InvalidArgumentError(f"its nodes do not lie in the first {gdim} coordinates (gdim={gdim})")

    topologies, _ = backend.gmsh_topology(model)
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
        data = backend.gmsh_model_to_mesh(None, comm, root, gdim, partitioner)
        tags, dims = verdict
        return TaggedMesh(data.mesh, data.cell_tags, data.facet_tags, tags, dims)

    with contextlib.ExitStack() as stack:
        verdict: str | tuple[dict[str, int], dict[str, int]]
        try:
            gmsh = stack.enter_context(gmsh_session("sensitivity"))
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
        data = backend.gmsh_model_to_mesh(gmsh.model, comm, root, gdim, partitioner)
    tags, dims = verdict
    return TaggedMesh(data.mesh, data.cell_tags, data.facet_tags, tags, dims)


def _check_common(comm: Any, gdim: Any, required: Any, ghost_mode: Any) -> tuple[str, ...]:
    if not isinstance(comm, MPI.Comm) or comm == MPI.COMM_NULL:
        raise InvalidArgumentError(f"comm must be an mpi4py communicator, got {comm!r}")
    integer(gdim, "gdim", minimum=1, maximum=3)
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
               ghost_mode: GhostMode = GhostMode.none, **shape: Any) -> TaggedMesh:
    """Generate a geometry of :data:`~sensitivity.fem.meshes.geometry.KINDS` on rank 0 with gmsh, in memory, and distribute it (collective).

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
    **shape
        Further keyword arguments of :func:`~sensitivity.fem.meshes.geometry.channel_obstacle_model`
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
    build = geometry(kind)
    _check_common(comm, 2, (), ghost_mode)
    params = dict(shape, order=order)
    if h is not None:
        params["h"] = h
    check_geometry(kind, params)

    def load(gmsh) -> None:
        build(gmsh, **params)

    return _distribute(comm, load, f"cannot build mesh {kind!r}", 2, (), ghost_mode)


# --------------------------------------------------------------------------- lookups


def _find(mesh_data: TaggedMesh, name: Any, codim: int) -> npt.NDArray[np.int32]:
    """Local indices of the entities of the physical group ``name`` of codimension ``codim`` (0 cells, 1 facets)."""
    if not isinstance(mesh_data, TaggedMesh):
        raise InvalidArgumentError(f"mesh_data must be a TaggedMesh, got {type(mesh_data).__name__}")
    what, dim = ("cell", "facet")[codim], mesh_data.mesh.topology.dim - codim
    if name not in mesh_data.tags:
        raise InvalidArgumentError(f"no physical group {name!r}; the mesh has {sorted(mesh_data.tags)}")
    if mesh_data.dims[name] != dim:
        raise InvalidArgumentError(
            f"physical group {name!r} has dimension {mesh_data.dims[name]}, not the {what} dimension {dim}"
        )
    tags = (mesh_data.cell_tags, mesh_data.facet_tags)[codim]
    if tags is None:  # pragma: no cover - a group of that dimension always gives tags
        raise InvalidArgumentError(f"the mesh has no {what} tags")
    return tags.find(mesh_data.tags[name])


def facets(mesh_data: TaggedMesh, name: str) -> npt.NDArray[np.int32]:
    """Local indices of the facets of the boundary ``name`` (not collective).

    Suitable for ``dolfinx.fem.locate_dofs_topological(V, tdim - 1, facets(...))``; possibly
    empty on some ranks. Raises :class:`InvalidArgumentError` if ``name`` is not a physical
    group of facets of ``mesh_data`` (a :class:`TaggedMesh` from :func:`read_mesh` or
    :func:`build_mesh`).
    """
    return _find(mesh_data, name, 1)


def cells(mesh_data: TaggedMesh, name: str) -> npt.NDArray[np.int32]:
    """Local indices of the cells of the physical group ``name`` (not collective).

    Raises :class:`InvalidArgumentError` if ``name`` is not a physical group of cells of
    ``mesh_data`` (a :class:`TaggedMesh` from :func:`read_mesh` or :func:`build_mesh`).
    """
    return _find(mesh_data, name, 0)
