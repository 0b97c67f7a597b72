"""Atomic output, output-path checks, temporaries and collective error handling, serially and under mpirun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sensitivity.errors import InvalidArgumentError
from sensitivity.io import (
    OutputError,
    atomic_write,
    check_output_file,
    is_temporary,
    prepare_output_dir,
    read_h5,
    remove_stale_temporaries,
    save_figure,
    stale_temporaries,
    write_h5,
)
from sensitivity.parallel import CollectiveError, progress, run_on_root


def _shared_tmp(comm, tmp_path_factory):
    path = tmp_path_factory.mktemp("io") if comm.rank == 0 else None
    return comm.bcast(path, root=0)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")

    def failing(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["x.txt"]
    atomic_write(target, lambda tmp: open(tmp, "w").write("new"))
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o666 & ~umask


@pytest.mark.mpi
def test_h5_roundtrip_and_figure(comm, tmp_path_factory):
    import matplotlib.pyplot as plt

    out = prepare_output_dir(comm, _shared_tmp(comm, tmp_path_factory) / "sub")
    data = {"t": np.linspace(0, 1, 5), "group": {"kappa": 2.5, "err": np.eye(2)}, "label": "demo"}
    write_h5(comm, out / "a.h5", data, attrs={"ranks": comm.size})
    comm.Barrier()
    back = read_h5(out / "a.h5")
    assert np.array_equal(back["t"], data["t"]) and back["group"]["kappa"] == 2.5
    assert back["label"] == "demo" and back["ranks"] == comm.size
    fig = plt.figure()
    plt.plot([0, 1], [1, 0])
    save_figure(comm, fig, out / "a.png")
    comm.Barrier()
    assert (out / "a.png").stat().st_size > 0
    assert sorted(p.name for p in out.iterdir()) == ["a.h5", "a.png"]


@pytest.mark.mpi
def test_root_failure_is_raised_on_every_rank(comm):
    def fail():
        raise OSError("cannot write /nonexistent")

    expected = OSError if comm.rank == 0 else CollectiveError
    with pytest.raises(expected, match="cannot write /nonexistent"):
        run_on_root(comm, fail)
    assert run_on_root(comm, lambda: 42) == (42 if comm.rank == 0 else None)


@pytest.mark.mpi
def test_progress_iterates_everything_on_every_rank(comm):
    assert sum(progress(comm, range(10), desc="x")) == 45


# --------------------------------------------------------------------------- output paths and temporaries


def test_atomic_write_temporary_is_marked_and_keeps_the_suffix(tmp_path):
    seen = []

    def writer(tmp):
        seen.append(Path(tmp).name)
        Path(tmp).write_text("x")

    atomic_write(tmp_path / "report.h5", writer)
    assert is_temporary(seen[0]) and seen[0].startswith(".report.") and seen[0].endswith(".partial.h5"), seen
    assert stale_temporaries(tmp_path, ["report.h5"]) == [] and os.listdir(tmp_path) == ["report.h5"]


def test_atomic_write_file_system_errors_are_output_errors(tmp_path):
    (tmp_path / "taken.h5").mkdir()
    with pytest.raises(OutputError, match=f"cannot write {tmp_path / 'taken.h5'}: Is a directory") as info:
        atomic_write(tmp_path / "taken.h5", lambda tmp: Path(tmp).write_text("x"))
    assert isinstance(info.value, InvalidArgumentError) and isinstance(info.value, OSError)
    with pytest.raises(OutputError, match="cannot write .*missing/x.h5: No such file or directory"):
        atomic_write(tmp_path / "missing" / "x.h5", lambda tmp: None)

    def full(tmp):
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="x.h5: No space left on device"):
        atomic_write(tmp_path / "x.h5", full)
    assert os.listdir(tmp_path) == ["taken.h5"]


def test_stale_temporaries_are_recognized_and_only_they(tmp_path):
    ours = [".a.abcd1234.partial.h5", ".fields.bp.partial", ".sensitivity-probe.k2j3h4g5.partial",
            ".figure.q1w2e3r4.partial.png"]
    old = ".a.abcdefgh.h5"  # the unmarked name of earlier versions, recognized for the names a run writes
    theirs = ["a.h5", ".a.h5", "notes.partial", ".a.partial.h5.bak", ".b.abcdefgh.h5", ".hidden"]
    for name in ours + [old] + theirs:
        (tmp_path / name).write_text("x")
    assert [p.name for p in stale_temporaries(tmp_path)] == sorted(ours)
    assert [p.name for p in stale_temporaries(tmp_path, ["a.h5"])] == sorted([old, ".a.abcd1234.partial.h5"])
    removed = remove_stale_temporaries(tmp_path, ["a.h5"])
    assert sorted(p.name for p in removed) == sorted(ours + [old])
    assert sorted(os.listdir(tmp_path)) == sorted(theirs)


@pytest.mark.mpi
def test_prepare_output_dir_checks_and_cleans_on_every_rank(comm, tmp_path_factory):
    base = _shared_tmp(comm, tmp_path_factory)
    out = base / "out"
    if comm.rank == 0:
        (base / "file.txt").write_text("precious")
        out.mkdir()
        (out / ".fields.bp.partial").mkdir()
        (out / ".fields.bp.partial" / "data.0").write_text("x")
        (out / ".r.abcd1234.partial.h5").write_text("x")
        (out / ".r.abcdefgh.png").write_text("")
        (out / "keep.txt").write_text("x")
    comm.Barrier()
    cases = [(base / "file.txt", f"--output {base / 'file.txt'} is an existing file, not a directory"),
             (base / "file.txt" / "sub", f"--output {base / 'file.txt' / 'sub'}: {base / 'file.txt'} is a file"),
             (Path("/proc/sensitivity-none/out"), "cannot create the directory /proc/sensitivity-none")]
    for path, message in cases:
        for create in (False, True):
            with pytest.raises(OutputError) as info:
                prepare_output_dir(comm, path, what="--output", create=create)
            assert message in str(info.value)
            assert len(set(comm.allgather(str(info.value)))) == 1  # the same error on every rank
    with pytest.raises(OutputError, match="must be a non-empty path"):
        prepare_output_dir(comm, "", what="--output")
    if comm.rank == 0:
        (out / "r.h5").mkdir()
    comm.Barrier()
    with pytest.raises(OutputError, match=r"r\.h5 is a directory, but this run writes a file there"):
        prepare_output_dir(comm, out, what="--output", files=["r.h5", "r.png"])
    comm.Barrier()
    if comm.rank == 0:
        (out / "r.h5").rmdir()
    comm.Barrier()
    assert prepare_output_dir(comm, out, files=["r.h5", "r.png"], create=False) == out
    assert len(os.listdir(out)) == 4  # a check removes nothing
    comm.Barrier()
    prepare_output_dir(comm, out, files=["r.h5", "r.png"])
    assert sorted(os.listdir(out)) == ["keep.txt"]
    assert prepare_output_dir(comm, base / "new" / "deep", create=False) == base / "new" / "deep"
    assert not (base / "new").exists()
    comm.Barrier()  # (a broadcast is no barrier: rank 0 would create it before the others look)
    prepare_output_dir(comm, base / "new" / "deep")
    assert (base / "new" / "deep").is_dir()


@pytest.mark.mpi
def test_check_output_file_on_every_rank(comm, tmp_path_factory):
    base = _shared_tmp(comm, tmp_path_factory)
    if comm.rank == 0:
        (base / "dir").mkdir()
        (base / "file").write_text("x")
        (base / ".ck.abcd1234.partial.h5").write_text("x")
        (base / ".other.abcd1234.partial.h5").write_text("x")
    comm.Barrier()
    for path, message in [(base / "dir", "is a directory, not a file"),
                          (str(base / "new") + "/", "is a directory, not a file"),
                          (base / "file" / "ck.h5", f"{base / 'file'} is a file, not a directory")]:
        with pytest.raises(OutputError, match=message):
            check_output_file(comm, path, what="--checkpoint")
    assert check_output_file(comm, base / "sub" / "ck.h5", create=False) == base / "sub" / "ck.h5"
    assert not (base / "sub").exists()
    comm.Barrier()
    check_output_file(comm, base / "ck.h5")
    assert not (base / ".ck.abcd1234.partial.h5").exists()
    assert (base / ".other.abcd1234.partial.h5").exists()  # another file's temporary: not this call's business
    check_output_file(comm, base / "sub" / "ck.h5")
    assert (base / "sub").is_dir()


@pytest.mark.mpi
def test_input_errors_on_root_are_raised_as_themselves_everywhere(comm):
    def fail():
        raise OutputError("cannot write /x: Permission denied")

    with pytest.raises(OutputError, match="cannot write /x: Permission denied"):
        run_on_root(comm, fail)


def test_new_figure_needs_no_pyplot(tmp_path):
    """A program that plots with new_figure never imports pyplot nor chooses a backend."""
    code = ("import sys\n"
            "from mpi4py import MPI\n"
            "from sensitivity.io import new_figure, save_figure\n"
            "fig = new_figure(figsize=(3, 2), layout='constrained')\n"
            "fig.subplots(1, 2)[0].plot([0, 1], [1, 0])\n"
            f"save_figure(MPI.COMM_SELF, fig, {str(tmp_path / 'f.png')!r}, dpi=50)\n"
            "assert 'matplotlib.pyplot' not in sys.modules\n")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["f.png"]
