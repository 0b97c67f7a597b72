r"""The shared part of the PDE problems of run files: a field control through modes, observed over time.

A :class:`FieldProblem` (the ``velocity`` and ``potential`` kinds) is a time-dependent PDE whose control field
:math:`c` (a stream function, a potential) is :math:`c = \sum_k q_k\varphi_k` over ``problem.modes`` modes
(:class:`~sensitivity.estimation.modal.ModalBasis`), observed by a few observation operators at every
``problem.observe_every``-th of ``problem.steps`` Crank–Nicolson steps of length ``problem.dt``, with Gaussian
noise. The parameters :math:`q` have a Gaussian prior of independent coefficients (``prior.mean``, ``prior.std``:
a number, scaled per mode by the subclass's spectrum, or one number per mode). The misfit is
:class:`~sensitivity.estimation.modal.ModalMisfit` of the :class:`~sensitivity.estimation.ReducedMisfit` of
the discrete objective: exact value, adjoint derivative and Hessian actions (Newton MAP and the Laplace
approximation work).

Data: synthetic, computed on the same discretization with the subclass's true field plus noise of standard
deviation ``problem.noise`` times the largest clean value of each observation operator, drawn with
``numpy.random.default_rng(data.seed)`` (the same numbers on every rank); or the arrays named by
:attr:`FieldProblem.observers` (shape (observed steps, sensors)) of the ``.npz``/``.h5`` file ``data.file``,
the noise then relative to their largest absolute value.

Forces (``sampler.force``): ``"exact"`` (the adjoint), the subclass's surrogates, ``"laplace"``.
Outputs besides the common ones (:meth:`FieldProblem.write_outputs`): ``fields.bp`` (VTX for ParaView: the
posterior mean and standard deviation of the field, ``posterior_mean`` and ``posterior_std`` (and for the
velocity problem ``mode_mean``, ``mode_std``, those of its draws folded onto the MAP point's mode), the MAP
point ``map`` and the truth ``truth`` when known) and ``fields.png``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.modal import ModalBasis, ModalForce, ModalMisfit
from sensitivity.estimation.posterior import Force, Posterior, ReducedMisfit, SurrogateForce
from sensitivity.estimation.prior import GaussianPrior
from sensitivity.estimation.problems import REDUNDANT_LU
from sensitivity.estimation.runs.config import (Key, Problem, RunConfig, integer_at_least, one_of, optional,
                                                read_data_array, real_list)
from sensitivity.parallel import run_on_root
from sensitivity.validation import positive

__all__ = ["FieldModel", "FieldProblem", "SOLVERS", "first_order_surrogate"]

#: ``problem.solver``: the linear solvers of the time stepper, both with pivoting (an advection-dominated step
#: of a large trial velocity is far from diagonally dominant): every rank factors the whole matrix with
#: sequential MUMPS (``"redundant"``: one gather per solve, fast for small meshes and when mpirun oversubscribes
#: the cores), or distributed MUMPS.
SOLVERS = {"redundant": {**REDUNDANT_LU, "redundant_pc_factor_mat_solver_type": "mumps"},
           "mumps": {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}}


def first_order_surrogate(functional, values: dict):
    """The seed's first-order surrogate (1.6) of ``functional``, the force ``"first order"`` of both PDE problems
    (:class:`~sensitivity.fem.surrogates.FirstOrderSurrogate`; its mass solves by CG: ``PCREDUNDANT`` has no
    transposed solve)."""
    from sensitivity.fem.surrogates import FirstOrderSurrogate

    return FirstOrderSurrogate(functional)


@dataclass
class FieldModel:
    """One discretized model on a communicator: what a :class:`FieldProblem` subclass builds.

    ``scheme`` steps the state from ``initial``; ``control`` is the control Function of the scheme's problem;
    ``observers`` are the observation operators (in the order of :attr:`FieldProblem.observers`); ``modes`` the
    callables ``x -> values`` interpolated into the control space as the modes.
    """

    scheme: Any
    initial: Any
    control: Any
    observers: list[Any]
    modes: list[Callable[[np.ndarray], np.ndarray]]


class FieldProblem(Problem):
    """A PDE problem with a modal field control (module docstring). Subclasses set :attr:`kind`,
    :attr:`observers`, their own :attr:`keys` (with :attr:`COMMON_KEYS`) and :attr:`surrogates`, and implement
    :meth:`model` and :meth:`wave_vectors` (and :meth:`mode_scales`, :meth:`true_field` if not the defaults)."""

    has_hessian = True
    #: The names of the observation operators (the arrays of ``data.file``).
    observers: ClassVar[tuple[str, ...]]
    #: The surrogate forces of the kind: ``{name: surrogate(functional)}`` (see :class:`SurrogateForce`).
    surrogates: ClassVar[dict[str, Callable[[Any, dict], Any]]] = {}
    COMMON_KEYS: ClassVar[dict[str, Key]] = {
        "cells": Key(16, integer_at_least(2), "cells per side of the mesh"),
        "dt": Key(0.05, positive, "time step"),
        "steps": Key(20, integer_at_least(1), "number of time steps"),
        "observe_every": Key(5, integer_at_least(1), "observe at every k-th step"),
        "noise": Key(0.02, positive, "noise standard deviation, relative to the largest value of each observer"),
        "modes": Key(3, integer_at_least(1), "the highest mode index per direction"),
        "true_coefficients": Key(None, optional(real_list()), "the true coefficients of the synthetic data"),
        "truth_seed": Key(None, optional(integer_at_least(0)), "seed of true coefficients drawn from the prior"),
        "solver": Key("redundant", one_of(*SOLVERS), "linear solver of the time stepper (redundant LU or MUMPS)"),
    }

    def __init__(self, values: dict, mean: np.ndarray, std: np.ndarray, data: list[np.ndarray],
                 noise: list[float], truth: np.ndarray | None, source: str, force_name: str = "exact"):
        self.values, self.mean, self.std, self.data, self.noise = values, mean, std, data, noise
        self.truth, self.source, self.force_name = truth, source, force_name
        self.size = mean.size

    # ---------------------------------------------------------------- the subclass's model

    @classmethod
    @abstractmethod
    def model(cls, values: dict, comm: MPI.Comm) -> FieldModel:
        """The discretized model for the problem entries ``values`` on ``comm`` (collective)."""

    @classmethod
    @abstractmethod
    def wave_vectors(cls, values: dict) -> list[tuple[int, int]]:
        """The indices :math:`(k_1, k_2)` of the modes, in the order of the coefficients."""

    @classmethod
    def mode_labels(cls, values: dict) -> list[str]:
        """The names of the coefficients, ``q[k1,k2]`` (their number is the number of parameters)."""
        return [f"q[{a},{b}]" for a, b in cls.wave_vectors(values)]

    @classmethod
    def mode_scales(cls, values: dict) -> np.ndarray:
        """The factors of a scalar ``prior.std`` per mode (default one)."""
        return np.ones(len(cls.mode_labels(values)))

    @classmethod
    def true_field(cls, values: dict, truth: np.ndarray | None) -> Callable[[np.ndarray], np.ndarray] | None:
        """The true field of synthetic data as ``x -> values`` (default the modal field of ``truth``)."""
        return None

    # ---------------------------------------------------------------- configuration

    @classmethod
    def observation_steps(cls, values: dict) -> np.ndarray:
        return np.arange(values["observe_every"], values["steps"] + 1, values["observe_every"])

    @classmethod
    def from_config(cls, config: RunConfig, comm: MPI.Comm) -> FieldProblem:
        v = config.values
        p, data = v["problem"], v["data"]
        labels = cls.mode_labels(p)
        n = len(labels)
        where = f"the {cls.kind} problem with problem.modes = {p['modes']} has {n} coefficients"

        def per_mode(section: str, key: str, scales: np.ndarray) -> np.ndarray:
            value = v[section][key]
            if isinstance(value, list):
                if len(value) != n:
                    raise InvalidArgumentError(f"{section}.{key} has {len(value)} entries, but {where}")
                return np.array(value)
            return float(value) * scales

        if cls.observation_steps(p).size == 0:
            raise InvalidArgumentError(f"problem.observe_every = {p['observe_every']} exceeds problem.steps = "
                                       f"{p['steps']}: nothing is observed")
        mean, std = per_mode("prior", "mean", np.ones(n)), per_mode("prior", "std", cls.mode_scales(p))
        if p["true_coefficients"] is not None and p["truth_seed"] is not None:
            raise InvalidArgumentError(f"problem.truth_seed = {p['truth_seed']!r} and problem.true_coefficients: "
                                       "give at most one of them")
        truth = None if p["true_coefficients"] is None else per_mode("problem", "true_coefficients", np.ones(n))
        model = cls.model(p, comm)
        basis = cls._basis(model, comm)
        try:
            if data["synthetic"]:
                if truth is None and cls.true_field(p, None) is None:
                    seed = 0 if p["truth_seed"] is None else p["truth_seed"]
                    p["truth_seed"] = seed
                    truth = mean + std * np.random.default_rng(seed).standard_normal(n)
                clean = cls._observe(model, basis, p, truth)
                if truth is None:  # a true field outside the span: report its coefficients in it
                    truth = basis.coefficients(model.control.x.petsc_vec)
                rng = np.random.default_rng(data["seed"])
                noise = [p["noise"] * float(np.max(np.abs(y))) for y in clean]
                observed = [y + s * rng.standard_normal(y.shape) for y, s in zip(clean, noise)]
                source = f"synthetic (data.seed = {data['seed']})"
            else:
                if p["truth_seed"] is not None:
                    raise InvalidArgumentError(f"problem.truth_seed = {p['truth_seed']!r} is for synthetic data, "
                                               "not data.file")
                observed = cls._read(data["file"], p, model, comm)
                noise = [p["noise"] * float(np.max(np.abs(y))) for y in observed]
                source = data["file"]
        finally:
            basis.destroy()
            model.scheme.destroy()
        return cls(p, mean, std, observed, noise, truth, source, v["sampler"]["force"])

    @classmethod
    def _basis(cls, model: FieldModel, comm: MPI.Comm) -> ModalBasis:
        from sensitivity.estimation.vectors import FunctionVectors
        from sensitivity.fem import ControlSpace

        from dolfinx import fem

        space = FunctionVectors(ControlSpace(model.control.function_space))
        work = fem.Function(model.control.function_space)
        modes = []
        for mode in model.modes:
            work.interpolate(mode)
            modes.append(space.copy(work.x.petsc_vec))
        basis = ModalBasis(space, modes)  # copies them again
        for vec in modes:
            space.destroy(vec)
        return basis

    @classmethod
    def _observe(cls, model: FieldModel, basis: ModalBasis, values: dict, truth: np.ndarray | None):
        """The clean observations of the truth (collective); leaves the true field in ``model.control``."""
        field = cls.true_field(values, truth)
        if field is None:
            vec = basis.field(truth)
            model.control.x.petsc_vec.array[:] = vec.array_r
            basis.field_space.destroy(vec)
            model.control.x.scatter_forward()
        else:
            model.control.interpolate(field)
        model.scheme.problem.update()
        model.scheme.refresh()
        steps = set(int(k) for k in cls.observation_steps(values))
        readings: list[list[np.ndarray]] = [[] for _ in model.observers]

        def record(k, state):
            if k in steps:
                for out, observer in zip(readings, model.observers):
                    out.append(observer.evaluate(state))

        model.scheme.run(model.initial, values["steps"], callback=record).destroy()
        return [np.array(r) for r in readings]

    @classmethod
    def _read(cls, path: str, values: dict, model: FieldModel, comm: MPI.Comm) -> list[np.ndarray]:
        arrays = comm.bcast(run_on_root(comm, lambda: [read_data_array(path, name) for name in cls.observers]),
                            root=0)
        k = cls.observation_steps(values).size
        for name, array, observer in zip(cls.observers, arrays, model.observers):
            shape = (k, observer.num_sensors)
            if array.shape != shape:
                raise InvalidArgumentError(f"data.file = {path!r}: {name} has shape {array.shape}, expected {shape} "
                                           "(observed steps, sensors)")
            if not np.all(np.isfinite(array)):
                raise InvalidArgumentError(f"data.file = {path!r}: {name} has a non-finite entry")
        return arrays

    # ---------------------------------------------------------------- the posterior

    def functional(self, model: FieldModel):
        """The discrete objective (no regularization) of the data on ``model`` (collective)."""
        from sensitivity.fem import ObservationMisfit, ReducedFunctional

        steps = self.observation_steps(self.values)
        misfits = [ObservationMisfit(observer, steps, y, noise=s)
                   for observer, y, s in zip(model.observers, self.data, self.noise)]
        return ReducedFunctional(model.scheme, model.initial, self.values["steps"], misfits)

    def build(self, comm: MPI.Comm) -> Posterior:
        model = self.model(self.values, comm)
        F = self.functional(model)
        basis = self._basis(model, comm)
        field_misfit = ReducedMisfit(F)
        misfit = ModalMisfit(field_misfit, basis)
        prior = GaussianPrior(misfit.space, self.mean, std=self.std)
        force: Force | None = None
        name = self.force_name
        if name in self.surrogates:
            make = self.surrogates[name]
            force = ModalForce(SurrogateForce(field_misfit, lambda G: make(G, self.values), name=name), basis)
        return Posterior(misfit, prior, force)

    # ---------------------------------------------------------------- reports and outputs

    def parameter_names(self) -> list[str]:
        return self.mode_labels(self.values)

    def description(self) -> str:
        p = self.values
        return (f"{self.kind}: {self.size} coefficients, {p['cells']}x{p['cells']} cells, {p['steps']} steps of "
                f"{p['dt']:g}, {len(self.observers)} observer(s) at {self.observation_steps(p).size} times "
                f"({self.source})")

    def report(self) -> dict[str, Any]:
        return {"kind": self.kind, "parameters": self.size, "parameter_names": self.parameter_names(),
                "noise": self.noise, "data": self.source, "observation_steps": self.observation_steps(self.values).tolist(),
                "truth": None if self.truth is None else self.truth.tolist()}

    def field_at(self, comm: MPI.Comm, coefficients: list[np.ndarray], points: np.ndarray) -> list[np.ndarray]:
        """The discrete fields (in the control space, as the PDE sees them) of each coefficient vector at
        ``points`` of shape (n, 2): arrays of shape (n,) on every rank (collective)."""
        from sensitivity.fem import PointSensors

        from dolfinx import fem

        model = self.model(self.values, comm)
        basis = self._basis(model, comm)
        f = fem.Function(model.control.function_space)
        probe = PointSensors(f.function_space, points)
        out = []
        for q in coefficients:
            vec = basis.field(np.asarray(q, dtype=float))
            f.x.petsc_vec.array[:] = vec.array_r
            f.x.scatter_forward()
            basis.field_space.destroy(vec)
            out.append(probe.evaluate(f))
        basis.destroy()
        model.scheme.destroy()
        return out

    def write_outputs(self, comm: MPI.Comm, chains, out: Path, map_point: np.ndarray | None) -> list[str]:
        """``fields.bp`` and ``fields.png``: the field's posterior mean and standard deviation, the MAP point and
        the truth (collective)."""
        from sensitivity.fem import FieldSeries, TriangleGather, plot_fields

        from dolfinx import fem

        model = self.model(self.values, comm)
        basis = self._basis(model, comm)
        space = model.control.function_space
        vectors = {}
        for group, draws in self.draw_groups(chains.draws()["control"], map_point).items():
            draws = self.field_coefficients(draws.reshape(-1, self.size))
            vectors.update(zip((f"{group}_mean", f"{group}_std"), basis.field_moments(draws)))
        for name, q in (("map", map_point), ("truth", self.truth)):
            if q is not None:
                vectors[name] = basis.field(self.field_coefficients(np.asarray(q, dtype=float)))
        functions = []
        for name, vec in vectors.items():
            f = fem.Function(space, name=name)
            f.x.petsc_vec.array[:] = vec.array_r
            f.x.scatter_forward()
            functions.append(f)
            basis.field_space.destroy(vec)
        with FieldSeries(out / "fields.bp", functions) as series:
            series.write(0.0)
        gather = TriangleGather(space)
        titles = {"map": "MAP", "truth": "truth (in the modes)"}
        panels = [(f"{self.field_name}: {titles.get(f.name, f.name.replace('_', ' '))}", gather.values(f))
                  for f in functions]
        plot_fields(gather, panels, out / "fields.png", ncols=min(4, len(panels)),
                    symmetric=[self.field_symmetric and not f.name.endswith("_std") for f in functions])
        basis.destroy()
        model.scheme.destroy()
        return ["fields.bp", "fields.png"]

    def draw_groups(self, control: np.ndarray, map_point: np.ndarray | None) -> dict[str, np.ndarray]:
        """The sets of draws (shape (chains, draws, m)) whose field moments the outputs show, by name (default
        ``{"posterior": control}``; the velocity problem adds its draws folded onto one mode)."""
        return {"posterior": control}

    def field_coefficients(self, q: np.ndarray) -> np.ndarray:
        """The coefficients of the field that the outputs show, for coefficients ``q`` of shape (..., m)
        (default ``q`` itself; the potential drops its constant)."""
        return q

    #: The name of the field in plots, and whether its colour scale is symmetric about zero.
    field_name: ClassVar[str] = "field"
    field_symmetric: ClassVar[bool] = False
