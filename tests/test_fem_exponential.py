"""Exponential propagator (SLEPc MFN) and its block-Krylov tangent; the analytic
constant-velocity case, where J and Q commute and the first-order surrogate is exact
(docs/theory.md §2.3, §2.9)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import ufl
from mpi4py import MPI

import sensitivity  # noqa: F401
from dolfinx import fem, mesh
from sensitivity.dense import expm_frechet
from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import AdvectionDiffusion, Tangent, ThetaScheme, VelocityField
from sensitivity.fem import ExponentialPropagator
from sensitivity.fem.backend import to_dense


@pytest.mark.parametrize("supg", [False, True])
def test_mfn_equals_dense_exponential_and_frechet(advection_problem, supg):
    prob, c, v, th0 = advection_problem(MPI.COMM_SELF, n=5, supg=supg)
    prop = ExponentialPropagator(prob)
    T = 0.4
    theta, rho = prop.tangent(th0, v, T)
    M, A = prob.to_dense()
    dA, dM = prob.dA(v), prob.dM(v)
    Q = -np.linalg.solve(M, A)
    J = -np.linalg.solve(M, to_dense(dA) + (to_dense(dM) @ Q if dM is not None else 0.0))
    x0 = th0.x.petsc_vec.array
    exact_theta = scipy.linalg.expm(T * Q) @ x0
    exact_rho = expm_frechet(Q, J, T) @ x0
    assert np.linalg.norm(theta.array - exact_theta) <= 1e-12 * np.linalg.norm(exact_theta)
    assert np.linalg.norm(prop.apply(th0, T).array - exact_theta) <= 1e-12 * np.linalg.norm(exact_theta)
    assert np.linalg.norm(rho.array - exact_rho) <= 1e-12 * np.linalg.norm(exact_rho)


@pytest.mark.mpi
def test_theta_scheme_converges_to_exponential_at_second_order(comm, advection_problem):
    prob, c, v, th0 = advection_problem(comm, n=8, control="field")
    T = 0.3
    theta_ex, rho_ex = ExponentialPropagator(prob).tangent(th0, v, T)
    err_theta, err_rho = [], []
    for nsteps in (10, 20, 40):
        x, (r,) = Tangent(ThetaScheme(prob, T / nsteps), [v]).run(th0, nsteps)
        err_theta.append((x - theta_ex).norm() / theta_ex.norm())
        err_rho.append((r - rho_ex).norm() / rho_ex.norm())
    for errs in (err_theta, err_rho):
        rates = np.log2(np.array(errs[:-1]) / errs[1:])
        assert np.all(np.abs(rates - 2.0) < 0.15), errs
    # backward Euler: first order
    errs = []
    for nsteps in (20, 40, 80):
        x = ThetaScheme(prob, T / nsteps, theta=1.0).run(th0, nsteps)
        errs.append((x - theta_ex).norm() / theta_ex.norm())
    assert np.all(np.abs(np.log2(np.array(errs[:-1]) / errs[1:]) - 1.0) < 0.15), errs


def test_inhomogeneous_dirichlet_rejected(comm, advection_problem):
    prob, *_ = advection_problem(comm, n=3, control="field", inflow=True)
    with pytest.raises(InvalidArgumentError, match="homogeneous Dirichlet values, got max \\|g\\| = 1"):
        ExponentialPropagator(prob)


def _gaussian(x0, u, kappa, sigma2, t):
    s2 = sigma2 + 2 * kappa * t

    def f(x):
        r2 = (x[0] - x0[0] - u[0] * t) ** 2 + (x[1] - x0[1] - u[1] * t) ** 2
        return sigma2 / s2 * np.exp(-r2 / (2 * s2))

    return f


@pytest.mark.mpi
def test_constant_velocity_analytic_case(comm):
    """Constant u, v: ρ(t) = −t v·∇θ(t), and the first-order surrogate t S_u(t) J θ0 equals ρ.

    With P1 on a uniform mesh M, K, C(u), C(v) are (away from the boundary)
    translation-invariant with one dof per mesh cell, so they commute like
    circulants and J, Q commute: the surrogate is exact up to boundary effects,
    which the far-away boundary makes negligible. (With P2 the operators are
    block-Toeplitz and do not commute: then only the continuum limit holds.)"""
    u, w, kappa, sigma2, T = (0.6, 0.3), (0.4, -0.7), 0.01, 0.02, 0.5
    errors = []
    for n in (40, 80):
        msh = mesh.create_rectangle(comm, [[-2.0, -2.0], [2.0, 2.0]], [n, n])
        V = fem.functionspace(msh, ("Lagrange", 1))
        W = fem.functionspace(msh, ("Lagrange", 1, (2,)))
        c, v = fem.Function(W), fem.Function(W)
        c.interpolate(lambda x: np.vstack([np.full_like(x[0], u[0]), np.full_like(x[0], u[1])]))
        v.interpolate(lambda x: np.vstack([np.full_like(x[0], w[0]), np.full_like(x[0], w[1])]))
        prob = AdvectionDiffusion(V, VelocityField(c), kappa)
        th0 = fem.Function(V)
        th0.interpolate(_gaussian((0.0, 0.0), u, kappa, sigma2, 0.0))
        prop = ExponentialPropagator(prob)
        theta, rho = prop.tangent(th0, v, T)
        # first-order surrogate: t S_u(t) J θ0 with J θ0 = -M⁻¹ C(v) θ0
        Jth0 = prob.create_vector()
        Cth0 = prob.create_vector()
        prob.dA(v).mult(th0.x.petsc_vec, Cth0)
        prop.solve_mass(Cth0, Jth0)
        Jth0.scale(-T)
        surrogate = prop.apply(Jth0, 1.0 * T)
        assert (surrogate - rho).norm() <= 1e-8 * rho.norm()
        # against the continuum ρ = −T w·∇θ(T) for the Gaussian solution
        rho_fn = fem.Function(V)
        rho_fn.x.petsc_vec.array[:] = rho.array
        rho_fn.x.scatter_forward()
        x = ufl.SpatialCoordinate(msh)
        s2 = sigma2 + 2 * kappa * T
        r2 = (x[0] - u[0] * T) ** 2 + (x[1] - u[1] * T) ** 2
        exact_theta = sigma2 / s2 * ufl.exp(-r2 / (2 * s2))
        exact_rho = -T * ufl.dot(ufl.as_vector(w), ufl.grad(exact_theta))
        err2 = fem.assemble_scalar(fem.form((rho_fn - exact_rho) ** 2 * ufl.dx))
        nrm2 = fem.assemble_scalar(fem.form(exact_rho**2 * ufl.dx))
        errors.append(np.sqrt(comm.allreduce(err2) / comm.allreduce(nrm2)))
    print(f"analytic case: relative L2 errors {errors}, order {np.log2(errors[0] / errors[1]):.3f}")
    assert errors[1] < 0.05, errors
    assert np.log2(errors[0] / errors[1]) > 1.8, errors  # second order in h
