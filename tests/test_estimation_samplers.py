"""Samplers (docs/theory.md §4.4) on linear-Gaussian problems whose posterior is known exactly.

Checks: every kernel's posterior means and variances of coordinates and linear functionals lie within 4 MCSE
(ArviZ) of ``exact_posterior`` for a fixed seed — a dense problem (5 parameters, a correlated prior) and a
PDE one (bi-Laplacian prior on P1 of a 6×6 mesh, point observations of the control); HMC driven by a force
scaled by 0.5 or by a biased first-order (linearized) force still samples the right posterior; the ∞-HMC
energy change equals the directly evaluated Hamiltonian difference, and ∞-MALA's acceptance ratio is the
Metropolis–Hastings ratio of its Gaussian proposal; dual averaging reaches its target and is frozen after
warm-up; the same seed gives the same chain on 1, 2 and 3 ranks and on sub-communicators; every bad setting
is an error on every rank before any work.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from dolfinx import fem, mesh
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation import (HMC, PCN, BiLaplacianPrior, DualAveraging, Force, FunctionVectors, GaussianPrior,
                                    InfiniteHMC, InfiniteMALA, LaplaceApproximation, LaplaceForce, LinearMisfit, MomentCheck,
                                    Posterior, find_map, sample, summarize)
from sensitivity.estimation.samplers import State, evaluate
from sensitivity.fem import ControlSpace, PointSensors
from sensitivity.parallel import run_on_root

N = 5
_R = np.random.default_rng(7)
G = _R.standard_normal((3, N))
DATA = _R.standard_normal(3)
_A = _R.standard_normal((N, N))
COVARIANCE = _A @ _A.T / N + 0.3 * np.eye(N)
NOISE = 0.6
PRIOR_MEAN = np.linspace(-0.5, 0.5, N)
POINTS = np.array([[0.25, 0.25], [0.75, 0.3], [0.5, 0.5], [0.3, 0.8], [0.8, 0.75]])
READINGS = np.array([0.5, -0.3, 0.8, 0.1, -0.6])


class _DensePrior(GaussianPrior):
    """A correlated GaussianPrior whose precision is a stored matrix (fewer SciPy calls per leapfrog step)."""

    def __init__(self, space):
        super().__init__(space, PRIOR_MEAN, covariance=COVARIANCE)
        self._precision = np.linalg.inv(COVARIANCE)

    def precision_action(self, v, out=None):
        r = self._precision @ np.asarray(v)
        return r if out is None else self.space.assign(r, out)


class _ScaledForce(Force):
    """A deliberately wrong force: ``scale`` times the exact derivative."""

    name = "scaled"

    def __init__(self, misfit, scale):
        self.misfit, self.scale = misfit, scale

    def derivative(self, q):
        d = self.misfit.value_and_derivative(q)[1]
        return self.misfit.space.scale(d, self.scale)


class _LinearizedForce(Force):
    """A biased first-order force: the linearization about the prior mean with 0.7 times the exact curvature."""

    name = "biased first order"

    def __init__(self, misfit):
        self.misfit = misfit
        self.slope = self.misfit.value_and_derivative(PRIOR_MEAN)[1]
        self.hessian = 0.7 * G.T @ G / NOISE**2

    def derivative(self, q):
        return self.slope + self.hessian @ (np.asarray(q) - PRIOR_MEAN)


def dense(comm, force=None):
    misfit = LinearMisfit.from_matrix(G, DATA, NOISE, comm)
    prior = _DensePrior(misfit.space)
    return Posterior(misfit, prior, None if force is None else force(misfit))


def pde(comm, n=6):
    V = fem.functionspace(mesh.create_unit_square(comm, n, n), ("Lagrange", 1))
    space = FunctionVectors(ControlSpace(V))
    sensors = PointSensors(V, POINTS)
    misfit = LinearMisfit(space, sensors.evaluate, lambda w: sensors.apply_transpose(w, space.zeros()), READINGS, 0.3)
    return Posterior(misfit, BiLaplacianPrior(space, gamma=0.1, delta=1.0, robin=True))


def pde_with_laplace_force(comm, rank=2):
    """The PDE problem driven by the Laplace model's force of rank 2 < 5 observations: a wrong force."""
    posterior = pde(comm)
    laplace = LaplaceApproximation(posterior, find_map(posterior, posterior.space.zeros(), "nls"), rank=rank)
    return Posterior(posterior.misfit, posterior.prior, LaplaceForce(laplace))


def _functionals(posterior):
    """Rows of linear functionals (``to_array`` order): the coordinates (dense) or the five sensor readings and
    two dofs (PDE)."""
    space = posterior.space
    if space.size == N:
        return np.eye(N)
    rows = [space.to_array(posterior.misfit.apply_transpose(e)) for e in np.eye(len(READINGS))]
    return np.vstack(rows + [np.eye(space.size)[[0, space.size // 3]]])  # a corner and an unobserved dof


def _within_mcse(build, kernel, rhat=1.1, comm=MPI.COMM_SELF, **options):
    """Sample; assert that the mean and the variance of every functional are within 4 MCSE (ArviZ) of the exact
    ones and R-hat below ``rhat``; return the summary."""
    posterior = build(comm)
    check = MomentCheck(posterior, _functionals(posterior))
    chains = sample(build, kernel, comm=comm, summaries=check.summaries(), store_control=False, **options)
    s = summarize(chains)
    z_mean, z_var = check.z_scores(s)
    print(f"{kernel.name} ({posterior.force.name} force): acceptance {np.round(s.acceptance_rate, 3)}, step "
          f"{np.round(s.step_size, 4)}, min ESS {float(s.ess_bulk['f'].min()):.0f}, z(mean) {np.round(z_mean, 2)}, "
          f"z(var) {np.round(z_var, 2)}, R-hat max {float(s.rhat['f'].max()):.3f}")
    # the MCSE itself must be informative: a few wild draws would inflate it along with the error
    assert np.all(check.relative_mcse_of_variance(s) < 0.3), check.relative_mcse_of_variance(s)
    assert np.max(np.abs(z_mean)) < 4.0 and np.max(np.abs(z_var)) < 4.0, (z_mean, z_var)
    assert float(s.rhat["f"].max()) < rhat
    return s


DENSE_RUNS = {
    "pCN": (PCN(), dict(num_draws=4000)),
    "infinite MALA": (InfiniteMALA(), dict(num_draws=3000)),
    "infinite HMC": (InfiniteHMC(4), dict(num_draws=1500)),
    "HMC identity": (HMC(6), dict(num_draws=1500)),
    "HMC diagonal": (HMC(6, mass=1.0 / np.diag(COVARIANCE)), dict(num_draws=1500)),
    "HMC prior": (HMC(6, mass="prior", jitter=0.2), dict(num_draws=1500)),
    # the dense metric of the exact posterior precision (what sampler.mass = "laplace" gives a Gaussian posterior)
    "HMC dense": (HMC(4, mass=np.linalg.inv(COVARIANCE) + G.T @ G / NOISE**2, jitter=0.2), dict(num_draws=1200)),
}


@pytest.mark.slow
@pytest.mark.parametrize("label", list(DENSE_RUNS))
def test_dense_moments_are_within_mcse_of_the_exact_posterior(label):
    kernel, options = DENSE_RUNS[label]
    s = _within_mcse(dense, kernel, rhat=1.05, num_warmup=300, num_chains=2, seed=11, **options)
    assert abs(float(np.mean(s.acceptance_rate)) - kernel.target_accept) < 0.12, s.acceptance_rate


PDE_RUNS = {
    "pCN": (PCN(), dict(num_draws=2500)),
    "infinite HMC, Laplace force of rank 2": (InfiniteHMC(3), dict(num_draws=600, target_accept=0.65)),
    "infinite MALA": (InfiniteMALA(), dict(num_draws=1500)),
    "infinite HMC": (InfiniteHMC(3), dict(num_draws=600, target_accept=0.65)),
}


@pytest.mark.slow
@pytest.mark.parametrize("label", list(PDE_RUNS))
def test_pde_moments_are_within_mcse_of_the_exact_posterior(label):
    kernel, options = PDE_RUNS[label]
    build = pde_with_laplace_force if "Laplace" in label else pde
    _within_mcse(build, kernel, num_warmup=200, num_chains=2, seed=5, **options)


@pytest.mark.slow
@pytest.mark.parametrize("force", [lambda m: _ScaledForce(m, 0.5), _LinearizedForce], ids=["scaled", "linearized"])
@pytest.mark.parametrize("kernel", [InfiniteHMC(6, jitter=0.2), HMC(8, jitter=0.2)], ids=["infinite", "finite"])
def test_a_wrong_force_still_samples_the_exact_posterior(kernel, force):
    """A wrong force's energy error does not vanish with the step size, so the adaptation targets 0.5: the
    efficiency changes (smaller steps, lower acceptance), the moments do not."""
    _within_mcse(lambda c: dense(c, force), kernel, num_warmup=300, num_draws=1500, num_chains=2, seed=12,
                 target_accept=0.5)


@pytest.mark.slow
@pytest.mark.parametrize("kernel, step", [(InfiniteHMC(4, jitter=0.2), 0.62), (HMC(6, jitter=0.2), 0.53)],
                         ids=["infinite", "finite"])
def test_with_a_coarse_integrator_the_accept_step_keeps_the_target(kernel, step):
    """No adaptation and a step size at which about half the proposals are rejected: the moments are right only
    if the accept step is (a sampler that always accepts, or flips the sign of ΔH, fails here)."""
    s = _within_mcse(dense, kernel, num_warmup=0, num_draws=1500, num_chains=2, seed=13, step_size=step)
    assert 0.3 < float(np.mean(s.acceptance_rate)) < 0.75, s.acceptance_rate


def _hamiltonian(posterior, state, v):
    r""":math:`\Phi(q) + \tfrac12\|q - \bar m\|^2_{C^{-1}} + \tfrac12\|v\|^2_{C^{-1}}`, directly."""
    cv = posterior.prior.precision_action(v)
    return state.potential + 0.5 * posterior.space.dot(v, cv)


@pytest.mark.parametrize("problem", [dense, pde], ids=["dense", "pde"])
def test_infinite_hmc_energy_change_is_the_exact_hamiltonian_difference(problem):
    posterior = problem(MPI.COMM_SELF)
    space, prior = posterior.space, posterior.prior
    rng = np.random.default_rng(3)
    kernel = InfiniteHMC(7)
    for h in (0.05, 0.15, 0.3):
        state = kernel.init(posterior, prior.sample(rng))
        v0 = prior.sample(rng)
        space.axpy(-1.0, prior.mean, v0)
        before = _hamiltonian(posterior, state, v0)
        end, v, delta, evaluations = kernel.trajectory(posterior, state, space.copy(v0), h)
        after = _hamiltonian(posterior, end, v)
        scale = abs(before) + abs(after)
        assert evaluations == 7
        assert abs(delta - (after - before)) < 1e-10 * scale, (h, delta, after - before)
        assert abs(delta) > 1e-6 * scale  # not trivially conserved: the misfit part is integrated by kicks
        # the integrator is reversible: flipping the velocity returns to the start with the opposite change
        space.scale(v, -1.0)
        back, _, delta_back, _ = kernel.trajectory(posterior, end, v, h)
        assert abs(delta_back + delta) < 1e-10 * scale
        assert np.allclose(space.to_array(back.position), space.to_array(state.position), atol=1e-10)


def test_infinite_mala_is_one_step_hmc_with_the_gaussian_proposal_ratio():
    r"""∞-MALA's :math:`e^{-\Delta H}` equals the MH ratio of :math:`N(m + \cos h(q-m) - \tfrac h2\sin h\,Cf,
    \sin^2h\,C)`, and its proposal is that formula."""
    posterior = dense(MPI.COMM_SELF)
    prior, h = posterior.prior, 0.4
    rng = np.random.default_rng(5)
    state = InfiniteMALA().init(posterior, prior.sample(rng))
    v = prior.sample(rng) - prior.mean
    end, _, delta, _ = InfiniteMALA().trajectory(posterior, state, v.copy(), h)
    c, s = math.cos(h), math.sin(h)

    def centre(point):
        return prior.mean + c * (point.position - prior.mean) - 0.5 * h * s * prior.covariance_action(point.force)

    assert np.allclose(end.position, centre(state) + s * v, atol=1e-12)

    def log_density(to, frm):  # Gaussian proposal density up to its constant
        r = to.position - centre(frm)
        return -0.5 * r @ prior.precision_action(r) / s**2

    log_ratio = -end.potential + log_density(state, end) + state.potential - log_density(end, state)
    assert abs(log_ratio + delta) < 1e-10 * (1.0 + abs(delta))


def test_dual_averaging_reaches_its_target_and_freezes():
    adapt = DualAveraging(1.0, 0.8)
    for _ in range(3000):
        adapt.update(math.exp(-adapt.step_size))  # acceptance exp(-h): the target is h = -log 0.8
    assert abs(adapt.final_step_size + math.log(0.8)) < 0.01
    assert DualAveraging(0.3, 0.8).final_step_size == 0.3  # nothing adapted: h0
    capped = DualAveraging(0.5, 0.1, max_step_size=1.0)
    for _ in range(50):
        capped.update(1.0)
    assert capped.step_size <= 1.0
    chains = sample(dense, HMC(3), num_warmup=50, num_draws=40, num_chains=2, seed=2, comm=MPI.COMM_SELF)
    after = chains.stats["step_size"][:, 50:]
    assert np.all(after == after[:, :1]) and not np.all(chains.stats["step_size"][:, :50] == after[:, :1])


@pytest.mark.mpi
def test_the_same_seed_gives_the_same_chain_on_any_number_of_ranks(comm):
    options = dict(num_warmup=8, num_draws=8, num_chains=2, seed=21)
    here = sample(pde, InfiniteHMC(3), comm=comm, **options)
    alone = sample(pde, InfiniteHMC(3), comm=MPI.COMM_SELF, **options)
    assert np.array_equal(here.stats["accepted"], alone.stats["accepted"])
    assert np.max(np.abs(here.control - alone.control)) < 1e-10 * np.max(np.abs(alone.control))
    assert np.allclose(here.stats["energy_error"], alone.stats["energy_error"], rtol=1e-8, atol=1e-10)
    # one chain per rank on sub-communicators: the same chains as one after the other on one rank
    many = dict(options, num_chains=comm.size + 1)
    split = sample(pde, PCN(), comm=comm, ranks_per_chain=1, **many)
    serial = sample(pde, PCN(), comm=MPI.COMM_SELF, **many)
    assert np.array_equal(split.stats["accepted"], serial.stats["accepted"])
    assert np.max(np.abs(split.control - serial.control)) < 1e-10 * np.max(np.abs(serial.control))


def _misfit_of_another_size(comm):
    misfit = LinearMisfit.from_matrix(np.ones((3, N + 1)), DATA, 0.3, comm)
    return Posterior(misfit, _DensePrior(dense(comm).space))


def _misfit_that_does_not_match(comm):
    misfit = LinearMisfit(dense(comm).space, lambda q: np.ones(4), lambda w: np.zeros(N), DATA, 0.3)
    return Posterior(misfit, _DensePrior(misfit.space))


def _prior_on_another_mesh(comm):
    misfit = pde(comm).misfit
    other = FunctionVectors(ControlSpace(fem.functionspace(mesh.create_unit_square(comm, 6, 6), ("Lagrange", 1))))
    return Posterior(misfit, BiLaplacianPrior(other, gamma=0.1, delta=1.0))


@pytest.mark.mpi
@pytest.mark.parametrize("build, options, message", [
    (dense, dict(step_size=-0.1), "step_size must be in"),
    (dense, dict(num_chains=0), "num_chains must be a positive integer"),
    (dense, dict(thin=0), "thin must be a positive integer"),
    (dense, dict(target_accept=1.0), "target_accept must be in"),
    (dense, dict(ranks_per_chain=0), "ranks_per_chain must be"),
    (_misfit_of_another_size, {}, "the prior .* is not on the misfit's parameter space"),
    (_misfit_that_does_not_match, {}, "does the misfit match the control"),
    (_prior_on_another_mesh, {}, "the prior is on another function space"),
    (lambda comm: HMC, {}, "must return a Posterior"),
])
def test_bad_settings_fail_on_every_rank_before_any_work(comm, tmp_path_factory, build, options, message):
    output = comm.bcast(run_on_root(comm, lambda: tmp_path_factory.mktemp("bad")), root=0) / "chains"
    settings = dict(num_warmup=5, num_draws=5, num_chains=2, seed=0, comm=comm, output=output) | options
    with pytest.raises(InvalidArgumentError, match=message):
        sample(build, HMC(3), **settings)
    comm.Barrier()
    assert not (output / "chains.h5").exists() and not list(output.glob("chain-*"))
    if "step_size" in options or "num_chains" in options:
        assert not output.exists()  # nothing was even created


def test_one_initial_point_per_chain():
    starts = np.array([np.full(N, -1.0), np.full(N, 2.0), np.linspace(0, 1, N)])
    chains = sample(dense, PCN(), num_draws=2, num_warmup=0, num_chains=3, seed=5, step_size=1e-12, initial=starts,
                    comm=MPI.COMM_SELF)
    np.testing.assert_allclose(chains.control[:, 0], starts, rtol=0, atol=1e-9)
    with pytest.raises(InvalidArgumentError, match="initial has 3 rows, one per chain: num_chains = 2"):
        sample(dense, PCN(), num_draws=2, num_chains=2, initial=starts, comm=MPI.COMM_SELF)
    with pytest.raises(InvalidArgumentError, match="initial has 4 entries per point, the parameters 5"):
        sample(dense, PCN(), num_draws=2, num_chains=3, initial=starts[:, :4], comm=MPI.COMM_SELF)


def test_kernel_options_are_checked():
    with pytest.raises(InvalidArgumentError, match="num_steps must be a positive integer"):
        InfiniteHMC(0)
    with pytest.raises(InvalidArgumentError, match="positive numbers"):
        HMC(3, mass=[1.0, -1.0, 1.0, 1.0, 1.0])
    with pytest.raises(InvalidArgumentError, match=r"the mass has shape \(3,\), the parameters 5 entries"):
        sample(dense, HMC(3, mass=[1.0, 1.0, 1.0]), num_draws=5, comm=MPI.COMM_SELF)
    with pytest.raises(InvalidArgumentError, match=r"the mass has shape \(3, 3\)"):
        sample(dense, HMC(3, mass=np.eye(3)), num_draws=5, comm=MPI.COMM_SELF)
    with pytest.raises(InvalidArgumentError, match="must be symmetric"):
        HMC(3, mass=np.triu(np.ones((3, 3))))
    with pytest.raises(InvalidArgumentError, match="positive definite: its smallest eigenvalue is -1"):
        HMC(3, mass=np.diag([1.0, -1.0, 2.0]))
    with pytest.raises(InvalidArgumentError, match="needs parameters on an ArraySpace"):
        sample(pde, HMC(3, mass=np.ones(49)), num_draws=5, comm=MPI.COMM_SELF)
    with pytest.raises(InvalidArgumentError, match=r"step_size must be in \(0, 1\]"):
        sample(dense, PCN(), step_size=1.5, num_draws=5, comm=MPI.COMM_SELF)
    with pytest.raises(InvalidArgumentError, match="kernel must be a Kernel"):
        sample(dense, "HMC", num_draws=5, comm=MPI.COMM_SELF)


def test_a_divergent_trajectory_is_rejected_and_flagged():
    posterior = dense(MPI.COMM_SELF)
    rng = np.random.default_rng(0)
    state = HMC(5).init(posterior, posterior.prior.sample(rng))
    start = state.position.copy()
    new, stats = HMC(5).step(posterior, state, rng, 50.0)
    assert stats["diverging"] and not stats["accepted"] and stats["acceptance_rate"] == 0.0
    assert new is state and np.array_equal(new.position, start)
    assert isinstance(evaluate(posterior, start, False), State)
