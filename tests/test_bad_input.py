"""Hostile inputs through the public finite-element API: each is a clear error naming the bad value, raised
on every rank before any rank waits in a collective, or a correct result.

The table runs serially and, marked ``mpi``, under ``mpirun -n 2`` and ``-n 3`` (tests/test_parallel.py,
each run under a timeout, so an input that makes one rank raise while the others wait fails the suite
instead of passing on one rank). The dense toolkit's table is tests/test_dense_bad_input.py and the demos'
command lines are in tests/test_cli_bad_input.py. The classes (the hardening issue):

- NaN or infinity in an initial state, a direction or a coefficient field (silent all-NaN results before);
- data that differ between ranks (a different objective on each rank before);
- arrays of the wrong shape (a NumPy broadcast error before) and out-of-range numbers;
- a rank that owns no cell of the mesh (one rank raised inside the adjoint while the others waited).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from dolfinx import fem, mesh
from mpi4py import MPI
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError, SensitivityError
from sensitivity.fem import (
    AdvectionDiffusion,
    AsymptoticSurrogate,
    Eigenbasis,
    ExponentialPropagator,
    FieldSeries,
    FirstOrderSurrogate,
    ObservationMisfit,
    PointSensors,
    PotentialField,
    ReducedFunctional,
    Schrodinger,
    SecularSurrogate,
    StreamFunction,
    SurrogateGradient,
    Tangent,
    ThetaScheme,
    Tikhonov,
    build_mesh,
    gaussian_packet,
    read_mesh,
    schrodinger_space,
    steps_at,
)
from sensitivity.fem.backend import SolverError
from sensitivity.fem.objective.control_space import ControlSpace

pytestmark = pytest.mark.mpi


@dataclass
class Setup:
    """A small advection–diffusion objective and a Schrödinger problem on the same comm."""

    comm: MPI.Comm
    V: fem.FunctionSpace
    S: fem.FunctionSpace
    psi: fem.Function
    problem: AdvectionDiffusion
    scheme: ThetaScheme
    theta0: fem.Function
    sensors: PointSensors
    F: ReducedFunctional
    direction: fem.Function
    W: fem.FunctionSpace
    P: fem.FunctionSpace

    def function(self, space, value) -> fem.Function:
        """A Function of ``space`` equal to x + y everywhere, with ``value`` at its first owned dof on rank 0."""
        f = fem.Function(space)
        f.interpolate(lambda x: x[0] + x[1] if space.dofmap.index_map_bs == 1 else np.vstack([x[0], x[1]]))
        if self.comm.rank == 0 and space.dofmap.index_map.size_local > 0:
            f.x.array[0] = value  # (the local array: creating f.x.petsc_vec would be collective)
        f.x.scatter_forward()
        return f


@pytest.fixture(scope="module")
def setup() -> Setup:
    comm = MPI.COMM_WORLD
    msh = mesh.create_unit_square(comm, 6, 6)
    V = fem.functionspace(msh, ("Lagrange", 1))
    S = fem.functionspace(msh, ("Lagrange", 2))
    psi = fem.Function(S)
    psi.interpolate(lambda x: 0.3 * np.sin(np.pi * x[0]) ** 2 * np.sin(np.pi * x[1]) ** 2)
    problem = AdvectionDiffusion(V, StreamFunction(psi), 0.05)
    scheme = ThetaScheme(problem, 0.02)
    theta0 = fem.Function(V)
    theta0.interpolate(lambda x: np.exp(-20 * ((x[0] - 0.4) ** 2 + (x[1] - 0.5) ** 2)))
    sensors = PointSensors(V, [[0.5, 0.5], [0.7, 0.3]])
    data = np.full((2, 2), 0.1)
    F = ReducedFunctional(scheme, theta0, 4, [ObservationMisfit(sensors, [2, 4], data, noise=0.1)],
                          Tikhonov(S, alpha=1e-3))
    direction = fem.Function(S)
    direction.interpolate(lambda x: x[0] * (1 - x[0]) * x[1] * (1 - x[1]))
    W = schrodinger_space(msh, 1)
    P = fem.functionspace(msh, ("Lagrange", 1))
    return Setup(comm, V, S, psi, problem, scheme, theta0, sensors, F, direction, W, P)


def _potential(s: Setup, value=1.0) -> Schrodinger:
    V = s.function(s.P, value)
    return Schrodinger(s.W, PotentialField(V))


def _set_nan_control(s: Setup):
    c = s.F.control.x.petsc_vec.copy()  # (collective: every rank)
    try:
        if s.comm.rank == 0 and c.getLocalSize() > 0:
            c.array[0] = np.nan
        s.F.set_control(c)
    finally:
        c.destroy()


def _rank_data(s: Setup):
    return ObservationMisfit(s.sensors, [2], np.full((1, 2), float(s.comm.rank)))


def _rank_points(s: Setup):
    return PointSensors(s.V, [[0.2 + 0.1 * s.comm.rank, 0.5]])


def _checkpoint_too_small(s: Setup):
    G = ReducedFunctional(s.scheme, s.theta0, 4, s.F.misfits, max_states=2)
    G.derivative()


def _superlu_adjoint(s: Setup):
    scheme = ThetaScheme(s.problem, 0.02, petsc_options={"ksp_type": "preonly", "pc_type": "lu",
                                                         "pc_factor_mat_solver_type": "superlu_dist"})
    ReducedFunctional(scheme, s.theta0, 4, s.F.misfits).derivative()


def _inflow_asymptotic(s: Setup):
    fdim = s.V.mesh.topology.dim - 1
    s.V.mesh.topology.create_connectivity(fdim, fdim + 1)
    left = mesh.locate_entities_boundary(s.V.mesh, fdim, lambda x: np.isclose(x[0], 0.0))
    bc = fem.dirichletbc(PETSc.ScalarType(0.0), fem.locate_dofs_topological(s.V, fdim, left), s.V)
    problem = AdvectionDiffusion(s.V, StreamFunction(s.psi), 0.05, bcs=[bc])
    G = ReducedFunctional(ThetaScheme(problem, 0.02), s.theta0, 4, s.F.misfits)
    AsymptoticSurrogate(G)


def _wrong_inner_product(s: Setup):
    M = PETSc.Mat().createAIJ(((PETSc.DECIDE, 3), (PETSc.DECIDE, 3)), comm=s.comm)
    M.setUp()
    M.assemble()
    try:
        ControlSpace(s.S, M)
    finally:
        M.destroy()


def _on_more_than_one(pattern: str):
    """Expected error under MPI; on one rank the input is consistent and the call succeeds."""
    return lambda comm: pattern if comm.size > 1 else None


#: (id, call, exception type, message pattern or a function comm -> pattern/None)
CASES = [
    # --- NaN and infinity: silent all-NaN results before
    ("nan-initial-state", lambda s: s.scheme.run(s.function(s.V, np.nan), 2), InvalidArgumentError,
     r"the initial state must be finite: 1 non-finite entry, the first nan at global index"),
    ("inf-initial-state-objective", lambda s: ReducedFunctional(s.scheme, s.function(s.V, np.inf), 4, s.F.misfits),
     InvalidArgumentError, r"the initial state must be finite: 1 non-finite entry, the first inf"),
    ("nan-tangent-direction", lambda s: Tangent(s.scheme, [s.function(s.S, np.nan)]), InvalidArgumentError,
     r"directions\[0\] must be finite"),
    ("nan-directional-derivative", lambda s: s.F.directional_derivative(s.function(s.S, np.nan)),
     InvalidArgumentError, r"direction must be finite"),
    ("inf-hessian-direction", lambda s: s.F.hessian_action(s.function(s.S, -np.inf)), InvalidArgumentError,
     r"direction must be finite: 1 non-finite entry, the first -inf"),
    ("nan-surrogate-direction", lambda s: SurrogateGradient(s.F, 1).directional_derivative(s.function(s.S, np.nan)),
     InvalidArgumentError, r"direction must be finite"),
    ("nan-stream-function", lambda s: AdvectionDiffusion(s.V, StreamFunction(s.function(s.S, np.nan)), 0.05),
     InvalidArgumentError, r"the control \(StreamFunction\) must be finite"),
    ("nan-potential", lambda s: _potential(s, np.nan), InvalidArgumentError,
     r"the control \(PotentialField\) must be finite"),
    ("nan-set-control-vec", _set_nan_control, InvalidArgumentError, r"control values must be finite: 1 non-finite"),
    ("inf-set-control-array",
     lambda s: s.F.set_control(np.full(s.F.control.x.petsc_vec.getLocalSize(), np.inf)), InvalidArgumentError,
     r"control values must be finite"),
    ("nan-data", lambda s: ObservationMisfit(s.sensors, [2], np.array([[0.1, np.nan]])), InvalidArgumentError,
     r"data must be finite: data\[0, 1\] = nan"),
    ("nan-noise", lambda s: ObservationMisfit(s.sensors, [2], np.zeros((1, 2)), noise=[0.1, np.nan]),
     InvalidArgumentError, r"noise must be finite: noise\[1\] = nan"),
    ("nan-exponential-time", lambda s: ExponentialPropagator(s.problem).apply(s.theta0, float("nan")),
     InvalidArgumentError, r"t must be finite, got nan"),
    # --- data that differ between ranks
    ("data-differ-between-ranks", _rank_data, InvalidArgumentError,
     _on_more_than_one(r"data differs between MPI ranks")),
    ("points-differ-between-ranks", _rank_points, InvalidArgumentError,
     _on_more_than_one(r"points differs between MPI ranks")),
    # --- shapes and ranges
    ("noise-wrong-length", lambda s: ObservationMisfit(s.sensors, [2], np.zeros((1, 2)), noise=[1.0, 1.0, 1.0]),
     InvalidArgumentError, r"noise must be a number or an array of shape \(2,\) or \(1, 2\) .*got shape \(3,\)"),
    ("noise-negative", lambda s: ObservationMisfit(s.sensors, [2], np.zeros((1, 2)), noise=-0.1),
     InvalidArgumentError, r"noise must be positive and finite, got -0.1"),
    ("data-wrong-shape", lambda s: ObservationMisfit(s.sensors, [2, 4], np.zeros((2, 3))), InvalidArgumentError,
     r"data must have shape \(2, 2\), got \(2, 3\)"),
    ("kappa-zero", lambda s: AdvectionDiffusion(s.V, s.problem.control, 0.0), InvalidArgumentError,
     r"kappa must be positive and finite, got 0.0"),
    ("kappa-bool", lambda s: AdvectionDiffusion(s.V, s.problem.control, True), InvalidArgumentError,
     r"kappa must be positive and finite, got True"),
    ("dt-infinite", lambda s: ThetaScheme(s.problem, float("inf")), InvalidArgumentError,
     r"dt must be positive and finite, got inf"),
    ("theta-below-half", lambda s: ThetaScheme(s.problem, 0.1, theta=0.49), InvalidArgumentError,
     r"theta must be in \[0.5, 1\], got 0.49"),
    ("nsteps-float", lambda s: s.scheme.run(s.theta0, 2.5), InvalidArgumentError,
     r"nsteps must be an integer >= 0, got 2.5"),
    ("objective-nsteps-zero", lambda s: ReducedFunctional(s.scheme, s.theta0, 0, s.F.misfits), InvalidArgumentError,
     r"nsteps must be a positive integer, got 0"),
    ("misfit-beyond-nsteps", lambda s: ReducedFunctional(s.scheme, s.theta0, 3, s.F.misfits), InvalidArgumentError,
     r"a misfit observes step 4 > nsteps = 3"),
    ("time-off-grid", lambda s: steps_at([0.03], 0.02, 10), InvalidArgumentError,
     r"observation time 0.03 is not a multiple of dt = 0.02"),
    ("tikhonov-nan-weight", lambda s: Tikhonov(s.S, alpha=float("nan")), InvalidArgumentError,
     r"alpha must be a non-negative finite number, got nan"),
    ("tikhonov-reference-other-space", lambda s: Tikhonov(s.S, alpha=1.0, reference=s.theta0), InvalidArgumentError,
     r"reference must be a dolfinx.fem.Function in the space .*got one in"),
    ("direction-in-state-space", lambda s: s.F.directional_derivative(s.theta0), InvalidArgumentError,
     r"direction must be a dolfinx.fem.Function in the control space"),
    ("sensor-outside-mesh", lambda s: PointSensors(s.V, [[0.5, 0.5], [1.5, 0.5]]), InvalidArgumentError,
     r"sensor point 1 at \[1.5 0.5\] is outside the mesh"),
    ("checkpoint-too-small", _checkpoint_too_small, InvalidArgumentError, r"max_states=2 cannot hold the 5 states"),
    ("superlu-dist-adjoint", _superlu_adjoint, SolverError, r"'superlu_dist' are wrong in this PETSc"),
    ("secular-on-advection", lambda s: SecularSurrogate(s.F, 2), InvalidArgumentError,
     r"needs a Schrodinger problem, got AdvectionDiffusion"),
    ("eigenbasis-nev-zero", lambda s: Eigenbasis(_potential(s), 0), InvalidArgumentError,
     r"nev must be a positive integer, got 0"),
    ("surrogate-order-negative", lambda s: SurrogateGradient(s.F, order=-1), InvalidArgumentError,
     r"order must be an integer >= 0, got -1"),
    ("surrogate-of-non-objective", lambda s: FirstOrderSurrogate("F"), InvalidArgumentError,
     r"functional must be a ReducedFunctional, got str"),
    ("asymptotic-with-inflow", _inflow_asymptotic, InvalidArgumentError, r"without Dirichlet conditions"),
    ("inner-product-wrong-size", _wrong_inner_product, InvalidArgumentError,
     r"inner_product must be a PETSc Mat of size \(\d+, \d+\)"),
    ("vtx-without-bp", lambda s: FieldSeries("fields.h5", [s.theta0]), InvalidArgumentError,
     r"a VTX series needs a .bp path, got 'fields.h5'"),
    ("packet-zero-width", lambda s: gaussian_packet(_potential(s), [0.5, 0.5], 0.0), InvalidArgumentError,
     r"width must be positive and finite, got 0.0"),
    ("schrodinger-degree-zero", lambda s: schrodinger_space(s.V.mesh, 0), InvalidArgumentError,
     r"degree must be a positive integer, got 0"),
    ("mesh-file-missing", lambda s: read_mesh("/nonexistent/mesh.msh", s.comm), InvalidArgumentError,
     r"cannot read mesh file '/nonexistent/mesh.msh': no such file"),
    ("mesh-size-negative", lambda s: build_mesh("unit_square", s.comm, h=-1.0), InvalidArgumentError,
     r"h must be positive and finite, got -1.0"),
]


@pytest.mark.parametrize("name, call, error, pattern", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_a_clear_error_on_every_rank(setup, name, call, error, pattern):
    expected = pattern(setup.comm) if callable(pattern) else pattern
    if expected is None:
        call(setup)  # consistent on one rank: a correct result
        return
    with pytest.raises(error, match=expected) as info:
        call(setup)
    assert isinstance(info.value, SensitivityError), type(info.value)
    # every rank raised the same message (an assert on the reduced value, not on rank 0 alone)
    messages = setup.comm.allgather(str(info.value))
    assert len(set(messages)) == 1, messages


def test_the_table_covers_forty_inputs():
    assert len(CASES) >= 40, len(CASES)


def test_a_rank_without_cells_gives_the_serial_derivative():
    """A 1 x 1 mesh has two cells: under mpirun -n 3 one rank owns none. The adjoint derivative, the tangent
    check, the Hessian action and the surrogates run there and agree with the serial numbers."""
    comm = MPI.COMM_WORLD
    results = []
    for c in (comm, MPI.COMM_SELF):
        msh = mesh.create_unit_square(c, 1, 1)
        V = fem.functionspace(msh, ("Lagrange", 1))
        S = fem.functionspace(msh, ("Lagrange", 2))
        psi = fem.Function(S)
        psi.interpolate(lambda x: x[0] * (1 - x[0]) * x[1] * (1 - x[1]))
        problem = AdvectionDiffusion(V, StreamFunction(psi), 0.1)
        theta0 = fem.Function(V)
        theta0.interpolate(lambda x: x[0])
        sensors = PointSensors(V, [[0.3, 0.3]])
        F = ReducedFunctional(ThetaScheme(problem, 0.01), theta0, 4,
                              [ObservationMisfit(sensors, [2, 4], np.zeros((2, 1)))], Tikhonov(S, alpha=1e-3))
        v = fem.Function(S)
        v.interpolate(lambda x: x[0] * x[1])
        value, d = F.value_and_derivative()
        h = F.hessian_action(v)
        first = FirstOrderSurrogate(F).derivative()
        results.append((value, d.x.petsc_vec.dot(v.x.petsc_vec), F.directional_derivative(v),
                        h.x.petsc_vec.dot(v.x.petsc_vec), first.x.petsc_vec.dot(v.x.petsc_vec)))
    owned = comm.allgather(mesh.create_unit_square(comm, 1, 1).topology.index_map(2).size_local)
    if comm.size == 3:
        assert 0 in owned, owned  # the case this test is about
    distributed, serial = np.array(results[0]), np.array(results[1])
    assert np.all(np.abs(distributed - serial) <= 1e-10 * np.abs(serial) + 1e-15), (distributed, serial)
    assert abs(distributed[1] - distributed[2]) <= 1e-10 * abs(distributed[2])  # adjoint = tangent
