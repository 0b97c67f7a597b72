"""Run files and the ``sensitivity-estimate`` console entry point (sensitivity.estimation.runs).

Checks: each example ``runs/rate_matrix.toml``, ``runs/velocity.toml`` and ``runs/potential.toml``, shrunk, runs
as ``sensitivity-estimate`` serially and under ``mpirun -n 2`` (the PDE examples there in the SIGKILL test) and
writes its chains, ``posterior.nc`` (readable by ArviZ), ``trace.png``, ``pairs.png`` and ``summary.json`` (the
PDE problems also ``fields.bp`` and ``fields.png``) with no temporaries left; a finished run given ``--resume``
does nothing, another configuration is refused; a table of bad run-file entries each exits with status 2 and one
line ``error: ...`` naming ``section.key`` and its value, before anything is written (serially, and two of them
under ``mpirun -n 2``); a run of each example killed with SIGKILL mid-sampling and resumed gives the chains and
the summary of an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation import read_chains
from sensitivity.estimation.runs import cli, load_config, steps

import numpy as np
import pytest
from mpi4py import MPI

from tests import mpi_harness
from tests.run_files import write_toml

pytestmark = pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="launches its own processes")

RUNS = mpi_harness.ROOT / "runs"
EXAMPLE = RUNS / "rate_matrix.toml"
SCRIPT = Path(sys.executable).parent / "sensitivity-estimate"
#: Seconds one small run may take (they take a few).
TIMEOUT = 180.0
#: The example's sampler, shrunk for the tests.
SMALL = {"sampler": {"num_warmup": 40, "num_draws": 60, "chunk_size": 20, "num_chains": 2}, "map": {"max_it": 50}}
#: The PDE examples, shrunk: coarse meshes, few steps, few modes.
SMALL_PROBLEMS = {
    "rate_matrix": {},
    "velocity": {"problem": {"modes": 2, "cells": 6, "steps": 6, "observe_every": 2,
                             "true_coefficients": [1.0, 0.0, 0.4, 0.0]}, "map": {"starts": 2},
                 "sampler": {"num_steps": 3}},
    "potential": {"problem": {"modes": 2, "cells": 6, "dt": 0.1, "steps": 10, "observe_every": 2, "sensors": 3},
                  "sampler": {"num_steps": 3}},
}
#: The number of parameters of each shrunk example.
PARAMETERS = {"rate_matrix": 12, "velocity": 4, "potential": 6}


def run_file(tmp: Path, name: str = "run", changes: dict | None = None, drop: dict | None = None,
             example: str = "rate_matrix") -> Path:
    """The example ``runs/<example>.toml`` shrunk (:data:`SMALL`, :data:`SMALL_PROBLEMS`), its output in
    ``tmp/<name>-out``, ``changes`` applied, ``drop`` keys removed."""
    config = tomllib.loads((RUNS / f"{example}.toml").read_text(encoding="utf-8"))
    config["output"]["directory"] = str(tmp / f"{name}-out")
    for changed in (SMALL, SMALL_PROBLEMS[example], changes or {}):
        for section, table in changed.items():
            if isinstance(table, dict):
                config.setdefault(section, {}).update(table)
            else:  # a malformed file: a value where a section belongs
                config[section] = table
    for section, keys in (drop or {}).items():
        for key in keys:
            config[section].pop(key, None)
    return write_toml(tmp / f"{name}.toml", config)


def estimate(args: list[str], nprocs: int = 1, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} is not installed (source scripts/bootstrap.sh)")
    if nprocs == 1:
        return mpi_harness.run([str(SCRIPT), *args], timeout=timeout)
    return mpi_harness.run_mpi(nprocs, [str(SCRIPT), *args], timeout=timeout)


def partials(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if ".partial" in p.name]


def check_run(out: Path, example: str = "rate_matrix") -> dict:
    """The outputs of a finished run exist and are readable; return the summary."""
    import arviz

    n, draws = PARAMETERS[example], SMALL["sampler"]["num_draws"]
    names = ["config.json", "map.json", "posterior.nc", "trace.png", "pairs.png", "summary.json", "chains/chains.h5"]
    if example != "rate_matrix":
        names += ["fields.png", "fields.bp"]
    for name in names:
        assert (out / name).exists(), f"missing {out / name}"
    for name in ("trace.png", "pairs.png") + (("fields.png",) if example != "rate_matrix" else ()):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not partials(out), partials(out)
    tree = arviz.from_netcdf(out / "posterior.nc")
    q = tree["posterior"]["q"]
    assert q.shape == (2, draws, n)
    assert "sample_stats" in tree.children
    summary = json.loads((out / "summary.json").read_text())
    for key in ("acceptance_rate", "ess_bulk", "ess_tail", "rhat", "ess_per_second", "ess_per_gradient", "map"):
        assert key in summary, key
    assert len(summary["ess_bulk"]) == n and all(math.isfinite(x) for x in summary["ess_bulk"])
    assert summary["map"]["converged"], summary["map"]
    assert all(0.0 < a <= 1.0 for a in summary["acceptance_rate"])
    chains = read_chains(out / "chains")
    assert chains.control.shape == (2, draws, n)
    np.testing.assert_array_equal(chains.control, q.values)
    if example != "rate_matrix":
        _check_fields(out / "fields.bp", summary)
    return summary


def _check_fields(path: Path, summary: dict) -> None:
    """The VTX file holds the posterior mean and standard deviation, the MAP point and the truth (their names in
    its metadata)."""
    assert (path / "md.idx").is_file(), f"no VTX series {path}"
    metadata = (path / "md.0").read_bytes()
    for name in ("posterior_mean", "posterior_std", "map", "truth"):
        assert name.encode() in metadata, name
    if summary["problem"]["kind"] == "velocity":  # and the moments of the draws folded onto one mode
        assert b"mode_mean" in metadata and b"mode_std" in metadata
    assert summary["laplace"]["rank"] == len(summary["laplace"]["eigenvalues"])


# --------------------------------------------------------------------------- the example runs


#: The example runs (the PDE examples run under mpirun -n 2 in the SIGKILL test, :data:`KILLED`).
EXAMPLE_RUNS = [("rate_matrix", 1), ("rate_matrix", 2), ("velocity", 1), ("potential", 1)]


@pytest.mark.slow
@pytest.mark.parametrize("example, nprocs", EXAMPLE_RUNS)
def test_the_example_runs_small(tmp_path, example, nprocs):
    toml = run_file(tmp_path, example=example)
    started = time.perf_counter()
    stdout = mpi_harness.check(estimate([str(toml)], nprocs))
    print(f"{example}, {nprocs} rank(s): {time.perf_counter() - started:.1f} s")
    assert f"{nprocs} rank(s)" in stdout and stdout.count("wrote ") == 1, stdout[-3000:]
    summary = check_run(tmp_path / "run-out", example)
    assert summary["nprocs"] == nprocs
    resolved = json.loads((tmp_path / "run-out" / "config.json").read_text())["config"]
    assert resolved["sampler"]["num_draws"] == SMALL["sampler"]["num_draws"]
    if example == "rate_matrix":
        assert resolved["laplace"] == {"enabled": False, "rank": None}  # the defaults are written out
    if example == "velocity":  # chains_report: which of the mirror modes each chain visits
        report = summary["chains_report"]
        assert len(report["fraction_like_reference"]) == 2 and report["folded"]["min_ess_bulk"] > 0, report
    if nprocs > 1 or example != "rate_matrix":
        return
    if nprocs > 1:
        return
    # a finished run given --resume does nothing
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run-out").rglob("*") if p.is_file()}
    stdout = mpi_harness.check(estimate([str(toml), "--resume"]))
    assert "nothing to do" in stdout, stdout
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "run-out").rglob("*") if p.is_file()}
    # without --resume, or with another configuration, the run is refused
    result = estimate([str(toml)])
    assert result.returncode == 2 and "--resume" in result.stdout, result.stdout
    other = run_file(tmp_path, changes={"sampler": {"num_draws": 70}})
    result = estimate([str(other), "--resume"])
    assert result.returncode == 2, result.stdout
    assert "sampler.num_draws = 70 (stored: 60)" in result.stdout, result.stdout


def test_the_example_is_a_valid_run_file():
    config = load_config(EXAMPLE, MPI.COMM_SELF)
    v = config.values
    assert v["problem"]["states"] == 4 and len(v["problem"]["times"]) == 3
    assert config.problem.size == 12 and config.problem.counts.shape == (3, 4)
    assert np.all(config.problem.counts.sum(axis=1) == v["problem"]["counts_per_time"])
    assert v["sampler"]["kind"] == "hmc" and v["sampler"]["force"] == "exact" and v["sampler"]["num_chains"] == 2


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_counts_from_a_data_file(tmp_path, suffix):
    counts = np.array([[150.0, 30, 15, 5], [90, 60, 30, 20], [60, 50, 50, 40]])
    path = tmp_path / f"counts{suffix}"
    if suffix == ".npz":
        np.savez(path, counts=counts)
    else:
        import h5py

        with h5py.File(path, "w") as f:
            f["counts"] = counts
    toml = run_file(tmp_path, changes={"data": {"file": path.name}}, drop={"data": ["synthetic", "seed"], "problem": ["counts_per_time"]})
    config = load_config(toml, MPI.COMM_SELF)  # data.file is relative to the run file
    np.testing.assert_array_equal(config.problem.counts, counts)
    assert config.values["data"]["synthetic"] is False
    assert config.values["data"]["file"] == str(path)


# --------------------------------------------------------------------------- bad run files

#: label -> (changes, dropped keys, texts the one-line message must contain).
BAD_ENTRIES = {
    "unknown section": ({"smapler": {"kind": "hmc"}}, None, ["unknown section [smapler]", "sampler"]),
    "unknown key": ({"sampler": {"num_draw": 10}}, None, ["sampler.num_draw = 10", "num_draws"]),
    "negative num_draws": ({"sampler": {"num_draws": -5}}, None, ["sampler.num_draws", "got -5"]),
    "laplace force": ({"sampler": {"force": "laplace"}}, None, ["sampler.force = 'laplace'", "Hessian"]),
    "times not positive": ({"problem": {"times": [0.2, -1.0, 1.5]}}, None, ["problem.times", "-1.0"]),
    "states < 2": ({"problem": {"states": 1}}, None, ["problem.states", "got 1"]),
    "missing file": ({"data": {"file": "nowhere.npz"}}, {"data": ["synthetic", "seed"], "problem": ["counts_per_time"]},
                     ["data.file", "nowhere.npz", "no such file"]),
    "wrong type": ({"sampler": {"num_chains": "two"}}, None, ["sampler.num_chains", "'two'"]),
    "float for an integer": ({"sampler": {"num_warmup": 10.5}}, None, ["sampler.num_warmup", "10.5"]),
    "unknown force": ({"sampler": {"force": "second order"}}, None, ["sampler.force", "'second order'"]),
    "newton map": ({"map": {"method": "nls"}}, None, ["map.method = 'nls'", "lmvm"]),
    "laplace enabled": ({"laplace": {"enabled": True}}, None, ["laplace.enabled", "Hessian"]),
    "prior of the wrong length": ({"prior": {"std": [1.0, 2.0]}}, None, ["prior.std has 2 entries", "12 log-rates"]),
    "true rates of the wrong length": ({"problem": {"true_log_rates": [0.0] * 6}}, None,
                                       ["problem.true_log_rates has 6 entries"]),
    "pcn step size": ({"sampler": {"kind": "pcn", "step_size": 1.5}}, {"sampler": ["num_steps", "jitter", "force"]},
                      ["sampler.step_size", "1.5"]),
    "unknown problem": ({"problem": {"kind": "diffusion"}}, None, ["problem.kind", "'diffusion'", "rate_matrix",
                                                                   "velocity", "potential"]),
    "map start without map": ({"map": {"enabled": False}, "sampler": {"initial": "map"}}, None,
                              ["sampler.initial = 'map'", "map.enabled"]),
    "a section that is a value": ({"output": "here"}, None, ["output", "'here'"]),
    "unknown mass": ({"sampler": {"mass": "dense"}}, None, ["sampler.mass", "'dense'"]),
    "laplace mass without laplace": ({"sampler": {"mass": "laplace"}}, None, ["sampler.mass = 'laplace'",
                                                                            "laplace.enabled"]),
    "no map starts": ({"map": {"starts": 0}}, None, ["map.starts", "got 0"]),
    "negative spread": ({"map": {"spread": -0.2}}, None, ["map.spread", "-0.2"]),
    "map modes without map": ({"map": {"enabled": False}, "sampler": {"initial": "map modes"}}, None,
                              ["sampler.initial = 'map modes'", "map.enabled"]),
}

#: Bad entries of the PDE examples: example -> label -> (changes, texts of the one-line message).
BAD_PDE_ENTRIES = {
    "velocity": {
        "no modes": ({"problem": {"modes": 0}}, ["problem.modes", "got 0"]),
        "truth of the wrong length": ({"problem": {"true_coefficients": [1.0, 0.0]}},
                                      ["problem.true_coefficients has 2 entries", "4 coefficients"]),
        "source outside": ({"problem": {"source_x": 1.5}}, ["problem.source_x", "1.5"]),
        "nothing observed": ({"problem": {"observe_every": 50}}, ["problem.observe_every = 50", "nothing is observed"]),
        "unknown force": ({"sampler": {"force": "secular"}}, ["sampler.force", "'secular'"]),
    },
    "potential": {
        "negative noise": ({"problem": {"noise": -0.01}}, ["problem.noise", "-0.01"]),
        "prior of the wrong length": ({"prior": {"std": [1.0, 2.0]}}, ["prior.std has 2 entries", "6 coefficients"]),
        "no eigenpairs": ({"problem": {"eigenpairs": 0}}, ["problem.eigenpairs", "got 0"]),
    },
}


@pytest.mark.parametrize("example, label", [(e, k) for e, table in BAD_PDE_ENTRIES.items() for k in table])
def test_a_bad_pde_entry_is_one_line_naming_it(tmp_path, capfd, example, label):
    changes, expected = BAD_PDE_ENTRIES[example][label]
    status = cli.main([str(run_file(tmp_path, changes=changes, example=example)), "--quiet"])
    captured = capfd.readouterr()
    _one_error_line(subprocess.CompletedProcess([], status, captured.out + captured.err), expected)
    assert not (tmp_path / "run-out").exists(), "nothing may be written before the run file is validated"
#: Also run as the console script, serially and under mpirun -n 2.
SUBPROCESS_CASES = ("unknown key", "laplace force", "wrong type")
MPI_CASES = ("negative num_draws", "missing file")


def _one_error_line(result: subprocess.CompletedProcess, expected: list[str]) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout)
    assert "Traceback" not in result.stdout, result.stdout
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stdout  # rank 0 alone, one line
    assert result.stdout.strip() == errors[0], result.stdout
    for text in expected:
        assert text in errors[0], (text, errors[0])


@pytest.mark.parametrize("label", sorted(BAD_ENTRIES))
def test_a_bad_entry_is_one_line_naming_it(tmp_path, capfd, label):
    """In-process ``main(argv)``: the exit status and the one line on stderr."""
    changes, drop, expected = BAD_ENTRIES[label]
    toml = run_file(tmp_path, changes=changes, drop=drop)
    status = cli.main([str(toml), "--quiet"])
    captured = capfd.readouterr()
    print(captured.err.strip())
    _one_error_line(subprocess.CompletedProcess([], status, captured.out + captured.err), expected)
    assert not (tmp_path / "run-out").exists(), "nothing may be written before the run file is validated"


@pytest.mark.parametrize("label", SUBPROCESS_CASES)
def test_a_bad_entry_fails_the_console_script(tmp_path, label):
    changes, drop, expected = BAD_ENTRIES[label]
    _one_error_line(estimate([str(run_file(tmp_path, changes=changes, drop=drop))]), expected)
    assert not (tmp_path / "run-out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("label", MPI_CASES)
def test_a_bad_entry_fails_on_every_rank(tmp_path, label):
    changes, drop, expected = BAD_ENTRIES[label]
    result = estimate([str(run_file(tmp_path, changes=changes, drop=drop))], nprocs=2)
    _one_error_line(result, expected)
    assert not (tmp_path / "run-out").exists()


@pytest.mark.parametrize(("text", "expected"), [
    ("[problem\nkind = 1", ["not a valid TOML file"]),
    ("[sampler]\nkind = 'hmc'\n", ["problem.kind is required", "rate_matrix"]),
    ("[problem]\nkind = 'rate_matrix'\ntimes = [1.0]\n", ["problem.states is required"]),
])
def test_a_malformed_run_file_is_one_line(tmp_path, text, expected):
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    _one_error_line(estimate([str(toml)]), [str(toml), *expected])


def test_a_missing_run_file_and_bad_arguments(tmp_path):
    _one_error_line(estimate([str(tmp_path / "none.toml")]), ["cannot read the run file", "none.toml"])
    result = estimate([])
    assert result.returncode == 2 and "RUN.toml" in result.stdout, result.stdout


def test_a_bad_output_directory_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    toml = run_file(tmp_path, changes={"output": {"directory": str(tmp_path / "file")}})
    _one_error_line(estimate([str(toml)]), ["output.directory", "not a directory"])


def test_map_modes_are_the_distinct_low_minima_and_their_images():
    minima = [{"value": 9.3, "point": [1.0, 0.5], "converged": True},
              {"value": 138.0, "point": [0.0, 0.5], "converged": True},  # a saddle, far above
              {"value": 9.3 + 1e-9, "point": [1.0, 0.5 + 1e-9], "converged": True},  # the same minimum again
              {"value": 9.0, "point": [3.0, 3.0], "converged": False}]  # not converged
    np.testing.assert_array_equal(steps.map_modes(minima, 10.0), [[1.0, 0.5]])
    mirror = np.array([-1.0, 1.0])
    np.testing.assert_array_equal(steps.map_modes(minima, 10.0, lambda q: [mirror * q]), [[1.0, 0.5], [-1.0, 0.5]])
    assert len(steps.map_modes(minima, 200.0)) == 2
    with pytest.raises(InvalidArgumentError, match="no MAP start converged"):
        steps.map_modes([minima[-1]], 10.0)


def test_the_nearest_image_force_is_the_force_about_the_nearest_mode():
    from sensitivity.estimation import Force

    class Spring(Force):  # pulls towards q0
        def derivative(self, q):
            return np.asarray(q) - q0

    q0, S = np.array([1.0, 0.5]), np.diag([-1.0, 1.0])
    force = steps.NearestImageForce(Spring(), [S], q0)
    near, mirrored = np.array([0.8, 0.4]), np.array([-0.8, 0.4])
    np.testing.assert_array_equal(force.derivative(near), near - q0)
    np.testing.assert_allclose(force.derivative(mirrored), mirrored - S @ q0)  # towards the mirror mode S q0
    np.testing.assert_allclose(force.derivative(mirrored), S.T @ Spring().derivative(S @ mirrored))


def test_config_errors_in_process(tmp_path):
    toml = run_file(tmp_path, changes={"sampler": {"thin": 0}})
    with pytest.raises(InvalidArgumentError, match=r"sampler\.thin must be a positive integer, got 0"):
        load_config(toml, MPI.COMM_SELF)


# --------------------------------------------------------------------------- SIGKILL and --resume

KILL_CHANGES = {"sampler": {"num_warmup": 40, "num_draws": 160, "chunk_size": 10, "thin": 2, "initial": "map"}}
#: Summary entries that depend on wall times (or on the run file's path).
TIMED = ("seconds", "ess_per_second", "min_ess_per_second", "sampling_time", "run_file")


def _untimed(summary: dict) -> dict:
    out = {k: v for k, v in summary.items() if k not in TIMED}
    out["map"] = {k: v for k, v in summary["map"].items() if k != "seconds"}
    return out


#: The killed runs: the example, its ranks, and its force.
KILLED = {"rate_matrix": (1, "exact"), "velocity": (2, "exact"), "potential": (2, "laplace")}


@pytest.mark.slow
@pytest.mark.parametrize("example", list(KILLED))
def test_sigkill_and_resume_give_the_chains_of_an_uninterrupted_run(tmp_path, example):
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} is not installed")
    nprocs, force = KILLED[example]
    changes = {"sampler": {**KILL_CHANGES["sampler"], "force": force}}
    killed = run_file(tmp_path, "killed", changes=changes, example=example)
    out = tmp_path / "killed-out"
    command = [str(SCRIPT), str(killed), "--quiet"]
    if nprocs > 1:
        command = [mpi_harness.mpirun_executable(), "-n", str(nprocs), sys.executable, *command]
    child = subprocess.Popen(command, env=mpi_harness.clean_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + TIMEOUT
    try:
        while not (out / "chains" / "chain-000" / "chunk-000002.h5").exists():
            assert child.poll() is None, child.stdout.read().decode()
            assert time.monotonic() < deadline, "the run wrote no chunks"
            time.sleep(0.02)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # mpirun and its ranks: one process group
        child.wait()
    assert not (out / "summary.json").exists(), "killed too late: the run had finished"
    assert (out / "map.json").is_file()
    stdout = mpi_harness.check(estimate([str(killed), "--resume"], nprocs))
    assert "MAP: reused" in stdout, stdout
    reference = run_file(tmp_path, "reference", changes=changes, example=example)
    mpi_harness.check(estimate([str(reference), "--quiet"], nprocs))
    a, b = read_chains(out / "chains"), read_chains(tmp_path / "reference-out" / "chains")
    assert a.stats["lp"].shape == (2, 200)
    for name in a.stats:
        if name != "time":
            np.testing.assert_array_equal(a.stats[name], b.stats[name], err_msg=name)
    np.testing.assert_array_equal(a.stored, b.stored)
    np.testing.assert_array_equal(a.control, b.control)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (out, tmp_path / "reference-out"))
    assert _untimed(sa) == _untimed(sb)
    assert not partials(out)
