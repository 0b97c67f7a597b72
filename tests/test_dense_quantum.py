"""Toy quantum model (docs/theory.md §3, seed §4.1): exact Jacobian and adjoint gradient in the potential,
invariances, first-order and secular surrogates, estimation of V from noisy probabilities."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import scipy.linalg

import sensitivity.dense.quantum as quantum_module
from sensitivity.dense import (
    SkewHermitian,
    ToyQuantumModel,
    estimate_potential,
    expm_gradient,
    fix_gauge,
    surrogate_errors,
)
from sensitivity.errors import InvalidArgumentError, NotSkewHermitianError, SensitivityError


def _hermitian(rng, d, complex_=True):
    H = rng.standard_normal((d, d)) + (1j * rng.standard_normal((d, d)) if complex_ else 0.0)
    return 0.5 * (H + H.conj().T)


def _unit(rng, d, complex_=True):
    x = rng.standard_normal(d) + (1j * rng.standard_normal(d) if complex_ else 0.0)
    return x / np.linalg.norm(x)


def _chain(d):
    """Nearest-neighbour hopping chain (tridiagonal, bipartite) with a localized start at site 0."""
    return -(np.eye(d, k=1) + np.eye(d, k=-1)), np.eye(d)[0]


def _direction(d):
    """A fixed analytic perturbation direction of V (never the gradient)."""
    return np.cos(0.7 * np.arange(d) + 0.3)


def _J(d, k):
    J = np.zeros((d, d), dtype=complex)
    J[k, k] = -1j  # dA/dV_k
    return J


V_CHAIN = fix_gauge(0.5 * np.cos(1.3 * np.arange(7)) + 0.3 * np.arange(7) / 7)
T_CHAIN = np.array([1.0, 2.0, 3.5, 5.0])


@pytest.fixture(params=[True, False], ids=["complex", "real"])
def generic(rng, request):
    d = 6
    model = ToyQuantumModel(_hermitian(rng, d, request.param), _unit(rng, d, request.param), [0.4, 1.3, 2.7])
    return model, rng.standard_normal(d)


# --------------------------------------------------------------------------- exact derivatives


def test_state_jacobian_matches_scipy_frechet_per_direction(generic):
    model, V = generic
    A = model.generator(V)
    D = model.state_jacobian(V)
    assert D.shape == (model.m, model.d, model.d)
    for i, t in enumerate(model.times):
        for k in range(model.d):
            ref = scipy.linalg.expm_frechet(t * A, t * _J(model.d, k), compute_expm=False) @ model.x0
            assert np.linalg.norm(D[i, :, k] - ref) <= 1e-12 * np.linalg.norm(ref), (t, k)
    # the probability Jacobian is 2 Re(conj(x) dx)
    X = model.states(V)
    assert np.allclose(model.jacobian(V), 2 * np.real(X.conj()[:, :, None] * D), rtol=0, atol=1e-15)


def test_probability_jacobian_taylor_and_central_differences(generic):
    model, V = generic
    dV = _direction(model.d)
    Jd = np.einsum("ijk,k->ij", model.jacobian(V), dV)
    p0 = model.probabilities(V)
    eps = 1e-2 / 2.0 ** np.arange(5)
    taylor = np.array([np.linalg.norm(model.probabilities(V + e * dV) - p0 - e * Jd) for e in eps])
    central = np.array(
        [
            np.linalg.norm((model.probabilities(V + e * dV) - model.probabilities(V - e * dV)) / (2 * e) - Jd)
            for e in eps
        ]
    )
    for res in (taylor, central):
        ratios = res[:-1] / res[1:]
        assert np.all((3.6 < ratios) & (ratios < 4.4)), (ratios, res)  # order 2: ratio 4 when eps halves
    assert central[-1] < 1e-6 * np.linalg.norm(Jd)


def test_adjoint_gradient_is_jacobian_transpose_residual(generic, rng):
    model, V = generic
    p = model.probabilities(V + 0.2 * _direction(model.d))
    sigma = 0.01 * (1.0 + np.arange(model.m * model.d).reshape(model.m, model.d) % 3)
    data = p + sigma * rng.standard_normal(p.shape)
    value, grad = model.misfit_gradient(V, data, sigma)
    r = (model.probabilities(V) - data) / sigma
    assert value == pytest.approx(0.5 * np.sum(r**2), rel=1e-14)
    assert value == pytest.approx(model.misfit(V, data, sigma), rel=1e-14)
    jtr = np.einsum("ijk,ij->k", model.jacobian(V), r / sigma)
    assert np.linalg.norm(grad - jtr) <= 1e-13 * np.linalg.norm(jtr)
    # independently, through expm_gradient (L(tA)* = L(tA*)) one time at a time: dF[J] = Re<grad_A, J>
    X = model.states(V)
    via_expm = np.zeros(model.d)
    for i, t in enumerate(model.times):
        G = np.outer(2 * (r[i] / sigma[i]) * X[i], model.x0.conj())
        via_expm += np.real(np.diag(expm_gradient(model.generator(V), G, t)).conj() * -1j)
    assert np.linalg.norm(grad - via_expm) <= 1e-12 * np.linalg.norm(jtr)
    # Taylor test of the misfit along a fixed direction
    dV = _direction(model.d)
    eps = 1e-3 / 2.0 ** np.arange(4)
    res = np.array([abs(model.misfit(V + e * dV, data, sigma) - value - e * grad @ dV) for e in eps])
    assert np.all(np.log2(res[:-1] / res[1:]) > 1.9), res


def test_probabilities_are_a_distribution_and_match_expm(generic):
    model, V = generic
    P = model.probabilities(V)
    assert P.shape == (model.m, model.d) and np.all(P >= 0)
    assert np.allclose(P.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    for i, t in enumerate(model.times):
        x = scipy.linalg.expm(t * model.generator(V)) @ model.x0
        assert np.allclose(model.states(V)[i], x, rtol=0, atol=1e-13)
    # conservation: sum_j dp_j/dV_k = 0 (invariance 2)
    assert np.max(np.abs(model.jacobian(V).sum(axis=1))) < 1e-13


# --------------------------------------------------------------------------- invariances


def test_gauge_invariance(generic):
    model, V = generic
    for c in [0.37, -5.0, 100.0]:
        assert np.allclose(model.probabilities(V + c), model.probabilities(V), rtol=0, atol=1e-12)
    Jac = model.jacobian(V)
    assert np.max(np.abs(Jac @ np.ones(model.d))) < 1e-13  # dp/dV 1 = 0
    assert np.linalg.matrix_rank(Jac.reshape(-1, model.d)) == model.d - 1
    assert fix_gauge(V + 3.0).mean() == pytest.approx(0.0, abs=1e-14)
    assert np.allclose(fix_gauge(V + 3.0), fix_gauge(V), atol=1e-14)
    assert fix_gauge(V, 2, 1.5)[2] == 1.5 and np.allclose(np.diff(fix_gauge(V, 2)), np.diff(V))


def test_time_reversal_real_model(rng):
    """Real H0, x0: conj(x(t)) = x(-t), hence p(t; H0, V) = p(t; -H0, -V); false for complex H0."""
    d, t = 6, [0.5, 1.7, 4.0]
    V = rng.standard_normal(d)
    x0 = _unit(rng, d, complex_=False) * np.exp(0.4j)  # real up to a global phase
    H0 = _hermitian(rng, d, complex_=False)
    A = -1j * (H0 + np.diag(V))
    x = ToyQuantumModel(H0, x0, t).states(V)
    for i, ti in enumerate(t):
        assert np.allclose(np.exp(0.8j) * x[i].conj(), scipy.linalg.expm(-ti * A) @ x0, atol=1e-13)
    same = ToyQuantumModel(-H0, x0, t).probabilities(-V)
    assert np.allclose(same, ToyQuantumModel(H0, x0, t).probabilities(V), rtol=0, atol=1e-13)
    # a dense random real H0 has odd cycles: no chiral partner, and -V alone gives other data
    assert ToyQuantumModel(H0, x0, t).chiral_signature is None
    assert np.max(np.abs(ToyQuantumModel(H0, x0, t).probabilities(-V) - np.abs(x) ** 2)) > 1e-2
    Hc = _hermitian(rng, d)
    diff = ToyQuantumModel(-Hc, x0, t).probabilities(-V) - ToyQuantumModel(Hc, x0, t).probabilities(V)
    assert np.max(np.abs(diff)) > 1e-2


def test_chiral_symmetry_of_a_hopping_chain():
    """Bipartite real H0 and x0 on one sublattice: V and -V - 2 diag(H0) give identical data."""
    d = 7
    H0, x0 = _chain(d)
    H0 = H0 + np.diag(0.3 * np.arange(d))  # a known on-site part moves the mirror point
    model = ToyQuantumModel(H0, x0, T_CHAIN)
    assert np.array_equal(model.chiral_signature, (-1.0) ** np.arange(d))
    partner = model.chiral_partner(V_CHAIN)
    assert np.allclose(partner, -V_CHAIN - 0.6 * np.arange(d))
    assert np.allclose(model.probabilities(partner), model.probabilities(V_CHAIN), rtol=0, atol=1e-13)
    assert np.linalg.norm(fix_gauge(partner) - fix_gauge(V_CHAIN)) > 1.0  # a genuinely different potential
    # at the mirror point p is even in V - V*, so the whole Jacobian vanishes
    assert np.max(np.abs(model.jacobian(-np.diag(H0)))) < 1e-13
    # broken by an odd cycle (next-nearest hopping) or by a start on both sublattices
    H_odd = H0 - 0.4 * (np.eye(d, k=2) + np.eye(d, k=-2))
    x_both = (np.eye(d)[0] + np.eye(d)[1]) / np.sqrt(2)
    for broken in (ToyQuantumModel(H_odd, x0, T_CHAIN), ToyQuantumModel(H0, x_both, T_CHAIN)):
        assert broken.chiral_signature is None and broken.chiral_partner(V_CHAIN) is None
        assert np.max(np.abs(broken.probabilities(partner) - broken.probabilities(V_CHAIN))) > 1e-2


def test_permutation_symmetry_is_an_equivariance(rng):
    """P H0 P^T = H0, P x0 = x0  =>  p(t; PV) = P p(t; V): the data of PV are the permuted data.

    They coincide with the data of V only if p(t; V) is itself P-symmetric (e.g. PV = V).
    """
    d = 6
    H0 = -(np.roll(np.eye(d), 1, axis=1) + np.roll(np.eye(d), -1, axis=1))  # ring
    perm = (-np.arange(d)) % d  # reflection j -> -j fixes site 0
    P = np.eye(d)[perm]
    x0 = np.eye(d)[0]
    assert np.array_equal(P @ H0 @ P.T, H0) and np.array_equal(P @ x0, x0)
    model = ToyQuantumModel(H0, x0, [0.6, 1.4, 3.0])
    V = rng.standard_normal(d)
    pV, pPV = model.probabilities(V), model.probabilities(P @ V)
    assert np.allclose(pPV, pV @ P.T, rtol=0, atol=1e-13)  # p(PV) = P p(V)
    JV, JPV = model.jacobian(V), model.jacobian(P @ V)
    assert np.allclose(JPV, P @ JV @ P.T, rtol=0, atol=1e-13)
    assert np.max(np.abs(pPV - pV)) > 1e-2  # not the same data: P does not hide V
    Vs = 0.5 * (V + P @ V)  # a P-symmetric potential gives P-symmetric data
    assert np.allclose(model.probabilities(Vs), model.probabilities(Vs) @ P.T, rtol=0, atol=1e-13)


# --------------------------------------------------------------------------- surrogates


def test_surrogates_agree_with_the_skew_hermitian_module(rng):
    d = 5
    model = ToyQuantumModel(_hermitian(rng, d), _unit(rng, d), [0.7, 3.0])
    V = rng.standard_normal(d)
    S = SkewHermitian(model.generator(V))
    sec = model.surrogate_state_jacobian(V, "secular")
    first = model.surrogate_state_jacobian(V, "first_order")
    for i, t in enumerate(model.times):
        for k in range(d):
            assert np.allclose(sec[i, :, k], S.secular_surrogate(_J(d, k), t) @ model.x0, atol=1e-13)
            assert np.allclose(first[i, :, k], S.first_order_surrogate(_J(d, k), t) @ model.x0, atol=1e-13)
    # for a real start on one site the first-order probability surrogate is identically zero
    H0, x0 = _chain(6)
    assert np.max(np.abs(ToyQuantumModel(H0, x0, [2.0]).surrogate_jacobian(np.ones(6), "first_order"))) < 1e-15


def test_surrogate_errors_versus_time(rng):
    d = 6
    H0, x0, V = _hermitian(rng, d), _unit(rng, d), rng.standard_normal(d)
    ts = np.geomspace(1.0, 1000.0, 40)
    E = surrogate_errors(H0, x0, V, ts)
    assert np.array_equal(E.times, ts)
    slope = np.polyfit(np.log(ts), np.log(E.first_order_error), 1)[0]
    assert 0.9 < slope < 1.1, slope  # first-order error ~ t
    assert np.all(E.secular_error <= E.secular_bound), (E.secular_error.max(), E.secular_bound)
    assert np.max(E.secular_error[ts > 100]) < 0.1 * np.min(E.first_order_error[ts > 100])
    early, late = np.median(E.secular_relative[ts < 10]), np.median(E.secular_relative[ts > 100])
    assert late < early / 30, (early, late)  # relative error decays like 1/t
    assert np.median(E.first_order_relative[ts > 100]) > 0.5  # ... while the first-order one does not
    assert np.all(E.exact_norm[ts > 100] > 0.01 * ts[ts > 100])  # the exact Jacobian itself grows ~ t


# --------------------------------------------------------------------------- estimation


def _matched_error(est, V_true, model):
    """Max-norm error modulo the shift and, for a chiral model, modulo the partner."""
    cands = [fix_gauge(V_true, est.gauge)]
    if model.chiral_signature is not None:
        cands.append(fix_gauge(model.chiral_partner(V_true), est.gauge))
    return min(np.max(np.abs(est.V - c)) for c in cands)


def test_estimation_noise_free_recovers_v_modulo_the_invariances():
    H0, x0 = _chain(7)
    model = ToyQuantumModel(H0, x0, T_CHAIN)
    data = model.probabilities(V_CHAIN + 2.5)  # any shift: same data
    est = estimate_potential(model, data, 1e-3, n_starts=10, seed=0)
    assert est.start_objectives[0] == np.inf  # V0 = 0 is the chiral mirror point: skipped
    assert est.success and est.data_misfit < 1e-16
    assert _matched_error(est, V_CHAIN, model) < 1e-6
    assert np.allclose(model.probabilities(est.chiral_partner), data, atol=1e-10)
    assert est.rank == model.d - 1
    assert est.singular_values[-1] < 1e-10 * est.singular_values[0] < est.singular_values[-2]
    assert est.misfit_history[-1] <= est.misfit_history[0] and est.iterations >= 1
    assert np.max(np.abs(est.gradient)) < 1e-6
    # pinned gauge: the same potential modulo the shift
    pinned = estimate_potential(model, data, 1e-3, V0=est.V + 0.05 * _direction(7), gauge=3, gauge_value=1.0)
    assert pinned.V[3] == 1.0
    assert np.max(np.abs(fix_gauge(pinned.V) - est.V)) < 1e-8
    with pytest.raises(SensitivityError, match="Jacobian vanishes at every start"):
        estimate_potential(model, data, 1e-3)


def test_estimation_from_noisy_data_is_accurate_to_the_noise_level():
    sigma = 1e-3
    H0, x0 = _chain(7)
    model = ToyQuantumModel(H0, x0, T_CHAIN)
    noise_rng = np.random.default_rng(7)
    data = model.probabilities(V_CHAIN) + sigma * noise_rng.standard_normal((model.m, model.d))
    est = estimate_potential(model, data, sigma, n_starts=10, seed=1)
    err = _matched_error(est, V_CHAIN, model)
    expected = np.sqrt(np.trace(est.covariance))  # linearized rms error of the whole vector
    assert 1e-4 < expected < 0.05
    assert err < 4 * expected, (err, expected)
    dof = model.m * model.d - (model.d - 1)
    assert abs(2 * est.data_misfit - dof) < 5 * np.sqrt(2 * dof), (2 * est.data_misfit, dof)
    assert est.rank == model.d - 1


def test_tikhonov_selects_the_branch_and_is_gauge_independent():
    sigma = 1e-3
    H0, x0 = _chain(7)
    model = ToyQuantumModel(H0, x0, T_CHAIN)
    data = model.probabilities(V_CHAIN) + sigma * np.random.default_rng(3).standard_normal((model.m, model.d))
    V_ref = V_CHAIN + 0.2 * _direction(7)
    kw = dict(alpha=10.0, V_ref=V_ref, n_starts=4, seed=2)
    a = estimate_potential(model, data, sigma, **kw)
    b = estimate_potential(model, data, sigma, gauge=0, gauge_value=-1.0, **kw)
    assert np.max(np.abs(fix_gauge(b.V) - a.V)) < 1e-7
    assert np.max(np.abs(a.V - V_CHAIN)) < 0.05  # the reference picks V, not its chiral partner
    huge = estimate_potential(model, data, sigma, alpha=1e12, V_ref=V_ref, V0=V_ref)
    assert np.allclose(huge.V, fix_gauge(V_ref), atol=1e-4)


# --------------------------------------------------------------------------- errors


def test_bad_inputs_name_the_value():
    H0, x0 = _chain(4)
    t = [1.0, 2.0]
    bad = H0.copy()
    bad[0, 1] = 0.5
    with pytest.raises(NotSkewHermitianError, match=r"H0 is not Hermitian.*H0\[\d, \d\]"):
        ToyQuantumModel(bad, x0, t)
    with pytest.raises(InvalidArgumentError, match=r"x0 must be normalized, got \|\|x0\|\|_2 = 2.0"):
        ToyQuantumModel(H0, 2 * x0, t)
    with pytest.raises(InvalidArgumentError, match=r"x0 must have shape \(4,\).*\(3,\)"):
        ToyQuantumModel(H0, x0[:3], t)
    with pytest.raises(InvalidArgumentError, match=r"times\[1\] = -0.5"):
        ToyQuantumModel(H0, x0, [1.0, -0.5])
    with pytest.raises(InvalidArgumentError, match=r"times\[0\] = nan"):
        ToyQuantumModel(H0, x0, [np.nan])
    with pytest.raises(InvalidArgumentError, match="non-empty"):
        ToyQuantumModel(H0, x0, [])
    with pytest.raises(InvalidArgumentError, match="times must be real, got dtype complex128"):
        ToyQuantumModel(H0, x0, [1j])
    model = ToyQuantumModel(H0, x0, t)
    with pytest.raises(InvalidArgumentError, match=r"V must have shape \(4,\), got shape \(5,\)"):
        model.probabilities(np.zeros(5))
    with pytest.raises(InvalidArgumentError, match=r"V\[2\] = inf"):
        model.jacobian([0.0, 0.0, np.inf, 0.0])
    with pytest.raises(InvalidArgumentError, match=r"V must be real.*V\[1\]"):
        model.probabilities([0, 1j, 0, 0])
    data = model.probabilities(np.arange(4.0))
    msg = r"data must have shape \(m, d\) = \(2, 4\), got shape \(4, 2\)"
    with pytest.raises(InvalidArgumentError, match=msg):
        model.misfit(np.zeros(4), data.T)
    with pytest.raises(InvalidArgumentError, match=r"sigma = -0.1"):
        model.misfit_gradient(np.zeros(4), data, -0.1)
    with pytest.raises(InvalidArgumentError, match=r"sigma = 0.0 at \(time 1, site 2\)"):
        model.misfit(np.zeros(4), data, np.where(np.arange(8).reshape(2, 4) == 6, 0.0, 1.0))
    with pytest.raises(InvalidArgumentError, match=r"sigma = nan"):
        model.misfit(np.zeros(4), data, np.nan)
    with pytest.raises(InvalidArgumentError, match="does not broadcast"):
        model.misfit(np.zeros(4), data, np.ones(3))
    with pytest.raises(InvalidArgumentError, match=r"alpha must be a finite real >= 0, got -1.0"):
        estimate_potential(model, data, 0.1, alpha=-1.0)
    with pytest.raises(InvalidArgumentError, match=r"gauge must be 'mean' or an index in \[0, 4\), got 7"):
        estimate_potential(model, data, 0.1, V0=np.ones(4), gauge=7)
    with pytest.raises(InvalidArgumentError, match="kind must be"):
        model.surrogate_jacobian(np.zeros(4), "third")


def test_docstring_examples():
    result = doctest.testmod(quantum_module, raise_on_error=False)
    assert result.attempted >= 4 and result.failed == 0
