"""Priors and parameter vectors (docs/theory.md §4).

Checks: the bi-Laplacian prior's operators are consistent (C C⁻¹ = I, C symmetric, the cost's derivative
by a Taylor test); the pointwise sample variance of its draws equals the exact diag(C) within Monte Carlo
error (P1 and P2, natural and Robin boundaries, a vector space); the same seed gives the same draws on 1, 2
and 3 ranks; the Robin term reduces the boundary variance; the finite-dimensional prior's draws have its
covariance; FunctionVectors' global order does not depend on the partition; bad arguments are named.
"""

from __future__ import annotations

import numpy as np
import pytest
from dolfinx import fem, mesh
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation import ArraySpace, BiLaplacianPrior, FunctionVectors, GaussianPrior, dense_operator
from sensitivity.fem import ControlSpace
from sensitivity.verification import taylor_test


def _space(comm, n=6, degree=1, shape=()):
    msh = mesh.create_unit_square(comm, n, n)
    V = fem.functionspace(msh, ("Lagrange", degree, shape))
    return FunctionVectors(ControlSpace(V))


def _variance_zscores(space, prior, draws, seed):
    """(sample variance − exact variance) / its standard error, per dof (exact: diag C)."""
    exact = space.to_array(prior.pointwise_variance())
    rng = np.random.default_rng(seed)
    samples = np.array([space.to_array(prior.sample(rng)) for _ in range(draws)])
    mean_z = samples.mean(axis=0) / np.sqrt(exact / draws)
    var_z = (samples.var(axis=0, ddof=1) - exact) / (exact * np.sqrt(2.0 / (draws - 1)))
    return mean_z, var_z


@pytest.mark.parametrize("degree, robin, shape", [(1, False, ()), (1, True, ()), (2, True, ()), (1, True, (2,))])
def test_pointwise_sample_variance_is_the_exact_variance(comm, degree, robin, shape):
    # serial only: under mpirun the draws are the same numbers (test_draws_do_not_depend_on_the_number_of_ranks)
    space = _space(comm, n=5, degree=degree, shape=shape)
    prior = BiLaplacianPrior(space, gamma=0.1, delta=1.0, robin=robin)
    draws = 3000
    mean_z, var_z = _variance_zscores(space, prior, draws, seed=11)
    # Each z is approximately standard normal; across the dofs (correlated) the mean z must be small
    # and no dof far out. A prior with the wrong square root (e.g. the lumped mass, or A^-1 w) fails.
    if comm.rank == 0:
        print(f"P{degree} robin={robin} shape={shape}: max|z_var| {np.max(np.abs(var_z)):.2f}, "
              f"mean z_var {np.mean(var_z):.3f}, max|z_mean| {np.max(np.abs(mean_z)):.2f}")
    assert np.max(np.abs(var_z)) < 4.5, var_z
    assert abs(np.mean(var_z)) < 1.0, np.mean(var_z)
    assert np.max(np.abs(mean_z)) < 4.5, mean_z


def test_a_wrong_square_root_fails_the_variance_check(monkeypatch):
    """The check above can fail: drawing A^-1 (G xi) with G scaled by 1.1 (variance 1.21x) is caught."""
    space = _space(MPI.COMM_SELF, n=5)
    prior = BiLaplacianPrior(space, gamma=0.1, delta=1.0, robin=True)
    prior.G.scale(1.1)
    _, var_z = _variance_zscores(space, prior, 3000, seed=11)
    assert np.mean(var_z) > 3.0, np.mean(var_z)


@pytest.mark.mpi
def test_operators_are_consistent(comm):
    space = _space(comm, n=4)
    prior = BiLaplacianPrior(space, gamma=0.05, delta=2.0, robin=True)
    C = dense_operator(space, prior.covariance_action)
    R = dense_operator(space, prior.precision_action)
    assert np.linalg.norm(C @ R - np.eye(space.size)) < 1e-9 * np.linalg.cond(R)
    assert np.linalg.norm(C - C.T) < 1e-12 * np.linalg.norm(C)
    assert np.all(np.linalg.eigvalsh(0.5 * (C + C.T)) > 0)
    # the cost's derivative and Hessian by a Taylor test, at a point other than the mean
    rng = np.random.default_rng(3)
    q = space.from_array(rng.standard_normal(space.size))
    h = space.from_array(np.cos(np.arange(space.size)))
    d = prior.derivative(q)
    Hh = prior.hessian_action(h)
    result = taylor_test(prior.cost, q, h, derivative=space.dot(d, h), hessian=space.dot(h, Hh))
    assert result.min_rate(1) > 1.9, result.rates
    # a quadratic: the second-order remainder is round-off only
    assert np.max(result.residuals[2]) < 1e-9 * abs(prior.cost(q)), result.residuals


@pytest.mark.mpi
def test_draws_do_not_depend_on_the_number_of_ranks(comm):
    draws = []
    for c in (comm, MPI.COMM_SELF):
        space = _space(c, n=6, degree=2)
        prior = BiLaplacianPrior(space, gamma=0.1, delta=1.0, robin=True)
        rng = np.random.default_rng(20261201)
        draws.append(np.array([space.to_array(prior.sample(rng)) for _ in range(3)]))
    assert np.max(np.abs(draws[0] - draws[1])) < 1e-12 * np.max(np.abs(draws[1]))


def test_robin_term_reduces_the_boundary_variance():
    space = _space(MPI.COMM_SELF, n=8)
    natural = space.to_array(BiLaplacianPrior(space, 0.1, 1.0).pointwise_variance())
    robin = space.to_array(BiLaplacianPrior(space, 0.1, 1.0, robin=True).pointwise_variance())
    coords = np.round(space.control_space.space.tabulate_dof_coordinates()[:, :2], 10)
    order = np.lexsort(coords.T[::-1])
    x = coords[order]
    corner = np.all(np.isclose(x, 0.0), axis=1) | np.all(np.isclose(x, 1.0), axis=1)
    centre = np.all(np.isclose(x, 0.5), axis=1)
    theory = 1.0 / (4.0 * np.pi * 1.0 * 0.1)  # Gamma(1) / ((4 pi) delta gamma) in 2-D
    assert natural[corner].min() > 2.0 * robin[corner].max()  # Neumann inflates the corners
    assert abs(robin[centre][0] / theory - 1.0) < 0.25, (robin[centre], theory)


def test_gaussian_prior_samples_have_its_covariance():
    space = ArraySpace(3)
    cov = np.array([[2.0, 0.5, 0.1], [0.5, 1.0, -0.3], [0.1, -0.3, 0.5]])
    prior = GaussianPrior(space, mean=[1.0, -1.0, 0.0], covariance=cov)
    rng = np.random.default_rng(1)
    draws = np.array([prior.sample(rng) for _ in range(20000)])
    assert np.allclose(draws.mean(axis=0), [1.0, -1.0, 0.0], atol=4 * np.sqrt(np.diag(cov) / 20000))
    assert np.allclose(np.cov(draws.T), cov, atol=0.05)
    assert np.allclose(prior.covariance_action(prior.precision_action(np.ones(3))), np.ones(3))
    diag = GaussianPrior(space, std=[1.0, 2.0, 3.0])
    assert np.allclose(diag.variance, [1.0, 4.0, 9.0])
    assert diag.cost(np.array([1.0, 2.0, 3.0])) == pytest.approx(1.5)


@pytest.mark.mpi
def test_global_order_does_not_depend_on_the_partition(comm):
    arrays = []
    for c in (comm, MPI.COMM_SELF):
        space = _space(c, n=5, degree=1, shape=(2,))
        f = fem.Function(space.control_space.space)
        f.interpolate(lambda x: np.vstack([np.sin(3 * x[0]) + x[1], np.cos(2 * x[1]) * x[0]]))
        arrays.append(space.to_array(f.x.petsc_vec))
        back = space.from_array(arrays[-1])
        assert np.array_equal(space.to_array(back), arrays[-1])
    assert np.max(np.abs(arrays[0] - arrays[1])) < 1e-14  # (interpolation round-off differs by partition)


@pytest.mark.mpi
@pytest.mark.parametrize("make, pattern", [
    (lambda s: BiLaplacianPrior(s, gamma=0.0, delta=1.0), "gamma must be positive and finite, got 0.0"),
    (lambda s: BiLaplacianPrior(s, gamma=1.0, delta=float("nan")), "delta must be positive and finite, got nan"),
    (lambda s: BiLaplacianPrior(ArraySpace(3), 1.0, 1.0), "space must be a FunctionVectors, got ArraySpace"),
    (lambda s: GaussianPrior(ArraySpace(2), std=[1.0, -1.0]), "std must be positive"),
    (lambda s: GaussianPrior(ArraySpace(2), covariance=[[1.0, 2.0], [2.0, 1.0]]), "positive definite"),
    (lambda s: GaussianPrior(ArraySpace(2), covariance=[1.0, 1.0], std=1.0), "exactly one of covariance and std"),
    (lambda s: ArraySpace(0), "size must be a positive integer, got 0"),
])
def test_bad_arguments_are_named(comm, make, pattern):
    space = _space(comm, n=2)
    with pytest.raises(InvalidArgumentError, match=pattern):
        make(space)
