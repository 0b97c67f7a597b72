"""The package a user installs: ``python -m build`` makes an sdist and a wheel that ``twine check``
accepts, under the distribution name ``sensitivity-fem`` (``sensitivity`` on PyPI is an unrelated
project) with the version of ``sensitivity.__version__``; the wheel, installed into a clean venv,
imports as ``sensitivity`` and holds every module of the source tree.

The build runs on a copy of the project's packaging inputs, so the work tree gets no build
artifacts. It needs the ``build`` and ``twine`` packages (the ``test`` extra) and an index for the
build backend (setuptools, in build's isolated environment) and for NumPy/SciPy in the clean venv
(pip's cache serves them after the bootstrap).
"""

from __future__ import annotations

import ast
import email
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from mpi4py import MPI

from tests.mpi_harness import ROOT

pytestmark = [
    pytest.mark.slow,  # two builds, a venv and an install: ~30 s
    pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="builds and installs; serial only"),
]

DIST_NAME = "sensitivity-fem"
#: The file names of the distributions (PEP 625 / PEP 427 normalize '-' to '_').
FILE_STEM = DIST_NAME.replace("-", "_")


def source_version() -> str:
    """``__version__`` as sensitivity/__init__.py spells it (read, not imported)."""
    tree = ast.parse((ROOT / "sensitivity" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("no __version__ in sensitivity/__init__.py")


def source_modules() -> set[str]:
    """Every module of the import package, as a path relative to the project root."""
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / "sensitivity").rglob("*.py")
            if "__pycache__" not in p.parts}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """The sdist and the wheel, built by ``python -m build`` from a copy of the project."""
    work = tmp_path_factory.mktemp("packaging")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "sensitivity", src / "sensitivity",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    out = work / "dist"
    run([sys.executable, "-m", "build", "--outdir", str(out), str(src)])
    version = source_version()
    found = {"sdist": out / f"{FILE_STEM}-{version}.tar.gz", "wheel": out / f"{FILE_STEM}-{version}-py3-none-any.whl"}
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in found.values())
    return found


def test_the_distribution_name_is_not_the_taken_one():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DIST_NAME
    # one source of the version: sensitivity/__init__.py, read by setuptools
    assert "version" not in project and "version" in project["dynamic"]


def test_twine_accepts_both(dists):
    run([sys.executable, "-m", "twine", "check", "--strict", str(dists["sdist"]), str(dists["wheel"])])


def test_metadata(dists):
    with zipfile.ZipFile(dists["wheel"]) as whl:
        meta = email.message_from_bytes(whl.read(f"{FILE_STEM}-{source_version()}.dist-info/METADATA"))
    assert meta["Name"] == DIST_NAME
    assert meta["Version"] == source_version()
    assert meta["Requires-Python"] == ">=3.12"
    assert meta["Description-Content-Type"] == "text/markdown"
    assert {"fenics", "fenics-complex", "test"} <= set(meta.get_all("Provides-Extra"))


def test_every_module_is_in_both(dists):
    want = source_modules()
    with zipfile.ZipFile(dists["wheel"]) as whl:
        in_wheel = {n for n in whl.namelist() if n.endswith(".py")}
    assert in_wheel == want  # nothing missing, nothing else (no tests, demos or scripts)
    with tarfile.open(dists["sdist"]) as tar:
        prefix = f"{FILE_STEM}-{source_version()}/"
        in_sdist = {n.removeprefix(prefix) for n in tar.getnames()}
    assert want <= in_sdist
    assert {"pyproject.toml", "README.md", "PKG-INFO"} <= in_sdist


def test_wheel_installs_into_a_clean_venv_and_imports(dists, tmp_path):
    import numpy
    import scipy

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])  # no system site-packages
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, "--no-deps", str(dists["wheel"])], env=env)
    # the dense toolkit needs NumPy and SciPy alone: the versions here, from pip's cache
    run([*pip, f"numpy=={numpy.__version__}", f"scipy=={scipy.__version__}"], env=env)
    probe = r"""
import json, importlib.metadata as md
import sensitivity, sensitivity.dense
from sensitivity.dense import expm_frechet
import numpy as np
Y = expm_frechet(np.zeros((2, 2)), np.eye(2), t=1.0)
dist = md.distribution("sensitivity-fem")
print(json.dumps({
    "file": sensitivity.__file__, "version": sensitivity.__version__, "meta_version": dist.version,
    "name": dist.metadata["Name"], "files": [str(f) for f in dist.files if str(f).endswith(".py")],
    "Y_error": float(abs(Y - np.eye(2)).max()), "solver": sensitivity._dolfinx_solver is not None,
}))
"""
    # run from an empty directory, so the source tree cannot be what is imported
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    got = json.loads(run([str(python), "-c", probe], cwd=cwd, env=env).stdout)
    assert Path(got["file"]).is_relative_to(venv), got["file"]
    assert got["name"] == DIST_NAME
    assert got["version"] == got["meta_version"] == source_version()
    assert set(got["files"]) == source_modules()
    assert got["Y_error"] < 1e-14  # the derivative of exp(tQ) along J at Q = 0 is t·J
    assert got["solver"] is False  # no DOLFINx in the clean venv: the guarded import is skipped
