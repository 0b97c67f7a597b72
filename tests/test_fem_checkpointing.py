"""Trajectory storage for the adjoint sweep (sensitivity.fem.timestepping.trajectory; docs/theory.md §2.10).

Checks: the states handed back in reverse are bitwise those of a plain forward loop
of the θ-scheme, for all states in memory and for binomial checkpointing with RAM
and disk snapshots; the callback sees every state once, in order; recomputation is
the Griewank–Walther optimum; memory use stays within its bound; disk files are
removed; short trajectories, bad arguments and misuse; make_trajectory's choice."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError  # first: the package imports dolfinx_solver
from petsc4py import PETSc  # noqa: E402
from sensitivity.fem import ThetaScheme
from sensitivity.fem.timestepping import trajectory as checkpointing
from sensitivity.fem import CheckpointedTrajectory, MemoryTrajectory, make_trajectory
from sensitivity.parallel import CollectiveError

N = 40


@pytest.fixture(scope="module")
def theta(advection_problem):
    """A θ-scheme on a small mesh, its initial state and the states of a plain forward loop.

    The solver is GMRES with block-Jacobi ILU, which is bitwise reproducible on any
    number of ranks; MUMPS (the default) is not on 3 ranks: two plain forward loops
    differ by ~1e-15 there, so bitwise comparison would test MUMPS, not the trajectory.
    """
    prob, _, _, th0 = advection_problem(MPI.COMM_WORLD, n=6)
    options = {"ksp_type": "gmres", "pc_type": "bjacobi", "sub_pc_type": "ilu", "ksp_rtol": 1e-12}
    scheme = ThetaScheme(prob, 0.01, petsc_options=options)
    x0 = th0.x.petsc_vec
    ref = []
    scheme.run(x0, N, callback=lambda n, x: ref.append(x.array_r.copy())).destroy()
    yield scheme, x0, ref
    scheme.destroy()


class Counter:
    """The cheap recurrence x_{n+1} = x_n + 1 from x_0 = 0, so that x_n = n exactly; counts steps per n."""

    def __init__(self, comm):
        self.comm, self.evaluations = comm, {}

    def create_vector(self):
        return PETSc.Vec().createMPI((PETSc.DECIDE, 4 * self.comm.size), comm=self.comm)

    def step(self, x, out):
        n = int(x.max()[1])
        self.evaluations[n] = self.evaluations.get(n, 0) + 1
        x.copy(out)
        out.shift(1.0)

    def x0(self):
        x = self.create_vector()
        x.set(0.0)
        return x


def _shared_tmp(comm, tmp_path_factory):
    path = tmp_path_factory.mktemp("trajectory") if comm.rank == 0 else None
    return comm.bcast(path, root=0)


def _my_files(base, comm):
    return sorted(base.glob(f"*/step_*.rank{comm.rank}.h5"))


def _run(traj, x0, during_reverse=None):
    seen = []
    xN = traj.forward(x0, callback=lambda n, x: seen.append((n, x.array_r.copy())))
    back = []
    for n, x in traj.reverse():
        back.append((n, x.array_r.copy()))
        if during_reverse is not None:
            during_reverse()
    return seen, xN, back


def _assert_exact(seen, xN, back, ref):
    nsteps = len(ref) - 1
    assert [n for n, _ in seen] == list(range(nsteps + 1))
    assert [n for n, _ in back] == list(range(nsteps, -1, -1))
    for n, a in seen + back:
        assert np.array_equal(a, ref[n]), n
    assert np.array_equal(xN.array_r, ref[nsteps])
    xN.destroy()


def _optimal_recomputation(nsteps, snapshots):
    """Griewank & Walther (2000): r(N+1) - C(s+r, s+1) - N with r least such that C(s+r, s) >= N+1."""
    if nsteps == 0:
        return 0
    s = min(snapshots, nsteps)
    r = 1
    while comb(s + r, s) < nsteps + 1:
        r += 1
    return r * (nsteps + 1) - comb(s + r, s + 1) - nsteps


@pytest.mark.mpi
def test_memory_trajectory_keeps_every_state(theta):
    scheme, x0, ref = theta
    before = x0.array_r.copy()
    traj = MemoryTrajectory(scheme.step, scheme.create_vector, N)
    _assert_exact(*_run(traj, x0), ref)
    assert np.array_equal(x0.array_r, before)  # x0 not modified
    assert traj.stats == {"forward_steps": N, "recomputed_steps": 0, "max_states_in_memory": N + 1,
                          "disk_writes": 0, "disk_reads": 0}
    traj.destroy()


@pytest.mark.mpi
@pytest.mark.parametrize("snapshots", [1, 3, 10])
def test_checkpointed_trajectory_is_exact(theta, snapshots):
    scheme, x0, ref = theta
    traj = CheckpointedTrajectory(scheme.step, scheme.create_vector, N, snapshots_in_ram=snapshots)
    _assert_exact(*_run(traj, x0), ref)
    assert traj.stats["forward_steps"] == N
    assert traj.stats["recomputed_steps"] == _optimal_recomputation(N, snapshots) > 0
    assert traj.stats["max_states_in_memory"] == snapshots + 2  # snapshots, state, step output
    assert traj.stats["disk_writes"] == traj.stats["disk_reads"] == 0
    traj.destroy()


@pytest.mark.mpi
@pytest.mark.parametrize("in_ram, on_disk", [(1, 2), (3, 5)])
def test_disk_snapshots_are_exact_and_removed(theta, comm, tmp_path_factory, in_ram, on_disk):
    scheme, x0, ref = theta
    base = _shared_tmp(comm, tmp_path_factory)
    traj = CheckpointedTrajectory(scheme.step, scheme.create_vector, N, snapshots_in_ram=in_ram,
                                  snapshots_on_disk=on_disk, directory=base)
    counts = []
    _assert_exact(*_run(traj, x0, lambda: counts.append(len(_my_files(base, comm)))), ref)
    assert counts[0] > 0 and counts[-1] == 0  # the files live during the sweep, and are removed when read last
    stats = traj.stats
    assert stats["recomputed_steps"] == _optimal_recomputation(N, in_ram + on_disk)
    assert stats["recomputed_steps"] < _optimal_recomputation(N, in_ram)
    assert stats["max_states_in_memory"] <= in_ram + 2
    assert stats["disk_reads"] >= stats["disk_writes"] > 0
    traj.destroy()
    assert list(base.iterdir()) == []


@pytest.mark.mpi
@pytest.mark.parametrize("nsteps", [0, 1])
def test_short_trajectories(theta, comm, tmp_path_factory, nsteps):
    scheme, x0, ref = theta
    base = _shared_tmp(comm, tmp_path_factory)
    for kwargs in (None, {"snapshots_in_ram": 1}, {"snapshots_in_ram": 1, "snapshots_on_disk": 1, "directory": base}):
        if kwargs is None:
            traj = MemoryTrajectory(scheme.step, scheme.create_vector, nsteps)
        else:
            traj = CheckpointedTrajectory(scheme.step, scheme.create_vector, nsteps, **kwargs)
        _assert_exact(*_run(traj, x0), ref[: nsteps + 1])
        assert traj.stats["forward_steps"] == nsteps and traj.stats["recomputed_steps"] == 0
        assert traj.stats["max_states_in_memory"] <= nsteps + 2
        traj.destroy()
    assert list(base.iterdir()) == []


@pytest.mark.mpi
@pytest.mark.parametrize("nsteps, snapshots, expected", [(50, 1, 1225), (50, 3, 135), (50, 10, 40), (200, 4, None)])
def test_recomputation_is_binomial_optimum(comm, nsteps, snapshots, expected):
    rec = Counter(comm)
    traj = CheckpointedTrajectory(rec.step, rec.create_vector, nsteps, snapshots_in_ram=snapshots)
    x0 = rec.x0()
    seen, xN, back = _run(traj, x0)
    assert [n for n, _ in back] == list(range(nsteps, -1, -1))
    assert all(np.all(a == n) for n, a in seen + back)
    recomputed = traj.stats["recomputed_steps"]
    assert recomputed == _optimal_recomputation(nsteps, snapshots) == (expected or recomputed)
    assert sum(rec.evaluations.values()) == nsteps + recomputed
    r = next(r for r in range(1, nsteps + 1) if comb(snapshots + r, snapshots) >= nsteps + 1)
    assert max(rec.evaluations.values()) == r  # each step evaluated at most r times
    assert traj.stats["max_states_in_memory"] == snapshots + 2
    traj.destroy()
    for vec in (x0, xN):
        vec.destroy()


@pytest.mark.mpi
def test_destroy_during_the_sweep_removes_everything(comm, tmp_path_factory):
    base = _shared_tmp(comm, tmp_path_factory)
    rec = Counter(comm)
    traj = CheckpointedTrajectory(rec.step, rec.create_vector, 30, snapshots_in_ram=1, snapshots_on_disk=3,
                                  directory=base)
    x0 = rec.x0()
    traj.forward(x0).destroy()
    sweep = traj.reverse()
    assert [next(sweep)[0] for _ in range(3)] == [30, 29, 28]
    assert _my_files(base, comm)
    traj.destroy()
    assert list(base.iterdir()) == []
    with pytest.raises(StopIteration):
        next(sweep)
    traj.destroy()  # idempotent
    x0.destroy()


@pytest.mark.mpi
def test_disk_error_on_one_rank_is_raised_on_every_rank(comm, tmp_path_factory, monkeypatch):
    base = _shared_tmp(comm, tmp_path_factory)
    real = checkpointing.atomic_write

    def atomic_write(path, writer):
        if comm.rank == comm.size - 1:
            raise OSError("disk full")
        return real(path, writer)

    monkeypatch.setattr(checkpointing, "atomic_write", atomic_write)
    rec = Counter(comm)
    traj = CheckpointedTrajectory(rec.step, rec.create_vector, 10, snapshots_in_ram=1, snapshots_on_disk=2,
                                  directory=base)
    x0 = rec.x0()
    expected = (OSError, "disk full") if comm.rank == comm.size - 1 else (CollectiveError, f"rank {comm.size - 1}")
    with pytest.raises(expected[0], match=expected[1]):
        traj.forward(x0)
    traj.destroy()
    x0.destroy()
    assert list(base.iterdir()) == []


def _dummy_step(x, out):
    pass


def _dummy_vector():
    raise AssertionError("no vector may be created before the arguments are checked")


@pytest.mark.mpi
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: MemoryTrajectory(_dummy_step, _dummy_vector, -1), r"nsteps must be an integer >= 0, got -1"),
        (lambda: MemoryTrajectory(_dummy_step, _dummy_vector, 2.5), r"nsteps must be .*got 2.5"),
        (lambda: MemoryTrajectory(_dummy_step, _dummy_vector, True), r"nsteps must be .*got True"),
        (lambda: MemoryTrajectory(None, _dummy_vector, 3), r"step must be callable, got NoneType"),
        (lambda: MemoryTrajectory(_dummy_step, 3, 3), r"create_vector must be callable, got int"),
        (lambda: CheckpointedTrajectory(_dummy_step, _dummy_vector, 5, snapshots_in_ram=0),
         r"snapshots_in_ram must be a positive integer, got 0"),
        (lambda: CheckpointedTrajectory(_dummy_step, _dummy_vector, 5, snapshots_in_ram=2, snapshots_on_disk=-1),
         r"snapshots_on_disk must be an integer >= 0, got -1"),
        (lambda: CheckpointedTrajectory(_dummy_step, _dummy_vector, 5, snapshots_in_ram=2, snapshots_on_disk=3),
         r"snapshots_on_disk=3 needs a directory"),
        (lambda: CheckpointedTrajectory(_dummy_step, _dummy_vector, 5, snapshots_in_ram=2, snapshots_on_disk=3,
                                        directory=""), r"directory must be a non-empty path, got ''"),
        (lambda: make_trajectory(_dummy_step, _dummy_vector, 5, max_states=0), r"max_states must be .*got 0"),
        (lambda: make_trajectory(_dummy_step, _dummy_vector, 5, memory_budget=-8),
         r"memory_budget must be positive and finite, got -8"),
        (lambda: make_trajectory(_dummy_step, _dummy_vector, 5, max_states=2),
         r"max_states=2 cannot hold the 6 states nor 3 for checkpointing"),
    ],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(InvalidArgumentError, match=match):
        make()


@pytest.mark.mpi
def test_bad_initial_state_and_misuse(theta, comm):
    scheme, x0, _ = theta
    traj = MemoryTrajectory(scheme.step, scheme.create_vector, 3)
    with pytest.raises(RuntimeError, match="needs a completed forward"):
        traj.reverse()
    with pytest.raises(InvalidArgumentError, match="x0 must be a PETSc Vec, got ndarray"):
        traj.forward(x0.array_r)
    with pytest.raises(InvalidArgumentError, match="callback must be callable"):
        traj.forward(x0, callback=1)
    traj.forward(x0).destroy()
    with pytest.raises(RuntimeError, match="only once"):
        traj.forward(x0)
    assert len(list(traj.reverse())) == 4
    with pytest.raises(RuntimeError, match="runs once"):
        traj.reverse()
    traj.destroy()
    wrong = PETSc.Vec().createMPI((PETSc.DECIDE, 5), comm=comm)
    traj = CheckpointedTrajectory(scheme.step, scheme.create_vector, 3, snapshots_in_ram=1)
    with pytest.raises(InvalidArgumentError, match=f"x0 has 5 entries but create_vector\\(\\) gives {x0.getSize()}"):
        traj.forward(wrong)
    traj.destroy()
    wrong.destroy()
    with pytest.raises(InvalidArgumentError, match=r"memory_budget=100 bytes \(0 states of"):
        make_trajectory(scheme.step, scheme.create_vector, 3, memory_budget=100)


@pytest.mark.mpi
def test_make_trajectory_chooses_the_storage(theta, comm, tmp_path_factory):
    scheme, x0, ref = theta
    state = x0.getSize() * 8
    base = _shared_tmp(comm, tmp_path_factory)

    def make(**kwargs):
        return make_trajectory(scheme.step, scheme.create_vector, N, **kwargs)

    for kwargs in ({}, {"max_states": N + 1}, {"memory_budget": (N + 1) * state}, {"max_states": N + 1, "directory": base}):
        assert type(make(**kwargs)) is MemoryTrajectory, kwargs
    for kwargs, in_ram, on_disk in [
        ({"max_states": N}, N - 2, 0),
        ({"memory_budget": (N + 1) * state - 1}, N - 2, 0),
        ({"memory_budget": 10.5 * state, "max_states": 100}, 8, 0),
        ({"memory_budget": 10**9, "max_states": 4}, 2, 0),
        ({"max_states": 3, "directory": base}, 1, N),
    ]:
        traj = make(**kwargs)
        assert type(traj) is CheckpointedTrajectory, kwargs
        assert (traj.snapshots_in_ram, traj.snapshots_on_disk) == (in_ram, on_disk), kwargs
    traj = make(max_states=5, directory=base)
    _assert_exact(*_run(traj, x0), ref)
    assert traj.stats["max_states_in_memory"] <= 5
    assert traj.stats["recomputed_steps"] == 0 < traj.stats["disk_writes"]  # every state has a snapshot
    traj.destroy()
    assert list(base.iterdir()) == []


@pytest.mark.mpi
def test_snapshots_of_a_killed_run_are_removed_by_the_next_start(comm, tmp_path_factory):
    """Disk snapshots live in a directory with the package's temporary name; a run that never reaches
    destroy() (SIGKILL) leaves it, and sensitivity.io.prepare_output_dir removes it when the next run
    starts in that directory."""
    from sensitivity.io import is_temporary, prepare_output_dir

    base = _shared_tmp(comm, tmp_path_factory)
    rec = Counter(comm)
    traj = CheckpointedTrajectory(rec.step, rec.create_vector, 10, snapshots_in_ram=1, snapshots_on_disk=3,
                                  directory=base)
    x0 = rec.x0()
    traj.forward(x0).destroy()  # snapshots on disk; the run "dies" here, before reverse() and destroy()
    comm.Barrier()
    left = [p.name for p in base.iterdir()]
    assert len(left) == 1 and is_temporary(left[0]) and _my_files(base, comm), left
    prepare_output_dir(comm, base)
    assert list(base.iterdir()) == []
    x0.destroy()
