"""Advection–diffusion generator, θ-scheme propagator and tangent (docs/theory.md §2).

Checks: Taylor test of ρ against finite differences of the discrete solver
(with and without SUPG, velocity field and stream function, with a Dirichlet
inflow); agreement with the dense toolkit on a tiny mesh as dt -> 0 at second
order; mass conservation; distributed results equal COMM_SELF results; dot-product
tests of the transposed control derivatives (docs/theory.md §6)."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

import sensitivity  # noqa: F401  (imports dolfinx_solver first)
from sensitivity.dense import expm_frechet
from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import AdvectionDiffusion, Tangent, ThetaScheme, VelocityField
from sensitivity.fem.backend import to_dense
from sensitivity.verification import dot_product_test


@pytest.mark.mpi
@pytest.mark.parametrize(
    "control, supg, inflow, theta",
    [("stream", False, False, 0.5), ("stream", True, False, 0.5), ("field", False, True, 0.5), ("field", True, True, 1.0)],
)
def test_taylor_remainder_is_second_order(comm, advection_problem, tangent_taylor, control, supg, inflow, theta):
    prob, c, v, th0 = advection_problem(comm, control=control, supg=supg, inflow=inflow)
    scheme = ThetaScheme(prob, 0.01, theta=theta)
    result, thN, rho, F0 = tangent_taylor(prob, scheme, c, v, th0, 20, step=0.1)
    assert (F0 - thN).norm() <= 1e-14 * thN.norm()
    rates, res = result.rates[1], result.residuals[1]
    assert np.all(rates > 1.9), (rates, res)
    assert rho.norm() > 1e-3  # the derivative is not trivially zero
    scheme.destroy()


def test_agrees_with_dense_frechet_as_dt_vanishes(advection_problem):
    """CN tangent -> ∇_J exp(tQ)θ0 with Q = -M⁻¹A, J = -M⁻¹C(v), at second order in dt."""
    prob, c, v, th0 = advection_problem(MPI.COMM_SELF, n=5)
    M, A = prob.to_dense()
    dA = prob.dA(v)
    C = to_dense(dA)
    Q, J = -np.linalg.solve(M, A), -np.linalg.solve(M, C)
    T = 0.4
    x0 = th0.x.petsc_vec.array.copy()
    exact = expm_frechet(Q, J, T) @ x0
    errs = []
    for nsteps in (20, 40, 80):
        scheme = ThetaScheme(prob, T / nsteps)
        _, (rho,) = Tangent(scheme, [v]).run(th0, nsteps)
        errs.append(np.linalg.norm(rho.array - exact) / np.linalg.norm(exact))
    rates = np.log2(np.array(errs[:-1]) / errs[1:])
    assert np.all(np.abs(rates - 2.0) < 0.1), (errs, rates)
    assert errs[-1] < 1e-3


def test_constants_are_the_kernel_and_mass_is_conserved(comm, advection_problem):
    prob, c, v, th0 = advection_problem(comm)
    one = prob.create_vector()
    one.set(1.0)
    Aone = prob.A.createVecLeft()
    prob.A.mult(one, Aone)
    assert Aone.norm() < 1e-12
    scheme = ThetaScheme(prob, 0.02)
    _, (rho,) = Tangent(scheme, [v]).run(th0, 25, callback=None)
    thN = scheme.run(th0, 25)
    mass = prob.M.createVecLeft()
    prob.M.mult(th0.x.petsc_vec, mass)
    m0 = mass.sum()
    prob.M.mult(thN, mass)
    assert abs(mass.sum() - m0) < 1e-13 * abs(m0)
    prob.M.mult(rho, mass)
    assert abs(mass.sum()) < 1e-13  # perturbations of the velocity keep the mass


@pytest.mark.mpi
def test_distributed_equals_serial(comm, advection_problem):
    """Ordering-independent results (norms, integrals) agree with a COMM_SELF run on every rank."""

    def summary(c):
        prob, _, v, th0 = advection_problem(c, n=8, control="field", inflow=True, supg=True)
        scheme = ThetaScheme(prob, 0.01)
        thN, (rho,) = Tangent(scheme, [v]).run(th0, 15)
        one = prob.create_vector()
        one.set(1.0)
        Mr = prob.M.createVecLeft()
        prob.M.mult(rho, Mr)
        return np.array([thN.norm(), rho.norm(), rho.norm(3), Mr.dot(one), Mr.dot(rho)])

    distributed = summary(comm)
    serial = summary(MPI.COMM_SELF)
    assert np.allclose(distributed, serial, rtol=1e-11, atol=1e-14), (distributed, serial)


@pytest.mark.mpi
def test_bad_input_names_the_value(comm, advection_problem):
    prob, c, v, th0 = advection_problem(comm, n=3)
    with pytest.raises(InvalidArgumentError, match="kappa must be positive and finite, got -1"):
        AdvectionDiffusion(prob.V, prob.control, -1.0)
    with pytest.raises(InvalidArgumentError, match="kappa must be positive and finite, got nan"):
        AdvectionDiffusion(prob.V, prob.control, float("nan"))
    with pytest.raises(InvalidArgumentError, match="dt must be positive and finite, got 0"):
        ThetaScheme(prob, 0)
    with pytest.raises(InvalidArgumentError, match=r"theta must be in \[0.5, 1\], got 0.2"):
        ThetaScheme(prob, 0.1, theta=0.2)
    with pytest.raises(InvalidArgumentError, match="velocity must be a vector field with 2 components"):
        VelocityField(th0)
    with pytest.raises(InvalidArgumentError, match="directions\\[0\\] must be a dolfinx.fem.Function in the control space"):
        Tangent(ThetaScheme(prob, 0.1), [th0])


@pytest.mark.mpi
@pytest.mark.parametrize(
    "options",
    [
        {"ksp_type": "gmres", "pc_type": "asm", "sub_pc_type": "ilu", "ksp_rtol": 1e-13},
        {"ksp_type": "gmres", "pc_type": "gamg", "ksp_rtol": 1e-13},
    ],
)
def test_iterative_solver_matches_direct(comm, advection_problem, options):
    prob, c, v, th0 = advection_problem(comm, n=10, control="field", inflow=True, supg=True)
    direct = Tangent(ThetaScheme(prob, 0.01), [v]).run(th0, 10)
    iterative = Tangent(ThetaScheme(prob, 0.01, petsc_options=options), [v]).run(th0, 10)
    assert (direct[0] - iterative[0]).norm() <= 1e-10 * direct[0].norm()
    assert (direct[1][0] - iterative[1][0]).norm() <= 1e-9 * direct[1][0].norm()


@pytest.mark.mpi
@pytest.mark.parametrize("control, supg", [("stream", False), ("field", True)])
def test_adjoint_actions_are_transposes_of_the_directional_derivatives(comm, advection_problem, control, supg):
    """<dA_adjoint_action(lam, theta), v> = lam^T dA[v] theta, and the same for dM (SUPG)."""
    prob, c, v, th0 = advection_problem(comm, n=5, control=control, supg=supg)
    lam, theta = prob.create_vector(), prob.create_vector()
    lo, hi = lam.getOwnershipRange()
    values = np.random.default_rng(7).standard_normal((2, lam.getSize()))  # the same on every rank
    lam.array[:], theta.array[:] = values[0, lo:hi], values[1, lo:hi]

    def action(derivative):
        """w ↦ ∂X[w]θ with the assembled matrix ∂X[w] (X = A or M)."""

        def apply(w):
            mat, out = derivative(w), prob.create_vector()
            mat.mult(theta, out)
            mat.destroy()
            return out

        return apply

    dA = dot_product_test(action(prob.dA), lambda y: prob.dA_adjoint_action(y, theta), v, lam)
    assert dA.adjoint == pytest.approx(dA.forward, rel=1e-12)
    assert dA.relative_error <= 1e-12, dA
    if supg:
        dM = dot_product_test(action(prob.dM), lambda y: prob.dM_adjoint_action(y, theta), v, lam)
        assert dM.adjoint == pytest.approx(dM.forward, rel=1e-12)
        assert dM.relative_error <= 1e-12, dM
    else:
        assert prob.dM_adjoint_action(lam, theta) is None
