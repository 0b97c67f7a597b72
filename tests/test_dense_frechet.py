"""Exact Fréchet derivative of exp(tQ): four methods against scipy, Taylor tests,
the sensitivity ODE, confluent and defective spectra, and the all-entries gradient."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from sensitivity.dense import (
    METHODS,
    EigenFrechet,
    exp_divided_differences,
    expm_frechet,
    expm_frechet_series,
    expm_gradient,
    value_and_gradient,
)
from sensitivity.errors import InvalidArgumentError, NotDiagonalizableError


def _matrix(rng, d, kind, complex_):
    A = rng.standard_normal((d, d))
    if complex_:
        A = A + 1j * rng.standard_normal((d, d))
    if kind == "normal":
        A = 0.5 * (A + A.conj().T)
    elif kind == "nonnormal":
        A = A + 2.0 * np.triu(rng.standard_normal((d, d)), 1)
    return A / max(1.0, np.linalg.norm(A, 2))


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def taylor_rates(F, dF, eps0=1e-2, n=5):
    """Observed convergence rates of ||F(eps) - F(0) - eps dF|| for eps = eps0 / 2^k."""
    F0 = F(0.0)
    eps = eps0 / 2.0 ** np.arange(n)
    res = np.array([np.linalg.norm(F(e) - F0 - e * dF) for e in eps])
    return np.log2(res[:-1] / res[1:]), res


@pytest.mark.parametrize("method", [m for m in METHODS if m != "scipy"])
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("kind", ["normal", "nonnormal", "general"])
@pytest.mark.parametrize("d", [1, 2, 6, 25])
def test_methods_agree_with_scipy(rng, method, complex_, kind, d):
    Q = _matrix(rng, d, kind, complex_)
    J = _matrix(rng, d, "general", complex_)
    for t in [0.0, 0.3, 1.0, 4.0]:
        ref = scipy.linalg.expm_frechet(t * Q, t * J, compute_expm=False)
        Y = expm_frechet(Q, J, t, method=method)
        assert Y.dtype == ref.dtype
        if t == 0.0:
            assert np.all(Y == 0)
            continue
        assert _rel(Y, ref) <= 1e-12, (method, d, kind, complex_, t, _rel(Y, ref))


@pytest.mark.parametrize("method", METHODS)
def test_taylor_remainder_is_second_order(rng, method):
    Q = _matrix(rng, 7, "nonnormal", False)
    J = _matrix(rng, 7, "general", False)
    t = 1.7
    Y = expm_frechet(Q, J, t, method=method)
    rates, res = taylor_rates(lambda e: scipy.linalg.expm(t * (Q + e * J)), Y)
    assert np.all(rates > 1.9), (rates, res)


def test_solves_the_sensitivity_ode(rng):
    """Y' = QY + J e^{tQ}, Y(0) = 0 (seed 1.3), checked by a centred difference in t."""
    Q = _matrix(rng, 5, "general", False)
    J = _matrix(rng, 5, "general", False)
    t, h = 1.3, 1e-4
    dY = (expm_frechet(Q, J, t + h, method="series") - expm_frechet(Q, J, t - h, method="series")) / (2 * h)
    rhs = Q @ expm_frechet(Q, J, t, method="series") + J @ scipy.linalg.expm(t * Q)
    assert _rel(dY, rhs) < 1e-7


def test_confluent_and_nearly_confluent_eigenvalues(rng):
    S = rng.standard_normal((4, 4)) + 4 * np.eye(4)
    J = rng.standard_normal((4, 4))
    for lam in ([-1.0, -1.0, 0.5, 0.5], [-1.0, -1.0 + 1e-11, 0.5, 0.5 + 1e-7]):
        Q = S @ np.diag(lam) @ np.linalg.inv(S)
        ref = expm_frechet(Q, J, 2.0, method="block")
        assert _rel(expm_frechet(Q, J, 2.0, method="eig"), ref) < 1e-12


def test_divided_differences_are_finite_for_widely_spread_spectra():
    lam = np.array([0.0, -1e-13, -3.0, -100.0, -1000.0 + 5j])
    for t in [0.0, 1.0, 50.0, 1e4]:
        phi = exp_divided_differences(lam, t)
        assert np.all(np.isfinite(phi))
    phi = exp_divided_differences(lam, 50.0)
    assert phi[0, 0] == pytest.approx(50.0)
    assert phi[0, 1] == pytest.approx(50.0 * np.exp(-50.0 * 0.5e-13), rel=1e-14)
    assert phi[0, 3] == pytest.approx((1.0 - np.exp(-5000.0)) / 100.0, rel=1e-15)


def test_defective_matrix_rejected_by_eig_but_not_by_the_others():
    Q = np.array([[-1.0, 1.0, 0.0], [0.0, -1.0, 1.0], [0.0, 0.0, -1.0]])  # one Jordan block
    J = np.arange(9.0).reshape(3, 3) / 9.0
    with pytest.raises(NotDiagonalizableError, match="condition number"):
        expm_frechet(Q, J, 1.0, method="eig")
    ref = expm_frechet(Q, J, 1.0)
    assert _rel(expm_frechet(Q, J, 1.0, method="block"), ref) < 1e-13
    assert _rel(expm_frechet(Q, J, 1.0, method="series"), ref) < 1e-13


def test_series_truncation_and_scaling(rng):
    Q = _matrix(rng, 6, "general", False)
    J = _matrix(rng, 6, "general", False)
    ref = expm_frechet(Q, J, 0.5)
    Y, info = expm_frechet_series(Q, J, 0.5, return_info=True)
    assert info["squarings"] == 0 and 5 <= info["terms"] <= 25
    assert _rel(Y, ref) < 1e-14
    # a looser tolerance stops earlier and is as accurate as it promises
    Y8, info8 = expm_frechet_series(Q, J, 0.5, rtol=1e-8, return_info=True)
    assert info8["terms"] < info["terms"] and _rel(Y8, ref) < 1e-8
    # large ||tQ||: scaling and squaring keeps it exact
    Y, info = expm_frechet_series(5 * Q, J, 3.0, return_info=True)
    assert info["squarings"] >= 3
    assert _rel(Y, expm_frechet(5 * Q, J, 3.0)) < 1e-12


def test_eigen_frechet_shares_one_decomposition(rng):
    Q = _matrix(rng, 8, "general", False)
    Js = rng.standard_normal((5, 8, 8))
    ev = EigenFrechet(Q, 1.5)
    Ys = ev(Js)
    assert Ys.shape == (5, 8, 8) and Ys.dtype == np.float64
    for J, Y in zip(Js, Ys):
        assert _rel(Y, expm_frechet(Q, J, 1.5)) < 1e-12
    assert _rel(ev.expm(), scipy.linalg.expm(1.5 * Q)) < 1e-13


@pytest.mark.parametrize("complex_", [False, True])
def test_gradient_equals_all_directional_derivatives(rng, complex_):
    d, t = 5, 0.8
    Q = _matrix(rng, d, "nonnormal", complex_)
    W = _matrix(rng, d, "general", complex_)
    # f(X) = Re <W, X> + 0.5 ||X v||^2 : nonlinear, with df = Re <G, dX>
    v = rng.standard_normal(d)

    def f(X):
        Xv = X @ v
        value = np.real(np.vdot(W, X)) + 0.5 * np.real(np.vdot(Xv, Xv))
        return value, W + np.outer(Xv, v)

    for method in METHODS:
        value, grad = value_and_gradient(f, Q, t, method=method)
        assert grad.dtype == Q.dtype
        X = scipy.linalg.expm(t * Q)
        G = f(X)[1]
        units = [1.0, 1j] if complex_ else [1.0]
        for i in range(d):
            for j in range(d):
                for u in units:
                    E = np.zeros((d, d), dtype=Q.dtype)
                    E[i, j] = u
                    dF = np.real(np.vdot(G, expm_frechet(Q, E, t)))
                    assert np.real(np.conj(grad[i, j]) * u) == pytest.approx(dF, rel=1e-11, abs=1e-13)


def test_gradient_taylor(rng):
    d, t = 6, 1.1
    Q = _matrix(rng, d, "general", False)
    target = rng.standard_normal((d, d))

    def f(X):
        R = X - target
        return 0.5 * np.sum(R * R), R

    value, grad = value_and_gradient(f, Q, t)
    J = np.cos(np.arange(d * d).reshape(d, d))  # an analytic direction, not the gradient
    rates, res = taylor_rates(lambda e: np.atleast_1d(f(scipy.linalg.expm(t * (Q + e * J)))[0]),
                              np.atleast_1d(np.sum(grad * J)))
    assert np.all(rates > 1.9), (rates, res)
    assert expm_gradient(Q, f(scipy.linalg.expm(t * Q))[1], t).shape == (d, d)


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.ones((2, 3)), np.ones((2, 3))), r"square 2-D array, got shape \(2, 3\)"),
        ((np.array([[1.0, np.nan], [0, 1]]), np.eye(2)), r"non-finite entry Q\[0, 1\] = nan"),
        ((np.eye(2), np.eye(3)), r"J must have shape \(2, 2\) like Q, got \(3, 3\)"),
        ((np.eye(2), np.eye(2), float("inf")), "t must be finite, got inf"),
        ((np.eye(2), np.eye(2), "1.0"), "t must be a real number, got '1.0'"),
        ((np.array([["a", "b"], ["c", "d"]]), np.eye(2)), "Q must be a numeric array"),
    ],
)
def test_bad_input_names_the_value(args, match):
    with pytest.raises(InvalidArgumentError, match=match):
        expm_frechet(*args)


def test_unknown_method():
    with pytest.raises(InvalidArgumentError, match="unknown method 'pade'"):
        expm_frechet(np.eye(2), np.eye(2), 1.0, method="pade")
