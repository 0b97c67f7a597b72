r"""Running chains: warm-up with step-size adaptation, several chains on MPI sub-communicators, committed output.

:func:`sample` runs ``num_chains`` chains of one kernel. Chain :math:`k` draws every random number from
``numpy.random.Generator(PCG64(s_k))`` with :math:`s_k` the :math:`k`-th child of
``numpy.random.SeedSequence(seed)`` (independent streams), held in the same state on every rank of the
chain's communicator, so the same seed gives the same chain on 1, 2 or 3 ranks to solver round-off.

With ``ranks_per_chain`` :math:`r < P` the :math:`P` ranks are split (``comm.Split``) into :math:`P/r` groups of
consecutive ranks; group :math:`g` builds its own posterior with ``build(sub_comm)`` and runs chains
:math:`g, g + P/r, \dots` one after the other. Warm-up adapts the step size by dual averaging
(:mod:`~sensitivity.estimation.samplers.adaptation`), frozen afterwards.

Before any work (and before anything is written) every setting is checked on every rank, the posterior is
built and evaluated once at the prior mean (value, force and summaries: a misfit that does not match the
control fails there), and with ``output`` the directory is checked (:func:`sensitivity.io.prepare_output_dir`)
and, on ``resume``, its chain files and stored settings are validated; any failure is an
:class:`~sensitivity.errors.InvalidArgumentError` on every rank. With ``output`` each chain commits its draws
every ``chunk_size`` iterations (:mod:`sensitivity.estimation.chains`); ``resume=True`` continues every chain
from its last commit and gives the chain an uninterrupted run would have given: bit for bit on the same number of
ranks per chain (all but the wall times), to solver round-off on another.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping

import numpy as np
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError, SensitivityError
from sensitivity.estimation.chains import ChainStore, Chains, ChunkBuffer, check_settings, read_manifest, write_manifest
from sensitivity.estimation.posterior import Posterior
from sensitivity.estimation.samplers.adaptation import DualAveraging
from sensitivity.estimation.samplers.base import Kernel, State, evaluate
from sensitivity.io import prepare_output_dir
from sensitivity.parallel import collect_garbage, on_every_rank, run_on_root
from sensitivity.validation import callable_, finite_array, in_range, integer

__all__ = ["sample"]

#: The settings that are known only once the posterior is built.
PROBLEM_KEYS = ("parameters", "space", "prior", "force", "summaries")


def sample(build: Callable[[MPI.Comm], Posterior], kernel: Kernel, *, num_draws: int = 1000, num_warmup: int = 1000,
           num_chains: int = 4, seed: int | None = None, step_size: float = 0.1, target_accept: float | None = None,
           thin: int = 1, chunk_size: int = 100, initial=None, summaries: Mapping[str, Callable] | None = None,
           store_control: bool = True, save_warmup: bool = False, comm: MPI.Comm | None = None,
           ranks_per_chain: int | None = None, output=None, resume: bool = False) -> Chains:
    r"""Run ``num_chains`` chains of ``kernel`` on the posterior that ``build(comm)`` makes (module docstring).

    Parameters
    ----------
    build : callable
        ``build(comm)`` returns the :class:`Posterior` on the communicator it is given (collective on it).
    kernel : Kernel
        :class:`~sensitivity.estimation.samplers.PCN`, ``InfiniteMALA``, ``InfiniteHMC`` or ``HMC``.
    num_draws, num_warmup : int
        Iterations after and during warm-up (``num_warmup=0``: no adaptation, ``step_size`` throughout).
    num_chains : int
    seed : int, optional
        Of the ``SeedSequence``; default fresh entropy (stored, and reused on resume).
    step_size : float
        The initial step size :math:`h_0` (:math:`\beta` for pCN), at most the kernel's ``max_step_size``.
    target_accept : float, optional
        Target of the adaptation in (0, 1); default the kernel's (0.8 HMC, 0.574 MALA, 0.25 pCN).
    thin : int
        Store every ``thin``-th draw (statistics are stored for every iteration).
    chunk_size : int
        Iterations per committed chunk.
    initial : None, "mean" or array_like of shape (n,) or (num_chains, n)
        Start at a prior draw of the chain's generator (default: dispersed starts), the prior mean, a point
        (``to_array`` order), or one point per chain (e.g. the modes a multi-start MAP search found).
    summaries : mapping of str to callable, optional
        ``f(q)`` (collective) → a number or a fixed-shape array, stored with each kept draw: functionals of large
        fields (with ``store_control=False``, only these are stored).
    store_control, save_warmup : bool
        Store the controls; store the (thinned) warm-up draws too.
    comm : mpi4py.MPI.Comm, optional
        Default ``COMM_WORLD``.
    ranks_per_chain : int, optional
        Ranks per chain (default all): ``comm.size`` must be a multiple, with at most ``num_chains`` groups.
    output : path, optional
        Directory of the chain files (:mod:`~sensitivity.estimation.chains`).
    resume : bool
        Continue the chains in ``output`` (or start them if it holds none), with the stored settings (a longer
        run is another setting). Without it, a directory that holds chains is refused.

    Returns
    -------
    Chains
        Every chain, on every rank of ``comm`` (held in memory: store summaries only for large fields).
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    settings, summaries, initial = _settings(build, kernel, locals())
    groups, color = _groups(comm, ranks_per_chain, settings["num_chains"])
    directory, found = None, None
    if output is not None:
        directory = prepare_output_dir(comm, output, what="chain output directory")
        found = comm.bcast(run_on_root(comm, lambda: _inspect(directory, settings, resume)), root=0)
    if settings["seed"] is None:
        settings["seed"] = found[1]["seed"] if found else comm.bcast(np.random.SeedSequence().entropy, root=0)
    sub = comm if groups == 1 else comm.Split(color, comm.rank)
    posterior, problem = on_every_rank(comm, "building the posterior",
                                       lambda: _prepare(build(sub), kernel, sub, summaries, initial))
    settings.update(problem)
    run = None
    if directory is not None:
        run = comm.bcast(run_on_root(comm, lambda: _commit_manifest(directory, settings, found)), root=0)
    seeds = np.random.SeedSequence(settings["seed"]).spawn(settings["num_chains"])

    def run_chains() -> dict[int, list[dict]]:
        out = {}
        for k in range(color, settings["num_chains"], groups):
            store = None if directory is None else ChainStore(directory, k, run)
            start = initial[k] if isinstance(initial, np.ndarray) and initial.ndim == 2 else initial
            out[k] = _ChainRun(posterior, kernel, settings, sub, summaries, start, store).run(seeds[k])
        return out if sub.rank == 0 else {}

    merged: dict[int, list[dict]] = {}
    for part in comm.allgather(on_every_rank(comm, "sampling", run_chains)):
        merged.update(part)
    return Chains.from_chunks(settings, [merged[k] for k in range(settings["num_chains"])])


def _settings(build, kernel, args) -> tuple[dict, dict, object]:
    """The run's settings (JSON-serializable), the summaries and the initial point, validated alike on every rank."""
    callable_(build, "build")
    if not isinstance(kernel, Kernel):
        raise InvalidArgumentError(f"kernel must be a Kernel (PCN, InfiniteMALA, InfiniteHMC, HMC), got "
                                   f"{type(kernel).__name__}")
    step = in_range(args["step_size"], "step_size", 0.0, kernel.max_step_size, low_open=True)
    target = kernel.target_accept if args["target_accept"] is None else args["target_accept"]
    summaries = dict(args["summaries"] or {})
    for name, fn in summaries.items():
        if not isinstance(name, str) or not name.isidentifier() or name == "control":
            raise InvalidArgumentError(f"summary names must be identifiers other than 'control', got {name!r}")
        callable_(fn, f"summaries[{name!r}]")
    initial = args["initial"]
    if isinstance(initial, str):
        if initial != "mean":
            raise InvalidArgumentError(f"initial must be None, 'mean' or an array, got {initial!r}")
        start = "prior mean"
    elif initial is None:
        start = "prior draw"
    else:
        initial = finite_array(initial, "initial")
        if initial.ndim == 2 and initial.shape[0] != args["num_chains"]:
            raise InvalidArgumentError(f"initial has {initial.shape[0]} rows, one per chain: num_chains = "
                                       f"{args['num_chains']!r}")
        if initial.ndim not in (1, 2):
            raise InvalidArgumentError(f"initial must be one point or one per chain, got shape {initial.shape}")
        start = "sha256:" + hashlib.sha256(initial.tobytes()).hexdigest()
    settings = {
        "sampler": kernel.settings(), "num_draws": integer(args["num_draws"], "num_draws", minimum=1),
        "num_warmup": integer(args["num_warmup"], "num_warmup", minimum=0),
        "num_chains": integer(args["num_chains"], "num_chains", minimum=1),
        "seed": None if args["seed"] is None else integer(args["seed"], "seed", minimum=0), "step_size": step,
        "target_accept": in_range(target, "target_accept", 0.0, 1.0, low_open=True, high_open=True),
        "adaptation": {"gamma": DualAveraging.gamma, "t0": DualAveraging.t0, "kappa": DualAveraging.kappa},
        "thin": integer(args["thin"], "thin", minimum=1), "chunk_size": integer(args["chunk_size"], "chunk_size",
                                                                                minimum=1),
        "store_control": bool(args["store_control"]), "save_warmup": bool(args["save_warmup"]), "initial": start,
    }
    if not settings["store_control"] and not summaries:
        raise InvalidArgumentError("store_control=False needs summaries: nothing would be stored")
    return settings, summaries, initial


def _groups(comm: MPI.Comm, ranks_per_chain, num_chains: int) -> tuple[int, int]:
    """``(number of groups, this rank's group)`` for ``ranks_per_chain`` ranks per chain."""
    per = comm.size if ranks_per_chain is None else integer(ranks_per_chain, "ranks_per_chain", minimum=1,
                                                             maximum=comm.size)
    if comm.size % per:
        raise InvalidArgumentError(f"ranks_per_chain={per} does not divide the {comm.size} ranks")
    if comm.size // per > num_chains:
        raise InvalidArgumentError(f"{comm.size} ranks with ranks_per_chain={per} make {comm.size // per} groups for "
                                   f"{num_chains} chains: give at least one chain per group")
    return comm.size // per, comm.rank // per


def _inspect(directory, settings: dict, resume: bool):
    """On rank 0: the stored run ``(id, settings)`` of ``directory``, validated against ``settings``, or ``None``."""
    found = read_manifest(directory)
    if found is None:
        return None
    run, stored = found
    if not resume:
        raise InvalidArgumentError(f"{directory} already holds chains (run {run}); pass resume=True to continue them "
                                   "or use another output directory (nothing was changed)")
    given = dict(settings, seed=stored.get("seed") if settings["seed"] is None else settings["seed"])
    check_settings(directory, stored, given, [k for k in set(stored) | set(given) if k not in PROBLEM_KEYS])
    for k in range(settings["num_chains"]):
        ChainStore(directory, k, run).load(data=False)
    return found


def _commit_manifest(directory, settings: dict, found) -> str:
    """On rank 0: check the problem settings against the stored run, or write the manifest of a new run."""
    if found is not None:
        check_settings(directory, found[1], settings, PROBLEM_KEYS)
        return found[0]
    run = uuid.uuid4().hex
    write_manifest(directory, run, settings)
    return run


def _prepare(posterior, kernel: Kernel, comm: MPI.Comm, summaries: dict, initial) -> tuple[Posterior, dict]:
    """Check the posterior built on ``comm`` and evaluate it (and the summaries) once at the prior mean."""
    if not isinstance(posterior, Posterior):
        raise InvalidArgumentError(f"build(comm) must return a Posterior, got {type(posterior).__name__}")
    space, prior = posterior.space, posterior.prior
    if space.comm.Compare(comm) not in (MPI.IDENT, MPI.CONGRUENT):
        raise InvalidArgumentError("build(comm) must build the posterior on the communicator it is given (its "
                                   "parameters live on another one)")
    kernel.check(posterior)
    if isinstance(initial, np.ndarray) and initial.shape[-1] != space.size:
        raise InvalidArgumentError(f"initial has {initial.shape[-1]} entries per point, the parameters {space.size}")
    try:
        state = evaluate(posterior, space.copy(prior.mean), kernel.uses_force)
        if state.force is not None:
            space.check(state.force, "the force at the prior mean")
        shapes = {name: list(np.shape(np.asarray(fn(state.position), dtype=float))) for name, fn in summaries.items()}
    except SensitivityError:
        raise
    except Exception as exc:
        raise InvalidArgumentError(f"the posterior cannot be evaluated at the prior mean (does the misfit match the "
                                   f"control?): {type(exc).__name__}: {exc}") from exc
    potential = state.potential
    state.release(space)
    if not math.isfinite(potential):
        raise InvalidArgumentError(f"the negative log posterior at the prior mean is {potential!r}")
    return posterior, {"parameters": space.size, "space": type(space).__name__, "prior": type(prior).__name__,
                       "force": posterior.force.name, "summaries": shapes}


class _ChainRun:
    """One chain on the communicator of its posterior: warm-up, sampling, commits, resume."""

    def __init__(self, posterior: Posterior, kernel: Kernel, settings: dict, comm: MPI.Comm, summaries: dict,
                 initial, store: ChainStore | None):
        self.posterior, self.kernel, self.settings, self.comm = posterior, kernel, settings, comm
        self.space = posterior.space
        self.summaries, self.initial, self.store = summaries, initial, store
        # the communicators of the chain's PETSc objects: the chain's, and the posterior's if build(comm) duplicated it
        self.garbage_comms = (comm,) if self.space.comm.Compare(comm) == MPI.IDENT else (comm, self.space.comm)

    def run(self, seed: np.random.SeedSequence) -> list[dict]:
        """The chain's chunks (on the chain's rank 0; empty elsewhere)."""
        s = self.settings
        saved, chunks = None, []
        if self.store is not None:
            loaded = run_on_root(self.comm, lambda: (self.store.prepare(), self.store.load())[1])
            saved = self.comm.bcast(None if loaded is None else loaded[0], root=0)
            chunks = [] if loaded is None else loaded[1]
        if saved is None:
            rng = np.random.Generator(np.random.PCG64(seed))
            adapt = DualAveraging(s["step_size"], s["target_accept"], max_step_size=self.kernel.max_step_size)
            state, iteration, index = self.kernel.init(self.posterior, self._start(rng)), 0, 0
        else:
            rng, adapt, state, iteration, index = self._restore(saved)
        total, warmup = s["num_warmup"] + s["num_draws"], s["num_warmup"]
        size = s["parameters"] if s["store_control"] else None
        buffer = ChunkBuffer(iteration, size, s["summaries"])
        while iteration < total:
            warm = iteration < warmup
            h = adapt.step_size if warm else adapt.final_step_size
            started = time.perf_counter()
            state, stats = self.kernel.step(self.posterior, state, rng, h)
            stats.update(time=time.perf_counter() - started, warmup=warm)
            if warm:
                adapt.update(stats["acceptance_rate"])
            buffer.add(iteration, stats, self._draw(state) if self._keeps(iteration) else None)
            iteration += 1
            if iteration - buffer.start == s["chunk_size"] or iteration == total:
                chunk = buffer.close(iteration)
                self._commit(index, chunk, state, rng, adapt)
                if self.comm.rank == 0:
                    chunks.append(chunk)
                index, buffer = index + 1, ChunkBuffer(iteration, size, s["summaries"])
                collect_garbage(*self.garbage_comms)  # after every chunk, on every rank of the chain
        state.release(self.space)
        return chunks if self.comm.rank == 0 else []

    def _keeps(self, iteration: int) -> bool:
        warmup, thin = self.settings["num_warmup"], self.settings["thin"]
        if iteration < warmup:
            return self.settings["save_warmup"] and iteration % thin == 0
        return (iteration - warmup) % thin == 0

    def _start(self, rng: np.random.Generator):
        prior = self.posterior.prior
        if self.initial is None:
            return prior.sample(rng)
        if isinstance(self.initial, str):
            return self.space.copy(prior.mean)
        return self.space.from_array(self.initial)

    def _draw(self, state: State) -> dict:
        q = state.position
        draw = {name: np.asarray(fn(q), dtype=float) for name, fn in self.summaries.items()}
        if self.settings["store_control"]:
            draw["control"] = self.space.to_array(q)
        return draw

    def _commit(self, index: int, chunk: dict, state: State, rng, adapt: DualAveraging) -> None:
        if self.store is None:
            return
        force = None if state.force is None else self.space.to_array(state.force)
        saved = {"iteration": chunk["stop"], "chunks": index + 1, "position": self.space.to_array(state.position),
                 "force": force, "misfit": state.misfit, "prior_cost": state.prior_cost,
                 "rng": json.dumps(rng.bit_generator.state), "adaptation": json.dumps(adapt.state())}
        run_on_root(self.comm, lambda: self.store.commit(index, chunk, saved))

    def _restore(self, saved: dict):
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = json.loads(saved["rng"])
        adapt = DualAveraging.from_state(json.loads(saved["adaptation"]))
        force = saved["force"]
        if self.kernel.uses_force and force is None:
            raise InvalidArgumentError(f"{self.store.state_path} has no force, which {self.kernel.name} needs")
        state = State(self.space.from_array(saved["position"]), float(saved["misfit"]), float(saved["prior_cost"]),
                      None if force is None else self.space.from_array(force))
        return rng, adapt, state, int(saved["iteration"]), int(saved["chunks"])
