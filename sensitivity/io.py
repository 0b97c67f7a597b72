"""Output that is never left half-written: output directories, HDF5 files and figures.

Numbers are gathered to rank 0 by the caller (they are small: sensor series,
statistics), written to a temporary file in the target directory, and renamed
into place; a failure on rank 0 is raised on every rank (:func:`run_on_root`).

Output paths
------------
A program checks its output paths before it computes anything:
:func:`prepare_output_dir` for a directory (``--output``), :func:`check_output_file`
for a single file (``--checkpoint``). Both are collective, validate on rank 0 (the
rank that writes) and raise the same :class:`OutputError` on every rank: the path
is an existing file where a directory is needed (or the reverse), a parent is a
file, the directory cannot be created, or no file can be created in it (tried
with a probe file, so a read-only mount or a ``chmod 0500`` directory is caught
even where :func:`os.access` would say yes). Every file-system failure of the
writers here is an :class:`OutputError` too: an input error (exit status 2 under
:func:`sensitivity.parallel.exit_on_error`) that is also an :class:`OSError`.

Temporary files
---------------
Every temporary name of this package starts with a dot and carries the mark
``.partial``: ``.STEM.XXXXXXXX.partial.SUFFIX`` for a file being written by
:func:`atomic_write` (``XXXXXXXX`` random, the real suffix kept last because some
writers choose the format from it), ``.NAME.partial`` for a VTX directory being
written by :class:`sensitivity.fem.FieldSeries`, ``.sensitivity-probe.XXXXXXXX.partial``
for the probe. A run killed with SIGKILL leaves them behind; :func:`prepare_output_dir`
removes every such entry of the directory (and :func:`check_output_file` those of
its file) when the next run starts, together with the ``.STEM.XXXXXXXX.SUFFIX``
temporaries of earlier versions of :func:`atomic_write` for the file names the
caller says it writes. This assumes **one run per output directory at a time**:
a run started in a directory another run is writing to removes that run's
temporaries, and the other run then fails with an :class:`OutputError` when it
renames them into place.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from mpi4py import MPI

from sensitivity.errors import OutputError
from sensitivity.parallel import run_on_root

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "TEMPORARY_MARK",
    "OutputError",
    "atomic_write",
    "check_output_file",
    "is_temporary",
    "new_figure",
    "prepare_output_dir",
    "read_h5",
    "remove_stale_temporaries",
    "save_figure",
    "stale_temporaries",
    "write_h5",
]

#: The mark every temporary name of this package carries (module docstring).
TEMPORARY_MARK = ".partial"
_PROBE_PREFIX = ".sensitivity-probe."
#: ``.NAME.partial`` and ``.STEM.XXXXXXXX.partial.SUFFIX``: any temporary of this package.
_TEMPORARY = re.compile(r"\..+\.partial(\.[A-Za-z0-9]+)?")
#: The 8 random characters of :func:`tempfile.mkstemp`.
_RANDOM = r"[a-z0-9_]{8}"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def atomic_write(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` on a temporary file beside ``path``, then rename it to ``path``.

    Not collective. The temporary file ``.STEM.XXXXXXXX.partial.SUFFIX`` (same
    suffix as ``path``) is removed if ``writer`` raises, and the rename is atomic
    on POSIX, so ``path`` is either the old file or the whole new one. The file
    gets the ordinary mode (umask applied). A file-system failure (no such
    directory, permission denied, ``path`` is a directory, disk full inside
    ``writer``) raises :class:`OutputError` naming ``path``; other errors of
    ``writer`` propagate unchanged.
    """
    path = Path(path)
    # Keep the real suffix last: some writers (gmsh) choose the format from it.
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f"{TEMPORARY_MARK}{path.suffix}")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc
    os.close(fd)
    try:
        writer(tmp)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; give it an ordinary file's mode
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc
        raise
    return path


# -- stale temporaries ------------------------------------------------------------------------


def is_temporary(name: str) -> bool:
    """Whether the file name ``name`` is a temporary name of this package (``.….partial[.suffix]``)."""
    return _TEMPORARY.fullmatch(name) is not None


def _temporary_of(name: str) -> re.Pattern:
    """The temporaries of the file or VTX directory ``name``, including the unmarked
    ``.STEM.XXXXXXXX.SUFFIX`` of earlier versions of :func:`atomic_write`."""
    stem, suffix = os.path.splitext(name)
    return re.compile("|".join([
        re.escape(f".{stem}.") + _RANDOM + f"({re.escape(TEMPORARY_MARK)})?" + re.escape(suffix),
        re.escape(f".{name}{TEMPORARY_MARK}"),
    ]))


def stale_temporaries(directory: str | os.PathLike, names: Iterable[str] | None = None) -> list[Path]:
    """The temporaries of this package in ``directory`` (not recursive; not collective).

    With ``names`` (file or ``.bp`` names in ``directory``), only the temporaries of
    those names, including the unmarked ones of earlier versions; without, every
    entry whose name :func:`is_temporary` recognizes.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    patterns = None if names is None else [_temporary_of(n) for n in names]

    def match(entry: str) -> bool:
        return is_temporary(entry) if patterns is None else any(p.fullmatch(entry) for p in patterns)

    return sorted(directory / entry for entry in os.listdir(directory) if match(entry))


def remove_stale_temporaries(directory: str | os.PathLike, names: Iterable[str] | None = None,
                             *, every: bool = True) -> list[Path]:
    """Remove the temporaries a killed run left in ``directory``; return them (not collective).

    ``every``: remove every entry :func:`is_temporary` recognizes; ``names``: also
    (or, with ``every=False``, only) the temporaries of these names, old unmarked
    ones included. Only for a directory no other run is writing to (module docstring).
    """
    found = set(stale_temporaries(directory) if every else [])
    if names is not None:
        found.update(stale_temporaries(directory, names))
    removed = []
    for entry in sorted(found):
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot remove the stale temporary {entry}: {_reason(exc)}") from exc
        removed.append(entry)
    return removed


# -- output paths -----------------------------------------------------------------------------


def _non_empty(path: Any, what: str) -> Path:
    if path is None or not os.fspath(path):
        raise OutputError(f"{what} must be a non-empty path")
    return Path(path)


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (``.`` for a relative path)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")


def _check_directory(directory: Path, label: str, create: bool) -> None:
    """``directory`` is, or can be made, a directory we can create files in (rank-local).

    The probe file goes to ``directory`` or, if it does not exist yet, to its nearest existing
    ancestor (where it would be created), so that a check and a creation fail alike."""
    existing = _nearest_existing(directory)
    if not existing.is_dir():
        raise OutputError(f"{label}: {existing} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=_PROBE_PREFIX, suffix=TEMPORARY_MARK)
    except OSError as exc:
        if existing == directory:
            raise OutputError(f"{label}: cannot create files in {directory}: {_reason(exc)}") from exc
        raise OutputError(f"{label}: cannot create the directory {directory}: {existing} is not writable "
                          f"({_reason(exc)})") from exc
    os.close(fd)
    os.remove(probe)
    if create and existing != directory:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{label}: cannot create the directory {exc.filename or directory}: "
                              f"{_reason(exc)}") from exc


def prepare_output_dir(comm: MPI.Comm, path: str | os.PathLike, *, what: str = "output directory",
                       files: Iterable[str] = (), create: bool = True) -> Path:
    """Check the output directory ``path``, create it and clear a killed run's temporaries (collective).

    Call it before the work starts, on every rank. Rank 0 checks that ``path`` is a
    directory or can be created as one (no parent is a file), that files can be
    created in it (a probe file, created and removed), and that none of ``files``
    (the names of the regular files the run will write there) is a directory;
    creates it; and removes the temporaries of this package that a killed run left
    in it (:func:`remove_stale_temporaries`; one run per directory at a time).
    Any failure raises :class:`OutputError`, whose message starts with ``what``
    (e.g. ``"--output"``) and the path, on every rank.

    ``create=False`` only checks (on the nearest existing ancestor if ``path`` does
    not exist yet) and creates or removes nothing: for a program that validates
    its paths before other arguments whose failure must leave nothing behind.
    """
    path = _non_empty(path, what)
    files = list(files)

    def prepare() -> None:
        try:
            if (path.exists() or path.is_symlink()) and not path.is_dir():
                kind = "file" if path.is_file() else "entry that is not a directory"
                raise OutputError(f"{what} {path} is an existing {kind}, not a directory")
            _check_directory(path, f"{what} {path}", create)
            for name in files:
                if (path / name).is_dir():
                    raise OutputError(f"{what} {path}: {path / name} is a directory, but this run writes a file there")
            if create:
                remove_stale_temporaries(path, files)
        except OutputError:
            raise
        except OSError as exc:  # e.g. stat() denied on a parent
            raise OutputError(f"{what} {path}: {_reason(exc)}") from exc

    run_on_root(comm, prepare)
    return path


def check_output_file(comm: MPI.Comm, path: str | os.PathLike, *, what: str = "output file",
                      create: bool = True) -> Path:
    """Check that the file ``path`` can be written atomically; clear its stale temporaries (collective).

    Rank 0 checks that ``path`` is not a directory (nor written as one, with a
    trailing separator) and, if it exists, that it is a regular file; that its
    directory exists or can be created and files can be created in it (a probe);
    creates the directory and removes the temporaries of ``path`` a killed run left
    (those of :func:`atomic_write`, old unmarked ones included). Any failure raises
    :class:`OutputError` on every rank, starting with ``what`` and the path.
    ``create=False`` only checks.
    """
    trailing = path is not None and os.fspath(path).endswith(("/", os.sep))
    path = _non_empty(path, what)

    def check() -> None:
        try:
            if trailing or path.is_dir():
                raise OutputError(f"{what} {path} is a directory, not a file")
            if (path.exists() or path.is_symlink()) and not path.is_file():
                raise OutputError(f"{what} {path} exists and is not a regular file")
            _check_directory(path.parent, f"{what} {path}", create)
            if create:
                remove_stale_temporaries(path.parent, [path.name], every=False)
        except OutputError:
            raise
        except OSError as exc:
            raise OutputError(f"{what} {path}: {_reason(exc)}") from exc

    run_on_root(comm, check)
    return path


# -- HDF5 -------------------------------------------------------------------------------------


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


# -- figures ----------------------------------------------------------------------------------


def new_figure(**kwargs: Any) -> Figure:
    """A matplotlib :class:`~matplotlib.figure.Figure` outside pyplot (not collective).

    No backend is chosen and no global pyplot state is touched, so programs need no
    ``matplotlib.use("Agg")`` and work without a display: :func:`save_figure` renders
    the file by its format. Keyword arguments go to ``Figure`` (``figsize``,
    ``layout="constrained"``, ...); make axes with ``fig.subplots(...)``. Nothing
    needs closing: the figure is freed with its last reference.
    """
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(comm: MPI.Comm, fig, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure from rank 0, atomically (collective).

    ``fig`` from :func:`new_figure` or from pyplot (a pyplot figure is closed on
    every rank afterwards; pyplot is not imported for the others).
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    try:
        run_on_root(comm, lambda: atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **savefig_kwargs)))
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None and fig is not None:
            pyplot.close(fig)
    return path
