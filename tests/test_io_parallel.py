"""Atomic output and collective error handling, serially and under mpirun."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sensitivity.io import atomic_write, prepare_output_dir, read_h5, save_figure, write_h5
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
