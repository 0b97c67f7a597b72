"""The demos: every ``demos/*.py`` is registered here and run on its small configuration,
serially and under ``mpirun`` (each run bounded by a timeout), its PNG and HDF5 outputs are
checked, the numbers are compared across rank counts, bad arguments must fail cleanly, and
the mathematical claims each demo illustrates are asserted on its in-process summary.

These tests launch ``mpirun`` themselves, so they are skipped when pytest itself runs under
MPI.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError
from sensitivity.io import read_h5, stale_temporaries
from tests import mpi_harness

pytestmark = pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="launches mpirun itself")

DEMO_DIR = mpi_harness.ROOT / "demos"

#: Every demo and the arguments of its small (test) configuration.
DEMOS: dict[str, list[str]] = {
    "rate_matrix_asymptotics": ["--small"],
    "skew_hermitian_surrogates": ["--small"],
    "random_rate_matrix_spectra": ["--small"],
    "velocity_sensitivity": ["--small"],
    "surrogate_vs_adjoint": ["--small"],
    "potential_estimation": ["--small"],
}

#: Rank counts each demo is run with under mpirun (besides the serial run).
NPROCS: dict[str, tuple[int, ...]] = {
    "rate_matrix_asymptotics": (2, 3),
    "skew_hermitian_surrogates": (2,),
    "random_rate_matrix_spectra": (2,),
    "velocity_sensitivity": (2, 3),
    "surrogate_vs_adjoint": (2, 3),
    "potential_estimation": (2, 3),
}

#: A bad argument per demo and the text the error message must contain.
BAD_ARGS: dict[str, tuple[list[str], list[str]]] = {
    "rate_matrix_asymptotics": (["--dim", "1"], ["--dim", "got 1"]),
    "skew_hermitian_surrogates": (["--t-max", "-5"], ["--t-max", "got -5"]),
    "random_rate_matrix_spectra": (["--dims", "10", "1"], ["--dims", "got 1"]),
    "velocity_sensitivity": (["--kappa", "-1"], ["--kappa", "got -1"]),
    "surrogate_vs_adjoint": (["--final-times", "0.07"], ["--final-times", "0.07"]),
    "potential_estimation": (["--noise", "-0.5"], ["--noise", "got -0.5"]),
}

#: HDF5 entries that amplify round-off (finite differences divide by a small step), per demo,
#: compared across rank counts with this relative tolerance instead of 1e-9.
ROUNDOFF_AMPLIFIED: dict[str, tuple[tuple[str, ...], float]] = {
    "velocity_sensitivity": (("fd_check/",), 1e-6),
    # iterative mass and group-inverse solves (relative residual 1e-12), amplified by the series
    "surrogate_vs_adjoint": (("K=", "asymptotic/"), 1e-7),
    # 40 quasi-Newton iterations amplify the round-off of partition-dependent sums and LU
    # orderings (the data and the gradient check agree to 1e-13; the histories drift from 1e-15
    # at iteration 0 to ~1e-6 at iteration 40, most in the gradient norm and in the weakly
    # determined constant of the raw estimate)
    "potential_estimation": (("history/", "final/rel_error", "final/weighted_error", "final/objective",
                              "final/misfit", "fields/estimate"), 1e-4),
}

#: Seconds one small demo run may take (they take a few); a hang fails instead of blocking.
TIMEOUT = 120.0


def demo_path(name: str) -> Path:
    return DEMO_DIR / f"{name}.py"


def load_demo(name: str):
    """Import ``demos/NAME.py`` as a module (its ``main`` is not run)."""
    spec = importlib.util.spec_from_file_location(f"_demo_{name}", demo_path(name))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_outputs(name: str, out: Path) -> dict:
    """The PNG and the HDF5 file exist; every number in the HDF5 file is finite."""
    png, h5 = out / f"{name}.png", out / f"{name}.h5"
    assert png.is_file() and png.stat().st_size > 10_000, f"missing or empty {png}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert h5.is_file(), f"missing {h5}"
    assert not stale_temporaries(out), f"temporaries left behind: {stale_temporaries(out)}"
    assert not [p for p in out.glob("*.png") if p.stat().st_size == 0], "an empty PNG"
    data = flatten(read_h5(h5))
    numeric = {k: np.asarray(v) for k, v in data.items() if np.asarray(v).dtype.kind in "fciub"}
    assert len(numeric) >= 5, sorted(data)
    for key, value in numeric.items():
        assert np.all(np.isfinite(value)), f"{h5}: {key} has non-finite entries"
    return numeric


def run_demo(name: str, out: Path, nprocs: int = 1, extra: list[str] | None = None):
    args = [str(demo_path(name)), "--output", str(out), *(DEMOS[name] if extra is None else extra)]
    if nprocs == 1:
        return mpi_harness.run([sys.executable, *args], timeout=TIMEOUT)
    return mpi_harness.run_mpi(nprocs, args, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def serial_output(tmp_path_factory):
    """Runs each demo serially once (as a subprocess) and returns its output directory."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"{name}-serial")
            stdout = mpi_harness.check(run_demo(name, out))
            assert "wrote" in stdout, stdout[-2000:]
            cache[name] = out
        return cache[name]

    return get


def test_no_missing_demos():
    found = {p.stem for p in DEMO_DIR.glob("*.py")}
    missing = sorted(found - set(DEMOS))
    assert not missing, f"demos not registered in tests/test_demos.py DEMOS: {missing}"
    stale = sorted(set(DEMOS) - found)
    assert not stale, f"registered demos that do not exist: {stale}"
    assert set(NPROCS) == set(DEMOS) and set(BAD_ARGS) == set(DEMOS)


@pytest.mark.parametrize("name", sorted(DEMOS))
def test_demo_serial(name, serial_output):
    check_outputs(name, serial_output(name))


@pytest.mark.parametrize(("name", "nprocs"), [(n, p) for n in sorted(DEMOS) for p in NPROCS[n]])
def test_demo_mpi_matches_serial(name, nprocs, tmp_path, serial_output):
    stdout = mpi_harness.check(run_demo(name, tmp_path, nprocs))
    assert f"{nprocs} rank(s)" in stdout
    assert stdout.count("wrote ") == 1, "the summary must be printed by rank 0 only"
    parallel = check_outputs(name, tmp_path)
    serial = check_outputs(name, serial_output(name))
    assert set(parallel) == set(serial)
    for key, value in serial.items():
        if key == "nprocs":
            continue
        scale = float(np.max(np.abs(value))) if value.size else 0.0
        prefixes, loose = ROUNDOFF_AMPLIFIED.get(name, ((), 1e-9))
        rtol = loose if key.startswith(prefixes) else 1e-9
        np.testing.assert_allclose(parallel[key], value, rtol=rtol, atol=1e-12 * scale,
                                   err_msg=f"{name}: {key} differs between 1 and {nprocs} ranks")


@pytest.mark.parametrize("name", sorted(DEMOS))
def test_bad_argument_fails_cleanly(name, tmp_path):
    args, expected = BAD_ARGS[name]
    result = run_demo(name, tmp_path / "out", nprocs=2, extra=args)
    assert result.returncode != 0, result.stdout
    for text in expected:
        assert text in result.stdout, result.stdout
    assert "Traceback" not in result.stdout, result.stdout
    assert not (tmp_path / "out").exists(), "nothing may be written before the arguments are validated"


# The mathematical claims, on the small configurations (in-process, serial).


def test_rate_matrix_asymptotics_claims(tmp_path):
    s = load_demo("rate_matrix_asymptotics").main(["--small", "--output", str(tmp_path)])
    for summary in (s, s["zero_row_sum"]):
        # the corrected formula's error decays at the spectral gap, within its explicit bound
        assert 0.8 <= summary["fitted_rate"] / summary["kappa"] <= 1.2, summary
        assert summary["max_ratio_error_over_bound"] <= 1.0, summary
        assert summary["corrected_final_error"] < 1e-10, summary
        # the first-order surrogate's error grows linearly with slope ||Pi J (I - Pi)||_2
        assert summary["first_order_error_growth"] > 0.1, summary
        assert summary["first_order_error_growth"] == pytest.approx(summary["first_order_growth_theory"], rel=0.05)
        # the seed's Theorem 2.1 does not decay
        assert summary["seed_formula_final_error"] > 1e-3, summary
    # ... it grows linearly for J1 != 0 (slope sqrt(d)|pi^T J 1| ||pi - 1/d||) and plateaus for J1 = 0
    assert s["seed_formula_error_growth"] == pytest.approx(s["seed_formula_growth_theory"], rel=0.1)
    assert abs(s["zero_row_sum"]["seed_formula_error_growth"]) < 1e-6 * s["zero_row_sum"]["seed_formula_final_error"]
    assert (tmp_path / "rate_matrix_asymptotics.png").is_file()


def test_skew_hermitian_surrogates_claims(tmp_path):
    s = load_demo("skew_hermitian_surrogates").main(["--small", "--output", str(tmp_path)])
    assert s["first_order_error_slope"] == pytest.approx(1.0, abs=0.05), s
    assert s["first_order_error_growth"] == pytest.approx(s["first_order_growth_theory"], rel=0.05), s
    assert s["secular_max_error"] <= s["secular_bound"], s
    assert -1.3 <= s["secular_relative_error_slope"] <= -0.7, s
    assert s["secular_relative_error_final"] < 1e-2, s
    assert s["exact_methods_max_rel_diff"] < 1e-9, s


def test_random_rate_matrix_spectra_claims(tmp_path):
    s = load_demo("random_rate_matrix_spectra").main(["--small", "--output", str(tmp_path)])
    # e_m, sigma_m grow (about linearly in d for i.i.d. Exp(1) rates)
    assert 0.7 <= s["e_m_exponent"] <= 1.5, s
    assert 0.7 <= s["sigma_m_exponent"] <= 1.5, s
    # the §3.2 bound 1/sigma_m is rigorous; the bounded quantity decays
    assert s["max_value_over_bound_3_2"] <= 1.0, s
    assert s["value_2_exponent"] < -0.5, s


def test_velocity_sensitivity_claims(tmp_path):
    s = load_demo("velocity_sensitivity").main(["--small", "--output", str(tmp_path)])
    # the tangent is the derivative of the discrete sensor readings: central differences agree
    assert s["fd_rel_err"] < 1e-3, s
    assert s["peak_reading"] > 0.01 and min(s["max_abs_sensitivity"].values()) > 1e-3, s
    # the released tracer has not reached the outlet yet: no-flux walls keep its mass
    assert s["mass_final"] == pytest.approx(s["mass_initial"], rel=1e-3), s
    for name in ("fields.bp", "velocity.bp"):
        assert (tmp_path / name / "md.idx").is_file(), f"no VTX series {name}"
    png = tmp_path / "snapshots.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = read_h5(tmp_path / "velocity_sensitivity.h5")
    steps = 12
    assert data["readings"].shape == (steps + 1, 4)
    assert data["sensitivities"].shape == (2, steps + 1, 4)
    np.testing.assert_array_equal(data["sensitivities"][:, 0], 0.0)  # rho(0) = 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--kappa", "nan"], ["--kappa", "got nan"]),
        (["--dt", "0"], ["--dt", "got 0"]),
        (["--u-max", "inf"], ["--u-max", "got inf"]),
        (["--mesh", "/nonexistent/channel.msh"], ["cannot read mesh file", "no such file"]),
        (["--mesh", "MALFORMED"], ["cannot read mesh file"]),
    ],
)
def test_velocity_sensitivity_bad_input_fails_on_every_rank(tmp_path, args, expected):
    if args[-1] == "MALFORMED":
        bad = tmp_path / "bad.msh"
        bad.write_text("$MeshFormat\n4.1 0 8\n$EndMeshFormat\n$Nodes\ngarbage\n")
        args = [args[0], str(bad)]
    result = run_demo("velocity_sensitivity", tmp_path / "out", nprocs=2, extra=["--small", *args])
    assert result.returncode != 0, result.stdout
    for text in expected:
        assert text in result.stdout, result.stdout
    assert "Traceback" not in result.stdout, result.stdout
    assert not (tmp_path / "out").exists(), "nothing may be written for bad input"


def test_surrogate_vs_adjoint_claims(tmp_path):
    s = load_demo("surrogate_vs_adjoint").main(["--small", "--output", str(tmp_path)])
    rows = {(r["peclet"], r["T"], r["method"]): r for r in s["rows"]}
    # every surrogate was compared with the exact gradient in every case
    assert {m for *_, m in rows} == {"adjoint", "K=0", "K=1", "K=2", "asymptotic"}
    assert all(np.isfinite(r["rel_err"]) and 0.0 <= r["angle_deg"] <= 180.0 for r in s["rows"])
    # advection-dominated, short time: the series converges, each order closer than the last
    errs = [rows[100.0, 0.1, f"K={k}"]["rel_err"] for k in range(3)]
    assert errs[0] > errs[1] > errs[2], errs
    assert rows[100.0, 0.1, "K=2"]["angle_deg"] < 15.0
    # diffusion-dominated: t||[Q, J]|| is large, the series diverges (the surrogate is no descent proxy)
    assert rows[10.0, 1.0, "K=2"]["rel_err"] > 10.0 * rows[10.0, 1.0, "K=0"]["rel_err"]
    # the first-order surrogate degrades as T grows (its error grows linearly in t, docs/theory.md §1)
    assert rows[100.0, 1.0, "K=0"]["rel_err"] > rows[100.0, 0.1, "K=0"]["rel_err"]
    # the long-time form: its absolute error decays with T once diffusion has mixed (Pe = 10),
    # as the exact gradient itself does (no-flux directions have a vanishing long-time derivative)
    assert rows[10.0, 1.0, "asymptotic"]["abs_err"] < 0.5 * rows[10.0, 0.1, "asymptotic"]["abs_err"]
    assert rows[10.0, 1.0, "adjoint"]["grad_norm"] < rows[10.0, 0.1, "adjoint"]["grad_norm"]
    data = read_h5(tmp_path / "surrogate_vs_adjoint.h5")
    assert data["K=0"]["rel_err"].shape == (2, 3)


def test_potential_estimation_claims(tmp_path):
    s = load_demo("potential_estimation").main(["--small", "--output", str(tmp_path)])
    check = s["gradient_check"]
    # the adjoint gradient is the derivative of the discrete objective: the tangent dF.v agrees to
    # round-off, a central difference to O(eps^2)
    assert check["tangent_rel_diff"] < 1e-9, check
    assert check["fd_rel_err"] < 1e-4, check
    assert abs(check["adjoint"]) > 1e-6 * check["gradient_norm"], check  # not trivially zero
    # TAO lmvm decreases the objective at every iteration, by more than two orders of magnitude,
    # down to the noise level: the estimate explains the data as well as the truth does
    objective = np.array(s["objective_history"])
    assert len(objective) == s["iterations"] + 1 == 41
    assert np.all(np.diff(objective) <= 1e-12 * objective[0]), np.diff(objective).max()
    assert s["objective_reduction"] > 100.0, s["objective_reduction"]
    assert s["final_misfit"] < 1.2 * s["misfit_at_truth"], (s["final_misfit"], s["misfit_at_truth"])
    assert 0.5 * s["num_data"] / 2 < s["misfit_at_truth"] < 2.0 * s["num_data"] / 2  # chi^2/2 of the noise
    # errors modulo constants: any constant guess has error exactly 1, the estimate far less, and
    # less still where the particle was (the density-weighted error)
    assert s["initial_rel_error"] == pytest.approx(1.0, abs=1e-12)
    assert s["initial_weighted_error"] == pytest.approx(1.0, abs=1e-12)
    assert s["final_rel_error"] < 0.65, s["final_rel_error"]
    assert s["final_weighted_error"] < 0.4, s["final_weighted_error"]
    assert s["final_weighted_error"] < s["final_rel_error"]
    data = read_h5(tmp_path / "potential_estimation.h5")
    assert data["history"]["objective"].shape == (41,)
    fields = data["fields"]
    assert fields["truth"].shape == fields["estimate"].shape == (41 * 41,)
    # the estimate (shifted by its constant) has the double-well shape along y = 0: wells near
    # x = -w and x = +w, the barrier between them
    cut = fields["estimate_aligned"].reshape(41, 41)[:, 20]
    x = fields["grid"][:, 0].reshape(41, 41)[:, 20]
    inner = np.abs(x) < 1.8
    left, right = x[inner][np.argmin(np.where(x[inner] < 0, cut[inner], np.inf))], \
        x[inner][np.argmin(np.where(x[inner] > 0, cut[inner], np.inf))]
    assert -1.8 < left < -1.0 and 1.0 < right < 1.8, (left, right)
    assert cut[20] > cut[inner].min() + 1.5  # the barrier at x = 0 (true height 3)
    assert (tmp_path / "potential_estimation.bp" / "md.idx").is_file()


def test_potential_estimation_resumes_from_checkpoint(tmp_path, capsys):
    """Ten iterations, a checkpoint, then a resumed run to twenty: it continues the saved history;
    a checkpoint of another configuration is refused; resuming the finished run has nothing to do
    and returns its result; a run killed with SIGKILL resumes to the same result, and the
    temporaries a killed run leaves are removed."""
    demo = load_demo("potential_estimation")
    checkpoint = tmp_path / "ck" / "optimization.h5"
    common = ["--small", "--checkpoint", str(checkpoint), "--checkpoint-every", "5"]
    first = demo.main([*common, "--max-it", "10", "--output", str(tmp_path / "a")])
    assert checkpoint.is_file() and first["iterations"] == 10
    second = demo.main([*common, "--max-it", "20", "--resume", "--output", str(tmp_path / "b")])
    assert second["resumed_at"] == 10 and second["iterations"] == 20
    np.testing.assert_array_equal(second["objective_history"][:11], first["objective_history"])
    assert second["final_objective"] < first["final_objective"]
    with pytest.raises(InvalidArgumentError, match="written with noise = 0.01, this run has 0.02"):
        demo.main([*common, "--noise", "0.02", "--resume", "--output", str(tmp_path / "c")])
    assert not (tmp_path / "c").exists()

    # the checkpoint now holds a finished run: a --resume returns it, no iteration, no PETSc error
    capsys.readouterr()
    again = demo.main([*common, "--max-it", "20", "--resume", "--output", str(tmp_path / "d")])
    text = capsys.readouterr().out
    assert f"nothing to do: the checkpoint {checkpoint} holds a finished run (20 iterations, and --max-it is 20; " \
           f"reason {second['reason']})" in text, text
    assert again["finished_before_resume"] and again["iterations"] == 20 and again["evaluations"] == second["evaluations"]
    for key in ("objective_history", "rel_error_history", "final_rel_error", "final_weighted_error"):
        np.testing.assert_array_equal(again[key], second[key], err_msg=key)
    check_outputs("potential_estimation", tmp_path / "d")

    # killed with SIGKILL under mpirun -n 2 once the checkpoint holds iteration 10 (it writes
    # one every iteration), then resumed to 20: the same result as the run stopped at 10 and
    # resumed (to the round-off of the rank count), and no temporary is left behind
    kill, killed_ck = tmp_path / "kill" / "out", tmp_path / "kill" / "ck" / "optimization.h5"
    options = ["--small", "--checkpoint", str(killed_ck), "--checkpoint-every", "1"]
    command = [mpi_harness.mpirun_executable(), "-n", "2", sys.executable, str(demo_path("potential_estimation")),
               "--output", str(kill), *options, "--max-it", "10"]
    proc = subprocess.Popen(command,
                            cwd=mpi_harness.ROOT, env=mpi_harness.clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + TIMEOUT
    try:
        while proc.poll() is None and time.monotonic() < deadline and _iterations(killed_ck) < 10:
            time.sleep(0.05)
        assert _iterations(killed_ck) == 10, "the killed run never checkpointed iteration 10"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    # what a run killed while writing leaves (whatever this one left comes on top)
    kill.mkdir(parents=True, exist_ok=True)
    (kill / ".potential_estimation.abcd1234.partial.h5").write_bytes(b"\x89HDF\r\n")
    (kill / ".potential_estimation.bp.partial").mkdir(exist_ok=True)
    (kill / ".potential_estimation.bp.partial" / "data.0").write_bytes(b"x")
    (kill / ".potential_estimation.q1w2e3r4.png").write_bytes(b"")  # an earlier version's name, 0 bytes
    (killed_ck.parent / ".optimization.zx8c7v6b.partial.h5").write_bytes(b"")
    (kill / "notes.txt").write_text("mine")  # not ours: kept
    (kill / ".notes.partial.txt.bak").write_text("mine too")
    resumed = mpi_harness.check(run_demo("potential_estimation", kill, nprocs=2,
                                         extra=[*options, "--resume", "--max-it", "20"]))
    assert f"resuming from {killed_ck} at iteration 10" in resumed, resumed
    for directory in (kill, killed_ck.parent):
        assert not stale_temporaries(directory), stale_temporaries(directory)
    assert (kill / "notes.txt").read_text() == "mine" and (kill / ".notes.partial.txt.bak").exists()
    data = check_outputs("potential_estimation", kill)
    _, rtol = ROUNDOFF_AMPLIFIED["potential_estimation"]
    np.testing.assert_allclose(data["history/objective"], second["objective_history"], rtol=rtol)
    np.testing.assert_allclose(data["final/rel_error"], second["final_rel_error"], rtol=rtol)
    assert _iterations(killed_ck) == 20


def _iterations(checkpoint: Path) -> int:
    """The last iteration in a checkpoint file, -1 if there is none (yet)."""
    try:
        return len(read_h5(checkpoint)["history"]["objective"]) - 1
    except (OSError, KeyError):
        return -1
