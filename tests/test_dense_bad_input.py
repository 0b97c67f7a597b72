"""Hostile inputs across the dense API: each is a clear InvalidArgumentError (or one of its
subclasses) whose message names the bad argument, raised before anything is computed."""

from __future__ import annotations

import re

import numpy as np
import pytest

import sensitivity.dense as dense
from sensitivity.dense import (
    AsymptoticBound,
    EigenFrechet,
    RateMatrix,
    SkewHermitian,
    ToyQuantumModel,
    ad_terms,
    check_rate_matrix,
    check_skew_hermitian,
    ensemble_statistics,
    estimate_potential,
    exp_divided_differences,
    expm_frechet,
    expm_frechet_block,
    expm_frechet_eig,
    expm_frechet_scipy,
    expm_frechet_series,
    expm_gradient,
    first_order_surrogate,
    fix_gauge,
    group_inverse,
    is_rate_matrix,
    random_rate_matrix,
    secular_projection,
    secular_surrogate,
    seed_4_1_surrogate,
    series_surrogate,
    spectral_gap,
    spectral_statistics,
    stationary_distribution,
    surrogate_errors,
    value_and_gradient,
)
from sensitivity.errors import InvalidArgumentError, NotARateMatrixError, NotSkewHermitianError

NAN, INF = float("nan"), float("inf")
Q2 = np.array([[-1.0, 1.0], [2.0, -2.0]])
J2 = np.array([[0.0, 1.0], [0.5, 0.0]])
Q_NAN = np.array([[-1.0, NAN], [2.0, -2.0]])
J_INF = np.array([[0.0, 1.0], [INF, 0.0]])
H4 = -(np.eye(4, k=1) + np.eye(4, k=-1))
X4 = np.eye(4)[0]
A2 = np.array([[1j, 2.0], [-2.0, 0.0]])
NOT_HERMITIAN = H4 + 0.5 * np.eye(4, k=1)


def _model():
    return ToyQuantumModel(H4, X4, [1.0, 2.0])


def _data():
    return _model().probabilities(np.arange(4.0))


def _with(array, index, value):
    out = np.array(array, dtype=np.result_type(array, type(value)))
    out[index] = value
    return out


def _nan_value(X):
    return NAN, np.zeros_like(X)


#: (id, public name under test, call, exception type, regex the message must contain: the argument's name)
CASES = [
    ("nan-in-Q", "expm_frechet", lambda: expm_frechet(Q_NAN, J2, 1.0), InvalidArgumentError, r"Q\[0, 1\] = nan"),
    ("inf-in-J", "expm_frechet", lambda: expm_frechet(Q2, J_INF, 1.0), InvalidArgumentError, r"J\[1, 0\] = inf"),
    ("t-nan", "expm_frechet", lambda: expm_frechet(Q2, J2, NAN), InvalidArgumentError, r"\bt must be .*nan"),
    ("t-bool", "first_order_surrogate", lambda: first_order_surrogate(Q2, J2, True), InvalidArgumentError,
     r"\bt must be .*True"),
    ("t-inf-scipy", "expm_frechet_scipy", lambda: expm_frechet_scipy(Q2, J2, INF), InvalidArgumentError, r"\bt must"),
    ("empty-Q", "expm_frechet_block", lambda: expm_frechet_block(np.zeros((0, 0)), np.zeros((0, 0))),
     InvalidArgumentError, r"Q must be a non-empty square 2-D array, got shape \(0, 0\)"),
    ("non-square-Q", "check_rate_matrix", lambda: check_rate_matrix(np.ones((2, 3))), InvalidArgumentError,
     r"Q must be a non-empty square 2-D array, got shape \(2, 3\)"),
    ("J-wrong-shape", "expm_frechet_eig", lambda: expm_frechet_eig(Q2, np.eye(3)), InvalidArgumentError,
     r"J must have shape \(2, 2\)"),
    ("theta-nan", "expm_frechet_series", lambda: expm_frechet_series(Q2, J2, 1.0, theta=NAN), InvalidArgumentError,
     r"theta"),
    ("max-terms-zero", "expm_frechet_series", lambda: expm_frechet_series(Q2, J2, 1.0, max_terms=0),
     InvalidArgumentError, r"max_terms"),
    ("unknown-method", "expm_frechet", lambda: expm_frechet(Q2, J2, 1.0, method="pade"), InvalidArgumentError,
     r"method 'pade'"),
    ("lam-nan", "exp_divided_differences", lambda: exp_divided_differences([0.0, NAN], 1.0), InvalidArgumentError,
     r"lam\[1\]"),
    ("eigen-t-inf", "EigenFrechet", lambda: EigenFrechet(Q2, INF), InvalidArgumentError, r"\bt must"),
    ("eigen-tol-negative", "EigenFrechet", lambda: EigenFrechet(Q2, 1.0, tol=-1.0), InvalidArgumentError, r"tol"),
    ("eigen-Vinv-nan", "EigenFrechet", lambda: EigenFrechet.from_eigendecomposition(
        [1.0, 2.0], np.eye(2), _with(np.eye(2), (0, 0), NAN)), InvalidArgumentError, r"Vinv\[0, 0\]"),
    ("eigen-stack-inf", "EigenFrechet", lambda: EigenFrechet(Q2)(np.stack([J2, J_INF])), InvalidArgumentError,
     r"J\[1\]"),
    ("ad-Q-nan", "ad_terms", lambda: ad_terms(Q_NAN, J2), InvalidArgumentError, r"Q\[0, 1\]"),
    ("G-nan", "expm_gradient", lambda: expm_gradient(Q2, _with(J2, (1, 1), NAN), 1.0), InvalidArgumentError,
     r"G\[1, 1\]"),
    ("f-not-callable", "value_and_gradient", lambda: value_and_gradient("f", Q2), InvalidArgumentError, r"\bf must"),
    ("f-returns-nan", "value_and_gradient", lambda: value_and_gradient(_nan_value, Q2), InvalidArgumentError,
     r"value returned by f"),
    ("order-negative", "series_surrogate", lambda: series_surrogate(Q2, J2, 1.0, order=-1), InvalidArgumentError,
     r"order must be an integer >= 0, got -1"),
    ("order-bool", "series_surrogate", lambda: series_surrogate(Q2, J2, 1.0, order=True), InvalidArgumentError,
     r"order .*True"),
    ("order-float", "series_surrogate", lambda: series_surrogate(Q2, J2, 1.0, order=1.5), InvalidArgumentError,
     r"order .*1\.5"),
    ("seed41-J-inf", "seed_4_1_surrogate", lambda: seed_4_1_surrogate(Q2, J_INF), InvalidArgumentError, r"J\[1, 0\]"),
    ("complex-rate-matrix", "RateMatrix", lambda: RateMatrix(Q2 + 1j * np.eye(2)), NotARateMatrixError,
     r"Q must be real"),
    ("rate-nan", "is_rate_matrix", lambda: is_rate_matrix(Q_NAN), InvalidArgumentError, r"Q\[0, 1\]"),
    ("rate-atol-negative", "check_rate_matrix", lambda: check_rate_matrix(Q2, atol=-1.0), InvalidArgumentError,
     r"atol"),
    ("stationary-nan", "stationary_distribution", lambda: stationary_distribution(Q_NAN), InvalidArgumentError,
     r"Q\[0, 1\]"),
    ("group-inverse-inf", "group_inverse", lambda: group_inverse(_with(Q2, (1, 0), INF)), InvalidArgumentError,
     r"Q\[1, 0\]"),
    ("gap-complex", "spectral_gap", lambda: spectral_gap(Q2 + 0j), NotARateMatrixError, r"Q must be real"),
    ("rate-J-inf", "RateMatrix", lambda: RateMatrix(Q2).asymptotic_derivative(J_INF, 1.0), InvalidArgumentError,
     r"J\[1, 0\]"),
    ("rate-t-nan", "RateMatrix", lambda: RateMatrix(Q2).seed_theorem_2_1(J2, NAN), InvalidArgumentError, r"\bt must"),
    ("bound-t-nan", "AsymptoticBound", lambda: AsymptoticBound(1.0, 1.0, 1.0, 1.0)([1.0, NAN]),
     InvalidArgumentError, r"t\[1\]"),
    ("skew-inf", "SkewHermitian", lambda: SkewHermitian(_with(A2, (0, 0), INF)), InvalidArgumentError, r"A\[0, 0\]"),
    ("skew-rtol-nan", "check_skew_hermitian", lambda: check_skew_hermitian(A2, rtol=NAN), InvalidArgumentError,
     r"rtol"),
    ("skew-cluster-negative", "SkewHermitian", lambda: SkewHermitian(A2, cluster_tol=-1.0), InvalidArgumentError,
     r"cluster_tol"),
    ("secular-J-nan", "secular_projection", lambda: secular_projection(A2, _with(J2, (0, 0), NAN)),
     InvalidArgumentError, r"J\[0, 0\]"),
    ("secular-t-nan", "secular_surrogate", lambda: secular_surrogate(A2, J2, NAN), InvalidArgumentError, r"\bt must"),
    ("random-d-zero", "random_rate_matrix", lambda: random_rate_matrix(0), InvalidArgumentError, r"\bd must"),
    ("random-scale-inf", "random_rate_matrix", lambda: random_rate_matrix(3, scale=INF), InvalidArgumentError,
     r"scale"),
    ("random-rng-negative", "random_rate_matrix", lambda: random_rate_matrix(3, -1), InvalidArgumentError, r"rng"),
    ("statistics-nan", "spectral_statistics", lambda: spectral_statistics(Q_NAN), InvalidArgumentError, r"Q\[0, 1\]"),
    ("ensemble-samples-zero", "ensemble_statistics", lambda: ensemble_statistics([3], 0), InvalidArgumentError,
     r"samples"),
    ("ensemble-dims", "ensemble_statistics", lambda: ensemble_statistics([3, 1], 2), InvalidArgumentError,
     r"dims\[1\]"),
    ("ensemble-seed-float", "ensemble_statistics", lambda: ensemble_statistics([3], 2, seed=0.5),
     InvalidArgumentError, r"seed"),
    ("H0-not-Hermitian", "ToyQuantumModel", lambda: ToyQuantumModel(NOT_HERMITIAN, X4, [1.0]),
     NotSkewHermitianError, r"H0 is not Hermitian.*H0\[0, 1\]"),
    ("H0-nan", "ToyQuantumModel", lambda: ToyQuantumModel(_with(H4, (2, 2), NAN), X4, [1.0]), InvalidArgumentError,
     r"H0\[2, 2\]"),
    ("x0-not-normalized", "ToyQuantumModel", lambda: ToyQuantumModel(H4, 2 * X4, [1.0]), InvalidArgumentError,
     r"x0 must be normalized, got \|\|x0\|\|_2 = 2\.0"),
    ("x0-nan", "ToyQuantumModel", lambda: ToyQuantumModel(H4, _with(X4, 3, NAN), [1.0]), InvalidArgumentError,
     r"x0\[3\]"),
    ("times-inf", "ToyQuantumModel", lambda: ToyQuantumModel(H4, X4, [1.0, INF]), InvalidArgumentError,
     r"times\[1\]"),
    ("V-nan", "ToyQuantumModel", lambda: _model().jacobian([0.0, NAN, 0.0, 0.0]), InvalidArgumentError, r"V\[1\]"),
    ("data-wrong-length", "ToyQuantumModel", lambda: _model().misfit(np.zeros(4), _data()[:, :3]),
     InvalidArgumentError, r"data must have shape"),
    ("data-nan", "estimate_potential", lambda: estimate_potential(_model(), _with(_data(), (1, 2), NAN)),
     InvalidArgumentError, r"data\[1, 2\]"),
    ("sigma-negative", "estimate_potential", lambda: estimate_potential(_model(), _data(), -0.1),
     InvalidArgumentError, r"sigma = -0\.1"),
    ("sigma-nan", "ToyQuantumModel", lambda: _model().misfit_gradient(np.zeros(4), _data(), NAN),
     InvalidArgumentError, r"sigma = nan"),
    ("alpha-inf", "estimate_potential", lambda: estimate_potential(_model(), _data(), alpha=INF),
     InvalidArgumentError, r"alpha"),
    ("n-starts-zero", "estimate_potential", lambda: estimate_potential(_model(), _data(), n_starts=0),
     InvalidArgumentError, r"n_starts"),
    ("gauge-value-nan", "estimate_potential", lambda: estimate_potential(_model(), _data(), gauge_value=NAN),
     InvalidArgumentError, r"gauge_value"),
    ("not-a-model", "estimate_potential", lambda: estimate_potential("model", _data()), InvalidArgumentError,
     r"model must be a ToyQuantumModel"),
    ("gauge-V-inf", "fix_gauge", lambda: fix_gauge([0.0, INF, 1.0]), InvalidArgumentError, r"V\[1\]"),
    ("gauge-bool", "fix_gauge", lambda: fix_gauge([0.0, 1.0], True), InvalidArgumentError, r"gauge .*True"),
    ("surrogate-errors-V-nan", "surrogate_errors", lambda: surrogate_errors(H4, X4, [NAN, 0, 0, 0], [1.0]),
     InvalidArgumentError, r"V\[0\]"),
    ("surrogate-kind", "ToyQuantumModel", lambda: _model().surrogate_jacobian(np.zeros(4), "third"),
     InvalidArgumentError, r"kind"),
]

#: Public names that take no user input of their own (constants and result records).
NO_INPUT = {"METHODS", "PotentialEstimate", "SurrogateErrors"}


@pytest.mark.parametrize("name, call, exc, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_is_a_clear_error_naming_the_argument(name, call, exc, pattern):
    with pytest.raises(exc) as info:
        call()
    assert isinstance(info.value, InvalidArgumentError)
    assert re.search(pattern, str(info.value)), (name, str(info.value))


def test_every_public_function_is_covered():
    covered = {c[1] for c in CASES}
    assert covered == set(dense.__all__) - NO_INPUT, set(dense.__all__) - NO_INPUT - covered
