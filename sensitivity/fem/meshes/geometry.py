r"""The gmsh geometries of ``meshes/``, defined once: models, parameter checks, ``.msh`` files.

Two geometries, for the scripts in ``meshes/`` (which write the committed ``.msh``
files) and for :func:`~sensitivity.fem.meshes.build_mesh` (which makes them in memory
at any resolution):

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

Everything here is rank-local: gmsh runs on one rank.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sensitivity.errors import InvalidArgumentError
from sensitivity.io import atomic_write
from sensitivity.validation import choice, integer, positive

__all__ = [
    "KINDS",
    "channel_obstacle_model",
    "check_geometry",
    "geometry",
    "gmsh_session",
    "unit_square_model",
    "write_msh",
]

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



# --------------------------------------------------------------------------- gmsh sessions


@contextlib.contextmanager
def gmsh_session(model_name: str) -> Iterator[Any]:
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


def _order(order: Any) -> int:
    """A geometric element order: 1, 2 or 3 (an integer, not a bool)."""
    return integer(order, "order", minimum=1, maximum=3)


def check_geometry(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate the parameters of geometry ``kind`` (defaults filled in); raise naming the bad one."""
    geometry(kind)
    allowed = {"h", "order"} | ({"length", "height", "center", "radius", "h_obstacle"}
                               if kind == "channel_obstacle" else set())
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidArgumentError(f"unknown parameters {unknown} for kind {kind!r}")
    if kind == "channel_obstacle":
        defaults = dict(length=2.2, height=0.41, center=(0.2, 0.2), radius=0.05, h=0.04, h_obstacle=None, order=1)
        return _check_channel(**{**defaults, **params})
    return dict(h=positive(params.get("h", 0.1), "h"), order=_order(params.get("order", 1)))


def _check_channel(length, height, center, radius, h, h_obstacle, order) -> dict[str, Any]:
    length = positive(length, "length")
    height = positive(height, "height")
    radius = positive(radius, "radius")
    h = positive(h, "h")
    h_obstacle = h / 4.0 if h_obstacle is None else positive(h_obstacle, "h_obstacle")
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
    h = positive(h, "h")
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


def geometry(kind: Any) -> Callable[..., None]:
    """The model function of the geometry ``kind`` (a key of :data:`KINDS`)."""
    return KINDS[choice(kind, "kind", sorted(KINDS))]


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
    build = geometry(kind)
    path = Path(path)
    if path.suffix != ".msh":
        raise InvalidArgumentError(f"path must end in .msh, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)

    def writer(tmp: str) -> None:
        with gmsh_session(kind) as gmsh:
            build(gmsh, **params)
            gmsh.write(tmp)

    return atomic_write(path, writer)


