"""Runs ``benchmarks/frechet.py --quick`` as a subprocess (under a timeout) and checks its JSON report.

Accuracy is deterministic and is asserted; timing ratios depend on the machine and
its load, so they are only checked to be present and finite, never compared with
their targets.
"""

from __future__ import annotations

import json
import math
import sys

import pytest
from mpi4py import MPI

from tests import mpi_harness

serial_only = pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="launches a subprocess; serial only")

BENCHMARK = mpi_harness.ROOT / "benchmarks" / "frechet.py"

TOP_LEVEL_NUMBERS = (
    "max_rel_err_vs_scipy",
    "default_time_over_scipy",
    "full_gradient_over_one_directional",
    "k_directions_over_scipy_loop",
    "k_directions_over_scipy_loop_complex_spectrum",
)
TARGET_KEYS = {
    "max_rel_err_vs_scipy",
    "default_time_over_scipy",
    "full_gradient_over_one_directional",
    "k_directions_over_scipy_loop",
}
EXACT_METHODS = {"default", "block", "eig", "series"}


def _numbers(obj):
    """Every int/float leaf of a JSON document."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


@serial_only
def test_frechet_benchmark_quick(tmp_path):
    out = tmp_path / "x.json"
    result = mpi_harness.run([sys.executable, str(BENCHMARK), "--quick", "--json", str(out)], timeout=300)
    text = mpi_harness.check(result)
    assert "max_rel_err_vs_scipy" in text  # the table was printed
    # written atomically: the report and nothing else (no temporary file left behind)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
    report = json.loads(out.read_text())

    for key in TOP_LEVEL_NUMBERS:
        value = report[key]
        assert isinstance(value, float) and math.isfinite(value) and value >= 0, (key, value)
    assert all(math.isfinite(x) for x in _numbers(report))

    assert set(report["targets"]) == TARGET_KEYS
    assert set(report["passed"]) == TARGET_KEYS
    assert all(isinstance(v, bool) for v in report["passed"].values())

    per_method = report["max_rel_err_vs_scipy_per_method"]
    assert EXACT_METHODS <= set(per_method)
    assert report["max_rel_err_vs_scipy"] == max(per_method.values())
    # accuracy is deterministic, so it is asserted (timing ratios are not)
    assert report["max_rel_err_vs_scipy"] <= 1e-12, per_method
    assert report["passed"]["max_rel_err_vs_scipy"] is True
    assert report["accuracy"]["cases"] >= 4 * 3 * 8
    assert report["timing"]["k_directions_complex_spectrum"]["complex_eigenvalues"] > 0
    for key in ("k_directions_real_spectrum", "k_directions_complex_spectrum"):
        assert report["timing"][key]["max_rel_err_first5_vs_scipy"] <= 1e-10

    machine = report["machine"]
    assert machine["numpy"] and machine["scipy"]
    assert "OMP_NUM_THREADS" in machine["threads_env"]
    assert report["quick"] is True


AD_BENCHMARK = mpi_harness.ROOT / "benchmarks" / "advection_diffusion.py"
AD_RATIOS = ("forward_over_petsc_loop", "tangent_over_forward", "tangent_k_over_forward", "mpi2_speedup")


@serial_only
def test_advection_diffusion_benchmark_quick(tmp_path):
    out = tmp_path / "ad.json"
    result = mpi_harness.run([sys.executable, str(AD_BENCHMARK), "--quick", "--json", str(out)], timeout=300)
    text = mpi_harness.check(result)
    assert "forward_over_petsc_loop" in text and "mpirun -n 2" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ad.json"]
    report = json.loads(out.read_text())
    for key in AD_RATIOS:  # timing ratios: present and finite, never compared with targets
        value = report[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    assert all(math.isfinite(x) for x in _numbers(report))
    assert set(report["targets"]) == set(AD_RATIOS[:3]) == set(report["passed"])
    assert report["mpi2"]["nprocs"] == 2
    checks = report["serial"]["checks"]
    # the same solver on the same matrices: our loop is the hand-written loop
    assert checks["forward_vs_petsc_loop_rel_diff"] <= 1e-13
    # sharing block solves across directions does not change the first direction's tangent
    assert checks["tangent_1_vs_tangent_k_first_rel_diff"] <= 1e-12
    assert len(checks["rho_norms"]) == report["k"] == 8 and min(checks["rho_norms"]) > 0
    assert report["ndofs"] == 41 * 41 and report["quick"] is True


GRAD_BENCHMARK = mpi_harness.ROOT / "benchmarks" / "gradients.py"
GRAD_KEYS = ("gradient_over_forward", "checkpointed_gradient_over_forward", "surrogate_over_forward",
             "surrogate_rss_over_forward", "adjoint_vs_tangent_rel_err")


@serial_only
def test_gradients_benchmark_quick(tmp_path):
    out = tmp_path / "grad.json"
    result = mpi_harness.run([sys.executable, str(GRAD_BENCHMARK), "--quick", "--json", str(out)], timeout=300)
    text = mpi_harness.check(result)
    assert "gradient_over_forward" in text and "mpirun -n 2" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grad.json"]
    report = json.loads(out.read_text())
    for key in GRAD_KEYS:
        value = report[key]
        assert isinstance(value, float) and math.isfinite(value) and value >= 0, (key, value)
    assert set(report["targets"]) == set(GRAD_KEYS) == set(report["passed"])
    # accuracy is deterministic and asserted; timing and memory ratios are not
    assert report["adjoint_vs_tangent_rel_err"] <= 1e-10
    stats = report["serial"]["stats"]
    assert stats["gradient"]["recomputed_steps"] == 0
    assert stats["checkpointed"]["disk_writes"] > 0 and stats["checkpointed"]["max_states_in_memory"] <= 10
    assert stats["revolve_ram"]["recomputed_steps"] > 0 and stats["revolve_ram"]["max_states_in_memory"] <= 10
    assert stats["revolve_ram"].get("disk_writes", 0) == 0
    assert isinstance(report["revolve_ram_gradient_over_forward"], float)
    for memory in (report["memory_serial"], report["memory_mpi2"]):
        assert set(memory) == {"forward", "gradient", "checkpointed", "revolve_ram", "surrogate"}
        assert all(min(r["maxrss_mib_per_rank"]) > 10 for r in memory.values())
    assert all(len(r["maxrss_mib_per_rank"]) == 2 for r in report["memory_mpi2"].values())
    assert 0 < report["serial"]["accuracy"]["surrogate_angle_deg"] < 90


SCHRODINGER_BENCHMARK = mpi_harness.ROOT / "benchmarks" / "schrodinger.py"
SCHRODINGER_KEYS = ("norm_drift", "energy_drift", "tangent_over_forward", "gradient_over_forward",
                    "secular_over_forward", "first_order_over_forward", "adjoint_vs_tangent")
SCHRODINGER_TARGETS = {"norm_drift", "tangent_over_forward", "gradient_over_forward", "adjoint_vs_tangent"}


def _check_schrodinger_report(report: dict, nprocs: int) -> None:
    for key in SCHRODINGER_KEYS:  # timing ratios: present and finite, never compared with targets
        value = report[key]
        assert isinstance(value, float) and math.isfinite(value) and value >= 0, (key, value)
    assert all(math.isfinite(x) for x in _numbers(report))
    assert set(report["targets"]) == SCHRODINGER_TARGETS == set(report["passed"])
    assert report["nprocs"] == nprocs and report["quick"] is True
    assert report["ndofs"] == 2 * 17 * 17 and report["drift_steps"] == 1000
    # accuracy is deterministic and asserted: Crank–Nicolson conserves the norm and the energy
    # over 1000 steps of a packet that moves, and the adjoint gradient equals the tangent derivative
    assert report["norm_drift"] < 1e-12 and report["energy_drift"] < 1e-12
    assert report["measured"]["conservation"]["distance_moved"] > 0.5
    assert report["adjoint_vs_tangent"] < 1e-10
    # the secular surrogate's relative error falls with t (bounded error, |rho| ~ t); first order does not
    errors = report["measured"]["surrogate_errors"]
    assert errors["times"] == [0.5, 2.0, 8.0, 32.0]
    assert errors["outside_fraction"] < 1e-10
    secular, first_order = errors["secular_relative"], errors["first_order_relative"]
    assert secular[-1] < secular[0] and secular[-1] < 0.1
    assert first_order[-1] > 0.3
    assert report["secular_relative_error"]["32"] == secular[-1]


@serial_only
def test_schrodinger_benchmark_quick(tmp_path):
    out = tmp_path / "schr.json"
    result = mpi_harness.run([sys.executable, str(SCHRODINGER_BENCHMARK), "--quick", "--json", str(out)], timeout=120)
    text = mpi_harness.check(result)
    assert "norm_drift" in text and "secular rel." in text  # the tables were printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schr.json"]
    _check_schrodinger_report(json.loads(out.read_text()), nprocs=1)


@serial_only
def test_schrodinger_benchmark_quick_under_mpirun(tmp_path):
    """The same benchmark distributed over two ranks: rank 0 prints once and writes the report."""
    out = tmp_path / "schr2.json"
    result = mpi_harness.run_mpi(2, [str(SCHRODINGER_BENCHMARK), "--quick", "--json", str(out)], timeout=300)
    text = mpi_harness.check(result)
    assert text.count("wrote ") == 1 and text.count("norm_drift") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schr2.json"]
    _check_schrodinger_report(json.loads(out.read_text()), nprocs=2)


SAMPLING_BENCHMARK = mpi_harness.ROOT / "benchmarks" / "sampling.py"
SAMPLERS = {"dense:pCN", "dense:MALA", "dense:infinite HMC", "dense:HMC", "pde:pCN", "pde:MALA", "pde:HMC"}


@serial_only
@pytest.mark.slow
def test_sampling_benchmark_quick(tmp_path):
    out = tmp_path / "sampling.json"
    result = mpi_harness.run([sys.executable, str(SAMPLING_BENCHMARK), "--quick", "--json", str(out)], timeout=600)
    text = mpi_harness.check(result)
    assert "max_mean_error_in_mcse" in text and "resume_identical" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sampling.json"]
    report = json.loads(out.read_text())
    assert all(math.isfinite(x) for x in _numbers(report))
    assert set(report["samplers"]) == SAMPLERS
    # fixed seeds: the statistics are deterministic, and a sampler with a wrong target would fail them
    assert report["max_mean_error_in_mcse"] == max(r["max_mean_error_in_mcse"] for r in report["samplers"].values())
    assert report["max_mean_error_in_mcse"] <= 4.0 and report["passed"]["max_mean_error_in_mcse"] is True
    # the variances' MCSE is itself noisy at the quick run's lengths (squared deviations have heavy tails): the
    # figure is informational there; tests/test_estimation_samplers.py checks variances on longer runs
    assert math.isfinite(report["max_variance_error_in_mcse"])
    assert report["laplace_rel_err"] <= 1e-8
    assert 0.6 <= report["hmc_acceptance"] <= 0.9 and report["passed"]["hmc_acceptance"] is True
    assert report["resume_identical"] is True and report["passed"]["resume_identical"] is True
    resume = report["resume"]
    assert 0 < resume["killed_after_iterations"] < resume["iterations"]  # killed mid-run, not after it
    assert set(report["ess_per_gradient"]) == {"pCN", "MALA", "HMC"}
    assert all(v > 0 for v in report["ess_per_gradient"].values())
    growth = report["map"]
    assert growth["advection"]["sizes"] == [4, 8, 16] and len(growth["advection"]["iterations"]) == 3
    # the prior preconditioner keeps the linear problem's CG iterations flat; without it they grow with the mesh
    assert growth["linear"]["iterations"][-1] <= 1.2 * growth["linear"]["iterations"][0]
    unpreconditioned = growth["linear_unpreconditioned"]["krylov_iterations"]
    assert unpreconditioned[-1] > 2 * unpreconditioned[0]
    assert {"max_mean_error_in_mcse", "laplace_rel_err", "map_iterations_growth"} == set(report["targets"])


ESTIMATION_BENCHMARK = mpi_harness.ROOT / "benchmarks" / "estimation.py"
#: --quick: its problems and their trajectory gradients.
ESTIMATION_FORCES = {"rate_matrix_d4": {"exact", "first order", "affine"},
                     "rate_matrix_d14": {"exact", "first order", "affine"},
                     "velocity": {"exact", "first order", "laplace", "pCN"},
                     "potential": {"exact", "secular", "first order", "laplace", "pCN"}}
ESTIMATION_ROW_NUMBERS = ("ess_per_s", "ess_per_s_over_exact", "acceptance", "cost_per_iteration_over_exact",
                          "posterior_distance_in_mcse", "sd_distance_in_mcse", "min_ess_bulk", "max_rhat", "min_sd",
                          "seconds_per_iteration", "seconds")


@serial_only
@pytest.mark.slow
def test_estimation_benchmark_quick(tmp_path):
    out, png = tmp_path / "estimation.json", tmp_path / "estimation.png"
    result = mpi_harness.run([sys.executable, str(ESTIMATION_BENCHMARK), "--quick", "--json", str(out), "--figure",
                              str(png)], timeout=240)
    text = mpi_harness.check(result)
    assert "surrogates_target_the_posterior" in text and "rate_matrix_d14" in text  # the table was printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["estimation.json", "estimation.png"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(out.read_text())
    assert {"rows", "by_problem", "machine", "arguments", "passed", "targets"} <= set(report)
    rows = report["rows"]
    # every (problem, force) pair, once
    assert sorted((r["problem"], r["force"]) for r in rows) == sorted(
        (p, f) for p, forces in ESTIMATION_FORCES.items() for f in forces)
    assert set(report["by_problem"]) == set(ESTIMATION_FORCES)
    for r in rows:
        for key in ESTIMATION_ROW_NUMBERS:  # too short a run to compare with targets: present and finite
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]), (r["problem"], r["force"], key, r[key])
        assert r["ess_per_s"] > 0 and 0 <= r["acceptance"] <= 1
        assert r["gradient_evaluations"] > 0 or r["force"] == "pCN"
        if r["force"] == "exact":
            assert r["ess_per_s_over_exact"] == 1.0 and r["cost_per_iteration_over_exact"] == 1.0
            assert r["posterior_distance_reference"] == "halves"
        else:
            assert r["posterior_distance_reference"] == "exact"
    # no PDE solve inside a Laplace or pCN trajectory: an iteration costs a fraction of an exact one
    for r in rows:
        if r["force"] in ("laplace", "pCN"):
            assert r["cost_per_iteration_over_exact"] < 0.5, r
    assert report["by_problem"]["velocity"]["folded_onto_one_mode"] is True
    assert report["by_problem"]["potential"]["map"]["converged"] is True
    assert all(math.isfinite(x) for x in _numbers(report))
    assert set(report["targets"]) == {"surrogates_target_the_posterior"} == set(report["passed"])
    assert isinstance(report["passed"]["surrogates_target_the_posterior"], bool)
    assert report["arguments"]["quick"] is True


@serial_only
def test_estimation_benchmark_full_run_files_are_valid():
    """``--full`` is not run by the tests (hours): its PDE run files (the papers' sizes) at least validate, build
    their synthetic data, and have the sizes the benchmark's docstring names."""
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import estimation as E; from mpi4py import MPI\n"
        "for problem, size in (('velocity', 196), ('potential', 45)):\n"
        "    for force in E.PDE_FORCES[problem]:\n"
        "        text = E.pde_run_file(problem, 'full', force)\n"
        "        if force == 'exact':\n"
        "            c = E.parse_config(text, E.RUNS / f'{problem}.toml', MPI.COMM_WORLD)\n"
        "            assert c.problem.size == size, (problem, c.problem.size)\n"
        "        else:\n"
        "            import tomllib; tomllib.loads(text)\n"
        "print('ok')\n")
    result = mpi_harness.run([sys.executable, "-c", code], timeout=300, cwd=mpi_harness.ROOT)
    assert mpi_harness.check(result).strip().endswith("ok")
