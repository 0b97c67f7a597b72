"""The README's Python example runs and says what it claims."""

from __future__ import annotations

import re

import numpy as np

from tests.mpi_harness import ROOT


def test_readme_python_blocks_run():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        scope: dict = {}
        exec(compile(block, "README.md", "exec"), scope)
    Y, Y_inf, bound, J = scope["Y"], scope["Y_inf"], scope["bound"], scope["J"]
    assert np.allclose(J.sum(axis=1), 0.0)
    assert np.linalg.norm(Y - Y_inf, 2) <= bound(5.0) + 1e-13


def test_ci_runs_the_readme_test_command():
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert "```\nbash scripts/test.sh\n```" in (ROOT / "README.md").read_text()
