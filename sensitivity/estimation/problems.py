r"""Verification problems of the estimation layer (docs/theory.md §4), on the unit square.

:func:`point_observation_problem` (a linear-Gaussian problem on a mesh: point values of the control
under the bi-Laplacian prior; its posterior is known exactly,
:func:`~sensitivity.estimation.linear.exact_posterior`), :func:`advection_problem` (a nonlinear one:
the stream function of an advection–diffusion flow from point readings of the tracer) and
:func:`map_iterations_growth` (Newton–CG iterations of :func:`~sensitivity.estimation.map.find_map` on
three meshes; the benchmark's ``map_iterations_growth`` is its ``growth``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.map.driver import find_map
from sensitivity.estimation.posterior import Posterior
from sensitivity.estimation.vectors import FunctionVectors
from sensitivity.validation import integer

import numpy as np
from mpi4py import MPI

__all__ = ["REDUNDANT_LU", "advection_problem", "dense_linear_problem", "map_iterations_growth",
           "point_observation_problem"]


#: A direct solver for small distributed problems: every rank factors the whole matrix (one gather and one
#: scatter per solve, fast also when mpirun oversubscribes the cores, where MUMPS is slow).
REDUNDANT_LU = {"ksp_type": "preonly", "pc_type": "redundant", "redundant_pc_type": "lu",
                "redundant_pc_factor_mat_solver_type": "petsc"}


def point_observation_problem(comm: MPI.Comm, n: int = 8, *, degree: int = 1, sensors: int = 4,
                              gamma: float = 0.05, delta: float = 1.0, noise: float = 0.05, robin: bool = True,
                              seed: int = 20261201, petsc_options: Mapping[str, Any] | None = None):
    r"""A linear-Gaussian problem on the unit square: point values of the control under the bi-Laplacian prior.

    The control is a P``degree`` field on an ``n`` × ``n`` mesh with the prior
    :class:`~sensitivity.estimation.bilaplacian.BiLaplacianPrior` (``gamma``, ``delta``, ``robin``);
    the data are its values at ``sensors`` × ``sensors`` interior points for the truth
    :math:`\sin(2\pi x)\cos(\pi y)/2`, plus noise of standard deviation ``noise`` from ``seed`` (the same
    numbers on every mesh and rank count). Its posterior is Gaussian and known exactly
    (:func:`~sensitivity.estimation.linear.exact_posterior`; collective). ``petsc_options``: the prior's
    solvers (default MUMPS LU; :data:`REDUNDANT_LU` for small problems on many ranks).

    Returns
    -------
    (posterior, misfit, prior) : Posterior, LinearMisfit, BiLaplacianPrior
    """
    from sensitivity.estimation.bilaplacian import BiLaplacianPrior
    from sensitivity.estimation.linear import LinearMisfit
    from sensitivity.fem import ControlSpace, PointSensors

    from dolfinx import fem
    from dolfinx import mesh as dmesh

    msh = dmesh.create_unit_square(comm, n, n)
    V = fem.functionspace(msh, ("Lagrange", degree))
    space = FunctionVectors(ControlSpace(V))
    grid = (np.arange(sensors) + 0.5) / sensors * 0.8 + 0.1
    points = np.array([[x, y] for x in grid for y in grid])
    probe = PointSensors(V, points)
    truth = 0.5 * np.sin(2 * np.pi * points[:, 0]) * np.cos(np.pi * points[:, 1])
    data = truth + noise * np.random.default_rng(seed).standard_normal(len(points))

    def apply_transpose(w):
        out = space.zeros()
        probe.apply_transpose(w, out)
        return out

    misfit = LinearMisfit(space, probe.evaluate, apply_transpose, data, noise)
    prior = BiLaplacianPrior(space, gamma=gamma, delta=delta, robin=robin, petsc_options=petsc_options)
    return Posterior(misfit, prior), misfit, prior


def advection_problem(comm: MPI.Comm, n: int = 8, *, steps: int = 10, dt: float = 0.02, kappa: float = 0.05,
                      noise: float = 0.01, gamma: float = 0.1, delta: float = 10.0, seed: int = 20261202):
    r"""A nonlinear problem: the P1 stream function :math:`\psi` of an advection–diffusion flow from tracer readings.

    On an ``n`` × ``n`` unit square, the tracer (P1, a Gaussian blob at (0.3, 0.5), diffusivity ``kappa``,
    Crank–Nicolson with ``dt``) is carried by :math:`u = \mathrm{curl}\,\psi`; the data are its values at
    3 × 3 sensors at steps ``steps/2`` and ``steps``, computed with the truth
    :math:`\psi = 0.15\sin^2(\pi x)\sin^2(\pi y)` on the same mesh plus noise of standard deviation
    ``noise`` from ``seed``; the prior is bi-Laplacian (``gamma``, ``delta``, Robin) with zero mean. The
    misfit depends on :math:`\psi` nonlinearly (through the operator). Collective.

    Returns
    -------
    (posterior, functional) : Posterior, sensitivity.fem.ReducedFunctional
        The functional (no regularization) to destroy after use.
    """
    from sensitivity.estimation.bilaplacian import BiLaplacianPrior
    from sensitivity.estimation.posterior import ReducedMisfit
    from sensitivity.fem import (
        AdvectionDiffusion,
        ObservationMisfit,
        PointSensors,
        ReducedFunctional,
        StreamFunction,
        ThetaScheme,
    )

    from dolfinx import fem
    from dolfinx import mesh as dmesh

    msh = dmesh.create_unit_square(comm, n, n)
    V = fem.functionspace(msh, ("Lagrange", 1))
    S = fem.functionspace(msh, ("Lagrange", 1))
    psi = fem.Function(S)
    psi.interpolate(lambda x: 0.15 * np.sin(np.pi * x[0]) ** 2 * np.sin(np.pi * x[1]) ** 2)
    problem = AdvectionDiffusion(V, StreamFunction(psi), kappa=kappa)
    theta0 = fem.Function(V)
    theta0.interpolate(lambda x: np.exp(-20 * ((x[0] - 0.3) ** 2 + (x[1] - 0.5) ** 2)))
    scheme = ThetaScheme(problem, dt)
    grid = (0.3, 0.5, 0.7)
    sensors = PointSensors(V, [[x, y] for x in grid for y in grid])
    observed = np.array([max(1, steps // 2), steps])
    readings = []

    def record(k, theta):
        if k in observed:
            readings.append(sensors.evaluate(theta))

    scheme.run(theta0, steps, callback=record).destroy()
    data = np.array(readings) + noise * np.random.default_rng(seed).standard_normal((len(observed), 9))
    F = ReducedFunctional(scheme, theta0, steps, [ObservationMisfit(sensors, observed, data, noise=noise)])
    misfit = ReducedMisfit(F)
    prior = BiLaplacianPrior(misfit.space, gamma=gamma, delta=delta, robin=True)
    return Posterior(misfit, prior), F


def map_iterations_growth(problem: str = "advection", sizes: Sequence[int] = (8, 16, 32), method: str = "nls", *,
                          comm: MPI.Comm | None = None, **options) -> dict:
    """Newton–CG (or ``lmvm``) iterations of :func:`find_map` on three refinements of a verification problem.

    ``problem`` is ``"advection"`` (:func:`advection_problem`) or ``"linear"``
    (:func:`point_observation_problem`); ``options`` go to :func:`find_map` (default ``gttol=1e-6``;
    ``precondition=False`` to see the growth without the prior preconditioner). Returns the sizes, the
    iterations, Hessian actions, CG iterations and objective evaluations per mesh, and ``growth``: the
    iterations on the finest mesh over those on the coarsest (the benchmark's
    ``map_iterations_growth``; at most 1.2 with the preconditioner). Collective.
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    if problem not in ("advection", "linear"):
        raise InvalidArgumentError(f"problem must be 'advection' or 'linear', got {problem!r}")
    sizes = [integer(s, "sizes", minimum=2) for s in sizes]
    if len(sizes) < 2:
        raise InvalidArgumentError(f"sizes must hold at least two mesh sizes, got {sizes}")
    options.setdefault("gttol", 1e-6)
    out: dict[str, list] = {"sizes": sizes, "iterations": [], "hessian_actions": [], "krylov_iterations": [],
                            "evaluations": [], "reasons": [], "seconds": []}
    for n in sizes:
        if problem == "advection":
            posterior, F = advection_problem(comm, n)
        else:
            (posterior, _, _), F = point_observation_problem(comm, n), None
        q0 = posterior.space.zeros()
        result = find_map(posterior, q0, method, **options)
        for key in ("iterations", "hessian_actions", "krylov_iterations", "evaluations", "reason", "seconds"):
            out["reasons" if key == "reason" else key].append(getattr(result, key))
        for vec in (q0, result.point):
            posterior.space.destroy(vec)
        posterior.prior.destroy()
        if F is not None:
            F.destroy()
            F.scheme.destroy()
    out["growth"] = out["iterations"][-1] / out["iterations"][0]
    out["krylov_growth"] = out["krylov_iterations"][-1] / max(out["krylov_iterations"][0], 1)
    return out


def dense_linear_problem(comm: MPI.Comm | None = None, n: int = 12, m: int = 5, *, noise: float = 0.1,
                         jitter: float = 1.0, seed: int = 0):
    r"""A dense linear-Gaussian problem: ``m`` noisy observations :math:`Gq` of ``n`` parameters under a
    correlated Gaussian prior :math:`N(\bar m, AA^T/n + \text{jitter}\,I)`, :math:`G`, the data, :math:`A` and
    :math:`\bar m` drawn in that order from ``numpy.random.default_rng(seed)`` (the same on every rank).

    Returns
    -------
    (posterior, misfit, prior) : Posterior, LinearMisfit, GaussianPrior
    """
    from sensitivity.estimation.linear import LinearMisfit
    from sensitivity.estimation.prior import GaussianPrior

    rng = np.random.default_rng(seed)
    G = rng.standard_normal((m, n))
    misfit = LinearMisfit.from_matrix(G, rng.standard_normal(m), noise, comm=comm)
    A = rng.standard_normal((n, n))
    prior = GaussianPrior(misfit.space, mean=rng.standard_normal(n), covariance=A @ A.T / n + jitter * np.eye(n))
    return Posterior(misfit, prior), misfit, prior

