# ---
# jupytext:
#   text_representation:
#     extension: .py
#     format_name: light
# ---

"""Surrogate gradients against the exact adjoint gradient: accuracy and cost over final time and Péclet number (docs/theory.md §1–2).

Run as ``mpirun -n P python demos/surrogate_vs_adjoint.py [--n N] [--final-times T ...] [--peclet PE ...] [--output DIR]``.
"""

# # How good is the cheap surrogate t·S_u(t)·J?
#
# The seed note asks how the surrogate trajectory method compares with an adjoint
# method. Here both compute the gradient of the same objective with respect to every
# degree of freedom of the velocity's stream function, on the same discretization:
#
# * **adjoint**: the exact gradient of the discrete objective (one transposed solve
#   per step, the forward trajectory in memory);
# * **order K** surrogates (K = 0 is the first-order :math:`t\,S^n J\theta_0`, seed 1.6;
#   higher K add the commutator series of docs/theory.md §1), each one backward recursion of
#   K + 1 columns and K + 1 assemblies, no stored trajectory;
# * **asymptotic**: the long-time form :math:`t\Pi J\Pi - \Pi JQ^\# - Q^\#J\Pi` with the
#   group inverse (docs/theory.md §1, the corrected seed Theorem 2.1): no backward sweep at all.
#
# The flow is the cellular flow :math:`\psi = U\sin(\pi x)\sin(\pi y)/\pi` on the unit
# square (no-flux walls, so the asymptotic form applies), a tracer blob starts at
# (0.3, 0.5), and 9 sensors observe :math:`\theta` at :math:`T/2` and :math:`T`; the data come
# from a perturbed flow. The Péclet number :math:`Pe = UL/\kappa` (:math:`U = L = 1`) sets
# :math:`\kappa`. For each final time and Péclet number the program prints the relative
# error :math:`\|g_s - g\|/\|g\|`, the angle between :math:`g_s` and the exact :math:`g`
# (below 90° the surrogate is still a descent direction) and the cost over the adjoint's.
# With a conservative flow every stream-function direction that keeps the walls no-flux has
# :math:`\Pi J = 0` and :math:`J\mathbf 1 = 0`: the long-time derivative vanishes, and so does the
# exact one, like :math:`e^{-\kappa t}`; the asymptotic form captures this decay (its absolute
# error falls with T) but not the relative size, so its relative error stays near 1. The program
# writes ``surrogate_vs_adjoint.h5`` (the accuracy tables), ``surrogate_vs_adjoint.json``
# (all rows, with the wall times) and ``surrogate_vs_adjoint.png``.

# +
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import sensitivity
from sensitivity.fem import (
    AdvectionDiffusion,
    AsymptoticSurrogate,
    ObservationMisfit,
    PointSensors,
    ReducedFunctional,
    StreamFunction,
    SurrogateGradient,
    ThetaScheme,
)
from sensitivity.io import (
    atomic_write,
    new_figure,
    prepare_output_dir,
    save_figure,
    write_h5,
)
from sensitivity.parallel import (
    ArgumentParser,
    exit_on_error,
    progress,
    rank0_print,
    run_on_root,
)

import numpy as np
from dolfinx import fem, mesh
from mpi4py import MPI

NAME = "surrogate_vs_adjoint"
SENSORS = [[x, y] for x in (0.25, 0.5, 0.75) for y in (0.25, 0.5, 0.75)]
NOISE = 0.01
#: The regular files written to --output (checked before the run: none may be a directory).
OUTPUT_FILES = (f"{NAME}.h5", f"{NAME}.json", f"{NAME}.png")
# -

# ## Command line
#
# Every rank validates the same ``argv`` before any collective call.


# +
def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog=NAME, description=(__doc__ or NAME).splitlines()[0])
    parser.add_argument("--output", default=f"output/{NAME}", help="output directory (default: %(default)s)")
    parser.add_argument("--n", type=int, default=None, help="cells per side of the unit square (default 32; 8 with --small)")
    parser.add_argument("--dt", type=float, default=None, help="time step (default 0.01; 0.05 with --small)")
    parser.add_argument("--final-times", type=float, nargs="+", default=None,
                        help="final times T, multiples of 2 dt (default 0.1 0.2 0.5 1 2 4)")
    parser.add_argument("--peclet", type=float, nargs="+", default=None,
                        help="Péclet numbers U L / κ (default 10 100 1000)")
    parser.add_argument("--orders", type=int, nargs="+", default=None, help="surrogate orders K (default 0 1 2)")
    parser.add_argument("--small", action="store_true", help="a small, fast configuration (for tests)")
    args = parser.parse_args(argv)
    args.n = args.n if args.n is not None else (8 if args.small else 32)
    args.dt = args.dt if args.dt is not None else (0.05 if args.small else 0.01)
    args.final_times = args.final_times or ([0.1, 0.4, 1.0] if args.small else [0.1, 0.2, 0.5, 1.0, 2.0, 4.0])
    args.peclet = args.peclet or ([10.0, 100.0] if args.small else [10.0, 100.0, 1000.0])
    args.orders = args.orders if args.orders is not None else [0, 1, 2]
    if not args.output:
        parser.error("--output must be a non-empty path")
    if args.n < 2:
        parser.error(f"--n must be at least 2, got {args.n}")
    if not math.isfinite(args.dt) or args.dt <= 0:
        parser.error(f"--dt must be a positive finite number, got {args.dt}")
    for T in args.final_times:
        steps = T / args.dt
        if not math.isfinite(T) or T <= 0 or abs(steps - round(steps)) > 1e-9 * steps or round(steps) % 2:
            parser.error(f"--final-times: {T} is not a positive even multiple of dt = {args.dt}")
    for pe in args.peclet:
        if not math.isfinite(pe) or pe <= 0:
            parser.error(f"--peclet must be positive and finite, got {pe}")
    for k in args.orders:
        if k < 0:
            parser.error(f"--orders must be non-negative, got {k}")
    return args
# -

# ## The problem for one Péclet number and final time


# +
def cellular(amplitude: float):
    return lambda x: amplitude * np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]) / np.pi


def build(comm: MPI.Comm, n: int, peclet: float, dt: float, T: float) -> ReducedFunctional:
    """The reduced functional: sensors at T/2 and T, data from a flow 20 % stronger with an eddy."""
    msh = mesh.create_unit_square(comm, n, n)
    V = fem.functionspace(msh, ("Lagrange", 1))
    S = fem.functionspace(msh, ("Lagrange", 2))
    psi = fem.Function(S, name="psi")
    psi.interpolate(cellular(1.0))
    problem = AdvectionDiffusion(V, StreamFunction(psi), 1.0 / peclet)
    theta0 = fem.Function(V)
    theta0.interpolate(lambda x: np.exp(-50.0 * ((x[0] - 0.3) ** 2 + (x[1] - 0.5) ** 2)))
    nsteps = int(round(T / dt))
    steps = [nsteps // 2, nsteps]
    sensors = PointSensors(V, SENSORS)
    # Synthetic data: the same discretization with the "true" flow.
    psi.interpolate(lambda x: cellular(1.2)(x) + 0.05 * np.exp(-40.0 * ((x[0] - 0.6) ** 2 + (x[1] - 0.4) ** 2)))
    problem.update()
    scheme = ThetaScheme(problem, dt)
    data = []
    scheme.run(theta0, nsteps, callback=lambda k, th: data.append(sensors.evaluate(th)) if k in steps else None).destroy()
    psi.interpolate(cellular(1.0))
    problem.update()
    scheme.refresh()
    misfit = ObservationMisfit(sensors, steps, np.array(data), noise=NOISE)
    F = ReducedFunctional(scheme, theta0, nsteps, [misfit])
    return F


def timed(comm: MPI.Comm, compute):
    """``compute()`` and its wall time (the slowest rank's)."""
    comm.Barrier()
    start = time.perf_counter()
    result = compute()
    return result, comm.allreduce(time.perf_counter() - start, op=MPI.MAX)


def compare(exact: fem.Function, approx: fem.Function) -> tuple[float, float, float]:
    """Absolute and relative error and angle (degrees) of ``approx`` against ``exact`` (collective)."""
    g, s = exact.x.petsc_vec, approx.x.petsc_vec
    d = s.copy()
    d.axpy(-1.0, g)
    err = d.norm()
    d.destroy()
    cosine = g.dot(s) / (g.norm() * s.norm()) if s.norm() > 0 else 0.0
    return float(err), float(err / g.norm()), float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def run_case(comm: MPI.Comm, args: argparse.Namespace, peclet: float, T: float) -> list[dict]:
    F = build(comm, args.n, peclet, args.dt, T)
    (_, exact), t_exact = timed(comm, F.value_and_derivative)
    norm = float(exact.x.petsc_vec.norm())
    rows = [{"peclet": peclet, "T": T, "method": "adjoint", "abs_err": 0.0, "rel_err": 0.0, "angle_deg": 0.0,
             "grad_norm": norm, "seconds": t_exact, "cost_over_adjoint": 1.0}]
    methods = [(f"K={k}", lambda k=k: SurrogateGradient(F, order=k)) for k in args.orders]
    methods.append(("asymptotic", lambda: AsymptoticSurrogate(F)))
    for name, make in methods:
        (_, grad), seconds = timed(comm, lambda make=make: make().value_and_derivative())
        err, rel, angle = compare(exact, grad)
        rows.append({"peclet": peclet, "T": T, "method": name, "abs_err": err, "rel_err": rel, "angle_deg": angle,
                     "grad_norm": norm, "seconds": seconds, "cost_over_adjoint": seconds / t_exact})
    F.scheme.destroy()
    F.destroy()
    return rows
# -

# ## Output: the table and the plots


# +
def print_table(comm: MPI.Comm, rows: list[dict]) -> None:
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "adjoint"))
    rank0_print(comm, "relative error | angle (deg) of each surrogate gradient against the exact adjoint gradient")
    header = f"{'Pe':>7} {'T':>6} {'|g| exact':>10} " + " ".join(f"{m:>19}" for m in methods)
    rank0_print(comm, header)
    for pe in dict.fromkeys(r["peclet"] for r in rows):
        for T in dict.fromkeys(r["T"] for r in rows):
            cells = {r["method"]: r for r in rows if r["peclet"] == pe and r["T"] == T}
            line = " ".join(f"{cells[m]['rel_err']:9.2e} | {cells[m]['angle_deg']:6.1f}" for m in methods)
            rank0_print(comm, f"{pe:7g} {T:6g} {cells[methods[0]]['grad_norm']:10.3e} {line}")
    rank0_print(comm, "\ncost over the adjoint gradient (median over all cases): " + ", ".join(
        f"{m} {np.median([r['cost_over_adjoint'] for r in rows if r['method'] == m]):.2f}" for m in methods))


def tables(rows: list[dict]) -> dict:
    """Relative errors and angles as (Péclet, T) arrays per method (wall times stay in the JSON)."""
    peclet = list(dict.fromkeys(r["peclet"] for r in rows))
    times = list(dict.fromkeys(r["T"] for r in rows))
    out = {"peclet": np.array(peclet), "final_times": np.array(times)}
    for m in dict.fromkeys(r["method"] for r in rows if r["method"] != "adjoint"):
        index = {(r["peclet"], r["T"]): r for r in rows if r["method"] == m}
        out[m] = {key: np.array([[index[pe, T][key] for T in times] for pe in peclet])
                  for key in ("abs_err", "rel_err", "angle_deg")}
    out["exact_gradient_norm"] = np.array([[next(r["grad_norm"] for r in rows if r["peclet"] == pe and r["T"] == T)
                                            for T in times] for pe in peclet])
    return out


def plot(comm: MPI.Comm, rows: list[dict], path: Path) -> None:
    fig = new_figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "adjoint"))
    styles = ["-", "--", ":", "-."]
    for j, pe in enumerate(dict.fromkeys(r["peclet"] for r in rows)):
        for i, m in enumerate(methods):
            sel = [r for r in rows if r["peclet"] == pe and r["method"] == m]
            T = [r["T"] for r in sel]
            kw = {"color": f"C{i}", "ls": styles[j % len(styles)], "marker": "o", "ms": 3,
                  "label": f"{m}, Pe = {pe:g}"}
            axes[0].loglog(T, [max(r["rel_err"], 1e-16) for r in sel], **kw)
            axes[1].semilogx(T, [r["angle_deg"] for r in sel], **kw)
    axes[0].set_ylabel("‖g_s − g‖ / ‖g‖")
    axes[1].set_ylabel("angle to the exact gradient (deg)")
    axes[1].axhline(90.0, color="0.6", lw=0.8)
    for ax in axes:
        ax.set_xlabel("final time T")
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle("Surrogate velocity gradients against the exact adjoint gradient", fontsize=10)
    fig.tight_layout()
    save_figure(comm, fig, path, dpi=130)
# -

# ## Main


# +
def main(argv=None, comm: MPI.Comm | None = None) -> dict:
    """Run every (Péclet, T) case; return the table rows."""
    comm = MPI.COMM_WORLD if comm is None else comm
    args = parse_args(argv)
    out = prepare_output_dir(comm, args.output, what="--output", files=OUTPUT_FILES)
    rank0_print(comm, f"{NAME}: {args.n} x {args.n} unit square, P1 θ, P2 stream function, dt = {args.dt:g}, "
                      f"{comm.size} rank(s)")
    cases = [(pe, T) for pe in args.peclet for T in args.final_times]
    rows = []
    for pe, T in progress(comm, cases, desc=NAME):
        rows.extend(run_case(comm, args, pe, T))
    print_table(comm, rows)
    plot(comm, rows, out / f"{NAME}.png")
    summary = {"n": args.n, "dt": args.dt, "nprocs": comm.size, "rows": rows}
    write_h5(comm, out / f"{NAME}.h5", tables(rows), attrs={"n": args.n, "dt": args.dt, "nprocs": comm.size,
                                                            "sensitivity_version": sensitivity.__version__})
    run_on_root(comm, lambda: atomic_write(out / f"{NAME}.json",
                                           lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1))))
    rank0_print(comm, f"wrote {out / (NAME + '.h5')}, {NAME}.json and {NAME}.png")
    return summary


if __name__ == "__main__":
    sys.exit(exit_on_error(main))
# -
