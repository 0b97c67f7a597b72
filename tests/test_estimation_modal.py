"""A field through modes (sensitivity.estimation.modal) and the PDE problems of run files built on it.

Checks, on small versions of ``runs/velocity.toml`` and ``runs/potential.toml`` (serially and under mpirun):
the modal misfit's derivative passes a Taylor test (rate 2) and equals the tangent derivative of the field
objective along the mode combination (a second exact method, to round-off); its Hessian action passes a
second-order Taylor test and is symmetric; the modal surrogate force equals the surrogate's own forward
directional derivative; the velocity likelihood is invariant under the reflection q -> (-1)^k2 q to round-off
(the posterior's two modes +-v); the double well lies in the span of the degree-4 Legendre modes (its
coefficients reproduce the misfit of the true field); the pointwise field moments equal a direct computation;
and bad modal inputs are refused.
"""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.modal import ModalBasis, ModalMisfit
from sensitivity.estimation.runs import parse_config
from sensitivity.estimation.runs.velocity import mirror_signs, sine_modes
from sensitivity.verification import taylor_test

from tests.run_files import toml_text

pytestmark = pytest.mark.mpi

SMALL = {
    "velocity": {"kind": "velocity", "modes": 2, "cells": 8, "dt": 0.05, "steps": 6, "observe_every": 2,
                 "true_coefficients": [1.0, 0.0, 0.4, 0.0]},
    "potential": {"kind": "potential", "modes": 4, "cells": 8, "dt": 0.1, "steps": 10, "observe_every": 2,
                  "sensors": 3},
}


def config(kind: str, force: str = "exact", comm=MPI.COMM_WORLD, **problem):
    sections = {"problem": {**SMALL[kind], **problem}, "sampler": {"force": force}}
    return parse_config(toml_text(sections), f"{kind}.toml", comm)


@pytest.fixture(scope="module", params=["velocity", "potential"])
def posterior(request):
    return config(request.param).problem.build(MPI.COMM_WORLD)


def _point(posterior, seed=1):
    rng = np.random.default_rng(seed)  # the same numbers on every rank
    return posterior.prior.mean + 0.3 * np.sqrt(posterior.prior.variance) * rng.standard_normal(posterior.space.size)


def test_the_derivative_passes_a_taylor_test_and_equals_the_tangent(posterior):
    misfit = posterior.misfit
    q, v = _point(posterior), _point(posterior, seed=2) - posterior.prior.mean
    value, d = misfit.value_and_derivative(q)
    result = taylor_test(misfit.value, q, v, value=value, derivative=float(d @ v))
    assert result.min_rate(1) > 1.9, result.rates
    # a second exact method: the tangent (forward) derivative of the field objective along B v
    F = misfit.field_misfit.functional
    misfit.value(q)  # the functional's control is c0 + B q
    w = misfit.basis.direction(v)
    tangent = F.directional_derivative(F.control_space.function(w, "direction"))
    w.destroy()
    assert abs(tangent - float(d @ v)) <= 1e-10 * abs(tangent), (tangent, float(d @ v))


def test_the_hessian_action_passes_a_second_order_taylor_test_and_is_symmetric(posterior):
    misfit = posterior.misfit
    q, v, w = _point(posterior), _point(posterior, 2) - posterior.prior.mean, _point(posterior, 3) - posterior.prior.mean
    value, d = misfit.value_and_derivative(q)
    Hv = misfit.hessian_action(q, v)
    result = taylor_test(misfit.value, q, v, value=value, derivative=float(d @ v), hessian=float(v @ Hv))
    assert result.min_rate(2) > 2.8, result.rates
    Hw = misfit.hessian_action(q, w)
    assert abs(w @ Hv - v @ Hw) <= 1e-9 * abs(w @ Hv), (w @ Hv, v @ Hw)


@pytest.mark.parametrize("kind, force", [("velocity", "first order"), ("potential", "secular")])
def test_the_modal_surrogate_force_is_the_surrogates_own_directional_derivative(kind, force):
    posterior = config(kind, force).problem.build(MPI.COMM_WORLD)
    q, v = _point(posterior), _point(posterior, 2) - posterior.prior.mean
    f = posterior.force.derivative(q)
    surrogate = posterior.force.field_force.surrogate
    F = surrogate.functional
    w = posterior.misfit.basis.direction(v)
    forward = surrogate.directional_derivative(F.control_space.function(w, "direction"))
    w.destroy()
    assert abs(forward - float(f @ v)) <= 1e-9 * abs(forward), (forward, float(f @ v))
    exact = posterior.misfit.value_and_derivative(q)[1]
    assert not np.allclose(f, exact), "the surrogate force equals the exact one: nothing is measured"


def test_the_velocity_likelihood_is_invariant_under_the_reflection():
    posterior = config("velocity", modes=3, true_coefficients=[1.0, 0.0, 0.4, 0.0, -0.3, 0.2, 0.0, 0.0, 0.1]) \
        .problem.build(MPI.COMM_WORLD)
    signs = mirror_signs(3)
    assert signs.tolist() == [(-1.0) ** k2 for _, k2 in sine_modes(3)]
    for seed in (1, 2):
        q = np.random.default_rng(seed).standard_normal(9)
        (a, da), (b, db) = (posterior.misfit.value_and_derivative(x) for x in (q, signs * q))
        assert abs(a - b) <= 1e-12 * a, (a, b)
        np.testing.assert_allclose(signs * da, db, rtol=0, atol=1e-11 * np.abs(da).max())
    # and a reflection that is not a symmetry changes it
    q = np.random.default_rng(1).standard_normal(9)
    assert abs(posterior.misfit.value(q) - posterior.misfit.value(-q)) > 1e-3 * posterior.misfit.value(q)


def test_the_double_well_lies_in_the_span_of_the_quartic_modes():
    run = config("potential")
    problem, posterior = run.problem, run.problem.build(MPI.COMM_WORLD)
    misfit = posterior.misfit
    from dolfinx import fem

    true_field = fem.Function(misfit.field_misfit.functional.control.function_space)
    true_field.interpolate(problem.true_field(problem.values, None))
    exact = misfit.field_misfit.value(true_field.x.petsc_vec)
    assert abs(misfit.value(problem.truth) - exact) <= 1e-9 * exact
    # the coefficients: a((x/w)^2 - 1)^2 + b y^2 has no odd or mixed terms
    names = problem.parameter_names()
    big = {names[i] for i in np.flatnonzero(np.abs(problem.truth) > 1e-8)}
    assert big == {"q[0,0]", "q[2,0]", "q[0,2]", "q[4,0]"}, big
    assert problem.field_coefficients(problem.truth)[0] == 0.0  # the outputs show V modulo its mean


def test_field_moments_equal_a_direct_computation():
    posterior = config("velocity").problem.build(MPI.COMM_WORLD)
    basis = posterior.misfit.basis
    draws = np.random.default_rng(4).standard_normal((basis.BATCH + 44, basis.size))  # two batches
    mean, std = basis.field_moments(draws)
    fields = np.array([basis.field(d).array_r for d in draws])  # owned dofs of each draw's field
    np.testing.assert_allclose(mean.array_r, fields.mean(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(std.array_r, fields.std(axis=0, ddof=1), rtol=1e-10, atol=1e-14)
    coefficients = basis.coefficients(basis.field(draws[0]))
    np.testing.assert_allclose(coefficients, draws[0], rtol=1e-10, atol=1e-12)


def test_bad_modal_inputs_are_refused():
    posterior = config("velocity").problem.build(MPI.COMM_WORLD)
    basis = posterior.misfit.basis
    with pytest.raises(InvalidArgumentError, match="at least one mode"):
        ModalBasis(basis.field_space, [])
    with pytest.raises(InvalidArgumentError, match="must be a FunctionVectors"):
        ModalBasis(basis.space, basis.modes)
    with pytest.raises(InvalidArgumentError, match="coefficients must have shape"):
        basis.field(np.zeros(basis.size + 1))
    with pytest.raises(InvalidArgumentError, match=r"draws must have shape \(N >= 2, 4\)"):
        basis.field_moments(np.zeros((1, 4)))
    with pytest.raises(InvalidArgumentError, match="misfit must be a Misfit"):
        ModalMisfit("not a misfit", basis)
