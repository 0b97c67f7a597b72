"""P2 Lagrange θ and the committed channel-with-obstacle mesh (docs/theory.md §2.2–2.3, §2.8).

Checks: the tangent of the θ-scheme with a P2 θ space passes the Taylor test
against finite differences of the discrete solver (with and without SUPG,
stream-function and vector-field controls, with a Dirichlet inflow); with P2 on a
tiny mesh it converges to the dense Fréchet derivative at second order in dt;
on ``meshes/channel_obstacle.msh`` with an inflow condition on the ``inlet``
facet tag and a Poiseuille stream function the Taylor rate is 2, and without a
Dirichlet condition a velocity tangential on every boundary conserves the mass
1ᵀMθ (and the tangent's mass stays zero); distributed results equal COMM_SELF
results."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

import sensitivity  # noqa: F401  (imports dolfinx_solver first)
from dolfinx import fem, mesh
from sensitivity.dense import expm_frechet
from sensitivity.fem import (
    AdvectionDiffusion,
    ObservationMisfit,
    PointSensors,
    ReducedFunctional,
    StreamFunction,
    Tangent,
    ThetaScheme,
    VelocityField,
)
from sensitivity.fem.backend import to_dense
from sensitivity.fem.meshes import facets, read_mesh
from tests.mpi_harness import ROOT

CHANNEL = ROOT / "meshes" / "channel_obstacle.msh"
L, H, CENTER, R = 2.2, 0.41, (0.2, 0.2), 0.05  # the committed channel geometry


# --------------------------------------------------------------------------- helpers


def _p2_setup(comm, theta0, n=5, control="stream", control_degree=2, supg=False, inflow=False, kappa=0.05):
    """P2 θ on the unit square; ψ in P``control_degree`` or u in vector P``control_degree``; θ0 interpolates
    the callable ``theta0`` (the ``initial_blob`` fixture)."""
    msh = mesh.create_unit_square(comm, n, n)
    V = fem.functionspace(msh, ("Lagrange", 2))
    if control == "stream":
        S = fem.functionspace(msh, ("Lagrange", control_degree))
        c, v = fem.Function(S), fem.Function(S)
        c.interpolate(lambda x: np.sin(np.pi * x[0]) ** 2 * np.sin(np.pi * x[1]) ** 2)
        v.interpolate(lambda x: x[0] * (1 - x[0]) * x[1] * (1 - x[1]) * (1 + x[0]))
        ctrl = StreamFunction(c)
    else:
        S = fem.functionspace(msh, ("Lagrange", control_degree, (2,)))
        c, v = fem.Function(S), fem.Function(S)
        c.interpolate(lambda x: np.vstack([1.0 + 0.3 * x[1] ** 2, 0.2 * np.sin(np.pi * x[0])]))
        v.interpolate(lambda x: np.vstack([np.cos(x[1]), x[0] * x[1] ** 2]))
        ctrl = VelocityField(c)
    bcs = []
    if inflow:
        dofs = fem.locate_dofs_geometrical(V, lambda x: np.isclose(x[0], 0.0))
        bcs = [fem.dirichletbc(np.float64(1.0), dofs, V)]
    prob = AdvectionDiffusion(V, ctrl, kappa, bcs=bcs, supg=supg)
    th0 = fem.Function(V)
    th0.interpolate(theta0)
    return prob, c, v, th0


def _gather(vec) -> np.ndarray:
    """A distributed PETSc vector as a NumPy array in global order, on every rank."""
    return np.concatenate(vec.getComm().tompi4py().allgather(vec.array))


def _mass(prob, x) -> float:
    """1ᵀ M x (collective)."""
    Mx = prob.M.createVecLeft()
    prob.M.mult(x, Mx)
    return Mx.sum()


def _smoothstep(s):
    s = np.clip(s, 0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


def _channel(data, flow, degree=2, kappa=0.01, inflow=None):
    """P``degree`` θ and a P2 stream function on a channel mesh (a TaggedMesh).

    ``flow="poiseuille"``: ψ(y) with u = (4y(H − y)/H², 0), tangential on the walls (not on
    the obstacle); by default θ = 1 on the ``inlet`` facets. ``flow="closed"``: a vortex
    whose ψ vanishes on the outer boundary and near the obstacle, so u·n = 0 on every
    boundary facet; by default no Dirichlet condition.
    """
    msh = data.mesh
    V = fem.functionspace(msh, ("Lagrange", degree))
    S = fem.functionspace(msh, ("Lagrange", 2))
    c, v, th0 = fem.Function(S), fem.Function(S), fem.Function(V)
    if flow == "poiseuille":
        c.interpolate(lambda x: 2.0 * x[1] ** 2 / H - 4.0 * x[1] ** 3 / (3.0 * H**2))
        # zero on both walls, so the perturbation is wall-tangential too
        v.interpolate(lambda x: H / np.pi * np.sin(np.pi * x[1] / H) ** 2 * (0.5 + x[0]))
        th0.interpolate(lambda x: np.exp(-((x[0] / 0.3) ** 2)) + np.exp(-40 * ((x[0] - 0.7) ** 2 + (x[1] - 0.25) ** 2)))
    elif flow == "closed":

        def away(x):  # 0 within 1.5 r of the obstacle's centre, 1 beyond 3.5 r
            return _smoothstep((np.hypot(x[0] - CENTER[0], x[1] - CENTER[1]) - 1.5 * R) / (2.0 * R))

        c.interpolate(lambda x: H / np.pi * np.sin(np.pi * x[0] / L) * np.sin(np.pi * x[1] / H) * away(x))
        v.interpolate(lambda x: H / np.pi * np.sin(2 * np.pi * x[0] / L) * np.sin(np.pi * x[1] / H) ** 2 * away(x))
        th0.interpolate(lambda x: np.exp(-30 * ((x[0] - 0.6) ** 2 + (x[1] - 0.2) ** 2)))
    else:  # pragma: no cover
        raise ValueError(flow)
    bcs = []
    if flow == "poiseuille" if inflow is None else inflow:
        tdim = msh.topology.dim
        msh.topology.create_connectivity(tdim - 1, tdim)
        dofs = fem.locate_dofs_topological(V, tdim - 1, facets(data, "inlet"))
        bcs = [fem.dirichletbc(np.float64(1.0), dofs, V)]
    return AdvectionDiffusion(V, StreamFunction(c), kappa, bcs=bcs), c, v, th0


def _summary(prob, v, th0, nsteps, dt=0.02):
    """Ordering-independent results of a tangent run: norms and masses of θ_N and ρ_N."""
    scheme = ThetaScheme(prob, dt)
    x, (r,) = Tangent(scheme, [v]).run(th0, nsteps)
    out = np.array([x.norm(), r.norm(), r.norm(3), _mass(prob, x), _mass(prob, r)])
    scheme.destroy()
    return out


# --------------------------------------------------------------------------- P2 on the unit square


@pytest.mark.mpi
@pytest.mark.parametrize(
    "control, control_degree, supg, inflow, theta",
    [
        ("stream", 2, False, False, 0.5),
        ("stream", 3, True, False, 0.5),
        ("field", 2, False, True, 0.5),
        ("field", 2, True, True, 1.0),
    ],
)
def test_p2_taylor_remainder_is_second_order(comm, initial_blob, tangent_taylor, control, control_degree, supg, inflow,
                                             theta):
    prob, c, v, th0 = _p2_setup(comm, initial_blob, control=control, control_degree=control_degree, supg=supg,
                                inflow=inflow)
    scheme = ThetaScheme(prob, 0.01, theta=theta)
    result, thN, rho, F0 = tangent_taylor(prob, scheme, c, v, th0, 10, step=0.1)
    assert (F0 - thN).norm() <= 1e-13 * thN.norm()  # forward state of the tangent run = plain run
    rates, res = result.rates[1], result.residuals[1]
    assert np.all(np.abs(rates - 2.0) < 0.1), (rates, res)
    assert rho.norm() > 1e-3  # the derivative is not trivially zero
    if inflow:  # ρ vanishes on the Dirichlet rows
        rows, _ = prob.dirichlet_rows()
        assert comm.allreduce(len(rows)) == 2 * 5 + 1  # P2 dofs on x = 0 of the 5 x 5 mesh
        assert np.all(np.abs(rho.array[rows]) < 1e-14 * rho.norm()), rho.array[rows]
    scheme.destroy()


@pytest.mark.mpi
@pytest.mark.parametrize("control, control_degree, supg", [("stream", 3, True), ("field", 2, True), ("field", 2, False)])
def test_p2_adjoint_gradient_equals_tangent_and_checkpointed_gradient(comm, initial_blob, control, control_degree,
                                                                      supg):
    """P2 θ exercises every SUPG pair feature (∇λ Δθ too): summed features (trajectory in
    memory), per-step assembly (checkpointed) and the tangent agree."""
    prob, c, v, th0 = _p2_setup(comm, initial_blob, control=control, control_degree=control_degree, supg=supg,
                                inflow=True)
    scheme = ThetaScheme(prob, 0.01)
    sensors = PointSensors(prob.V, [[0.5, 0.5], [0.7, 0.3]])
    data = np.full((2, 2), 0.1)
    misfit = ObservationMisfit(sensors, [4, 10], data, noise=0.05)
    gradients = []
    for options in ({}, {"max_states": 3}):
        F = ReducedFunctional(scheme, th0, 10, [misfit], **options)
        _, grad = F.value_and_derivative()
        assert F.stats["gradient_terms"] == ("outer products" if not options else "assembled per step")
        gradients.append(grad)
    tangent = F.directional_derivative(v)
    for grad in gradients:
        adjoint = grad.x.petsc_vec.dot(v.x.petsc_vec)
        assert abs(adjoint - tangent) <= 1e-10 * abs(tangent), (adjoint, tangent)
    diff = gradients[0].x.petsc_vec - gradients[1].x.petsc_vec
    assert diff.norm() <= 1e-12 * gradients[0].x.petsc_vec.norm()
    scheme.destroy()


@pytest.mark.mpi
@pytest.mark.parametrize("supg", [False, True])
def test_p2_agrees_with_dense_frechet_as_dt_vanishes(comm, initial_blob, supg):
    """CN tangent -> ∇_J exp(tQ)θ0 with Q = −M⁻¹A, J = −M⁻¹(∂A[v] + ∂M[v] Q), second order in dt.

    The matrices and vectors are gathered in PETSc's global order, so under mpirun this
    also checks the distributed assembly against the dense toolkit."""
    prob, c, v, th0 = _p2_setup(comm, initial_blob, n=3, supg=supg)
    M, A = prob.to_dense()
    dA, dM = prob.dA(v), prob.dM(v)
    assert (dM is not None) == supg
    Q = -np.linalg.solve(M, A)
    J = -np.linalg.solve(M, to_dense(dA) + (to_dense(dM) @ Q if supg else 0.0))
    T = 0.2
    exact = expm_frechet(Q, J, T) @ _gather(th0.x.petsc_vec)
    errs = []
    for nsteps in (20, 40, 80):
        scheme = ThetaScheme(prob, T / nsteps)
        _, (rho,) = Tangent(scheme, [v]).run(th0, nsteps)
        errs.append(np.linalg.norm(_gather(rho) - exact) / np.linalg.norm(exact))
        scheme.destroy()
    rates = np.log2(np.array(errs[:-1]) / errs[1:])
    assert np.all(np.abs(rates - 2.0) < 0.1), (errs, rates)
    assert errs[-1] < 1e-3, errs


@pytest.mark.mpi
def test_p2_distributed_equals_serial(comm, initial_blob):
    """Ordering-independent results of a P2 run (norms, integrals) equal a COMM_SELF run."""
    results = []
    for c in (comm, MPI.COMM_SELF):
        prob, _, v, th0 = _p2_setup(c, initial_blob, n=6, control="field", inflow=True, supg=True)
        results.append(_summary(prob, v, th0, 10, dt=0.01))
    distributed, serial = results
    assert np.allclose(distributed, serial, rtol=1e-11, atol=1e-14), (distributed, serial)


# --------------------------------------------------------------------------- the channel mesh


@pytest.mark.mpi
def test_channel_inflow_taylor_remainder_is_second_order(comm, tangent_taylor):
    """Inflow θ = 1 on the tagged inlet, Poiseuille ψ, P2 θ: Taylor rate 2 over a few steps;
    under mpirun the norms and masses also equal a COMM_SELF run's."""
    prob, c, v, th0 = _channel(read_mesh(CHANNEL, comm), "poiseuille")
    rows, values = prob.dirichlet_rows()
    assert comm.allreduce(len(rows)) == 2 * 12 + 1  # P2 dofs on the 12 inlet facets
    assert np.all(values == 1.0)
    scheme = ThetaScheme(prob, 0.02)
    nsteps = 6
    result, thN, rho, F0 = tangent_taylor(prob, scheme, c, v, th0, nsteps, step=0.1)
    assert (F0 - thN).norm() <= 1e-13 * thN.norm()  # forward state of the tangent run = plain run
    rates, res = result.rates[1], result.residuals[1]
    assert np.all(np.abs(rates - 2.0) < 0.1), (rates, res)
    assert rho.norm() > 1e-2 * thN.norm()
    # the Dirichlet rows hold θ = 1 and ρ = 0 (up to the round-off of the LU solve)
    assert np.all(np.abs(thN.array[rows] - 1.0) < 1e-14), thN.array[rows] - 1.0
    assert np.all(np.abs(rho.array[rows]) < 1e-14 * rho.norm()), rho.array[rows]
    scheme.destroy()
    if comm.size > 1:
        distributed = _summary(prob, v, th0, nsteps)
        serial_prob, _, serial_v, serial_th0 = _channel(read_mesh(CHANNEL, MPI.COMM_SELF), "poiseuille")
        serial = _summary(serial_prob, serial_v, serial_th0, nsteps)
        assert np.allclose(distributed, serial, rtol=1e-11, atol=1e-14), (distributed, serial)


@pytest.mark.mpi
@pytest.mark.parametrize("degree", [1, 2])
def test_channel_mass_is_conserved_for_tangential_flow(comm, degree):
    """No Dirichlet condition, u = curl ψ with ψ = 0 on every boundary (SUPG off): 1ᵀA = 0,
    1ᵀMθ_n is constant to 1e-12 and the tangent carries no mass. With the Poiseuille ψ,
    which crosses the inlet and outlet, the mass does change (the check can fail)."""
    data = read_mesh(CHANNEL, comm)
    nsteps = 10

    def masses(prob, v, th0):
        one = prob.create_vector()
        one.set(1.0)
        At1 = prob.A.createVecRight()
        prob.A.multTranspose(one, At1)
        scheme = ThetaScheme(prob, 0.02)
        out = []
        _, (rho,) = Tangent(scheme, [v]).run(th0, nsteps, callback=lambda n, x, rhos: out.append(_mass(prob, x)))
        scheme.destroy()
        assert len(out) == nsteps + 1
        return np.array(out), _mass(prob, rho), rho.norm(), At1.norm() / prob.A.norm()

    prob, c, v, th0 = _channel(data, "closed", degree=degree)
    assert not prob.bcs and not prob.supg
    mass, rho_mass, rho_norm, kernel = masses(prob, v, th0)
    drift = np.max(np.abs(mass - mass[0])) / abs(mass[0])
    assert kernel < 1e-13, kernel  # 1ᵀA = 0
    assert drift < 1e-12, drift
    assert abs(rho_mass) < 1e-12 * abs(mass[0]), rho_mass
    assert rho_norm > 1e-3 * th0.x.petsc_vec.norm(), rho_norm  # the tangent itself is not zero
    # negative control: the through-flow without an inflow condition changes the mass
    prob, _, v, th0 = _channel(data, "poiseuille", degree=degree, inflow=False)
    mass, _, _, kernel = masses(prob, v, th0)
    assert kernel > 1e-6 and np.max(np.abs(mass - mass[0])) / abs(mass[0]) > 1e-4, (kernel, mass)
