"""The surrogate family: exactness when [Q, J] = 0, orders of accuracy in t, convergence in K."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg

from sensitivity.dense import expm_frechet, first_order_surrogate, seed_4_1_surrogate, series_surrogate
from sensitivity.errors import InvalidArgumentError


@pytest.fixture
def QJ(rng):
    Q = rng.standard_normal((6, 6)) / 3
    J = rng.standard_normal((6, 6))
    return Q, J


def test_first_order_exact_for_commuting_direction(QJ):
    Q, _ = QJ
    J = 0.3 * np.eye(6) - Q + 0.5 * Q @ Q  # a polynomial in Q
    for t in [0.5, 3.0]:
        Y = expm_frechet(Q, J, t)
        assert np.linalg.norm(first_order_surrogate(Q, J, t) - Y) <= 1e-13 * np.linalg.norm(Y)


def test_order_zero_is_first_order(QJ):
    Q, J = QJ
    assert np.allclose(series_surrogate(Q, J, 1.2, order=0), first_order_surrogate(Q, J, 1.2), atol=1e-15)


@pytest.mark.parametrize("K", [0, 1, 2, 3])
def test_order_K_error_is_order_K_plus_2_in_t(QJ, K):
    Q, J = QJ
    ts = np.array([0.2, 0.1, 0.05, 0.025])
    err = [np.linalg.norm(series_surrogate(Q, J, t, order=K) - expm_frechet(Q, J, t)) for t in ts]
    slope = np.polyfit(np.log(ts), np.log(err), 1)[0]
    assert abs(slope - (K + 2)) < 0.1, (K, slope)


def test_order_K_converges_to_exact(QJ):
    Q, J = QJ
    Y = expm_frechet(Q, J, 2.0)
    errs = [np.linalg.norm(series_surrogate(Q, J, 2.0, order=K) - Y) / np.linalg.norm(Y) for K in (2, 6, 12, 30)]
    assert errs[0] > errs[1] > errs[2] and errs[3] < 1e-13


def test_seed_4_1_is_its_integral_and_third_order(QJ):
    Q, J = QJ
    t = 0.7
    eye = np.eye(6)
    integral = scipy.integrate.quad_vec(lambda s: (eye - s * Q) @ J @ (eye + s * Q), 0.0, t)[0]
    assert np.allclose(seed_4_1_surrogate(Q, J, t), scipy.linalg.expm(t * Q) @ integral, atol=1e-13)
    ts = np.array([0.1, 0.05, 0.025])
    err = [np.linalg.norm(seed_4_1_surrogate(Q, J, s) - expm_frechet(Q, J, s)) for s in ts]
    assert abs(np.polyfit(np.log(ts), np.log(err), 1)[0] - 3) < 0.1


def test_bad_order():
    with pytest.raises(InvalidArgumentError, match="order must be an integer >= 0, got -1"):
        series_surrogate(np.eye(2), np.eye(2), 1.0, order=-1)
