# ---
# jupytext:
#   text_representation:
#     extension: .py
#     format_name: light
# ---

"""Estimate a double-well quantum potential from noisy densities |ψ|² with exact adjoint gradients (docs/theory.md §3–4).

Run as ``mpirun -n P python demos/potential_estimation.py [--small] [--noise S] [--max-it K] [--output DIR]``.

The model
---------
A particle in the box :math:`\\Omega = [-L, L]^2` (:math:`\\hbar = m = 1`) obeys

.. math::

    i\\psi_t = -\\tfrac12\\Delta\\psi + V\\psi,\\qquad \\psi = 0 \\text{ on } \\partial\\Omega,\\qquad
    \\psi(0) = \\psi_0,

with the double well :math:`V(x, y) = a\\,((x/w)^2 - 1)^2 + b\\,y^2` (minima at
:math:`x = \\pm w`, barrier :math:`a` at :math:`x = 0`, a harmonic confinement :math:`b` in
:math:`y`) and a Gaussian packet :math:`\\psi_0` started in the left well with momentum
towards the barrier (energy above it, so it crosses, reflects and explores the box). As in
:mod:`sensitivity.fem.models.schrodinger` (docs/theory.md §3) :math:`\\psi = a + ib` is split into real P1
components, :math:`M a' = H b`, :math:`M b' = -H a`, :math:`H = \\tfrac12 K + M_V`, a real
generator that is skew-adjoint in the :math:`M` inner product; Crank–Nicolson keeps
:math:`\\|\\psi\\|` exactly. The potential is a P1 field; its nodal values are the unknowns.

The data
--------
Densities :math:`|\\psi(x_k, t_n)|^2` at a grid of interior sensors (``DensitySensors``) and
the probabilities of the left and right halves of the box (``RegionProbabilities``,
tunnelling) at every ``--observe-every``-th step, computed with the true :math:`V` on the
same discretization (so the estimate can reach the truth up to noise and regularization), plus
Gaussian noise of standard deviation ``--noise`` times the largest clean value, drawn with
``numpy.random.default_rng(--seed)`` identically on every rank.

The estimate
------------
The MAP estimate minimizes (docs/theory.md §4)

.. math::

    F(V) = \\sum_n\\tfrac12\\|\\Sigma^{-1}(y(\\psi_n(V)) - d_n)\\|^2
      + \\tfrac\\alpha2\\|V - V_0\\|_{L^2}^2 + \\tfrac\\beta2\\|\\nabla(V - V_0)\\|_{L^2}^2

over every P1 dof of :math:`V`, from the initial guess :math:`V_0` (a constant, or the
harmonic part :math:`b y^2` with ``--initial harmonic``), by PETSc TAO's limited-memory
variable metric method (``lmvm``) on the distributed vectors, through the package's MAP driver
(``sensitivity.estimation.find_map`` on ``FunctionalObjective(F, "h1")``): the quasi-Newton model
starts from the :math:`H^1` inner product :math:`W = M + K` of the potential's space (rescaled by
the curvature of the last step), so its first step is the :math:`H^1` gradient :math:`-W^{-1}d`
rather than the mesh-dependent derivative :math:`-d`, and the gradient is measured in
:math:`\\|d\\|_{W^{-1}} = (d^TW^{-1}d)^{1/2}`. Every objective evaluation is one
forward run and one adjoint sweep (``ReducedFunctional.value_and_derivative``): the exact gradient
of the discrete objective with respect to all dofs at once. Before optimizing, the adjoint
gradient at :math:`V_0` is checked against the tangent derivative ``F.directional_derivative(v)`` (equal to
round-off) and against a central finite difference along a smooth direction :math:`v`.

The invariance
--------------
A constant shift :math:`V \\to V + c` multiplies :math:`\\psi(t)` by the global phase
:math:`e^{-ict}`, so densities, region probabilities and the :math:`H^1` seminorm do not see it:
:math:`V` is identifiable only up to a constant. (The semi-discrete model keeps this exactly;
Crank–Nicolson, a Cayley transform, keeps it only up to the relative phase errors
:math:`O((E\\Delta t)^2)` of the modes of energy :math:`E`, so the discrete objective depends
weakly on the constant: the program prints and records the cosine between :math:`\\nabla F` and
the constants at :math:`V_0`. In the small configuration it falls from :math:`6\\cdot10^{-2}` at
:math:`\\Delta t = 0.05` to :math:`4\\cdot10^{-3}` at :math:`0.0125` and :math:`3\\cdot10^{-4}` at
:math:`0.00625`.)

**Every error is therefore measured modulo constants**: with :math:`e = \\hat V - V_{\\rm true}`,

.. math::

    \\mathrm{err} = \\frac{\\|e - \\bar e\\|_{L^2(\\Omega)}}{\\|V_{\\rm true} - \\bar V_{\\rm true}\\|_{L^2(\\Omega)}},

:math:`\\bar f` the mean over the box, so any constant guess has error exactly 1. Near the walls
:math:`\\psi \\to 0` and the data say little about :math:`V`; the *weighted* error uses the
time-averaged true density :math:`\\bar\\rho = \\frac{1}{N+1}\\sum_n|\\psi_n|^2` (normalized to
:math:`\\int\\bar\\rho = 1`) as the measure and the :math:`\\bar\\rho`-weighted means: the error
where the particle actually was. Plots show the estimate shifted by :math:`\\bar V_{\\rm true} -
\\bar{\\hat V}`.

Results
-------
The default configuration (32 × 32 cells, Δt = 0.025, 240 steps, 30 observation times, 11 × 11
sensors, 1 % noise, β = 1) runs its 250 iterations (273 evaluations on 2 ranks; the gradient falls
3.7·10³-fold in :math:`\\|\\cdot\\|_{W^{-1}}`, short of ``--gttol`` 1e-5, while the objective has
stopped moving): the objective falls 106-fold to the misfit level of the truth itself (the data
are fitted to the noise), the error modulo constants from 1 to 0.30 and the density-weighted error
to 0.145; the double well is recovered except in a strip along the walls :math:`x = \\pm L`, where
:math:`\\psi` vanishes and the quartic rises steeply. ``--small`` (40 iterations, 43 evaluations)
reaches 0.49 and 0.26 (TAO's default ℓ² metric on the dof vector reached 0.53 and 0.28). The
objective is not convex (the densities depend on :math:`V` through phases): the first few dozen
iterations can raise the error before it falls, and with less noise and a smaller β
(``--noise 0.003 --beta 0.3``) 250 iterations are not yet enough to converge.

Command line
------------
``--small``
    The test configuration (12 × 12 mesh, 60 steps, 7 × 7 sensors, 40 iterations; seconds).
``--n N``, ``--half-width L``, ``--dt DT``, ``--steps N``, ``--observe-every K``, ``--sensors S``
    Mesh (N × N cells, P1), box, time step, number of steps, observation stride, S × S sensors.
``--barrier a``, ``--separation w``, ``--confinement b``
    The true double well.
``--noise S``, ``--seed K``
    Relative noise level (default 0.01) and the seed of the noise.
``--alpha A``, ``--beta B``, ``--initial {constant,harmonic}``
    Tikhonov weights (L² towards :math:`V_0`, :math:`H^1` seminorm) and the initial guess.
``--max-it K``, ``--gttol T``, ``--gatol T``, ``--lmvm-history M``
    TAO iteration limit, stop when :math:`\\|g\\| \\le T\\|g_0\\|` or :math:`\\|g\\| \\le T`
    (:math:`\\|g\\| = \\|d\\|_{W^{-1}}`, :math:`g_0` at the first iterate of the whole run, also when
    resumed), quasi-Newton memory.
``--solver {auto,redundant,mumps}``
    LU of the Crank–Nicolson operator, used for the forward and the transposed (adjoint) solves:
    ``redundant`` (every rank factors the whole operator with PETSc's LU; a gather and a scatter
    per solve, so it stays fast when ``mpirun`` oversubscribes the cores, where MUMPS's many
    small messages take tens of milliseconds per solve), ``mumps`` (distributed; for large
    meshes), ``auto`` (redundant up to 50 000 state dofs). SuperLU_DIST is not offered: in
    this PETSc build its transposed solve returns the untransposed solution.
``--checkpoint PATH``, ``--checkpoint-every K``, ``--resume``
    The MAP driver's checkpoint: the iterate (by dof coordinates, so any rank count can resume),
    the histories and the configuration, written atomically every K iterations and at the end;
    ``--resume`` continues from ``PATH`` (the quasi-Newton pairs are lost, only the scale of the
    initial Hessian is kept, so the continued history is not bit-identical to an uninterrupted run).
``--output DIR``
    Output directory (``--out`` is accepted as an abbreviation).

Outputs
-------
``potential_estimation.h5``
    Histories (objective, misfit, gradient norm, both errors per iteration), final errors,
    gradient check, sensor points, clean and noisy data, and the truth, initial guess, estimate
    and :math:`\\bar\\rho` sampled on a fixed grid: numbers that do not depend on the number of
    ranks beyond round-off (no timings).
``potential_estimation.json``
    The summary, with wall times.
``potential_estimation.png``
    Truth, estimate, difference, :math:`\\bar\\rho` with the sensors, the convergence history and
    a cut along :math:`y = 0`.
``potential_estimation.bp``
    Truth and estimate for ParaView (VTX/ADIOS2).

Examples
--------
::

    python demos/potential_estimation.py --small --output /tmp/pe
    mpirun -n 2 python demos/potential_estimation.py --output output/potential_estimation
    mpirun -n 4 python demos/potential_estimation.py --noise 0.003 --max-it 300
"""

# # Recovering a double-well potential from densities
#
# The program below follows the docstring: build the model and the synthetic data with the
# true potential, check the adjoint gradient, run TAO from a constant guess, and report the
# errors modulo constants. All collective work runs on every rank in the same order; rank 0
# alone prints and writes files.

# +
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import sensitivity
from sensitivity.estimation import FunctionalObjective, MAPCheckpoint, find_map
from sensitivity.fem import (
    DensitySensors,
    FieldSeries,
    ObservationMisfit,
    PointSensors,
    PotentialField,
    ReducedFunctional,
    RegionProbabilities,
    Schrodinger,
    ThetaScheme,
    Tikhonov,
    TriangleGather,
    gaussian_packet,
    schrodinger_space,
)
from sensitivity.io import (
    atomic_write,
    check_output_file,
    new_figure,
    prepare_output_dir,
    save_figure,
    write_h5,
)
from sensitivity.parallel import ArgumentParser, exit_on_error, rank0_print, run_on_root

import numpy as np
import ufl
from dolfinx import fem, mesh
from mpi4py import MPI
from petsc4py import PETSc

NAME = "potential_estimation"
#: The packet: centre in the left well (as a fraction of w), width, momentum.
PACKET_CENTER = (-1.0, 0.15)  # times (w, L)
PACKET_WIDTH = 0.35
PACKET_MOMENTUM = (2.5, 0.5)
#: Direction of the gradient check (a smooth bump, as a fraction of L).
CHECK_CENTER, CHECK_WIDTH = (0.25, -0.15), 0.35
FD_EPS = 1e-3
#: Points per side of the grid the fields are sampled on for the HDF5 file.
SAMPLES = 41
#: The regular files written to --output (checked before the run: none may be a directory).
OUTPUT_FILES = (f"{NAME}.h5", f"{NAME}.json", f"{NAME}.png")
SOLVERS = ("auto", "redundant", "mumps")
#: ``--solver auto`` uses the redundant LU below this many state dofs, MUMPS above.
REDUNDANT_MAX_DOFS = 50_000
SOLVER_OPTIONS = {
    # every rank factors the whole operator with PETSc's LU: a gather and a scatter per solve
    "redundant": {"ksp_type": "preonly", "pc_type": "redundant", "redundant_pc_type": "lu",
                  "redundant_pc_factor_mat_solver_type": "petsc"},
    "mumps": {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
}
# -

# ## Command line
#
# Every rank parses and validates the same ``argv`` before any collective call, so bad
# input stops all ranks with the same message and nothing is written.


# +
def parse_args(argv=None, comm: MPI.Comm | None = None) -> argparse.Namespace:
    comm = MPI.COMM_WORLD if comm is None else comm
    parser = ArgumentParser(prog=NAME, description=(__doc__ or NAME).splitlines()[0])
    parser.add_argument("--output", default=f"output/{NAME}", help="output directory (default: %(default)s)")
    parser.add_argument("--small", action="store_true", help="a small, fast configuration (for tests)")
    parser.add_argument("--n", type=int, default=None, help="cells per side (default 32; 12 with --small)")
    parser.add_argument("--half-width", type=float, default=2.0, help="the box is [-L, L]^2 (default: %(default)g)")
    parser.add_argument("--dt", type=float, default=None, help="time step (default 0.025; 0.05 with --small)")
    parser.add_argument("--steps", type=int, default=None, help="number of time steps (default 240; 60 with --small)")
    parser.add_argument("--observe-every", type=int, default=None,
                        help="observe every this many steps (default 8; 4 with --small)")
    parser.add_argument("--sensors", type=int, default=None,
                        help="S x S density sensors on an interior grid (default 11; 7 with --small)")
    parser.add_argument("--barrier", type=float, default=3.0, help="barrier height a of the true well (default: %(default)g)")
    parser.add_argument("--separation", type=float, default=1.4,
                        help="the wells' minima are at x = +-w (default: %(default)g)")
    parser.add_argument("--confinement", type=float, default=0.5, help="b in b y^2 (default: %(default)g)")
    parser.add_argument("--noise", type=float, default=0.01,
                        help="noise standard deviation relative to the largest clean value (default: %(default)g)")
    parser.add_argument("--seed", type=int, default=20261121, help="seed of the noise (default: %(default)d)")
    parser.add_argument("--alpha", type=float, default=0.0, help="L2 Tikhonov weight towards V0 (default: %(default)g)")
    parser.add_argument("--beta", type=float, default=1.0, help="H1-seminorm Tikhonov weight (default: %(default)g)")
    parser.add_argument("--initial", choices=("constant", "harmonic"), default="constant",
                        help="initial guess V0: zero, or the harmonic part b y^2 (default: %(default)s)")
    parser.add_argument("--max-it", type=int, default=None, help="TAO iterations (default 250; 40 with --small)")
    parser.add_argument("--gttol", type=float, default=1e-5,
                        help="stop when |g| <= gttol |g0| (default: %(default)g)")
    parser.add_argument("--gatol", type=float, default=1e-8, help="stop when |g| <= gatol (default: %(default)g)")
    parser.add_argument("--lmvm-history", type=int, default=20,
                        help="quasi-Newton pairs kept by TAO lmvm (default: %(default)d)")
    parser.add_argument("--solver", choices=SOLVERS, default="auto",
                        help="LU of the Crank-Nicolson operator: redundant (every rank factors it), mumps "
                             f"(distributed), auto (redundant below {REDUNDANT_MAX_DOFS} state dofs; the default)")
    parser.add_argument("--checkpoint", default=None, help="HDF5 checkpoint of the optimization (written atomically)")
    parser.add_argument("--checkpoint-every", type=int, default=10,
                        help="write the checkpoint every this many iterations (default: %(default)d)")
    parser.add_argument("--resume", action="store_true", help="continue the optimization from --checkpoint")
    args = parser.parse_args(argv)
    small = args.small
    for key, default, small_default in (("n", 32, 12), ("dt", 0.025, 0.05), ("steps", 240, 60),
                                        ("observe_every", 8, 4), ("sensors", 11, 7), ("max_it", 250, 40)):
        if getattr(args, key) is None:
            setattr(args, key, small_default if small else default)
    if not args.output:
        parser.error("--output must be a non-empty path")
    for name, value in (("--half-width", args.half_width), ("--dt", args.dt), ("--barrier", args.barrier),
                        ("--separation", args.separation), ("--noise", args.noise), ("--gttol", args.gttol)):
        if not math.isfinite(value) or value <= 0:
            parser.error(f"{name} must be a positive finite number, got {value}")
    for name, value in (("--confinement", args.confinement), ("--alpha", args.alpha), ("--beta", args.beta),
                        ("--gatol", args.gatol)):
        if not math.isfinite(value) or value < 0:
            parser.error(f"{name} must be a non-negative finite number, got {value}")
    if args.alpha == 0 and args.beta == 0:
        parser.error("--alpha and --beta are both 0: the estimate needs some regularization")
    if args.n < 2 or args.n % 2:
        parser.error(f"--n must be an even integer >= 2 (the line x = 0 splits the regions), got {args.n}")
    for name, value, low in (("--steps", args.steps, 1), ("--observe-every", args.observe_every, 1),
                             ("--sensors", args.sensors, 1), ("--max-it", args.max_it, 1),
                             ("--lmvm-history", args.lmvm_history, 1), ("--checkpoint-every", args.checkpoint_every, 1),
                             ("--seed", args.seed, 0)):
        if value < low:
            parser.error(f"{name} must be an integer >= {low}, got {value}")
    if args.observe_every > args.steps:
        parser.error(f"--observe-every must be at most --steps = {args.steps}, got {args.observe_every}")
    if args.separation >= args.half_width:
        parser.error(f"--separation must be less than --half-width = {args.half_width:g}, got {args.separation}")
    if args.resume and not args.checkpoint:
        parser.error("--resume needs --checkpoint PATH")
    if args.checkpoint is not None and not args.checkpoint:
        parser.error("--checkpoint must be a non-empty path")
    if args.checkpoint:
        outputs = {(Path(args.output) / name).resolve() for name in (*OUTPUT_FILES, f"{NAME}.bp")}
        if Path(args.checkpoint).resolve() in outputs:
            parser.error(f"--checkpoint {args.checkpoint} is an output file of this run; give it another name")
    if args.resume:  # rank 0 looks (it reads the file): its answer counts on every rank
        kind = comm.bcast(_file_kind(args.checkpoint) if comm.rank == 0 else None, root=0)
        if kind != "file":
            parser.error(f"--resume: no checkpoint file {args.checkpoint}" if kind == "missing" else
                         f"--resume: the checkpoint {args.checkpoint} is {kind}, not a file")
    if args.solver == "auto":
        args.solver = "redundant" if 2 * (args.n + 1) ** 2 <= REDUNDANT_MAX_DOFS else "mumps"
    return args


def _file_kind(path: str) -> str:
    """"file", "missing", or what else ``path`` is (rank-local)."""
    p = Path(path)
    try:
        if p.is_file():
            return "file"
        if p.is_dir():
            return "a directory"
        return "missing" if not (p.exists() or p.is_symlink()) else "not a regular file"
    except OSError as exc:  # e.g. a parent that cannot be searched
        return f"not readable ({exc.strerror})"
# -

# ## The model and the synthetic data


# +
@dataclass
class Setup:
    msh: mesh.Mesh
    S: fem.FunctionSpace  # the P1 potential space
    truth: fem.Function
    initial: fem.Function
    problem: Schrodinger
    scheme: ThetaScheme
    psi0: fem.Function
    sensors: DensitySensors
    regions: RegionProbabilities
    sensor_points: np.ndarray
    steps: np.ndarray


def double_well(args: argparse.Namespace):
    a, w, b = args.barrier, args.separation, args.confinement
    return lambda x: a * ((x[0] / w) ** 2 - 1.0) ** 2 + b * x[1] ** 2


def build(comm: MPI.Comm, args: argparse.Namespace) -> Setup:
    L = args.half_width
    msh = mesh.create_rectangle(comm, [[-L, -L], [L, L]], [args.n, args.n])
    W = schrodinger_space(msh, 1)
    S = fem.functionspace(msh, ("Lagrange", 1))
    truth = fem.Function(S, name="V_true")
    truth.interpolate(double_well(args))
    initial = fem.Function(S, name="V_initial")
    if args.initial == "harmonic":
        initial.interpolate(lambda x: args.confinement * x[1] ** 2)
    V = fem.Function(S, name="V")
    V.x.array[:] = truth.x.array
    problem = Schrodinger(W, PotentialField(V))
    scheme = ThetaScheme(problem, args.dt, petsc_options=SOLVER_OPTIONS[args.solver])
    center = [PACKET_CENTER[0] * args.separation, PACKET_CENTER[1] * L]
    psi0 = gaussian_packet(problem, center, PACKET_WIDTH, PACKET_MOMENTUM)
    grid = np.linspace(-L, L, args.sensors + 2)[1:-1]
    points = np.array([[x, y] for x in grid for y in grid])
    sensors = DensitySensors(W, points)
    tdim = msh.topology.dim
    cells = np.arange(msh.topology.index_map(tdim).size_local, dtype=np.int32)
    mid = mesh.compute_midpoints(msh, tdim, cells)[:, 0]
    tags = mesh.meshtags(msh, tdim, cells, np.where(mid < 0.0, 1, 2).astype(np.int32))
    regions = RegionProbabilities(W, tags, [1, 2])  # the left and the right well
    steps = np.arange(args.observe_every, args.steps + 1, args.observe_every)
    return Setup(msh, S, truth, initial, problem, scheme, psi0, sensors, regions, points, steps)


def synthetic_data(setup: Setup, args: argparse.Namespace) -> dict:
    """Clean and noisy observations with the true potential, and the time-averaged density (collective)."""
    W = setup.problem.V
    state = fem.Function(W)
    density = fem.Function(setup.S)
    expr = fem.Expression(state[0] ** 2 + state[1] ** 2, setup.S.element.interpolation_points)
    rhobar = fem.Function(setup.S, name="mean_density")
    observed = set(int(n) for n in setup.steps)
    dens, probs = [], []

    def record(n, w):
        if n in observed:
            dens.append(setup.sensors.evaluate(w))
            probs.append(setup.regions.evaluate(w))
        w.copy(state.x.petsc_vec)
        state.x.scatter_forward()
        density.interpolate(expr)
        rhobar.x.array[:] += density.x.array

    setup.scheme.run(setup.psi0, args.steps, callback=record).destroy()
    total = setup.msh.comm.allreduce(fem.assemble_scalar(fem.form(rhobar * ufl.dx)))
    rhobar.x.array[:] /= total  # int rhobar = 1
    clean, clean_p = np.array(dens), np.array(probs)
    sigma, sigma_p = args.noise * float(clean.max()), args.noise * float(clean_p.max())
    rng = np.random.default_rng(args.seed)  # the same numbers on every rank
    noisy = clean + sigma * rng.standard_normal(clean.shape)
    noisy_p = clean_p + sigma_p * rng.standard_normal(clean_p.shape)
    return {"densities": clean, "probabilities": clean_p, "noisy_densities": noisy, "noisy_probabilities": noisy_p,
            "sigma": sigma, "sigma_probabilities": sigma_p, "rhobar": rhobar}
# -

# ## Errors modulo constants
#
# Compiled once; each evaluation is four assembled scalars and their sums over ranks.


# +
class ModuloConstant:
    """Relative L² errors of a potential against the truth with the constant removed, plain and
    weighted by the mean density (module docstring); collective."""

    def __init__(self, truth: fem.Function, rhobar: fem.Function):
        S, self.comm = truth.function_space, truth.function_space.mesh.comm
        self.e = fem.Function(S)
        self.c = fem.Constant(S.mesh, PETSc.ScalarType(0.0))
        dx = ufl.dx
        self.area = self._sum(fem.form(fem.Constant(S.mesh, PETSc.ScalarType(1.0)) * dx))
        self.mean = [fem.form(self.e * dx), fem.form(self.e * rhobar * dx)]
        self.square = [fem.form((self.e - self.c) ** 2 * dx), fem.form((self.e - self.c) ** 2 * rhobar * dx)]
        self.weights = [self.area, self._sum(fem.form(rhobar * dx))]
        self.truth = truth
        self.scale = self._norms(truth.x.array)

    def _sum(self, form) -> float:
        return float(self.comm.allreduce(fem.assemble_scalar(form)))

    def _norms(self, values: np.ndarray) -> tuple[float, float]:
        """(‖f − f̄‖, ‖f − f̄‖_ρ̄) of the nodal values ``values`` (owned and ghosts)."""
        self.e.x.array[:] = values
        out = []
        for mean, square, weight in zip(self.mean, self.square, self.weights):
            self.c.value = self._sum(mean) / weight
            out.append(math.sqrt(max(self._sum(square), 0.0)))
        return out[0], out[1]

    def errors(self, estimate: fem.Function) -> tuple[float, float]:
        e = self._norms(estimate.x.array - self.truth.x.array)
        return e[0] / self.scale[0], e[1] / self.scale[1]

    def shift(self, estimate: fem.Function) -> float:
        """The constant c with mean(estimate + c) = mean(truth)."""
        self.e.x.array[:] = self.truth.x.array - estimate.x.array
        return self._sum(self.mean[0]) / self.area
# -

# ## The gradient check
#
# The adjoint gradient ⟨∇F, v⟩ against the tangent dF·v (one forward run with the tangent: equal
# to round-off) and a central difference (error O(ε²)), at the initial guess. Along constants the
# data change only through the phase errors of Crank–Nicolson (the invariance, module docstring).


# +
def gradient_check(F: ReducedFunctional, setup: Setup, args: argparse.Namespace) -> dict:
    L = args.half_width
    v = fem.Function(setup.S, name="direction")
    cx, cy = CHECK_CENTER[0] * L, CHECK_CENTER[1] * L
    v.interpolate(lambda x: np.exp(-((x[0] - cx) ** 2 + (x[1] - cy) ** 2) / (2 * (CHECK_WIDTH * L) ** 2)))
    ones = fem.Function(setup.S)
    ones.x.array[:] = 1.0
    F.set_control(setup.initial)
    value, grad = F.value_and_derivative()
    g = grad.x.petsc_vec
    adjoint = float(g.dot(v.x.petsc_vec))
    tangent = float(F.directional_derivative(v))
    c0 = setup.initial.x.petsc_vec
    values = []
    for sign in (1.0, -1.0):
        c = c0.copy()
        c.axpy(sign * FD_EPS, v.x.petsc_vec)
        F.set_control(c)
        values.append(F.value())
        c.destroy()
    F.set_control(setup.initial)
    fd = (values[0] - values[1]) / (2 * FD_EPS)
    along_constants = float(g.dot(ones.x.petsc_vec))
    cosine = along_constants / (float(g.norm()) * float(ones.x.petsc_vec.norm()))
    cosine_v = adjoint / (float(g.norm()) * float(v.x.petsc_vec.norm()))
    return {"value": float(value), "gradient_norm": float(g.norm()), "adjoint": adjoint, "tangent": tangent,
            "tangent_rel_diff": abs(adjoint - tangent) / abs(tangent), "fd": fd, "fd_eps": FD_EPS,
            "fd_rel_err": abs(adjoint - fd) / abs(fd), "along_constants": along_constants,
            "cosine_to_constants": cosine, "cosine_to_direction": cosine_v}
# -

# ## Checkpoints
#
# The MAP driver writes them (``sensitivity.estimation.find_map``): the iterate in the partition-
# independent order of its dofs (sorted by coordinates), so a run on any number of ranks can resume
# it, the histories and the configuration below, which a resumed run must match.


# +
def fingerprint(args: argparse.Namespace) -> dict:
    keys = ("n", "half_width", "dt", "steps", "observe_every", "sensors", "barrier", "separation", "confinement",
            "noise", "seed", "alpha", "beta", "initial")
    return {k: getattr(args, k) for k in keys}


def read_checkpoint(comm: MPI.Comm, args: argparse.Namespace) -> MAPCheckpoint:
    """The checkpoint, read on rank 0 and broadcast; a file that is not a checkpoint of this
    demo, one of another configuration, or a damaged one fails on every rank with a message naming it."""
    return MAPCheckpoint.read(args.checkpoint, comm, size=(args.n + 1) ** 2, config=fingerprint(args), method="lmvm",
                              name=NAME, prefix="--resume: ")


def finished(resume: MAPCheckpoint, args: argparse.Namespace) -> str | None:
    """Why the checkpointed run needs no more iterations (TAO converged, or --max-it reached),
    or ``None`` if it can continue."""
    iterations, reason = resume.iterations, resume.reason
    if isinstance(reason, str) and reason.startswith("CONVERGED"):
        return f"reason {reason}, after {iterations} iterations"
    if iterations >= args.max_it:
        return f"{iterations} iterations, and --max-it is {args.max_it}" + (f"; reason {reason}" if reason else "")
    return None
# -

# ## The optimization with TAO
#
# ``find_map`` runs TAO ``lmvm`` on the control's distributed dof vector with the :math:`H^1` inner
# product :math:`W = M + K` of the potential's space as the initial quasi-Newton Hessian (scaled by the
# curvature of the last step; the first step is the :math:`H^1` gradient :math:`-W^{-1}d`, not the
# mesh-dependent derivative :math:`-d`) and measures the gradient in :math:`\|d\|_{W^{-1}}`; the
# monitor adds the misfit and both errors to its history.


# +
HISTORY_KEYS = ("objective", "misfit", "gradient_norm", "rel_error", "weighted_error", "evaluations")


def optimize(F: ReducedFunctional, setup: Setup, errors: ModuloConstant, args: argparse.Namespace,
             resume: MAPCheckpoint | None) -> dict:
    estimate = fem.Function(setup.S, name="V_estimate")
    objective = FunctionalObjective(F, "h1", petsc_options=SOLVER_OPTIONS[args.solver])

    def monitor(k, q, value, gradient_norm):
        q.copy(estimate.x.petsc_vec)
        estimate.x.scatter_forward()
        rel, weighted = errors.errors(estimate)
        misfit = value - (F.regularization.value(estimate) if F.regularization is not None else 0.0)
        return {"misfit": misfit, "rel_error": rel, "weighted_error": weighted}

    try:
        result = find_map(objective, setup.initial.x.petsc_vec, "lmvm", gatol=args.gatol, gttol=args.gttol,
                          max_it=args.max_it, max_evaluations=20 * args.max_it + 20, lmvm_history=args.lmvm_history,
                          checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                          resume=resume if resume is not None else False, config=fingerprint(args), monitor=monitor)
    finally:
        objective.destroy()
    result.point.copy(estimate.x.petsc_vec)
    estimate.x.scatter_forward()
    result.point.destroy()
    return {"estimate": estimate, "history": {k: result.history[k] for k in HISTORY_KEYS}, "reason": result.reason,
            "seconds": result.seconds, "evaluations": result.evaluations, "resumed_at": result.resumed_at,
            "finished_before_resume": result.finished_before_resume}
# -

# ## Plots and files


# +
def plot(comm: MPI.Comm, path: Path, setup: Setup, result: dict, samples: dict, shift: float,
         args: argparse.Namespace) -> None:
    gather = TriangleGather(setup.S)
    aligned = fem.Function(setup.S)
    aligned.x.array[:] = result["estimate"].x.array + shift
    diff = fem.Function(setup.S)
    diff.x.array[:] = aligned.x.array - setup.truth.x.array
    fields = [gather.values(f) for f in (setup.truth, aligned, diff, samples["rhobar_function"])]
    fig = None
    if comm.rank == 0:
        from matplotlib.tri import Triangulation  # here: slow to import

        xy = gather.xy
        tri = Triangulation(xy[..., 0].ravel(), xy[..., 1].ravel(), np.arange(xy.shape[0] * 3).reshape(-1, 3))
        fig = new_figure(figsize=(14, 8.6))
        axes = fig.subplots(2, 3)
        vmin, vmax = float(fields[0].min()), float(fields[0].max())
        dmax = float(np.abs(fields[2]).max()) or 1.0
        h = result["history"]
        titles = ["true V", f"estimate (+ constant), error {h['rel_error'][-1]:.3f} mod const.",
                  "estimate − truth (mod const.)", "time-averaged density ρ̄, sensors"]
        kwargs = [{"vmin": vmin, "vmax": vmax}, {"vmin": vmin, "vmax": vmax},
                  {"cmap": "RdBu_r", "vmin": -dmax, "vmax": dmax}, {"cmap": "magma"}]
        for ax, values, title, kw in zip(axes.ravel()[:4], fields, titles, kwargs):
            art = ax.tripcolor(tri, np.asarray(values).ravel(), shading="gouraud", **kw)
            ax.set_aspect("equal")
            ax.set_title(title, fontsize=9)
            ax.tick_params(labelsize=7)
            fig.colorbar(art, ax=ax, shrink=0.8)
        axes[1, 0].plot(setup.sensor_points[:, 0], setup.sensor_points[:, 1], "c.", ms=3)
        ax = axes[1, 1]
        its = np.arange(len(h["objective"]))
        ax.semilogy(its, h["objective"] / h["objective"][0], label="F / F₀")
        ax.semilogy(its, h["gradient_norm"] / h["gradient_norm"][0], label="‖∇F‖ / ‖∇F₀‖")
        ax.semilogy(its, h["rel_error"], label="rel. error (mod const.)")
        ax.semilogy(its, h["weighted_error"], label="ρ̄-weighted error")
        ax.axhline(samples["misfit_at_truth"] / h["objective"][0], color="0.5", ls=":", lw=1,
                   label="misfit of the truth / F₀")
        ax.set_xlabel("TAO lmvm iteration")
        ax.set_title("convergence", fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[1, 2]
        grid = samples["grid"]
        mid = SAMPLES // 2
        x = grid[:, 0].reshape(SAMPLES, SAMPLES)[:, mid]
        for key, label, style in (("truth", "truth", "k-"), ("initial_aligned", "initial guess (+ constant)", "C7--"),
                                  ("estimate_aligned", "estimate (+ constant)", "C3-")):
            ax.plot(x, samples[key].reshape(SAMPLES, SAMPLES)[:, mid], style, label=label)
        ax.set_xlabel("x (y = 0)")
        ax.set_ylabel("V")
        ax.set_title("cut along y = 0", fontsize=9)
        ax.legend(fontsize=7)
        fig.suptitle(f"Double-well potential from noisy densities: {len(setup.steps)} times × "
                     f"{len(setup.sensor_points)} sensors, noise {args.noise:g}, β = {args.beta:g}", fontsize=10)
        fig.tight_layout()
    save_figure(comm, fig, path, dpi=110)  # rank 0 draws and writes; the others pass None


def sample_fields(setup: Setup, result: dict, data: dict, shifts: tuple[float, float],
                  args: argparse.Namespace) -> dict:
    """Truth, initial guess, estimate and ρ̄ at a fixed grid (the same on every rank count; collective)."""
    L = args.half_width
    g = np.linspace(-L, L, SAMPLES)
    grid = np.array([[x, y] for x in g for y in g])
    probe = PointSensors(setup.S, grid)
    estimate = result["estimate"]
    out = {"grid": grid, "truth": probe.evaluate(setup.truth), "initial": probe.evaluate(setup.initial),
           "estimate": probe.evaluate(estimate), "mean_density": probe.evaluate(data["rhobar"])}
    out["estimate_aligned"] = out["estimate"] + shifts[0]
    out["initial_aligned"] = out["initial"] + shifts[1]
    return out


def print_table(comm: MPI.Comm, history: dict) -> None:
    n = len(history["objective"])
    rank0_print(comm, f"{'it':>5} {'F':>12} {'misfit':>12} {'|grad F|':>10} {'rel.err':>8} {'weighted':>8} {'evals':>6}")
    every = max(1, n // 12)
    for k in range(n):
        if k % every == 0 or k == n - 1:
            rank0_print(comm, f"{k:5d} {history['objective'][k]:12.5e} {history['misfit'][k]:12.5e} "
                              f"{history['gradient_norm'][k]:10.3e} {history['rel_error'][k]:8.4f} "
                              f"{history['weighted_error'][k]:8.4f} {int(history['evaluations'][k]):6d}")
# -

# ## Main


# +
def main(argv=None, comm: MPI.Comm | None = None) -> dict:
    """Run the estimation; return its summary (histories as lists, errors, checks, wall times)."""
    comm = MPI.COMM_WORLD if comm is None else comm
    args = parse_args(argv, comm)
    t_start = time.perf_counter()
    # Every path and the checkpoint are checked before any work, creating nothing until all
    # of them are known to be good; then the directories are created and the temporaries a
    # killed run left in them are removed.
    if args.checkpoint:
        check_output_file(comm, args.checkpoint, what="--checkpoint", create=False)
    prepare_output_dir(comm, args.output, what="--output", files=OUTPUT_FILES, create=False)
    resume = read_checkpoint(comm, args) if args.resume else None
    done = finished(resume, args) if resume is not None else None
    if done is not None:
        rank0_print(comm, f"{NAME}: nothing to do: the checkpoint {args.checkpoint} holds a finished run ({done}); "
                          f"writing its results again (start without --resume to run anew)")
    out = prepare_output_dir(comm, args.output, what="--output", files=OUTPUT_FILES)
    if args.checkpoint:
        check_output_file(comm, args.checkpoint, what="--checkpoint")
    setup = build(comm, args)
    ndofs = setup.S.dofmap.index_map.size_global
    rank0_print(comm, f"{NAME}: [-{args.half_width:g}, {args.half_width:g}]² with {args.n} x {args.n} cells, "
                      f"P1 ψ and V ({ndofs} potential dofs), dt = {args.dt:g}, {args.steps} steps, "
                      f"{len(setup.steps)} observation times x ({len(setup.sensor_points)} sensors + 2 regions), "
                      f"noise {args.noise:g}, {comm.size} rank(s)")
    t0 = time.perf_counter()
    data = synthetic_data(setup, args)
    t_data = time.perf_counter() - t0
    misfits = [ObservationMisfit(setup.sensors, setup.steps, data["noisy_densities"], noise=data["sigma"]),
               ObservationMisfit(setup.regions, setup.steps, data["noisy_probabilities"],
                                 noise=data["sigma_probabilities"])]
    regularization = Tikhonov(setup.S, alpha=args.alpha, beta=args.beta, reference=setup.initial)
    F = ReducedFunctional(setup.scheme, setup.psi0, args.steps, misfits, regularization)
    ndata = sum(m.data.size for m in misfits)
    F.set_control(setup.truth)
    misfit_at_truth = F.value() - regularization.value(setup.truth)
    errors = ModuloConstant(setup.truth, data["rhobar"])
    initial_errors = errors.errors(setup.initial)
    t0 = time.perf_counter()
    check = gradient_check(F, setup, args)
    t_check = time.perf_counter() - t0
    rank0_print(comm, f"  gradient check at V0 along a bump v: adjoint {check['adjoint']:.10e}, tangent "
                      f"{check['tangent']:.10e} (rel. diff {check['tangent_rel_diff']:.1e}), central difference "
                      f"(eps {FD_EPS:g}) rel. err {check['fd_rel_err']:.1e}")
    rank0_print(comm, f"  invariance: cos(grad F, constants) = {check['cosine_to_constants']:.2e} at V0, against "
                      f"{check['cosine_to_direction']:.2e} for the bump (0 for the semi-discrete model; "
                      f"Crank–Nicolson phase errors)")
    rank0_print(comm, f"  misfit of the truth {misfit_at_truth:.1f} for {ndata} data (noise level: about {ndata / 2:g})")
    if resume is not None and done is None:
        rank0_print(comm, f"  resuming from {args.checkpoint} at iteration {resume.iterations}")
    result = optimize(F, setup, errors, args, resume)
    h = result["history"]
    print_table(comm, h)
    shift = errors.shift(result["estimate"])
    samples = sample_fields(setup, result, data, (shift, errors.shift(setup.initial)), args)
    samples["rhobar_function"] = data["rhobar"]
    samples["misfit_at_truth"] = misfit_at_truth
    final_rel, final_weighted = float(h["rel_error"][-1]), float(h["weighted_error"][-1])
    summary = {
        "nprocs": comm.size, "ndofs": ndofs, "n": args.n, "steps": args.steps, "dt": args.dt,
        "observation_steps": setup.steps.tolist(), "num_sensors": len(setup.sensor_points), "num_data": ndata,
        "noise": args.noise, "sigma_densities": data["sigma"], "sigma_probabilities": data["sigma_probabilities"],
        "alpha": args.alpha, "beta": args.beta, "initial": args.initial, "solver": args.solver,
        "iterations": len(h["objective"]) - 1, "evaluations": result["evaluations"], "reason": result["reason"],
        "resumed_at": result["resumed_at"], "finished_before_resume": result["finished_before_resume"],
        "objective_history": h["objective"].tolist(), "misfit_history": h["misfit"].tolist(),
        "gradient_norm_history": h["gradient_norm"].tolist(), "rel_error_history": h["rel_error"].tolist(),
        "weighted_error_history": h["weighted_error"].tolist(),
        "initial_objective": float(h["objective"][0]), "final_objective": float(h["objective"][-1]),
        "objective_reduction": float(h["objective"][0] / h["objective"][-1]),
        "gradient_reduction": float(h["gradient_norm"][0] / h["gradient_norm"][-1]),
        "final_misfit": float(h["misfit"][-1]), "misfit_at_truth": misfit_at_truth,
        "initial_rel_error": initial_errors[0], "initial_weighted_error": initial_errors[1],
        "final_rel_error": final_rel, "final_weighted_error": final_weighted, "constant_shift": shift,
        "gradient_check": check,
    }
    t_total = comm.allreduce(time.perf_counter() - t_start, op=MPI.MAX)
    summary["seconds"] = {"data": comm.allreduce(t_data, op=MPI.MAX), "gradient_check": comm.allreduce(t_check, op=MPI.MAX),
                          "optimization": result["seconds"],
                          "per_evaluation": result["seconds"] / max(result["evaluations"], 1), "total": t_total}
    plot(comm, out / f"{NAME}.png", setup, result, samples, shift, args)
    with FieldSeries(out / f"{NAME}.bp", [setup.truth, result["estimate"]]) as series:
        series.write(0.0)
    h5 = {
        "history": {k: h[k] for k in HISTORY_KEYS if k != "evaluations"},
        "final": {"rel_error": final_rel, "weighted_error": final_weighted, "objective": float(h["objective"][-1]),
                  "misfit": float(h["misfit"][-1]), "misfit_at_truth": misfit_at_truth,
                  "initial_rel_error": initial_errors[0], "initial_weighted_error": initial_errors[1]},
        "gradient_check": {"value": check["value"], "adjoint": check["adjoint"], "tangent": check["tangent"],
                           "fd": check["fd"], "fd_eps": FD_EPS},
        "data": {"sensor_points": setup.sensor_points, "steps": setup.steps, "times": setup.steps * args.dt,
                 "densities": data["densities"], "noisy_densities": data["noisy_densities"],
                 "probabilities": data["probabilities"], "noisy_probabilities": data["noisy_probabilities"],
                 "sigma": data["sigma"], "sigma_probabilities": data["sigma_probabilities"]},
        "fields": {k: samples[k] for k in ("grid", "truth", "initial", "estimate", "estimate_aligned", "mean_density")},
    }
    write_h5(comm, out / f"{NAME}.h5", h5, attrs={
        "demo": NAME, "n": args.n, "dt": args.dt, "steps": args.steps, "noise": args.noise, "alpha": args.alpha,
        "beta": args.beta, "initial": args.initial, "nprocs": comm.size, "sensitivity_version": sensitivity.__version__})
    run_on_root(comm, lambda: atomic_write(out / f"{NAME}.json",
                                           lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1))))
    rank0_print(comm, f"  {summary['iterations']} iterations ({result['reason']}), {result['evaluations']} "
                      f"evaluations, {result['seconds']:.1f} s; objective reduced {summary['objective_reduction']:.3g}x "
                      f"to {summary['final_objective']:.4g} (misfit {summary['final_misfit']:.4g}, "
                      f"truth's misfit {misfit_at_truth:.4g})")
    rank0_print(comm, f"  relative error modulo constants {initial_errors[0]:.3f} -> {final_rel:.3f}, "
                      f"density-weighted {initial_errors[1]:.3f} -> {final_weighted:.3f}")
    rank0_print(comm, f"wrote {out}/{{{NAME}.h5, {NAME}.json, {NAME}.png, {NAME}.bp}}")
    F.destroy()
    setup.scheme.destroy()
    return summary


if __name__ == "__main__":
    sys.exit(exit_on_error(main))
# -
