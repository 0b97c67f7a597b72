"""Rate matrices: membership, stationary data, group inverse, and the corrected
long-time asymptotics of ∇_J exp(tQ) with its explicit bound (docs/theory.md §1)."""

from __future__ import annotations

import numpy as np
import pytest

from sensitivity.dense import (
    RateMatrix,
    check_rate_matrix,
    expm_frechet,
    first_order_surrogate,
    group_inverse,
    is_rate_matrix,
    random_rate_matrix,
    spectral_gap,
    stationary_distribution,
)
from sensitivity.errors import NotARateMatrixError, NotDiagonalizableError


@pytest.fixture
def Q(rng):
    return random_rate_matrix(7, rng)


def _direction(d, zero_row_sums=False):
    J = np.cos(1.0 + np.arange(d * d)).reshape(d, d)
    if zero_row_sums:
        J -= np.diag(J.sum(axis=1))
    return J


def test_membership_errors_name_the_problem():
    Q = np.array([[-1.0, 1.0, 0.0], [0.5, -1.0, 0.5], [0.0, 2.0, -2.0]])
    assert is_rate_matrix(Q) and not is_rate_matrix(Q, strict=True)
    with pytest.raises(NotARateMatrixError, match=r"Q\[0, 2\] = 0 is not strictly positive"):
        check_rate_matrix(Q, strict=True)
    bad = Q.copy()
    bad[1, 0], bad[1, 1] = -0.5, 0.0
    with pytest.raises(NotARateMatrixError, match=r"Q\[1, 0\] = -0.5 is negative"):
        check_rate_matrix(bad)
    bad = Q.copy()
    bad[2, 2] = -1.0
    with pytest.raises(NotARateMatrixError, match="row 2 of Q sums to 1.000e\\+00"):
        check_rate_matrix(bad)
    reducible = np.array([[-1.0, 1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    with pytest.raises(NotARateMatrixError, match="reducible"):
        check_rate_matrix(reducible)
    with pytest.raises(NotARateMatrixError, match="at least 2 states"):
        check_rate_matrix(np.zeros((1, 1)))
    with pytest.raises(NotARateMatrixError, match="real"):
        check_rate_matrix(Q + 0j)


def test_stationary_data(Q):
    R = RateMatrix(Q)
    pi, G = R.pi, R.group_inverse
    assert np.all(pi > 0) and pi.sum() == pytest.approx(1.0, abs=1e-15)
    assert np.abs(pi @ Q).max() < 1e-14
    # null vector by an independent route: the SVD of Q^T
    null = np.linalg.svd(Q.T)[2][-1]
    assert np.allclose(pi, null / null.sum(), rtol=1e-12, atol=0)
    # group inverse axioms: Q G Q = Q, G Q G = G, QG = GQ = I - Pi
    assert np.allclose(Q @ G @ Q, Q, atol=1e-13)
    assert np.allclose(G @ Q @ G, G, atol=1e-13)
    assert np.allclose(Q @ G, G @ Q, atol=1e-13)
    assert np.allclose(Q @ G, np.eye(7) - R.Pi, atol=1e-13)
    lam = np.linalg.eigvals(Q)
    assert R.spectral_gap == pytest.approx(np.sort(np.abs(lam.real))[1], rel=1e-12)
    assert np.allclose(stationary_distribution(Q), pi) and np.allclose(group_inverse(Q), G)
    assert spectral_gap(Q) == R.spectral_gap


def test_diagonalizability_threshold(Q):
    with pytest.raises(NotDiagonalizableError, match="max_condition"):
        RateMatrix(Q, max_condition=1.0)


@pytest.mark.parametrize("zero_row_sums", [False, True])
def test_corrected_asymptotics_obey_the_explicit_bound(Q, zero_row_sums):
    R = RateMatrix(Q)
    J = _direction(7, zero_row_sums)
    bound = R.asymptotic_bound(J)
    assert bound.C == max(bound.C0, bound.C1) and bound.kappa == R.spectral_gap
    errors, bounds = [], []
    for t in np.linspace(0.0, 40.0 / R.spectral_gap, 41):
        Y = expm_frechet(Q, J, t)
        err = np.linalg.norm(Y - R.asymptotic_derivative(J, t), 2)
        roundoff = 1e-14 * max(1.0, np.linalg.norm(Y, 2))
        assert err <= bound(t) + roundoff, (t, err, bound(t))
        assert bound(t) <= bound.C * (1 + t) * np.exp(-bound.kappa * t) * (1 + 1e-12)
        errors.append(err)
        bounds.append(bound(t))
    # the error really decays at least like the bound until round-off: not a vacuous inequality
    assert errors[-1] < 1e-9 * errors[1]


def test_limit_is_the_stationary_derivative(Q):
    """For J1 = 0: Y(t) -> -Pi J Q^#, whose rows are dpi = -pi J Q^# (Meyer 1975)."""
    R = RateMatrix(Q)
    J = _direction(7, zero_row_sums=True)
    limit = -R.Pi @ J @ R.group_inverse
    assert np.allclose(R.asymptotic_derivative(J, 123.0), limit, atol=1e-14)
    assert np.allclose(expm_frechet(Q, J, 60.0 / R.spectral_gap), limit, atol=1e-12)
    dpi = R.stationary_derivative(J)
    assert abs(dpi.sum()) < 1e-14
    # Taylor test of pi(Q + eps J)
    eps = 1e-3 / 2.0 ** np.arange(4)
    res = [np.linalg.norm(stationary_distribution(Q + e * J) - R.pi - e * dpi) for e in eps]
    assert np.all(np.log2(np.array(res[:-1]) / res[1:]) > 1.9), res


def test_seed_theorem_is_false_and_first_order_error_grows(Q):
    R = RateMatrix(Q)
    J = _direction(7)
    assert np.abs(J.sum(axis=1)).max() > 0.1
    ts = np.array([20.0, 40.0, 80.0]) / R.spectral_gap
    seed_err = [np.linalg.norm(expm_frechet(Q, J, t) - R.seed_theorem_2_1(J, t), 2) for t in ts]
    first = [np.linalg.norm(expm_frechet(Q, J, t) - first_order_surrogate(Q, J, t), 2) for t in ts]
    # The seed formula does not converge: its error stays O(1) or grows.
    assert min(seed_err) > 1e-2 and seed_err[-1] >= 0.9 * seed_err[0]
    # First-order surrogate: error ~ t ||Pi J (I - Pi)||, linear growth.
    slope = np.linalg.norm(R.Pi @ J @ (np.eye(7) - R.Pi), 2)
    assert np.allclose(np.array(first) / ts, slope, rtol=0.05)


def test_first_order_surrogate_bounded_when_pi_J_vanishes(Q):
    R = RateMatrix(Q)
    J = _direction(7)
    J = J - np.outer(np.ones(7), R.pi @ J)  # pi^T J = 0
    errs = [np.linalg.norm(expm_frechet(Q, J, t) - first_order_surrogate(Q, J, t), 2) for t in (10.0, 100.0)]
    assert errs[1] < 1.5 * errs[0] + 1e-12
