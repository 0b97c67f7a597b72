"""Field output for ParaView (VTX/ADIOS2) and field snapshots as PNG.

- :class:`FieldSeries` writes a time series of Lagrange Functions (θ and the
  tangents ρ_k, say) to a VTX ``.bp`` directory for ParaView. The series is
  written under a temporary name and renamed into place by :meth:`FieldSeries.close`,
  so an interrupted run never leaves a half-written ``.bp`` under the final name.
- :class:`TriangleGather` gathers a scalar field on a triangle mesh to rank 0 (as
  piecewise-linear values per owned cell) for :func:`plot_fields`, which draws a
  row of fields with matplotlib and saves the PNG atomically.

Sensor time series are small arrays, written with :func:`sensitivity.io.write_h5`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import dolfinx.fem as fem
import numpy as np

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import backend
from sensitivity.io import new_figure, save_figure
from sensitivity.parallel import run_on_root

__all__ = ["FieldSeries", "TriangleGather", "gather_by_coordinates", "plot_fields", "scatter_by_coordinates"]


def gather_by_coordinates(fn: fem.Function, decimals: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The owned dof values of a Lagrange Function on every rank, sorted by dof coordinates (collective).

    Independent of the partition (for nodes that do not share coordinates), so runs on
    different numbers of ranks can be compared entry by entry.

    Returns
    -------
    coords : numpy.ndarray, shape (N, gdim)
    values : numpy.ndarray, shape (N,) or (N, bs) for a blocked space
    """
    space = fn.function_space
    comm = space.mesh.comm
    gdim = space.mesh.geometry.dim
    nown, bs = space.dofmap.index_map.size_local, space.dofmap.index_map_bs
    coords = np.vstack(comm.allgather(space.tabulate_dof_coordinates()[:nown, :gdim]))
    values = np.concatenate(comm.allgather(fn.x.array[: nown * bs].reshape(nown, bs)))
    order = np.lexsort(np.round(coords, decimals).T[::-1])
    values = values[order]
    return coords[order], (values[:, 0] if bs == 1 else values)


def scatter_by_coordinates(fn: fem.Function, coords: np.ndarray, values: np.ndarray, decimals: int = 10) -> None:
    """Set the dofs of ``fn`` from ``values`` stored with their dof coordinates (the inverse of
    :func:`gather_by_coordinates`, on any partition; the same arrays on every rank; collective).

    Raises :class:`~sensitivity.errors.InvalidArgumentError` on every rank if a dof of ``fn``
    has no stored value (another mesh or space).
    """
    space = fn.function_space
    comm = space.mesh.comm
    gdim = space.mesh.geometry.dim
    nown, bs = space.dofmap.index_map.size_local, space.dofmap.index_map_bs
    coords, values = np.asarray(coords, dtype=float), np.asarray(values)
    index = {tuple(c): k for k, c in enumerate(np.round(coords, decimals))}
    mine = np.round(space.tabulate_dof_coordinates()[:nown, :gdim], decimals)
    rows = np.array([index.get(tuple(c), -1) for c in mine], dtype=np.int64)
    missing = comm.allreduce(int(np.sum(rows < 0)) + (0 if len(values) == len(coords) else nown + 1))
    if missing:
        raise InvalidArgumentError(f"no stored value at {missing} dof coordinates of this space "
                                   f"({len(values)} values for {len(coords)} coordinates)")
    fn.x.array[: nown * bs] = values[rows].reshape(-1)
    fn.x.scatter_forward()


class FieldSeries:
    """A VTX (ADIOS2 ``.bp``) time series of Functions that share one Lagrange space.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.bp`` directory to create (replaced if it exists).
    functions : sequence of dolfinx.fem.Function
        The Functions to write at each :meth:`write`; they must share an element
        (e.g. θ and its tangents ρ_k). Their names are the ParaView array names.

    Notes
    -----
    Collective on the mesh's communicator. Use as a context manager or call
    :meth:`close`; on an exception inside the ``with`` block the temporary
    directory is removed and nothing appears under ``path``.
    """

    def __init__(self, path: str | os.PathLike, functions: Sequence[fem.Function]):
        functions = list(functions)
        if not functions or not all(isinstance(f, fem.Function) for f in functions):
            raise InvalidArgumentError("functions must be a non-empty sequence of dolfinx.fem.Function")
        space = functions[0].function_space
        for f in functions[1:]:
            if f.function_space.element != space.element or f.function_space.mesh is not space.mesh:
                raise InvalidArgumentError(f"Function {f.name!r} is not in the same space as {functions[0].name!r}")
        self.path = Path(path)
        if self.path.suffix != ".bp":
            raise InvalidArgumentError(f"a VTX series needs a .bp path, got {str(path)!r}")
        self.comm = space.mesh.comm
        self.functions = functions
        self._tmp = self.path.with_name(f".{self.path.name}.partial")
        run_on_root(self.comm, lambda: _remove(self._tmp))
        self._writer = backend.vtx_writer(self.comm, str(self._tmp), functions)
        self._closed = False

    def write(self, t: float) -> None:
        """Append the Functions' current values at time ``t`` (collective)."""
        if self._closed:
            raise InvalidArgumentError(f"the series {str(self.path)!r} is closed")
        for f in self.functions:
            f.x.scatter_forward()
        self._writer.write(float(t))

    def close(self, keep: bool = True) -> Path:
        """Finish the file and move it to :attr:`path` (or discard it if not ``keep``; collective)."""
        if not self._closed:
            self._writer.close()
            self._closed = True
            self.comm.Barrier()

            def finish():
                if keep:
                    _remove(self.path)
                    os.replace(self._tmp, self.path)
                else:
                    _remove(self._tmp)

            run_on_root(self.comm, finish)
        return self.path

    def __enter__(self) -> FieldSeries:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep=exc_type is None)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class TriangleGather:
    """Gather scalar fields on a 2-D triangle mesh to rank 0 for plotting.

    Each owned cell contributes its three vertices and the field's values there
    (a P1 interpolant; higher-degree Functions are interpolated into P1 first).

    Parameters
    ----------
    V : dolfinx.fem.FunctionSpace
        A scalar Lagrange space on a triangle mesh with ``gdim = 2``.
    """

    def __init__(self, V: fem.FunctionSpace):
        msh = V.mesh
        if msh.geometry.dim != 2 or msh.topology.cell_name() != "triangle":
            raise InvalidArgumentError("plots need a 2-D triangle mesh")
        if tuple(V.value_shape) != ():
            raise InvalidArgumentError(f"plots need a scalar space, got value shape {tuple(V.value_shape)}")
        self.comm = msh.comm
        self.P1 = fem.functionspace(msh, ("Lagrange", 1))
        self._work = fem.Function(self.P1)
        ncells = msh.topology.index_map(msh.topology.dim).size_local
        self._cell_dofs = self.P1.dofmap.list[:ncells]
        xy = self.P1.tabulate_dof_coordinates()[:, :2][self._cell_dofs]  # (ncells, 3, 2)
        gathered = self.comm.gather(xy, root=0)
        self.xy = np.concatenate(gathered) if self.comm.rank == 0 else None

    def values(self, f: fem.Function) -> np.ndarray | None:
        """Values of ``f`` at the vertices of every cell, shape (cells, 3), on rank 0 (collective)."""
        if f.function_space.mesh is not self.P1.mesh:
            raise InvalidArgumentError(f"Function {f.name!r} is on another mesh")
        self._work.interpolate(f)
        self._work.x.scatter_forward()
        gathered = self.comm.gather(self._work.x.array[self._cell_dofs], root=0)
        return np.concatenate(gathered) if self.comm.rank == 0 else None


def plot_fields(gather: TriangleGather, panels: Sequence[tuple[str, np.ndarray | None]], path: str | os.PathLike,
                *, ncols: int | None = None, symmetric: Sequence[bool] | None = None) -> Path:
    """Draw gathered fields (from :meth:`TriangleGather.values`) side by side and save a PNG (collective).

    Parameters
    ----------
    panels : sequence of (title, values)
        ``values`` as returned by :meth:`TriangleGather.values` (``None`` off rank 0).
    ncols : int, optional
        Panels per row (default: all in one row).
    symmetric : sequence of bool, optional
        Per panel: use a colour scale symmetric about zero (for sensitivities).
    """
    from matplotlib.tri import Triangulation

    n = len(panels)
    ncols = n if ncols is None else ncols
    nrows = -(-n // ncols)
    symmetric = [False] * n if symmetric is None else list(symmetric)
    extent = None
    fig = None
    if gather.comm.rank == 0:
        xy = gather.xy
        extent = (np.ptp(xy[..., 0]), np.ptp(xy[..., 1]))
        tri = Triangulation(xy[..., 0].ravel(), xy[..., 1].ravel(), np.arange(xy.shape[0] * 3).reshape(-1, 3))
        width = 4.5 * ncols
        height = nrows * (width / ncols) * extent[1] / extent[0] + 0.9 * nrows
        fig = new_figure(figsize=(width, max(height, 2.0)))
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for ax in axes.ravel()[n:]:
            ax.set_visible(False)
        for ax, (title, values), sym in zip(axes.ravel(), panels, symmetric):
            values = np.asarray(values).ravel()
            kwargs = {"cmap": "viridis"}
            if sym:
                vmax = float(np.max(np.abs(values))) or 1.0
                kwargs = {"cmap": "RdBu_r", "vmin": -vmax, "vmax": vmax}
            art = ax.tripcolor(tri, values, shading="gouraud", **kwargs)
            ax.set_aspect("equal")
            ax.set_title(title, fontsize=9)
            ax.tick_params(labelsize=7)
            fig.colorbar(art, ax=ax, shrink=0.8, orientation="horizontal", pad=0.15)
        fig.tight_layout()
    else:
        fig = new_figure()
    return save_figure(gather.comm, fig, path, dpi=130)
