"""Discrete adjoint gradients and Hessian actions (docs/theory.md §2).

Checks: the adjoint gradient equals the tangent's directional derivative to 1e-10
(sensors, region averages, field misfit, H¹ regularization; with and without SUPG,
Dirichlet inflow, Crank–Nicolson and backward Euler); Taylor remainders of the
gradient and of the Hessian action; checkpointed (RAM and disk) and in-memory
gradients agree; Hessian-vector products agree with finite differences of
gradients and are symmetric."""

from __future__ import annotations

import numpy as np
import pytest
from dolfinx import fem, mesh

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem.backend import SolverError, create_ksp
from sensitivity.fem import (
    FirstOrderSurrogate,
    ObservationMisfit,
    ReducedFunctional,
    ThetaScheme,
    Tikhonov,
    steps_at,
)
from sensitivity.parallel import run_on_root
from sensitivity.verification import dot_product_test


@pytest.mark.mpi
@pytest.mark.parametrize(
    "control, supg, inflow, theta",
    [("stream", False, False, 0.5), ("stream", True, False, 0.5), ("field", False, True, 0.5),
     ("field", True, True, 1.0)],
)
def test_adjoint_gradient_equals_tangent_derivative(comm, advection_functional, control, supg, inflow, theta):
    F, v = advection_functional(comm, control=control, supg=supg, inflow=inflow, theta=theta)
    value, grad = F.value_and_derivative()
    assert value == pytest.approx(F.value(), rel=1e-13)
    adjoint = grad.x.petsc_vec.dot(v.x.petsc_vec)
    tangent = F.directional_derivative(v)
    assert abs(tangent) > 1e-6
    assert abs(adjoint - tangent) <= 1e-10 * abs(tangent), (adjoint, tangent)


@pytest.mark.mpi
@pytest.mark.parametrize("supg", [False, True])
def test_gradient_taylor_remainder_is_second_order(comm, advection_functional, reduced_taylor, supg):
    F, v = advection_functional(comm, supg=supg)
    value, grad = F.value_and_derivative()
    rates = reduced_taylor(F, v, value, grad.x.petsc_vec.dot(v.x.petsc_vec), step=1e-2).rates[1]
    assert np.all(np.abs(rates - 2.0) < 0.1), rates


@pytest.mark.mpi
def test_checkpointed_gradient_equals_in_memory_gradient(comm, advection_functional, tmp_path_factory):
    ref_F, _ = advection_functional(comm, nsteps=20)
    ref_value, ref = ref_F.value_and_derivative()
    assert ref_F.stats["recomputed_steps"] == 0
    directory = comm.bcast(run_on_root(comm, lambda: tmp_path_factory.mktemp("ckpt")), root=0)
    for options in ({"max_states": 5}, {"max_states": 3, "checkpoint_dir": directory}):
        F, _ = advection_functional(comm, nsteps=20, **options)
        value, grad = F.value_and_derivative()
        if "checkpoint_dir" in options:  # states beyond the RAM budget went to disk
            assert F.stats["disk_writes"] > 0 and F.stats["disk_reads"] > 0, F.stats
        else:  # ... or were recomputed from revolve checkpoints
            assert F.stats["recomputed_steps"] > 0, F.stats
        assert F.stats["max_states_in_memory"] <= options["max_states"], F.stats
        assert value == pytest.approx(ref_value, rel=1e-14)
        diff = grad.x.petsc_vec.copy()
        diff.axpy(-1.0, ref.x.petsc_vec)
        assert diff.norm() <= 1e-13 * ref.x.petsc_vec.norm(), options
    comm.Barrier()
    assert not any(directory.iterdir()), "checkpoint files left behind"


@pytest.mark.mpi
@pytest.mark.parametrize("control, supg", [("stream", False), ("field", True)])
def test_hessian_action_matches_gradient_differences_and_is_symmetric(comm, advection_functional, control, supg):
    F, v = advection_functional(comm, control=control, supg=supg, inflow=supg, nsteps=8)
    w = fem.Function(v.function_space)
    w.interpolate(lambda x: np.sin(2 * x[0]) * x[1] if control == "stream"
                  else np.vstack([x[1] ** 2, np.cos(x[0])]))
    Hv_fn, Hw_fn = F.hessian_action(v), F.hessian_action(w)  # the Functions own the vectors
    Hv, Hw = Hv_fn.x.petsc_vec, Hw_fn.x.petsc_vec
    assert Hw.dot(v.x.petsc_vec) == pytest.approx(Hv.dot(w.x.petsc_vec), rel=1e-10)
    c0 = F.control.x.petsc_vec.copy()
    errors = []
    for eps in (1e-2, 5e-3):
        grads = []
        for sign in (1.0, -1.0):
            c = c0.copy()
            c.axpy(sign * eps, v.x.petsc_vec)
            F.set_control(c)
            g = F.derivative()  # (a Function destroys its PETSc vector when it is collected)
            grads.append(g.x.petsc_vec.copy())
        fd = grads[0] - grads[1]
        fd.scale(1.0 / (2 * eps))
        fd.axpy(-1.0, Hv)
        errors.append(fd.norm() / Hv.norm())
    F.set_control(c0)
    assert errors[0] < 1e-3, errors
    # central differences: the error falls like eps^2 (exact for a quadratic objective: no SUPG)
    assert errors[1] < 0.3 * errors[0] or errors[1] < 1e-9, errors


@pytest.mark.mpi
def test_region_averages_and_misfit_values(comm, advection_functional):
    F, _ = advection_functional(comm, nsteps=4)
    regions = F.misfits[1].observation
    f = fem.Function(F.problem.V)
    f.interpolate(lambda x: 1.0 + x[0])
    # averages of 1 + x over x < 1/2 and x > 1/2
    np.testing.assert_allclose(regions.evaluate(f), [1.25, 1.75], rtol=1e-12)

    def transpose(w):
        out = F.problem.create_vector()
        out.set(0.0)
        return regions.apply_transpose(w, out)

    # dot-product test of the transpose: <f, P^T w> = <P f, w>, here known exactly
    result = dot_product_test(regions.evaluate, transpose, f, np.array([2.0, -1.0]))
    assert result.adjoint == pytest.approx(2 * 1.25 - 1.75, rel=1e-12)
    assert result.relative_error < 1e-12, result


def test_bad_input_names_the_value(comm, advection_functional):
    F, v = advection_functional(comm, nsteps=4)
    sensors = F.misfits[0].observation
    with pytest.raises(InvalidArgumentError, match=r"observation time 0.03 is not a multiple of dt = 0.02"):
        steps_at([0.04, 0.03], 0.02, 10)
    with pytest.raises(InvalidArgumentError, match="data must have shape \\(2, 3\\), got \\(2, 4\\)"):
        ObservationMisfit(sensors, [1, 2], np.zeros((2, 4)))
    with pytest.raises(InvalidArgumentError, match="noise must be positive"):
        ObservationMisfit(sensors, [1, 2], np.zeros((2, 3)), noise=0.0)
    with pytest.raises(InvalidArgumentError, match="steps must not repeat"):
        ObservationMisfit(sensors, [2, 2], np.zeros((2, 3)))
    with pytest.raises(InvalidArgumentError, match="alpha must be a non-negative finite number, got -1"):
        Tikhonov(v.function_space, alpha=-1)
    with pytest.raises(InvalidArgumentError, match="observes step 8 > nsteps = 4"):
        ReducedFunctional(F.scheme, F.theta0, 4, [ObservationMisfit(sensors, [8], np.zeros((1, 3)))])
    with pytest.raises(InvalidArgumentError, match="nsteps must be a positive integer, got 0"):
        ReducedFunctional(F.scheme, F.theta0, 0, F.misfits)
    np.testing.assert_array_equal(steps_at([0.02, 0.1], 0.02, 10), [1, 5])


@pytest.mark.mpi
def test_a_factorization_with_a_wrong_transposed_solve_is_refused(comm, advection_functional):
    """SuperLU_DIST's transposed solve returns A^-1 b in this PETSc: the adjoint refuses it
    (on every rank alike) instead of returning a wrong gradient; its forward solves stay usable."""
    F, _ = advection_functional(comm, nsteps=4)
    options = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "superlu_dist"}
    G = ReducedFunctional(ThetaScheme(F.problem, F.scheme.dt, petsc_options=options), F.theta0, 4, F.misfits,
                          F.regularization)
    assert G.value() == pytest.approx(F.value(), rel=1e-12)
    with pytest.raises(SolverError, match="'superlu_dist' are wrong in this PETSc .* use 'mumps'"):
        G.derivative()


def _surrogate_directional_derivative(F, v):
    """sum_n grad f_n(theta_n) . t_n S^n J theta0, propagated forward (independent of the backward recursion)."""
    s, prob = F.scheme, F.problem
    ksp = create_ksp(prob.M, None, "test_mass")
    w, tmp, Atheta, Qtheta = (s.create_vector() for _ in range(4))
    prob.dA(v).mult(F.theta0, tmp)
    if prob.supg:
        prob.A.mult(F.theta0, Atheta)
        ksp.solve(Atheta, Qtheta)
        Qtheta.scale(-1.0)
        prob.dM(v).multAdd(Qtheta, tmp, tmp)
    ksp.solve(tmp, w)
    w.scale(-1.0)
    s.set_dirichlet(w, homogeneous=True)
    total, z, znew, g = 0.0, w.copy(), s.create_vector(), s.create_vector()
    x, y = F.theta0.copy(), s.create_vector()
    for n in range(1, F.nsteps + 1):
        s.step(x, y)
        x, y = y, x
        s.R.mult(z, tmp)
        s.set_dirichlet(tmp, homogeneous=True)
        s.solve_rows(tmp, znew)
        z, znew = znew, z
        if any(m.active(n) for m in F.misfits):
            g.set(0.0)
            F.add_misfit_gradient(n, x, g)
            total += n * s.dt * g.dot(z)
    reg = F.control.x.petsc_vec.duplicate()
    reg.set(0.0)
    F.regularization.add_gradient(F.control, reg)
    return total + reg.dot(v.x.petsc_vec)


@pytest.mark.mpi
@pytest.mark.parametrize("control, supg, inflow", [("stream", False, False), ("field", True, True)])
def test_first_order_surrogate_gradient_is_the_transpose_of_the_forward_surrogate(comm, advection_functional,
                                                                                   control, supg, inflow):
    F, v = advection_functional(comm, control=control, supg=supg, inflow=inflow)
    surrogate = FirstOrderSurrogate(F)
    value, grad = surrogate.value_and_derivative()
    assert value == pytest.approx(F.value(), rel=1e-13)
    assert surrogate.stats["stored_vectors"] == 4  # only the observation steps, no trajectory
    forward = _surrogate_directional_derivative(F, v)
    assert grad.x.petsc_vec.dot(v.x.petsc_vec) == pytest.approx(forward, rel=1e-10)


@pytest.mark.mpi
def test_first_order_surrogate_error_shrinks_with_final_time(comm, advection_functional):
    """Relative error of the surrogate gradient against the exact one: O(t ||Q||) as t -> 0."""
    errors = []
    for dt in (4e-3, 2e-3, 1e-3):
        F, _ = advection_functional(comm, nsteps=6, dt=dt)
        F.regularization = None
        exact, sur = F.derivative(), FirstOrderSurrogate(F).derivative()
        d = sur.x.petsc_vec.copy()
        d.axpy(-1.0, exact.x.petsc_vec)
        errors.append(d.norm() / exact.x.petsc_vec.norm())
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(np.abs(rates - 1.0) < 0.2), (errors, rates)
    assert errors[-1] < 0.1, errors


@pytest.mark.mpi
@pytest.mark.parametrize("alpha, beta", [(2.0, 0.0), (0.0, 3.0), (2.0, 3.0)])
def test_tikhonov_value_gradient_and_hessian(comm, alpha, beta):
    msh = mesh.create_unit_square(comm, 4, 4)
    S = fem.functionspace(msh, ("Lagrange", 2))
    c = fem.Function(S)
    c.interpolate(lambda x: x[0] + 2 * x[1])
    reg = Tikhonov(S, alpha=alpha, beta=beta)
    # ||x + 2y||^2 = 1/3 + 4/3 + 2 * 2 * 1/4 = 8/3; |grad|^2 = 5
    assert reg.value(c) == pytest.approx(0.5 * (alpha * 8 / 3 + beta * 5), rel=1e-12)
    g = c.x.petsc_vec.duplicate()
    g.set(0.0)
    reg.add_gradient(c, g)
    assert g.dot(c.x.petsc_vec) == pytest.approx(2 * reg.value(c), rel=1e-12)
    h = c.x.petsc_vec.duplicate()
    h.set(0.0)
    reg.add_hessian_action(c.x.petsc_vec, h)
    assert (h - g).norm() <= 1e-12 * g.norm()
