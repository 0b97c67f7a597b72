r"""Sampling diagnostics through ArviZ, trace plots and posterior mean/std fields (docs/theory.md §4.7).

- :func:`to_datatree` exports :class:`~sensitivity.estimation.chains.Chains` to an ArviZ ``xarray.DataTree``
  (``arviz.from_dict``): the group ``posterior`` holds the stored draws after warm-up (the control as ``q``
  with dimension ``parameter`` in :meth:`~sensitivity.estimation.vectors.ParameterSpace.to_array` order, and
  the summaries), ``sample_stats`` their statistics (``acceptance_rate``, ``energy_error``, ``step_size``,
  ``diverging``, ``n_steps``, ``gradient_evaluations``, ``time``, ``lp``, ``accepted``), and with stored
  warm-up draws ``warmup_posterior`` and ``warmup_sample_stats``; the run's settings are an attribute of the
  root. :func:`write_netcdf` writes it as one netCDF-4 file (h5netcdf engine), atomically, from rank 0.
- :func:`summarize` computes, **by ArviZ** (``arviz.rhat``, ``arviz.ess``, ``arviz.mcse``): the rank-normalized
  split :math:`\hat R` (Vehtari et al. 2021), bulk and tail ESS (the smaller ESS of the 5% and 95% quantiles, as
  in that paper and Stan: ArviZ's own default uses its 89% interval), the MCSE of the mean and of the standard
  deviation, and from them the bulk ESS per second of sampling and per force (gradient) evaluation, using the
  wall time and force evaluations of *every* iteration after warm-up (thinned ones included).
- :func:`trace_plot` draws traces and histograms of a few coordinates and summaries, :func:`pair_plot` the
  pairwise scatter of a few coordinates per chain (:func:`sensitivity.io.new_figure`, no pyplot), and :func:`write_posterior_fields` the pointwise posterior
  mean and standard deviation of a field control as Functions in a VTX file
  (:class:`sensitivity.fem.FieldSeries`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.chains import Chains
from sensitivity.io import atomic_write, new_figure, save_figure
from sensitivity.parallel import run_on_root

__all__ = ["TAIL", "ChainSummary", "pair_plot", "posterior_fields", "summarize", "to_datatree", "trace_plot",
           "write_netcdf", "write_posterior_fields"]

#: The quantiles of the tail ESS (Vehtari et al. 2021).
TAIL = (0.05, 0.95)


def _check_chains(chains: Any) -> Chains:
    if not isinstance(chains, Chains):
        raise InvalidArgumentError(f"chains must be a Chains (from sample or read_chains), got {type(chains).__name__}")
    if not np.any(chains.stored >= chains.num_warmup):
        raise InvalidArgumentError("the chains hold no stored draw after warm-up")
    return chains


def to_datatree(chains: Chains, name: str = "q"):
    """The chains as an ArviZ ``xarray.DataTree`` (module docstring)."""
    import arviz

    chains = _check_chains(chains)
    groups, dims = {}, {name: ["parameter"]}
    for prefix, warmup in (("", False), ("warmup_", True)):
        draws = chains.draws(warmup)
        if not any(v.shape[1] for v in draws.values()):
            continue
        posterior = {(name if key == "control" else key): value for key, value in draws.items()}
        groups[prefix + "posterior"] = posterior
        groups[prefix + "sample_stats"] = chains.draw_stats(warmup)
    coords = {"parameter": np.arange(int(chains.settings["parameters"]))}
    settings = json.dumps(chains.settings, sort_keys=True)
    return arviz.from_dict(groups, dims=dims, coords=coords, save_warmup=True, attrs={"/": {"settings": settings}})


def write_netcdf(comm: MPI.Comm, tree, path: str | os.PathLike) -> Path:
    """Write a DataTree (or :class:`Chains`, exported by :func:`to_datatree`) as netCDF from rank 0, atomically
    (collective)."""
    path = Path(path)
    if comm.rank == 0 and isinstance(tree, Chains):
        tree = to_datatree(tree)
    run_on_root(comm, lambda: atomic_write(path, lambda tmp: tree.to_netcdf(tmp, engine="h5netcdf")))
    return path


@dataclass(frozen=True)
class ChainSummary:
    r"""Diagnostics of a run (module docstring), each an ``xarray.Dataset`` with one variable per posterior variable.

    Attributes
    ----------
    mean, sd, mcse_mean, mcse_sd, ess_bulk, ess_tail, rhat, ess_per_second, ess_per_gradient : xarray.Dataset
        ``ess_per_gradient`` is NaN for kernels without forces (pCN).
    acceptance_rate : numpy.ndarray
        Mean acceptance statistic after warm-up, per chain.
    step_size : numpy.ndarray
        The frozen step size per chain.
    divergences, gradient_evaluations : numpy.ndarray of int
        Per chain, after warm-up.
    time : numpy.ndarray
        Wall time of sampling after warm-up per chain (s).
    """

    mean: Any
    sd: Any
    mcse_mean: Any
    mcse_sd: Any
    ess_bulk: Any
    ess_tail: Any
    rhat: Any
    ess_per_second: Any
    ess_per_gradient: Any
    acceptance_rate: np.ndarray
    step_size: np.ndarray
    divergences: np.ndarray
    gradient_evaluations: np.ndarray
    time: np.ndarray

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers: ``{statistic: {variable: list}}`` and the per-chain arrays as lists (for JSON reports)."""
        out: dict[str, Any] = {}
        for key in ("mean", "sd", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "rhat", "ess_per_second",
                    "ess_per_gradient"):
            out[key] = {var: np.asarray(value).tolist() for var, value in getattr(self, key).data_vars.items()}
        for key in ("acceptance_rate", "step_size", "divergences", "gradient_evaluations", "time"):
            out[key] = np.asarray(getattr(self, key)).tolist()
        return out


def summarize(chains: Chains, name: str = "q") -> ChainSummary:
    """Diagnostics by ArviZ of the draws after warm-up (module docstring; not collective)."""
    import arviz

    tree = to_datatree(chains, name)
    posterior = tree["posterior"].to_dataset()
    sample_dims = ("chain", "draw")

    def dataset(result):
        return result.to_dataset() if hasattr(result, "to_dataset") else result

    totals = chains.totals()
    time, grads = float(totals["time"].sum()), float(totals["gradient_evaluations"].sum())
    ess_bulk = dataset(arviz.ess(tree, method="bulk"))
    last = chains.stats["step_size"][:, -1]
    return ChainSummary(
        mean=posterior.mean(sample_dims), sd=posterior.std(sample_dims, ddof=1),
        mcse_mean=dataset(arviz.mcse(tree, method="mean")), mcse_sd=dataset(arviz.mcse(tree, method="sd")),
        ess_bulk=ess_bulk, ess_tail=dataset(arviz.ess(tree, method="tail", prob=TAIL)), rhat=dataset(arviz.rhat(tree)),
        ess_per_second=ess_bulk / time if time > 0 else ess_bulk * np.nan,
        ess_per_gradient=ess_bulk / grads if grads > 0 else ess_bulk * np.nan,
        acceptance_rate=totals["acceptance_rate"], step_size=last, divergences=totals["divergences"],
        gradient_evaluations=totals["gradient_evaluations"], time=totals["time"])


def trace_plot(comm: MPI.Comm, chains: Chains, path: str | os.PathLike, *, indices=(0,), summaries: bool = True,
               name: str = "q") -> Path:
    """Traces (per chain) and histograms of the control's coordinates ``indices`` and of the summaries, as one
    figure saved from rank 0 (collective)."""
    chains = _check_chains(chains)
    draws = chains.draws()
    series = [(f"{name}[{i}]", draws["control"][:, :, i]) for i in indices] if "control" in draws else []
    if summaries:
        for key, value in draws.items():
            if key != "control":
                flat = value.reshape(value.shape[0], value.shape[1], -1)
                series += [(key if flat.shape[2] == 1 else f"{key}[{j}]", flat[:, :, j]) for j in range(flat.shape[2])]
    if not series:
        raise InvalidArgumentError("nothing to plot: give indices of the control or store summaries")
    fig = None
    if comm.rank == 0:
        fig = new_figure(figsize=(10, 2.2 * len(series)), layout="constrained")
        axes = np.atleast_2d(fig.subplots(len(series), 2, width_ratios=[3, 1], squeeze=False))
        for (label, values), (trace, hist) in zip(series, axes):
            for k, chain in enumerate(values):
                trace.plot(chains.stored[chains.stored >= chains.num_warmup], chain, lw=0.6, label=f"chain {k}")
                hist.hist(chain, bins=40, histtype="step", density=True)
            trace.set_ylabel(label)
        axes[-1, 0].set_xlabel("iteration")
        axes[0, 0].legend(loc="upper right", fontsize="small")
        fig.suptitle(f"{chains.settings['sampler']['name']}: {chains.num_chains} chains")
    return save_figure(comm, fig, path, dpi=100)


def pair_plot(comm: MPI.Comm, chains: Chains, path: str | os.PathLike, *, indices=(0, 1),
              labels: Any | None = None) -> Path:
    """The draws of the control's coordinates ``indices`` (at least two) after warm-up against each other, one
    colour per chain, with their histograms on the diagonal; saved from rank 0 (collective)."""
    chains = _check_chains(chains)
    indices = [int(i) for i in indices]
    draws = chains.draws().get("control")
    if draws is None or len(indices) < 2 or not all(0 <= i < draws.shape[2] for i in indices):
        raise InvalidArgumentError(f"a pair plot needs at least two stored coordinates, got indices {indices}")
    labels = [f"q[{i}]" for i in indices] if labels is None else [str(label) for label in labels]
    fig = None
    if comm.rank == 0:
        m = len(indices)
        fig = new_figure(figsize=(2.2 * m, 2.2 * m), layout="constrained")
        axes = fig.subplots(m, m, squeeze=False)
        for r, i in enumerate(indices):
            for c, j in enumerate(indices):
                ax = axes[r, c]
                if c > r:
                    ax.set_visible(False)
                    continue
                for chain in draws:
                    if r == c:
                        ax.hist(chain[:, i], bins=30, histtype="step", density=True)
                    else:
                        ax.plot(chain[:, j], chain[:, i], ".", ms=1.5, alpha=0.4)
                ax.tick_params(labelsize=6)
                if r == m - 1:
                    ax.set_xlabel(labels[c], fontsize=8)
                if c == 0 and r > 0:
                    ax.set_ylabel(labels[r], fontsize=8)
        fig.suptitle(f"{chains.settings['sampler']['name']}: {chains.num_chains} chains", fontsize=9)
    return save_figure(comm, fig, path, dpi=100)


def posterior_fields(chains: Chains, space) -> tuple[Any, Any]:
    """The pointwise posterior mean and standard deviation of a field control, as the Functions ``posterior_mean``
    and ``posterior_std`` of its control space (the same chains on every rank; collective on the space)."""
    from sensitivity.estimation.vectors import FunctionVectors

    chains = _check_chains(chains)
    if not isinstance(space, FunctionVectors):
        raise InvalidArgumentError(f"space must be the FunctionVectors of the control, got {type(space).__name__}")
    draws = chains.draws().get("control")
    if draws is None or draws.shape[2] != space.size:
        raise InvalidArgumentError(f"the chains hold no stored control of {space.size} dofs (store_control=True)")
    flat = draws.reshape(-1, space.size)
    functions = []
    for label, values in (("posterior_mean", flat.mean(axis=0)), ("posterior_std", flat.std(axis=0, ddof=1))):
        vec = space.from_array(values)
        functions.append(space.control_space.function(vec, label))
        space.destroy(vec)
    return functions[0], functions[1]


def write_posterior_fields(chains: Chains, space, path: str | os.PathLike) -> Path:
    """:func:`posterior_fields` written to the VTX ``.bp`` directory ``path`` for ParaView (collective)."""
    from sensitivity.fem import FieldSeries

    with FieldSeries(path, list(posterior_fields(chains, space))) as series:
        series.write(0.0)
    return Path(path)
