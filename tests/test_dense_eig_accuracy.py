"""The Daleckii–Krein ("eig") method decides from its error bound sqrt(d) u kappa(V)^2: nearly
defective matrices inside the old condition-number cutoff are refused with kappa(V) and the
estimate in the message, never answered several percent wrong."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from sensitivity.dense import EigenFrechet, expm_frechet
from sensitivity.errors import NotDiagonalizableError

J2 = np.array([[0.3, -1.2], [0.7, 0.4]])


def _near_jordan(delta, a=-0.5, sign=1.0):
    """[[a, 1], [sign delta, a]]: eigenvalues a +- sqrt(sign delta), kappa(V) ~ 2/sqrt(delta).

    sign = -1 gives the complex pair a +- i sqrt(delta) (the real-arithmetic path for real Q).
    """
    return np.array([[a, 1.0], [sign * delta, a]])


def _rel(Y, ref):
    return np.linalg.norm(Y - ref) / np.linalg.norm(ref)


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["real-pair", "complex-pair"])
@pytest.mark.parametrize("delta", [1e-4, 1e-6, 1e-8, 1e-10, 1e-12, 1e-14, 1e-15])
def test_nearly_defective_is_accurate_or_refused(delta, sign):
    Q = _near_jordan(delta, sign=sign)
    for t in (1.0, 3.0):
        ref = scipy.linalg.expm_frechet(t * Q, t * J2, compute_expm=False)
        try:
            Y = expm_frechet(Q, J2, t, method="eig")
        except NotDiagonalizableError as err:
            msg = str(err)
            assert "condition number kappa(V) = " in msg and "estimated relative error" in msg, msg
            assert delta <= 1e-8  # only refused where the estimate really is above 1e-8
            continue
        assert _rel(Y, ref) <= 1e-10, (delta, t, _rel(Y, ref))


def test_the_old_silent_failure_is_refused_with_kappa_and_the_estimate():
    """delta = 1e-15: kappa(V) = 3.2e7 < the old cutoff 1e8, and the old answer was 3 % wrong."""
    Q = _near_jordan(1e-15)
    msg = r"kappa\(V\) = 3\.16\de\+07.*error sqrt\(d\) u kappa\(V\)\^2 = 1\.6e-01"
    with pytest.raises(NotDiagonalizableError, match=msg):
        expm_frechet(Q, J2, 1.0, method="eig")
    with pytest.raises(NotDiagonalizableError, match=r"tol = 1\.0e-08"):
        EigenFrechet(Q, 1.0)
    # the other methods are fine on it
    ref = scipy.linalg.expm_frechet(Q, J2, compute_expm=False)
    assert _rel(expm_frechet(Q, J2, 1.0, method="block"), ref) < 1e-13


def test_larger_jordan_like_block():
    """A 4 x 4 Jordan block closed by delta in the corner: kappa(V) ~ delta^(-3/4)."""
    d = 4
    J = np.cos(np.arange(d * d)).reshape(d, d)
    for delta in (1e-4, 1e-12):
        Q = -np.eye(d) + np.eye(d, k=1)
        Q[-1, 0] = delta
        ref = scipy.linalg.expm_frechet(2.0 * Q, 2.0 * J, compute_expm=False)
        try:
            Y = expm_frechet(Q, J, 2.0, method="eig")
        except NotDiagonalizableError:
            assert delta == 1e-12
            continue
        assert _rel(Y, ref) <= 1e-10


def test_estimate_bounds_the_measured_error():
    """With the check relaxed (tol = 1), the reported estimate is above the actual error."""
    for delta in (1e-6, 1e-9, 1e-12, 1e-14):
        for sign in (1.0, -1.0):
            Q = _near_jordan(delta, sign=sign)
            ev = EigenFrechet(Q, 1.0, tol=1.0)
            ref = scipy.linalg.expm_frechet(Q, J2, compute_expm=False)
            assert _rel(ev(J2), ref) <= ev.estimated_error, (delta, sign)
            assert ev.estimated_error == pytest.approx(np.sqrt(2) * 2.0**-53 * ev.eigvec_condition**2)


def test_tolerance_is_a_parameter(rng):
    Q = rng.standard_normal((6, 6)) + 3.0 * np.triu(rng.standard_normal((6, 6)), 1)
    ev = EigenFrechet(Q, 1.0)
    assert ev.estimated_error < 1e-8
    with pytest.raises(NotDiagonalizableError, match="tol = 1.0e-20"):
        EigenFrechet(Q, 1.0, tol=1e-20)
    with pytest.raises(NotDiagonalizableError, match="max_condition = 1.0e\\+00"):
        EigenFrechet(Q, 1.0, max_condition=1.0)
    # normal matrices have kappa(V) = 1: the estimate is ~ u
    H = Q + Q.T
    assert EigenFrechet(H, 1.0).estimated_error < 1e-15
