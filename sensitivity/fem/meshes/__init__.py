"""Tagged gmsh meshes: the geometries of ``meshes/`` (:mod:`.geometry`) and reading or
generating them in parallel (:mod:`.distributed`)."""

from sensitivity.fem.meshes.distributed import TaggedMesh, build_mesh, cells, facets, read_mesh
from sensitivity.fem.meshes.geometry import (
    KINDS,
    channel_obstacle_model,
    check_geometry,
    geometry,
    gmsh_session,
    unit_square_model,
    write_msh,
)

__all__ = [
    "KINDS",
    "TaggedMesh",
    "build_mesh",
    "cells",
    "channel_obstacle_model",
    "check_geometry",
    "facets",
    "geometry",
    "gmsh_session",
    "read_mesh",
    "unit_square_model",
    "write_msh",
]
