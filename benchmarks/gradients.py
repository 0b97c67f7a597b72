#!/usr/bin/env python
r"""Cost of exact (adjoint) and surrogate velocity gradients against the plain forward solve (docs/theory.md §2).

Usage::

    python benchmarks/gradients.py --json out.json [--n 316] [--steps 200] [--repeats 3] [--quick]

The problem is that of ``benchmarks/advection_diffusion.py`` (unit square, P1 θ,
1.0e5 dofs for n = 316, cellular flow through a P2 stream function, Crank–Nicolson,
MUMPS), observed by a 3 × 3 grid of point sensors every ``steps/10`` steps. Every
timed run builds its propagator (and factorization) itself. Measured in one run:

``gradient_over_forward`` (target ≤ 2.0)
    ``ReducedFunctional.value_and_derivative`` with the trajectory in memory over the
    forward solve.
``checkpointed_gradient_over_forward`` (target ≤ 3.5)
    The same with memory for at most 10 states: ``max_states=10`` and a
    ``checkpoint_dir``, i.e. multistage revolve with 8 snapshots and the two working
    vectors in RAM and further snapshots written to (and read back from) per-rank
    HDF5 files; the disk traffic is in the time.
``revolve_ram_gradient_over_forward`` (informational)
    The same limit without a disk: binomial revolve in RAM only, every missing state
    recomputed (584 forward steps in all for 200 steps and 8 snapshots, the
    Griewank–Walther minimum).
``surrogate_over_forward`` (target ≤ 2.0)
    ``FirstOrderSurrogate.value_and_derivative`` (one backward recursion, one assembly).
``surrogate_rss_over_forward`` (target ≤ 1.2)
    Peak resident memory of a process computing the surrogate gradient over that
    of a process computing the forward solve only (separate child processes,
    serial; the peak mark ``VmHWM`` is reset after the common mesh and form set-up,
    whose own peak is recorded separately); the absolute peaks of every mode,
    serial and under ``mpirun -n 2`` (per rank), are recorded too.
``adjoint_vs_tangent_rel_err`` (target ≤ 1e-10)
    :math:`|\langle\nabla F, v\rangle - dF\cdot\rho(v)| / |dF\cdot\rho(v)|` on this problem.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _harness  # first: one BLAS thread by default, then MPI before dolfinx/petsc4py (see _harness)
from sensitivity.fem import (
    FirstOrderSurrogate,
    ObservationMisfit,
    PointSensors,
    ReducedFunctional,
    ThetaScheme,
)

import numpy as np
from advection_diffusion import DT, Problem
from mpi4py import MPI

TARGETS = {
    "gradient_over_forward": 2.0,
    "checkpointed_gradient_over_forward": 3.5,
    "surrogate_over_forward": 2.0,
    "surrogate_rss_over_forward": 1.2,
    "adjoint_vs_tangent_rel_err": 1e-10,
}
MODES = ("forward", "gradient", "checkpointed", "revolve_ram", "surrogate")
CHECKPOINT_STATES = 10


class GradientProblem:
    """The benchmark problem with a sensor misfit observed 10 times."""

    def __init__(self, comm: MPI.Comm, n: int, nsteps: int):
        self.base = Problem(comm, n, k=1)
        self.nsteps = nsteps
        grid = np.linspace(0.2, 0.8, 3)
        self.sensors = PointSensors(self.base.V, [[x, y] for x in grid for y in grid])
        self.steps = np.unique(np.linspace(nsteps / 10, nsteps, 10).round().astype(int))
        rng = np.random.default_rng(1)
        self.data = rng.uniform(0.0, 0.2, (len(self.steps), self.sensors.num_sensors))

    def functional(self, scheme: ThetaScheme, **options) -> ReducedFunctional:
        misfit = ObservationMisfit(self.sensors, self.steps, self.data, noise=0.01)
        return ReducedFunctional(scheme, self.base.theta0, self.nsteps, [misfit], **options)

    def run(self, mode: str) -> dict:
        scheme = ThetaScheme(self.base.generator, DT)
        info: dict = {}
        if mode == "forward":
            scheme.run(self.base.theta0, self.nsteps).destroy()
        elif mode == "surrogate":
            FirstOrderSurrogate(self.functional(scheme)).value_and_derivative()
        else:
            with tempfile.TemporaryDirectory(prefix="gradients-") as tmp:
                options = {"checkpointed": {"max_states": CHECKPOINT_STATES, "checkpoint_dir": tmp},
                           "revolve_ram": {"max_states": CHECKPOINT_STATES}}.get(mode, {})
                F = self.functional(scheme, **options)
                F.value_and_derivative()
                info = dict(F.stats)
                F.destroy()
        scheme.destroy()
        return info


def _maxrss_mib() -> float:
    """Peak resident memory of this process since start or the last :func:`_reset_peak` (MiB)."""
    try:  # Linux: VmHWM, resettable through /proc/self/clear_refs
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _reset_peak() -> bool:
    """Reset the peak-RSS mark (Linux ``clear_refs`` 5) so that set-up does not hide the run's peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(mode: str, n: int, nsteps: int, out: Path) -> None:
    """Run one mode once in this process and record its peak memory (per rank)."""
    comm = MPI.COMM_WORLD
    problem = GradientProblem(comm, n, nsteps)
    setup_peak = _maxrss_mib()
    reset = _reset_peak()  # measure the run itself: mesh and form set-up are the same for every mode
    start = time.perf_counter()
    problem.run(mode)
    elapsed = time.perf_counter() - start
    peaks = comm.gather(_maxrss_mib(), root=0)
    setup = comm.gather(setup_peak, root=0)
    if comm.rank == 0:
        _harness.write_json_atomic(out, {"mode": mode, "nprocs": comm.size, "maxrss_mib_per_rank": peaks,
                                "setup_peak_mib_per_rank": setup, "peak_reset_after_setup": reset,
                                "seconds": elapsed})


def measure_memory(nprocs: int, n: int, nsteps: int, timeout: float) -> dict:
    """Peak RSS of each mode in its own process (``mpirun -n nprocs`` if nprocs > 1)."""
    results = {}
    launcher = []
    if nprocs > 1:
        mpirun = Path(sys.executable).parent / "mpirun"
        mpirun = str(mpirun) if mpirun.exists() else shutil.which("mpirun")
        if mpirun is None:
            return {"error": "mpirun not found"}
        launcher = [mpirun, "-n", str(nprocs)]
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            out = Path(tmp) / f"{mode}.json"
            cmd = [*launcher, sys.executable, str(Path(__file__).resolve()), "--child", mode, str(out),
                   "--n", str(n), "--steps", str(nsteps)]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            if result.returncode != 0 or not out.exists():
                results[mode] = {"error": f"exit {result.returncode}: {result.stderr[-2000:]}"}
            else:
                results[mode] = json.loads(out.read_text())
    return results


def measure(n: int, nsteps: int, repeats: int) -> dict:
    problem = GradientProblem(MPI.COMM_SELF, n, nsteps)
    short = GradientProblem(MPI.COMM_SELF, n, max(12, nsteps // 20))
    for mode in MODES:  # warm-up: JIT forms, MUMPS
        short.run(mode)
    stats = {}

    def timed(mode):
        return lambda: stats.__setitem__(mode, problem.run(mode))

    timings = _harness.interleaved({mode: timed(mode) for mode in MODES}, repeats, warmup=False)
    # Adjoint against tangent on the same problem.
    scheme = ThetaScheme(problem.base.generator, DT)
    F = problem.functional(scheme)
    _, grad = F.value_and_derivative()
    v = problem.base.directions[0]
    tangent = F.directional_derivative(v)
    adjoint = grad.x.petsc_vec.dot(v.x.petsc_vec)
    sur_grad = FirstOrderSurrogate(F).derivative()
    d = sur_grad.x.petsc_vec.copy()
    d.axpy(-1.0, grad.x.petsc_vec)
    g, s = grad.x.petsc_vec, sur_grad.x.petsc_vec
    cosine = g.dot(s) / (g.norm() * s.norm())
    accuracy = {
        "adjoint_vs_tangent_rel_err": abs(adjoint - tangent) / abs(tangent),
        "directional_derivative": tangent,
        "surrogate_rel_err": d.norm() / g.norm(),
        "surrogate_angle_deg": float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))),
    }
    scheme.destroy()
    return {"ndofs": problem.base.ndofs, "timings": timings, "stats": stats, "accuracy": accuracy,
            "observation_steps": problem.steps.tolist()}


def print_report(report: dict) -> None:
    t = report["serial"]["timings"]
    print(f"Gradients: {report['ndofs']} P1 dofs, {report['steps']} CN steps, 9 sensors at "
          f"{len(report['serial']['observation_steps'])} times, MUMPS (medians of {report['repeats']} repeats)")
    for mode in MODES:
        print(f"  {mode:<14} {t[mode]['median']:8.3f} s")
    for mode in ("checkpointed", "revolve_ram"):
        ck = report["serial"]["stats"].get(mode, {})
        print(f"  {mode} with {CHECKPOINT_STATES} states: {ck.get('recomputed_steps')} recomputed steps, "
              f"{ck.get('disk_writes', 0)} disk writes, peak {ck.get('max_states_in_memory')} states in RAM")
    a = report["serial"]["accuracy"]
    print(f"  surrogate vs exact gradient: rel. error {a['surrogate_rel_err']:.3f}, angle {a['surrogate_angle_deg']:.1f} deg")
    for label, mem in (("serial", report["memory_serial"]), ("mpirun -n 2", report["memory_mpi2"])):
        peaks = {m: (max(r["maxrss_mib_per_rank"]) if "maxrss_mib_per_rank" in r else float("nan"))
                 for m, r in mem.items()} if "error" not in mem else {}
        print(f"  peak RSS per rank, {label}: " + ", ".join(f"{m} {p:.0f} MiB" for m, p in peaks.items()))
    _harness.print_targets(report, width=36)
    print(f"\nwall time of the benchmark: {report['runtime_seconds']:.1f} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="where to write the JSON report (required)")
    parser.add_argument("--n", type=int, default=None, help="cells per side (default 316; 40 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="time steps (default 200; 20 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a small problem, for the test suite")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n = args.n if args.n is not None else (40 if args.quick else 316)
    steps = args.steps if args.steps is not None else (20 if args.quick else 200)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if n < 2 or steps < 10 or repeats < 1:
        parser.error(f"--n must be >= 2, --steps >= 10 and --repeats >= 1 (got {n}, {steps}, {repeats})")
    if args.child is not None:
        if args.child[0] not in MODES:
            parser.error(f"unknown mode {args.child[0]!r}")
        child(args.child[0], n, steps, Path(args.child[1]))
        return 0
    if args.json is None:
        parser.error("--json PATH is required")
    if MPI.COMM_WORLD.size > 1:
        parser.error("run this benchmark serially; it launches its own mpirun -n 2 measurement")
    start = time.perf_counter()
    serial = measure(n, steps, repeats)
    timeout = 120 + 30 * serial["timings"]["checkpointed"]["median"]
    memory_serial = measure_memory(1, n, steps, timeout)
    memory_mpi2 = measure_memory(2, n, steps, timeout)
    t = serial["timings"]

    def peak(mode):
        r = memory_serial.get(mode, {})
        return max(r["maxrss_mib_per_rank"]) if "maxrss_mib_per_rank" in r else float("nan")

    report = {
        "benchmark": "gradients",
        "quick": bool(args.quick),
        "ndofs": serial["ndofs"],
        "steps": steps,
        "repeats": repeats,
        "gradient_over_forward": _harness.ratio(t, "gradient", "forward"),
        "checkpointed_gradient_over_forward": _harness.ratio(t, "checkpointed", "forward"),
        "revolve_ram_gradient_over_forward": _harness.ratio(t, "revolve_ram", "forward"),
        "surrogate_over_forward": _harness.ratio(t, "surrogate", "forward"),
        "surrogate_rss_over_forward": peak("surrogate") / peak("forward"),
        "adjoint_vs_tangent_rel_err": serial["accuracy"]["adjoint_vs_tangent_rel_err"],
        "targets": dict(TARGETS),
        "serial": serial,
        "memory_serial": memory_serial,
        "memory_mpi2": memory_mpi2,
        "machine": _harness.machine_info(),
    }
    return _harness.finish_report(report, TARGETS, start, args.json, print_report)


if __name__ == "__main__":
    sys.exit(main())
