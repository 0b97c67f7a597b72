"""The Laplace approximation at the MAP point (docs/theory.md §4.3; sensitivity/estimation/laplace.py).

Checks: on linear-Gaussian problems (dense parameters with a full prior covariance, and point values of a
field under the bi-Laplacian prior) the low-rank approximation equals the exact posterior once the rank
covers the number of observations — covariance relative error ≤ 1e-8, the mean is the MAP point, the
pointwise variance is the exact diagonal — its eigenvalues are those of a dense generalized eigensolve
``scipy.linalg.eigh(H, C⁻¹)`` and its eigenvectors are C⁻¹-orthonormal; a truncated rank over-estimates
the covariance by exactly the dropped terms; the sample variance of Laplace samples is its pointwise
variance within Monte Carlo error; samples and eigenvalues for a seed are the same on 1, 2 and 3 ranks;
the Gauss–Newton flag selects the misfit's Gauss–Newton Hessian; the fields are written for ParaView;
bad arguments are named.
"""

from __future__ import annotations

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation import GaussianPrior, LinearMisfit, Posterior, dense_operator, exact_posterior, find_map
from sensitivity.estimation.laplace import (
    LaplaceForce,
    LaplaceApproximation,
    NotPositiveDefiniteError,
    laplace_rel_err,
    laplace_relative_error,
)
from sensitivity.estimation.problems import dense_linear_problem
from sensitivity.estimation.map import REDUNDANT_LU, point_observation_problem

import numpy as np
import pytest
import scipy.linalg
from mpi4py import MPI


def _dense_problem(comm, n=15, m=6, seed=0):
    return dense_linear_problem(comm, n, m, noise=0.05, jitter=0.5, seed=seed)


def _shared_tmp(comm, tmp_path_factory):
    path = tmp_path_factory.mktemp("laplace") if comm.rank == 0 else None
    return comm.bcast(path, root=0)


@pytest.mark.mpi
def test_dense_linear_gaussian_laplace_is_the_exact_posterior(comm):
    posterior, misfit, prior = _dense_problem(comm)
    result = find_map(posterior, np.zeros(15), "nls", gttol=1e-12)
    laplace = LaplaceApproximation(posterior, result, rank=6, oversampling=5, seed=3)
    errors = laplace_relative_error(laplace, misfit, prior)
    if comm.rank == 0:
        print("dense:", errors)
    assert laplace.rank == 6 and laplace.hessian_actions == 11 + 6  # two passes: 11 random vectors, then Q
    assert errors["covariance"] < 1e-8 and errors["variance"] < 1e-8, errors
    assert errors["mean"] < 1e-8 and errors["eigenvalues"] < 1e-10, errors
    assert np.all(np.diff(laplace.eigenvalues) <= 0)
    # V^T C^-1 V = I and H V = C^-1 V Lambda
    V = np.array(laplace.eigenvectors).T
    R = dense_operator(posterior.space, prior.precision_action)
    H = dense_operator(posterior.space, lambda v: misfit.hessian_action(None, v))
    assert np.linalg.norm(V.T @ R @ V - np.eye(6)) < 1e-10
    assert np.linalg.norm(H @ V - R @ V * laplace.eigenvalues) < 1e-9 * np.linalg.norm(H)
    # the precision action is the inverse of the covariance action
    d = np.cos(np.arange(15.0))
    assert np.allclose(laplace.precision_action(laplace.covariance_action(d)), d, rtol=1e-9, atol=1e-9)
    # a rank above the spectrum: the null directions are dropped, the result is the same
    wide = LaplaceApproximation(posterior, result, rank=12, seed=4)
    assert wide.rank == 6 and laplace_relative_error(wide, misfit, prior)["covariance"] < 1e-8


@pytest.mark.mpi
def test_pde_linear_gaussian_laplace_is_the_exact_posterior(comm, tmp_path_factory):
    """Point values at 16 sensors of a P1 field under the bi-Laplacian prior (6² mesh, 49 parameters)."""
    posterior, misfit, prior = point_observation_problem(comm, 6, petsc_options=REDUNDANT_LU)
    space = posterior.space
    result = find_map(posterior, space.zeros(), "nls", gttol=1e-12)
    laplace = LaplaceApproximation(posterior, result, rank=16, oversampling=8, seed=11)
    errors = laplace_relative_error(laplace, misfit, prior)
    if comm.rank == 0:
        print(f"PDE: eigenvalues {laplace.eigenvalues[0]:.3g} .. {laplace.eigenvalues[-1]:.3g}, errors {errors}")
    assert laplace.rank == 16
    assert errors["covariance"] < 1e-8 and errors["variance"] < 1e-8, errors
    assert errors["mean"] < 1e-8 and errors["eigenvalues"] < 1e-9, errors
    gram = space.gram(laplace.eigenvectors, [prior.precision_action(v) for v in laplace.eigenvectors])
    assert np.linalg.norm(gram - np.eye(16)) < 1e-10
    # the fields for ParaView
    path = _shared_tmp(comm, tmp_path_factory) / "laplace.bp"
    laplace.write_fields(path)
    assert comm.bcast((path / "md.idx").is_file() if comm.rank == 0 else None, root=0)
    laplace.destroy()
    prior.destroy()


def test_benchmark_error_on_a_finer_mesh():
    """The benchmark's laplace_rel_err: the 8² mesh (81 parameters), rank 16 = the number of observations."""
    error = laplace_rel_err(MPI.COMM_SELF, 8)
    print(f"laplace_rel_err (8² mesh) = {error:.2e}")
    assert error < 1e-8


def test_truncated_rank_overestimates_the_covariance_by_the_dropped_terms():
    posterior, misfit, prior = _dense_problem(MPI.COMM_SELF)
    _, exact = exact_posterior(misfit, prior)
    H = dense_operator(posterior.space, lambda v: misfit.hessian_action(None, v))
    R = dense_operator(posterior.space, prior.precision_action)
    lam, W = scipy.linalg.eigh(H, R)
    lam, W = lam[::-1], W[:, ::-1]
    point = posterior.space.zeros()
    previous = np.inf
    for k in (1, 2, 4):
        laplace = LaplaceApproximation(posterior, point, rank=k, oversampling=6, seed=k)
        gap = laplace.dense_covariance() - exact
        dropped = (W[:, k:6] * (lam[k:6] / (1 + lam[k:6]))) @ W[:, k:6].T
        assert np.all(np.linalg.eigvalsh(0.5 * (gap + gap.T)) > -1e-10)  # larger than the exact covariance
        # the oversampled range finder captures the first k directions to within the tail's size
        assert np.linalg.norm(gap - dropped) < 1e-3 * np.linalg.norm(exact), (k, np.linalg.norm(gap - dropped))
        assert np.linalg.norm(gap) < previous
        previous = np.linalg.norm(gap)


def test_sample_variance_is_the_pointwise_variance():
    """(Serial: 2000 draws; the draws are the same on any number of ranks, the next test.)"""
    comm = MPI.COMM_SELF
    posterior, _, prior = point_observation_problem(comm, 5)
    space = posterior.space
    result = find_map(posterior, space.zeros(), "nls", gttol=1e-10)
    laplace = LaplaceApproximation(posterior, result, rank=16, seed=5)
    variance = space.to_array(laplace.pointwise_variance())
    prior_variance = space.to_array(laplace.prior_variance())
    assert np.all(variance < prior_variance) and np.all(variance > 0)
    draws = 2000
    rng = np.random.default_rng(6)
    samples = np.array([space.to_array(laplace.sample(rng)) for _ in range(draws)])
    mean = space.to_array(laplace.map_point)
    mean_z = (samples.mean(axis=0) - mean) / np.sqrt(variance / draws)
    var_z = (samples.var(axis=0, ddof=1) - variance) / (variance * np.sqrt(2.0 / (draws - 1)))
    if comm.rank == 0:
        print(f"max|z_var| {np.max(np.abs(var_z)):.2f}, mean z_var {np.mean(var_z):.3f}, "
              f"max|z_mean| {np.max(np.abs(mean_z)):.2f}")
    assert np.max(np.abs(var_z)) < 4.5 and abs(np.mean(var_z)) < 1.0, var_z
    assert np.max(np.abs(mean_z)) < 4.5, mean_z
    # the sample covariance is the Laplace covariance, within 3 expected errors of a Gaussian estimate:
    # E||S - Gamma||_F^2 = (tr(Gamma)^2 + ||Gamma||_F^2) / N
    cov = laplace.dense_covariance()
    expected = np.sqrt((np.trace(cov) ** 2 + np.linalg.norm(cov) ** 2) / draws)
    assert np.linalg.norm(np.cov(samples.T) - cov) < 3 * expected, (np.linalg.norm(np.cov(samples.T) - cov), expected)
    laplace.destroy()
    prior.destroy()


@pytest.mark.mpi
def test_eigenpairs_and_samples_do_not_depend_on_the_number_of_ranks(comm):
    out = []
    for c in (comm, MPI.COMM_SELF):
        posterior, _, prior = point_observation_problem(c, 6, petsc_options=REDUNDANT_LU)
        space = posterior.space
        point = space.from_array(np.linspace(-1.0, 1.0, space.size))
        laplace = LaplaceApproximation(posterior, point, rank=8, oversampling=4, seed=20261203)
        rng = np.random.default_rng(7)
        samples = np.array([space.to_array(laplace.sample(rng)) for _ in range(3)])
        out.append((laplace.eigenvalues.copy(), samples, space.to_array(laplace.pointwise_variance())))
        laplace.destroy()
        prior.destroy()
    (lam0, s0, v0), (lam1, s1, v1) = out
    assert np.allclose(lam0, lam1, rtol=1e-10, atol=0)
    assert np.max(np.abs(s0 - s1)) < 1e-9 * np.max(np.abs(s1))
    assert np.max(np.abs(v0 - v1)) < 1e-10 * np.max(v1)


class _Scaled(LinearMisfit):
    """A linear misfit whose Gauss-Newton Hessian is declared as half its Hessian (to see the flag)."""

    def gauss_newton_action(self, q, v):
        return 0.5 * self.hessian_action(q, v)


def test_gauss_newton_flag_selects_the_gauss_newton_hessian():
    rng = np.random.default_rng(2)
    G = rng.standard_normal((4, 9))
    base = LinearMisfit.from_matrix(G, rng.standard_normal(4), 0.1, comm=MPI.COMM_SELF)
    misfit = _Scaled(base.space, base.apply, base.apply_transpose, base.data, 0.1)
    prior = GaussianPrior(misfit.space, std=1.0)
    posterior = Posterior(misfit, prior)
    full = LaplaceApproximation(posterior, np.zeros(9), rank=4, seed=1)
    gn = LaplaceApproximation(posterior, np.zeros(9), rank=4, gauss_newton=True, seed=1)
    assert np.allclose(gn.eigenvalues, 0.5 * full.eigenvalues, rtol=1e-10)
    # an indefinite Hessian (eigenvalue <= -1) is refused
    negative = LinearMisfit(misfit.space, lambda q: G @ q, lambda w: -4e3 * (G.T @ w), base.data, 0.1)
    with pytest.raises(NotPositiveDefiniteError, match="not positive definite"):
        LaplaceApproximation(Posterior(negative, prior), np.zeros(9), rank=2)


@pytest.mark.mpi
@pytest.mark.parametrize("make, pattern", [
    (lambda p, q: LaplaceApproximation("posterior", q), "posterior must be a Posterior, got str"),
    (lambda p, q: LaplaceApproximation(p, q, rank=0), "rank must be"),
    (lambda p, q: LaplaceApproximation(p, q, rank=16), "rank must be"),
    (lambda p, q: LaplaceApproximation(p, q, oversampling=-1), "oversampling must be"),
    (lambda p, q: LaplaceApproximation(p, q, gauss_newton=1), "gauss_newton must be True or False"),
    (lambda p, q: LaplaceApproximation(p, q, seed=-3), "seed must be"),
    (lambda p, q: LaplaceApproximation(p, np.zeros(4)), r"point must have shape \(15,\), got \(4,\)"),
    (lambda p, q: LaplaceApproximation(p, np.full(15, np.inf)), "point must be finite"),
    (lambda p, q: LaplaceApproximation(p, q, rank=3).write_fields("x.bp"), "write_fields needs FunctionVectors"),
])
def test_bad_arguments_are_named(comm, make, pattern):
    posterior, _, _ = _dense_problem(comm)
    with pytest.raises(InvalidArgumentError, match=pattern):
        make(posterior, np.zeros(15))


def test_the_laplace_force_of_full_rank_is_the_exact_derivative_of_a_linear_misfit():
    """On a linear-Gaussian problem the quadratic model is the misfit itself once the rank covers the spectrum;
    with a smaller rank it misses the rest of the Hessian (the samplers' tests show it still gives the exact
    target)."""
    posterior, misfit, prior = point_observation_problem(MPI.COMM_SELF, 6, sensors=2)
    space = posterior.space
    result = find_map(posterior, space.zeros(), "nls", gttol=1e-12)
    q = space.from_array(np.random.default_rng(3).standard_normal(space.size))
    exact = space.to_array(misfit.value_and_derivative(q)[1])
    errors = {}
    for rank in (misfit.data.size, 2):
        force = LaplaceForce(LaplaceApproximation(posterior, result, rank=rank))
        errors[rank] = np.linalg.norm(space.to_array(force.derivative(q)) - exact) / np.linalg.norm(exact)
        force.destroy()
    assert force.name == "Laplace"
    assert errors[misfit.data.size] < 1e-9 and errors[2] > 1e-3, errors
    with pytest.raises(InvalidArgumentError, match="laplace must be a LaplaceApproximation, got Posterior"):
        LaplaceForce(posterior)
