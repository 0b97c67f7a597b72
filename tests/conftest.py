"""Shared fixtures. Under mpirun, every test ends with gc + Barrier so that collective
destructors run together (as in DOLFINx's own suite)."""

from __future__ import annotations

import gc
import os

import matplotlib
import pytest

matplotlib.use("Agg")

from mpi4py import MPI  # noqa: E402


@pytest.fixture
def comm() -> MPI.Comm:
    return MPI.COMM_WORLD


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(20261120)


@pytest.fixture(autouse=True)
def _collective_teardown():
    yield
    if MPI.COMM_WORLD.size > 1:
        gc.collect()
        MPI.COMM_WORLD.Barrier()


def pytest_configure(config):
    # Under mpirun only rank 0 reports; the others stay quiet but still run every test.
    if MPI.COMM_WORLD.size > 1 and MPI.COMM_WORLD.rank > 0:
        config.option.verbose = -2
        config.option.reportchars = ""
    os.environ.setdefault("MPLBACKEND", "Agg")
