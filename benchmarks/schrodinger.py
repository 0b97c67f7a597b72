#!/usr/bin/env python
r"""Schrödinger: conservation of Crank–Nicolson, and the cost and accuracy of sensitivities (docs/theory.md §3).

Usage::

    python benchmarks/schrodinger.py --json out.json [--n 64] [--steps 1000] [--repeats 3]
                                     [--drift-steps 1000] [--quick]
    mpirun -n 2 python benchmarks/schrodinger.py --json out.json     # the same, distributed

Problem: :math:`i\psi_t = -\tfrac12\Delta\psi + V\psi` on the box :math:`[-5, 5]^2` with
:math:`\psi = 0` on the walls, an ``n × n`` triangle mesh, P1 :math:`\psi` (real split, two
components) and the anisotropic harmonic well :math:`V = \tfrac12(x^2 + 2y^2)` in P1
(frequencies 1 and √2: the low spectrum is not degenerate), Crank–Nicolson with
``dt = 0.01`` and the default MUMPS LU. All computations are collective on ``COMM_WORLD``;
rank 0 prints and writes the report.

``norm_drift`` (target ≤ 1e-12), ``energy_drift`` (informational)
    :math:`\max_{n\le N}|\,\|\psi_n\|_M - \|\psi_0\|_M|` and
    :math:`\max_{n\le N}|E_n - E_0|/|E_0|` of a Gaussian packet (centre (−1.5, 0), width 0.8,
    momentum (0, 1.5)) moving in the well for ``--drift-steps`` steps (default 1000, also with
    ``--quick``: t = 10, more than one period of both oscillators), checked at every step.
    Measured separately from the timings.

Timed (medians of interleaved repeats after a warm-up; every run builds its own
``ThetaScheme``, i.e. its factorization, and functional). The functional: 9 density sensors
:math:`|\psi(x_k)|^2` on a 3 × 3 grid of :math:`[-1.5, 1.5]^2`, observed at 10 equally
spaced steps up to ``--steps`` (t = 1, 2, …, 10 by default); the initial state :math:`\psi_0` is a superposition of the 4 lowest
eigenstates (so that the secular surrogate is used where it is valid; the cost of the exact
runs does not depend on :math:`\psi_0`); the direction :math:`v` is a smooth P1 bump.

``tangent_over_forward`` (target ≤ 2.5)
    :class:`~sensitivity.fem.Tangent` with one direction (forward and tangent solved as one
    two-column block per step) over the forward run ``F.value()``.
``gradient_over_forward`` (target ≤ 3)
    ``ReducedFunctional.value_and_derivative`` (trajectory in memory) over ``F.value()``.
``secular_over_forward``, ``first_order_over_forward`` (informational)
    ``SecularSurrogate(F, 4).value_and_derivative()`` (its SLEPc eigen-solve included) and
    ``FirstOrderSurrogate(F).value_and_derivative()`` over ``F.value()``.
``adjoint_vs_tangent`` (target ≤ 1e-10)
    :math:`|\langle\nabla F, v\rangle - dF\cdot v| / |dF\cdot v|`, ``dF·v`` by the tangent.

Recorded with the accuracy (informational): the relative error and angle of the secular and
first-order surrogate gradients against the exact one. With observations from t = 1 to 10 (default) this
is not the long-time regime the secular surrogate is made for (its directional derivatives
approach the exact ones only when late observations dominate), so they are not targets.

Surrogate errors (``surrogate_errors``): :func:`~sensitivity.fem.surrogate_state_errors` along
one trajectory of the same :math:`\psi_0` and :math:`v`, the relative :math:`M`-norm errors of
the secular (:math:`t_nS^n\mathcal P(J)\psi_0`) and first-order (:math:`t_nS^nJ\psi_0`)
surrogates of :math:`\rho_n = \partial\psi_n[v]` at t = 0.5, 2, 8, 32: the secular error is
bounded, so its relative error falls like 1/t; the first-order one does not fall.

Only the accuracy numbers are deterministic; wall times are recorded, never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import _harness  # first: one BLAS thread by default, then MPI before dolfinx/petsc4py (see _harness)
from sensitivity.fem import (
    DensitySensors,
    Eigenbasis,
    FirstOrderSurrogate,
    ObservationMisfit,
    PotentialField,
    ReducedFunctional,
    Schrodinger,
    SecularSurrogate,
    Tangent,
    ThetaScheme,
    gaussian_packet,
    schrodinger_space,
    surrogate_state_errors,
)

import numpy as np
from dolfinx import fem, mesh
from mpi4py import MPI

TARGETS = {
    "norm_drift": 1e-12,
    "tangent_over_forward": 2.5,
    "gradient_over_forward": 3.0,
    "adjoint_vs_tangent": 1e-10,
}
INFORMATIONAL = ("energy_drift", "secular_over_forward", "first_order_over_forward")
MODES = ("forward", "tangent", "gradient", "secular", "first_order")
HALF = 5.0  # the box [-HALF, HALF]^2
DT = 0.01
NEV = 4  # eigenstates in psi0 and in the secular surrogate
COEFFS = np.array([0.6, 0.5j, 0.4 + 0.3j, 0.2])  # psi0 in the eigenbasis (normalized below)
ERROR_TIMES = (0.5, 2.0, 8.0, 32.0)
DRIFT_STEPS = 1000


class Problem:
    """The well, the moving packet, the eigen-superposition, the direction and the misfit."""

    def __init__(self, comm: MPI.Comm, n: int, nsteps: int):
        msh = mesh.create_rectangle(comm, [[-HALF, -HALF], [HALF, HALF]], [n, n])
        self.W = schrodinger_space(msh, 1)
        S = fem.functionspace(msh, ("Lagrange", 1))
        V = fem.Function(S, name="V")
        V.interpolate(lambda x: 0.5 * (x[0] ** 2 + 2.0 * x[1] ** 2))
        self.prob = Schrodinger(self.W, PotentialField(V))
        self.packet = gaussian_packet(self.prob, [-1.5, 0.0], 0.8, [0.0, 1.5])
        self.direction = fem.Function(S, name="v")
        self.direction.interpolate(
            lambda x: np.exp(-0.5 * ((x[0] - 0.4) ** 2 + (x[1] + 0.3) ** 2)) + 0.1 * x[0] - 0.05 * x[1] ** 2)
        basis = Eigenbasis(self.prob, NEV)
        self.energies = basis.energies.copy()
        c = np.zeros(basis.size, dtype=complex)
        c[:NEV] = COEFFS / np.linalg.norm(COEFFS)
        self.psi0 = fem.Function(self.W, name="psi0")
        basis.synthesize(c, self.psi0.x.petsc_vec)
        self.psi0.x.scatter_forward()
        basis.destroy()
        self.nsteps = nsteps
        grid = np.linspace(-1.5, 1.5, 3)
        self.sensors = DensitySensors(self.W, [[x, y] for x in grid for y in grid])
        self.obs_steps = np.unique(np.linspace(nsteps / 10, nsteps, 10).round().astype(int))
        rng = np.random.default_rng(3)  # the same data on every rank
        self.data = rng.uniform(0.0, 0.2, (len(self.obs_steps), self.sensors.num_sensors))

    @property
    def ndofs(self) -> int:
        """Global dofs of the real-split state (2 per node)."""
        return self.W.dofmap.index_map.size_global * self.W.dofmap.index_map_bs

    def functional(self, scheme: ThetaScheme) -> ReducedFunctional:
        misfit = ObservationMisfit(self.sensors, self.obs_steps, self.data, noise=0.05)
        return ReducedFunctional(scheme, self.psi0, self.nsteps, [misfit])

    # ----------------------------------------------------------------- timed runs

    def run(self, mode: str) -> None:
        """One timed run of ``mode``, from building the scheme (and factorization) on (collective)."""
        scheme = ThetaScheme(self.prob, DT)
        if mode == "tangent":
            tangent = Tangent(scheme, [self.direction])
            wN, rhos = tangent.run(self.psi0, self.nsteps)
            for obj in (tangent, wN, *rhos):
                obj.destroy()
        else:
            F = self.functional(scheme)
            if mode == "forward":
                F.value()
            elif mode == "gradient":
                F.value_and_derivative()
            elif mode == "secular":
                sec = SecularSurrogate(F, NEV)
                sec.value_and_derivative()
                sec.destroy()
            elif mode == "first_order":
                FirstOrderSurrogate(F).value_and_derivative()
            else:  # pragma: no cover - the modes are fixed
                raise ValueError(mode)
            F.destroy()
        scheme.destroy()


def conservation(problem: Problem, nsteps: int) -> dict:
    """Norm and energy drift of Crank–Nicolson for the moving packet (collective)."""
    prob = problem.prob
    norms, energies = [], []
    scheme = ThetaScheme(prob, DT)
    wN = scheme.run(problem.packet, nsteps, callback=lambda n, w: (norms.append(prob.norm(w)),
                                                                     energies.append(prob.energy(w))))
    d = wN.copy()
    d.axpy(-1.0, problem.packet.x.petsc_vec)
    moved = prob.norm(d)
    for obj in (d, wN, scheme):
        obj.destroy()
    norms, energies = np.asarray(norms), np.asarray(energies)
    return {
        "steps": nsteps,
        "norm0": norms[0],
        "energy0": energies[0],
        "norm_drift": float(np.max(np.abs(norms - norms[0]))),
        "energy_drift": float(np.max(np.abs(energies - energies[0])) / abs(energies[0])),
        "distance_moved": moved,  # ‖ψ_N − ψ_0‖_M: the packet really moved
    }


def accuracy(problem: Problem) -> dict:
    """Adjoint against tangent, and the surrogate gradients against the exact one (collective)."""
    scheme = ThetaScheme(problem.prob, DT)
    F = problem.functional(scheme)
    value, grad = F.value_and_derivative()
    v = problem.direction
    tangent = F.directional_derivative(v)
    adjoint = grad.x.petsc_vec.dot(v.x.petsc_vec)
    g = grad.x.petsc_vec
    out = {"value": value, "directional_derivative": tangent,
           "adjoint_vs_tangent": abs(adjoint - tangent) / abs(tangent)}
    sec = SecularSurrogate(F, NEV)
    surrogates = {"secular": sec.derivative(), "first_order": FirstOrderSurrogate(F).derivative()}
    out["secular_stats"] = {k: sec.stats[k] for k in ("eigenpairs", "outside_fraction", "eigen_residual")}
    for name, s_grad in surrogates.items():
        s = s_grad.x.petsc_vec
        d = s.copy()
        d.axpy(-1.0, g)
        cosine = g.dot(s) / (g.norm() * s.norm())
        out[f"{name}_gradient_rel_err"] = d.norm() / g.norm()
        out[f"{name}_gradient_angle_deg"] = float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))
        d.destroy()
    sec.destroy()
    F.destroy()
    scheme.destroy()
    return out


def surrogate_errors(problem: Problem, times) -> dict:
    """Relative errors of the secular and first-order state-derivative surrogates versus t (collective)."""
    steps = [int(round(t / DT)) for t in times]
    scheme = ThetaScheme(problem.prob, DT)
    err = surrogate_state_errors(scheme, problem.psi0, problem.direction, steps, NEV)
    scheme.destroy()
    return {
        "times": err.times.tolist(),
        "steps": steps,
        "exact_norm": err.exact_norm.tolist(),
        "secular_error": err.secular_error.tolist(),
        "first_order_error": err.first_order_error.tolist(),
        "secular_relative": err.secular_relative.tolist(),
        "first_order_relative": err.first_order_relative.tolist(),
        "outside_fraction": err.outside_fraction,
    }


def measure(comm: MPI.Comm, n: int, nsteps: int, repeats: int, drift_steps: int) -> dict:
    problem = Problem(comm, n, nsteps)
    result = {"ndofs": problem.ndofs, "nodes": problem.W.dofmap.index_map.size_global,
              "energies": problem.energies.tolist(), "observation_steps": problem.obs_steps.tolist()}
    result["conservation"] = conservation(problem, drift_steps)
    short = Problem(comm, n, 10)
    for mode in MODES:  # warm-up: JIT forms, MUMPS, SLEPc
        short.run(mode)

    def timed(mode):
        def f():
            problem.run(mode)
            comm.Barrier()  # the time of the slowest rank
        return f

    comm.Barrier()
    result["timings"] = _harness.interleaved({mode: timed(mode) for mode in MODES}, repeats, warmup=False)
    result["accuracy"] = accuracy(problem)
    result["surrogate_errors"] = surrogate_errors(problem, ERROR_TIMES)
    return result


# --------------------------------------------------------------------------- report


def print_report(report: dict) -> None:
    m = report["measured"]
    t = m["timings"]
    c = m["conservation"]
    print(f"Schrödinger, harmonic well on [-{HALF:g}, {HALF:g}]², {m['nodes']} P1 nodes ({report['ndofs']} real dofs), "
          f"Crank–Nicolson dt = {DT:g}, {report['steps']} steps, MUMPS, {report['nprocs']} process(es) "
          f"(medians of {report['repeats']} interleaved repeats; setup and factorization included)")
    print(f"  moving packet: max |‖ψ_n‖ − ‖ψ_0‖| = {c['norm_drift']:.2e}, max |E_n − E_0|/|E_0| = "
          f"{c['energy_drift']:.2e} over {c['steps']} steps (‖ψ_N − ψ_0‖ = {c['distance_moved']:.2f})")
    labels = {"forward": "forward, F.value()", "tangent": "Tangent, 1 direction",
              "gradient": "adjoint value_and_derivative", "secular": f"SecularSurrogate (nev {NEV}, eigensolve)",
              "first_order": "FirstOrderSurrogate"}
    for mode in MODES:
        print(f"  {labels[mode]:<36} {t[mode]['median']:8.3f} s")
    a = m["accuracy"]
    print(f"  surrogate gradients vs exact: secular rel. error {a['secular_gradient_rel_err']:.3f} "
          f"(angle {a['secular_gradient_angle_deg']:.1f} deg), first order {a['first_order_gradient_rel_err']:.3f} "
          f"(angle {a['first_order_gradient_angle_deg']:.1f} deg)")
    e = m["surrogate_errors"]
    print(f"\n  state-derivative surrogate errors, ψ0 = {NEV} eigenstates (outside fraction "
          f"{e['outside_fraction']:.1e}):")
    print(f"  {'t':>8} {'‖ρ‖_M':>10} {'secular rel.':>14} {'first-order rel.':>18}")
    for row in zip(e["times"], e["exact_norm"], e["secular_relative"], e["first_order_relative"]):
        print(f"  {row[0]:>8g} {row[1]:>10.3g} {row[2]:>14.3g} {row[3]:>18.3g}")
    _harness.print_targets(report, width=26)
    for key in INFORMATIONAL:
        print(f"  {key:<26} {report[key]:>10.3g} {'(info)':>10}")
    print(f"\nwall time of the benchmark: {report['runtime_seconds']:.1f} s on {report['machine']['cpu_count']} CPUs")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="where to write the JSON report (required)")
    parser.add_argument("--n", type=int, default=None, help="cells per side (default 64; 16 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="time steps of the timed runs (default 1000; 100 with --quick)")
    parser.add_argument("--drift-steps", type=int, default=DRIFT_STEPS,
                        help=f"time steps of the norm/energy drift run (default {DRIFT_STEPS}, also with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a small problem (seconds), for the test suite")
    args = parser.parse_args(argv)
    n = args.n if args.n is not None else (16 if args.quick else 64)
    steps = args.steps if args.steps is not None else (100 if args.quick else 1000)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if n < 4 or steps < 10 or repeats < 1 or args.drift_steps < 1:
        parser.error(f"--n must be >= 4, --steps >= 10, --repeats >= 1 and --drift-steps >= 1 "
                     f"(got {n}, {steps}, {repeats}, {args.drift_steps})")
    if args.json is None:
        parser.error("--json PATH is required")
    comm = MPI.COMM_WORLD

    load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    measured = measure(comm, n, steps, repeats, args.drift_steps)
    if comm.rank != 0:
        return 0
    t = measured["timings"]
    e = measured["surrogate_errors"]
    report = {
        "benchmark": "schrodinger",
        "quick": bool(args.quick),
        "nprocs": comm.size,
        "n": n,
        "ndofs": measured["ndofs"],
        "steps": steps,
        "drift_steps": args.drift_steps,
        "dt": DT,
        "repeats": repeats,
        "nev": NEV,
        "norm_drift": measured["conservation"]["norm_drift"],
        "energy_drift": measured["conservation"]["energy_drift"],
        "tangent_over_forward": _harness.ratio(t, "tangent", "forward"),
        "gradient_over_forward": _harness.ratio(t, "gradient", "forward"),
        "secular_over_forward": _harness.ratio(t, "secular", "forward"),
        "first_order_over_forward": _harness.ratio(t, "first_order", "forward"),
        "adjoint_vs_tangent": measured["accuracy"]["adjoint_vs_tangent"],
        "secular_relative_error": dict(zip((format(x, "g") for x in e["times"]), e["secular_relative"])),
        "first_order_relative_error": dict(zip((format(x, "g") for x in e["times"]), e["first_order_relative"])),
        "targets": dict(TARGETS),
        "measured": measured,
        "machine": {**_harness.machine_info(), "load_average_at_start": load_at_start},
    }
    return _harness.finish_report(report, TARGETS, start, args.json, print_report)


if __name__ == "__main__":
    sys.exit(main())
