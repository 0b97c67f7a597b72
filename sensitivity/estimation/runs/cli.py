r"""``sensitivity-estimate``: run an estimation described by a TOML run file, under MPI, resumable.

Run as ``mpirun -n P sensitivity-estimate RUN.toml [--resume] [--quiet]``.

Steps, all ranks together (rank 0 alone prints and writes):

1. read and validate the run file (:mod:`~sensitivity.estimation.runs.config`; every error names the entry
   ``section.key`` and its value, on every rank, before anything is written), then check the output directory
   (:func:`sensitivity.io.prepare_output_dir`): a directory that holds a run (``config.json``) needs
   ``--resume``, and ``--resume`` needs the same resolved configuration;
2. write the resolved configuration, ``config.json``;
3. with ``map.enabled``, the MAP point by :func:`~sensitivity.estimation.find_map` from the prior mean and
   ``map.starts - 1`` points about it (``map.spread`` times prior draws), the lowest minimum (``map.json``, with
   every start's minimum; a resumed run reuses it); with ``sampler.initial = "map modes"`` the chains start in
   turn from the distinct minima within ``map.mode_gap`` of the lowest and their images under the problem's
   exact symmetries (:func:`~sensitivity.estimation.runs.steps.map_modes`);
4. with ``laplace.enabled`` (problems whose misfit has a Hessian action), the Laplace approximation there
   (and with ``sampler.mass = "laplace"`` the HMC mass matrix: the inverse of its dense covariance);
5. the chains, by :func:`~sensitivity.estimation.sample` with ``output=<directory>/chains``: committed every
   ``sampler.chunk_size`` iterations, so a run killed at any point continues with ``--resume`` and gives the
   chains an uninterrupted run would have given (bit for bit on the same number of ranks per chain);
6. ``posterior.nc`` (ArviZ DataTree as netCDF, :func:`~sensitivity.estimation.write_netcdf`), ``trace.png``
   (:func:`~sensitivity.estimation.trace_plot`) and last ``summary.json`` (acceptance, bulk and tail ESS,
   :math:`\hat R`, ESS per second and per gradient, the MAP result), each written atomically.

A finished run (its ``summary.json`` exists) given ``--resume`` again exits 0 and does nothing. Errors in the
input (run file, data file, output directory, stored run) print one line ``error: ...`` on rank 0 and exit with
status 2 on every rank (:func:`sensitivity.parallel.exit_on_error`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import sensitivity
from sensitivity.errors import InvalidArgumentError, SensitivityError
from sensitivity.estimation.chains import read_chains
from sensitivity.estimation.diagnostics import pair_plot, summarize, trace_plot, write_netcdf
from sensitivity.estimation.runs import steps
from sensitivity.estimation.runs.config import RunConfig, load_config
from sensitivity.estimation.samplers import Kernel, sample
from sensitivity.io import atomic_write, prepare_output_dir
from sensitivity.parallel import ArgumentParser, exit_on_error, progress_bar, rank0_print, run_on_root

import numpy as np
from mpi4py import MPI

__all__ = ["OUTPUT_FILES", "main", "run"]

PROG = "sensitivity-estimate"
CONFIG, MAP, NETCDF, TRACE, PAIRS, SUMMARY, CHAINS = "config.json", "map.json", "posterior.nc", "trace.png", \
    "pairs.png", "summary.json", "chains"
#: The regular files a run writes into its output directory (besides its problem's, e.g. ``fields.bp``).
OUTPUT_FILES = (CONFIG, MAP, NETCDF, TRACE, PAIRS, SUMMARY)


def _write_json(comm: MPI.Comm, path: Path, data: Any) -> None:
    run_on_root(comm, lambda: atomic_write(path, lambda tmp: Path(tmp).write_text(
        json.dumps(data, indent=1, allow_nan=True) + "\n", encoding="utf-8")))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidArgumentError(f"{path} cannot be read: {exc}; it is not the file of a run "
                                   "(nothing was changed)") from None


def _differences(stored: dict, given: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(stored) | set(given)):
        a, b = stored.get(key, "<missing>"), given.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} = {b!r} (stored: {a!r})")
    return out


def _comparable(resolved: dict) -> dict:
    """The resolved configuration without the run's location (a moved directory is the same run)."""
    out = json.loads(json.dumps(resolved))
    out["output"].pop("directory", None)
    return out


def _inspect_output(config: RunConfig, resume: bool) -> dict:
    """On rank 0: whether the output directory holds a run, and a finished one (checked against the config)."""
    out = config.output
    stored_path = out / CONFIG
    state = {"exists": stored_path.is_file(), "finished": False, "map": None}
    if not state["exists"]:
        if (out / CHAINS).exists() and any((out / CHAINS).iterdir()) and not resume:
            raise InvalidArgumentError(f"output.directory = {str(out)!r} already holds chains; pass --resume to "
                                       "continue them or use another output directory (nothing was changed)")
        return state
    if not resume:
        raise InvalidArgumentError(f"output.directory = {str(out)!r} already holds a run ({CONFIG}); pass --resume "
                                   "to continue it or use another output directory (nothing was changed)")
    stored = _read_json(stored_path)
    if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
        raise InvalidArgumentError(f"{stored_path} is not the configuration of a run (nothing was changed)")
    diff = _differences(_comparable(stored["config"]), _comparable(config.resolved()))
    if diff:
        raise InvalidArgumentError(f"--resume: {config.path} differs from the run in {out}: {'; '.join(diff[:4])}"
                                   f"{' ...' if len(diff) > 4 else ''} (resume with the same run file, or use another "
                                   "output directory; nothing was changed)")
    state["finished"] = (out / SUMMARY).is_file()
    if (out / MAP).is_file():
        state["map"] = _read_json(out / MAP)
    return state


class _Progress(Kernel):
    """A kernel that counts its steps on a progress bar (the wrapped kernel's settings and transitions)."""

    def __init__(self, kernel: Kernel, bar):
        self.kernel, self.bar = kernel, bar
        for name in ("name", "uses_force", "target_accept", "max_step_size", "jitter"):
            setattr(self, name, getattr(kernel, name))

    def settings(self):
        return self.kernel.settings()

    def check(self, posterior):
        self.kernel.check(posterior)

    def init(self, posterior, q):
        return self.kernel.init(posterior, q)

    def step(self, posterior, state, rng, step_size):
        with np.errstate(invalid="ignore", over="ignore"):  # a divergent trajectory: rejected, and counted
            out = self.kernel.step(posterior, state, rng, step_size)
        if self.bar is not None:
            self.bar.update(1)
        return out


def _committed(directory: Path) -> int:
    """Iterations committed by every chain of a run's chain directory (0 without any; not collective): where the
    progress bar of a resumed run starts."""
    try:
        return int(read_chains(directory).stats["lp"].shape[1])
    except (SensitivityError, OSError):
        return 0


def _groups(comm: MPI.Comm, sampler: dict) -> int:
    """The number of chain groups; ``sampler.ranks_per_chain`` checked against the ranks."""
    per = sampler["ranks_per_chain"]
    if per is None:
        return 1
    if per > comm.size or comm.size % per:
        raise InvalidArgumentError(f"sampler.ranks_per_chain = {per} does not divide the {comm.size} MPI ranks")
    if comm.size // per > sampler["num_chains"]:
        raise InvalidArgumentError(f"sampler.ranks_per_chain = {per} makes {comm.size // per} chain groups on "
                                   f"{comm.size} ranks for sampler.num_chains = {sampler['num_chains']}: give at "
                                   "least one chain per group")
    return comm.size // per


def _summary(config: RunConfig, chains, map_record, laplace_record, seconds: dict, nprocs: int) -> dict:
    """The run's summary (rank 0; ArviZ diagnostics of the draws after warm-up)."""
    s = summarize(chains)
    d = s.as_dict()
    problem = config.problem

    def q(stat):
        return np.asarray(getattr(s, stat)["q"].values, dtype=float)

    grads = np.asarray(s.gradient_evaluations)
    out = {
        "run_file": str(config.path), "nprocs": nprocs, "problem": problem.report(),
        "sampler": chains.settings, "num_chains": chains.num_chains,
        "num_draws_stored": int(chains.draws()["control"].shape[1]),
        "acceptance_rate": d["acceptance_rate"], "step_size": d["step_size"], "divergences": d["divergences"],
        "gradient_evaluations": d["gradient_evaluations"],
        "ess_bulk": q("ess_bulk").tolist(), "ess_tail": q("ess_tail").tolist(), "rhat": q("rhat").tolist(),
        "ess_per_second": q("ess_per_second").tolist(), "ess_per_gradient": q("ess_per_gradient").tolist(),
        "min_ess_bulk": float(q("ess_bulk").min()), "min_ess_tail": float(q("ess_tail").min()),
        "max_rhat": float(q("rhat").max()), "min_ess_per_second": float(q("ess_per_second").min()),
        "min_ess_per_gradient": float(q("ess_per_gradient").min()) if grads.sum() > 0 else None,
        "mean": q("mean").tolist(), "sd": q("sd").tolist(), "mcse_mean": q("mcse_mean").tolist(),
        "sampling_time": d["time"], "map": map_record, "laplace": laplace_record, "seconds": seconds,
    }
    report = problem.chain_report(chains, None if map_record is None else np.asarray(map_record["point"]))
    if report is not None:
        out["chains_report"] = report
    if problem.truth is not None:
        z = (q("mean") - problem.truth) / q("sd")
        out["truth"] = problem.truth.tolist()
        out["truth_z"] = z.tolist()
    return out


def run(path, *, resume: bool = False, quiet: bool = False, comm: MPI.Comm | None = None) -> dict | None:
    """Run the estimation of the run file ``path`` (module docstring; collective); return the summary (on every
    rank), or ``None`` for a finished run given ``resume``."""
    comm = MPI.COMM_WORLD if comm is None else comm
    started = time.perf_counter()
    say = (lambda *a: None) if quiet else (lambda *a: rank0_print(comm, *a))
    config = load_config(path, comm)
    problem, v = config.problem, config.values
    sampler = v["sampler"]
    groups = _groups(comm, sampler)
    out = prepare_output_dir(comm, config.output, what=f"output.directory = {str(config.output)!r}:",
                             files=OUTPUT_FILES, create=False)
    state = comm.bcast(run_on_root(comm, lambda: _inspect_output(config, resume)), root=0)
    if state["finished"]:
        say(f"{PROG}: nothing to do: {out} holds a finished run ({SUMMARY}); start without --resume in another "
            "directory to run anew")
        return None
    prepare_output_dir(comm, out, what=f"output.directory = {str(out)!r}:", files=OUTPUT_FILES)
    if not state["exists"]:
        _write_json(comm, out / CONFIG, {"run_file": str(config.path), "sensitivity_version": sensitivity.__version__,
                                         "config": config.resolved()})
    say(f"{PROG}: {problem.description()}; {comm.size} rank(s){', resuming' if resume else ''}; output {out}")

    # ---- MAP
    map_record, map_point, seconds = None, None, {}
    if v["map"]["enabled"]:
        if state["map"] is not None:
            map_record = state["map"]
            say(f"  MAP: reused from {out / MAP}")
        else:
            map_record = steps.find_map_point(config, comm)
            _write_json(comm, out / MAP, map_record)
        map_point = np.asarray(map_record["point"], dtype=float)
        seconds["map"] = map_record["seconds"]
        say(f"  MAP: {map_record['iterations']} iterations ({map_record['reason']}), U = {map_record['value']:.6g}, "
            f"|g| = {map_record['gradient_norm']:.2e}"
            + (f", |q_MAP - truth| = {map_record['error_to_truth']:.3g}" if "error_to_truth" in map_record else ""))

    # ---- Laplace (problems whose misfit has a Hessian action)
    laplace_record, mass = None, None
    if v["laplace"]["enabled"]:
        laplace_record, mass = steps.laplace_step(config, comm, map_point)
        seconds["laplace"] = laplace_record.pop("seconds")  # timings in summary.json "seconds" only
        say(f"  Laplace: rank {laplace_record['rank']}, largest eigenvalue "
            f"{max(laplace_record['eigenvalues'], default=float('nan')):.3g}")

    # ---- the chains
    initial = steps.initial_points(config, map_record)
    if sampler["initial"] == "map modes":
        say(f"  chains start from {len(np.unique(initial, axis=0))} MAP mode(s) in turn")
    per_group = len(range(0, sampler["num_chains"], groups))
    bar = progress_bar(comm, per_group * (sampler["num_warmup"] + sampler["num_draws"]), desc="sampling",
                       disable=quiet)
    if resume and not quiet and comm.rank == 0:
        bar.update(per_group * _committed(out / CHAINS))
    t0 = time.perf_counter()
    try:
        chains = sample(steps.build_posterior(config, map_point), _Progress(steps.kernel(config, mass), bar),
                        initial=initial, comm=comm, output=out / CHAINS, resume=resume,
                        **steps.sample_arguments(config))
    finally:
        bar.close()
    seconds["sampling"] = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)

    # ---- outputs: the netCDF file, the trace plot, and last the summary (a finished run has one)
    write_netcdf(comm, chains, out / NETCDF)
    shown = tuple(range(min(problem.size, v["output"]["trace_parameters"])))
    trace_plot(comm, chains, out / TRACE, indices=shown)
    written = [NETCDF, TRACE]
    if len(shown) >= 2:
        names = problem.parameter_names()
        pair_plot(comm, chains, out / PAIRS, indices=shown, labels=[names[i] for i in shown])
        written.append(PAIRS)
    written += problem.write_outputs(comm, chains, out, map_point)
    seconds["total"] = comm.allreduce(time.perf_counter() - started, op=MPI.MAX)
    summary = comm.bcast(run_on_root(comm, lambda: _summary(config, chains, map_record, laplace_record, seconds,
                                                            comm.size)), root=0)
    _write_json(comm, out / SUMMARY, summary)
    say(f"  {summary['num_chains']} chains x {sampler['num_draws']} draws: acceptance "
        f"{np.round(summary['acceptance_rate'], 3).tolist()}, min ESS bulk {summary['min_ess_bulk']:.0f}, tail "
        f"{summary['min_ess_tail']:.0f}, max R-hat {summary['max_rhat']:.3f}, min ESS/s "
        f"{summary['min_ess_per_second']:.3g}, {seconds['sampling']:.1f} s sampling")
    written = [CONFIG, f"{CHAINS}/", *written, SUMMARY] + ([MAP] if map_record else [])
    say(f"wrote {out}/{{{', '.join(written)}}}")
    return summary


def main(argv=None) -> int:
    """The console entry point (``sensitivity-estimate``): the exit status (0, or 2 after an input error)."""
    comm = MPI.COMM_WORLD
    parser = ArgumentParser(prog=PROG, description="Run the estimation described by a TOML run file (MAP, Laplace, "
                                                   "MCMC chains with resume, diagnostics).")
    parser.add_argument("run_file", metavar="RUN.toml", help="the run file")
    parser.add_argument("--resume", action="store_true", help="continue the run in its output directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no messages (errors still)")
    args = parser.parse_args(argv)
    return exit_on_error(lambda: run(args.run_file, resume=args.resume, quiet=args.quiet, comm=comm), comm)


if __name__ == "__main__":
    sys.exit(main())
