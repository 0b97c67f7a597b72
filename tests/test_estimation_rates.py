"""Log-rates, the multinomial rate misfit and its forces (sensitivity/estimation/rates.py, docs/theory.md §4.5).

Checks: the parametrization round-trips and its tangent and chain rule are each other's transposes; the value is
the multinomial log-likelihood (scipy.stats) up to its constant; the exact derivative passes a Taylor test (rate 2)
and agrees with an independent method, Σ_k <G_k, ∇_J exp(t_kQ)> with the block exponential, to 1e-10; the
first-order and affine forces are their dense Fréchet surrogates paired with G_k, direction by direction (and for
a general J, where the Πᵀ G Πᵀ term matters); at t = 50/κ and 100/κ the first-order error doubles while the
affine one has vanished (it decays like t e^{-κt}); at short times both are first-order accurate; HMC driven by either surrogate gives the exact-force posterior means within
4 combined MCSE; every bad input is an InvalidArgumentError naming the value; every rank gets the same numbers.
"""

from __future__ import annotations

import math

from sensitivity.dense import RateMatrix, expm_frechet, first_order_surrogate, stationary_distribution
from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation import (HMC, RATE_FORCE_KINDS, GaussianPrior, MultinomialRateMisfit, Posterior, RateForce,
                                    log_rate_derivative, log_rate_tangent, log_rates, rate_matrix_from_log_rates,
                                    sample, summarize)
from sensitivity.verification import taylor_test

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from mpi4py import MPI

P0 = np.array([0.5, 0.3, 0.2])
TIMES = np.array([0.3, 1.0, 3.0])


def _misfit(d=3, seed=0, times=TIMES, num_counts=200, comm=None, **kwargs):
    rng = np.random.default_rng(seed)
    theta = rng.normal(scale=0.5, size=d * (d - 1))
    p0 = rng.dirichlet(np.ones(d))
    return MultinomialRateMisfit.synthetic(theta, p0, times, num_counts, rng, comm, **kwargs), theta


def _G(misfit, Q):
    """G_k = -p0 (y_k / p_k)^T from scipy's expm, independently of the module."""
    out = []
    for t, y in zip(misfit.times, misfit.counts):
        p = misfit.p0 @ scipy.linalg.expm(t * Q)
        out.append(-np.outer(misfit.p0, y / p))
    return out


def _unit_directions(Q):
    n = Q.shape[0] * (Q.shape[0] - 1)
    return [log_rate_tangent(Q, e) for e in np.eye(n)]


# --------------------------------------------------------------------------- parametrization


@pytest.mark.parametrize("d", [2, 3, 4])
def test_log_rates_round_trip_and_the_chain_rule_is_the_transpose_of_the_tangent(d):
    rng = np.random.default_rng(d)
    theta = rng.normal(size=d * (d - 1))
    Q = rate_matrix_from_log_rates(theta, d)
    assert np.allclose(Q.sum(axis=1), 0.0, atol=1e-14)
    assert np.array_equal(Q[~np.eye(d, dtype=bool)], np.exp(theta))  # row-major off-diagonal order
    assert np.allclose(log_rates(Q), theta, rtol=0, atol=1e-14)
    v, DQ = rng.normal(size=theta.size), rng.normal(size=(d, d))
    eps = 1e-6
    plus, minus = rate_matrix_from_log_rates(theta + eps * v, d), rate_matrix_from_log_rates(theta - eps * v, d)
    central = (plus - minus) / (2 * eps)
    assert np.allclose(log_rate_tangent(Q, v), central, rtol=1e-8, atol=1e-9)
    assert math.isclose(np.sum(DQ * log_rate_tangent(Q, v)), log_rate_derivative(Q, DQ) @ v, rel_tol=1e-12)
    if d == 3:  # theta_01, theta_02, theta_10, theta_12, theta_20, theta_21
        assert Q[1, 0] == np.exp(theta[2]) and Q[2, 1] == np.exp(theta[5])


def _build(**kwargs):
    base = {"p0": P0, "times": TIMES, "counts": np.ones((3, 3))}
    return lambda: MultinomialRateMisfit(**(base | kwargs))


BAD = {
    "theta shape": (lambda: rate_matrix_from_log_rates(np.zeros(5), 3), r"theta must have shape \(6,\), got \(5,\)"),
    "theta NaN": (lambda: rate_matrix_from_log_rates([0, 0, np.nan, 0, 0, 0], 3), r"theta\[2\] = nan"),
    "theta overflow": (lambda: rate_matrix_from_log_rates([0, 800.0], 2), r"infinite rate: max theta = 800.0"),
    "d": (lambda: rate_matrix_from_log_rates(np.zeros(2), 1), "d must be an integer >= 2, got 1"),
    "zero rate": (lambda: log_rates([[-1.0, 1.0, 0.0], [1, -1, 0], [1, 1, -2]]), r"Q\[0, 2\] = 0.0"),
    "row sum": (lambda: log_rates([[-1.0, 1.0], [2.0, -1.0]]), "row 1 sums to 1.000e"),
    "DQ shape": (lambda: log_rate_derivative([[-1.0, 1.0], [1.0, -1.0]], np.ones((3, 3))),
                 r"DQ must have shape \(2, 2\)"),
    "p0 shape": (_build(p0=np.ones((3, 1)) / 3), r"p0 must have shape \(any,\), got \(3, 1\)"),
    "p0 sum": (_build(p0=[0.5, 0.3, 0.1]), "p0 must be a probability vector: it sums to 0.9"),
    "p0 negative": (_build(p0=[1.1, -0.1, 0.0]), r"p0\[1\] = -0.1 is negative"),
    "p0 NaN": (_build(p0=[0.5, np.nan, 0.5]), r"p0 must be finite: p0\[1\] = nan"),
    "counts shape": (_build(counts=np.ones((3, 2))), r"counts must have shape \(3, 3\), got \(3, 2\)"),
    "counts negative": (_build(counts=[[1, 2, 3], [1, 2, -1], [0, 0, 0]]), r"counts\[1, 2\] = -1.0"),
    "counts NaN": (_build(counts=[[np.nan, 2, 3], [1, 2, 1], [0, 0, 0]]), r"counts\[0, 0\] = nan"),
    "counts inf": (_build(counts=[[1, 2, 3], [1, 2, 1], [0, np.inf, 0]]), r"counts\[2, 1\] = inf"),
    "times zero": (_build(times=[0.1, 0.0, 1.0]), r"positive times, got \[0.1, 0.0, 1.0\]"),
    "times negative": (_build(times=[0.1, -2.0, 1.0]), r"got \[0.1, -2.0, 1.0\]"),
    "method": (_build(method="pade"), "method must be one of .*; got 'pade'"),
    "value NaN": (lambda: _build()().value([0, 0, np.nan, 0, 0, 0]), r"theta must be finite: theta\[2\] = nan"),
    "value shape": (lambda: _build()().value_and_derivative(np.zeros(4)), r"theta must have shape \(6,\)"),
    "force NaN": (lambda: RateForce(_build()(), "affine").derivative([np.nan] * 6), r"theta\[0\] = nan"),
    "kind": (lambda: RateForce(_build()(), "second order"), "kind must be one of .*; got 'second order'"),
    "force misfit": (lambda: RateForce(object()), "misfit must be a MultinomialRateMisfit, got object"),
    "rng": (lambda: MultinomialRateMisfit.synthetic(np.zeros(6), P0, TIMES, 10, 42),
            "rng must be a numpy.random.Generator, got int"),
    "num_counts": (lambda: MultinomialRateMisfit.synthetic(np.zeros(6), P0, TIMES, 0, np.random.default_rng()),
                   "num_counts must be a positive integer, got 0"),
}


@pytest.mark.parametrize("label", list(BAD))
def test_bad_inputs_are_errors_that_name_the_value(label):
    call, message = BAD[label]
    with pytest.raises(InvalidArgumentError, match=message):
        call()


def test_overflowing_or_impossible_points_have_infinite_misfit_and_nan_forces():
    misfit = MultinomialRateMisfit([1.0, 0.0], [1.0], [[1.0, 2.0]])
    value, d = misfit.value_and_derivative([800.0, 0.0])  # exp(800) overflows: no error mid-trajectory
    assert value == math.inf and np.all(np.isnan(d))
    for kind in RATE_FORCE_KINDS:
        assert np.all(np.isnan(RateForce(misfit, kind).derivative([800.0, 0.0])))


# --------------------------------------------------------------------------- value and exact derivative


def test_the_value_is_the_negative_multinomial_log_likelihood_without_its_constant():
    misfit, theta = _misfit(d=4, num_counts=50)
    Q = rate_matrix_from_log_rates(theta, 4)
    expected = 0.0
    for t, y in zip(misfit.times, misfit.counts):
        p = misfit.p0 @ scipy.linalg.expm(t * Q)
        N = int(y.sum())
        constant = math.lgamma(N + 1) - sum(math.lgamma(k + 1) for k in y)
        expected -= scipy.stats.multinomial.logpmf(y, N, p / p.sum()) - constant
    assert math.isclose(misfit.value(theta), expected, rel_tol=1e-12)
    assert np.allclose(misfit.distributions(theta).sum(axis=1), 1.0, atol=1e-13)


@pytest.mark.parametrize("d, seed", [(3, 1), (4, 2)])
def test_the_exact_derivative_passes_a_taylor_test(d, seed):
    misfit, theta = _misfit(d=d, seed=seed)
    value, derivative = misfit.value_and_derivative(theta)
    rng = np.random.default_rng(seed + 10)
    for _ in range(3):
        h = rng.normal(size=theta.size)
        result = taylor_test(misfit.value, theta, h, value=value, derivative=float(derivative @ h), num_steps=5)
        print(f"d = {d}: rates R0 {np.round(result.rates[0], 3)}, R1 {np.round(result.rates[1], 3)}")
        assert result.min_rate(1) > 1.9 and result.min_rate(0) < 1.2, result.rates


@pytest.mark.parametrize("d, seed", [(3, 3), (4, 4)])
def test_the_exact_derivative_agrees_with_the_block_exponential(d, seed):
    misfit, theta = _misfit(d=d, seed=seed)
    _, derivative = misfit.value_and_derivative(theta)
    Q = rate_matrix_from_log_rates(theta, d)
    G = _G(misfit, Q)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(3):
        v = rng.normal(size=theta.size)
        J = log_rate_tangent(Q, v)
        block = sum(np.sum(Gk * expm_frechet(Q, J, t, method="block")) for Gk, t in zip(G, misfit.times))
        worst = max(worst, abs(derivative @ v - block) / abs(block))
    print(f"d = {d}: relative difference from the block exponential {worst:.1e}")
    assert worst <= 1e-10
    assert np.array_equal(RateForce(misfit, "exact").derivative(theta), derivative)
    block_misfit = MultinomialRateMisfit(misfit.p0, misfit.times, misfit.counts, method="block")
    assert np.allclose(block_misfit.value_and_derivative(theta)[1], derivative, rtol=1e-11, atol=1e-11)


# --------------------------------------------------------------------------- surrogate forces


def _affine(Q, J, t, Pi):
    """The projector terms of the variation-of-constants integral, exact; the transient one to first order."""
    X, sharp = scipy.linalg.expm(t * Q), RateMatrix(Q).group_inverse
    B = (X - np.eye(len(Q))) @ sharp
    return t * Pi @ J @ Pi + Pi @ J @ B + B @ J @ Pi + t * (X - Pi) @ J @ (np.eye(len(Q)) - Pi)


def test_the_surrogate_forces_are_their_dense_frechet_surrogates_paired_with_G():
    misfit, theta = _misfit(d=4, seed=5)
    Q = rate_matrix_from_log_rates(theta, 4)
    G, times = _G(misfit, Q), misfit.times
    Pi = RateMatrix(Q).Pi
    assert np.allclose(Pi[0], stationary_distribution(Q), rtol=0, atol=1e-15)
    surrogates = {"first order": first_order_surrogate, "affine": lambda Q, J, t: _affine(Q, J, t, Pi)}
    for kind, surrogate in surrogates.items():
        force = RateForce(misfit, kind)
        assert force.name == kind
        got = force.derivative(theta)
        want = [sum(np.sum(Gk * surrogate(Q, J, t)) for Gk, t in zip(G, times)) for J in _unit_directions(Q)]
        assert np.allclose(got, want, rtol=1e-10, atol=1e-10 * np.max(np.abs(want))), kind
        # a general direction (J1 != 0, so Pi J Pi != 0): the matrix derivative pairs with it as the surrogate does
        J = np.random.default_rng(1).normal(size=(4, 4))
        _, DQ = force.matrix_derivative(theta)
        direct = sum(np.sum(Gk * surrogate(Q, J, t)) for Gk, t in zip(G, times))
        assert math.isclose(np.sum(DQ * J), direct, rel_tol=1e-10), kind
    for J in _unit_directions(Q):  # log-rate directions keep zero row sums: the Pi J Pi term vanishes
        assert np.max(np.abs(Pi @ J @ Pi)) < 1e-14


def test_at_long_times_the_first_order_error_grows_linearly_and_the_affine_one_vanishes():
    rng = np.random.default_rng(6)
    theta = rng.normal(scale=0.5, size=12)
    Q = rate_matrix_from_log_rates(theta, 4)
    R = RateMatrix(Q)
    p0, counts = np.array([1.0, 0.0, 0.0, 0.0]), np.array([[5.0, 1.0, 3.0, 7.0]])  # counts far from N pi
    errors = {"first order": [], "affine": []}
    for c in (2.0, 4.0, 50.0, 100.0):
        misfit = MultinomialRateMisfit(p0, [c / R.spectral_gap], counts)
        exact = misfit.value_and_derivative(theta)[1]
        for kind, found in errors.items():
            found.append(np.linalg.norm(RateForce(misfit, kind).derivative(theta) - exact) / np.linalg.norm(exact))
    first, affine = np.array(errors["first order"]), np.array(errors["affine"])
    print(f"kappa = {R.spectral_gap:.3f}; relative errors at t = (2, 4, 50, 100)/kappa: first order "
          f"{np.array2string(first, precision=3)}, affine {np.array2string(affine, precision=3)}")
    assert abs(first[3] / first[2] - 2.0) < 0.02  # grows linearly in t
    assert affine[1] < affine[0] and affine[2] < 1e-12 and affine[3] < 1e-12  # decays like t exp(-kappa t)
    assert np.all(affine < first)


def test_at_short_times_both_surrogates_are_first_order_accurate():
    """||Y~ - Y|| / ||Y|| = O(t) for the Frechet derivative along a log-rate direction (J1 = 0)."""
    theta = np.random.default_rng(9).normal(scale=0.5, size=12)
    Q = rate_matrix_from_log_rates(theta, 4)
    J = log_rate_tangent(Q, np.random.default_rng(10).normal(size=12))
    Pi = RateMatrix(Q).Pi
    for surrogate in (first_order_surrogate, lambda Q, J, t: _affine(Q, J, t, Pi)):
        e1, e2 = (np.linalg.norm(surrogate(Q, J, t) - expm_frechet(Q, J, t)) / np.linalg.norm(expm_frechet(Q, J, t))
                  for t in (2e-3, 1e-3))
        assert 1.9 < e1 / e2 < 2.1, (e1, e2)


# --------------------------------------------------------------------------- sampling

REFERENCE = np.log([1.0, 0.5, 0.8, 1.2, 0.6, 0.9])
SHORT_TIMES = [0.05, 0.15, 0.5]  # the surrogates' error grows with t|Q|: at t ~ 3 they stall HMC
COUNTS = MultinomialRateMisfit.synthetic(REFERENCE, P0, SHORT_TIMES, 30, np.random.default_rng(4)).counts


def _rate_posterior(kind):
    def build(comm):
        misfit = MultinomialRateMisfit(P0, SHORT_TIMES, COUNTS, comm, method="block")  # block: 3x faster here
        prior = GaussianPrior(misfit.space, REFERENCE, std=0.5)
        return Posterior(misfit, prior, None if kind == "exact" else RateForce(misfit, kind))

    return build


@pytest.mark.slow
def test_hmc_with_a_surrogate_force_samples_the_exact_posterior():
    """The accept step uses the exact Φ: the posterior means agree with the exact-force run within 4 combined MCSE
    (the surrogates only lower the step size and the ESS)."""
    summaries = {}
    for kind in RATE_FORCE_KINDS:
        chains = sample(_rate_posterior(kind), HMC(8, jitter=0.2), num_warmup=200, num_draws=500, num_chains=2,
                        seed=17, target_accept=0.6, initial="mean", comm=MPI.COMM_SELF)
        s = summaries[kind] = summarize(chains)
        print(f"{kind}: acceptance {np.round(s.acceptance_rate, 3)}, step {np.round(s.step_size, 4)}, min ESS "
              f"{float(s.ess_bulk['q'].min()):.0f}, R-hat max {float(s.rhat['q'].max()):.3f}, "
              f"mean {np.round(s.mean['q'].values, 3)}, sd {np.round(s.sd['q'].values, 3)}")
        assert float(s.rhat["q"].max()) < 1.1 and float(s.ess_bulk["q"].min()) > 50
    exact = summaries["exact"]
    assert float(exact.sd["q"].min()) < 0.45  # the data inform the posterior (prior sd 0.5)
    for kind in ("first order", "affine"):
        s = summaries[kind]
        z = (s.mean["q"].values - exact.mean["q"].values) / np.hypot(s.mcse_mean["q"].values,
                                                                      exact.mcse_mean["q"].values)
        print(f"{kind}: z {np.round(z, 2)}")
        assert np.max(np.abs(z)) < 4.0, (kind, z)


# --------------------------------------------------------------------------- MPI


@pytest.mark.mpi
def test_every_rank_gets_the_same_value_and_forces(comm):
    misfit, theta = _misfit(d=3, seed=8, comm=comm)  # the same seeded generator on every rank
    value, derivative = misfit.value_and_derivative(theta)
    forces = [RateForce(misfit, kind).derivative(theta) for kind in RATE_FORCE_KINDS]
    for item in [value, derivative, *forces]:
        first = comm.bcast(item, root=0)
        assert all(comm.allgather(np.array_equal(item, first)))
    assert np.array_equal(forces[0], derivative)


@pytest.mark.mpi
def test_data_that_differ_between_ranks_fail_on_every_rank(comm):
    if comm.size == 1:
        pytest.skip("needs several ranks")
    counts = np.ones((3, 3))
    counts[0, 0] += comm.rank
    with pytest.raises(InvalidArgumentError, match="counts differs between MPI ranks"):
        MultinomialRateMisfit(P0, TIMES, counts, comm)
