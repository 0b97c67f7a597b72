r"""The rate-matrix problem of a run file (``problem.kind = "rate_matrix"``; docs/theory.md §4.5).

A continuous-time Markov chain on ``problem.states`` :math:`= d` states with generator :math:`Q(\theta)`,
:math:`\theta_{ij} = \log q_{ij}` (:math:`i \ne j`, row-major: :math:`d(d-1)` log-rates), started from
:math:`p_0` (``problem.p0``, default the first state), is observed at ``problem.times`` :math:`t_k`: at each
time the states of ``problem.counts_per_time`` independent copies are counted, :math:`y_k \sim
\mathrm{Multinomial}(N, p_0^Te^{t_kQ})` (:class:`~sensitivity.estimation.MultinomialRateMisfit`). The prior is
Gaussian on :math:`\theta` (``prior.mean``, ``prior.std``: numbers or one per log-rate).

Data: synthetic (``data.seed``) at the true log-rates ``problem.true_log_rates``, or, without them, at a draw
of the prior with the generator ``numpy.random.default_rng(problem.truth_seed)`` (default seed 0); or the array
``counts`` of shape (K, d) of the ``.npz`` or ``.h5``/``.hdf5`` file ``data.file`` (``problem.true_log_rates``
then optional, for the report only).

Forces (``sampler.force``): :class:`~sensitivity.estimation.RateForce`'s ``"exact"``, ``"first order"`` and
``"affine"``. The misfit has no Hessian action, so ``map.method = "nls"``, ``[laplace]`` and
``sampler.force = "laplace"`` are refused.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.posterior import Posterior
from sensitivity.estimation.prior import GaussianPrior
from sensitivity.estimation.rates import RATE_FORCE_KINDS, MultinomialRateMisfit, RateForce
from sensitivity.estimation.runs.config import (
    REQUIRED,
    Key,
    Problem,
    RunConfig,
    integer_at_least,
    one_of,
    read_data_array,
    optional,
    real_list,
    register_problem,
)
from sensitivity.parallel import run_on_root

import numpy as np
from mpi4py import MPI

__all__ = ["RateMatrixProblem"]


@register_problem
class RateMatrixProblem(Problem):
    """Log-rates of a rate matrix from multinomial state counts (module docstring)."""

    kind = "rate_matrix"
    keys: ClassVar[dict[str, Key]] = {
        "states": Key(REQUIRED, integer_at_least(2), "the number of states d >= 2"),
        "times": Key(REQUIRED, real_list(positive_entries=True), "observation times (positive)"),
        "counts_per_time": Key(200, integer_at_least(1), "copies counted per time (synthetic data)"),
        "true_log_rates": Key(None, optional(real_list()), "the d(d-1) true log-rates, row-major off-diagonal"),
        "truth_seed": Key(None, optional(integer_at_least(0)), "seed of the true log-rates drawn from the prior "
                                                               "(default 0, without true_log_rates)"),
        "p0": Key(None, optional(real_list()), "the start distribution (default the first state)"),
        "frechet": Key("scipy", one_of("scipy", "block", "eig", "series"), "the Frechet method of the exact force"),
    }
    has_hessian = False
    forces = RATE_FORCE_KINDS

    def __init__(self, d: int, times: np.ndarray, p0: np.ndarray, counts: np.ndarray, mean: np.ndarray,
                 std: np.ndarray, force: str, frechet: str, truth: np.ndarray | None, source: str):
        self.d, self.times, self.p0, self.counts = d, times, p0, counts
        self.mean, self.std, self.force, self.frechet = mean, std, force, frechet
        self.size = d * (d - 1)
        self.truth, self.source = truth, source

    @classmethod
    def from_config(cls, config: RunConfig, comm: MPI.Comm) -> RateMatrixProblem:
        v, given = config.values, config.given
        p, data = v["problem"], v["data"]
        d = p["states"]
        n = d * (d - 1)
        where = f"the rate_matrix problem with problem.states = {d} has {n} log-rates"

        def per_parameter(section: str, key: str) -> np.ndarray:
            value = v[section][key]
            if isinstance(value, list):
                if len(value) != n:
                    raise InvalidArgumentError(f"{section}.{key} has {len(value)} entries, but {where}")
                return np.array(value)
            return np.full(n, float(value))

        mean, std = per_parameter("prior", "mean"), per_parameter("prior", "std")
        times = np.array(p["times"])
        if p["p0"] is None:
            p0 = np.zeros(d)
            p0[0] = 1.0
        else:
            p0 = np.array(p["p0"])
            if p0.size != d or np.any(p0 < 0) or abs(p0.sum() - 1.0) > 1e-10:
                raise InvalidArgumentError(f"problem.p0 must be a probability vector of problem.states = {d} "
                                           f"entries, got {p['p0']!r}")
        truth = None
        if p["true_log_rates"] is not None:
            if p["truth_seed"] is not None:
                raise InvalidArgumentError(f"problem.truth_seed = {p['truth_seed']!r} and problem.true_log_rates: "
                                           "give at most one of them")
            truth = per_parameter("problem", "true_log_rates")
            if np.max(truth) > 200:
                raise InvalidArgumentError(f"problem.true_log_rates gives an infinite rate: max {np.max(truth)!r}")
        if data["synthetic"]:
            if truth is None:
                seed = 0 if p["truth_seed"] is None else p["truth_seed"]
                p["truth_seed"] = seed
                truth = mean + std * np.random.default_rng(seed).standard_normal(n)
            rng = np.random.default_rng(data["seed"])
            counts = MultinomialRateMisfit.synthetic(truth, p0, times, p["counts_per_time"], rng,
                                                     MPI.COMM_SELF).counts
            source = f"synthetic (data.seed = {data['seed']})"
        else:
            if p["truth_seed"] is not None:
                raise InvalidArgumentError(f"problem.truth_seed = {p['truth_seed']!r} is for synthetic data, not "
                                           "data.file")
            if "counts_per_time" in given["problem"]:
                raise InvalidArgumentError(f"problem.counts_per_time = {p['counts_per_time']!r} is for synthetic "
                                           "data, not data.file")
            counts = comm.bcast(run_on_root(comm, lambda: read_data_array(data["file"], "counts")), root=0)
            label = f"data.file = {data['file']!r}"
            if counts.shape != (times.size, d):
                raise InvalidArgumentError(f"{label}: counts has shape {counts.shape}, expected ({times.size}, {d}) "
                                           "(len(problem.times), problem.states)")
            if not np.all(np.isfinite(counts)) or np.any(counts < 0):
                raise InvalidArgumentError(f"{label}: counts must be finite and non-negative")
            source = data["file"]
        problem = cls(d, times, p0, counts, mean, std, v["sampler"]["force"], p["frechet"], truth, source)
        # every entry is checked: build the misfit once (same data on every rank), as the run will
        MultinomialRateMisfit(p0, times, counts, comm, method=problem.frechet)
        return problem

    def build(self, comm: MPI.Comm) -> Posterior:
        misfit = MultinomialRateMisfit(self.p0, self.times, self.counts, comm, method=self.frechet)
        prior = GaussianPrior(misfit.space, self.mean, std=self.std)
        return Posterior(misfit, prior, None if self.force == "exact" else RateForce(misfit, self.force))

    def description(self) -> str:
        return (f"rate_matrix: {self.d} states, {self.size} log-rates, {self.times.size} times, "
                f"{int(self.counts.sum())} counts ({self.source})")

    def parameter_names(self) -> list[str]:
        return [f"log q[{i},{j}]" for i in range(self.d) for j in range(self.d) if i != j]

    def report(self) -> dict[str, Any]:
        return {"kind": self.kind, "states": self.d, "parameters": self.size, "parameter_names": self.parameter_names(),
                "times": self.times.tolist(), "p0": self.p0.tolist(), "counts": self.counts.tolist(),
                "data": self.source, "truth": None if self.truth is None else self.truth.tolist()}
