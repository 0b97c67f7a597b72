"""Runs the tests marked ``mpi`` under ``mpirun -n 2`` and ``-n 3``, each bounded by a timeout,
and checks that the harness turns a deadlock into a failure."""

from __future__ import annotations

import time

import pytest
from mpi4py import MPI

from tests import mpi_harness

serial_only = pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="launches mpirun itself")


@serial_only
@pytest.mark.slow
@pytest.mark.parametrize("nprocs", [2, 3])
def test_mpi_suite(nprocs):
    result = mpi_harness.run_mpi(
        nprocs, ["-m", "pytest", "-m", "mpi", "-q", "-p", "no:cacheprovider", "tests"]
    )
    out = mpi_harness.check(result)
    assert " passed" in out, out[-2000:]


@serial_only
@pytest.mark.slow  # waits for its 10 s timeout
def test_collective_on_one_rank_fails_within_timeout():
    timeout = 10.0
    start = time.monotonic()
    with pytest.raises(mpi_harness.MPITimeout, match="deadlock"):
        mpi_harness.run_mpi(2, [str(mpi_harness.ROOT / "tests" / "mpi_scripts" / "deadlock.py")], timeout=timeout)
    assert time.monotonic() - start < timeout + 10.0
