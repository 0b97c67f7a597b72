# ---
# jupytext:
#   text_representation:
#     extension: .py
#     format_name: light
# ---

"""Sensitivity of a tracer released in a channel flow to the velocity field (docs/theory.md §2).

Run as ``mpirun -n P python demos/velocity_sensitivity.py [--resolution H] [--steps N] [--dt DT] [--output DIR]``.
"""

# # How sensor readings of a tracer depend on the flow
#
# A tracer $\theta$ is released upstream of a cylinder in a channel (the DFG benchmark
# geometry: $2.2\times0.41$, a cylinder of radius $0.05$ at $(0.2, 0.2)$) and carried
# by a steady flow $u$ while it diffuses:
#
# $$ \partial_t\theta = \kappa\Delta\theta - u\cdot\nabla\theta, $$
#
# with clean fluid entering ($\theta = 0$ on the inlet), no-flux walls and cylinder, and
# a natural outflow. The flow is a Stokes flow (Taylor–Hood P2/P1) driven by a
# parabolic inflow of peak speed $U$. Sensors downstream record $y_j(t) = \theta(x_j, t)$.
#
# How would the readings change if the flow were different? For a velocity perturbation
# $v$ the derivative of the discrete solution, $\rho = \nabla_v\theta$, solves the
# tangent equation (docs/theory.md §2)
#
# $$ \partial_t\rho = \kappa\Delta\rho - u\cdot\nabla\rho - v\cdot\nabla\theta,\qquad \rho(0) = 0, $$
#
# discretized exactly like $\theta$ (Crank–Nicolson, with SUPG stabilization and its
# dependence on $u$ differentiated too), so $P\rho$ is the exact derivative of the
# discrete sensor readings. Two directions are shown:
#
# * ``flow_rate``: $v = u$, i.e. $\frac{d}{d\alpha}$ of the readings for the flow $(1+\alpha)u$;
# * ``swirl``: $v = \mathrm{curl}\,b$ for a Gaussian bump $b$ behind the cylinder, a
#   local divergence-free eddy.
#
# Both tangents share the factorization of the forward operator and are solved with
# the forward state in one block solve per step. The program then checks the
# sensitivities against central finite differences of the solver and writes
#
# * ``fields.bp`` (θ, ρ_flow_rate, ρ_swirl over time) and ``velocity.bp`` (u and the
#   swirl) for ParaView (VTX/ADIOS2);
# * ``velocity_sensitivity.h5``: the sensor series, sensitivities and the check;
# * ``velocity_sensitivity.png`` (sensor readings and sensitivities) and
#   ``snapshots.png`` (the fields at three times).

# +
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import sensitivity
from sensitivity.fem import (
    AdvectionDiffusion,
    FieldSeries,
    PointSensors,
    TaggedMesh,
    Tangent,
    ThetaScheme,
    TriangleGather,
    VelocityField,
    build_mesh,
    facets,
    plot_fields,
    read_mesh,
    stokes_velocity,
)
from sensitivity.io import new_figure, prepare_output_dir, save_figure, write_h5
from sensitivity.parallel import (
    ArgumentParser,
    exit_on_error,
    progress_bar,
    rank0_print,
)

import numpy as np
from dolfinx import fem
from mpi4py import MPI

NAME = "velocity_sensitivity"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MESH = ROOT / "meshes" / "channel_obstacle.msh"
HEIGHT = 0.41  # channel height of the DFG geometry
#: Sensor positions: behind the cylinder, above and below its wake, and far downstream.
SENSORS = np.array([[0.45, 0.20], [0.70, 0.12], [0.70, 0.28], [1.20, 0.20]])
DIRECTIONS = ("flow_rate", "swirl")
#: The regular files written to --output (checked before the run: none may be a directory).
OUTPUT_FILES = (f"{NAME}.h5", f"{NAME}.png", "snapshots.png")
# -

# ## Command line
#
# Every rank parses and validates the same ``argv`` before any collective call, so bad
# input stops all ranks with the same message.


# +
def _finite(name: str, value: float, parser: argparse.ArgumentParser, positive: bool = True) -> None:
    if not math.isfinite(value) or (positive and value <= 0):
        parser.error(f"{name} must be a {'positive ' if positive else ''}finite number, got {value}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog=NAME, description=(__doc__ or NAME).splitlines()[0])
    parser.add_argument("--output", default=f"output/{NAME}", help="output directory (default: %(default)s)")
    parser.add_argument("--mesh", default=str(DEFAULT_MESH),
                        help="gmsh .msh file with groups inlet, outlet, walls, obstacle (default: the committed mesh)")
    parser.add_argument("--resolution", type=float, default=None,
                        help="generate the mesh with gmsh at this element size instead of reading --mesh "
                             "(e.g. 0.02; the committed mesh has 0.04)")
    parser.add_argument("--degree", type=int, default=1, choices=(1, 2), help="Lagrange degree of θ (default 1)")
    parser.add_argument("--kappa", type=float, default=2e-3, help="diffusivity κ (default: %(default)g)")
    parser.add_argument("--u-max", type=float, default=1.0, help="peak inflow speed U (default: %(default)g)")
    parser.add_argument("--dt", type=float, default=None, help="time step (default 0.01; 0.04 with --small)")
    parser.add_argument("--steps", type=int, default=None, help="number of time steps (default 200; 12 with --small)")
    parser.add_argument("--no-supg", dest="supg", action="store_false", help="switch SUPG stabilization off")
    parser.add_argument("--write-every", type=int, default=None,
                        help="write the VTX fields every this many steps (default 10; 4 with --small)")
    parser.add_argument("--fd-eps", type=float, default=1e-3,
                        help="step of the central finite-difference check of the flow-rate sensitivity (0: skip)")
    parser.add_argument("--small", action="store_true", help="a small, fast configuration (for tests)")
    args = parser.parse_args(argv)
    if args.dt is None:
        args.dt = 0.04 if args.small else 0.01
    if args.steps is None:
        args.steps = 12 if args.small else 200
    if args.write_every is None:
        args.write_every = 4 if args.small else 10
    if not args.output:
        parser.error("--output must be a non-empty path")
    _finite("--kappa", args.kappa, parser)
    _finite("--dt", args.dt, parser)
    _finite("--u-max", args.u_max, parser)
    _finite("--fd-eps", args.fd_eps, parser, positive=False)
    if args.fd_eps < 0:
        parser.error(f"--fd-eps must be >= 0, got {args.fd_eps}")
    if args.resolution is not None:
        _finite("--resolution", args.resolution, parser)
    if args.steps < 1:
        parser.error(f"--steps must be a positive integer, got {args.steps}")
    if args.write_every < 1:
        parser.error(f"--write-every must be a positive integer, got {args.write_every}")
    return args
# -

# ## The problem: mesh, Stokes flow, tracer, sensitivity directions


# +
@dataclass
class Setup:
    mesh_data: TaggedMesh
    V: fem.FunctionSpace
    velocity: fem.Function
    directions: list[fem.Function]
    problem: AdvectionDiffusion
    theta0: fem.Function
    sensors: PointSensors


def load_mesh(comm: MPI.Comm, args: argparse.Namespace) -> TaggedMesh:
    """The committed (or a given) mesh file, or a new gmsh mesh at ``--resolution``."""
    required = ("inlet", "outlet", "walls", "obstacle")
    if args.resolution is not None:
        return build_mesh("channel_obstacle", comm, h=args.resolution)
    return read_mesh(args.mesh, comm, required=required)


def parabolic_inflow(u_max: float):
    """The inflow profile u = (4U y(H − y)/H², 0)."""
    return lambda x: np.vstack([4.0 * u_max * x[1] * (HEIGHT - x[1]) / HEIGHT**2, np.zeros_like(x[0])])


def swirl(x, center=(0.35, 0.2), width=0.05):
    """curl b for the bump b = w exp(−|x − c|²/(2w²)): a local eddy of unit peak speed ≈ 0.6."""
    dx, dy = x[0] - center[0], x[1] - center[1]
    b = width * np.exp(-(dx**2 + dy**2) / (2 * width**2))
    return np.vstack([-dy / width**2 * b, dx / width**2 * b])


def setup_problem(mesh_data: TaggedMesh, velocity: fem.Function, args: argparse.Namespace) -> Setup:
    """Tracer problem for a given velocity (a vector Lagrange Function on the mesh)."""
    msh = mesh_data.mesh
    V = fem.functionspace(msh, ("Lagrange", args.degree))
    control = VelocityField(velocity)  # raises on every rank for a velocity in the wrong space
    inlet = fem.locate_dofs_topological(V, msh.topology.dim - 1, facets(mesh_data, "inlet"))
    bcs = [fem.dirichletbc(np.float64(0.0), inlet, V)]
    problem = AdvectionDiffusion(V, control, args.kappa, bcs=bcs, supg=args.supg)
    flow_rate = fem.Function(control.space, name="flow_rate")
    flow_rate.x.array[:] = velocity.x.array
    eddy = fem.Function(control.space, name="swirl")
    eddy.interpolate(swirl)
    theta0 = fem.Function(V, name="theta")
    theta0.interpolate(lambda x: np.exp(-((x[0] - 0.1) ** 2 + (x[1] - 0.26) ** 2) / (2 * 0.025**2)))
    return Setup(mesh_data, V, velocity, [flow_rate, eddy], problem, theta0, PointSensors(V, SENSORS))
# -

# ## Forward and tangents in one sweep
#
# The callback runs on every rank at every step: it evaluates the sensors (a
# collective), writes VTX frames and keeps the snapshot fields.


# +
def run_tangents(setup: Setup, args: argparse.Namespace, out: Path) -> dict:
    comm = setup.V.mesh.comm
    scheme = ThetaScheme(setup.problem, args.dt)
    tangent = Tangent(scheme, setup.directions)
    nsteps = args.steps
    readings = np.zeros((nsteps + 1, len(SENSORS)))
    sens = np.zeros((len(DIRECTIONS), nsteps + 1, len(SENSORS)))
    theta_fn = fem.Function(setup.V, name="theta")
    rho_fns = [fem.Function(setup.V, name=f"rho_{name}") for name in DIRECTIONS]
    snap_steps = sorted({max(1, nsteps // 3), max(1, (2 * nsteps) // 3), nsteps})
    gather = TriangleGather(setup.V)
    snapshots = []
    bar = progress_bar(comm, nsteps, desc=NAME)

    def callback(n, theta, rhos):
        readings[n] = setup.sensors.evaluate(theta)
        for k, rho in enumerate(rhos):
            sens[k, n] = setup.sensors.evaluate(rho)
        if n % args.write_every == 0 or n == nsteps or n in snap_steps:
            theta.copy(theta_fn.x.petsc_vec)
            for rho, fn in zip(rhos, rho_fns):
                rho.copy(fn.x.petsc_vec)
            if n % args.write_every == 0 or n == nsteps:
                series.write(n * args.dt)
            if n in snap_steps:
                snapshots.append((n * args.dt, [gather.values(f) for f in [theta_fn, *rho_fns]]))
        if n:
            bar.update()

    with FieldSeries(out / "fields.bp", [theta_fn, *rho_fns]) as series:
        thetaN, rhosN = tangent.run(setup.theta0, nsteps, callback=callback)
    bar.close()
    mass = [setup.problem.M.createVecLeft() for _ in range(2)]
    setup.problem.M.mult(thetaN, mass[0])
    mass_final = mass[0].sum()
    setup.problem.M.mult(setup.theta0.x.petsc_vec, mass[1])
    mass_initial = mass[1].sum()
    for obj in (thetaN, *rhosN, *mass, tangent):
        obj.destroy()
    scheme.destroy()
    return {"readings": readings, "sensitivities": sens, "snapshots": snapshots, "gather": gather,
            "mass_initial": mass_initial, "mass_final": mass_final}


def finite_difference_check(setup: Setup, args: argparse.Namespace, sens: np.ndarray) -> dict:
    """Central differences of the sensor readings along the flow-rate direction versus Pρ."""
    control = setup.problem.control.function
    v = setup.directions[0]
    series = []
    scheme = ThetaScheme(setup.problem, args.dt)
    for sign in (+1.0, -1.0):
        control.x.array[:] += sign * args.fd_eps * v.x.array
        setup.problem.update()
        scheme.refresh()
        y = np.zeros_like(sens[0])

        def record(n, theta, y=y):
            y[n] = setup.sensors.evaluate(theta)

        scheme.run(setup.theta0, args.steps, callback=record).destroy()
        control.x.array[:] -= sign * args.fd_eps * v.x.array
        series.append(y)
    setup.problem.update()
    scheme.destroy()
    fd = (series[0] - series[1]) / (2 * args.fd_eps)
    return {"fd": fd, "eps": args.fd_eps,
            "max_abs_err": float(np.max(np.abs(fd - sens[0]))),
            "rel_err": float(np.max(np.abs(fd - sens[0])) / np.max(np.abs(sens[0])))}
# -

# ## Plots and files


# +
def plot_series(comm: MPI.Comm, path: Path, t: np.ndarray, result: dict, check: dict | None) -> None:
    fig = new_figure(figsize=(7.5, 2.4 * (1 + len(DIRECTIONS))))
    axes = fig.subplots(1 + len(DIRECTIONS), 1, sharex=True)
    labels = [f"({x:.2f}, {y:.2f})" for x, y in SENSORS]
    for j, label in enumerate(labels):
        axes[0].plot(t, result["readings"][:, j], label=label)
    axes[0].set_ylabel("θ at sensor")
    axes[0].legend(fontsize=7, ncol=2, title="sensor", title_fontsize=7)
    for k, name in enumerate(DIRECTIONS):
        ax = axes[1 + k]
        for j in range(len(SENSORS)):
            ax.plot(t, result["sensitivities"][k, :, j], color=f"C{j}")
        if k == 0 and check is not None:
            every = max(1, len(t) // 25)
            for j in range(len(SENSORS)):
                ax.plot(t[::every], check["fd"][::every, j], "k.", ms=3,
                        label=f"central FD, max rel. error {check['rel_err']:.1e}" if j == 0 else None)
            ax.legend(fontsize=7)
        ax.set_ylabel(f"∂θ/∂v, v = {name}", fontsize=9)
        ax.axhline(0.0, color="0.7", lw=0.6)
    axes[-1].set_xlabel("t")
    fig.suptitle("Tracer readings and their exact sensitivities to the velocity", fontsize=10)
    fig.tight_layout()
    save_figure(comm, fig, path, dpi=130)


def plot_snapshots(path: Path, result: dict) -> None:
    panels, symmetric = [], []
    for t, (theta, *rhos) in result["snapshots"]:
        panels.append((f"θ, t = {t:.2f}", theta))
        symmetric.append(False)
        for name, rho in zip(DIRECTIONS, rhos):
            panels.append((f"ρ ({name}), t = {t:.2f}", rho))
            symmetric.append(True)
    plot_fields(result["gather"], panels, path, ncols=1 + len(DIRECTIONS), symmetric=symmetric)


def write_velocity(out: Path, setup: Setup) -> None:
    with FieldSeries(out / "velocity.bp", [setup.velocity, setup.directions[1]]) as series:
        series.write(0.0)
# -

# ## Main


# +
def main(argv=None, comm: MPI.Comm | None = None) -> dict:
    """Run the demo and return its summary numbers."""
    comm = MPI.COMM_WORLD if comm is None else comm
    args = parse_args(argv)
    # --output is checked first (creating nothing), the mesh is read, and only then is the
    # directory created: a bad --output or --mesh fails at once and leaves nothing behind
    prepare_output_dir(comm, args.output, what="--output", files=OUTPUT_FILES, create=False)
    mesh_data = load_mesh(comm, args)
    out = prepare_output_dir(comm, args.output, what="--output", files=OUTPUT_FILES)
    velocity = stokes_velocity(mesh_data, parabolic_inflow(args.u_max))
    setup = setup_problem(mesh_data, velocity, args)
    ndofs = setup.V.dofmap.index_map.size_global
    ncells = mesh_data.mesh.topology.index_map(2).size_global
    rank0_print(comm, f"{NAME}: {ncells} cells, P{args.degree} θ with {ndofs} dofs, κ = {args.kappa:g}, "
                      f"U = {args.u_max:g}, SUPG {'on' if args.supg else 'off'}, dt = {args.dt:g}, "
                      f"{args.steps} steps, {comm.size} rank(s)")
    write_velocity(out, setup)
    result = run_tangents(setup, args, out)
    check = finite_difference_check(setup, args, result["sensitivities"]) if args.fd_eps > 0 else None
    t = args.dt * np.arange(args.steps + 1)
    plot_series(comm, out / f"{NAME}.png", t, result, check)
    plot_snapshots(out / "snapshots.png", result)
    sens = result["sensitivities"]
    summary = {
        "ndofs": ndofs,
        "ncells": ncells,
        "peak_reading": float(result["readings"].max()),
        "max_abs_sensitivity": {name: float(np.abs(sens[k]).max()) for k, name in enumerate(DIRECTIONS)},
        "fd_rel_err": None if check is None else check["rel_err"],
        "mass_initial": float(result["mass_initial"]),
        "mass_final": float(result["mass_final"]),
    }
    data = {"t": t, "sensor_points": SENSORS, "readings": result["readings"], "sensitivities": sens}
    if check is not None:
        data["fd_check"] = {"fd": check["fd"], "eps": check["eps"], "rel_err": check["rel_err"]}
    write_h5(comm, out / f"{NAME}.h5", data, attrs={
        "demo": NAME, "directions": ",".join(DIRECTIONS), "kappa": args.kappa, "u_max": args.u_max,
        "dt": args.dt, "steps": args.steps, "degree": args.degree, "supg": args.supg, "ndofs": ndofs,
        "nprocs": comm.size, "sensitivity_version": sensitivity.__version__})
    rank0_print(comm, f"  peak sensor reading {summary['peak_reading']:.4f}")
    for name, value in summary["max_abs_sensitivity"].items():
        rank0_print(comm, f"  max |∂y/∂v| for v = {name}: {value:.4f}")
    if check is not None:
        rank0_print(comm, f"  flow-rate sensitivity vs central differences (eps = {check['eps']:g}): "
                          f"max rel. error {check['rel_err']:.2e}")
    rank0_print(comm, f"  tracer mass {summary['mass_initial']:.5f} -> {summary['mass_final']:.5f} (outflow)")
    rank0_print(comm, f"wrote {out}/{{fields.bp, velocity.bp, {NAME}.h5, {NAME}.png, snapshots.png}}")
    return summary


if __name__ == "__main__":
    sys.exit(exit_on_error(main))
# -
