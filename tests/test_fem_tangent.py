"""Advection–diffusion generator, θ-scheme propagator and tangent (SPEC §2).

Checks: Taylor test of ρ against finite differences of the discrete solver
(with and without SUPG, velocity field and stream function, with a Dirichlet
inflow); agreement with the dense toolkit on a tiny mesh as dt -> 0 at second
order; mass conservation; distributed results equal COMM_SELF results."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

import sensitivity  # noqa: F401  (imports dolfinx_solver first)
from dolfinx import fem, mesh
from sensitivity.dense import expm_frechet
from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import AdvectionDiffusion, StreamFunction, Tangent, ThetaScheme, VelocityField
from sensitivity.fem.generator import _dense


def _blob(x):
    return np.exp(-20 * ((x[0] - 0.3) ** 2 + (x[1] - 0.5) ** 2))


def _setup(comm, n=6, control="stream", supg=False, inflow=False, kappa=0.05):
    msh = mesh.create_unit_square(comm, n, n)
    V = fem.functionspace(msh, ("Lagrange", 1))
    if control == "stream":
        S = fem.functionspace(msh, ("Lagrange", 2))
        c = fem.Function(S)
        c.interpolate(lambda x: np.sin(np.pi * x[0]) ** 2 * np.sin(np.pi * x[1]) ** 2)
        ctrl = StreamFunction(c)
        v = fem.Function(S)
        v.interpolate(lambda x: x[0] * (1 - x[0]) * x[1] * (1 - x[1]) * (1 + x[0]))
    else:
        S = fem.functionspace(msh, ("Lagrange", 1, (2,)))
        c = fem.Function(S)
        c.interpolate(lambda x: np.vstack([1.0 + 0.3 * x[1], 0.2 * np.sin(np.pi * x[0])]))
        ctrl = VelocityField(c)
        v = fem.Function(S)
        v.interpolate(lambda x: np.vstack([np.cos(x[1]), x[0] * x[1]]))
    bcs = []
    if inflow:
        dofs = fem.locate_dofs_geometrical(V, lambda x: np.isclose(x[0], 0.0))
        bcs = [fem.dirichletbc(np.float64(1.0), dofs, V)]
    prob = AdvectionDiffusion(V, ctrl, kappa, bcs=bcs, supg=supg)
    th0 = fem.Function(V)
    th0.interpolate(_blob)
    return prob, c, v, th0


def _perturbed_run(prob, scheme, c, v, th0, eps, nsteps):
    c.x.array[:] += eps * v.x.array
    prob.update()
    scheme.refresh()
    out = scheme.run(th0, nsteps)
    c.x.array[:] -= eps * v.x.array
    prob.update()
    scheme.refresh()
    return out


@pytest.mark.mpi
@pytest.mark.parametrize(
    "control, supg, inflow, theta",
    [("stream", False, False, 0.5), ("stream", True, False, 0.5), ("field", False, True, 0.5), ("field", True, True, 1.0)],
)
def test_taylor_remainder_is_second_order(comm, control, supg, inflow, theta):
    prob, c, v, th0 = _setup(comm, control=control, supg=supg, inflow=inflow)
    scheme = ThetaScheme(prob, 0.01, theta=theta)
    tangent = Tangent(scheme, [v])
    nsteps = 20
    thN, (rho,) = tangent.run(th0, nsteps)
    F0 = _perturbed_run(prob, scheme, c, v, th0, 0.0, nsteps)
    assert (F0 - thN).norm() <= 1e-14 * thN.norm()
    res = []
    for eps in 0.1 / 2.0 ** np.arange(4):
        d = _perturbed_run(prob, scheme, c, v, th0, eps, nsteps)
        d.axpy(-1.0, F0)
        d.axpy(-eps, rho)
        res.append(d.norm())
    rates = np.log2(np.array(res[:-1]) / res[1:])
    assert np.all(rates > 1.9), (rates, res)
    assert rho.norm() > 1e-3  # the derivative is not trivially zero
    tangent.destroy()
    scheme.destroy()


def test_agrees_with_dense_frechet_as_dt_vanishes():
    """CN tangent -> ∇_J exp(tQ)θ0 with Q = -M⁻¹A, J = -M⁻¹C(v), at second order in dt."""
    prob, c, v, th0 = _setup(MPI.COMM_SELF, n=5)
    M, A = prob.to_dense()
    dA = prob.dA(v)
    C = _dense(dA)
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


def test_constants_are_the_kernel_and_mass_is_conserved(comm):
    prob, c, v, th0 = _setup(comm)
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
def test_distributed_equals_serial(comm):
    """Ordering-independent results (norms, integrals) agree with a COMM_SELF run on every rank."""

    def summary(c):
        prob, _, v, th0 = _setup(c, n=8, control="field", inflow=True, supg=True)
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
def test_bad_input_names_the_value(comm):
    prob, c, v, th0 = _setup(comm, n=3)
    with pytest.raises(InvalidArgumentError, match="kappa must be positive and finite, got -1"):
        AdvectionDiffusion(prob.V, prob.control, -1.0)
    with pytest.raises(InvalidArgumentError, match="kappa must be positive and finite, got nan"):
        AdvectionDiffusion(prob.V, prob.control, float("nan"))
    with pytest.raises(InvalidArgumentError, match="dt must be a positive finite number, got 0"):
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
def test_iterative_solver_matches_direct(comm, options):
    prob, c, v, th0 = _setup(comm, n=10, control="field", inflow=True, supg=True)
    direct = Tangent(ThetaScheme(prob, 0.01), [v]).run(th0, 10)
    iterative = Tangent(ThetaScheme(prob, 0.01, petsc_options=options), [v]).run(th0, 10)
    assert (direct[0] - iterative[0]).norm() <= 1e-10 * direct[0].norm()
    assert (direct[1][0] - iterative[1][0]).norm() <= 1e-9 * direct[1][0].norm()


@pytest.mark.mpi
@pytest.mark.parametrize("control, supg", [("stream", False), ("field", True)])
def test_adjoint_actions_are_transposes_of_the_directional_derivatives(comm, rng, control, supg):
    """<dA_adjoint_action(lam, theta), v> = lam^T dA[v] theta, and the same for dM (SUPG)."""
    prob, c, v, th0 = _setup(comm, n=5, control=control, supg=supg)
    lam, theta = prob.create_vector(), prob.create_vector()
    lo, hi = lam.getOwnershipRange()
    values = np.random.default_rng(7).standard_normal((2, lam.getSize()))  # the same on every rank
    lam.array[:], theta.array[:] = values[0, lo:hi], values[1, lo:hi]
    vvec = v.x.petsc_vec
    work = prob.create_vector()
    prob.dA(v).mult(theta, work)
    assert prob.dA_adjoint_action(lam, theta).dot(vvec) == pytest.approx(lam.dot(work), rel=1e-12)
    if supg:
        prob.dM(v).mult(theta, work)
        assert prob.dM_adjoint_action(lam, theta).dot(vvec) == pytest.approx(lam.dot(work), rel=1e-12)
    else:
        assert prob.dM_adjoint_action(lam, theta) is None
