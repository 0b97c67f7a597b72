"""The MAP point by PETSc TAO (docs/theory.md §4.2; sensitivity/estimation/map/).

Checks: on linear-Gaussian problems (dense parameters, and point values of a field under the
bi-Laplacian prior) every method (lmvm, nls, ntr) reaches the exact posterior mean to ~1e-8; the Newton
histories decrease monotonically (also on a nonlinear advection problem); in the prior's geometry the
Newton iterations, and the CG iterations, do not grow from an 8² to a 32² mesh (finest/coarsest ≤ 1.2),
while without the prior preconditioner the CG (or lmvm) iterations do; a run interrupted and resumed from
its checkpoint reaches the same point, a finished run resumed evaluates nothing and returns its result,
the checkpoint is partition-independent; the results on 1, 2 and 3 ranks agree to solver tolerance; a
reduced functional with its own Tikhonov term is minimized in its mass or H¹ metric; bad inputs fail
before any work with a message that names them.
"""

from __future__ import annotations

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation import (
    ArraySpace,
    FunctionalObjective,
    MAPCheckpoint,
    Misfit,
    Posterior,
    exact_posterior,
    find_map,
    map_iterations_growth,
)
from sensitivity.estimation.problems import dense_linear_problem
from sensitivity.estimation.map import METHODS, REDUNDANT_LU, advection_problem, point_observation_problem
from sensitivity.fem import ReducedFunctional, Tikhonov
from sensitivity.io import read_h5

import numpy as np
import pytest
from mpi4py import MPI


def _dense_problem(comm, n=12, m=5, seed=0):
    return dense_linear_problem(comm, n, m, seed=seed)


def _shared_tmp(comm, tmp_path_factory):
    path = tmp_path_factory.mktemp("map") if comm.rank == 0 else None
    return comm.bcast(path, root=0)


def _rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


class Counting:
    """An objective that counts its evaluations (and can fail at one of them)."""

    def __init__(self, objective, fail_at: int | None = None):
        self.objective, self.space, self.prior = objective, objective.space, objective.prior
        self.calls, self.fail_at = 0, fail_at

    def _count(self):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyError("interrupted")

    def value(self, q):
        self._count()
        return self.objective.value(q)

    def value_and_derivative(self, q):
        self._count()
        return self.objective.value_and_derivative(q)

    def hessian_action(self, q, v):
        return self.objective.hessian_action(q, v)


# --------------------------------------------------------------------------- the exact MAP point


@pytest.mark.mpi
@pytest.mark.parametrize("method", METHODS)
def test_dense_linear_gaussian_map_is_the_exact_mean(comm, method):
    posterior, misfit, prior = _dense_problem(comm)
    mean, _ = exact_posterior(misfit, prior)
    result = find_map(posterior, np.zeros(misfit.space.size), method, gttol=1e-12)
    assert result.converged, result.message
    assert _rel(result.point, mean) < 1e-8, _rel(result.point, mean)
    objective = result.history["objective"]
    assert np.all(np.diff(objective) <= 1e-13 * abs(objective[0])), np.diff(objective)
    assert result.history["gradient_norm"].shape == (result.iterations + 1,)
    assert result.gradient_norm <= 1e-12 * result.history["gradient_norm"][0]
    # the derivative is measured in the prior's dual norm sqrt(d^T C d) and in l2
    _, d = posterior.value_and_derivative(result.point)
    assert result.derivative_norm == pytest.approx(np.linalg.norm(d), rel=1e-6, abs=1e-12)


@pytest.mark.mpi
@pytest.mark.parametrize("method", METHODS)
def test_pde_linear_gaussian_map_is_the_exact_mean(comm, method):
    posterior, misfit, prior = point_observation_problem(comm, 6, petsc_options=REDUNDANT_LU)
    mean, _ = exact_posterior(misfit, prior)
    q0 = posterior.space.zeros()
    result = find_map(posterior, q0, method, gttol=1e-12)
    assert result.converged, result.message
    error = _rel(posterior.space.to_array(result.point), mean)
    if comm.rank == 0:
        print(f"{method}: {result.iterations} iterations, {result.evaluations} evaluations, "
              f"{result.hessian_actions} Hessian actions, error {error:.1e}")
    assert error < 1e-8, error
    if method != "lmvm":
        assert result.hessian_actions == result.krylov_iterations > 0
        objective = result.history["objective"]
        assert np.all(np.diff(objective) <= 1e-13 * abs(objective[0]))
    prior.destroy()


@pytest.mark.mpi
@pytest.mark.parametrize("method", ["lmvm", "nls"])
def test_results_do_not_depend_on_the_number_of_ranks(comm, method):
    points, iterations = [], []
    for c in (comm, MPI.COMM_SELF):
        posterior, _, prior = point_observation_problem(c, 6, petsc_options=REDUNDANT_LU)
        result = find_map(posterior, posterior.space.zeros(), method, gttol=1e-10)
        points.append(posterior.space.to_array(result.point))
        iterations.append(result.iterations)
        prior.destroy()
    assert _rel(points[0], points[1]) < 1e-8, _rel(points[0], points[1])
    assert abs(iterations[0] - iterations[1]) <= 1, iterations


@pytest.mark.parametrize("method", ["nls", "ntr"])
def test_newton_history_is_monotone_on_a_nonlinear_problem(method):
    posterior, F = advection_problem(MPI.COMM_SELF, 8)
    result = find_map(posterior, posterior.space.zeros(), method, gttol=1e-6)
    assert result.converged, result.message
    objective = result.history["objective"]
    assert np.all(np.diff(objective) <= 1e-12 * objective[0]), np.diff(objective)
    assert objective[-1] < 0.05 * objective[0]
    assert result.hessian_actions >= result.krylov_iterations > result.iterations
    F.destroy()
    posterior.prior.destroy()


# --------------------------------------------------------------------------- mesh independence


def _report(label, out):
    print(f"{label}: meshes {out['sizes']}, iterations {out['iterations']}, CG iterations {out['krylov_iterations']}, "
          f"evaluations {out['evaluations']}, growth {out['growth']:.2f}")


@pytest.mark.parametrize("method", ["nls", "ntr"])
def test_newton_iterations_do_not_grow_with_the_mesh(method):
    """Point values of a field under the bi-Laplacian prior on 8², 16², 32² meshes: Newton-CG in the prior's
    geometry takes the same number of Newton and CG iterations on each; without the prior preconditioner
    the Newton iterations are those of the same (inexact) Newton method, but CG's grow several-fold."""
    pre = map_iterations_growth("linear", (8, 16, 32), method, comm=MPI.COMM_SELF)
    plain = map_iterations_growth("linear", (8, 16, 32), method, comm=MPI.COMM_SELF, precondition=False)
    _report(f"{method}, prior preconditioner", pre)
    _report(f"{method}, no preconditioner", plain)
    assert all(r.startswith("CONVERGED") for r in pre["reasons"] + plain["reasons"])
    assert pre["growth"] <= 1.2, pre
    assert pre["krylov_growth"] <= 1.2, pre
    assert plain["krylov_growth"] > 3.0, plain
    assert plain["krylov_iterations"][-1] > 5 * pre["krylov_iterations"][-1]


def test_lmvm_iterations_do_not_grow_with_the_mesh_in_the_prior_metric():
    pre = map_iterations_growth("linear", (8, 16, 32), "lmvm", comm=MPI.COMM_SELF)
    plain = map_iterations_growth("linear", (8, 16, 32), "lmvm", comm=MPI.COMM_SELF, precondition=False, max_it=400)
    _report("lmvm, prior initial Hessian", pre)
    _report("lmvm, TAO's default initial Hessian", plain)
    assert pre["growth"] <= 1.2, pre
    assert plain["growth"] > 2.0, plain


@pytest.mark.slow
def test_newton_iterations_do_not_grow_on_a_nonlinear_pde_problem():
    """The stream function of an advection-diffusion flow from tracer readings (nonlinear), 8² to 32²."""
    out = map_iterations_growth("advection", (8, 16, 32), "nls", comm=MPI.COMM_SELF)
    _report("nls, advection", out)
    assert all(r.startswith("CONVERGED") for r in out["reasons"])
    assert out["growth"] <= 1.2, out
    assert out["krylov_growth"] <= 1.2, out


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.mpi
@pytest.mark.parametrize("method", ["lmvm", "nls"])
def test_interrupted_run_resumes_to_the_same_point(comm, tmp_path_factory, method):
    checkpoint = _shared_tmp(comm, tmp_path_factory) / "ck" / "map.h5"
    posterior, _, prior = point_observation_problem(comm, 6, petsc_options=REDUNDANT_LU)
    space = posterior.space
    reference = find_map(posterior, space.zeros(), method, gttol=1e-10)
    # interrupted at the 6th evaluation (the objective raises): the error comes through, the checkpoint
    # holds the last even iteration
    with pytest.raises(KeyError, match="interrupted"):
        find_map(Counting(posterior, fail_at=6), space.zeros(), method, gttol=1e-10, checkpoint=checkpoint,
                 checkpoint_every=2, config={"problem": "points", "n": 6})
    stored = MAPCheckpoint.read(checkpoint, comm)
    assert stored.iterations >= 2 and stored.iterations % 2 == 0 and stored.reason is None
    resumed = find_map(posterior, space.zeros(), method, gttol=1e-10, checkpoint=checkpoint, resume=True,
                       config={"problem": "points", "n": 6})
    assert resumed.converged and resumed.resumed_at == stored.iterations
    np.testing.assert_array_equal(resumed.history["objective"][:stored.iterations + 1], stored.history["objective"])
    error = _rel(space.to_array(resumed.point), space.to_array(reference.point))
    assert error < 1e-7, error
    # the file: the final iterate in partition-independent order, the history, the reason
    data = read_h5(checkpoint)
    np.testing.assert_array_equal(data["iterate"], space.to_array(resumed.point))
    assert data["reason"] == resumed.reason and data["method"] == method
    assert data["history"]["objective"].shape == (resumed.iterations + 1,)
    # a finished run resumed: nothing evaluated, the stored result
    counting = Counting(posterior)
    again = find_map(counting, space.zeros(), method, gttol=1e-10, checkpoint=checkpoint, resume=True)
    assert counting.calls == 0 and again.finished_before_resume
    assert again.reason == resumed.reason and again.iterations == resumed.iterations
    assert again.evaluations == resumed.evaluations and again.hessian_actions == resumed.hessian_actions
    np.testing.assert_array_equal(space.to_array(again.point), space.to_array(resumed.point))
    for key, column in resumed.history.items():
        np.testing.assert_array_equal(again.history[key], column, err_msg=key)
    prior.destroy()


def test_a_mid_run_checkpoint_resumes_as_one_of_a_run_stopped_there(tmp_path):
    """lmvm with a rescaled initial Hessian: the checkpoint written during the run at iteration k (a run killed
    after it) and the one a run stopped at k writes both hold that step's scale, so both resume identically."""
    posterior, _, prior = point_observation_problem(MPI.COMM_SELF, 6, petsc_options=REDUNDANT_LU)
    space = posterior.space
    options = dict(gttol=1e-14, gatol=0.0, grtol=0.0, lmvm_scaling=True, checkpoint_every=1)
    stopped, killed = tmp_path / "stopped.h5", tmp_path / "killed.h5"
    counting = Counting(posterior)
    find_map(counting, space.zeros(), "lmvm", max_it=4, checkpoint=stopped, **options)
    with pytest.raises(KeyError, match="interrupted"):  # dies in iteration 5: the checkpoint holds 4
        find_map(Counting(posterior, fail_at=counting.calls + 1), space.zeros(), "lmvm", max_it=8,
                 checkpoint=killed, **options)
    assert MAPCheckpoint.read(killed, MPI.COMM_SELF).iterations == 4
    a, b = (find_map(posterior, space.zeros(), "lmvm", max_it=8, checkpoint=ck, resume=True, **options)
            for ck in (stopped, killed))
    assert a.resumed_at == b.resumed_at == 4 and a.iterations == b.iterations == 8
    np.testing.assert_array_equal(a.history["objective"], b.history["objective"])
    np.testing.assert_array_equal(space.to_array(a.point), space.to_array(b.point))
    prior.destroy()


@pytest.mark.mpi
def test_checkpoint_resumes_on_another_number_of_ranks(comm, tmp_path_factory):
    """Written on every rank of ``comm`` at iteration 4 of lmvm, resumed serially: the same point."""
    checkpoint = _shared_tmp(comm, tmp_path_factory) / "map.h5"
    posterior, _, prior = point_observation_problem(comm, 6, petsc_options=REDUNDANT_LU)
    first = find_map(posterior, posterior.space.zeros(), "lmvm", gttol=1e-10, max_it=4, checkpoint=checkpoint)
    assert first.reason == "DIVERGED_MAXITS" and first.iterations == 4
    full = posterior.space.to_array(find_map(posterior, posterior.space.zeros(), "lmvm", gttol=1e-10).point)
    prior.destroy()
    comm.Barrier()
    if comm.rank == 0:  # rank 0 alone resumes the checkpoint of the whole communicator
        serial, _, serial_prior = point_observation_problem(MPI.COMM_SELF, 6)
        resumed = find_map(serial, serial.space.zeros(), "lmvm", gttol=1e-10, checkpoint=checkpoint, resume=True)
        assert resumed.resumed_at == 4 and resumed.converged
        assert _rel(serial.space.to_array(resumed.point), full) < 1e-7
        serial_prior.destroy()
    comm.Barrier()


@pytest.mark.mpi
def test_monitor_columns_are_recorded_and_resumed(comm, tmp_path_factory):
    checkpoint = _shared_tmp(comm, tmp_path_factory) / "monitor.h5"
    posterior, misfit, _ = _dense_problem(comm)
    seen = []

    def monitor(k, q, value, gradient_norm):
        seen.append(k)
        return {"misfit": misfit.value(q), "first": float(q[0])}

    a = find_map(posterior, np.zeros(12), "lmvm", gttol=1e-10, max_it=3, checkpoint=checkpoint, monitor=monitor)
    assert seen == [0, 1, 2, 3] and sorted(a.history) == sorted(
        ["objective", "gradient_norm", "derivative_norm", "step", "evaluations", "gradients", "hessian_actions",
         "krylov_iterations", "misfit", "first"])
    with pytest.raises(InvalidArgumentError, match="monitor returned the columns"):
        find_map(posterior, np.zeros(12), "lmvm", max_it=10, checkpoint=checkpoint, resume=True,
                 monitor=lambda k, q, v, g: {"other": 1.0})
    b = find_map(posterior, np.zeros(12), "lmvm", gttol=1e-10, checkpoint=checkpoint, resume=True, monitor=monitor)
    assert seen[4] == 4 and b.history["misfit"].shape == b.history["objective"].shape
    np.testing.assert_array_equal(b.history["misfit"][:4], a.history["misfit"])


# --------------------------------------------------------------------------- a reduced functional with its own Tikhonov term


def test_functional_objective_in_the_mass_and_h1_metrics():
    """A reduced functional with its own Tikhonov term (the advection problem's misfit): Newton-CG in the
    mass metric converges, and lmvm (its initial Hessian the mass or the H¹ matrix, rescaled by the
    curvature) reaches the same value. (Serial: the demo runs this objective under mpirun.)"""
    posterior, F0 = advection_problem(MPI.COMM_SELF, 4, steps=6)
    F = ReducedFunctional(F0.scheme, F0.initial_state, F0.nsteps, F0.misfits,
                          Tikhonov(F0.control_space.space, alpha=10.0, beta=1.0))
    objectives = {metric: FunctionalObjective(F, metric) for metric in ("mass", "h1")}
    q0 = objectives["mass"].space.zeros()
    newton = find_map(objectives["mass"], q0, "nls", gttol=1e-8)
    assert newton.converged and newton.metric == "control mass matrix", newton.message
    for metric, objective in objectives.items():
        quasi = find_map(objective, q0, "lmvm", gttol=1e-5, max_it=400)
        assert quasi.converged, (metric, quasi.message)
        assert quasi.metric.startswith("control mass" if metric == "mass" else "H1"), quasi.metric
        assert abs(quasi.value - newton.value) < 1e-4 * newton.value, (metric, quasi.value, newton.value)
        objective.destroy()
    F.destroy()
    F0.destroy()
    posterior.prior.destroy()


# --------------------------------------------------------------------------- bad inputs


class _NoHessian(Misfit):
    def __init__(self, space):
        self.space = space

    def value_and_derivative(self, q):
        return 0.5 * float(q @ q), q.copy()


def _nan_start(posterior):
    class NaN:
        space, prior = posterior.space, posterior.prior

        def value(self, q):
            return float("nan")

        def value_and_derivative(self, q):
            return float("nan"), np.zeros(self.space.size)

    return NaN()


BAD = [
    (lambda p, q: find_map(p, q, "bfgs"), "method must be one of lmvm, nls, ntr, got 'bfgs'"),
    (lambda p, q: find_map(p, q, gttol=-1.0), "gttol must be a non-negative finite number, got -1.0"),
    (lambda p, q: find_map(p, q, gatol=float("nan")), "gatol must be a non-negative finite number, got nan"),
    (lambda p, q: find_map(p, q, gttol=0.0), "gatol, grtol and gttol are all 0"),
    (lambda p, q: find_map(p, q, max_it=0), "max_it must be"),
    (lambda p, q: find_map(p, q, "nls", krylov_rtol=1.5), r"krylov_rtol must be in \(0, 1\), got 1.5"),
    (lambda p, q: find_map(p, np.full(12, np.nan)), r"q0 must be finite: q0\[0\] = nan"),
    (lambda p, q: find_map(p, np.zeros(7)), r"q0 must have shape \(12,\), got \(7,\)"),
    (lambda p, q: find_map("posterior", q), "objective must have a ParameterSpace 'space'"),
    (lambda p, q: find_map(Posterior(_NoHessian(p.space), p.prior), q, "ntr"),
     "method 'ntr' needs the objective's Hessian action, which Posterior does not have; use method='lmvm'"),
    (lambda p, q: find_map(p, q, resume=True), "resume=True needs a checkpoint path"),
    (lambda p, q: find_map(p, q, metric="prior"), "metric must be a Metric, 'auto', 'l2' or None"),
    (lambda p, q: find_map(_nan_start(p), q, "lmvm"), "the objective is not finite at the starting point: value = nan"),
]


@pytest.mark.mpi
@pytest.mark.parametrize("call, pattern", BAD)
def test_bad_inputs_are_named(comm, call, pattern):
    posterior, _, _ = _dense_problem(comm)
    with pytest.raises(InvalidArgumentError, match=pattern):
        call(posterior, np.zeros(12))


@pytest.mark.mpi
def test_bad_inputs_on_distributed_vectors(comm, tmp_path_factory):
    posterior, _, prior = point_observation_problem(comm, 4, petsc_options=REDUNDANT_LU)
    other, _, other_prior = point_observation_problem(comm, 5, petsc_options=REDUNDANT_LU)
    space = posterior.space
    bad = space.zeros()
    bad.array[:] = np.nan if comm.rank == comm.size - 1 else 0.0  # on one rank only: every rank raises
    with pytest.raises(InvalidArgumentError, match="q0 must be finite"):
        find_map(posterior, bad, "nls")
    with pytest.raises(InvalidArgumentError, match=f"q0 must be a PETSc Vec of {space.size} control dofs"):
        find_map(posterior, other.space.zeros(), "nls")
    from sensitivity.estimation import PriorMetric

    with pytest.raises(InvalidArgumentError, match="the metric \\(prior precision\\) is not on the objective's"):
        find_map(posterior, space.zeros(), metric=PriorMetric(other_prior))
    # resuming a checkpoint of another configuration, method or problem
    checkpoint = _shared_tmp(comm, tmp_path_factory) / "config.h5"
    find_map(posterior, space.zeros(), "lmvm", max_it=2, checkpoint=checkpoint, config={"noise": 0.05, "kind": "a"})
    with pytest.raises(InvalidArgumentError, match="was written with noise = 0.05, this run has 0.02"):
        find_map(posterior, space.zeros(), "lmvm", checkpoint=checkpoint, resume=True, config={"noise": 0.02})
    with pytest.raises(InvalidArgumentError, match="was written with kind = 'a', this run has 'b'"):
        find_map(posterior, space.zeros(), "lmvm", checkpoint=checkpoint, resume=True, config={"kind": "b"})
    with pytest.raises(InvalidArgumentError, match="was written by method 'lmvm', this run uses 'nls'"):
        find_map(posterior, space.zeros(), "nls", checkpoint=checkpoint, resume=True)
    with pytest.raises(InvalidArgumentError, match=f"values for {other.space.size} parameters"):
        find_map(other, other.space.zeros(), "lmvm", checkpoint=checkpoint, resume=True)
    prior.destroy()
    other_prior.destroy()


def test_the_driver_works_on_a_plain_objective():
    """Any object with space, value and value_and_derivative (no prior: the l2 geometry)."""

    class Rosenbrock:
        space = ArraySpace(2, MPI.COMM_SELF)

        def value(self, q):
            return float((1 - q[0]) ** 2 + 100 * (q[1] - q[0] ** 2) ** 2)

        def value_and_derivative(self, q):
            d = np.array([-2 * (1 - q[0]) - 400 * q[0] * (q[1] - q[0] ** 2), 200 * (q[1] - q[0] ** 2)])
            return self.value(q), d

    result = find_map(Rosenbrock(), np.array([-1.2, 1.0]), "lmvm", gatol=1e-10, gttol=0.0)
    assert result.converged and result.metric == "l2"
    assert np.allclose(result.point, [1.0, 1.0], atol=1e-7)
    assert "gatol" in result.message
