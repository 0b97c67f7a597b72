"""The complex PETSc build (docs/theory.md §3.3): the Schrödinger module runs with native complex ψ
and gives the real build's numbers.

``tests/mpi_scripts/schrodinger_numbers.py`` computes one problem's numbers — conservation,
densities, region probabilities, the objective, its adjoint gradient, tangent derivative,
Hessian action, Taylor remainders, the gradient from disk checkpoints, eigenpairs, first-order and secular surrogate gradients and
errors — with this (real) build serially and with the complex build of ``.venv-complex``
(made by ``scripts/test.sh``, which exports ``SENSITIVITY_COMPLEX_PYTHON``) serially and under
``mpirun -n 2``; they must agree to round-off. By hand::

    SENSITIVITY_VENV=.venv-complex SENSITIVITY_EXTRAS=fenics-complex,test bash -c 'source scripts/bootstrap.sh'
    .venv-complex/bin/python tests/mpi_scripts/schrodinger_numbers.py --json complex.json
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from tests import mpi_harness

SCRIPT = mpi_harness.ROOT / "tests" / "mpi_scripts" / "schrodinger_numbers.py"
COMPLEX_PYTHON = os.environ.get("SENSITIVITY_COMPLEX_PYTHON", "")

pytestmark = [
    pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="launches its own processes"),
    pytest.mark.skipif(not COMPLEX_PYTHON, reason="no complex-build venv: run scripts/test.sh "
                       "(or set SENSITIVITY_COMPLEX_PYTHON)"),
    pytest.mark.slow,  # the module fixture runs the script in both builds, serially and under mpirun (~30 s)
]

#: Numbers that are themselves round-off (checked to be small, not compared).
ROUNDOFF = ("norm_drift", "energy_drift")
#: Relative tolerance per entry (default 1e-11): finite differences and the secular surrogate's
#: eigen-solves (tolerance 1e-12) amplify round-off.
RTOL = {"taylor_remainders": 1e-8, "taylor_rates": 1e-8, "secular_gradient": 1e-9, "secular_derivative": 1e-9}


def _numbers(python: str, tmp_path: Path, name: str, nprocs: int = 1) -> dict:
    out = tmp_path / f"{name}.json"
    cmd = [python, str(SCRIPT), "--json", str(out)]
    if nprocs > 1:
        cmd = [str(Path(python).parent / "mpirun"), "-n", str(nprocs)] + cmd
    mpi_harness.check(mpi_harness.run(cmd, timeout=300))
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("builds")
    return {"real": _numbers(sys.executable, tmp, "real"),
            "complex": _numbers(COMPLEX_PYTHON, tmp, "complex"),
            "complex_2": _numbers(COMPLEX_PYTHON, tmp, "complex_2", nprocs=2)}


def test_the_builds_are_the_builds_they_claim(runs):
    assert runs["real"]["scalar_type"] == "float64"
    assert runs["complex"]["scalar_type"] == runs["complex_2"]["scalar_type"] == "complex128"
    assert runs["complex_2"]["nprocs"] == 2


@pytest.mark.parametrize("run", ["complex", "complex_2"])
def test_complex_build_gives_the_real_builds_numbers(runs, run):
    real, other = runs["real"], runs[run]
    assert set(real) == set(other)
    for key, value in real.items():
        if key in ("scalar_type", "nprocs") + ROUNDOFF:
            continue
        a, b = np.atleast_1d(value), np.atleast_1d(other[key])
        scale = np.max(np.abs(a))
        assert scale > 0.0, key  # nothing compared is trivially zero
        err = np.max(np.abs(a - b)) / scale
        assert err <= RTOL.get(key, 1e-11), (key, err)


@pytest.mark.parametrize("run", ["real", "complex", "complex_2"])
def test_each_build_conserves_the_norm_and_passes_its_checks(runs, run):
    r = runs[run]
    assert r["norm_drift"] < 1e-12 and r["energy_drift"] < 1e-12
    assert abs(r["gradient_dot_v"] - r["derivative"]) <= 1e-10 * abs(r["derivative"])  # adjoint = tangent
    assert np.all(np.abs(np.array(r["taylor_rates"]) - 2.0) < 0.05)
    assert sum(r["region_probabilities"]) == pytest.approx(1.0, abs=1e-12)  # the regions partition the box
    g, gc = np.array(r["gradient"]), np.array(r["checkpointed_gradient"])
    assert r["checkpoint_disk_writes"] > 0 and np.max(np.abs(gc - g)) <= 1e-12 * np.max(np.abs(g))


def test_advection_diffusion_refuses_the_complex_build(tmp_path):
    code = ("import sensitivity\nfrom mpi4py import MPI\nfrom dolfinx import fem, mesh\n"
            "from sensitivity.fem import AdvectionDiffusion, VelocityField\n"
            "msh = mesh.create_unit_square(MPI.COMM_WORLD, 2, 2)\n"
            "u = fem.Function(fem.functionspace(msh, ('Lagrange', 1, (2,))))\n"
            "AdvectionDiffusion(fem.functionspace(msh, ('Lagrange', 1)), VelocityField(u), 0.1)\n")
    result = mpi_harness.run([COMPLEX_PYTHON, "-c", code], timeout=120)
    assert result.returncode != 0
    assert "advection-diffusion needs the real PETSc build" in result.stdout, result.stdout[-2000:]
