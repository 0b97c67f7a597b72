"""The README's Python example runs and says what it claims."""

from __future__ import annotations

import re

import numpy as np

from tests.mpi_harness import ROOT


def test_readme_python_blocks_run():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2
    scopes = []
    for block in blocks:
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


def test_ci_runs_the_readme_test_command():
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert "```\nbash scripts/test.sh\n```" in (ROOT / "README.md").read_text()
