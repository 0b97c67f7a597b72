r"""The steps of an estimation run, shared by ``sensitivity-estimate`` (:mod:`~sensitivity.estimation.runs.cli`)
and ``benchmarks/estimation.py``: the MAP point of a multi-start search, the Laplace approximation and the HMC
mass it gives, the starting points of the chains, and the arguments of :func:`~sensitivity.estimation.sample`.

Every function is collective on ``comm`` (the parameters of the run problems are replicated arrays: the MAP
points, masses and starts are the same on every rank).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.laplace import LaplaceApproximation, LaplaceForce
from sensitivity.estimation.map import find_map
from sensitivity.estimation.posterior import Force, Posterior
from sensitivity.estimation.runs.config import RunConfig
from sensitivity.estimation.samplers import HMC, PCN, InfiniteMALA, Kernel

__all__ = ["NearestImageForce", "build_posterior", "find_map_point", "initial_points", "kernel", "laplace_mass", "laplace_step",
           "map_modes", "sample_arguments"]


def find_map_point(config: RunConfig, comm: MPI.Comm) -> dict:
    r"""The lowest of the minima that :func:`~sensitivity.estimation.find_map` finds from the prior mean
    :math:`\bar m` and ``map.starts - 1`` points :math:`\bar m + s(\xi - \bar m)`, :math:`\xi` prior draws
    (``numpy.random.default_rng(map.seed)``, the same on every rank), :math:`s` = ``map.spread``: the record of
    ``map.json`` (the point, its value, gradient norm, iterations, ..., ``error_to_truth`` when the truth is
    known, and ``starts``: every start's value, point and convergence)."""
    settings, problem = config.values["map"], config.problem
    t0 = time.perf_counter()
    posterior = problem.build(comm)
    space, rng = posterior.space, np.random.default_rng(settings["seed"])
    best, minima = None, []
    for k in range(settings["starts"]):
        q0 = space.copy(posterior.prior.mean)
        if k > 0:
            draw = space.axpy(-1.0, q0, posterior.prior.sample(rng))
            space.axpy(settings["spread"], draw, q0)
            space.destroy(draw)
        result = find_map(posterior, q0, settings["method"], max_it=settings["max_it"], gttol=settings["gttol"])
        space.destroy(q0)
        minima.append({"value": float(result.value), "point": space.to_array(result.point).tolist(),
                       "converged": bool(result.converged)})
        if best is None or result.value < best.value:
            best, result = result, best
        if result is not None:
            space.destroy(result.point)
    point = space.to_array(best.point)
    space.destroy(best.point)
    record = {"point": point.tolist(), "value": float(best.value), "gradient_norm": float(best.gradient_norm),
              "iterations": int(best.iterations), "evaluations": int(best.evaluations), "reason": best.reason,
              "converged": bool(best.converged), "method": best.method, "metric": best.metric,
              "seconds": comm.allreduce(time.perf_counter() - t0, op=MPI.MAX), "starts": minima}
    if problem.truth is not None:
        record["error_to_truth"] = float(np.linalg.norm(point - problem.truth))
    return record


def laplace_mass(covariance: np.ndarray, symmetries: list[np.ndarray]) -> np.ndarray:
    r"""The HMC mass matrix :math:`\Gamma^{-1}` of a Laplace covariance :math:`\Gamma`, averaged over the problem's
    symmetries, :math:`\frac1{|G|}\sum_{S\in G}S\Gamma^{-1}S^T`: the modes :math:`Sq_{\rm MAP}` have the precisions
    :math:`S\Gamma^{-1}S^T`, and the average serves chains in any of them alike (symmetric to round-off)."""
    precision = np.linalg.inv(0.5 * (covariance + covariance.T))
    mass = (precision + sum(S @ precision @ S.T for S in symmetries)) / (1 + len(symmetries))
    return 0.5 * (mass + mass.T)


def laplace_step(config: RunConfig, comm: MPI.Comm, map_point: np.ndarray) -> tuple[dict, np.ndarray | None]:
    """The Laplace approximation at ``map_point``: its record (rank, eigenvalues, Hessian actions, seconds) and,
    with ``sampler.mass = "laplace"``, the HMC mass (:func:`laplace_mass`)."""
    t0 = time.perf_counter()
    v, problem = config.values, config.problem
    laplace = LaplaceApproximation(problem.build(comm), map_point, rank=v["laplace"]["rank"])
    mass = None
    if v["sampler"]["mass"] == "laplace":
        mass = laplace_mass(laplace.dense_covariance(), problem.symmetries())
    record = {"rank": laplace.rank, "eigenvalues": np.asarray(laplace.eigenvalues).tolist(),
              "hessian_actions": laplace.hessian_actions}
    laplace.destroy()
    record["seconds"] = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    return record, mass


def map_modes(minima: list[dict], gap: float, images: Callable[[np.ndarray], list] = lambda q: []) -> np.ndarray:
    r"""The distinct converged minima of a multi-start MAP search whose value is within ``gap`` of the lowest
    (posterior densities within :math:`e^{-\rm gap}` of the highest), lowest first, each followed by its
    ``images(q)`` under the problem's exact symmetries (:meth:`~sensitivity.estimation.runs.config.Problem.images`):
    the modes the chains of ``sampler.initial = "map modes"`` start from, in turn."""
    found = sorted((m for m in minima if m["converged"]), key=lambda m: m["value"])
    if not found:
        raise InvalidArgumentError("sampler.initial = 'map modes': no MAP start converged (raise map.max_it)")
    modes: list[np.ndarray] = []
    for m in found:
        if m["value"] > found[0]["value"] + gap:
            break
        point = np.asarray(m["point"], dtype=float)
        for q in (point, *images(point)):
            if all(np.linalg.norm(q - r) > 1e-4 * max(np.linalg.norm(r), 1.0) for r in modes):
                modes.append(q)
    return np.array(modes)


def initial_points(config: RunConfig, map_record: dict | None):
    """The ``initial`` of :func:`~sensitivity.estimation.sample` for ``sampler.initial``: ``None`` (prior draws),
    ``"mean"``, the MAP point, or one point per chain (``"map modes"``: :func:`map_modes` in turn)."""
    v = config.values
    choice = v["sampler"]["initial"]
    if choice == "map modes":
        modes = map_modes(map_record["starts"], v["map"]["mode_gap"], config.problem.images)
        return modes[np.arange(v["sampler"]["num_chains"]) % len(modes)]
    if choice == "map":
        return np.asarray(map_record["point"], dtype=float)
    return {"prior": None, "mean": "mean"}[choice]


def kernel(config: RunConfig, mass: Any = None) -> Kernel:
    """The kernel of ``[sampler]`` (``mass``: the HMC mass of ``sampler.mass``, from :func:`laplace_step` for
    ``"laplace"``)."""
    sampler = config.values["sampler"]
    if sampler["kind"] == "hmc":
        if sampler["mass"] == "laplace" and mass is None:
            raise InvalidArgumentError("sampler.mass = 'laplace' needs the mass of laplace_step")
        return HMC(sampler["num_steps"], mass={"identity": None, "prior": "prior"}.get(sampler["mass"], mass),
                   jitter=sampler["jitter"])
    if sampler["kind"] == "mala":
        return InfiniteMALA(jitter=sampler["jitter"])
    return PCN()


def build_posterior(config: RunConfig, map_point: np.ndarray | None) -> Callable[[MPI.Comm], Posterior]:
    """``build(comm)`` of :func:`~sensitivity.estimation.sample`: the problem's posterior with its force, the
    Laplace force at ``map_point`` for ``sampler.force = "laplace"``."""
    v, problem = config.values, config.problem

    def build(comm: MPI.Comm) -> Posterior:
        posterior = problem.build(comm)
        if v["sampler"]["force"] == "laplace":
            laplace = LaplaceApproximation(posterior, map_point, rank=v["laplace"]["rank"])
            force = LaplaceForce(laplace)
            if problem.symmetries():
                force = NearestImageForce(force, problem.symmetries(), map_point)
            posterior = Posterior(posterior.misfit, posterior.prior, force)
        return posterior

    return build


class NearestImageForce(Force):
    r"""A force about one point :math:`q_0` carried to every image of it under a posterior's symmetries:
    :math:`\tilde f(q) = S^Tf(Sq)` for the :math:`S \in G` (the identity included) that brings :math:`q` nearest
    to :math:`q_0`. For the Laplace force, the quadratic model of the misfit about the MAP mode is used about
    each mirror mode too, instead of pulling a chain in one mode towards the other. A function of :math:`q` alone
    (a discontinuous one: each leapfrog kick is still a shear, so the integrator stays volume-preserving and
    reversible and the accept step keeps the target exact, docs/theory.md §4.4). Parameters on an
    :class:`~sensitivity.estimation.ArraySpace`; the symmetries orthogonal matrices."""

    def __init__(self, force: Force, symmetries: list[np.ndarray], point: np.ndarray):
        self.force, self.point, self.name = force, np.asarray(point, dtype=float), force.name
        self.group = [np.eye(self.point.size), *[np.asarray(S, dtype=float) for S in symmetries]]

    def derivative(self, q):
        q = np.asarray(q, dtype=float)
        S = min(self.group, key=lambda S: float(np.linalg.norm(S @ q - self.point)))
        return S.T @ self.force.derivative(S @ q)


def sample_arguments(config: RunConfig) -> dict[str, Any]:
    """The keywords of :func:`~sensitivity.estimation.sample` that ``[sampler]`` sets (not ``initial``, ``comm``,
    ``output``, ``resume``)."""
    s = config.values["sampler"]
    return {key: s[key] for key in ("num_draws", "num_warmup", "num_chains", "seed", "step_size", "target_accept",
                                    "thin", "chunk_size", "ranks_per_chain")}
