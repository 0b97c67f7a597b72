r"""Markov chains in memory and on disk: committed HDF5 chunks that a SIGKILL cannot corrupt, and exact resume.

Layout of an output directory (written by each chain's rank 0 only, with h5py):

- ``chains.h5`` — the manifest: the run's id and settings (sampler, draws, seed, ...), written once
  when the run starts;
- ``chain-KKK/chunk-NNNNNN.h5`` — iterations ``[start, stop)`` of chain ``KKK``: every statistic of every
  iteration (:data:`STATISTICS`), the iterations whose draw is stored (``stored``: thinning, and warm-up
  draws only if asked), the stored controls (:meth:`~sensitivity.estimation.vectors.ParameterSpace.to_array`,
  optional) and summary functionals;
- ``chain-KKK/state.h5`` — what continues the chain exactly after its last committed chunk: the position
  and the force there (partition-independent arrays), :math:`\Phi` and the prior cost, the step-size
  adaptation state, the random generator's bit-generator state, and the counters.

Each file is written under a temporary name and renamed into place (:func:`sensitivity.io.atomic_write`); a
chunk is committed by writing it and then replacing the state file, which lists the committed chunks. A run
killed at any point leaves either the old or the new state and whole chunk files; a chunk written after the
last state (killed between the two renames) is ignored and rewritten, identically, on resume. Readers
concatenate the chunks the state lists. A file that is not HDF5, has not this package's ``format``
attribute, or belongs to another run (its run id) is refused with an
:class:`~sensitivity.errors.InvalidArgumentError` that names it; nothing is modified then.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sensitivity.errors import InvalidArgumentError
from sensitivity.io import atomic_write, remove_stale_temporaries

__all__ = ["STATISTICS", "ChainStore", "Chains", "ChunkBuffer", "check_settings", "read_chains", "read_manifest",
           "write_manifest"]

#: The statistics recorded for every iteration, with their dtypes (ArviZ ``sample_stats`` names; ``time`` is the
#: wall time of the iteration in seconds on the chain's rank 0, ``warmup`` whether it was a warm-up iteration).
STATISTICS = {
    "acceptance_rate": np.float64, "energy_error": np.float64, "step_size": np.float64, "diverging": np.bool_,
    "accepted": np.bool_, "n_steps": np.int64, "gradient_evaluations": np.int64, "lp": np.float64,
    "time": np.float64, "warmup": np.bool_,
}
FORMAT = "sensitivity.estimation.chains"
VERSION = 1
MANIFEST = "chains.h5"


def chain_directory(directory: str | os.PathLike, chain: int) -> Path:
    """The sub-directory of chain ``chain``."""
    return Path(directory) / f"chain-{chain:03d}"


@dataclass(frozen=True)
class Chains:
    r"""Several chains of one run, as arrays (the same on every rank that has them).

    Attributes
    ----------
    settings : dict
        The run's settings (``num_warmup``, ``sampler``, ...).
    stats : dict of numpy.ndarray, shape (chains, iterations)
        Every statistic of every iteration (warm-up first).
    stored : numpy.ndarray of int, shape (k,)
        The iterations whose draw is stored.
    control : numpy.ndarray, shape (chains, k, n), or None
        The stored positions (``to_array`` order), unless only summaries were kept.
    summaries : dict of numpy.ndarray, shape (chains, k, ...)
    """

    settings: dict
    stats: dict
    stored: np.ndarray
    control: np.ndarray | None
    summaries: dict

    @property
    def num_chains(self) -> int:
        return len(self.stats["lp"])

    @property
    def num_warmup(self) -> int:
        return int(self.settings["num_warmup"])

    def _mask(self, warmup: bool) -> np.ndarray:
        return self.stored < self.num_warmup if warmup else self.stored >= self.num_warmup

    def draws(self, warmup: bool = False) -> dict[str, np.ndarray]:
        """The stored draws after warm-up (or of the warm-up): ``control`` (if stored) and the summaries."""
        mask = self._mask(warmup)
        out = {} if self.control is None else {"control": self.control[:, mask]}
        out.update({name: value[:, mask] for name, value in self.summaries.items()})
        return out

    def draw_stats(self, warmup: bool = False) -> dict[str, np.ndarray]:
        """The statistics of the iterations of :meth:`draws`, shape (chains, draws)."""
        iterations = self.stored[self._mask(warmup)]
        return {name: value[:, iterations] for name, value in self.stats.items() if name != "warmup"}

    def totals(self) -> dict[str, np.ndarray]:
        """Per chain, over every iteration after warm-up (thinned or not): iterations, force evaluations,
        wall time, divergences and the mean acceptance rate."""
        after = ~self.stats["warmup"]
        count = np.maximum(after.sum(axis=1), 1)
        return {"iterations": after.sum(axis=1),
                "gradient_evaluations": np.where(after, self.stats["gradient_evaluations"], 0).sum(axis=1),
                "time": np.where(after, self.stats["time"], 0.0).sum(axis=1),
                "divergences": (self.stats["diverging"] & after).sum(axis=1),
                "acceptance_rate": np.where(after, self.stats["acceptance_rate"], 0.0).sum(axis=1) / count}

    @classmethod
    def from_chunks(cls, settings: Mapping, chunks: list[list[dict]]) -> Chains:
        """Concatenate each chain's chunks; chains of unequal length (a run still going, or killed) are cut to
        the shortest."""
        size = int(settings["parameters"]) if settings["store_control"] else None
        shapes = settings["summaries"]
        whole = [ChunkBuffer(0, size, shapes).close(0) if not c else _concatenate(c) for c in chunks]
        length = min(w["stop"] for w in whole)
        count = min(int(np.searchsorted(w["stored"], length)) for w in whole)
        stats = {name: np.stack([w["stats"][name][:length] for w in whole]) for name in STATISTICS}
        control = None if size is None else np.stack([w["control"][:count] for w in whole])
        summaries = {name: np.stack([w["summaries"][name][:count] for w in whole]) for name in shapes}
        return cls(dict(settings), stats, whole[0]["stored"][:count], control, summaries)


def _concatenate(chunks: list[dict]) -> dict:
    join = np.concatenate
    return {"stop": chunks[-1]["stop"], "stored": join([c["stored"] for c in chunks]),
            "stats": {n: join([c["stats"][n] for c in chunks]) for n in STATISTICS},
            "control": None if chunks[0]["control"] is None else join([c["control"] for c in chunks]),
            "summaries": {n: join([c["summaries"][n] for c in chunks]) for n in chunks[0]["summaries"]}}


class ChunkBuffer:
    """The iterations of the chunk being run: every statistic, and the kept draws.

    Parameters
    ----------
    start : int
        The chunk's first iteration.
    size : int or None
        Length of a stored control (``None``: controls are not stored).
    shapes : mapping of str to tuple
        The shape of each summary.
    """

    def __init__(self, start: int, size: int | None, shapes: Mapping[str, Any]):
        self.start, self.size, self.shapes = int(start), size, {k: tuple(v) for k, v in shapes.items()}
        self.stats: dict[str, list] = {name: [] for name in STATISTICS}
        self.stored: list[int] = []
        self.draws: list[dict] = []

    def add(self, iteration: int, stats: Mapping[str, Any], draw: Mapping[str, np.ndarray] | None) -> None:
        """Record an iteration's statistics and, if it is kept, its draw (``control`` and the summaries)."""
        for name in STATISTICS:
            self.stats[name].append(stats[name])
        if draw is not None:
            self.stored.append(int(iteration))
            self.draws.append(draw)

    def close(self, stop: int) -> dict:
        """The chunk of iterations ``[start, stop)`` as arrays (the format of the chunk files)."""
        def stack(name, shape):
            return np.array([d[name] for d in self.draws], dtype=float).reshape((len(self.draws), *shape))

        return {"start": self.start, "stop": int(stop), "stored": np.array(self.stored, dtype=np.int64),
                "stats": {name: np.array(v, dtype=STATISTICS[name]) for name, v in self.stats.items()},
                "control": None if self.size is None else stack("control", (self.size,)),
                "summaries": {name: stack(name, shape) for name, shape in self.shapes.items()}}


# -- files -----------------------------------------------------------------------------------------


@contextmanager
def _open(path: Path, kind: str):
    """Open a file of this package for reading; a missing, corrupt or foreign file is an InvalidArgumentError."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise InvalidArgumentError(f"{path} is not a readable HDF5 file (corrupt or foreign: {exc}); the chain files "
                                   "were left untouched") from None
    with f:
        if f.attrs.get("format") != FORMAT or f.attrs.get("kind") != kind:
            raise InvalidArgumentError(f"{path} is not a {kind} file of sensitivity.estimation (foreign HDF5 file: "
                                       f"format {f.attrs.get('format')!r}, kind {f.attrs.get('kind')!r}); the chain "
                                       "files were left untouched")
        if int(f.attrs.get("version", -1)) != VERSION:
            raise InvalidArgumentError(f"{path} has format version {f.attrs.get('version')!r}, this package reads "
                                       f"{VERSION}")
        try:
            yield f
        except InvalidArgumentError:
            raise
        except (KeyError, OSError, ValueError, TypeError) as exc:
            raise InvalidArgumentError(f"{path} is an incomplete {kind} file ({type(exc).__name__}: {exc}); the chain "
                                       "files were left untouched") from None


def _write(path: Path, kind: str, attrs: Mapping[str, Any], datasets: Mapping[str, Any]) -> None:
    import h5py

    def writer(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs.update({"format": FORMAT, "kind": kind, "version": VERSION, **attrs})
            for name, value in datasets.items():
                if isinstance(value, Mapping):
                    group = f.create_group(name)
                    for key, item in value.items():
                        group.create_dataset(key, data=np.asarray(item))
                elif value is not None:
                    f.create_dataset(name, data=np.asarray(value))

    atomic_write(path, writer)


def write_manifest(directory: str | os.PathLike, run: str, settings: Mapping) -> Path:
    """Write the manifest of a new run (not collective: the caller's rank 0)."""
    path = Path(directory) / MANIFEST
    _write(path, "manifest", {"run": run, "settings": json.dumps(settings, sort_keys=True)}, {})
    return path


def read_manifest(directory: str | os.PathLike) -> tuple[str, dict] | None:
    """``(run id, settings)`` of the run in ``directory``, or ``None`` if it holds none (not collective).

    Raises if chain files exist without a manifest, or the manifest is corrupt or foreign.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.exists():
        strays = sorted(p.name for p in directory.glob("chain-*")) if directory.is_dir() else []
        if strays:
            raise InvalidArgumentError(f"{directory} holds chain files ({', '.join(strays[:3])}) but no {MANIFEST}; "
                                       "they were left untouched: use another output directory")
        return None
    with _open(path, "manifest") as f:
        return str(f.attrs["run"]), json.loads(f.attrs["settings"])


def check_settings(directory: str | os.PathLike, stored: Mapping, given: Mapping, keys=None) -> None:
    """Raise unless ``given`` equals the ``stored`` settings (on ``keys``, default all), naming every difference."""
    given = json.loads(json.dumps(dict(given), sort_keys=True))
    names = sorted(set(stored) | set(given)) if keys is None else sorted(keys)
    diff = [f"{k}: stored {stored.get(k)!r}, now {given.get(k)!r}" for k in names if stored.get(k) != given.get(k)]
    if diff:
        raise InvalidArgumentError(f"the chains in {directory} were run with other settings ({'; '.join(diff)}); "
                                   "resume with the stored settings or use another output directory (nothing was "
                                   "changed)")


class ChainStore:
    """The files of one chain: committed chunks and the state after the last one (module docstring).

    Not collective: used on the chain's rank 0.

    Parameters
    ----------
    directory : path
        The run's output directory.
    chain : int
    run : str
        The run id of the manifest; files of another run are refused.
    """

    def __init__(self, directory: str | os.PathLike, chain: int, run: str):
        self.directory = chain_directory(directory, chain)
        self.chain, self.run = int(chain), str(run)
        self.state_path = self.directory / "state.h5"

    def chunk_path(self, index: int) -> Path:
        return self.directory / f"chunk-{index:06d}.h5"

    def prepare(self) -> None:
        """Create the chain's directory and remove the temporaries a killed run left in it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.directory)

    def commit(self, index: int, chunk: dict, state: dict) -> None:
        """Write chunk ``index``, then the state that lists it (the order makes the commit atomic)."""
        attrs = {"run": self.run, "chain": self.chain, "index": index, "start": chunk["start"], "stop": chunk["stop"]}
        _write(self.chunk_path(index), "chunk", attrs, {"stats": chunk["stats"], "stored": chunk["stored"],
                                                        "control": chunk["control"], "summaries": chunk["summaries"]})
        scalars = {k: v for k, v in state.items() if k not in ("position", "force")}
        _write(self.state_path, "state", {"run": self.run, "chain": self.chain, **scalars},
               {"position": state["position"], "force": state["force"]})

    def load(self, data: bool = True) -> tuple[dict | None, list[dict]]:
        """The saved state (``None`` if the chain has not committed a chunk) and the committed chunks, validated
        (with ``data=False`` the chunks' arrays are checked but not returned)."""
        if not self.state_path.exists():
            return None, []
        with _open(self.state_path, "state") as f:
            self._check_owner(f, self.state_path)
            state = dict(f.attrs)
            state["position"] = f["position"][()]
            state["force"] = f["force"][()] if "force" in f else None
        chunks, stop = [], 0
        for index in range(int(state["chunks"])):
            chunk = self._load_chunk(index, stop)
            stop = chunk["stop"]
            chunks.append(chunk if data else None)
        if stop != int(state["iteration"]):
            raise InvalidArgumentError(f"{self.state_path} says {state['iteration']} iterations, its chunks hold "
                                       f"{stop}; nothing was changed")
        return state, (chunks if data else [])

    def _check_owner(self, f, path: Path) -> None:
        if str(f.attrs["run"]) != self.run or int(f.attrs["chain"]) != self.chain:
            raise InvalidArgumentError(f"{path} belongs to chain {int(f.attrs['chain'])} of run {f.attrs['run']}, not "
                                       f"to chain {self.chain} of run {self.run} (a foreign chain file); nothing was "
                                       "changed")

    def _load_chunk(self, index: int, start: int) -> dict:
        path = self.chunk_path(index)
        if not path.exists():
            raise InvalidArgumentError(f"{path} is missing: the state file lists it as committed")
        with _open(path, "chunk") as f:
            self._check_owner(f, path)
            chunk = {"index": int(f.attrs["index"]), "start": int(f.attrs["start"]), "stop": int(f.attrs["stop"]),
                     "stored": f["stored"][()],
                     "stats": {n: f["stats"][n][()].astype(d) for n, d in STATISTICS.items()},
                     "control": f["control"][()] if "control" in f else None,
                     "summaries": {n: v[()] for n, v in f["summaries"].items()}}
        length = chunk["stop"] - chunk["start"]
        if chunk.pop("index") != index or chunk["start"] != start or length < 1 \
                or any(len(v) != length for v in chunk["stats"].values()) \
                or (chunk["control"] is not None and len(chunk["control"]) != len(chunk["stored"])):
            raise InvalidArgumentError(f"{path} is inconsistent (chunk {index} should start at iteration {start}); "
                                       "nothing was changed")
        return chunk


def read_chains(directory: str | os.PathLike) -> Chains:
    """Every committed chunk of every chain of the run in ``directory`` (not collective; see
    :meth:`Chains.from_chunks`)."""
    found = read_manifest(directory)
    if found is None:
        raise InvalidArgumentError(f"{directory} holds no chains (no {MANIFEST})")
    run, settings = found
    chunks = [ChainStore(directory, k, run).load()[1] for k in range(settings["num_chains"])]
    return Chains.from_chunks(settings, chunks)
