"""The real-split Schrödinger generator and sensitivities of densities to the potential
(docs/theory.md §3.1–3.5; Taylor tests as in §6).

Checks: Crank–Nicolson keeps ‖ψ‖_M and the energy ⟨ψ, Hψ⟩ to round-off over 1000 steps of
a moving packet in a harmonic well, backward Euler visibly loses both; a free Gaussian packet
against the exact solution: CN is second order in dt against the exact-in-time propagator
(same space), and the exact-in-time FE solution converges at order p + 1 in L² for P1 and P2;
tangents of densities at points and of region probabilities pass the Taylor test (P1 and DG0
potentials); the adjoint gradient of density misfits equals the tangent derivative, has Taylor
rate 2, and its Hessian action matches differences of gradients; on a tiny mesh the
tangents equal the dense toolkit's Fréchet derivative (CN as dt → 0 at order 2, the
exponential propagator exactly); distributed gradients equal COMM_SELF gradients; bad input
names the value."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.linalg
import ufl
from mpi4py import MPI
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError  # first: the package imports dolfinx_solver before dolfinx
from dolfinx import fem, mesh
from sensitivity.dense import expm_frechet
from sensitivity.fem import ReducedFunctional
from sensitivity.fem import ExponentialPropagator
from sensitivity.fem.backend import to_dense
from sensitivity.fem.objective import ObservationMisfit
from sensitivity.fem import DensitySensors, PointSensors, RegionProbabilities
from sensitivity.fem.output import gather_by_coordinates
from sensitivity.fem import ThetaScheme
from sensitivity.fem import PotentialField, Schrodinger, gaussian_packet, schrodinger_space
from sensitivity.fem import Tangent
from sensitivity.verification import taylor_test

# --------------------------------------------------------------------------- helpers


def _gather(vec: PETSc.Vec) -> np.ndarray:
    """A distributed vector in PETSc's global order, on every rank."""
    return np.concatenate(vec.getComm().tompi4py().allgather(vec.array))


def _free_mask(prob: Schrodinger) -> np.ndarray:
    """True on the free (non-wall) rows, in global order, on every rank."""
    mark = prob.create_vector()
    mark.set(0.0)
    mark.array[prob.dirichlet_rows()[0]] = 1.0
    return _gather(mark) == 0.0


def _as_function(space, vec: PETSc.Vec) -> fem.Function:
    out = fem.Function(space)
    vec.copy(out.x.petsc_vec)
    out.x.scatter_forward()
    return out


# --------------------------------------------------------------------------- the well: conservation


def _harmonic_well(comm, n=32, half=5.0, omega=1.0):
    """P1 on [-half, half]², V = ω²|x|²/2 (P1), a packet at (-1.5, 0) with momentum (0, 1.5)."""
    msh = mesh.create_rectangle(comm, [[-half, -half], [half, half]], [n, n])
    W = schrodinger_space(msh, 1)
    V = fem.Function(fem.functionspace(msh, ("Lagrange", 1)))
    V.interpolate(lambda x: 0.5 * omega**2 * (x[0] ** 2 + x[1] ** 2))
    prob = Schrodinger(W, PotentialField(V))
    return prob, gaussian_packet(prob, [-1.5, 0.0], 0.8, [0.0, 1.5])


@pytest.mark.mpi
def test_crank_nicolson_conserves_norm_and_energy_and_backward_euler_does_not(comm):
    """CN: ‖ψ_n‖_M = 1 and E_n = E_0 to round-off at every one of 1000 steps of a packet that
    moves; backward Euler (‖w_{n+1}‖² = ⟨w_{n+1}, w_n⟩_M) loses norm at every step, visibly."""
    prob, psi0 = _harmonic_well(comm)
    E0 = prob.energy(psi0)
    dt = 0.01
    # MUMPS's distributed solves are latency-bound when mpirun oversubscribes the cores (1000
    # steps took ~40 s under -n 3 on two cores); SuperLU_DIST takes ~1 s. The scheme is the same.
    options = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "superlu_dist"}
    results = {}
    for theta, nsteps in ((0.5, 1000), (1.0, 200)):  # CN: T = 10 > one period 2π of the well
        norms, energies = [], []
        scheme = ThetaScheme(prob, dt, theta=theta, petsc_options=options)
        start = time.perf_counter()
        wN = scheme.run(psi0, nsteps, callback=lambda n, w: (norms.append(prob.norm(w)),
                                                               energies.append(prob.energy(w))))
        elapsed = time.perf_counter() - start
        assert len(norms) == nsteps + 1 and norms[0] == pytest.approx(1.0, abs=1e-14)
        norms, energies = np.array(norms), np.array(energies) / E0
        results[theta] = norms, energies
        if theta == 0.5:  # the packet really moved: the conservation is not trivial
            d = wN.copy()
            d.axpy(-1.0, psi0.x.petsc_vec)
            moved = prob.norm(d)
        scheme.destroy()
        if comm.rank == 0:
            print(f"theta = {theta}: max |‖ψ_n‖_M − 1| = {np.max(np.abs(norms - 1)):.2e}, "
                  f"max |E_n/E_0 − 1| = {np.max(np.abs(energies - 1)):.2e} over {nsteps} steps ({elapsed:.2f} s)")
    norms, energies = results[0.5]
    assert np.max(np.abs(norms - 1.0)) <= 1e-12, f"CN norm drift {np.max(np.abs(norms - 1.0)):.3e}"
    assert np.max(np.abs(energies - 1.0)) <= 1e-12, f"CN energy drift {np.max(np.abs(energies - 1.0)):.3e}"
    assert moved > 0.5, moved
    # backward Euler damps: the checks above would fail for it
    norms, energies = results[1.0]
    assert np.all(np.diff(norms) < 0.0), np.diff(norms).max()
    assert norms[-1] < 0.95 and energies[-1] < 0.9, (norms[-1], energies[-1])


@pytest.mark.mpi
def test_packet_is_normalized_and_density_matches_point_densities(comm):
    """‖ψ0‖_M = 1, |ψ|² of :meth:`density` at mesh vertices equals DensitySensors there, and
    densities are invariant under a global phase (a, b) → (−b, a)."""
    prob, psi0 = _harmonic_well(comm, n=8)
    assert prob.norm(psi0) == pytest.approx(1.0, abs=1e-14)
    vertices = [[-1.25, 0.0], [-2.5, 1.25], [0.0, -1.25]]  # vertices of the 8 x 8 mesh of [-5, 5]²
    dens = prob.density(psi0)
    at_nodes = PointSensors(dens.function_space, vertices).evaluate(dens)
    sensors = DensitySensors(prob.V, vertices)
    y = sensors.evaluate(psi0)
    assert np.min(y) > 1e-3, y
    np.testing.assert_allclose(at_nodes, y, rtol=1e-12)
    rotated = fem.Function(prob.V)
    pairs = psi0.x.array.reshape(-1, 2)
    rotated.x.array[:] = np.column_stack([-pairs[:, 1], pairs[:, 0]]).ravel()
    np.testing.assert_allclose(sensors.evaluate(rotated), y, rtol=1e-12)


# --------------------------------------------------------------------------- free packet: the exact solution

SIGMA, X0, K = 1.0, (0.0, 0.0), (1.0, 0.5)
HALF, T_FREE = 5.0, 0.25  # the packet stays ≥ 4.5 widths from the walls up to T_FREE


def _exact_free_packet(x, t):
    r"""(Re ψ, Im ψ) of the free packet, UFL, for ψ(x, 0) = exp(−|x − x0|²/(2σ²) + ik·(x − x0)).

    ψ = Π_d sqrt(σ²/(σ² + it)) exp(−(x_d − x0_d − k_d t)²/(2(σ² + it)) + i k_d(x_d − x0_d)
    − i k_d² t/2); in 2-D the two square roots multiply to σ²/(σ² + it) = σ²(σ² − it)/(σ⁴ + t²):
    no branch to choose.
    """
    D = SIGMA**4 + t**2
    re_exp, im_exp = 0.0, 0.0
    for d in range(2):
        xi = x[d] - X0[d] - K[d] * t
        re_exp = re_exp - xi**2 * SIGMA**2 / (2 * D)
        im_exp = im_exp + xi**2 * t / (2 * D) + K[d] * (x[d] - X0[d]) - K[d] ** 2 * t / 2
    pre_re, pre_im = SIGMA**4 / D, -(SIGMA**2) * t / D
    amp = ufl.exp(re_exp)
    return (amp * (pre_re * ufl.cos(im_exp) - pre_im * ufl.sin(im_exp)),
            amp * (pre_re * ufl.sin(im_exp) + pre_im * ufl.cos(im_exp)))


def _free_packet(comm, degree, n):
    """V = 0 on [-HALF, HALF]², the packet, and the constant c with ψ_h(0) = c I_h ψ(·, 0).

    ``gaussian_packet`` normalizes the interpolant (walls zeroed) in the discrete M-norm, so the
    matching exact solution is c ψ(x, t) with c = 1/‖I_h ψ(·, 0)‖_M, computed here independently."""
    msh = mesh.create_rectangle(comm, [[-HALF, -HALF], [HALF, HALF]], [n, n])
    W = schrodinger_space(msh, degree)
    prob = Schrodinger(W, PotentialField(fem.Function(fem.functionspace(msh, ("Discontinuous Lagrange", 0)))))
    psi0 = gaussian_packet(prob, X0, SIGMA, K)
    interp = fem.Function(W)
    expr = ufl.as_vector(_exact_free_packet(ufl.SpatialCoordinate(msh), 0.0))
    interp.interpolate(fem.Expression(expr, W.element.interpolation_points))
    interp.x.petsc_vec.array[prob.dirichlet_rows()[0]] = 0.0
    interp.x.scatter_forward()
    c = 1.0 / prob.norm(interp)
    d = interp.x.petsc_vec.copy()
    d.scale(c)
    d.axpy(-1.0, psi0.x.petsc_vec)
    assert d.norm() <= 1e-13, d.norm()  # gaussian_packet: the same profile, phase and constant
    return prob, psi0, c


def _l2_error(prob, w: PETSc.Vec, c: float, t: float) -> float:
    """‖ψ_h − c ψ(t)‖_{L²} with a high-degree quadrature (collective)."""
    msh = prob.V.mesh
    u = _as_function(prob.V, w)
    a, b = _exact_free_packet(ufl.SpatialCoordinate(msh), t)
    p = prob.V.ufl_element().embedded_superdegree
    dx = ufl.dx(metadata={"quadrature_degree": 2 * p + 8})
    local = fem.assemble_scalar(fem.form(((u[0] - c * a) ** 2 + (u[1] - c * b) ** 2) * dx))
    return float(np.sqrt(msh.comm.allreduce(local)))


@pytest.mark.mpi
def test_crank_nicolson_is_second_order_in_time(comm):
    """CN against the exact-in-time propagator of the same space (which keeps the norm to
    1e-10): errors in the M-norm for dt, dt/2, dt/4 fall at rate 2."""
    prob, psi0, _ = _free_packet(comm, 1, 32)
    exact = ExponentialPropagator(prob)
    ref = exact.apply(psi0, T_FREE)
    assert prob.norm(ref) == pytest.approx(1.0, abs=1e-10)
    errors = []
    for nsteps in (8, 16, 32):
        scheme = ThetaScheme(prob, T_FREE / nsteps)
        d = scheme.run(psi0, nsteps)
        d.axpy(-1.0, ref)
        errors.append(prob.norm(d))
        scheme.destroy()
    rates = np.log2(np.array(errors[:-1]) / errors[1:])
    if comm.rank == 0:
        print(f"CN vs exact in time: M-norm errors {errors}, rates {rates}")
    assert np.all(np.abs(rates - 2.0) < 0.1), f"dt rates {rates}, errors {errors}"
    assert errors[-1] < 1e-3, errors
    exact.destroy()


@pytest.mark.parametrize("degree, meshes", [(1, (16, 32, 64)),
                                            pytest.param(2, (8, 16, 32), marks=pytest.mark.slow)])  # ~5 s
def test_free_packet_converges_at_order_p_plus_1_in_h(degree, meshes):
    """The exact-in-time FE solution e^{TQ}ψ_h(0) against c ψ(x, T) in L²: rate p + 1.
    The energy of the discrete packet converges to (|k|² + 1/σ²)/2 too."""
    comm = MPI.COMM_WORLD
    errors, energies = [], []
    for n in meshes:
        prob, psi0, c = _free_packet(comm, degree, n)
        exact = ExponentialPropagator(prob)
        wT = exact.apply(psi0, T_FREE)
        errors.append(_l2_error(prob, wT, c, T_FREE))
        energies.append(prob.energy(psi0))
        exact.destroy()
    rates = np.log2(np.array(errors[:-1]) / errors[1:])
    exact_energy = 0.5 * (K[0] ** 2 + K[1] ** 2 + 1.0 / SIGMA**2)
    print(f"P{degree}: L2 errors {errors}, rates {rates}; energies {energies} -> {exact_energy}")
    assert np.all(np.abs(rates - (degree + 1)) < 0.2), f"P{degree} h rates {rates}, errors {errors}"
    assert abs(energies[-1] / exact_energy - 1.0) < (1e-2 if degree == 1 else 1e-3), energies
    assert abs(energies[-1] - exact_energy) < abs(energies[0] - exact_energy), energies


# --------------------------------------------------------------------------- sensitivities to the potential

SENSOR_POINTS = [[0.5, 0.5], [0.62, 0.41], [0.3, 0.55], [0.45, 0.7]]
REGIONS = (1, 2, 3)  # x < 0.4, 0.4 <= x < 0.7, x >= 0.7: a partition


def _well(comm, family="P1", n=8, dt=0.005):
    """P1 ψ on the unit square, V = 20|x − (½, ½)|² in P1 or DG0, a packet with momentum;
    a direction v; density sensors and region probabilities."""
    msh = mesh.create_unit_square(comm, n, n)
    W = schrodinger_space(msh, 1)
    S = fem.functionspace(msh, ("Lagrange", 1) if family == "P1" else ("Discontinuous Lagrange", 0))
    V, v = fem.Function(S), fem.Function(S)
    V.interpolate(lambda x: 20.0 * ((x[0] - 0.5) ** 2 + (x[1] - 0.5) ** 2))
    v.interpolate(lambda x: np.cos(3.0 * x[0]) + x[1] ** 2 - 0.3)
    prob = Schrodinger(W, PotentialField(V))
    psi0 = gaussian_packet(prob, [0.4, 0.5], 0.12, [6.0, 2.0])
    tdim = msh.topology.dim
    cells = np.arange(msh.topology.index_map(tdim).size_local, dtype=np.int32)
    mid = mesh.compute_midpoints(msh, tdim, cells)[:, 0]
    tags = mesh.meshtags(msh, tdim, cells, np.select([mid < 0.4, mid < 0.7], [1, 2], 3).astype(np.int32))
    return prob, psi0, v, DensitySensors(W, SENSOR_POINTS), RegionProbabilities(W, tags, REGIONS), \
        ThetaScheme(prob, dt)


@pytest.mark.parametrize("family", ["P1", pytest.param("DG0", marks=pytest.mark.mpi)])
def test_density_and_region_probability_tangents_pass_the_taylor_test(comm, control_map, family):
    prob, psi0, v, sensors, regions, scheme = _well(comm, family)
    nsteps = 12
    wN, (rho,) = Tangent(scheme, [v]).run(psi0, nsteps)
    potential = prob.control.function
    rates = {}
    for name, obs in (("densities", sensors), ("regions", regions)):
        y0, dy = obs.evaluate(wN), obs.jacobian_action(wN, rho)
        assert np.max(np.abs(dy)) > 1e-3 * np.max(np.abs(y0)), (name, dy, y0)  # not trivially zero
        observed = control_map(prob, scheme, potential, lambda obs=obs: obs.evaluate(scheme.run(psi0, nsteps)))
        result = taylor_test(observed, potential, v, value=y0, derivative=dy, step=0.5)
        rem = result.residuals[1]
        rates[name] = result.rates[1]
        if comm.rank == 0:
            print(f"{family} {name}: Taylor remainders {np.array(rem)}, rates {rates[name]}")
        assert np.all(np.abs(rates[name] - 2.0) < 0.1), (name, rates[name], rem)
    # the regions partition the square: probabilities sum to ‖ψ‖² = 1 for every V, so their
    # tangents sum to zero
    assert np.sum(regions.evaluate(wN)) == pytest.approx(1.0, abs=1e-13)
    dy = regions.jacobian_action(wN, rho)
    assert abs(np.sum(dy)) < 1e-12 * np.max(np.abs(dy)) + 1e-15, dy
    scheme.destroy()


def _density_functional(comm, family="P1", n=8):
    """Misfits of densities at steps 4, 8, 12 and of region probabilities at 6, 12."""
    prob, psi0, v, sensors, regions, scheme = _well(comm, family, n=n)
    rng = np.random.default_rng(11)  # the same data on every rank
    misfits = [
        ObservationMisfit(sensors, [4, 8, 12], rng.uniform(0.0, 20.0, (3, sensors.num_sensors)), noise=2.0),
        ObservationMisfit(regions, [6, 12], rng.uniform(0.1, 0.5, (2, regions.num_sensors)), noise=0.05),
    ]
    return ReducedFunctional(scheme, psi0, 12, misfits), v


@pytest.mark.mpi
@pytest.mark.parametrize("family", ["P1", "DG0"])
def test_adjoint_gradient_equals_tangent_derivative_and_taylor_rate_is_two(comm, reduced_taylor, family):
    F, v = _density_functional(comm, family)
    value, grad = F.value_and_derivative()
    assert value == pytest.approx(F.value(), rel=1e-13)
    adjoint = grad.x.petsc_vec.dot(v.x.petsc_vec)
    tangent = F.directional_derivative(v)
    rel = abs(adjoint - tangent) / abs(tangent)
    if comm.rank == 0:
        print(f"{family}: adjoint {adjoint!r}, tangent {tangent!r}, relative difference {rel:.2e}")
    assert abs(tangent) > 1e-3 * abs(value), (tangent, value)
    assert rel <= 1e-10, (adjoint, tangent)
    # gradient Taylor test
    result = reduced_taylor(F, v, value, adjoint, step=0.5)
    rem, rates = result.residuals[1], result.rates[1]
    if comm.rank == 0:
        print(f"{family}: gradient Taylor remainders {np.array(rem)}, rates {rates}")
    assert np.all(np.abs(rates - 2.0) < 0.1), (rates, rem)
    assert F.value() == pytest.approx(value, rel=1e-14)  # the control was restored


@pytest.mark.parametrize("family", [pytest.param("P1", marks=pytest.mark.mpi), "DG0"])
def test_hessian_action_matches_gradient_differences_and_is_symmetric(comm, family):
    F, v = _density_functional(comm, family)
    w = fem.Function(v.function_space)
    w.interpolate(lambda x: np.sin(2.0 * x[0]) * x[1] + 0.5)
    Hv_fn, Hw_fn = F.hessian_action(v), F.hessian_action(w)  # the Functions own the vectors
    Hv, Hw = Hv_fn.x.petsc_vec, Hw_fn.x.petsc_vec
    assert Hw.dot(v.x.petsc_vec) == pytest.approx(Hv.dot(w.x.petsc_vec), rel=1e-10)
    c0 = F.control.x.petsc_vec.copy()
    errors = []
    for eps in (0.2, 0.1):
        grads = []
        for sign in (1.0, -1.0):
            c = c0.copy()
            c.axpy(sign * eps, v.x.petsc_vec)
            F.set_control(c)
            g = F.derivative()  # (a Function destroys its PETSc vector when it is collected)
            grads.append(g.x.petsc_vec.copy())
        fd = grads[0] - grads[1]
        fd.scale(1.0 / (2.0 * eps))
        fd.axpy(-1.0, Hv)
        errors.append(fd.norm() / Hv.norm())
    F.set_control(c0)
    if comm.rank == 0:
        print(f"{family}: Hessian vs central differences of gradients, relative errors {errors}, "
              f"rate {np.log2(errors[0] / errors[1]):.3f}")
    assert errors[0] < 1e-2, errors
    assert abs(np.log2(errors[0] / errors[1]) - 2.0) < 0.2, errors  # central differences: O(ε²)


# --------------------------------------------------------------------------- the dense toolkit


def _dense_generator(prob, v):
    """Dense Q = −M_FF⁻¹A_FF, J = −M_FF⁻¹∂A[v]_FF on the free rows (global order) and the mask."""
    M, A = prob.to_dense()
    dA = prob.dA(v)
    C = to_dense(dA)
    dA.destroy()
    free = _free_mask(prob)
    ix = np.ix_(free, free)
    Q = -np.linalg.solve(M[ix], A[ix])
    J = -np.linalg.solve(M[ix], C[ix])
    return Q, J, free


@pytest.mark.parametrize("family", [pytest.param("P1", marks=pytest.mark.mpi), "DG0"])
def test_tangents_agree_with_dense_frechet_derivative(comm, family):
    """On a 4 x 4 mesh: the exact-in-time tangent equals expm_frechet(Q, J, t) w0 to 1e-10, and
    the CN tangent converges to it at order 2 in dt. Gathered in global order, so under
    mpirun this also checks the distributed assembly."""
    prob, psi0, v, *_, scheme = _well(comm, family, n=4)
    scheme.destroy()
    Q, J, free = _dense_generator(prob, v)
    T = 0.05
    w0 = _gather(psi0.x.petsc_vec)
    assert np.all(w0[~free] == 0.0)
    exact_w = scipy.linalg.expm(T * Q) @ w0[free]
    exact_rho = expm_frechet(Q, J, T) @ w0[free]
    prop = ExponentialPropagator(prob)
    w, rho = (_gather(x) for x in prop.tangent(psi0, v, T))
    err_w = np.linalg.norm(w[free] - exact_w) / np.linalg.norm(exact_w)
    err_rho = np.linalg.norm(rho[free] - exact_rho) / np.linalg.norm(exact_rho)
    assert np.all(rho[~free] == 0.0) and np.all(w[~free] == 0.0)
    errs = []
    for nsteps in (24, 48, 96):
        cn = ThetaScheme(prob, T / nsteps)
        _, (r,) = Tangent(cn, [v]).run(psi0, nsteps)
        errs.append(np.linalg.norm(_gather(r)[free] - exact_rho) / np.linalg.norm(exact_rho))
        cn.destroy()
    rates = np.log2(np.array(errs[:-1]) / errs[1:])
    if comm.rank == 0:
        print(f"{family} dense: exponential |Δw| {err_w:.2e}, |Δρ| {err_rho:.2e}; "
              f"CN tangent errors {np.array(errs)}, rates {rates}")
    assert err_w <= 1e-10 and err_rho <= 1e-10, (err_w, err_rho)
    assert np.all(np.abs(rates - 2.0) < 0.1), (errs, rates)
    assert errs[-1] < 1e-2, errs
    prop.destroy()


def test_exponential_propagator_with_walls_equals_dense_exponential(comm):
    prob, psi0, v, *_, scheme = _well(comm, "P1", n=4)
    scheme.destroy()
    Q, J, free = _dense_generator(prob, v)
    T = 0.1
    w0 = _gather(psi0.x.petsc_vec)[free]
    prop = ExponentialPropagator(prob)
    w, rho = (_gather(x)[free] for x in prop.tangent(psi0, v, T))
    applied = _gather(prop.apply(psi0, T))[free]
    exact_w, exact_rho = scipy.linalg.expm(T * Q) @ w0, expm_frechet(Q, J, T) @ w0
    assert np.linalg.norm(applied - exact_w) <= 1e-10 * np.linalg.norm(exact_w)
    assert np.linalg.norm(w - exact_w) <= 1e-10 * np.linalg.norm(exact_w)
    assert np.linalg.norm(rho - exact_rho) <= 1e-10 * np.linalg.norm(exact_rho)


# --------------------------------------------------------------------------- parallel


@pytest.mark.mpi
@pytest.mark.parametrize("family", ["P1", "DG0"])
def test_distributed_gradient_equals_serial(comm, family):
    """The adjoint gradient on the distributed mesh, gathered and matched by dof coordinates,
    equals a COMM_SELF computation on every rank."""
    distributed = gather_by_coordinates(_density_functional(comm, family)[0].derivative())
    serial = gather_by_coordinates(_density_functional(MPI.COMM_SELF, family)[0].derivative())
    np.testing.assert_allclose(distributed[0], serial[0], atol=1e-12)
    scale = np.max(np.abs(serial[1]))
    assert scale > 0.0
    np.testing.assert_allclose(distributed[1], serial[1], rtol=1e-10, atol=1e-11 * scale)


# --------------------------------------------------------------------------- bad input


@pytest.mark.mpi
def test_bad_input_names_the_value(comm):
    msh = mesh.create_unit_square(comm, 3, 3)
    W = schrodinger_space(msh, 1)
    scalar = fem.functionspace(msh, ("Lagrange", 1))
    vector = fem.functionspace(msh, ("Lagrange", 1, (2,)))
    potential = PotentialField(fem.Function(scalar))
    with pytest.raises(InvalidArgumentError, match=r"two-component \(Re, Im\) space .*got value shape \(\)"):
        Schrodinger(scalar, potential)
    with pytest.raises(InvalidArgumentError, match=r"a potential is scalar, got value shape \(2,\)"):
        PotentialField(fem.Function(vector))
    with pytest.raises(InvalidArgumentError, match="potential must be a PotentialField, got Function"):
        Schrodinger(W, fem.Function(scalar))
    with pytest.raises(InvalidArgumentError, match="degree must be a positive integer, got 0"):
        schrodinger_space(msh, 0)
    prob = Schrodinger(W, potential)
    for width in (0.0, -0.1, float("nan"), "0.1", None):
        with pytest.raises(InvalidArgumentError, match=f"width must be positive and finite, got {width!r}"):
            gaussian_packet(prob, [0.5, 0.5], width)
    with pytest.raises(InvalidArgumentError, match=r"center and momentum must be finite with 2 components"):
        gaussian_packet(prob, [0.5, 0.5, 0.0], 0.1)
    with pytest.raises(InvalidArgumentError, match="densities need the two-component .* got block size 1"):
        DensitySensors(scalar, [[0.5, 0.5]])
    tdim = msh.topology.dim
    cells = np.arange(msh.topology.index_map(tdim).size_local, dtype=np.int32)
    tags = mesh.meshtags(msh, tdim, cells, np.ones_like(cells))
    with pytest.raises(InvalidArgumentError, match="region tag 7 has no cells"):
        RegionProbabilities(W, tags, [1, 7])
