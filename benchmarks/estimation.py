#!/usr/bin/env python
r"""HMC with cheap surrogate trajectory gradients against HMC with the exact adjoint gradient, in effective samples
per second (docs/theory.md §4.4–4.6): the seed's question, measured.

Usage::

    python benchmarks/estimation.py --json out.json [--figure out.png] [--quick | --full]
        [--problems rate_matrix velocity potential] [--sizes 4 14 44] [--update]

(``--update``: rerun only the given problems and replace their rows in the report ``out.json``; every ratio is
between rows of one problem, measured in one invocation, whose start each row records.)

:func:`measure_forces` samples one problem once per trajectory gradient (a dict ``{label: build}``, ``build(comm)``
returning the :class:`~sensitivity.estimation.Posterior`) with the same seed, chains, starts and warm-up (the
sampler's dual-averaging step-size adaptation, frozen afterwards). The accept step uses the exact posterior, so
every force targets the same posterior and only the efficiency differs. ArviZ computes ESS, MCSE and
:math:`\hat R` (:func:`~sensitivity.estimation.summarize`). Every problem is built from a run file (written in
memory, :func:`~sensitivity.estimation.runs.config.parse_config`) and run by the steps of ``sensitivity-estimate``
(:mod:`sensitivity.estimation.runs.steps`), so the benchmark measures what the console script runs.

**PDE problems** ``velocity`` and ``potential``: ``runs/velocity.toml`` and ``runs/potential.toml`` with the
changes of :data:`PDE_CHANGES` (default: the run files' problems — 9 stream-function coefficients on a 16 × 16
mesh, 20 steps; 15 Legendre coefficients of the potential on 12 × 12, 60 steps — with 2 chains × (100 warm-up +
250 and 200 draws), HMC with the Laplace mass (``sampler.mass = "laplace"``), 8 (velocity) and 4 (potential) leapfrog
steps; ``--full``: the papers' sizes, 196 coefficients (``modes = 14``) on 32 × 32 and a degree-8 potential (45)
on 32 × 32 with 240 steps, 4 chains × (500 + 2000)). The MAP point (multi-start Newton–CG) and the Laplace
approximation are computed once; then every trajectory gradient of :data:`PDE_FORCES` runs from the same starts
(velocity: the MAP point and its mirror image, the draws folded onto one mode before ArviZ sees them, theory
§4.6; potential: the MAP point): ``"exact"`` (the discrete adjoint), ``"first order"`` (seed 1.6),
``"secular"`` (potential), ``"laplace"`` (the Laplace approximation's quadratic model: no PDE solve inside a
trajectory, one forward solve per trajectory for the accept step) and ``"pCN"`` (no gradient: the
prior-preconditioned Crank–Nicolson random walk, one forward solve per iteration).

**Rate-matrix problems** ``rate_matrix_d4``, ``_d14``, ``_d44`` (12, 182 and 1892 log-rates), built from run
files written in memory (``problem.kind = "rate_matrix"``, :func:`~sensitivity.estimation.runs.config.parse_config`),
so that the posterior and the sampler settings are those ``sensitivity-estimate`` runs; forces ``"exact"``,
``"first order"`` and ``"affine"`` (:class:`~sensitivity.estimation.RateForce`). The run files:

- ``frechet = "block"``, the fastest exact method here (half the time of ``"scipy"`` at d ≤ 14, the same at 44);
- prior :math:`N(-\log(d - 1), 1)` per log-rate, so that a state's exit rate is O(1) at every d;
- synthetic counts, ``counts_per_time = 2000`` (``data.seed = 2``), from the first state at
  ``times = [0.02, 0.05, 0.1]``, at a prior draw (``truth_seed = 1``). The posterior is informative along the
  d − 1 rates out of the first state (standard deviations down to 0.08, 0.13 and 0.13 against the prior's 1) and
  the prior elsewhere. The times are short on purpose: the surrogates' relative error grows like :math:`t|Q|`
  (here a median 10% (first order) and 6% (affine) of the potential's gradient at d = 4), and at
  :math:`t|Q| \sim 1` both stall HMC: with the settings of ``runs/rate_matrix.toml`` (d = 4, times up to 1.5)
  the frozen step sizes are 3e-4 (first order) and 0.03 (affine) against the exact force's 0.12, and
  :math:`\hat R` 2.8 and 1.7;
- ``[sampler]``: ``kind = "hmc"``, ``mass = "identity"``, ``num_steps = 16`` (with the exact force's step, 0.08–0.13, a
  trajectory crosses a prior standard deviation), ``jitter = 0.2``, ``step_size = 0.1``, the default
  ``target_accept`` (0.8), ``initial = "prior"`` (dispersed starts), ``seed = 17``; chains, warm-up and draws
  per chain in :data:`RATE_MATRIX_SIZES`: ``--quick`` d = 4 and 14 only, 2 × (40 + 40); default d = 4: 2 × (1000 +
  1000), d = 14: 2 × (500 + 1000), d = 44: 2 × (300 + 400); ``--full`` 4 × (1000 + 4000), 4 × (1000 + 3000),
  4 × (500 + 1500).

The long warm-ups matter for the surrogates: a surrogate chain that meets a region of large surrogate error late
in a short warm-up keeps a small step size (at d = 4 with 300 warm-up iterations, about half of the surrogate runs
had a chain whose step was 3–10 times smaller than the other's). The default gives the exact rows a smallest bulk
ESS of ~700–800 at d = 4 and 14 and ~90 at d = 44 (1892 parameters, 40 ms per iteration, and ArviZ's summary
takes ~7 s there), the surrogates ~150–450, ~90–120 and ~15–40: the rate-matrix part takes ~5.7 minutes
serially (one core of the 2-core development machine).

Measured per row (problem, force), in one run:

``ess_per_s``
    The smallest bulk ESS over the parameters (all chains) over the sampling time after warm-up:
    ``min(summarize(chains).ess_per_second)``, whose time is the sum of the chains' iteration times after
    warm-up, the wall time when the chains run one after the other (always here: every rank runs every chain).
``ess_per_s_over_exact``, ``cost_per_iteration_over_exact``
    That, and the wall time per iteration after warm-up, over the exact row's of the same problem.
``acceptance``
    The mean acceptance statistic after warm-up.
``posterior_distance_in_mcse`` (checked: ``surrogates_target_the_posterior``)
    :math:`\max_i |\bar q_i - \bar q_i^{\rm exact}| / (\mathrm{MCSE}_i^2 + \mathrm{MCSE}_i^{{\rm exact}\,2})^{1/2}`
    over the parameters. The exact row's compares the first half of its chains with the second half (its
    calibration; not checked). ``posterior_distance_null_p95`` and ``_p99`` are the 95% and 99% quantiles of the
    largest of n independent :math:`|N(0, 1)|` for the n parameters (2.9–4.2 and 3.3–4.6 here): a flat bound
    would fail a correct sampler on the largest problem in one run of nine. The check: in every row whose run and
    exact run both have a smallest bulk ESS of at least :data:`MIN_ESS`, the distance is at most its 99%
    quantile; rows with fewer effective samples are reported, not checked (their MCSE is itself too uncertain).
    ``sd_distance_in_mcse``: the same for the standard deviations with ArviZ's ``mcse_sd`` (informational).

Informational: the step size per chain, force evaluations, seconds, smallest bulk and tail ESS, largest
:math:`\hat R`, divergences, the smallest posterior standard deviation (``min_sd``). The report also holds each
problem's exact run file (``by_problem``).

Serial by default; under ``mpirun`` the PDE problems are distributed and every rank runs every chain, and rank 0
prints and writes the report (and with ``--figure`` the bar chart of ``ess_per_s_over_exact`` per problem).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

import _harness  # first: one BLAS thread by default, then MPI before dolfinx/petsc4py (see _harness)
from sensitivity.estimation import RATE_FORCE_KINDS, Chains, ChainSummary, Kernel, Posterior, sample, summarize
from sensitivity.estimation.runs import steps
from sensitivity.estimation.runs.config import parse_config, toml_text
from sensitivity.estimation.runs.velocity import sine_modes
from sensitivity.io import read_h5
from sensitivity.parallel import run_on_root

import numpy as np
from mpi4py import MPI
from scipy.special import ndtri

#: The smallest bulk ESS at which a run's posterior distance is checked.
MIN_ESS = 50.0
TARGETS = {"surrogates_target_the_posterior": "posterior_distance_in_mcse <= posterior_distance_null_p99 in every row "
                                              f"with min_ess_bulk >= {MIN_ESS:g} (and its exact row's)"}

# --------------------------------------------------------------------------------------- the measuring function


def measure_forces(problem: str, builds: Mapping[str, Callable[[MPI.Comm], Posterior]],
                   kernels: Mapping[str, Callable[[], Kernel]], settings: Mapping, comm: MPI.Comm,
                   transform: Callable[[Chains], Chains] | None = None) -> list[dict]:
    """Sample ``problem`` once per force label with ``kernels[label]()`` and the :func:`~sensitivity.estimation.sample`
    keywords ``settings`` (module docstring); ``builds`` maps the labels to ``build(comm) -> Posterior`` and has
    ``"exact"``. ``transform`` maps the chains before they are summarized (the velocity problem folds its two
    mirror modes onto one). Returns one row per label, in the order of ``builds`` (collective on ``comm``)."""
    if "exact" not in builds:
        raise ValueError(f"{problem}: the forces {list(builds)} have no 'exact' one to compare with")
    runs = {}
    for label, build in builds.items():
        start = time.perf_counter()
        with np.errstate(invalid="ignore", over="ignore"):  # a divergent trajectory: rejected (as the CLI does)
            chains = sample(build, kernels[label](), comm=comm, **settings)
        seconds = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
        if transform is not None:
            chains = transform(chains)
        runs[label] = (chains, summarize(chains), seconds)
        if comm.rank == 0:
            print(f"  {problem}, {label}: {seconds:.1f} s", flush=True)
    exact = runs["exact"]
    halves = [summarize(part) for part in split_chains(exact[0])]
    rows = []
    for label, (chains, s, seconds) in runs.items():
        reference = halves if label == "exact" else (s, exact[1])
        rows.append({"problem": problem, "force": label, **run_row(chains, s, seconds), **distances(*reference),
                     "posterior_distance_reference": "halves" if label == "exact" else "exact"})
    base = rows[list(runs).index("exact")]
    for row in rows:
        row["ess_per_s_over_exact"] = row["ess_per_s"] / base["ess_per_s"]
        row["cost_per_iteration_over_exact"] = row["seconds_per_iteration"] / base["seconds_per_iteration"]
    return rows


def run_row(chains: Chains, s: ChainSummary, seconds: float) -> dict:
    """What one run measures by itself (module docstring)."""
    totals = chains.totals()
    iterations, sampling = int(totals["iterations"].sum()), float(totals["time"].sum())
    return {"parameters": int(chains.settings["parameters"]), "num_chains": chains.num_chains,
            "num_warmup": chains.num_warmup, "num_draws": int(chains.settings["num_draws"]),
            "ess_per_s": extreme(s.ess_per_second), "acceptance": float(np.mean(s.acceptance_rate)),
            "seconds_per_iteration": sampling / iterations, "min_ess_bulk": extreme(s.ess_bulk),
            "min_ess_tail": extreme(s.ess_tail), "max_rhat": extreme(s.rhat, np.max), "min_sd": extreme(s.sd),
            "step_size": [float(h) for h in s.step_size], "divergences": int(totals["divergences"].sum()),
            "gradient_evaluations": int(totals["gradient_evaluations"].sum()), "sampling_seconds": sampling,
            "seconds": seconds, "mean": _values(s.mean), "sd": _values(s.sd)}


def _values(dataset) -> list[float]:
    """The parameters' values of a :class:`ChainSummary` statistic (the control ``q``)."""
    return np.asarray(dataset["q"].values, dtype=float).ravel().tolist()


def extreme(dataset, reduce=np.min) -> float:
    """The smallest (``reduce=np.max``: largest) value over every variable of a :class:`ChainSummary` dataset."""
    return float(reduce([reduce(np.asarray(v)) for v in dataset.data_vars.values()]))


def split_chains(chains: Chains) -> list[Chains]:
    """The first and the second half of the chains (independent), or ``[]`` for fewer than two chains."""
    half = chains.num_chains // 2
    if half == 0:
        return []
    return [dataclasses.replace(chains, stats={k: v[part] for k, v in chains.stats.items()},
                                control=None if chains.control is None else chains.control[part],
                                summaries={k: v[part] for k, v in chains.summaries.items()})
            for part in (slice(0, half), slice(half, 2 * half))]


def distances(a: ChainSummary | None = None, b: ChainSummary | None = None) -> dict:
    """Largest distances of the posterior means and standard deviations of two runs, in combined MCSE, and the 95%
    and 99% quantiles of the largest of as many independent |N(0, 1)| (``None`` without two runs)."""
    if a is None:
        return {"posterior_distance_in_mcse": None, "sd_distance_in_mcse": None, "posterior_distance_null_p95": None,
                "posterior_distance_null_p99": None}

    def largest(stat: str, mcse: str) -> tuple[float, int]:
        z = [np.abs(getattr(a, stat)[v] - getattr(b, stat)[v]) / np.hypot(getattr(a, mcse)[v], getattr(b, mcse)[v])
             for v in a.mean.data_vars]
        return float(max(np.max(np.asarray(x)) for x in z)), sum(int(np.size(x)) for x in z)

    mean, n = largest("mean", "mcse_mean")
    return {"posterior_distance_in_mcse": mean, "sd_distance_in_mcse": largest("sd", "mcse_sd")[0],
            "posterior_distance_null_p95": null_quantile(0.95, n), "posterior_distance_null_p99": null_quantile(0.99, n)}


def null_quantile(p: float, n: int) -> float:
    """The ``p`` quantile of the largest of ``n`` independent :math:`|N(0, 1)|`."""
    return float(ndtri(0.5 + 0.5 * p ** (1.0 / n)))


def by_problem(rows: list[dict]) -> dict:
    """Per problem: the parameters, the exact ESS/s, each force's ratio to it, the fastest force, the largest
    ``posterior_distance_in_mcse`` of the surrogates, the exact row's (halves) and its null quantile."""
    out = {}
    for name in dict.fromkeys(r["problem"] for r in rows):
        mine = [r for r in rows if r["problem"] == name]
        ratios = {r["force"]: r["ess_per_s_over_exact"] for r in mine}
        exact = next(r for r in mine if r["force"] == "exact")
        out[name] = {"parameters": exact["parameters"], "exact_ess_per_s": exact["ess_per_s"],
                     "ess_per_s_over_exact": ratios, "fastest_force": max(ratios, key=ratios.get),
                     "max_posterior_distance_in_mcse": largest_distance([r for r in mine if r is not exact]),
                     "exact_halves_distance_in_mcse": exact["posterior_distance_in_mcse"],
                     "posterior_distance_null_p95": exact["posterior_distance_null_p95"]}
    return out


def largest_distance(rows: list[dict]) -> float | None:
    """The largest ``posterior_distance_in_mcse`` of ``rows`` (``None`` if none has one)."""
    return max((r["posterior_distance_in_mcse"] for r in rows if r["posterior_distance_in_mcse"] is not None),
               default=None)


def measured(row: dict, rows: list[dict]) -> bool:
    """Whether ``posterior_distance_in_mcse`` of a non-exact row means something: both its run and the exact one
    of its problem have a smallest bulk ESS of at least :data:`MIN_ESS` (the MCSE of a shorter run is itself
    too uncertain)."""
    exact = next(r for r in rows if r["problem"] == row["problem"] and r["force"] == "exact")
    return row["force"] != "exact" and min(row["min_ess_bulk"], exact["min_ess_bulk"]) >= MIN_ESS


def surrogates_target_the_posterior(rows: list[dict]) -> bool:
    """In every measured row (:func:`measured`), ``posterior_distance_in_mcse`` is at most the 99% quantile of its
    null distribution (the largest of as many independent |N(0, 1)| as parameters)."""
    return all(r["posterior_distance_in_mcse"] <= r["posterior_distance_null_p99"] for r in rows if measured(r, rows))


# --------------------------------------------------------------------------------------- the rate-matrix problems

RATE_MATRIX_RUN = """\
[problem]
kind = "rate_matrix"
states = {states}
times = [0.02, 0.05, 0.1]
counts_per_time = 2000
truth_seed = 1
frechet = "block"

[data]
synthetic = true
seed = 2

[prior]
mean = {prior_mean!r}
std = 1.0

[sampler]
kind = "hmc"
mass = "identity"
num_steps = 16
jitter = 0.2
force = "{force}"
num_chains = {num_chains}
num_warmup = {num_warmup}
num_draws = {num_draws}
seed = 17
step_size = 0.1
initial = "prior"
"""

#: Per mode, states -> (chains, warm-up iterations, draws) per chain (module docstring).
RATE_MATRIX_SIZES = {
    "quick": {4: (2, 40, 40), 14: (2, 40, 40)},
    "default": {4: (2, 1000, 1000), 14: (2, 500, 1000), 44: (2, 300, 400)},
    "full": {4: (4, 1000, 4000), 14: (4, 1000, 3000), 44: (4, 500, 1500)},
}


def rate_matrix_run_file(states: int, force: str, mode: str) -> str:
    chains, warmup, draws = RATE_MATRIX_SIZES[mode][states]
    return RATE_MATRIX_RUN.format(states=states, prior_mean=-math.log(states - 1), force=force, num_chains=chains,
                                  num_warmup=warmup, num_draws=draws)


def rate_matrix_rows(states: int, mode: str, comm: MPI.Comm) -> tuple[list[dict], str]:
    """The rows of the rate-matrix problem of ``states`` states, and its exact run file."""
    texts = {force: rate_matrix_run_file(states, force, mode) for force in RATE_FORCE_KINDS}
    configs = {force: parse_config(text, f"rate_matrix_d{states}.toml", comm) for force, text in texts.items()}
    exact = configs["exact"]
    settings = {**steps.sample_arguments(exact), "initial": steps.initial_points(exact, None)}
    rows = measure_forces(f"rate_matrix_d{states}", {force: c.problem.build for force, c in configs.items()},
                          dict.fromkeys(configs, lambda: steps.kernel(exact)), settings, comm)
    return rows, texts["exact"]


# --------------------------------------------------------------------------------------- the PDE problems

RUNS = Path(__file__).resolve().parents[1] / "runs"
#: The truth of ``runs/velocity.toml`` by wave vector (odd k2: its mirror image is -v).
VELOCITY_TRUTH = dict(zip(sine_modes(3), [1.0, 0.0, 0.4, 0.0, -0.3, 0.2, 0.0, 0.0, 0.1]))


def velocity_truth(modes: int) -> list[float]:
    """:data:`VELOCITY_TRUTH` in the coefficients of ``modes`` modes per direction (zero elsewhere)."""
    return [VELOCITY_TRUTH.get(k, 0.0) for k in sine_modes(modes)]


#: Per PDE problem and mode: the changes to its example run file (module docstring).
PDE_CHANGES = {
    "velocity": {
        "quick": {"problem": {"modes": 2, "cells": 8, "steps": 8, "observe_every": 2,
                              "true_coefficients": velocity_truth(2)}, "map": {"starts": 2},
                  "sampler": {"num_chains": 2, "num_warmup": 30, "num_draws": 40, "num_steps": 4}},
        "default": {"sampler": {"num_chains": 2, "num_warmup": 100, "num_draws": 250}},
        "full": {"problem": {"modes": 14, "cells": 32, "dt": 0.0125, "steps": 40, "observe_every": 8,
                             "true_coefficients": velocity_truth(14)},
                 "sampler": {"num_chains": 4, "num_warmup": 500, "num_draws": 2000}},
    },
    "potential": {
        "quick": {"problem": {"modes": 2, "cells": 6, "dt": 0.1, "steps": 10, "observe_every": 2, "sensors": 3},
                  "sampler": {"num_chains": 2, "num_warmup": 30, "num_draws": 40, "num_steps": 3}},
        "default": {"sampler": {"num_chains": 2, "num_warmup": 100, "num_draws": 200, "num_steps": 4}},
        "full": {"problem": {"modes": 8, "cells": 32, "dt": 0.025, "steps": 240, "observe_every": 24},
                 "sampler": {"num_chains": 4, "num_warmup": 500, "num_draws": 2000}},
    },
}
#: The trajectory gradients of each PDE problem ("pCN": no gradient, the prior-preconditioned random walk).
PDE_FORCES = {"velocity": ("exact", "first order", "laplace", "pCN"),
              "potential": ("exact", "secular", "first order", "laplace", "pCN")}
#: The sampler entries of HMC that pCN has not.
HMC_ONLY = ("force", "num_steps", "jitter", "mass")


def pde_run_file(problem: str, mode: str, force: str) -> str:
    """The example ``runs/<problem>.toml`` with the benchmark's changes and the trajectory gradient ``force``."""
    sections = tomllib.loads((RUNS / f"{problem}.toml").read_text(encoding="utf-8"))
    for section, changes in PDE_CHANGES[problem][mode].items():
        sections[section].update(changes)
    sections.pop("output", None)
    sampler = sections["sampler"]
    if force == "pCN":
        sampler["kind"] = "pcn"
        for key in HMC_ONLY:
            sampler.pop(key, None)
    else:
        sampler["force"] = force
    return toml_text(sections)


def pde_rows(problem: str, mode: str, comm: MPI.Comm) -> tuple[list[dict], dict]:
    """The rows of a PDE problem: the MAP point and the Laplace approximation once (as ``sensitivity-estimate``
    computes them), then every trajectory gradient from the same starts; and the problem's report."""
    configs = {force: parse_config(pde_run_file(problem, mode, force), RUNS / f"{problem}.toml", comm)
               for force in PDE_FORCES[problem]}
    exact = configs["exact"]
    map_record = steps.find_map_point(exact, comm)
    map_point = np.asarray(map_record["point"])
    laplace, mass = steps.laplace_step(exact, comm, map_point)
    builds = {force: steps.build_posterior(c, map_point) for force, c in configs.items()}
    kernels = {force: (lambda c=c: steps.kernel(c, mass)) for force, c in configs.items()}
    settings = {**steps.sample_arguments(exact), "initial": steps.initial_points(exact, map_record)}
    run = exact.problem
    fold = None
    if run.symmetries():  # the velocity problem: fold the mirror mode onto the MAP point's
        def fold(chains: Chains) -> Chains:
            return dataclasses.replace(chains, control=run.fold(chains.control, map_point))
    rows = measure_forces(problem, builds, kernels, settings, comm, fold)
    agreement = demo_agreement(exact, rows, comm) if problem == "potential" and mode == "default" else None
    report = {"agreement_with_the_map_demo": agreement,"run_file": pde_run_file(problem, mode, "exact"), "map": {k: v for k, v in map_record.items()
                                                                        if k not in ("point", "starts")},
              "map_start_values": [m["value"] for m in map_record["starts"]],
              "laplace": laplace, "folded_onto_one_mode": fold is not None}
    return rows, report


DEMO = RUNS.parent / "demos" / "potential_estimation.py"


def demo_fields() -> dict:
    """The fields of ``demos/potential_estimation.py --small`` on its 41 × 41 grid (rank 0: a subprocess)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "HYDRA", "MPIR_"))}
        subprocess.run([sys.executable, str(DEMO), "--small", "--output", tmp], check=True, env=env,
                       stdout=subprocess.DEVNULL, timeout=900)
        return read_h5(Path(tmp) / "potential_estimation.h5")["fields"]


def demo_agreement(config, rows: list[dict], comm: MPI.Comm) -> dict:
    r"""The posterior mean of :math:`V` modulo its mean (each trajectory gradient's) against the MAP estimate of
    ``demos/potential_estimation.py --small``, computed from the same data (a P1 potential with an :math:`H^1`
    Tikhonov term): relative :math:`L^2` distances on the demo's 41 × 41 grid between the P1 fields, and both
    errors to the (P1) truth (collective)."""
    demo = comm.bcast(run_on_root(comm, demo_fields), root=0)
    means = config.problem.field_at(comm, [r["mean"] for r in rows], np.asarray(demo["grid"], dtype=float))

    def centred(values):
        values = np.asarray(values, dtype=float).ravel()
        return values - values.mean()

    truth, estimate = centred(demo["truth"]), centred(demo["estimate"])
    scale = float(np.linalg.norm(truth))
    out = {"demo_map_error": float(np.linalg.norm(estimate - truth)) / scale, "grid_points": int(truth.size)}
    for r, values in zip(rows, means):
        mean = centred(values)
        out[r["force"]] = {"posterior_mean_vs_demo_map": float(np.linalg.norm(mean - estimate)) / scale,
                           "posterior_mean_error": float(np.linalg.norm(mean - truth)) / scale}
    return out


# --------------------------------------------------------------------------------------- the report


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_report(report: dict) -> None:
    print(f"\n  {'problem':<16} {'force':<12} {'ESS/s':>9} {'/exact':>7} {'accept':>7} {'cost/it':>8} "
          f"{'|z| mean':>8} {'null 99%':>8} {'min ESS':>8} {'R-hat':>6}")
    for r in report["rows"]:
        mark = "" if r["force"] == "exact" or measured(r, report["rows"]) else " (ESS too small to check)"
        print(f"  {r['problem']:<16} {r['force']:<12} {r['ess_per_s']:>9.3g} {r['ess_per_s_over_exact']:>7.3f} "
              f"{r['acceptance']:>7.3f} {r['cost_per_iteration_over_exact']:>8.3f} "
              f"{fmt(r['posterior_distance_in_mcse'], '.2f'):>8} {fmt(r['posterior_distance_null_p99'], '.2f'):>8} "
              f"{r['min_ess_bulk']:>8.0f} {r['max_rhat']:>6.3f}{mark}")
    print("  /exact: ess_per_s_over_exact; cost/it: cost_per_iteration_over_exact; |z| mean: "
          "posterior_distance_in_mcse\n  (the exact row's: between the halves of its chains); null 99%: its 99% "
          "quantile for as many independent parameters")
    print(f"\n  surrogates_target_the_posterior: {report['passed']['surrogates_target_the_posterior']} "
          f"({report['targets']['surrogates_target_the_posterior']})")
    print(f"\nwall time of the benchmark: {report['runtime_seconds']:.1f} s")


def figure(report: dict, path: Path) -> None:
    """ESS per second of every trajectory gradient over the exact one's, per problem (log scale; pale and hatched:
    a smallest bulk ESS below :data:`MIN_ESS`), as a PNG."""
    from sensitivity.io import new_figure

    problems = list(report["by_problem"])
    forces = list(dict.fromkeys(r["force"] for r in report["rows"]))
    fig = new_figure(figsize=(1.6 + 1.2 * len(problems), 3.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(forces)
    colours = {}
    for j, force in enumerate(forces):
        for i, p in enumerate(problems):
            row = next((r for r in report["rows"] if r["problem"] == p and r["force"] == force), None)
            if row is None:
                continue
            few = row["min_ess_bulk"] < MIN_ESS  # hatched: too few effective samples for a precise figure
            colour = colours.setdefault(force, f"C{j}")
            ax.bar(i + (j - (len(forces) - 1) / 2) * width, row["ess_per_s_over_exact"], width, color=colour,
                   alpha=0.35 if few else 1.0, hatch="///" if few else None, edgecolor=colour)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(problems)), [p.replace("rate_matrix_", "rates ") for p in problems], fontsize=8)
    ax.set_ylabel("ESS/s over the exact adjoint's")
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=f) for f, c in colours.items()]
    handles.append(Patch(facecolor="0.6", alpha=0.35, hatch="///", edgecolor="0.3",
                         label=f"min bulk ESS < {MIN_ESS:g}"))
    ax.legend(handles=handles, fontsize=7, ncols=2)
    fig.savefig(path, dpi=120)


PROBLEMS = ("rate_matrix", "velocity", "potential")
#: The entries of a problem's report besides those :func:`by_problem` computes from its rows.
EXTRA_KEYS = ("run_file", "map", "map_start_values", "laplace", "folded_onto_one_mode", "agreement_with_the_map_demo")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the report to this file (required)")
    parser.add_argument("--figure", type=Path, help="also draw ess_per_s_over_exact per problem into this PNG")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a few tens of draws per chain (for the tests)")
    mode.add_argument("--full", action="store_true", help="the papers' sizes, four chains and longer runs")
    parser.add_argument("--problems", nargs="+", choices=PROBLEMS, default=list(PROBLEMS),
                        help="the problems (default all)")
    parser.add_argument("--sizes", type=int, nargs="+", choices=sorted(RATE_MATRIX_SIZES["default"]),
                        help="rate-matrix states d (default 4 14 44; --quick: 4 14)")
    parser.add_argument("--update", action="store_true",
                        help="replace only the rows of the problems run now in the --json report (same mode)")
    args = parser.parse_args(argv)
    if args.json is None:
        parser.error("--json PATH is required")
    comm = MPI.COMM_WORLD
    mode_name = "quick" if args.quick else "full" if args.full else "default"
    args.sizes = args.sizes or sorted(RATE_MATRIX_SIZES[mode_name])
    if not set(args.sizes) <= set(RATE_MATRIX_SIZES[mode_name]):
        parser.error(f"--quick runs the sizes {sorted(RATE_MATRIX_SIZES[mode_name])} (d = 44 costs a minute)")
    start = time.perf_counter()
    rows, reports = [], {}
    if "rate_matrix" in args.problems:
        for states in args.sizes:
            found, text = rate_matrix_rows(states, mode_name, comm)
            rows, reports[f"rate_matrix_d{states}"] = rows + found, {"run_file": text}
    for problem in ("velocity", "potential"):
        if problem in args.problems:
            found, reports[problem] = pde_rows(problem, mode_name, comm)
            rows += found
    if comm.rank != 0:
        return 0
    for row in rows:
        row["invocation_started"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - time.perf_counter()
                                                                                     + start))
    if args.update and args.json.is_file():  # the other problems' rows and reports from the earlier run
        old = json.loads(args.json.read_text(encoding="utf-8"))
        if old["arguments"]["mode"] != mode_name:
            parser.error(f"--update: {args.json} is a {old['arguments']['mode']!r} report, not {mode_name!r}")
        now = {r["problem"] for r in rows}
        kept = [r for r in old["rows"] if r["problem"] not in now]
        rows = kept + rows
        reports = {name: {k: v for k, v in old["by_problem"][name].items() if k in EXTRA_KEYS}
                   for name in dict.fromkeys(r["problem"] for r in kept)} | reports
    problems = by_problem(rows)
    for name, extra in reports.items():
        problems[name].update(extra)
    report = {
        "rows": rows, "by_problem": problems,
        "max_posterior_distance_in_mcse": largest_distance([r for r in rows if r["force"] != "exact"]),
        "machine": _harness.machine_info(), "nprocs": comm.size,
        "arguments": {"mode": mode_name, "quick": args.quick, "full": args.full, "sizes": args.sizes,
                      "problems": args.problems, "update": args.update},
        "targets": dict(TARGETS),
    }
    checks = {"surrogates_target_the_posterior": surrogates_target_the_posterior(rows)}
    status = _harness.finish_report(report, {}, start, args.json, print_report, checks)
    if args.figure is not None:
        figure(report, args.figure)
        print(f"wrote {args.figure}")
    return status


if __name__ == "__main__":
    sys.exit(main())
