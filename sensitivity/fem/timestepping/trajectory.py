r"""Storage of a forward trajectory for the adjoint sweep: all states, or binomial checkpointing.

An adjoint (backward) sweep over :math:`x_{n+1} = \mathrm{step}(x_n)`,
:math:`n = 0..N-1`, needs the states in reverse order :math:`x_N, x_{N-1}, \dots, x_0`.
:class:`MemoryTrajectory` keeps all :math:`N+1` of them. :class:`CheckpointedTrajectory`
keeps only :math:`s` *snapshots* (restart states) and recomputes the others from the
nearest snapshot when the sweep needs them: the *revolve* idea of binomial
checkpointing. With :math:`s` snapshots, a trajectory with
:math:`N + 1 \le \binom{s+r}{s}` states can be reversed evaluating each step at
most :math:`r` times, so the reverse sweep re-runs about :math:`(r-1)N` steps with
:math:`r \approx (s!\,N)^{1/s}`; with :math:`s \sim \log N` snapshots this is
:math:`O(N\log N)`. The states are exact whichever storage is used: every
:math:`x_n` is produced by the same sequence of ``step`` calls from :math:`x_0`,
and snapshots are copied or stored bit for bit (so the states are bitwise those of
a plain loop whenever ``step`` itself is reproducible).

The schedules come from the ``checkpoint_schedules`` package (D. I. Dolci,
J. R. Maddison, D. A. Ham et al., https://www.firedrakeproject.org/checkpoint_schedules/):

* :class:`CheckpointedTrajectory` uses ``MultistageCheckpointSchedule``. With
  :math:`s = \min(s_\mathrm{ram} + s_\mathrm{disk}, N)` snapshots the reverse sweep
  re-runs exactly

  .. math::

      r(N+1) - \binom{s+r}{s+1} - N

  forward steps, where :math:`r` is the least integer with
  :math:`\binom{s+r}{s} \ge N+1`; each step is evaluated at most :math:`r` times
  in all (the forward pass included). This is the minimum over all schedules
  holding at most :math:`s` snapshots (Griewank & Walther, ACM TOMS 26(1), 2000,
  doi:10.1145/347837.347846); e.g. :math:`N = 50` re-runs 1225, 135 and 40 steps
  with 1, 3 and 10 snapshots. With disk snapshots the count is that of
  :math:`s_\mathrm{ram} + s_\mathrm{disk}` snapshots, and the snapshots read and
  written most often are put in RAM (the MultiStage distribution of Stumm & Walther,
  SIAM J. Sci. Comput. 31(3), 2009, doi:10.1137/080718036, for unit read/write
  costs); it does not trade recomputation against disk time.
* :class:`MemoryTrajectory` uses ``SingleMemoryStorageSchedule`` (everything kept).

Both are driven by the same code in :class:`Trajectory`. The schedule is run for
:math:`N+1` steps: its step :math:`n` is the adjoint step that needs :math:`x_n`.
Its "adjoint dependencies" of step :math:`n` are :math:`x_n` itself, so recording
them costs nothing and the step :math:`x_n \to x_{n+1}` that the schedule performs
only to record them (for :math:`n = N`, a step beyond the end) is not evaluated.
A checkpointed trajectory holds at most :math:`\min(s_\mathrm{ram}, N) + 2` state
vectors: the RAM snapshots, the current state and the output of ``step``.

Disk snapshots are HDF5 files, one per rank and snapshot, each holding that rank's
owned entries (no collective HDF5), in a private subdirectory of ``directory``
(shared or node-local); they are written atomically and deleted as soon as the
schedule no longer needs them. An I/O error on one rank is raised on every rank.
"""

from __future__ import annotations

import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from checkpoint_schedules import (
    CheckpointSchedule,
    Copy,
    EndForward,
    EndReverse,
    Forward,
    Move,
    MultistageCheckpointSchedule,
    Reverse,
    SingleMemoryStorageSchedule,
    StorageType,
)
from mpi4py import MPI
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.io import atomic_write
from sensitivity.parallel import on_every_rank
from sensitivity.validation import callable_, integer, path, positive

__all__ = ["CheckpointedTrajectory", "MemoryTrajectory", "Trajectory", "make_trajectory"]

Step = Callable[[PETSc.Vec, PETSc.Vec], None]
VectorFactory = Callable[[], PETSc.Vec]


class Trajectory(ABC):
    r"""The states :math:`x_0..x_N` of :math:`x_{n+1} = \mathrm{step}(x_n)`, handed back in reverse order.

    Use: :meth:`forward` once, then iterate :meth:`reverse` once, then :meth:`destroy`.

    Parameters
    ----------
    step : callable
        ``step(x, out)`` writes the state after ``x`` into ``out`` (distinct Vecs;
        collective), e.g. :meth:`ThetaScheme.step <sensitivity.fem.ThetaScheme.step>`.
    create_vector : callable
        ``create_vector()`` returns a new state Vec (collective).
    nsteps : int
        :math:`N \ge 0`.

    Attributes
    ----------
    stats : dict
        ``forward_steps`` (steps run by :meth:`forward`, i.e. N), ``recomputed_steps``
        (steps re-run during :meth:`reverse`), ``max_states_in_memory`` (peak number of
        state Vecs held at once: snapshots, kept states and working vectors; the Vec
        returned by :meth:`forward` belongs to the caller and is not counted),
        ``disk_writes`` and ``disk_reads`` (snapshots; each is one file per rank).
        Identical on all ranks.
    """

    def __init__(self, step: Step, create_vector: VectorFactory, nsteps: int):
        self._step = callable_(step, "step")
        self._create = callable_(create_vector, "create_vector")
        self.nsteps = integer(nsteps, "nsteps", minimum=0)
        self.stats = dict.fromkeys(
            ("forward_steps", "recomputed_steps", "max_states_in_memory", "disk_writes", "disk_reads"), 0
        )
        self._schedule = self._make_schedule()
        self._phase = "new"  # -> forward -> forwarded -> reverse -> done; or destroyed
        self._comm: MPI.Comm | None = None
        self._work: PETSc.Vec | None = None  # holds x_{self._at}
        self._at: int | None = None
        self._ram: dict[int, PETSc.Vec] = {}  # restart snapshots
        self._deps: dict[int, PETSc.Vec] = {}  # states kept for the reverse sweep
        self._spare: PETSc.Vec | None = None  # one freed Vec, reused before allocating
        self._live = 0
        self._callback = None
        self._seen = -1
        self._result: PETSc.Vec | None = None

    @abstractmethod
    def _make_schedule(self) -> CheckpointSchedule:
        """The ``checkpoint_schedules`` schedule for ``self.nsteps + 1`` adjoint steps."""

    def forward(self, x0: PETSc.Vec, callback: Callable[[int, PETSc.Vec], None] | None = None) -> PETSc.Vec:
        """Run the forward once from ``x0``, storing what the schedule needs (collective).

        Parameters
        ----------
        x0 : petsc4py.PETSc.Vec
            Initial state (not modified).
        callback : callable, optional
            ``callback(n, x_n)`` for n = 0..N in order, during this pass only
            (collective code may run in it; ``x_n`` must not be modified or kept).

        Returns
        -------
        petsc4py.PETSc.Vec
            A new Vec holding :math:`x_N`, owned by the caller.
        """
        if self._phase != "new":
            raise RuntimeError("forward() can run only once on a Trajectory")
        if not isinstance(x0, PETSc.Vec):
            raise InvalidArgumentError(f"x0 must be a PETSc Vec, got {type(x0).__name__}")
        if callback is not None:
            callable_(callback, "callback")
        self._phase = "forward"
        self._comm = x0.getComm().tompi4py()
        self._work, self._at = self._vec(), 0
        if not isinstance(self._work, PETSc.Vec) or self._work.getSize() != x0.getSize():
            raise InvalidArgumentError(
                f"x0 has {x0.getSize()} entries but create_vector() gives "
                f"{self._work.getSize() if isinstance(self._work, PETSc.Vec) else type(self._work).__name__}"
            )
        x0.copy(self._work)
        self._open_storage()
        self._callback = callback
        self._reached(0)
        for action in self._schedule:
            if isinstance(action, EndForward):
                break
            self._apply(action)
        self._phase, self._callback = "forwarded", None
        result, self._result = self._result, None
        return result

    def reverse(self) -> Iterator[tuple[int, PETSc.Vec]]:
        """Yield ``(n, x_n)`` for n = N, N-1, ..., 0, recomputing from snapshots as needed.

        Collective: every rank must iterate alike. The Vec is valid until the next
        iteration (copy it to keep it) and must not be modified. Runs once, after
        :meth:`forward`; memory is released as the sweep proceeds.
        """
        if self._phase != "forwarded":
            raise RuntimeError(f"reverse() needs a completed forward() and runs once (state: {self._phase})")
        self._phase = "reverse"
        return self._sweep()

    def destroy(self) -> None:
        """Free all Vecs and delete any snapshot files (collective; idempotent)."""
        self._free_vectors()
        self._close_storage()
        self._phase = "destroyed"

    # -- driving the schedule ------------------------------------------------------------------

    def _sweep(self) -> Iterator[tuple[int, PETSc.Vec]]:
        for action in self._schedule:
            if isinstance(action, EndReverse):
                break
            if not isinstance(action, Reverse):
                self._apply(action)
                continue
            for n in action:  # n1 - 1, ..., n0
                yield n, self._deps[n]
                if self._phase != "reverse":  # destroyed while the sweep was suspended
                    return
                if action.clear_adj_deps:
                    self._release(self._deps.pop(n))
        self._phase = "done"
        self._free_vectors()

    def _apply(self, action) -> None:
        if isinstance(action, Forward):
            self._advance(action)
        elif isinstance(action, (Copy, Move)) and action.to_storage == StorageType.WORK:
            self._release(self._work)
            self._work = self._load(action.n, action.from_storage, remove=isinstance(action, Move))
            self._at = action.n
        else:
            raise RuntimeError(f"unexpected checkpointing action {action!r}")

    def _advance(self, action: Forward) -> None:
        # Online schedules (SingleMemoryStorageSchedule) advance to sys.maxsize.
        n0, n1 = action.n0, min(action.n1, self.nsteps + 1)
        if self._work is None or self._at != n0:
            raise RuntimeError(f"schedule advances from step {n0} but the working state is step {self._at}")
        if action.write_ics:
            self._save(n0, action.storage)
        for n in range(n0, n1):
            if action.write_adj_deps:
                self._deps[n] = self._work  # x_n is what the reverse step n needs
                if n == n1 - 1:  # the schedule restores a snapshot before x_{n+1} is used
                    self._work = self._at = None
                    break
            out = self._vec()
            self._step(self._work, out)
            if not action.write_adj_deps:
                self._release(self._work)
            self._work, self._at = out, n + 1
            self.stats["recomputed_steps" if self._phase == "reverse" else "forward_steps"] += 1
            self._reached(n + 1)
        if self._schedule.max_n is None and n1 == self.nsteps + 1:
            self._schedule.finalize(n1)

    def _reached(self, n: int) -> None:
        """The working Vec holds x_n; during forward(), call back the first time."""
        if self._phase != "forward" or n <= self._seen:
            return
        self._seen = n
        if self._callback is not None:
            self._callback(n, self._work)
        if n == self.nsteps:
            self._result = self._work.copy()

    # -- storage -------------------------------------------------------------------------------

    def _vec(self) -> PETSc.Vec:
        if self._spare is not None:
            vec, self._spare = self._spare, None
            return vec
        self._live += 1
        self.stats["max_states_in_memory"] = max(self.stats["max_states_in_memory"], self._live)
        return self._create()

    def _release(self, vec: PETSc.Vec | None) -> None:
        if vec is None:
            return
        if self._spare is None:
            self._spare = vec
        else:
            vec.destroy()
            self._live -= 1

    def _free_vectors(self) -> None:
        for vec in (self._work, self._spare, *self._ram.values(), *self._deps.values()):
            if vec is not None:
                vec.destroy()  # a second destroy of the same Vec is harmless
        self._work = self._spare = self._at = None
        self._ram.clear()
        self._deps.clear()
        self._live = 0

    def _save(self, n: int, storage: StorageType) -> None:
        """Store the working state as restart snapshot ``n``."""
        if storage != StorageType.RAM:
            raise RuntimeError(f"unexpected snapshot storage {storage!r}")
        vec = self._vec()
        self._work.copy(vec)
        self._ram[n] = vec

    def _load(self, n: int, storage: StorageType, remove: bool) -> PETSc.Vec:
        """A Vec holding snapshot ``n``; the snapshot is dropped if ``remove``."""
        if storage != StorageType.RAM:
            raise RuntimeError(f"unexpected snapshot storage {storage!r}")
        if remove:
            return self._ram.pop(n)
        vec = self._vec()
        self._ram[n].copy(vec)
        return vec

    def _open_storage(self) -> None:
        """Prepare snapshot storage beyond RAM (collective)."""

    def _close_storage(self) -> None:
        """Remove snapshot storage beyond RAM (collective)."""


class MemoryTrajectory(Trajectory):
    """Keeps all N+1 states in memory: no recomputation, N+1 state Vecs.

    See :class:`Trajectory` for the parameters and methods.
    """

    def _make_schedule(self) -> CheckpointSchedule:
        return SingleMemoryStorageSchedule()


class CheckpointedTrajectory(Trajectory):
    """Binomial checkpointing with snapshots in RAM and optionally on disk.

    Parameters
    ----------
    step, create_vector, nsteps
        As for :class:`Trajectory`.
    snapshots_in_ram : int
        Restart snapshots held in memory, >= 1. At most ``snapshots_in_ram + 2``
        state Vecs are held (the snapshots and two working vectors).
    snapshots_on_disk : int
        Further snapshots on disk, >= 0; needs ``directory``.
    directory : str or os.PathLike, optional
        Where the disk snapshots go: a private subdirectory is created in it (by every
        rank, so it may be node-local) and removed by :meth:`destroy`.

    Notes
    -----
    The schedule is ``checkpoint_schedules.MultistageCheckpointSchedule`` (see the
    module documentation for the number of recomputed steps).
    """

    def __init__(
        self,
        step: Step,
        create_vector: VectorFactory,
        nsteps: int,
        *,
        snapshots_in_ram: int,
        snapshots_on_disk: int = 0,
        directory: str | os.PathLike | None = None,
    ):
        self.snapshots_in_ram = integer(snapshots_in_ram, "snapshots_in_ram", minimum=1)
        self.snapshots_on_disk = integer(snapshots_on_disk, "snapshots_on_disk", minimum=0)
        if self.snapshots_on_disk > 0 and directory is None:
            raise InvalidArgumentError(f"snapshots_on_disk={self.snapshots_on_disk} needs a directory")
        self.directory = None if directory is None else path(directory, "directory")
        self._path: Path | None = None
        super().__init__(step, create_vector, nsteps)

    def _make_schedule(self) -> CheckpointSchedule:
        return MultistageCheckpointSchedule(self.nsteps + 1, self.snapshots_in_ram, self.snapshots_on_disk)

    def _file(self, n: int) -> Path:
        return self._path / f"step_{n:06d}.rank{self._comm.rank}.h5"

    def _open_storage(self) -> None:
        if self.directory is None or not self._schedule.uses_storage_type(StorageType.DISK):
            return
        # a temporary name of the package (.NAME.partial): a run killed with SIGKILL leaves it behind, and
        # sensitivity.io.prepare_output_dir removes it when the next run starts in that directory
        path = self.directory / self._comm.bcast(f".trajectory-{uuid.uuid4().hex[:12]}.partial", root=0)
        on_every_rank(self._comm, "checkpoint I/O", lambda: path.mkdir(parents=True, exist_ok=True))
        self._path = path

    def _close_storage(self) -> None:
        if self._path is None:
            return
        path, self._path = self._path, None

        def remove() -> None:
            for file in path.glob(f"step_*.rank{self._comm.rank}.h5"):
                file.unlink(missing_ok=True)

        on_every_rank(self._comm, "checkpoint I/O", remove)  # also a barrier: every rank's files are gone
        try:
            path.rmdir()
        except FileNotFoundError:  # another rank sharing the file system was first
            pass

    def _save(self, n: int, storage: StorageType) -> None:
        if storage != StorageType.DISK:
            return super()._save(n, storage)
        import h5py

        data = self._work.array_r

        def write(tmp: str) -> None:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("x", data=data)

        on_every_rank(self._comm, "checkpoint I/O", lambda: atomic_write(self._file(n), write))
        self.stats["disk_writes"] += 1

    def _load(self, n: int, storage: StorageType, remove: bool) -> PETSc.Vec:
        if storage != StorageType.DISK:
            return super()._load(n, storage, remove)
        import h5py

        vec = self._vec()

        def read() -> None:
            path = self._file(n)
            with h5py.File(path, "r") as f:
                data = f["x"][()]
            if data.shape != (vec.getLocalSize(),):
                raise RuntimeError(f"{path} holds {data.shape} entries, expected {vec.getLocalSize()}")
            vec.setArray(data)
            if remove:
                path.unlink()

        on_every_rank(self._comm, "checkpoint I/O", read)
        self.stats["disk_reads"] += 1
        return vec


def make_trajectory(
    step: Step,
    create_vector: VectorFactory,
    nsteps: int,
    *,
    memory_budget: int | None = None,
    max_states: int | None = None,
    directory: str | os.PathLike | None = None,
) -> Trajectory:
    """The cheapest trajectory storage within a memory limit (collective if ``memory_budget`` is given).

    Parameters
    ----------
    step, create_vector, nsteps
        As for :class:`Trajectory`.
    memory_budget : int, optional
        Bytes for state vectors, summed over all ranks; a state takes its global
        size times the scalar size (8 bytes, 16 in a complex build). One ``create_vector()`` call finds the size.
    max_states : int, optional
        Number of state vectors that may be held at once. With both limits the
        smaller applies; with neither, all states are kept.
    directory : str or os.PathLike, optional
        If given and the states do not all fit, snapshots that do not fit in memory
        go to disk there (as many as needed to avoid recomputation).

    Returns
    -------
    Trajectory
        :class:`MemoryTrajectory` if all N+1 states fit, otherwise a
        :class:`CheckpointedTrajectory` with as many RAM snapshots as fit beside its
        two working vectors. The rule depends only on global sizes, so every rank
        makes the same choice.

    Raises
    ------
    InvalidArgumentError
        For bad arguments, or if the limit holds fewer than three state vectors (one
        snapshot and the two working vectors) while the states do not all fit.
    """
    callable_(step, "step")
    callable_(create_vector, "create_vector")
    nsteps = integer(nsteps, "nsteps", minimum=0)
    if max_states is not None:
        max_states = integer(max_states, "max_states", minimum=1)
    if memory_budget is not None:
        positive(memory_budget, "memory_budget")
    if directory is not None:
        directory = path(directory, "directory")
    limits = {}  # name -> (number of states, description)
    if max_states is not None:
        limits["max_states"] = (max_states, f"max_states={max_states}")
    if memory_budget is not None:
        vec = create_vector()
        state_bytes = vec.getSize() * np.dtype(PETSc.ScalarType).itemsize
        vec.destroy()
        limits["memory_budget"] = (
            int(memory_budget // state_bytes),
            f"memory_budget={memory_budget!r} bytes ({int(memory_budget // state_bytes)} states of {state_bytes} bytes)",
        )
    if not limits:
        return MemoryTrajectory(step, create_vector, nsteps)
    capacity, description = min(limits.values())
    if capacity >= nsteps + 1:
        return MemoryTrajectory(step, create_vector, nsteps)
    snapshots = capacity - 2
    if snapshots < 1:
        raise InvalidArgumentError(
            f"{description} cannot hold the {nsteps + 1} states nor 3 for checkpointing "
            "(one snapshot and two working vectors)"
        )
    return CheckpointedTrajectory(
        step, create_vector, nsteps, snapshots_in_ram=snapshots,
        snapshots_on_disk=nsteps if directory is not None else 0, directory=directory,
    )
