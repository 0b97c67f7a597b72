"""The README's Python examples run and say what they claim."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.mpi_harness import ROOT


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_python_blocks_run():
    blocks = _blocks()
    assert len(blocks) == 4
    scopes = []
    for block in blocks[:3]:
        scope: dict = {}
        exec(compile(block, "README.md", "exec"), scope)
        scopes.append(scope)
    Y, Y_inf, bound, J = (scopes[0][k] for k in ("Y", "Y_inf", "bound", "J"))
    assert np.allclose(J.sum(axis=1), 0.0)
    assert np.linalg.norm(Y - Y_inf, 2) <= bound(5.0) + 1e-13
    # the gradient example: checkpointing was used and the value is a finite positive misfit
    F, value = scopes[1]["F"], scopes[1]["value"]
    assert np.isfinite(value) and value > 0
    assert F.stats["max_states_in_memory"] <= 8 and F.stats["recomputed_steps"] > 0
    # the Schrödinger example: the adjoint gradient is the tangent's derivative, the secular
    # surrogate gradient exists and the initial state lies in the eigenbasis
    q = scopes[2]
    F, gradient, V, secular = q["F"], q["gradient"], q["V"], q["secular"]
    along = F.directional_derivative(V)
    assert abs(gradient.x.petsc_vec.dot(V.x.petsc_vec) - along) <= 1e-9 * abs(along)
    assert np.isfinite(secular.x.petsc_vec.norm()) and secular.x.petsc_vec.norm() > 0
    assert q["basis"].outside_fraction(q["phi0"].x.petsc_vec) < 1e-12


@pytest.mark.slow
def test_the_readme_estimation_example_runs(tmp_path, monkeypatch):
    """The estimation block (MAP, Laplace, two chains on disk, ArviZ summary), in a fresh directory: it writes
    output/chains relative to where it runs."""
    block = _blocks()[3]
    assert "find_map" in block and "sample(" in block
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["result"].reason.startswith("CONVERGED")
    assert len(scope["laplace"].eigenvalues) == 3
    assert (tmp_path / "output" / "chains").is_dir()
    assert scope["summary"].acceptance_rate.shape == (2,)


def test_ci_runs_the_readme_test_command():
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert "```\nbash scripts/test.sh\n```" in (ROOT / "README.md").read_text()
