"""Skew-Hermitian generators: validation, the secular projection and surrogate (docs/theory.md §1, seed §4.1)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg

from sensitivity.dense import SkewHermitian, check_skew_hermitian, expm_frechet, secular_projection, secular_surrogate
from sensitivity.errors import NotSkewHermitianError


def _hermitian(rng, d):
    H = rng.standard_normal((d, d)) + 1j * rng.standard_normal((d, d))
    return 0.5 * (H + H.conj().T)


def test_validation_names_the_entry():
    A = np.array([[1j, 2.0], [-2.0, 0.0]])
    assert check_skew_hermitian(A).dtype == np.complex128
    A[0, 1] = 2.5
    with pytest.raises(NotSkewHermitianError, match=r"\|A\[0, 1\] \+ conj\(A\[1, 0\]\)\| = 5.000e-01"):
        check_skew_hermitian(A)


def test_decomposition_and_exact_derivative(rng):
    H = _hermitian(rng, 9)
    S = SkewHermitian(-1j * H)
    assert np.allclose(S.W.conj().T @ S.W, np.eye(9), atol=1e-13)
    assert np.allclose(S.expm(2.0), scipy.linalg.expm(-2j * H), atol=1e-13)
    J = -1j * np.diag(rng.standard_normal(9))  # a potential perturbation
    Y = S.frechet(2.0)(J)
    ref = expm_frechet(-1j * H, J, 2.0, method="block")
    assert np.linalg.norm(Y - ref) / np.linalg.norm(ref) < 1e-13


def test_secular_projection_is_the_time_average(rng):
    H = _hermitian(rng, 5)
    A = -1j * H
    S = SkewHermitian(A)
    J = -1j * _hermitian(rng, 5)
    P = S.secular_projection(J)
    assert np.allclose(S.secular_projection(P), P, atol=1e-13)  # a projection
    assert np.allclose(A @ P, P @ A, atol=1e-13)  # commutes with the flow
    assert np.allclose(P, secular_projection(A, J))
    # (1/T) int_0^T e^{-sA} J e^{sA} ds -> P(J) like 1/T
    T = 400.0
    avg = scipy.integrate.quad_vec(lambda s: S.expm(-s) @ J @ S.expm(s), 0.0, T, limit=2000)[0] / T
    assert np.linalg.norm(avg - P) < 20.0 / T


def test_degenerate_spectrum_keeps_the_eigenspace_blocks(rng):
    W = np.linalg.qr(rng.standard_normal((4, 4)) + 1j * rng.standard_normal((4, 4)))[0]
    H = W @ np.diag([1.0, 1.0, -2.0, 3.0]) @ W.conj().T
    S = SkewHermitian(-1j * H)
    J = -1j * _hermitian(rng, 4)
    for t in [1.0, 50.0, 1000.0]:
        err = np.linalg.norm(expm_frechet(-1j * H, J, t) - S.secular_surrogate(J, t))
        assert err <= S.secular_error_bound(J) + 1e-11 * t


def test_secular_error_bounded_first_order_error_linear(rng):
    H = _hermitian(rng, 12)
    A = -1j * H
    S = SkewHermitian(A)
    J = -1j * np.diag(np.cos(np.arange(12.0)))
    bound = S.secular_error_bound(J)
    ts = np.array([10.0, 100.0, 1000.0])
    sec, first = [], []
    for t in ts:
        Y = S.frechet(t)(J)
        sec.append(np.linalg.norm(Y - S.secular_surrogate(J, t)))
        first.append(np.linalg.norm(Y - S.first_order_surrogate(J, t)))
        assert sec[-1] <= bound * (1 + 1e-10)
    slope = np.polyfit(np.log(ts), np.log(first), 1)[0]
    assert 0.95 < slope < 1.05, first
    # so the secular surrogate's relative error decays like 1/t
    rel = np.array(sec) / np.array([np.linalg.norm(S.frechet(t)(J)) for t in ts])
    assert rel[-1] < rel[0] / 50
    assert rel[-1] * ts[-1] <= 1.1 * bound / np.linalg.norm(S.secular_projection(J))
    assert np.allclose(secular_surrogate(A, J, 10.0), S.secular_surrogate(J, 10.0))
