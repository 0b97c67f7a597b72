"""Shared fixtures and hooks.

Under mpirun, every test ends with gc + Barrier so that collective destructors run together
(as in DOLFINx's own suite). Tests share helpers through the fixtures here, never by importing
another ``test_*.py`` module: the finite-element builders live in ``tests/fem_setups.py``
(imported only when one of its fixtures is used, so the dense tests need no DOLFINx).
A marker that ``pyproject.toml`` does not declare is an error."""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from mpi4py import MPI  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def comm() -> MPI.Comm:
    return MPI.COMM_WORLD


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(20261120)


# --------------------------------------------------------------------------- finite-element builders


def _fem_setups():
    from tests import fem_setups

    return fem_setups


@pytest.fixture(scope="session")
def advection_problem():
    """``make(comm, n=6, control="stream", supg=False, inflow=False, kappa=0.05)`` ->
    ``(problem, c, v, theta0)``: see :func:`tests.fem_setups.advection_problem`."""
    return _fem_setups().advection_problem


@pytest.fixture(scope="session")
def initial_blob():
    """The initial tracer of :func:`advection_problem`, a callable for ``Function.interpolate``."""
    return _fem_setups().blob


@pytest.fixture(scope="session")
def advection_functional():
    """``make(comm, *, control, supg, inflow, theta, nsteps, n, dt, **kwargs)`` -> ``(F, v)``: a
    ReducedFunctional with every kind of term; see :func:`tests.fem_setups.advection_functional`."""
    return _fem_setups().advection_functional


@pytest.fixture(scope="session")
def control_map():
    """``control_map(prob, scheme, control, fn)``: the map ``point ↦ fn()`` with the control set
    to ``point`` (restored after each call); see :func:`tests.fem_setups.control_map`."""
    return _fem_setups().control_map


@pytest.fixture(scope="session")
def tangent_taylor():
    """``tangent_taylor(prob, scheme, c, v, th0, nsteps, step)`` -> ``(result, theta_N, rho_N, F0)``:
    the Taylor test of the θ-scheme's tangent; see :func:`tests.fem_setups.tangent_taylor_test`."""
    return _fem_setups().tangent_taylor_test


@pytest.fixture(scope="session")
def reduced_taylor():
    """``reduced_taylor(F, v, value, slope, step)`` -> TaylorResult of a reduced functional; see
    :func:`tests.fem_setups.reduced_taylor_test`."""
    return _fem_setups().reduced_taylor_test


@pytest.fixture(scope="session")
def load_demo():
    """``load_demo(name)``: import ``demos/NAME.py`` as a module (its ``main`` is not run)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"_demo_{name}", ROOT / "demos" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module

    return load


# --------------------------------------------------------------------------- hooks


@pytest.fixture(autouse=True)
def _collective_teardown():
    yield
    if MPI.COMM_WORLD.size > 1:
        gc.collect()
        # No PETSc.garbage_cleanup(COMM_WORLD) here: it duplicates PETSc's inner communicator on the ranks that
        # have none attached at that moment, and a test that left one attached on some ranks only (an object on
        # COMM_WORLD made on rank 0 alone) made it hang, ranks split between MPI_Comm_dup and an allreduce.
        MPI.COMM_WORLD.Barrier()


def pytest_configure(config):
    # Under mpirun only rank 0 reports; the others stay quiet but still run every test.
    if MPI.COMM_WORLD.size > 1 and MPI.COMM_WORLD.rank > 0:
        config.option.verbose = -2
        config.option.reportchars = ""
    os.environ.setdefault("MPLBACKEND", "Agg")


def _declared_markers(config) -> set[str]:
    """The markers of ``pyproject.toml`` and of pytest and its plugins (``config.getini("markers")``)."""
    return {line.split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")}


def pytest_collection_modifyitems(config, items):
    """An undeclared marker (a typo such as ``@pytest.mark.mip``) is an error, not a silent no-op."""
    declared = _declared_markers(config)
    unknown: dict[str, list[str]] = {}
    for item in items:
        for mark in item.iter_markers():
            if mark.name not in declared:
                unknown.setdefault(mark.name, []).append(item.nodeid)
    if unknown:
        lines = [f"  {name}: {', '.join(ids[:3])}{' ...' if len(ids) > 3 else ''}"
                 for name, ids in sorted(unknown.items())]
        raise pytest.UsageError("markers not declared in pyproject.toml [tool.pytest.ini_options] markers:\n"
                                + "\n".join(lines))
