"""Chains on disk (sensitivity.estimation.chains): committed HDF5 chunks, exact resume, refused files.

Checks: a run killed with SIGKILL after some chunks are committed and then resumed gives the uninterrupted
chain bit for bit (every statistic but the wall time, every draw and summary), as does a run killed between
writing a chunk and the state that lists it; stale temporaries are removed; thinning, stored warm-up draws
and summary functionals are stored as asked and do not change the chain; a corrupt, foreign, missing or
another run's chain file, other settings, or an existing run without ``resume`` is an error on every rank
before any work, and no file is changed.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation import InfiniteHMC, read_chains, sample
from sensitivity.estimation import chains as chains_module
from sensitivity.io import write_h5
from sensitivity.parallel import run_on_root
from tests import mpi_harness

# The child program of the SIGKILL test; the tests exec it for the same problem. The misfit sleeps in the child
# so that the run is still going when it is killed.
CHILD = r'''
import sys
import time

import sensitivity  # noqa: F401  (before NumPy users of MPI: the DOLFINx wheel's MPI)
import numpy as np
from sensitivity.estimation import GaussianPrior, InfiniteHMC, LinearMisfit, Posterior, sample


class SlowMisfit(LinearMisfit):
    delay = 0.0

    def value_and_derivative(self, q):
        time.sleep(self.delay)
        return super().value_and_derivative(q)


def build(comm, delay=0.0):
    misfit = SlowMisfit.from_matrix(np.array([[1.0, 0.5, 0.0], [0.2, 1.0, -0.3]]), [0.3, -0.2], 0.5, comm)
    misfit.delay = delay
    return Posterior(misfit, GaussianPrior(misfit.space, mean=[0.1, 0.0, -0.1], std=[1.0, 0.7, 1.2]))


OPTIONS = dict(num_warmup=40, num_draws=160, num_chains=2, seed=31, chunk_size=10, thin=2,
               summaries={"total": lambda q: float(np.sum(q))})

if __name__ == "__main__":
    sample(lambda comm: build(comm, float(sys.argv[2])), InfiniteHMC(3), output=sys.argv[1], **OPTIONS)
'''
_NAMESPACE: dict = {}
exec(compile(CHILD, "<chain child>", "exec"), _NAMESPACE)
build, OPTIONS = _NAMESPACE["build"], _NAMESPACE["OPTIONS"]
serial_only = pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="starts its own process")


def _shared_dir(comm, tmp_path_factory, name):
    return comm.bcast(run_on_root(comm, lambda: tmp_path_factory.mktemp(name)), root=0)


def _assert_same_chain(a, b, with_time=False):
    for name in a.stats:
        if name != "time" or with_time:
            assert np.array_equal(a.stats[name], b.stats[name]), name
    assert np.array_equal(a.stored, b.stored)
    assert (a.control is None and b.control is None) or np.array_equal(a.control, b.control)
    assert a.summaries.keys() == b.summaries.keys()
    assert all(np.array_equal(a.summaries[k], b.summaries[k]) for k in a.summaries)


def _digest(directory):
    """Every file under ``directory`` with the SHA-256 of its bytes."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@serial_only
@pytest.mark.slow
def test_sigkill_and_resume_give_the_identical_chain(tmp_path):
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out), "0.004"], env=mpi_harness.clean_env(),
                             cwd=mpi_harness.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120.0
    while not (out / "chain-000" / "chunk-000002.h5").exists():
        assert child.poll() is None, child.stdout.read().decode()
        assert time.monotonic() < deadline, "the child wrote no chunks"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    killed = read_chains(out)  # readable after a kill: the committed chunks, cut to the shortest chain
    total = OPTIONS["num_warmup"] + OPTIONS["num_draws"]
    chunks = chains_module.ChainStore(out, 0, chains_module.read_manifest(out)[0]).load()[1]
    # chunk 2 may be written but not yet listed by the state (killed between the two renames)
    assert 2 * OPTIONS["chunk_size"] <= chunks[-1]["stop"] < total, chunks[-1]["stop"]
    print(f"killed after {chunks[-1]['stop']} of {total} iterations of chain 0; {killed.stats['lp'].shape[1]} "
          "iterations readable for both chains")
    resumed = sample(build, InfiniteHMC(3), output=out, resume=True, comm=MPI.COMM_SELF, **OPTIONS)
    reference = sample(build, InfiniteHMC(3), comm=MPI.COMM_SELF, **OPTIONS)
    _assert_same_chain(resumed, reference)
    _assert_same_chain(read_chains(out), resumed, with_time=True)
    assert resumed.stats["lp"].shape == (2, total)
    assert resumed.summaries["total"].shape == (2, OPTIONS["num_draws"] // 2)


class _Killed(BaseException):
    """Stands for SIGKILL at a chosen point (not an Exception: nothing catches it)."""


def _kill_before_state(monkeypatch, chunks):
    """Make the run die after writing chunk ``chunks - 1`` and before the state that lists it."""
    original = chains_module._write

    def killed(path, kind, attrs, datasets):
        if kind == "state" and attrs["chunks"] == chunks:
            raise _Killed
        original(path, kind, attrs, datasets)

    monkeypatch.setattr(chains_module, "_write", killed)


def test_a_kill_between_chunk_and_state_loses_nothing(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _kill_before_state(patch, 4)
        with pytest.raises(_Killed):
            sample(build, InfiniteHMC(3), output=out, comm=MPI.COMM_SELF, **OPTIONS)
    assert (out / "chain-000" / "chunk-000003.h5").exists()  # written, but not listed by the state
    stale = out / "chain-000" / ".chunk-000004.abcdefgh.partial.h5"
    stale.write_bytes(b"half a chunk")
    resumed = sample(build, InfiniteHMC(3), output=out, resume=True, comm=MPI.COMM_SELF, **OPTIONS)
    assert not stale.exists()
    _assert_same_chain(resumed, sample(build, InfiniteHMC(3), comm=MPI.COMM_SELF, **OPTIONS))


def _field_problem(comm):
    """A small PDE posterior: a bi-Laplacian prior on P1 of a 4×4 mesh, two point observations."""
    from dolfinx import fem, mesh

    from sensitivity.estimation import BiLaplacianPrior, FunctionVectors, LinearMisfit, Posterior
    from sensitivity.fem import ControlSpace, PointSensors

    V = fem.functionspace(mesh.create_unit_square(comm, 4, 4), ("Lagrange", 1))
    space, sensors = FunctionVectors(ControlSpace(V)), PointSensors(V, [[0.3, 0.4], [0.7, 0.6]])
    misfit = LinearMisfit(space, sensors.evaluate, lambda w: sensors.apply_transpose(w, space.zeros()), [0.4, -0.2],
                          0.3)
    return Posterior(misfit, BiLaplacianPrior(space, gamma=0.1, delta=1.0))


@pytest.mark.mpi
def test_a_chain_resumes_on_another_number_of_ranks(comm, tmp_path_factory, monkeypatch):
    """Killed on one rank, resumed on all: the state is in partition-independent order."""
    out = _shared_dir(comm, tmp_path_factory, "field") / "run"
    options = dict(OPTIONS, num_warmup=10, num_draws=20, num_chains=1, summaries={})
    if comm.rank == 0:
        with monkeypatch.context() as patch:
            _kill_before_state(patch, 3)  # iterations 0-19 committed: warm-up, then 5 stored draws
            with pytest.raises(_Killed):
                sample(_field_problem, InfiniteHMC(3), output=out, comm=MPI.COMM_SELF, **options)
    comm.Barrier()
    resumed = sample(_field_problem, InfiniteHMC(3), output=out, resume=True, comm=comm, **options)
    reference = sample(_field_problem, InfiniteHMC(3), comm=MPI.COMM_SELF, **options)
    assert np.array_equal(resumed.stats["accepted"], reference.stats["accepted"])
    assert np.array_equal(resumed.control[:, :5], reference.control[:, :5])  # committed by the killed run
    assert np.max(np.abs(resumed.control - reference.control)) < 1e-10 * np.max(np.abs(reference.control))


def test_thinning_warmup_draws_and_summaries_are_stored_as_asked():
    options = dict(OPTIONS, num_warmup=12, num_draws=20, thin=3, chunk_size=7)
    full = sample(build, InfiniteHMC(3), save_warmup=True, comm=MPI.COMM_SELF, **options)
    assert np.array_equal(full.stored, [0, 3, 6, 9] + list(range(12, 32, 3)))
    assert np.allclose(full.summaries["total"], full.control.sum(axis=2), rtol=0, atol=1e-14)
    assert full.draws()["control"].shape == (2, 7, 3) and full.draws(warmup=True)["control"].shape == (2, 4, 3)
    assert full.draw_stats()["lp"].shape == (2, 7) and full.stats["lp"].shape == (2, 32)
    only = sample(build, InfiniteHMC(3), store_control=False, comm=MPI.COMM_SELF, **options)
    assert only.control is None and np.array_equal(only.stored, full.stored[4:])
    assert np.array_equal(only.summaries["total"], full.summaries["total"][:, 4:])
    assert np.array_equal(only.stats["lp"], full.stats["lp"])  # what is stored does not change the chain
    totals = full.totals()
    assert np.array_equal(totals["iterations"], [20, 20]) and np.array_equal(totals["gradient_evaluations"], [60, 60])
    with pytest.raises(InvalidArgumentError, match="store_control=False needs summaries"):
        sample(build, InfiniteHMC(3), store_control=False, num_draws=5, comm=MPI.COMM_SELF)


def _garbage(path):
    path.write_bytes(b"\x89HDF\r\n not really")


def _foreign(path):
    path.unlink()
    write_h5(MPI.COMM_SELF, path, {"iterate": np.zeros(3)}, attrs={"demo": "potential_estimation"})


def _other_run(path, other):
    path.write_bytes((other / path.relative_to(path.parents[1])).read_bytes())


def _smaller(comm):
    from sensitivity.estimation import GaussianPrior, LinearMisfit, Posterior

    misfit = LinearMisfit.from_matrix(np.eye(2), [0.1, 0.2], 0.5, comm)
    return Posterior(misfit, GaussianPrior(misfit.space, std=1.0))


CASES = {
    "corrupt state": (lambda d, o: _garbage(d / "chain-001" / "state.h5"), {}, "not a readable HDF5 file"),
    "corrupt manifest": (lambda d, o: _garbage(d / "chains.h5"), {}, "not a readable HDF5 file"),
    "foreign state": (lambda d, o: _foreign(d / "chain-000" / "state.h5"), {}, "not a state file"),
    "another run's chunk": (lambda d, o: _other_run(d / "chain-000" / "chunk-000001.h5", o), {}, "belongs to chain 0"),
    "missing chunk": (lambda d, o: (d / "chain-001" / "chunk-000000.h5").unlink(), {}, "is missing"),
    "other sampler": (None, {"kernel": InfiniteHMC(4)}, "sampler: stored"),
    "other seed": (None, {"seed": 32}, "seed: stored 31, now 32"),
    "other problem": (None, {"build": _smaller}, "parameters: stored 3, now 2"),
    "no resume": (None, {"resume": False}, "already holds chains"),
}


@pytest.mark.mpi
@pytest.mark.parametrize("case", list(CASES))
def test_bad_chain_files_and_settings_fail_on_every_rank_and_change_nothing(comm, tmp_path_factory, case):
    mutate, change, message = CASES[case]
    base = _shared_dir(comm, tmp_path_factory, "runs")
    options = dict(OPTIONS, num_warmup=10, num_draws=20)
    for name in ("run", "other"):
        sample(build, InfiniteHMC(3), output=base / name, comm=comm, **options)
    if mutate is not None:
        run_on_root(comm, lambda: mutate(base / "run", base / "other"))
    comm.Barrier()
    before = _digest(base / "run")
    comm.Barrier()  # every rank has read the files before rank 0 probes the directory (a temporary file)
    arguments = dict(build=build, kernel=InfiniteHMC(3), resume=True) | change
    with pytest.raises(InvalidArgumentError, match=message):
        sample(arguments.pop("build"), arguments.pop("kernel"), output=base / "run", comm=comm,
               **(options | arguments))
    comm.Barrier()
    assert _digest(base / "run") == before


def test_chain_files_without_a_manifest_are_refused(tmp_path):
    (tmp_path / "chain-000").mkdir()
    with pytest.raises(InvalidArgumentError, match="holds chain files .* but no chains.h5"):
        sample(build, InfiniteHMC(3), output=tmp_path, resume=True, comm=MPI.COMM_SELF, **OPTIONS)
    with pytest.raises(InvalidArgumentError, match="holds no chains"):
        read_chains(tmp_path / "nowhere")
    assert os.listdir(tmp_path) == ["chain-000"]
