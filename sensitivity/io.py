"""Output that is never left half-written: HDF5 files and figures.

Numbers are gathered to rank 0 by the caller (they are small: sensor series,
statistics), written to a temporary file in the target directory, and renamed
into place; a failure on rank 0 is raised on every rank (:func:`run_on_root`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError
from sensitivity.parallel import run_on_root

__all__ = ["atomic_write", "prepare_output_dir", "read_h5", "save_figure", "write_h5"]


def atomic_write(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` on a temporary file beside ``path``, then rename it to ``path``.

    Not collective. The temporary file (same suffix as ``path``) is removed if
    ``writer`` raises, and the rename is atomic on POSIX, so ``path`` is either the
    old file or the whole new one. The file gets the ordinary mode (umask applied).
    """
    path = Path(path)
    # Keep the real suffix: some writers (gmsh) choose the format from it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        writer(tmp)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; give it an ordinary file's mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def prepare_output_dir(comm: MPI.Comm, path: str | os.PathLike) -> Path:
    """Create the output directory on rank 0 (collective; errors raised on all ranks)."""
    if not str(path):
        raise InvalidArgumentError("output directory must be a non-empty path")
    path = Path(path)
    run_on_root(comm, lambda: path.mkdir(parents=True, exist_ok=True))
    return path


def _write_group(group, data: Mapping[str, Any]) -> None:
    for key, value in data.items():
        if isinstance(value, Mapping):
            _write_group(group.create_group(key), value)
        elif isinstance(value, str):
            group.attrs[key] = value
        else:
            group.create_dataset(key, data=np.asarray(value))


def write_h5(comm: MPI.Comm, path: str | os.PathLike, data: Mapping[str, Any],
             attrs: Mapping[str, Any] | None = None) -> Path:
    """Write nested ``data`` (arrays, numbers, strings, dicts) to HDF5 from rank 0, atomically.

    Collective: every rank must call it; only rank 0's ``data`` is written, so the
    caller gathers distributed values first. Strings become attributes, mappings
    groups, everything else datasets.
    """
    import h5py

    def writer(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            _write_group(f, data)
            for key, value in (attrs or {}).items():
                f.attrs[key] = value

    run_on_root(comm, lambda: atomic_write(path, writer))
    return Path(path)


def read_h5(path: str | os.PathLike) -> dict[str, Any]:
    """Read an HDF5 file written by :func:`write_h5` into nested dicts (not collective)."""
    import h5py

    def read(group) -> dict[str, Any]:
        out: dict[str, Any] = dict(group.attrs)
        for key, item in group.items():
            out[key] = read(item) if isinstance(item, h5py.Group) else item[()]
        return out

    with h5py.File(path, "r") as f:
        return read(f)


def save_figure(comm: MPI.Comm, fig, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure from rank 0, atomically (collective; figure closed on all ranks)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    try:
        run_on_root(comm, lambda: atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **savefig_kwargs)))
    finally:
        plt.close(fig)
    return path
