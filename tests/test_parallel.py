"""Runs the tests marked ``mpi`` under ``mpirun -n 2`` and ``-n 3``, each run bounded by a timeout,
and checks that the harness turns a deadlock into a failure.

The MPI tests run in a few batches of test files, one ``mpirun`` per batch. A PETSc object that
Python frees without an explicit ``destroy()`` is only *scheduled* for destruction (petsc4py's
delayed destroy, because destroying can be collective) and keeps its communicator's PETSc inner
communicator alive until ``PETSc.garbage_cleanup`` runs on that communicator. Every test builds its
meshes on new communicators, which are gone by the time a teardown could clean them, so one process
running the whole suite accumulated some two thousand such communicators and hit MPICH's limit of
2048. A batch stays far below it; ``test_mpi_batches_cover_every_mpi_file`` keeps every file in one.
"""

from __future__ import annotations

import re
import time

import pytest
from mpi4py import MPI

from tests import mpi_harness

serial_only = pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="launches mpirun itself")

#: Files run together in one mpirun (the heavy finite-element files three at a time); any other file
#: with tests marked ``mpi`` gets a batch of its own.
BATCHES = {
    "light": ["test_bad_input.py", "test_collective_destruction.py", "test_dense_ensembles.py",
              "test_io_parallel.py", "test_meshes.py", "test_verification.py", "test_fem_observation.py",
              "test_fem_stokes_output.py", "test_fem_checkpointing.py", "test_fem_exponential.py"],
    "estimation": ["test_estimation_prior.py", "test_estimation_map.py", "test_estimation_laplace.py",
                   "test_estimation_modal.py", "test_estimation_samplers.py", "test_estimation_chains.py", "test_estimation_diagnostics.py",
                   "test_estimation_rates.py"],
    "fem derivatives": ["test_fem_adjoint.py", "test_fem_tangent.py", "test_fem_surrogates.py"],
    "fem spaces": ["test_fem_p2_meshes.py", "test_fem_schrodinger.py", "test_fem_secular.py"],
}


def _mpi_files() -> list[str]:
    tests = mpi_harness.ROOT / "tests"
    marked = re.compile(r"^\s*(@pytest\.mark\.mpi\b|pytestmark\b.*\bpytest\.mark\.mpi\b)", re.MULTILINE)
    return sorted(p.name for p in tests.glob("test_*.py") if marked.search(p.read_text()))


def _batches() -> dict[str, list[str]]:
    files = _mpi_files()
    batches = {name: [f for f in group if f in files] for name, group in BATCHES.items()}
    grouped = {f for group in batches.values() for f in group}
    batches.update({f.removesuffix(".py"): [f] for f in files if f not in grouped})
    return {name: group for name, group in batches.items() if group}


@serial_only
@pytest.mark.slow
@pytest.mark.parametrize("nprocs", [2, 3])
@pytest.mark.parametrize("batch", sorted(_batches()))
def test_mpi_suite(nprocs, batch):
    files = [f"tests/{name}" for name in _batches()[batch]]
    result = mpi_harness.run_mpi(nprocs, ["-m", "pytest", "-m", "mpi", "-q", "-p", "no:cacheprovider", *files])
    out = mpi_harness.check(result)
    assert " passed" in out, out[-2000:]


def test_mpi_batches_cover_every_mpi_file():
    batches = _batches()
    listed = [f for group in batches.values() for f in group]
    assert sorted(listed) == _mpi_files() and len(set(listed)) == len(listed), batches
    unknown = {f for group in BATCHES.values() for f in group} - set(_mpi_files())
    assert not unknown, f"BATCHES names files without mpi tests: {sorted(unknown)}"


@serial_only
@pytest.mark.slow  # waits for its 10 s timeout
def test_collective_on_one_rank_fails_within_timeout():
    timeout = 10.0
    start = time.monotonic()
    with pytest.raises(mpi_harness.MPITimeout, match="deadlock"):
        mpi_harness.run_mpi(2, [str(mpi_harness.ROOT / "tests" / "mpi_scripts" / "deadlock.py")], timeout=timeout)
    assert time.monotonic() - start < timeout + 10.0
