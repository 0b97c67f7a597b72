#!/usr/bin/env python
r"""The estimation layer on linear-Gaussian problems whose posterior is known exactly (docs/theory.md §4).

Usage::

    python benchmarks/sampling.py --json out.json [--quick]

Two problems: **dense**, six parameters under a correlated Gaussian prior observed through a random 4 × 6
matrix with noise 1; **pde**, a P1 field on a 6 × 6 mesh of the unit square under the bi-Laplacian prior
(γ = 0.1, δ = 1, Robin), observed at 2 × 2 interior points with noise 0.3
(:func:`sensitivity.estimation.point_observation_problem`). Every sampler runs two chains from one seed, with
Stan's dual-averaging warm-up; ArviZ computes MCSE and bulk ESS. Measured in one run:

``max_mean_error_in_mcse`` (target ≤ 4)
    The worst, over samplers and problems, of :math:`|\bar f - E f| / \mathrm{MCSE}(\bar f)` for linear
    functionals :math:`f` (the coordinates; on the PDE problem the four observed values and two dofs), the exact
    :math:`E f` from :func:`~sensitivity.estimation.exact_posterior` (:class:`~sensitivity.estimation.MomentCheck`).
    The same for the variances is ``max_variance_error_in_mcse`` (informational).
``laplace_rel_err`` (target ≤ 1e-8)
    The relative error of the Laplace approximation's covariance (rank = number of observations) at the
    Newton-CG MAP point against the exact posterior covariance, on the 8 × 8 point-observation problem.
``map_iterations_growth`` (target ≤ 1.2)
    Newton-CG (``nls``, prior-preconditioned) iterations of the nonlinear advection problem (a stream function
    from tracer readings) on the finest of three meshes over the coarsest: 8, 16, 32 cells a side (``--quick``:
    4, 8, 16); the iterations of the linear problem and without the preconditioner are recorded too.
``hmc_acceptance`` (target in 0.6–0.9)
    The mean acceptance statistic after warm-up of HMC (identity mass, ten leapfrog steps) on the dense problem;
    every sampler's is recorded.
``resume_identical`` (target true)
    A child process runs ∞-HMC on the PDE problem with its chains on disk, is killed with SIGKILL after the
    second committed chunk of its second chain, and the run is resumed here: every draw, statistic (but the
    wall time) and summary equals those of an uninterrupted run.
``ess_per_gradient`` (informational)
    Bulk ESS (the smallest over the functionals, summed over chains) per force evaluation after warm-up, for pCN,
    ∞-MALA and ∞-HMC on the PDE problem (pCN evaluates no force: its figure is per misfit evaluation, the cost
    of one forward solve, whereas a force costs a forward and an adjoint solve), and per sampler on both problems.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _harness  # first: one BLAS thread by default, then MPI before dolfinx/petsc4py (see _harness)
from sensitivity.estimation import (HMC, PCN, GaussianPrior, InfiniteHMC, InfiniteMALA, LinearMisfit, MomentCheck,
                                    Posterior, laplace_rel_err, map_iterations_growth, point_observation_problem,
                                    read_chains, sample, summarize)

import numpy as np
from mpi4py import MPI

TARGETS = {"max_mean_error_in_mcse": 4.0, "laplace_rel_err": 1e-8, "map_iterations_growth": 1.2}
ACCEPTANCE = (0.6, 0.9)

# ----------------------------------------------------------------------------------------------- the problems


def dense_problem(comm: MPI.Comm) -> Posterior:
    """Six parameters, a correlated Gaussian prior, four noisy linear observations (the same on every call)."""
    rng = np.random.default_rng(20261201)
    G, data = rng.standard_normal((4, 6)), rng.standard_normal(4)
    L = np.tril(rng.standard_normal((6, 6))) / 3 + np.eye(6)
    misfit = LinearMisfit.from_matrix(G, data, 1.0, comm)
    return Posterior(misfit, GaussianPrior(misfit.space, np.linspace(-1, 1, 6), covariance=L @ L.T))


def pde_problem(comm: MPI.Comm) -> Posterior:
    return point_observation_problem(comm, 6, sensors=2, noise=0.3, gamma=0.1)[0]


def functionals(posterior: Posterior) -> np.ndarray:
    """Rows of linear functionals in ``to_array`` order: the coordinates (dense), or the observed values and two
    dofs, a corner and an unobserved one (PDE)."""
    space, misfit = posterior.space, posterior.misfit
    if space.size == 6:
        return np.eye(6)
    observed = [space.to_array(misfit.apply_transpose(e)) for e in np.eye(misfit.data.size)]
    return np.vstack([*observed, np.eye(space.size)[[0, space.size // 3]]])


PROBLEMS = {"dense": dense_problem, "pde": pde_problem}

# (problem, label) -> (kernel, warm-up iterations, draws); HMC has Stan's 1000 warm-up iterations
RUNS = {
    ("dense", "pCN"): (PCN(), 300, 10000),
    ("dense", "MALA"): (InfiniteMALA(), 300, 6000),
    ("dense", "infinite HMC"): (InfiniteHMC(4), 300, 1500),
    ("dense", "HMC"): (HMC(10), 1000, 1500),
    ("pde", "pCN"): (PCN(), 200, 2500),
    ("pde", "MALA"): (InfiniteMALA(), 200, 1500),
    ("pde", "HMC"): (InfiniteHMC(3), 200, 600),
}

# ----------------------------------------------------------------------------------------------- the samplers


def run_sampler(problem: str, label: str, quick: bool) -> dict:
    """One sampler on one problem: moment errors in MCSE, acceptance, ESS per force evaluation and per second."""
    kernel, warmup, draws = RUNS[problem, label]
    build = PROBLEMS[problem]
    posterior = build(MPI.COMM_SELF)
    check = MomentCheck(posterior, functionals(posterior))
    start = time.perf_counter()
    chains = sample(build, kernel, num_draws=draws // 2 if quick else draws, num_warmup=warmup,
                    num_chains=2, seed=11, summaries=check.summaries(), store_control=False, comm=MPI.COMM_SELF)
    seconds = time.perf_counter() - start
    s = summarize(chains)
    z_mean, z_var = check.z_scores(s)
    totals = chains.totals()
    ess = float(s.ess_bulk["f"].min())
    forces = int(totals["gradient_evaluations"].sum())
    cost = forces if forces else int(totals["iterations"].sum())  # pCN: one misfit evaluation per iteration
    return {"kernel": kernel.name, "draws_per_chain": int(totals["iterations"][0]),
            "max_mean_error_in_mcse": float(np.max(np.abs(z_mean))),
            "max_variance_error_in_mcse": float(np.max(np.abs(z_var))),
            "rhat_max": float(s.rhat["f"].max()), "acceptance": float(np.mean(s.acceptance_rate)),
            "step_size": [float(h) for h in s.step_size], "min_ess_bulk": ess,
            "force_evaluations": forces, "ess_per_gradient": ess / cost,
            "cost_unit": "force evaluation" if forces else "misfit evaluation",
            "ess_per_second": ess / float(totals["time"].sum()), "seconds": seconds}


# ----------------------------------------------------------------------------------------------- kill and resume

RESUME = dict(num_warmup=50, num_draws=450, num_chains=2, seed=3, chunk_size=10, thin=3)


def resume_options(quick: bool) -> dict:
    return dict(RESUME, num_draws=150) if quick else dict(RESUME)


def resume_child(directory: str, quick: bool) -> None:
    """The run that the benchmark kills (``--resume-child DIR``)."""
    sample(pde_problem, InfiniteHMC(3), output=directory, comm=MPI.COMM_SELF, **resume_options(quick))


def same_chains(a, b) -> bool:
    """Every statistic but the wall time, every stored index, draw and summary equal, bit for bit."""
    stats = all(np.array_equal(a.stats[k], b.stats[k]) for k in a.stats if k != "time")
    summaries = a.summaries.keys() == b.summaries.keys() and all(
        np.array_equal(a.summaries[k], b.summaries[k]) for k in a.summaries)
    return bool(stats and summaries and np.array_equal(a.stored, b.stored) and np.array_equal(a.control, b.control))


def kill_and_resume(quick: bool) -> dict:
    options = resume_options(quick)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        child = subprocess.Popen([sys.executable, __file__, "--resume-child", str(out), *(["--quick"] * quick)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300.0
        while not (out / "chain-001" / "chunk-000002.h5").exists():  # chain 0 done, chain 1 under way
            if child.poll() is not None:
                raise RuntimeError(f"the child run ended before it was killed:\n{child.stdout.read().decode()}")
            if time.monotonic() > deadline:
                child.kill()
                raise RuntimeError("the child run committed no chunk in 300 s")
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_at = int(read_chains(out).stats["lp"].shape[1])
        total = options["num_warmup"] + options["num_draws"]
        resumed = sample(pde_problem, InfiniteHMC(3), output=out, resume=True, comm=MPI.COMM_SELF, **options)
        reference = sample(pde_problem, InfiniteHMC(3), comm=MPI.COMM_SELF, **options)
        return {"killed_after_iterations": killed_at, "iterations": total, "signal": "SIGKILL",
                "resume_identical": bool(killed_at < total and same_chains(resumed, reference)
                                         and same_chains(read_chains(out), resumed))}


# ----------------------------------------------------------------------------------------------- the report


def print_report(report: dict) -> None:
    print(f"\n  {'problem':<7} {'sampler':<13} {'accept':>7} {'|z| mean':>9} {'|z| var':>8} {'R-hat':>6} "
          f"{'min ESS':>8} {'ESS/grad':>9} {'ESS/s':>8}")
    for key, r in report["samplers"].items():
        problem, label = key.split(":")
        print(f"  {problem:<7} {label:<13} {r['acceptance']:>7.3f} {r['max_mean_error_in_mcse']:>9.2f} "
              f"{r['max_variance_error_in_mcse']:>8.2f} {r['rhat_max']:>6.3f} {r['min_ess_bulk']:>8.0f} "
              f"{r['ess_per_gradient']:>9.4f} {r['ess_per_second']:>8.0f}")
    growth = report["map"]
    print(f"\n  Newton-CG iterations, advection problem, n = {growth['advection']['sizes']}: "
          f"{growth['advection']['iterations']}; linear: {growth['linear']['iterations']}; "
          f"linear without the prior preconditioner (CG iterations): {growth['linear_unpreconditioned']['krylov_iterations']}")
    print(f"  resume after SIGKILL at iteration {report['resume']['killed_after_iterations']} of "
          f"{report['resume']['iterations']}: identical {report['resume_identical']}")
    _harness.print_targets(report)
    low, high = report["acceptance_target"]
    print(f"  {'hmc_acceptance':<38} {report['hmc_acceptance']:>10.3g} {f'{low}-{high}':>10}  "
          f"{report['passed']['hmc_acceptance']}")
    print(f"  {'resume_identical':<38} {str(report['resume_identical']):>10} {'true':>10}  "
          f"{report['passed']['resume_identical']}")
    print(f"  ess_per_gradient (PDE): {report['ess_per_gradient']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the report to this file")
    parser.add_argument("--quick", action="store_true", help="half the draws, a shorter killed run, meshes 4, 8, 16 (for the tests)")
    parser.add_argument("--resume-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.resume_child:
        resume_child(args.resume_child, args.quick)
        return 0
    if args.json is None:
        parser.error("--json PATH is required")
    if MPI.COMM_WORLD.size > 1:
        parser.error("run it serially: the chains run on one rank each (their rank independence is tested)")
    start = time.perf_counter()
    samplers = {f"{p}:{label}": run_sampler(p, label, args.quick) for p, label in RUNS}
    sizes = (4, 8, 16) if args.quick else (8, 16, 32)
    comm = MPI.COMM_SELF
    growth = {"advection": map_iterations_growth("advection", sizes, comm=comm),
              "linear": map_iterations_growth("linear", sizes, comm=comm),
              "linear_unpreconditioned": map_iterations_growth("linear", sizes, comm=comm, precondition=False)}
    resume = kill_and_resume(args.quick)
    hmc = samplers["dense:HMC"]["acceptance"]
    report = {
        "max_mean_error_in_mcse": max(r["max_mean_error_in_mcse"] for r in samplers.values()),
        "max_variance_error_in_mcse": max(r["max_variance_error_in_mcse"] for r in samplers.values()),
        "laplace_rel_err": laplace_rel_err(comm, 8),
        "map_iterations_growth": growth["advection"]["growth"],
        "hmc_acceptance": hmc, "acceptance_target": list(ACCEPTANCE),
        "resume_identical": resume["resume_identical"],
        "ess_per_gradient": {label: samplers[f"pde:{label}"]["ess_per_gradient"] for label in ("pCN", "MALA", "HMC")},
        "targets": TARGETS, "samplers": samplers, "map": growth, "resume": resume, "quick": args.quick,
        "machine": _harness.machine_info(),
    }

    checks = {"hmc_acceptance": ACCEPTANCE[0] <= hmc <= ACCEPTANCE[1], "resume_identical": resume["resume_identical"]}
    return _harness.finish_report(report, TARGETS, start, args.json, print_report, checks)


if __name__ == "__main__":
    sys.exit(main())
