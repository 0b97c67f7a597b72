"""Surrogate gradients of the finite-element problem: order K and long-time asymptotics (docs/theory.md §1–2).

Checks: the order-K gradient is the transpose of its forward directional form (K = 0..3, with
and without SUPG and a Dirichlet inflow); both equal a dense evaluation of
Σ_n ∇f_nᵀ S^n Σ_k t_n^{k+1}/(k+1)! ad^k(J)θ0 on a tiny mesh, and with S^n -> exp(t_nQ) the dense
series is ``sensitivity.dense.series_surrogate``; the error against the exact adjoint gradient
falls with K for a short final time; the group inverse and the stationary vector agree with the
rate-matrix toolkit; the asymptotic gradient equals the dense tΠJΠ − ΠJQ^# − Q^#JΠ and its error
against the exact gradient falls as the final time grows (while the first-order surrogate's
grows); bad input names the bad value.

Every test here is collective and marked ``mpi``: ``tests/test_parallel.py`` reruns them under
``mpirun -n 2`` and ``-n 3`` with a timeout.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import ufl

# sensitivity before dolfinx: the package imports dolfinx_solver first
from sensitivity.dense import RateMatrix, group_inverse, random_rate_matrix, series_surrogate, stationary_distribution
from dolfinx import fem, mesh
from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import (
    AdvectionDiffusion,
    AsymptoticSurrogate,
    FirstOrderSurrogate,
    GroupInverse,
    ObservationMisfit,
    PointSensors,
    ReducedFunctional,
    SurrogateGradient,
    ThetaScheme,
    Tikhonov,
    VelocityField,
)
from sensitivity.fem.backend import to_dense
from sensitivity.verification import dot_product_test


# ---------------------------------------------------------------------------- helpers


def _gather(vec) -> np.ndarray:
    """The owned entries of every rank, in the global (PETSc) order, on every rank."""
    return np.concatenate(vec.getComm().tompi4py().allgather(vec.array_r.copy()))


def _pair(a, b) -> tuple[float, float]:
    """Relative error and angle (degrees) of vector ``a`` against ``b``."""
    d = a.copy()
    d.axpy(-1.0, b)
    cosine = a.dot(b) / (a.norm() * b.norm())
    err = d.norm() / b.norm()
    d.destroy()
    return err, float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def _regularization_dot(F, v) -> float:
    if F.regularization is None:
        return 0.0
    g = F.control_space.create_vector()
    g.set(0.0)
    F.regularization.add_gradient(F.control, g)
    value = g.dot(v.x.petsc_vec)
    g.destroy()
    return value


def _dense_problem(F, v) -> dict:
    """Dense M, A, ∂A[v], ∂M[v], the Dirichlet mask, the CN step matrix S and the misfit gradients."""
    s, prob = F.scheme, F.problem
    comm = prob.V.mesh.comm
    M, A = prob.to_dense()
    dAv = prob.dA(v)
    dA = to_dense(dAv)
    dAv.destroy()
    dMv = prob.dM(v)
    dM = np.zeros_like(M) if dMv is None else to_dense(dMv)
    if dMv is not None:
        dMv.destroy()
    local, _ = prob.dirichlet_rows()
    rows = np.concatenate(comm.allgather(prob.V.dofmap.index_map.local_to_global(local)))
    free = np.ones(M.shape[0])
    free[rows.astype(int)] = 0.0
    L = M + s.theta * s.dt * A
    R = M - (1.0 - s.theta) * s.dt * A
    L[rows, :] = 0.0
    L[rows, rows] = 1.0
    R[rows, :] = 0.0
    grads = {}

    def record(n, theta):
        if n > 0 and any(m.active(n) for m in F.misfits):
            g = s.create_vector()
            g.set(0.0)
            F.add_misfit_gradient(n, theta, g)
            grads[n] = _gather(g)
            g.destroy()

    s.run(F.theta0, F.nsteps, callback=record).destroy()
    return {"M": M, "A": A, "dA": dA, "dM": dM, "P": np.diag(free), "S": np.linalg.solve(L, R),
            "theta0": _gather(F.theta0), "grads": grads, "dt": s.dt, "reg": _regularization_dot(F, v)}


def _ad(Q, J, k) -> np.ndarray:
    """ad_{-Q}^k(J) = Σ_l (-1)^l C(k, l) Q^l J Q^{k-l}, from the binomial sum (not the toolkit's recursion)."""
    mp = np.linalg.matrix_power
    return sum((-1) ** l * math.comb(k, l) * mp(Q, l) @ J @ mp(Q, k - l) for l in range(k + 1))


def _asymptotic(Pi, G, J, t) -> np.ndarray:
    """tΠJΠ − ΠJQ^# − Q^#JΠ."""
    return t * Pi @ J @ Pi - Pi @ J @ G - G @ J @ Pi


def _cellular(comm, *, n=6, kappa=0.2, supg=False, T=1.0, nsteps=20, theta=0.5, regularization=True):
    """No-flux cellular flow u = curl ψ, ψ = sin(πx)sin(πy)/π in P2, as a VelocityField in DG1 (exactly
    u = curl ψ_h: divergence-free, u·n = 0, so 1ᵀA = 0), and a direction that is neither (ΠJ ≠ 0)."""
    msh = mesh.create_unit_square(comm, n, n)
    V = fem.functionspace(msh, ("Lagrange", 1))
    psi = fem.Function(fem.functionspace(msh, ("Lagrange", 2)))
    psi.interpolate(lambda x: np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]) / np.pi)
    W = fem.functionspace(msh, ("Discontinuous Lagrange", 1, (2,)))
    c = fem.Function(W)
    c.interpolate(fem.Expression(ufl.as_vector((psi.dx(1), -psi.dx(0))), W.element.interpolation_points))
    prob = AdvectionDiffusion(V, VelocityField(c), kappa, supg=supg)
    v = fem.Function(W)
    v.interpolate(lambda x: np.vstack([x[0] * (1 - x[0]) * (1 + x[1]), 0.5 * np.sin(np.pi * x[1]) * x[0]]))
    th0 = fem.Function(V)
    th0.interpolate(lambda x: np.exp(-20 * ((x[0] - 0.3) ** 2 + (x[1] - 0.5) ** 2)))
    sensors = PointSensors(V, [[0.5, 0.5], [0.7, 0.3], [0.25, 0.8]])
    steps = np.array([nsteps // 2, 3 * nsteps // 4, nsteps])
    data = np.random.default_rng(3).uniform(0.0, 0.3, (3, 3))  # the same on every rank
    reg = Tikhonov(W, alpha=1e-3) if regularization else None
    F = ReducedFunctional(ThetaScheme(prob, T / nsteps, theta=theta), th0, nsteps, [ObservationMisfit(sensors, steps, data, 0.1)],
                          reg)
    return F, v


# ---------------------------------------------------------------------------- order K


@pytest.mark.mpi
@pytest.mark.parametrize("control, supg, inflow", [("stream", False, False), ("field", True, True)])
def test_order_k_gradient_is_the_transpose_of_its_directional_form(comm, advection_functional, control, supg,
                                                                  inflow):
    F, v = advection_functional(comm, control=control, supg=supg, inflow=inflow, nsteps=5)
    value = F.value()
    observed = set().union(*(m.steps.tolist() for m in F.misfits))
    for K in range(4):
        surrogate = SurrogateGradient(F, order=K)
        val, grad = surrogate.value_and_derivative()
        assert val == pytest.approx(value, rel=1e-13)
        assert surrogate.stats["stored_vectors"] == len(observed) < F.nsteps  # the observation steps, no trajectory
        assert surrogate.stats["assemblies"] == (K + 1) * (2 if supg else 1)
        backward = grad.x.petsc_vec.dot(v.x.petsc_vec)
        forward = surrogate.directional_derivative(v)
        assert abs(forward - _regularization_dot(F, v)) > 1e-3 * abs(forward)  # not just the regularization
        assert abs(backward - forward) <= 1e-10 * abs(forward), (K, backward, forward)


@pytest.mark.mpi
@pytest.mark.parametrize("control, supg, inflow", [("stream", False, False), ("field", True, True)])
def test_order_k_matches_dense_oracle(comm, advection_functional, control, supg, inflow):
    F, v = advection_functional(comm, control=control, supg=supg, inflow=inflow, nsteps=5, dt=0.005)
    d = _dense_problem(F, v)
    M, P, S, x0, dt = d["M"], d["P"], d["S"], d["theta0"], d["dt"]
    Q = -np.linalg.solve(M, d["A"])
    Qh = P @ Q  # the projected generator
    J = -P @ np.linalg.solve(M, d["dA"] + d["dM"] @ Q)  # = dQh[v]
    for K in range(4):
        series = [_ad(Qh, J, k) @ x0 for k in range(K + 1)]
        discrete = d["reg"] + sum(
            g @ np.linalg.matrix_power(S, n) @ sum(t ** (k + 1) / math.factorial(k + 1) * w for k, w in enumerate(series))
            for n, g in d["grads"].items() for t in [n * dt])
        surrogate = SurrogateGradient(F, order=K)
        grad = surrogate.derivative()
        assert grad.x.petsc_vec.dot(v.x.petsc_vec) == pytest.approx(discrete, rel=1e-9), K
        assert surrogate.directional_derivative(v) == pytest.approx(discrete, rel=1e-9), K
        # with exp(t_n Q) for S^n, the same sum is the dense toolkit's series surrogate (seed 1.5)
        continuous = sum(g @ scipy.linalg.expm(n * dt * Qh) @ sum(
            (n * dt) ** (k + 1) / math.factorial(k + 1) * w for k, w in enumerate(series)) for n, g in d["grads"].items())
        toolkit = sum(g @ series_surrogate(Qh, J, n * dt, order=K) @ x0 for n, g in d["grads"].items())
        assert continuous == pytest.approx(toolkit, rel=1e-10), K
    if supg:
        assert np.abs(d["dM"]).max() > 0.0  # the ∂M term is exercised


@pytest.mark.mpi
def test_order_k_error_falls_with_k_for_short_times(comm, advection_functional):
    """Relative error and angle of ∇F_K against the exact adjoint gradient, K = 0..3 (T = 0.024, 12 CN steps)."""
    F, _ = advection_functional(comm, nsteps=12, dt=2e-3)
    F.regularization = None  # the exact regularization term would mask the errors
    exact = F.derivative()
    errors, angles = [], []
    for K in range(4):
        sur = SurrogateGradient(F, order=K).derivative()
        err, angle = _pair(sur.x.petsc_vec, exact.x.petsc_vec)
        errors.append(err)
        angles.append(angle)
    if comm.rank == 0:
        print("order K:", " ".join(f"K={K}: {e:.2e} ({a:.2f} deg)" for K, (e, a) in enumerate(zip(errors, angles))))
    ratios = np.array(errors[1:]) / np.array(errors[:-1])
    assert np.all(ratios < 0.3), (errors, ratios)
    assert errors[0] > 0.1 and errors[-1] < 5e-3, errors
    assert angles[-1] < 0.2 < angles[0], angles


@pytest.mark.mpi
def test_first_order_surrogate_is_order_zero(comm, advection_functional):
    F, v = advection_functional(comm, nsteps=6)
    first = FirstOrderSurrogate(F)
    assert first.order == 0
    a, b = first.derivative(), SurrogateGradient(F).derivative()
    err, _ = _pair(a.x.petsc_vec, b.x.petsc_vec)
    assert err < 1e-14
    # a user-chosen mass solver (MUMPS) gives the same gradient
    c = SurrogateGradient(F, petsc_options={"ksp_type": "preonly", "pc_type": "lu",
                                            "pc_factor_mat_solver_type": "mumps"}).derivative()
    assert _pair(c.x.petsc_vec, b.x.petsc_vec)[0] < 1e-10


# ---------------------------------------------------------------------------- group inverse and asymptotics


def _dense_group_inverse(Q) -> tuple[np.ndarray, np.ndarray]:
    """π and Q^# of Q (Q1 = 0) through the rate-matrix toolkit.

    Q = −M⁻¹A is a rate matrix only in the M inner product (negative off-diagonal entries).
    Q_α = Q − α(I − Π) has the same π and off-diagonal entries Q_ij + απ_j > 0 for α large, so
    it is in 𝒟; on range(I − Π) it is Q − α, hence Q^# = G_α(I + αG_α)⁻¹ with G_α = Q_α^#.
    """
    pi = scipy.linalg.null_space(Q.T)[:, 0]
    pi /= pi.sum()
    off = ~np.eye(Q.shape[0], dtype=bool)
    alpha = 1.0 + np.max(np.where(off, -Q / pi[None, :], 0.0))
    Qa = Q - alpha * (np.eye(Q.shape[0]) - np.outer(np.ones(Q.shape[0]), pi))
    pi_toolkit, Ga = stationary_distribution(Qa), group_inverse(Qa)
    return pi_toolkit, Ga @ np.linalg.inv(np.eye(Q.shape[0]) + alpha * Ga)


@pytest.mark.mpi
@pytest.mark.parametrize("options", [None, {"ksp_type": "gmres", "pc_type": "jacobi", "ksp_rtol": 1e-14,
                                            "ksp_atol": 0.0, "ksp_max_it": 500}])
def test_group_inverse_matches_the_rate_matrix_toolkit(comm, options):
    F, _ = _cellular(comm, supg=options is None)
    prob = F.problem
    M, A = prob.to_dense()
    Q = -np.linalg.solve(M, A)
    pi, G = _dense_group_inverse(Q)
    ones = np.ones(Q.shape[0])
    np.testing.assert_allclose(Q @ G, np.eye(len(pi)) - np.outer(ones, pi), atol=1e-10)  # Q Q^# = I − Π
    gi = GroupInverse(prob, options)
    np.testing.assert_allclose(_gather(gi.pi), pi, rtol=1e-10, atol=1e-14)
    y, z, x = prob.create_vector(), prob.create_vector(), prob.create_vector()
    rng = np.random.default_rng(5)
    yd, zd = rng.standard_normal(len(pi)), rng.standard_normal(len(pi))
    r0, r1 = y.getOwnershipRange()
    y.array[:], z.array[:] = yd[r0:r1], zd[r0:r1]
    np.testing.assert_allclose(_gather(gi.apply(y, x)), G @ yd, rtol=1e-8, atol=1e-10 * np.abs(G @ yd).max())
    np.testing.assert_allclose(_gather(gi.apply_transpose(z, x)), G.T @ zd, rtol=1e-8,
                               atol=1e-10 * np.abs(G.T @ zd).max())
    # dot-product test: <Q^# y, z> = <y, (Q^#)^T z>
    result = dot_product_test(lambda u: gi.apply(u, prob.create_vector()),
                              lambda u: gi.apply_transpose(u, prob.create_vector()), y, z)
    assert result.forward == pytest.approx(result.adjoint, rel=1e-10)
    assert result.relative_error <= 1e-10, result
    for obj in (gi, y, z, x):
        obj.destroy()


@pytest.mark.mpi
@pytest.mark.parametrize("supg", [False, True])
def test_asymptotic_gradient_matches_dense_formula(comm, supg):
    F, v = _cellular(comm, supg=supg, T=0.5, nsteps=10)
    d = _dense_problem(F, v)
    M, x0 = d["M"], d["theta0"]
    Q = -np.linalg.solve(M, d["A"])
    J = -np.linalg.solve(M, d["dA"] + d["dM"] @ Q)
    pi, G = _dense_group_inverse(Q)
    Pi = np.outer(np.ones(len(pi)), pi)
    assert np.abs(J.sum(axis=1)).max() < 1e-10 * np.abs(J).max()  # J1 = 0 ...
    assert np.abs(Pi @ J).max() > 1e-3 * np.abs(J).max()  # ... but ΠJ ≠ 0: the direction is not divergence-free
    dense = d["reg"] + sum(g @ _asymptotic(Pi, G, J, n * d["dt"]) @ x0 for n, g in d["grads"].items())
    surrogate = AsymptoticSurrogate(F)
    value, grad = surrogate.value_and_derivative()
    assert value == pytest.approx(F.value(), rel=1e-13)
    assert abs(dense - d["reg"]) > 1e-3 * abs(dense)
    assert grad.x.petsc_vec.dot(v.x.petsc_vec) == pytest.approx(dense, rel=1e-8)
    assert surrogate.directional_derivative(v) == pytest.approx(dense, rel=1e-8)
    # the formula is the toolkit's (RateMatrix.asymptotic_derivative) on a genuine rate matrix
    Qr = RateMatrix(random_rate_matrix(6, 1))
    Jr = np.random.default_rng(2).standard_normal((6, 6))
    np.testing.assert_allclose(_asymptotic(Qr.Pi, Qr.group_inverse, Jr, 2.0), Qr.asymptotic_derivative(Jr, 2.0),
                               atol=1e-12)


@pytest.mark.mpi
def test_asymptotic_error_falls_with_final_time(comm):
    """Against the exact gradient the asymptotic error decays ~ e^{-κT}; the first-order one grows ~ T.

    Backward Euler: its discrete derivative has the same long-time form tΠJΠ − ΠJQ^# − Q^#JΠ as the
    continuous one (also true of Crank–Nicolson), and it damps the stiff modes, so that 8 steps
    suffice at every final time (Crank–Nicolson would need Δt|λ_max| small for the remainder to decay).
    """
    errors, angles, first = [], [], []
    times = (1.0, 2.0, 4.0, 8.0)
    for T in times:
        F, _ = _cellular(comm, T=T, nsteps=8, theta=1.0, regularization=False)
        exact = F.derivative()
        asym = AsymptoticSurrogate(F).derivative()
        err, angle = _pair(asym.x.petsc_vec, exact.x.petsc_vec)
        errors.append(err)
        angles.append(angle)
        first_order = FirstOrderSurrogate(F).derivative()  # (a Function destroys its vector when collected)
        first.append(_pair(first_order.x.petsc_vec, exact.x.petsc_vec)[0])
    if comm.rank == 0:
        print("asymptotic:", " ".join(f"T={T:g}: {e:.2e} ({a:.2f} deg)" for T, e, a in zip(times, errors, angles)),
              "| first order:", " ".join(f"{e:.2e}" for e in first))
    assert np.all(np.diff(errors) < 0) and errors[-1] < 0.2 * errors[1] and errors[-1] < 0.02, errors
    assert angles[-1] < 1.0, angles
    assert np.all(np.diff(first) > 0) and first[-1] > 1.0, first  # the first-order surrogate does not converge


# ---------------------------------------------------------------------------- bad input


@pytest.mark.mpi
def test_bad_input_names_the_value(comm, advection_problem, advection_functional):
    F, v = advection_functional(comm, nsteps=4)
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(InvalidArgumentError, match=f"order must be an integer >= 0, got {bad!r}"):
            SurrogateGradient(F, order=bad)
    with pytest.raises(InvalidArgumentError, match="functional must be a ReducedFunctional, got str"):
        SurrogateGradient("F")
    with pytest.raises(InvalidArgumentError, match="direction must be a dolfinx.fem.Function in the control space"):
        SurrogateGradient(F, order=1).directional_derivative(F.theta0)
    F_inflow, _ = advection_functional(comm, control="field", inflow=True, nsteps=4)
    with pytest.raises(InvalidArgumentError, match="without Dirichlet conditions, got 1 Dirichlet condition"):
        AsymptoticSurrogate(F_inflow)
    with pytest.raises(InvalidArgumentError, match="without Dirichlet conditions"):
        GroupInverse(F_inflow.problem)
    prob, *_ = advection_problem(comm, control="field")  # u·n ≠ 0 on the walls: not conservative
    with pytest.raises(InvalidArgumentError,
                       match=r"conservative velocity .* got \|\|A\^T 1\|\|_inf / \|\|A\|\|_1 = \d\.\d{3}e[-+]\d+ > rtol"):
        GroupInverse(prob)
