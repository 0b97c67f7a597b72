"""The documentation stands alone and points at checks that exist.

docs/theory.md says where each statement is checked (``tests/FILE.py::test_name``): every such
reference must name an existing test function, so that renaming a test cannot silently orphan the
claim. Nothing in the repository may refer to a folder outside it.
"""

from __future__ import annotations

import re
import subprocess

from tests.mpi_harness import ROOT


def test_theory_references_name_existing_tests():
    text = (ROOT / "docs" / "theory.md").read_text()
    names, last = set(), None
    for span in re.findall(r"`([^`]*::[^`]*)`", text):  # `tests/x.py::a` then `::b` continues tests/x.py
        path, _, name = span.partition("::")
        if path:
            last = path if path.startswith("tests/") else f"tests/{path}"
        if last and re.fullmatch(r"\w+", name):
            names.add((last, name))
    assert len(names) > 50, len(names)
    missing = []
    for f, name in sorted(names):
        path = ROOT / f
        if not path.exists() or not re.search(rf"^(async )?def {name}\b", path.read_text(), flags=re.M):
            missing.append(f"{f}::{name}")
    assert not missing, missing


def test_nothing_refers_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:  # not a git checkout (an unpacked sdist): check the working tree
        files = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts]
    offenders = []
    for name in files:
        path = ROOT / name
        if not path.is_file():  # (deleted in the working tree)
            continue
        if path.suffix not in {".py", ".md", ".toml", ".sh", ".txt", ".cfg", ".yml", ".yaml"} and path.name != "Dockerfile":
            continue
        if path == ROOT / "tests" / "test_docs.py":
            continue
        if "../shared" in path.read_text(errors="ignore"):
            offenders.append(name)
    assert not offenders, offenders
