"""Hostile command lines for every demo: each ends with exit status 2 and one line ``error: ...``
that names the bad value or path, no traceback, and nothing half-written (the issue "Hardening",
classes 3 and 4; the library's tables are tests/test_bad_input.py and tests/test_dense_bad_input.py).

- every numeric option of every demo, zero, negative and (floats) NaN: rejected by the parser;
- ``--output`` an existing regular file, below a regular file, in a read-only directory, under
  ``/proc``, or a directory where the demo writes a file: rejected before any work, creating
  nothing;
- ``potential_estimation``: ``--checkpoint`` a directory or an output file of the run,
  ``--resume`` with a missing, garbage, truncated, foreign or damaged checkpoint.

Most cases run in this process (``exit_on_error(main)``, as the demos' ``__main__`` does, on
COMM_WORLD of size 1), a few under ``mpirun -n 3`` (under a timeout) to check that every rank
fails alike and rank 0 alone prints. The resume of a finished run and a run killed with SIGKILL
are tests/test_demos.py's resume test. These tests launch ``mpirun`` themselves, so they are
skipped when pytest runs under MPI.
"""

from __future__ import annotations

import inspect
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from sensitivity.io import stale_temporaries, write_h5
from sensitivity.parallel import exit_on_error
from tests import mpi_harness

pytestmark = pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="launches mpirun itself")

DEMO_DIR = mpi_harness.ROOT / "demos"
#: The small configuration of every demo (as in tests/test_demos.py).
DEMOS = {
    "potential_estimation": ["--small"],
    "random_rate_matrix_spectra": ["--small"],
    "rate_matrix_asymptotics": ["--small"],
    "skew_hermitian_surrogates": ["--small"],
    "surrogate_vs_adjoint": ["--small"],
    "velocity_sensitivity": ["--small"],
}
#: A failing run stops before any work; this bounds the start-up of mpirun and three ranks.
MPI_TIMEOUT = 90.0

POSITIVE_FLOAT = ["0", "-1", "nan"]
NON_NEGATIVE_FLOAT = ["-1", "nan"]
POSITIVE_INT = ["0", "-1"]
NON_NEGATIVE_INT = ["-1"]

#: Every numeric option of every demo and its bad values (zero where it must be positive).
NUMERIC: dict[str, dict[str, list[str]]] = {
    "velocity_sensitivity": {
        "--resolution": POSITIVE_FLOAT, "--degree": ["0", "3"], "--kappa": POSITIVE_FLOAT,
        "--u-max": POSITIVE_FLOAT, "--dt": POSITIVE_FLOAT, "--steps": POSITIVE_INT,
        "--write-every": POSITIVE_INT, "--fd-eps": NON_NEGATIVE_FLOAT,
    },
    "potential_estimation": {
        "--n": ["0", "-2", "3"], "--half-width": POSITIVE_FLOAT, "--dt": POSITIVE_FLOAT,
        "--steps": POSITIVE_INT, "--observe-every": POSITIVE_INT, "--sensors": POSITIVE_INT,
        "--barrier": POSITIVE_FLOAT, "--separation": POSITIVE_FLOAT, "--confinement": NON_NEGATIVE_FLOAT,
        "--noise": POSITIVE_FLOAT, "--seed": NON_NEGATIVE_INT, "--alpha": NON_NEGATIVE_FLOAT,
        "--beta": NON_NEGATIVE_FLOAT, "--max-it": POSITIVE_INT, "--gttol": POSITIVE_FLOAT,
        "--gatol": NON_NEGATIVE_FLOAT, "--lmvm-history": POSITIVE_INT, "--checkpoint-every": POSITIVE_INT,
    },
    "surrogate_vs_adjoint": {
        "--n": POSITIVE_INT, "--dt": POSITIVE_FLOAT, "--final-times": POSITIVE_FLOAT,
        "--peclet": POSITIVE_FLOAT, "--orders": NON_NEGATIVE_INT,
    },
    "rate_matrix_asymptotics": {
        "--dim": POSITIVE_INT, "--num-times": POSITIVE_INT, "--t-max": POSITIVE_FLOAT,
        "--orders": NON_NEGATIVE_INT, "--seed": NON_NEGATIVE_INT,
    },
    "skew_hermitian_surrogates": {
        "--dim": POSITIVE_INT, "--num-times": POSITIVE_INT, "--t-min": POSITIVE_FLOAT,
        "--t-max": POSITIVE_FLOAT, "--seed": NON_NEGATIVE_INT,
    },
    "random_rate_matrix_spectra": {
        "--dims": POSITIVE_INT, "--samples": POSITIVE_INT, "--seed": NON_NEGATIVE_INT,
    },
}
NUMERIC_CASES = [(name, option, value) for name in sorted(NUMERIC) for option, values in NUMERIC[name].items()
                 for value in values]

OUTPUT_CASES = ("existing_file", "below_a_file", "read_only_dir", "proc", "output_file_is_a_directory")


# --------------------------------------------------------------------------- helpers


def spellings(value: str) -> set[str]:
    """How a message may quote the command-line value ``value`` (``0`` parsed as a float is ``0.0``)."""
    out = {value}
    try:
        number = float(value)
    except ValueError:
        return out
    out.add(repr(number))
    if math.isfinite(number) and number == int(number):
        out.add(str(int(number)))
    return out


def check_error(text: str, *needles: str | set[str]) -> str:
    """``text`` has exactly one line with ``error:``, and it contains every needle (a set: any of
    its spellings); no traceback. Returns that line."""
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if "error:" in line]
    assert len(lines) == 1, text
    for needle in needles:
        options = needle if isinstance(needle, set) else {needle}
        assert any(n in lines[0] for n in options), (needle, lines[0])
    return lines[0]


def tree(path: Path) -> dict[str, tuple[bool, int, bytes]]:
    """Every entry below ``path``: (is a directory, size, content of small files)."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = Path(root) / name
            data = p.read_bytes() if p.is_file() and p.stat().st_size < 1 << 16 else b""
            out[str(p.relative_to(path))] = (p.is_dir(), 0 if p.is_dir() else p.stat().st_size, data)
    return out


def nothing_half_written(directory: Path) -> None:
    """No temporary of the package (``.….partial…``) and no empty PNG below ``directory``."""
    for root, dirs, files in os.walk(directory):
        assert not stale_temporaries(root), f"temporaries left in {root}: {stale_temporaries(root)}"
        for name in files:
            p = Path(root) / name
            assert not (name.endswith(".png") and p.stat().st_size == 0), f"empty PNG {p}"


def unwritable(path: Path) -> bool:
    try:
        (path / ".probe").write_text("x")
    except OSError:
        return True
    (path / ".probe").unlink()
    return False


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory no file can be created in: mode 0500, and immutable (``chattr +i``) when we
    are root, who ignores the mode; skipped where neither works."""
    path = tmp_path / "read-only"
    path.mkdir()
    path.chmod(0o500)
    immutable = False
    if not unwritable(path) and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    try:
        if not unwritable(path):
            pytest.skip("cannot make a read-only directory here (root without chattr +i)")
        yield path
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o700)


def bad_output(case: str, name: str, tmp_path: Path, read_only: Path | None) -> tuple[Path, list]:
    """The --output of ``case`` (created under ``tmp_path``) and what the message must contain."""
    if case == "existing_file":
        target = tmp_path / "results.txt"
        target.write_text("precious")
        return target, [f"--output {target} is an existing file, not a directory"]
    if case == "below_a_file":
        (tmp_path / "results.txt").write_text("precious")
        target = tmp_path / "results.txt" / "out"
        return target, [f"--output {target}: {tmp_path / 'results.txt'} is a file, not a directory"]
    if case == "read_only_dir":
        target = read_only / "out"
        return target, [f"--output {target}: cannot create the directory {target}: {read_only} is not writable"]
    if case == "proc":
        target = Path("/proc/sensitivity-no-such-dir/out")
        return target, [f"--output {target}: cannot create the directory"]
    if case == "output_file_is_a_directory":
        target = tmp_path / "out"
        (target / f"{name}.h5").mkdir(parents=True)
        return target, [f"{target / (name + '.h5')} is a directory, but this run writes a file there"]
    raise AssertionError(case)


def run_in_process(module, argv: list[str], capsys) -> tuple[int, str]:
    """``sys.exit(exit_on_error(main))`` as the demo's ``__main__`` runs it; (status, stdout + stderr).
    (The parser's own errors exit with status 2 from inside ``main``.)"""
    try:
        status = exit_on_error(lambda: module.main(argv))
    except SystemExit as exc:
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def run_mpi(nprocs: int, name: str, args: list[str]):
    return mpi_harness.run_mpi(nprocs, [str(DEMO_DIR / f"{name}.py"), *args], timeout=MPI_TIMEOUT)


def test_every_demo_is_covered():
    found = {p.stem for p in DEMO_DIR.glob("*.py")}
    assert found == set(DEMOS) == set(NUMERIC), sorted(found ^ set(NUMERIC))


def parse(module, argv):
    """``module.parse_args(argv)``, with the communicator where the demo takes one."""
    if "comm" in inspect.signature(module.parse_args).parameters:
        return module.parse_args(argv, MPI.COMM_WORLD)
    return module.parse_args(argv)


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(("name", "option", "value"), NUMERIC_CASES)
def test_numeric_option_rejected(name, option, value, load_demo, capsys):
    module = load_demo(name)
    argv = [*DEMOS[name], option, value]
    if option == "--dims":
        argv.append("10")  # at least two dimensions, one of them bad
    with pytest.raises(SystemExit) as info:
        parse(module, argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    check_error(captured.out + captured.err, option, spellings(value))


# --------------------------------------------------------------------------- --output


@pytest.mark.parametrize("case", OUTPUT_CASES)
@pytest.mark.parametrize("name", sorted(DEMOS))
def test_bad_output_fails_before_any_work(name, case, tmp_path, request, load_demo, capsys):
    read_only = request.getfixturevalue("read_only_dir") if case == "read_only_dir" else None
    target, expected = bad_output(case, name, tmp_path, read_only)
    before = tree(tmp_path)
    status, text = run_in_process(load_demo(name), [*DEMOS[name], "--output", str(target)], capsys)
    assert status == 2, text
    check_error(text, *expected)
    assert tree(tmp_path) == before, "a rejected --output must leave everything as it was"
    nothing_half_written(tmp_path)


#: One case per demo under mpirun -n 3 (the rest are the same code path in this process).
MPI_OUTPUT_CASES = [
    ("potential_estimation", "output_file_is_a_directory"),
    ("random_rate_matrix_spectra", "below_a_file"),
    ("rate_matrix_asymptotics", "existing_file"),
    ("skew_hermitian_surrogates", "proc"),
    ("surrogate_vs_adjoint", "read_only_dir"),
    ("velocity_sensitivity", "existing_file"),
]


@pytest.mark.parametrize(("name", "case"), MPI_OUTPUT_CASES)
def test_bad_output_fails_on_every_rank(name, case, tmp_path, request):
    read_only = request.getfixturevalue("read_only_dir") if case == "read_only_dir" else None
    target, expected = bad_output(case, name, tmp_path, read_only)
    before = tree(tmp_path)
    result = run_mpi(3, name, [*DEMOS[name], "--output", str(target)])
    assert result.returncode == 2, result.stdout
    check_error(result.stdout, *expected)  # printed once: by rank 0
    assert tree(tmp_path) == before


# --------------------------------------------------------------------------- checkpoints


def _damaged_checkpoint(path: Path) -> None:
    """The groups of a checkpoint, with histories of different lengths."""
    history = {k: np.zeros(3 if k == "objective" else 2) for k in
               ("objective", "misfit", "gradient_norm", "rel_error", "weighted_error", "evaluations")}
    write_h5(MPI.COMM_SELF, path, {"iterate": np.zeros(4), "coordinates": np.zeros((4, 2)), "history": history,
                                   "config": {"n": 12}})


def checkpoint_case(case: str, tmp_path: Path) -> tuple[list[str], list]:
    """The checkpoint options of ``case`` and what the message must contain."""
    ck = tmp_path / "ck" / "optimization.h5"
    if case == "checkpoint_is_a_directory":
        ck.mkdir(parents=True)
        return ["--checkpoint", str(ck)], [f"--checkpoint {ck} is a directory, not a file"]
    if case == "resume_checkpoint_is_a_directory":
        ck.mkdir(parents=True)
        return ["--checkpoint", str(ck), "--resume"], [f"--resume: the checkpoint {ck} is a directory, not a file"]
    if case == "checkpoint_is_an_output_file":
        ck = tmp_path / "out" / "potential_estimation.h5"
        return ["--checkpoint", str(ck)], [f"--checkpoint {ck} is an output file of this run"]
    if case == "checkpoint_below_a_file":
        (tmp_path / "ck").write_text("precious")
        return ["--checkpoint", str(ck)], [f"--checkpoint {ck}: {tmp_path / 'ck'} is a file, not a directory"]
    if case == "empty_checkpoint_path":
        return ["--checkpoint", ""], ["--checkpoint must be a non-empty path"]
    if case == "resume_without_checkpoint":
        return ["--resume"], ["--resume needs --checkpoint PATH"]
    ck.parent.mkdir(parents=True)
    if case == "resume_missing":
        return ["--checkpoint", str(ck), "--resume"], [f"--resume: no checkpoint file {ck}"]
    if case == "resume_garbage":
        ck.write_bytes(b"not an HDF5 file\n" * 10)
        return ["--checkpoint", str(ck), "--resume"], [f"--resume: cannot read the checkpoint {ck}",
                                                       "file signature not found"]
    if case == "resume_empty_file":
        ck.write_bytes(b"")
        return ["--checkpoint", str(ck), "--resume"], [f"--resume: cannot read the checkpoint {ck}"]
    if case == "resume_truncated":
        _damaged_checkpoint(ck)
        ck.write_bytes(ck.read_bytes()[:1500])
        return ["--checkpoint", str(ck), "--resume"], [f"--resume: cannot read the checkpoint {ck}", "truncated"]
    if case == "resume_foreign":
        write_h5(MPI.COMM_SELF, ck, {"t": np.linspace(0, 1, 5), "readings": np.ones((5, 4))}, attrs={"demo": "x"})
        return ["--checkpoint", str(ck), "--resume"], [f"--resume: {ck} is not a checkpoint of potential_estimation",
                                                       "(no iterate)"]
    if case == "resume_damaged":
        _damaged_checkpoint(ck)
        return ["--checkpoint", str(ck), "--resume"], [f"--resume: the checkpoint {ck} is damaged"]
    raise AssertionError(case)


CHECKPOINT_CASES = ("checkpoint_is_a_directory", "resume_checkpoint_is_a_directory", "checkpoint_is_an_output_file",
                    "checkpoint_below_a_file", "empty_checkpoint_path", "resume_without_checkpoint", "resume_missing",
                    "resume_garbage", "resume_empty_file", "resume_truncated", "resume_foreign", "resume_damaged")


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_bad_checkpoint_fails_before_any_work(case, tmp_path, load_demo, capsys):
    args, expected = checkpoint_case(case, tmp_path)
    out = tmp_path / "out"
    before = tree(tmp_path)
    status, text = run_in_process(load_demo("potential_estimation"), ["--small", "--output", str(out), *args], capsys)
    assert status == 2, text
    check_error(text, *expected)
    assert tree(tmp_path) == before and not out.exists(), "nothing may be written for a bad checkpoint"


@pytest.mark.parametrize("case", ["checkpoint_is_a_directory", "resume_garbage", "resume_foreign"])
def test_bad_checkpoint_fails_on_every_rank(case, tmp_path):
    args, expected = checkpoint_case(case, tmp_path)
    before = tree(tmp_path)
    result = run_mpi(3, "potential_estimation", ["--small", "--output", str(tmp_path / "out"), *args])
    assert result.returncode == 2, result.stdout
    check_error(result.stdout, *expected)
    assert tree(tmp_path) == before


def test_nothing_half_written_helper_sees_temporaries(tmp_path):
    """The check used after the runs recognizes what a killed run leaves."""
    nothing_half_written(tmp_path)
    (tmp_path / ".x.abcd1234.partial.h5").write_bytes(b"")
    with pytest.raises(AssertionError, match="temporaries"):
        nothing_half_written(tmp_path)
    (tmp_path / ".x.abcd1234.partial.h5").unlink()
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(AssertionError, match="empty PNG"):
        nothing_half_written(tmp_path)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
