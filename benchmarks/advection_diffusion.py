#!/usr/bin/env python
r"""Speed of the advection–diffusion propagator and tangent (docs/theory.md §2), as ratios measured in one run.

Usage::

    python benchmarks/advection_diffusion.py --json out.json [--n 316] [--steps 200] [--repeats 3] [--quick]

Problem: the unit square with an ``n × n`` triangle mesh and P1 θ (n = 316 gives
1.0e5 dofs), κ = 1e-3, a cellular flow :math:`u = \mathrm{curl}\,\psi`,
:math:`\psi = \sin(\pi x)\sin(\pi y)/\pi` (P2 stream function, tangential on the
walls, so the walls are no-flux), a Gaussian blob released at (0.3, 0.5),
Crank–Nicolson with ``dt = 1e-3`` and the default MUMPS LU. Every timed run
includes building the operators and the factorization.

Measured (medians of interleaved repeats after a short warm-up):

``forward_over_petsc_loop`` (target ≤ 1.1)
    :class:`~sensitivity.fem.ThetaScheme` ``run`` over a minimal hand-written
    petsc4py loop (``L = M + dt/2 A``, ``R = M − dt/2 A``, MUMPS KSP,
    ``R.mult`` + ``KSP.solve`` per step) on the same matrices.
``tangent_over_forward`` (target ≤ 1.3)
    :class:`~sensitivity.fem.Tangent` with one stream-function direction
    (forward included) over the forward alone.
``tangent_k_over_forward`` (k = 8; target ≤ 4 = 8 × 0.5)
    Eight directions over the forward alone.
``mpi2_speedup`` (informational)
    The serial forward time over the forward time of the same problem under
    ``mpirun -n 2`` (launched by this script, in the same run).

Checks recorded alongside: the forward and the hand-written loop agree, and the
first direction's ρ from the 8-direction run equals the 1-direction ρ (the shared
block solves do not change the result). Only ratios are targets; wall times are
recorded, never asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _harness  # first: one BLAS thread by default, then MPI before dolfinx/petsc4py (see _harness)
from sensitivity.fem import AdvectionDiffusion, StreamFunction, Tangent, ThetaScheme
from sensitivity.fem.backend import DEFAULT_LU_OPTIONS, create_ksp

import numpy as np
from dolfinx import fem, mesh
from mpi4py import MPI
from petsc4py import PETSc

TARGETS = {
    "forward_over_petsc_loop": 1.1,
    "tangent_over_forward": 1.3,
    "tangent_k_over_forward": 4.0,
}
K_DIRECTIONS = 8
KAPPA = 1e-3
DT = 1e-3


# --------------------------------------------------------------------------- problem


class Problem:
    """The benchmark problem on ``comm``: generator, initial state and K directions."""

    def __init__(self, comm: MPI.Comm, n: int, k: int = K_DIRECTIONS):
        msh = mesh.create_unit_square(comm, n, n)
        self.V = fem.functionspace(msh, ("Lagrange", 1))
        S = fem.functionspace(msh, ("Lagrange", 2))
        psi = fem.Function(S)
        psi.interpolate(lambda x: np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]) / np.pi)
        self.generator = AdvectionDiffusion(self.V, StreamFunction(psi), KAPPA)
        self.theta0 = fem.Function(self.V)
        self.theta0.interpolate(lambda x: np.exp(-50 * ((x[0] - 0.3) ** 2 + (x[1] - 0.5) ** 2)))
        self.directions = []
        for j in range(k):  # smooth, distinct stream-function modes
            v = fem.Function(S)
            a, b = 1 + j % 3, 1 + j // 3
            v.interpolate(lambda x, a=a, b=b: np.sin(a * np.pi * x[0]) * np.sin(b * np.pi * x[1]))
            self.directions.append(v)

    @property
    def ndofs(self) -> int:
        return self.V.dofmap.index_map.size_global

    # ----------------------------------------------------------------- timed runs

    def petsc_loop(self, nsteps: int) -> PETSc.Vec:
        """The reference: Crank–Nicolson written directly with petsc4py, same matrices and solver."""
        M, A = self.generator.M, self.generator.A
        L = M.duplicate(copy=True)
        L.axpy(0.5 * DT, A)
        R = M.duplicate(copy=True)
        R.axpy(-0.5 * DT, A)
        ksp = create_ksp(L, DEFAULT_LU_OPTIONS, "reference")
        x, y, b = L.createVecRight(), L.createVecRight(), L.createVecRight()
        self.theta0.x.petsc_vec.copy(x)
        for _ in range(nsteps):
            R.mult(x, b)
            ksp.solve(b, y)
            x, y = y, x
        for obj in (ksp, L, R, y, b):
            obj.destroy()
        return x

    def forward(self, nsteps: int) -> PETSc.Vec:
        scheme = ThetaScheme(self.generator, DT)
        out = scheme.run(self.theta0, nsteps)
        scheme.destroy()
        return out

    def tangent(self, nsteps: int, k: int) -> list[PETSc.Vec]:
        scheme = ThetaScheme(self.generator, DT)
        tangent = Tangent(scheme, self.directions[:k])
        out, rhos = tangent.run(self.theta0, nsteps)
        for obj in (tangent, scheme, out):
            obj.destroy()
        return rhos


def _rel_diff(a: PETSc.Vec, b: PETSc.Vec) -> float:
    d = a.duplicate()
    d.waxpy(-1.0, b, a)
    value = d.norm() / b.norm()
    d.destroy()
    return value


def _time_forward(problem: Problem, nsteps: int, repeats: int) -> dict:
    problem.forward(2)  # warm-up (JIT caches, MUMPS libraries)
    return _harness.interleaved({"forward": lambda: problem.forward(nsteps).destroy()}, repeats, warmup=False)


# --------------------------------------------------------------------------- serial parent / MPI child


def measure(n: int, nsteps: int, repeats: int) -> dict:
    """All serial measurements (one process)."""
    problem = Problem(MPI.COMM_SELF, n)
    for f in (problem.petsc_loop, problem.forward):
        f(2).destroy()
    for k in (1, K_DIRECTIONS):
        for r in problem.tangent(2, k):
            r.destroy()
    timings = _harness.interleaved(
        {
            "petsc_loop": lambda: problem.petsc_loop(nsteps).destroy(),
            "forward": lambda: problem.forward(nsteps).destroy(),
            "tangent_1": lambda: [r.destroy() for r in problem.tangent(nsteps, 1)],
            f"tangent_{K_DIRECTIONS}": lambda: [r.destroy() for r in problem.tangent(nsteps, K_DIRECTIONS)],
        },
        repeats,
        warmup=False,
    )
    ours, reference = problem.forward(nsteps), problem.petsc_loop(nsteps)
    (rho1,), rhos = problem.tangent(nsteps, 1), problem.tangent(nsteps, K_DIRECTIONS)
    checks = {
        "forward_vs_petsc_loop_rel_diff": _rel_diff(ours, reference),
        "tangent_1_vs_tangent_k_first_rel_diff": _rel_diff(rhos[0], rho1),
        "rho_norms": [r.norm() for r in rhos],
    }
    return {"ndofs": problem.ndofs, "timings": timings, "checks": checks}


def child(n: int, nsteps: int, repeats: int, out: Path) -> None:
    """Forward timings on ``COMM_WORLD`` (run under mpirun by :func:`measure_mpi`)."""
    comm = MPI.COMM_WORLD
    problem = Problem(comm, n, k=0)
    timings = _time_forward(problem, nsteps, repeats)
    if comm.rank == 0:
        _harness.write_json_atomic(out, _harness.plain({"nprocs": comm.size, "timings": timings}))


def measure_mpi(nprocs: int, n: int, nsteps: int, repeats: int, timeout: float) -> dict:
    """Launch this script under ``mpirun -n nprocs`` in child mode and read its timings."""
    mpirun = Path(sys.executable).parent / "mpirun"
    mpirun = str(mpirun) if mpirun.exists() else shutil.which("mpirun")
    if mpirun is None:
        return {"error": "mpirun not found"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "child.json"
        cmd = [mpirun, "-n", str(nprocs), sys.executable, str(Path(__file__).resolve()), "--child", str(out),
               "--n", str(n), "--steps", str(nsteps), "--repeats", str(repeats)]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0 or not out.exists():
            return {"error": f"exit {result.returncode}: {result.stderr[-2000:]}"}
        return json.loads(out.read_text())


# --------------------------------------------------------------------------- report


def print_report(report: dict) -> None:
    t = report["serial"]["timings"]
    print(f"Advection–diffusion, {report['ndofs']} P1 dofs, {report['steps']} Crank–Nicolson steps, MUMPS LU "
          f"(medians of {report['repeats']} interleaved repeats; setup and factorization included)")
    rows = [("hand-written petsc4py loop", "petsc_loop"), ("ThetaScheme.run (forward)", "forward"),
            ("Tangent, 1 direction", "tangent_1"), (f"Tangent, {K_DIRECTIONS} directions", f"tangent_{K_DIRECTIONS}")]
    for label, key in rows:
        print(f"  {label:<32} {t[key]['median']:8.3f} s")
    mpi = report["mpi2"]
    if "timings" in mpi:
        print(f"  {'forward, mpirun -n 2':<32} {mpi['timings']['forward']['median']:8.3f} s")
    else:
        print(f"  forward, mpirun -n 2: {mpi['error']}")
    c = report["serial"]["checks"]
    print(f"  forward vs hand-written loop: rel. diff {c['forward_vs_petsc_loop_rel_diff']:.1e}; "
          f"rho_1 (k=1) vs rho_1 (k={K_DIRECTIONS}): rel. diff {c['tangent_1_vs_tangent_k_first_rel_diff']:.1e}")
    _harness.print_targets(report, width=26)
    print(f"  {'mpi2_speedup':<26} {report['mpi2_speedup']:>10.3g} {'(info)':>10}")
    print(f"\nwall time of the benchmark: {report['runtime_seconds']:.1f} s on {report['machine']['cpu_count']} CPUs")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="where to write the JSON report (required)")
    parser.add_argument("--n", type=int, default=None, help="cells per side (default 316: 1.0e5 dofs; 40 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="time steps (default 200; 10 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a small problem (seconds), for the test suite")
    parser.add_argument("--no-mpi", action="store_true", help="skip the mpirun -n 2 measurement")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n = args.n if args.n is not None else (40 if args.quick else 316)
    steps = args.steps if args.steps is not None else (10 if args.quick else 200)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if n < 2 or steps < 1 or repeats < 1:
        parser.error(f"--n must be >= 2 and --steps, --repeats >= 1 (got {n}, {steps}, {repeats})")
    if args.child is not None:
        child(n, steps, repeats, args.child)
        return 0
    if args.json is None:
        parser.error("--json PATH is required")
    if MPI.COMM_WORLD.size > 1:
        parser.error("run this benchmark serially; it launches its own mpirun -n 2 measurement")

    start = time.perf_counter()
    serial = measure(n, steps, repeats)
    timeout = 60 + 20 * serial["timings"]["forward"]["median"] * (repeats + 1)
    mpi2 = {"skipped": True} if args.no_mpi else measure_mpi(2, n, steps, repeats, timeout)
    t = serial["timings"]
    report = {
        "benchmark": "advection_diffusion",
        "quick": bool(args.quick),
        "ndofs": serial["ndofs"],
        "steps": steps,
        "repeats": repeats,
        "k": K_DIRECTIONS,
        "forward_over_petsc_loop": _harness.ratio(t, "forward", "petsc_loop"),
        "tangent_over_forward": _harness.ratio(t, "tangent_1", "forward"),
        "tangent_k_over_forward": _harness.ratio(t, f"tangent_{K_DIRECTIONS}", "forward"),
        "mpi2_speedup": (t["forward"]["median"] / mpi2["timings"]["forward"]["median"]
                         if "timings" in mpi2 else None),
        "targets": dict(TARGETS),
        "serial": serial,
        "mpi2": mpi2,
        "machine": _harness.machine_info(),
    }
    return _harness.finish_report(report, TARGETS, start, args.json, print_report)


if __name__ == "__main__":
    sys.exit(main())
