"""Sampling diagnostics (sensitivity.estimation.diagnostics): ArviZ export, R-hat/ESS/MCSE, plots, fields.

Checks: the DataTree has the posterior and sample_stats groups (and the warm-up ones when warm-up draws are
stored) with the draws and statistics of the chains, and survives a netCDF round trip; the diagnostics are
ArviZ's (equal to ``arviz.ess``/``rhat``/``mcse`` on the arrays) and behave as they must on known chains:
R-hat ≈ 1 and ESS ≈ N for independent draws, R-hat ≫ 1 for chains stuck apart, ESS ≈ N(1 − ρ)/(1 + ρ)
for an AR(1) chain; ESS per second and per gradient evaluation use every iteration after warm-up; the
trace plot is a PNG from rank 0; the posterior mean and standard deviation fields are the pointwise ones.
"""

from __future__ import annotations

import json

import arviz
import numpy as np
import pytest
import xarray as xr
from dolfinx import fem, mesh
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation import (ArraySpace, Chains, FunctionVectors, GaussianPrior, InfiniteHMC, LinearMisfit,
                                    Posterior, posterior_fields, sample, summarize, to_datatree, trace_plot,
                                    write_netcdf, write_posterior_fields)
from sensitivity.estimation.chains import STATISTICS
from sensitivity.fem import ControlSpace
from sensitivity.parallel import run_on_root


def _chains(draws, warmup=0, thin=1, time=0.01, gradients=3, save_warmup=False):
    """Chains holding ``draws`` (chains, draws, n) after ``warmup`` iterations, every ``thin``-th iteration stored."""
    count, length, n = draws.shape
    iterations = warmup + thin * length
    stats = {name: np.zeros((count, iterations), dtype) for name, dtype in STATISTICS.items()}
    stats["warmup"][:, :warmup] = True
    stats["gradient_evaluations"][:] = gradients
    stats["time"][:] = time
    stats["acceptance_rate"][:] = 0.7
    stats["step_size"][:] = 0.25
    stored = warmup + thin * np.arange(length)
    if save_warmup:
        stored = np.concatenate([np.arange(0, warmup, thin), stored])
        draws = np.concatenate([np.zeros((count, len(stored) - length, n)), draws], axis=1)
    settings = {"num_warmup": warmup, "parameters": n, "store_control": True, "summaries": {"norm": []},
                "sampler": {"name": "test"}}
    summaries = {"norm": np.linalg.norm(draws, axis=2)}
    return Chains(settings, stats, stored, draws, summaries)


def _shared_dir(comm, tmp_path_factory):
    return comm.bcast(run_on_root(comm, lambda: tmp_path_factory.mktemp("diagnostics")), root=0)


def test_independent_draws_have_rhat_one_and_ess_n():
    draws = np.random.default_rng(1).standard_normal((4, 500, 3))
    chains = _chains(draws, warmup=100, thin=2)
    s = summarize(chains)
    assert np.all(np.abs(s.rhat["q"].values - 1.0) < 0.01)
    assert np.all((s.ess_bulk["q"].values > 1500) & (s.ess_bulk["q"].values < 2600)), s.ess_bulk["q"].values
    assert np.allclose(s.ess_bulk["q"].values, arviz.ess(draws, method="bulk"))
    assert np.allclose(s.ess_tail["q"].values, arviz.ess(draws, method="tail", prob=(0.05, 0.95)))
    assert np.allclose(s.mcse_mean["q"].values, arviz.mcse(draws, method="mean"))
    assert np.allclose(s.mcse_sd["q"].values, arviz.mcse(draws, method="sd"))
    assert np.allclose(s.mean["q"].values, draws.mean(axis=(0, 1)))
    # cost: every iteration after warm-up (1000 per chain, of which 500 stored), 3 gradients and 0.01 s each
    assert np.array_equal(s.gradient_evaluations, [3000] * 4) and np.allclose(s.time, 10.0)
    assert np.allclose(s.ess_per_gradient["q"].values, s.ess_bulk["q"].values / 12000.0)
    assert np.allclose(s.ess_per_second["q"].values, s.ess_bulk["q"].values / 40.0)
    assert np.allclose(s.acceptance_rate, 0.7) and np.allclose(s.step_size, 0.25)
    json.dumps(s.as_dict())


def test_stuck_and_correlated_chains_are_diagnosed():
    rng = np.random.default_rng(2)
    apart = rng.standard_normal((2, 400, 1)) + np.array([0.0, 3.0])[:, None, None]
    assert float(summarize(_chains(apart)).rhat["q"].values[0]) > 1.5
    rho, z = 0.9, rng.standard_normal((4, 4000))
    ar = np.zeros_like(z)
    for t in range(1, z.shape[1]):
        ar[:, t] = rho * ar[:, t - 1] + np.sqrt(1 - rho**2) * z[:, t]
    ess = float(summarize(_chains(ar[:, :, None])).ess_bulk["q"].values[0])
    expected = ar.size * (1 - rho) / (1 + rho)
    assert 0.7 * expected < ess < 1.3 * expected, (ess, expected)


def test_datatree_groups_and_warmup():
    draws = np.random.default_rng(3).standard_normal((2, 30, 4))
    tree = to_datatree(_chains(draws, warmup=20, thin=2, save_warmup=True))
    assert set(tree.children) == {"posterior", "sample_stats", "warmup_posterior", "warmup_sample_stats"}
    posterior = tree["posterior"].to_dataset()
    assert posterior["q"].dims == ("chain", "draw", "parameter") and posterior["q"].shape == (2, 30, 4)
    assert np.array_equal(posterior["q"].values, draws) and posterior["norm"].shape == (2, 30)
    assert tree["warmup_posterior"].to_dataset()["q"].shape == (2, 10, 4)
    stats = tree["sample_stats"].to_dataset()
    assert {"acceptance_rate", "energy_error", "step_size", "diverging", "n_steps", "gradient_evaluations", "time",
            "lp", "accepted"} <= set(stats.data_vars)
    assert json.loads(tree.attrs["settings"])["num_warmup"] == 20
    with pytest.raises(InvalidArgumentError, match="no stored draw after warm-up"):
        to_datatree(_chains(draws[:, :0], warmup=20))


@pytest.mark.mpi
def test_netcdf_round_trip_and_trace_plot(comm, tmp_path_factory):
    directory = _shared_dir(comm, tmp_path_factory)
    chains = _chains(np.random.default_rng(4).standard_normal((2, 50, 3)), warmup=10)
    path = write_netcdf(comm, chains, directory / "chains.nc")
    png = trace_plot(comm, chains, directory / "trace.png", indices=(0, 2))
    comm.Barrier()
    back = xr.open_datatree(path)
    assert np.array_equal(back["posterior"]["q"].values, chains.draws()["control"])
    assert np.array_equal(back["sample_stats"]["diverging"].values, chains.draw_stats()["diverging"])
    assert float(arviz.rhat(back)["q"].values[0]) == float(arviz.rhat(to_datatree(chains))["q"].values[0])
    back.close()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in directory.iterdir()) == ["chains.nc", "trace.png"]  # no temporaries left


@pytest.mark.mpi
def test_posterior_fields_are_the_pointwise_mean_and_std(comm, tmp_path_factory):
    V = fem.functionspace(mesh.create_unit_square(comm, 4, 4), ("Lagrange", 1))
    space = FunctionVectors(ControlSpace(V))
    draws = np.random.default_rng(5).standard_normal((2, 40, space.size)) * np.linspace(0.5, 2.0, space.size)
    chains = _chains(draws)
    mean, std = posterior_fields(chains, space)
    assert np.allclose(space.to_array(mean.x.petsc_vec), draws.mean(axis=(0, 1)), rtol=0, atol=1e-14)
    assert np.allclose(space.to_array(std.x.petsc_vec), draws.reshape(-1, space.size).std(axis=0, ddof=1))
    assert mean.name == "posterior_mean" and std.name == "posterior_std"
    path = write_posterior_fields(chains, space, _shared_dir(comm, tmp_path_factory) / "posterior.bp")
    comm.Barrier()
    assert path.is_dir()
    with pytest.raises(InvalidArgumentError, match="FunctionVectors"):
        posterior_fields(chains, ArraySpace(space.size, comm))


def test_summary_of_a_real_run():
    def build(comm):
        misfit = LinearMisfit.from_matrix(np.array([[1.0, 0.4], [0.0, 1.0]]), [0.2, -0.1], 0.4, comm)
        return Posterior(misfit, GaussianPrior(misfit.space, std=1.0))

    chains = sample(build, InfiniteHMC(4), num_warmup=100, num_draws=300, num_chains=2, seed=9, comm=MPI.COMM_SELF)
    s = summarize(chains)
    assert np.all(s.gradient_evaluations == 1200) and np.all(s.time > 0) and np.all(s.divergences == 0)
    assert np.all(np.isfinite(s.ess_per_gradient["q"].values)) and float(s.rhat["q"].max()) < 1.05
