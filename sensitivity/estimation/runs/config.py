r"""Run files: a TOML file that describes one estimation run, validated against a schema with defaults.

A run file has the sections ``[problem]``, ``[data]``, ``[prior]``, ``[map]``, ``[laplace]``, ``[sampler]`` and
``[output]`` (only ``[problem]`` with its ``kind`` is required). :func:`load_config` reads it on rank 0, sends the
bytes to every rank and validates them identically on every rank, before any work: an unknown section or key, a
missing required key, a value of the wrong type or out of range, or entries that do not fit together raise an
:class:`~sensitivity.errors.InvalidArgumentError` that names the entry as ``section.key`` and its bad value
(and for an unknown entry lists the known ones).

The keys of ``[problem]`` depend on its ``kind``: each kind is a :class:`Problem` subclass registered with
:func:`register_problem` (``"rate_matrix"``: :mod:`sensitivity.estimation.runs.rate_matrix`), which declares its
keys, whether its misfit has a Hessian action (Newton MAP, the Laplace approximation), which forces it offers,
and checks its own entries and data (:meth:`Problem.from_config`).

Paths: ``data.file`` is relative to the directory of the run file; ``output.directory`` to the current directory
(default ``output/<run file stem>``), as the ``--output`` of the demos.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import numbers
import os
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from sensitivity.errors import InvalidArgumentError
from sensitivity.parallel import run_on_root
from sensitivity.validation import choice, in_range, integer, positive

import numpy as np
from mpi4py import MPI

__all__ = ["PROBLEMS", "REQUIRED", "SAMPLER_KINDS", "SECTIONS", "Key", "Problem", "RunConfig", "load_config",
           "parse_config", "read_data_array", "register_problem", "toml_text"]

#: The marker of a key without a default.
REQUIRED = object()

#: The sampler kinds of ``sampler.kind``.
SAMPLER_KINDS = ("hmc", "pcn", "mala")
#: The largest step size of each sampler kind (pCN's beta is at most 1, infinite MALA's at most pi/2).
MAX_STEP_SIZE = {"hmc": math.inf, "pcn": 1.0, "mala": 0.5 * math.pi}
#: The force kinds of ``sampler.force`` (a problem offers some of them).
FORCE_KINDS = ("exact", "first order", "affine", "secular", "laplace")
MAP_METHODS = ("lmvm", "nls")
#: The HMC mass matrices of ``sampler.mass``.
MASS_KINDS = ("identity", "prior", "laplace")
INITIAL = ("prior", "mean", "map", "map modes")


# --------------------------------------------------------------------------- value checks: check(value, name)


def boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be true or false, got {value!r}")
    return value


def string(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"{name} must be a non-empty string, got {value!r}")
    return value


def optional(check: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    """``check`` for a key whose default is ``None`` (a TOML file cannot say ``None``: it leaves the key out)."""
    return lambda value, name: None if value is None else check(value, name)


def integer_at_least(minimum: int) -> Callable[[Any, str], int]:
    return lambda value, name: integer(value, name, minimum=minimum)


def one_of(*choices: str) -> Callable[[Any, str], str]:
    return lambda value, name: choice(value, name, choices)


def real(value: Any, name: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(float(value)):
        raise InvalidArgumentError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def real_list(*, positive_entries: bool = False, min_length: int = 1, increasing: bool = False):
    """A list of finite (positive) numbers."""

    def check(value: Any, name: str) -> list[float]:
        what = "positive " if positive_entries else "finite "
        if not isinstance(value, list) or len(value) < min_length:
            raise InvalidArgumentError(f"{name} must be a list of at least {min_length} {what}numbers, got {value!r}")
        for k, entry in enumerate(value):
            if not isinstance(entry, numbers.Real) or isinstance(entry, bool) or not math.isfinite(float(entry)) \
                    or (positive_entries and float(entry) <= 0):
                raise InvalidArgumentError(f"{name} must be a list of {what}numbers: {name}[{k}] = {entry!r}")
        out = [float(v) for v in value]
        if increasing and any(b <= a for a, b in itertools.pairwise(out)):
            raise InvalidArgumentError(f"{name} must be strictly increasing, got {value!r}")
        return out

    return check


def number_or_list(*, positive_entries: bool = False):
    """A number (for every parameter) or a list (one per parameter; its length is checked by the problem)."""
    entries = real_list(positive_entries=positive_entries)

    def check(value: Any, name: str):
        if isinstance(value, list):
            return entries(value, name)
        return positive(value, name) if positive_entries else real(value, name)

    return check


def step_size(value: Any, name: str) -> float:
    return positive(value, name)


def target_accept(value: Any, name: str) -> float:
    return in_range(value, name, 0.0, 1.0, low_open=True, high_open=True)


def path_string(value: Any, name: str) -> str:
    return string(value, name)


@dataclass(frozen=True)
class Key:
    """One entry of a section: its default (:data:`REQUIRED` for none), its check and what it means."""

    default: Any
    check: Callable[[Any, str], Any]
    doc: str = ""


#: The sections other than ``[problem]`` (whose keys come from its kind).
SECTIONS: dict[str, dict[str, Key]] = {
    "data": {
        "synthetic": Key(None, optional(boolean), "draw synthetic data at the true parameters (default: unless "
                                                  "data.file is given)"),
        "seed": Key(0, integer_at_least(0), "seed of the synthetic data"),
        "file": Key(None, optional(path_string), "a .npz or .h5 file with the data (relative to the run file)"),
    },
    "prior": {
        "mean": Key(0.0, number_or_list(), "prior mean of the parameters (a number or one per parameter)"),
        "std": Key(1.0, number_or_list(positive_entries=True), "prior standard deviation (a number or a list)"),
    },
    "map": {
        "enabled": Key(False, boolean, "find the MAP point first"),
        "method": Key("lmvm", one_of(*MAP_METHODS), "TAO method (nls needs the misfit's Hessian action)"),
        "max_it": Key(200, integer_at_least(1), "TAO iterations"),
        "gttol": Key(1e-6, positive, "stop when the gradient norm falls by this factor"),
        "starts": Key(1, integer_at_least(1), "starting points: the prior mean and starts - 1 prior draws; the lowest "
                                              "minimum wins (a multimodal posterior)"),
        "seed": Key(0, integer_at_least(0), "seed of the prior draws of map.starts"),
        "spread": Key(1.0, positive, "the starts are mean + spread * (prior draw - mean)"),
        "mode_gap": Key(10.0, positive, "sampler.initial = 'map modes': the minima within this of the lowest value"),
    },
    "laplace": {
        "enabled": Key(False, boolean, "the Laplace approximation at the MAP point (needs map.enabled and the "
                                       "misfit's Hessian action)"),
        "rank": Key(None, optional(integer_at_least(1)), "eigenpairs kept (default min(20, parameters))"),
    },
    "sampler": {
        "kind": Key("hmc", one_of(*SAMPLER_KINDS), "hmc (leapfrog HMC), pcn, mala (infinite-dimensional MALA)"),
        "num_steps": Key(10, integer_at_least(1), "leapfrog steps per HMC trajectory"),
        "mass": Key("identity", one_of(*MASS_KINDS), "HMC mass matrix: identity, prior (the prior precision) or "
                                                     "laplace (the Laplace approximation's precision, dense)"),
        "jitter": Key(0.0, lambda v, n: in_range(v, n, 0.0, 1.0, high_open=True),
                      "relative jitter of the step size per trajectory (hmc, mala)"),
        "force": Key("exact", one_of(*FORCE_KINDS), "the force inside trajectories (hmc, mala)"),
        "num_chains": Key(4, integer_at_least(1), "chains"),
        "num_warmup": Key(500, integer_at_least(0), "warm-up iterations (step-size adaptation)"),
        "num_draws": Key(1000, integer_at_least(1), "iterations after warm-up"),
        "seed": Key(None, optional(integer_at_least(0)), "seed of the chains (default: fresh entropy, stored)"),
        "thin": Key(1, integer_at_least(1), "store every thin-th draw"),
        "chunk_size": Key(100, integer_at_least(1), "iterations per committed chunk"),
        "step_size": Key(0.1, step_size, "initial step size (beta for pcn)"),
        "target_accept": Key(None, optional(target_accept), "target acceptance of the adaptation (default the "
                                                            "kernel's)"),
        "initial": Key("prior", one_of(*INITIAL), "start at prior draws, the prior mean, the MAP point, or the "
                                                  "distinct minima of the MAP starts in turn (map modes)"),
        "ranks_per_chain": Key(None, optional(integer_at_least(1)), "ranks per chain (default all)"),
    },
    "output": {
        "directory": Key(None, optional(path_string), "output directory (default output/<run file stem>)"),
        "trace_parameters": Key(4, integer_at_least(1), "parameters shown in trace.png (the first ones)"),
    },
}
ORDER = ("problem", "data", "prior", "map", "laplace", "sampler", "output")


class Problem(ABC):
    """A kind of estimation problem of a run file (module docstring).

    Subclasses set :attr:`kind` and :attr:`keys`, and implement :meth:`from_config` (collective: checks the
    problem's entries, reads or draws the data) and :meth:`build`.
    """

    kind: ClassVar[str]
    #: The keys of ``[problem]`` besides ``kind``.
    keys: ClassVar[dict[str, Key]]
    #: Whether the misfit has a Hessian action (``map.method = "nls"``, ``[laplace]``, ``sampler.force = "laplace"``).
    has_hessian: ClassVar[bool] = False
    #: The values of ``sampler.force`` it offers.
    forces: ClassVar[tuple[str, ...]] = ("exact",)

    #: The number of parameters.
    size: int
    #: The true parameters (synthetic data), or ``None``.
    truth: np.ndarray | None = None

    @classmethod
    @abstractmethod
    def from_config(cls, config: RunConfig, comm: MPI.Comm) -> Problem:
        """Check the problem's entries of ``config`` (``config.values``, already type-checked) and load its data,
        identically on every rank of ``comm`` (collective)."""

    @abstractmethod
    def build(self, comm: MPI.Comm):
        """The :class:`~sensitivity.estimation.Posterior` on ``comm`` with the configured prior and force."""

    def description(self) -> str:
        return self.kind

    def report(self) -> dict[str, Any]:
        """Problem data for ``summary.json`` (JSON-serializable)."""
        return {}

    def parameter_names(self) -> list[str]:
        """The names of the parameters (plots, ``posterior.nc``)."""
        return [f"q[{i}]" for i in range(self.size)]

    def symmetries(self) -> list[np.ndarray]:
        r"""The exact symmetries of the posterior besides the identity, as orthogonal matrices :math:`S` with
        :math:`\pi(Sq) = \pi(q)` (default none)."""
        return []

    def images(self, q: np.ndarray) -> list[np.ndarray]:
        """The images :math:`Sq` of the parameters ``q`` under :meth:`symmetries`: points of the same posterior
        density, the other modes of a multimodal posterior."""
        return [S @ np.asarray(q, dtype=float) for S in self.symmetries()]

    def chain_report(self, chains, map_point: np.ndarray | None) -> dict[str, Any] | None:
        """What the problem says about the chains for ``summary.json`` (default nothing; rank 0 only)."""
        return None

    def write_outputs(self, comm: MPI.Comm, chains, out: Path, map_point: np.ndarray | None) -> list[str]:
        """Write the problem's own outputs into ``out`` and return their names (default none; collective)."""
        return []


PROBLEMS: dict[str, type[Problem]] = {}


def register_problem(cls: type[Problem]) -> type[Problem]:
    """Register a :class:`Problem` subclass under its ``kind`` (a class decorator)."""
    PROBLEMS[cls.kind] = cls
    return cls


@dataclass
class RunConfig:
    """A validated run file: ``values[section][key]`` with every default filled in, and where it came from."""

    path: Path
    values: dict[str, dict[str, Any]]
    #: The keys the file gave explicitly, per section.
    given: dict[str, set[str]] = field(default_factory=dict)
    problem: Problem | None = None

    @property
    def output(self) -> Path:
        return Path(self.values["output"]["directory"])

    def resolved(self) -> dict[str, Any]:
        """The resolved configuration (JSON-serializable): every section with its defaults."""
        return copy.deepcopy(self.values)


def _fail(path: Path, message: str):
    raise InvalidArgumentError(f"{path}: {message}")


def _section(path: Path, name: str, raw: Mapping[str, Any], keys: Mapping[str, Key], skip=()) -> dict[str, Any]:
    unknown = [k for k in raw if k not in keys and k not in skip]
    if unknown:
        key = unknown[0]
        known = ", ".join([*skip, *keys])
        _fail(path, f"unknown key {name}.{key} = {raw[key]!r}; the keys of [{name}] are: {known}")
    out = {}
    for key, spec in keys.items():
        qualified = f"{name}.{key}"
        if key in raw:
            try:
                out[key] = spec.check(raw[key], qualified)
            except InvalidArgumentError as exc:
                _fail(path, str(exc))
        elif spec.default is REQUIRED:
            _fail(path, f"{qualified} is required ({spec.doc})" if spec.doc else f"{qualified} is required")
        else:
            out[key] = copy.deepcopy(spec.default)
    return out


def parse_config(text: str, path: str | os.PathLike, comm: MPI.Comm | None = None) -> RunConfig:
    """Validate the run file ``text`` read from ``path`` (module docstring; collective: the problem's data)."""
    comm = MPI.COMM_WORLD if comm is None else comm
    path = Path(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        _fail(path, f"not a valid TOML file: {exc}")
    unknown = [name for name in raw if name not in ORDER]
    if unknown:
        _fail(path, f"unknown section [{unknown[0]}]; the sections are: {', '.join(ORDER)}")
    for name, section in raw.items():
        if not isinstance(section, dict):
            _fail(path, f"{name} must be a section [{name}], got {name} = {section!r}")
    if "problem" not in raw or "kind" not in raw["problem"]:
        _fail(path, f"problem.kind is required; the kinds are: {', '.join(PROBLEMS)}")
    kind = raw["problem"]["kind"]
    if kind not in PROBLEMS:
        _fail(path, f"problem.kind must be one of {', '.join(map(repr, PROBLEMS))}; got {kind!r}")
    cls = PROBLEMS[kind]
    values = {"problem": {"kind": kind, **_section(path, "problem", raw["problem"], cls.keys, skip=("kind",))}}
    for name in ORDER[1:]:
        values[name] = _section(path, name, raw.get(name, {}), SECTIONS[name])
    given = {name: set(raw.get(name, {})) for name in ORDER}
    config = RunConfig(path, values, given)
    try:
        _check_together(config, cls)
        config.problem = cls.from_config(config, comm)
    except InvalidArgumentError as exc:
        if str(exc).startswith(f"{path}: "):
            raise
        _fail(path, str(exc))
    return config


def _check_together(config: RunConfig, cls: type[Problem]) -> None:
    """The checks across entries that every problem shares."""
    v, given = config.values, config.given
    data, sampler, map_, laplace = v["data"], v["sampler"], v["map"], v["laplace"]
    if data["file"] is not None and data["synthetic"]:
        raise InvalidArgumentError(f"data.synthetic = true and data.file = {data['file']!r}: give one of them")
    if data["file"] is None and data["synthetic"] is False:
        raise InvalidArgumentError("data.synthetic = false needs data.file (a .npz or .h5 file with the data)")
    data["synthetic"] = data["file"] is None
    if data["file"] is not None:
        file = Path(data["file"]).expanduser()
        data["file"] = str(file if file.is_absolute() else (config.path.parent / file).absolute())
        if "seed" in given["data"]:
            raise InvalidArgumentError(f"data.seed = {data['seed']!r} is for synthetic data, not data.file")
    if map_["method"] == "nls" and not cls.has_hessian:
        raise InvalidArgumentError(f"map.method = 'nls' needs the misfit's Hessian action, which the {cls.kind} "
                                   "problem does not have; use 'lmvm'")
    if laplace["enabled"]:
        if not cls.has_hessian:
            raise InvalidArgumentError(f"laplace.enabled = true needs the misfit's Hessian action, which the "
                                       f"{cls.kind} problem does not have")
        if not map_["enabled"]:
            raise InvalidArgumentError("laplace.enabled = true needs map.enabled = true (it is taken at the MAP point)")
    elif "rank" in given["laplace"]:
        raise InvalidArgumentError(f"laplace.rank = {laplace['rank']!r} needs laplace.enabled = true")
    kind, force = sampler["kind"], sampler["force"]
    if force == "laplace":
        if not cls.has_hessian:
            raise InvalidArgumentError(f"sampler.force = 'laplace' needs the misfit's Hessian action (the Laplace "
                                       f"approximation), which the {cls.kind} problem does not have; its forces are: "
                                       f"{', '.join(map(repr, cls.forces))}")
        if not laplace["enabled"]:
            raise InvalidArgumentError("sampler.force = 'laplace' needs laplace.enabled = true")
    elif force not in cls.forces:
        raise InvalidArgumentError(f"sampler.force must be one of {', '.join(map(repr, cls.forces))} for the "
                                   f"{cls.kind} problem; got {force!r}")
    if kind == "pcn" and "force" in given["sampler"]:
        raise InvalidArgumentError(f"sampler.force = {force!r}: sampler.kind = 'pcn' uses no force")
    if kind != "hmc" and "mass" in given["sampler"]:
        raise InvalidArgumentError(f"sampler.mass = {sampler['mass']!r} is for sampler.kind = 'hmc', not {kind!r}")
    if sampler["mass"] == "laplace" and not laplace["enabled"]:
        raise InvalidArgumentError("sampler.mass = 'laplace' needs laplace.enabled = true (the Laplace approximation "
                                   "gives the mass matrix)")
    if kind != "hmc" and "num_steps" in given["sampler"]:
        raise InvalidArgumentError(f"sampler.num_steps = {sampler['num_steps']!r} is for sampler.kind = 'hmc', not "
                                   f"{kind!r}")
    if kind == "pcn" and "jitter" in given["sampler"]:
        raise InvalidArgumentError(f"sampler.jitter = {sampler['jitter']!r}: sampler.kind = 'pcn' has no jitter")
    top = MAX_STEP_SIZE[kind]
    if sampler["step_size"] > top:
        raise InvalidArgumentError(f"sampler.step_size must be at most {top:g} for sampler.kind = {kind!r}, got "
                                   f"{sampler['step_size']!r}")
    if sampler["initial"] in ("map", "map modes") and not map_["enabled"]:
        raise InvalidArgumentError(f"sampler.initial = {sampler['initial']!r} needs map.enabled = true")
    if v["output"]["directory"] is None:
        v["output"]["directory"] = str(Path("output") / config.path.stem)
    v["output"]["directory"] = str(Path(v["output"]["directory"]).expanduser().absolute())


def read_data_array(path: str | os.PathLike, name: str) -> np.ndarray:
    """The numeric array ``name`` of a ``.npz`` or ``.h5``/``.hdf5`` file (not collective); errors name ``data.file``."""
    path = Path(path)
    label = f"data.file = {str(path)!r}"
    if not path.is_file():
        raise InvalidArgumentError(f"{label}: no such file" if not path.exists() else f"{label}: not a file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                if name not in f.files:
                    raise InvalidArgumentError(f"{label} has no array {name!r} (it has: {', '.join(f.files) or 'none'})")
                array = np.asarray(f[name])
        elif suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                if name not in f or not isinstance(f[name], h5py.Dataset):
                    raise InvalidArgumentError(f"{label} has no dataset {name!r} (it has: {', '.join(f) or 'none'})")
                array = np.asarray(f[name][()])
        else:
            raise InvalidArgumentError(f"{label}: the data file must be a .npz or .h5 file")
    except InvalidArgumentError:
        raise
    except Exception as exc:  # noqa: BLE001  (a corrupt or foreign file)
        raise InvalidArgumentError(f"{label}: cannot read it: {type(exc).__name__}: {exc}") from None
    if array.dtype.kind not in "iuf":
        raise InvalidArgumentError(f"{label}: {name} must be numbers, got dtype {array.dtype}")
    return array.astype(float)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def toml_text(sections: Mapping[str, Any]) -> str:
    """The TOML text of a run file given as ``{section: {key: value}}`` (numbers, strings, booleans and lists of
    them: what run files hold), e.g. to write run files from a program; a value in place of a section is written
    as a top-level key (a malformed run file, for tests)."""
    lines = [f"{name} = {_toml_value(value)}" for name, value in sections.items() if not isinstance(value, Mapping)]
    for name, table in sections.items():
        if isinstance(table, Mapping):
            lines += [f"[{name}]", *(f"{key} = {_toml_value(value)}" for key, value in table.items()), ""]
    return "\n".join(lines)


def load_config(path: str | os.PathLike, comm: MPI.Comm | None = None) -> RunConfig:
    """Read the run file ``path`` on rank 0 and validate it on every rank of ``comm`` (collective)."""
    comm = MPI.COMM_WORLD if comm is None else comm
    path = Path(path)

    def read() -> str:
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgumentError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read the run file {path}: {exc.strerror or exc}") from None

    text = comm.bcast(run_on_root(comm, read), root=0)
    return parse_config(text, path, comm)
