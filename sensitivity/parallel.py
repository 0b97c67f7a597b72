"""MPI conveniences: rank-0 output, progress bars, and collective error handling.

The rules they serve: every collective runs on every rank; output comes from
rank 0; an error detected on one rank is raised on all of them, so that no rank
waits forever in a collective the failing rank never reaches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError, SensitivityError

__all__ = [
    "ArgumentParser",
    "CollectiveError",
    "collect_garbage",
    "comm_world",
    "exit_on_error",
    "on_every_rank",
    "progress",
    "progress_bar",
    "rank0_print",
    "run_on_root",
]

T = TypeVar("T")


class CollectiveError(SensitivityError):
    """Raised on the other ranks when one rank failed inside :func:`run_on_root`."""


def comm_world() -> MPI.Comm:
    """``MPI.COMM_WORLD`` (a function so that callers can be given another one)."""
    return MPI.COMM_WORLD


def rank0_print(comm: MPI.Comm, *args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 of ``comm`` only (not collective)."""
    if comm.rank == 0:
        print(*args, **kwargs, flush=True)


def progress(comm: MPI.Comm, iterable: Iterable[T], *, desc: str | None = None, total: int | None = None,
             disable: bool = False) -> Iterable[T]:
    """Iterate ``iterable`` with a tqdm progress bar shown on rank 0 only.

    Every rank iterates the same items; only the display differs, so collectives
    inside the loop stay matched.
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=disable or comm.rank != 0, leave=False)


def progress_bar(comm: MPI.Comm, total: int, *, desc: str | None = None, disable: bool = False):
    """A tqdm bar for ``total`` manual ``update()`` calls, shown on rank 0 only (not collective)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=disable or comm.rank != 0, leave=False)


def exit_on_error(main: Callable[[], Any], comm: MPI.Comm | None = None, status: int = 2) -> int:
    """Run a program's ``main()``; turn a :class:`SensitivityError` into a message and an exit status.

    For command-line entry points (``sys.exit(exit_on_error(main))``). The
    library raises its input errors identically on every rank, so every rank
    returns ``status`` together and rank 0 alone prints ``error: ...`` on one line;
    other exceptions propagate with their traceback. File-system failures of the
    output helpers (:mod:`sensitivity.io`) arrive here as
    :class:`~sensitivity.errors.OutputError`, an input error, not as a bare ``OSError``.
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    try:
        main()
    except SensitivityError as exc:
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        rank0_print(comm, f"error: {message}", file=sys.stderr)
        return status
    return 0


def collect_garbage(*comms: MPI.Comm) -> None:
    """Destroy the PETSc objects Python has freed on ``comms`` (collective on each; default ``COMM_WORLD``).

    petsc4py does not destroy a PETSc object when Python frees it without ``destroy()``: destroying can
    be collective and Python frees objects at different moments on different ranks, so it only
    schedules the destruction (PETSc's delayed destroy), and the objects -- with their memory and their
    communicator -- stay until ``PETSc.garbage_cleanup`` runs on their communicator. Long runs call this
    at a collective point now and then (an optimizer every few iterations, a sampler every chunk) with
    the communicators their objects live on (a mesh's ``comm``); it first runs Python's cyclic
    collector so that objects in reference cycles are scheduled too.
    """
    import gc

    from petsc4py import PETSc

    gc.collect()
    for comm in comms or (MPI.COMM_WORLD,):
        PETSc.garbage_cleanup(comm)


def run_on_root(comm: MPI.Comm, func: Callable[[], T], root: int = 0) -> T | None:
    """Run ``func()`` on ``root`` and raise its error, if any, on every rank (collective).

    For rank-local work such as writing a file gathered to one rank: the other
    ranks wait for the outcome and raise :class:`CollectiveError` with the root's
    message if it failed, so all ranks leave together; an
    :class:`~sensitivity.errors.InvalidArgumentError` (a bad path, a bad file) is
    raised on the other ranks as the same class with the same message. Returns
    ``func()``'s result on ``root`` and ``None`` elsewhere.
    """
    result, error = None, None
    if comm.rank == root:
        try:
            result = func()
        except Exception as exc:  # re-raised below on this rank, reported to the others
            error = exc
    report = None
    if error is not None:
        # an input error (a bad path, say) is raised on every rank as itself, so that callers
        # and exit_on_error see the same class and message everywhere; anything else becomes
        # a CollectiveError on the other ranks
        same = isinstance(error, InvalidArgumentError) and _importable(type(error))
        report = (type(error) if same else None, str(error) if same else f"{type(error).__name__}: {error}")
    report = comm.bcast(report, root=root)
    if error is not None:
        raise error
    if report is not None:
        cls, message = report
        if cls is not None:
            raise cls(message)
        raise CollectiveError(f"rank {root} failed: {message}")
    return result


def _importable(cls: type) -> bool:
    """Whether ``cls`` can be sent to another rank by reference (pickled by its import path)."""
    return "<locals>" not in cls.__qualname__ and cls.__module__ != "__main__"


def on_every_rank(comm: MPI.Comm, what: str, func: Callable[[], T]) -> T:
    """Run rank-local ``func()`` on every rank; if it fails on any, raise on all of them (collective).

    The failing ranks re-raise their own exception; the others raise
    :class:`CollectiveError` naming ``what`` and the lowest failing rank, so that
    every rank leaves together (e.g. per-rank checkpoint files).
    """
    result, error = None, None
    try:
        result = func()
    except Exception as exc:  # re-raised below on this rank, reported to the others
        error = exc
    first = comm.allreduce(comm.rank if error is not None else comm.size, op=MPI.MIN)
    if error is not None:
        raise error
    if first < comm.size:
        raise CollectiveError(f"{what} failed on rank {first}")
    return result


class ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` for MPI programs.

    Every rank parses the same ``argv`` and fails alike (exit status 2 on a bad
    argument), but help and error messages are printed by rank 0 only.
    """

    def print_usage(self, file=None):
        if MPI.COMM_WORLD.rank == 0:
            super().print_usage(file)

    def print_help(self, file=None):
        if MPI.COMM_WORLD.rank == 0:
            super().print_help(file)

    def exit(self, status=0, message=None):
        super().exit(status, message if MPI.COMM_WORLD.rank == 0 else None)
