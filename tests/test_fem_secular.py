"""Surrogates of Schrödinger sensitivities: the secular surrogate from SLEPc eigenpairs and the
first-order surrogate (docs/theory.md §1.6 skew-Hermitian generators, §3.6 the secular surrogate).

Checks: the eigenbasis equals a dense generalized eigensolve, is M-orthonormal, completes a
degenerate eigenspace cut by ``nev`` and is recomputed when the potential changes; the secular
gradient is the transpose of its directional form (which propagates with the θ-scheme instead of
the eigen-factors); the projected perturbation P(J)ψ0 equals the dense toolkit's secular
projection, degenerate eigenspaces included; against the exact adjoint gradient the secular
error of the state derivative stays bounded (relative error ~ 1/t) and beats the first-order
surrogate at long times, while the first-order surrogate is the better one at the first step; distributed gradients equal COMM_SELF ones; bad input
names the value."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError  # first: the package imports dolfinx_solver before dolfinx
from dolfinx import fem, mesh
from sensitivity.dense import SkewHermitian
from sensitivity.fem import ReducedFunctional
from sensitivity.fem.backend import to_dense
from sensitivity.fem.objective import ObservationMisfit, Tikhonov
from sensitivity.fem import DensitySensors, RegionProbabilities
from sensitivity.fem.output import gather_by_coordinates
from sensitivity.fem import ThetaScheme
from sensitivity.fem import PotentialField, Schrodinger, schrodinger_space
from sensitivity.fem import Eigenbasis, SecularSurrogate, surrogate_state_errors
from sensitivity.fem import FirstOrderSurrogate

SENSORS = [[0.5, 0.5], [0.3, 0.6], [0.6, 0.35]]
COEFFS = np.array([0.6, 0.5j, 0.4 + 0.3j, 0.2])  # the initial state in the eigenbasis


def _gather(vec) -> np.ndarray:
    return np.concatenate(vec.getComm().tompi4py().allgather(vec.array_r.copy()))


def _problem(comm, n=16, strength=50.0, family="P1", diagonal=mesh.DiagonalType.right):
    """An anisotropic harmonic well on the unit square (non-degenerate low spectrum) and a direction."""
    msh = mesh.create_unit_square(comm, n, n, diagonal=diagonal)
    W = schrodinger_space(msh, 1)
    S = fem.functionspace(msh, ("Lagrange", 1) if family == "P1" else ("Discontinuous Lagrange", 0))
    V, v = fem.Function(S), fem.Function(S)
    V.interpolate(lambda x: strength * ((x[0] - 0.5) ** 2 + 0.7 * (x[1] - 0.5) ** 2))
    v.interpolate(lambda x: np.cos(3.0 * x[0]) + x[1] ** 2 - 0.3)
    return Schrodinger(W, PotentialField(V)), v


def _superposition(prob, basis, coeffs=COEFFS) -> fem.Function:
    c = np.zeros(basis.size, dtype=complex)
    c[: min(len(coeffs), basis.size)] = coeffs[: basis.size]
    psi0 = fem.Function(prob.V, name="psi0")
    basis.synthesize(c / np.linalg.norm(c), psi0.x.petsc_vec)
    psi0.x.scatter_forward()
    return psi0


def _eigenstates(prob, nev: int) -> fem.Function:
    """ψ0 = the normalized superposition of the ``nev`` lowest eigenstates with the COEFFS."""
    basis = Eigenbasis(prob, nev)
    psi0 = _superposition(prob, basis)
    basis.destroy()
    return psi0


def _functional(prob, psi0, nsteps, dt=0.01, *, regions=False, regularization=False):
    W = prob.V
    misfits = [ObservationMisfit(DensitySensors(W, SENSORS), [nsteps], np.ones((1, len(SENSORS))), noise=1.0)]
    if regions:
        msh = W.mesh
        tdim = msh.topology.dim
        cells = np.arange(msh.topology.index_map(tdim).size_local, dtype=np.int32)
        mid = mesh.compute_midpoints(msh, tdim, cells)[:, 0]
        tags = mesh.meshtags(msh, tdim, cells, np.where(mid < 0.5, 1, 2).astype(np.int32))
        misfits.append(ObservationMisfit(RegionProbabilities(W, tags, [1, 2]), [nsteps // 2, nsteps],
                                         np.full((2, 2), 0.5), noise=0.05))
    reg = Tikhonov(prob.control.space, alpha=1e-3, beta=1e-4) if regularization else None
    return ReducedFunctional(ThetaScheme(prob, dt), psi0, nsteps, misfits, regularization=reg)


def _free_blocks(prob, v=None):
    """Dense H, M (free nodes, scalar), M_v and the free mask, in global order on every rank."""
    M, A = prob.to_dense()
    mark = prob.create_vector()
    mark.set(0.0)
    mark.array[prob.dirichlet_rows()[0]] = 1.0
    free = _gather(mark)[0::2] == 0.0
    sub = np.ix_(free, free)
    H, Ms = A[1::2, 0::2][sub], M[0::2, 0::2][sub]
    Mv = None
    if v is not None:
        dA = prob.dA(v)
        Mv = to_dense(dA)[1::2, 0::2][sub]
        dA.destroy()
    return H, Ms, Mv, free


# --------------------------------------------------------------------------- the eigenbasis


@pytest.mark.mpi
def test_eigenbasis_matches_dense_eigensolve_and_is_orthonormal(comm):
    prob, _ = _problem(comm, n=8)
    basis = Eigenbasis(prob, 5)
    H, Ms, _, _ = _free_blocks(prob)
    exact = scipy.linalg.eigh(H, Ms, eigvals_only=True)[: basis.size]
    if comm.rank == 0:
        print(f"energies {basis.energies}, dense {exact}, residuals {basis.residuals}")
    np.testing.assert_allclose(basis.energies, exact, rtol=1e-10)
    assert np.all(basis.residuals < 1e-9)
    assert [len(c) for c in basis.clusters] == [1] * basis.size
    for j in range(basis.size):  # M-orthonormal: the coefficients of e_j and f_j are unit vectors
        np.testing.assert_allclose(basis.coefficients(basis.real_modes[j]), np.eye(basis.size)[j], atol=1e-10)
        np.testing.assert_allclose(basis.coefficients(basis.imag_modes[j]), 1j * np.eye(basis.size)[j], atol=1e-10)
    psi0 = _superposition(prob, basis)
    assert prob.norm(psi0) == pytest.approx(1.0, abs=1e-12)
    assert basis.outside_fraction(psi0.x.petsc_vec) < 1e-12
    # one θ-scheme step multiplies each coefficient by its amplification factor
    scheme = ThetaScheme(prob, 0.05)
    c0 = basis.coefficients(psi0.x.petsc_vec)
    c1 = basis.coefficients(scheme.run(psi0, 1))
    r = basis.amplification(0.05, 0.5)
    np.testing.assert_allclose(np.abs(r), 1.0, rtol=1e-15)
    np.testing.assert_allclose(c1, r * c0, atol=1e-10)
    scheme.destroy()
    basis.destroy()


def test_degenerate_eigenspace_cut_by_nev_is_completed(comm):
    """V = 0 on the square with crossed diagonals (the square's symmetry group, whose 2-d
    representation makes E_12 = E_21): nev = 2 keeps 3."""
    prob, _ = _problem(comm, n=6, strength=0.0, diagonal=mesh.DiagonalType.crossed)
    basis = Eigenbasis(prob, 2)
    assert basis.size == 3
    assert [len(c) for c in basis.clusters] == [1, 2]
    assert basis.energies[2] - basis.energies[1] < 1e-8 * basis.energies[1]
    assert basis.energies[0] == pytest.approx(np.pi**2, rel=0.1)  # 2 · π²/2, coarse mesh
    basis.destroy()


@pytest.mark.mpi
def test_projected_perturbation_equals_dense_secular_projection(comm):
    """P(J)ψ0 from the eigenbasis against SkewHermitian.secular_projection of the dense
    M-orthonormal generator, with a degenerate eigenspace (V = 0) whose mixing it must keep."""
    prob, v = _problem(comm, n=6, strength=0.0, diagonal=mesh.DiagonalType.crossed)
    F = _functional(prob, fem.Function(prob.V), 4)
    sec = SecularSurrogate(F, 3)
    basis = sec.current_basis()
    psi0 = _superposition(prob, basis, np.array([0.5, 0.6 - 0.2j, 0.3j]))
    psi0.x.petsc_vec.copy(F.theta0)
    z = _gather(sec.projected_perturbation(v))
    H, Ms, Mv, free = _free_blocks(prob, v)
    L = np.linalg.cholesky(Ms)
    Li = np.linalg.inv(L)
    A_c = -1j * (Li @ H @ Li.T)
    A_c = 0.5 * (A_c - A_c.conj().T)
    J_c = -1j * (Li @ Mv @ Li.T)
    w0 = _gather(F.theta0)
    psi_hat = L.T @ (w0[0::2] + 1j * w0[1::2])[free]
    expected = SkewHermitian(A_c, cluster_tol=1e-6).secular_projection(J_c) @ psi_hat
    got = L.T @ (z[0::2] + 1j * z[1::2])[free]
    if comm.rank == 0:
        print(f"|P(J)psi0| {np.linalg.norm(expected):.3e}, difference {np.linalg.norm(got - expected):.2e}")
    assert np.linalg.norm(expected) > 0.01
    np.testing.assert_allclose(got, expected, atol=1e-9 * np.linalg.norm(expected))
    # the degenerate block mixes: P(J)ψ0 has a component on φ_2 although J is only 'diagonal' per cluster
    sec.destroy()


# --------------------------------------------------------------------------- gradients


@pytest.mark.mpi
@pytest.mark.parametrize("family", ["P1", "DG0"])
def test_secular_gradient_is_the_transpose_of_its_directional_form(comm, family):
    prob, v = _problem(comm, n=10, family=family)
    psi0 = _eigenstates(prob, 4)
    F = _functional(prob, psi0, 40, regions=True, regularization=True)
    sec = SecularSurrogate(F, 4)
    value, grad = sec.value_and_derivative()
    assert value == pytest.approx(F.value(), rel=1e-13)
    paired = grad.x.petsc_vec.dot(v.x.petsc_vec)
    forward = sec.directional_derivative(v)
    if comm.rank == 0:
        print(f"{family}: gradient·v {paired!r}, directional {forward!r}, stats {sec.stats}")
    assert abs(paired - forward) <= 1e-9 * abs(forward)
    assert sec.stats["outside_fraction"] < 1e-10 and sec.stats["stored_vectors"] == 0
    assert sec.stats["assemblies"] == sec.stats["eigenpairs"] == 4
    sec.destroy()


@pytest.mark.mpi
def test_first_order_surrogate_of_schrodinger_is_the_transpose_of_its_directional_form(comm):
    prob, v = _problem(comm, n=10)
    psi0 = _eigenstates(prob, 4)
    F = _functional(prob, psi0, 20, regions=True)
    fo = FirstOrderSurrogate(F)
    _, grad = fo.value_and_derivative()
    paired, forward = grad.x.petsc_vec.dot(v.x.petsc_vec), fo.directional_derivative(v)
    assert abs(paired - forward) <= 1e-9 * abs(forward), (paired, forward)
    assert fo.stats["assemblies"] == 1  # the mass does not depend on the potential


@pytest.mark.slow  # ~9 s: 3200 Crank–Nicolson steps
def test_secular_error_stays_bounded_and_beats_first_order_at_long_times(comm):
    """Along one trajectory (ψ0 = four eigenstates, 3200 CN steps to t = 64): ‖ρ_n‖ grows like
    t; the secular surrogate's error stays bounded (relative error ~ 1/t) while the first-order
    one grows like ‖ρ‖; at the first step it is the other way round (ρ_1 ≈ ΔtJψ0)."""
    prob, v = _problem(comm)
    psi0 = _eigenstates(prob, 4)
    scheme = ThetaScheme(prob, 0.02)
    steps = [1, 25, 50, 100, 200, 400, 800, 1600, 3200]
    err = surrogate_state_errors(scheme, psi0, v, steps, 4)
    sec, fo = err.secular_relative, err.first_order_relative
    if comm.rank == 0:
        print(f"t {err.times}: |rho| {err.exact_norm}\n secular {sec}\n first order {fo}")
    assert err.outside_fraction < 1e-10
    assert err.exact_norm[-1] > 10.0 * err.exact_norm[3]  # secular growth of the derivative
    assert fo[0] < 0.3 and sec[0] > 0.9  # t = dt: the first-order surrogate wins
    assert np.all(fo[1:] > 5.0)  # afterwards it is wrong by several times the derivative
    assert np.max(err.secular_error[1:]) < 3.0 * np.min(err.secular_error[1:])  # bounded in t
    assert sec[-1] < 0.02 and sec[-1] < sec[4] / 10.0  # relative error ~ 1/t
    scheme.destroy()


# --------------------------------------------------------------------------- parallel, input


def _secular_gradient(comm):
    prob, _ = _problem(comm, n=10)
    psi0 = _eigenstates(prob, 4)
    F = _functional(prob, psi0, 30)
    sec = SecularSurrogate(F, 4)
    out = gather_by_coordinates(sec.derivative())
    sec.destroy()
    return out


@pytest.mark.mpi
def test_distributed_secular_gradient_equals_serial(comm):
    distributed, serial = _secular_gradient(comm), _secular_gradient(MPI.COMM_SELF)
    np.testing.assert_allclose(distributed[0], serial[0], atol=1e-12)
    scale = np.max(np.abs(serial[1]))
    assert scale > 0.0
    np.testing.assert_allclose(distributed[1], serial[1], rtol=1e-8, atol=1e-9 * scale)


@pytest.mark.mpi
def test_basis_follows_the_potential(comm):
    prob, v = _problem(comm, n=8)
    psi0 = _eigenstates(prob, 3)
    F = _functional(prob, psi0, 10)
    sec = SecularSurrogate(F, 3)
    sec.derivative()
    E0 = sec.stats["energies"]
    sec.derivative()
    assert sec.stats["eigensolves"] == 1  # unchanged potential: the basis is reused
    c = F.control.x.petsc_vec.copy()
    c.shift(2.0)  # V + 2: every energy rises by 2
    F.set_control(c)
    sec.derivative()
    assert sec.stats["eigensolves"] == 2
    np.testing.assert_allclose(sec.stats["energies"], E0 + 2.0, rtol=1e-10)
    sec.destroy()


@pytest.mark.mpi
def test_bad_input_names_the_value(comm, advection_functional):
    prob, _ = _problem(comm, n=4)
    for nev in (0, -1, 2.5, True):
        with pytest.raises(InvalidArgumentError, match=f"nev must be a positive integer, got {nev!r}"):
            Eigenbasis(prob, nev)
    with pytest.raises(InvalidArgumentError, match=r"nev = 100 exceeds the 9 free nodes"):
        Eigenbasis(prob, 100)
    for tol in (0.0, 1.0, float("nan")):
        with pytest.raises(InvalidArgumentError, match=f"tol must be in \\(0, 1\\), got {tol!r}"):
            Eigenbasis(prob, 2, tol=tol)
    with pytest.raises(InvalidArgumentError, match=r"target must be a finite number, got inf"):
        Eigenbasis(prob, 2, target=float("inf"))
    with pytest.raises(InvalidArgumentError, match="problem must be a Schrodinger generator, got str"):
        Eigenbasis("H", 2)
    W = prob.V
    msh = W.mesh
    msh.topology.create_connectivity(1, 2)
    dofs = fem.locate_dofs_topological(W.sub(0), 1, mesh.exterior_facet_indices(msh.topology))
    half = Schrodinger(W, prob.control, bcs=[fem.dirichletbc(0.0, dofs, W.sub(0))])
    with pytest.raises(InvalidArgumentError, match="both components of the same nodes"):
        Eigenbasis(half, 2)
    with pytest.raises(InvalidArgumentError, match="needs a Schrodinger problem, got AdvectionDiffusion"):
        SecularSurrogate(advection_functional(comm)[0], 2)
