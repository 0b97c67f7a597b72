"""Verdicts and results do not depend on the unit of time: Q and sQ (s = 1e-11 ... 1e11) get the
same membership verdicts, the same pi, Q^# / s and s kappa; skew-Hermitian and Hermitian checks
and the secular eigenspaces likewise."""

from __future__ import annotations

import numpy as np
import pytest

from sensitivity.dense import (
    RateMatrix,
    SkewHermitian,
    ToyQuantumModel,
    check_rate_matrix,
    check_skew_hermitian,
    group_inverse,
    is_rate_matrix,
    random_rate_matrix,
    spectral_gap,
    stationary_distribution,
)
from sensitivity.errors import NotARateMatrixError, NotDiagonalizableError, NotSkewHermitianError

SCALES = [1e-11, 1e-8, 1e-4, 1.0, 1e4, 1e8, 1e11]


@pytest.fixture
def Q():
    """An irreducible rate matrix with some zero rates (a ring plus a few chords)."""
    Q = random_rate_matrix(7, 11)
    mask = np.random.default_rng(5).uniform(size=Q.shape) < 0.5
    ring = np.roll(np.eye(7, dtype=bool), 1, axis=1)
    Q = np.where(mask | ring | np.eye(7, dtype=bool), Q, 0.0)
    np.fill_diagonal(Q, 0.0)
    np.fill_diagonal(Q, -Q.sum(axis=1))
    assert np.count_nonzero(Q == 0) > 0
    return Q


@pytest.mark.parametrize("s", SCALES)
def test_rate_matrix_results_scale_exactly(Q, s):
    R = RateMatrix(Q)
    Rs = RateMatrix(s * Q)
    assert is_rate_matrix(s * Q) and np.array_equal(check_rate_matrix(s * Q), s * Q)
    assert np.allclose(Rs.pi, R.pi, rtol=1e-12, atol=0)
    assert np.linalg.norm(s * Rs.group_inverse - R.group_inverse) <= 1e-10 * np.linalg.norm(R.group_inverse)
    assert Rs.spectral_gap / s == pytest.approx(R.spectral_gap, rel=1e-12)
    assert Rs.e_m / s == pytest.approx(R.e_m, rel=1e-12)
    assert Rs.eigvec_condition == pytest.approx(R.eigvec_condition, rel=1e-8)
    # the module-level shortcuts too
    assert np.allclose(stationary_distribution(s * Q), R.pi, rtol=1e-12, atol=0)
    assert np.linalg.norm(s * group_inverse(s * Q) - R.group_inverse) <= 1e-10 * np.linalg.norm(R.group_inverse)
    assert spectral_gap(s * Q) / s == pytest.approx(R.spectral_gap, rel=1e-12)
    # the group-inverse axioms hold at every scale
    G, Qs = Rs.group_inverse, s * Q
    assert np.linalg.norm(Qs @ G @ Qs - Qs) <= 1e-12 * np.linalg.norm(Qs)
    assert np.linalg.norm(Qs @ G - (np.eye(7) - Rs.Pi)) <= 1e-12


@pytest.mark.parametrize("s", SCALES)
def test_rejections_do_not_depend_on_the_scale(Q, s):
    reducible = np.array([[-1.0, 1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    with pytest.raises(NotARateMatrixError, match="reducible"):
        check_rate_matrix(s * reducible)
    bad_row = Q.copy()
    bad_row[2, 2] *= 1.0 + 1e-6
    with pytest.raises(NotARateMatrixError, match="row 2 of Q sums to"):
        check_rate_matrix(s * bad_row)
    negative = Q.copy()
    negative[0, 3], negative[0, 0] = -1e-6 * abs(Q[0, 0]), negative[0, 0] + 1e-6 * abs(Q[0, 0]) - Q[0, 3]
    with pytest.raises(NotARateMatrixError, match=r"Q\[0, 3\] = .* is negative"):
        check_rate_matrix(s * negative)
    assert not is_rate_matrix(s * reducible) and not is_rate_matrix(s * bad_row)
    assert is_rate_matrix(s * Q, strict=False) and not is_rate_matrix(s * Q, strict=True)
    with pytest.raises(NotDiagonalizableError, match="max_condition"):
        RateMatrix(s * Q, max_condition=1.0)


@pytest.mark.parametrize("s", [1e-12, 1e-6, 1.0, 1e6, 1e12])
def test_skew_hermitian_checks_and_eigenspaces_are_scale_free(rng, s):
    H = rng.standard_normal((5, 5)) + 1j * rng.standard_normal((5, 5))
    H = 0.5 * (H + H.conj().T)
    A = -1j * H
    J = -1j * np.diag(np.cos(np.arange(5.0)))
    S, Ss = SkewHermitian(A), SkewHermitian(s * A)
    # the same eigenspaces, so the same secular projection; the t-uniform bound scales like 1/s
    assert np.allclose(Ss.secular_projection(J), S.secular_projection(J), atol=1e-12)
    assert Ss.secular_error_bound(J) * s == pytest.approx(S.secular_error_bound(J), rel=1e-8)
    assert np.allclose(Ss.secular_surrogate(J, 7.0 / s) / (7.0 / s), S.secular_surrogate(J, 7.0) / 7.0, atol=1e-10)
    # a matrix off skew-Hermitian by 1e-6 of its size is refused at every scale
    bad = A.copy()
    bad[0, 1] += 1e-6 * np.abs(A).max()
    with pytest.raises(NotSkewHermitianError, match=r"A\[0, 1\]"):
        check_skew_hermitian(s * bad)
    # and H0 of the quantum model likewise
    H0 = -(np.eye(4, k=1) + np.eye(4, k=-1))
    H0[0, 1] = -1.0 + 1e-6
    with pytest.raises(NotSkewHermitianError, match="H0 is not Hermitian"):
        ToyQuantumModel(s * H0, np.eye(4)[0], [1.0])
