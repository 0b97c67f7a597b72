"""Finite-element builders shared by the tests (not a test module; the tests get these through
the fixtures of ``tests/conftest.py``, which imports this module only when a fixture is used,
so that the dense tests need no DOLFINx).

- :func:`advection_problem`: the small advection–diffusion problem of docs/theory.md §2 on the
  unit square (P1 θ, a stream-function or velocity-field control, optional SUPG and inflow);
- :func:`advection_functional`: a :class:`ReducedFunctional` on it with every kind of term
  (point sensors, region averages, a field misfit, H¹ Tikhonov);
- :func:`control_map`, :func:`tangent_taylor_test`, :func:`reduced_taylor_test`: the maps that
  ``sensitivity.verification.taylor_test`` checks (docs/theory.md §6): the discrete solver rerun
  with a perturbed control.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import sensitivity  # noqa: F401  (imports dolfinx_solver before dolfinx)
from dolfinx import fem, mesh
from sensitivity.fem import (
    AdvectionDiffusion,
    FieldMisfit,
    ObservationMisfit,
    PointSensors,
    ReducedFunctional,
    RegionAverages,
    StreamFunction,
    Tangent,
    ThetaScheme,
    Tikhonov,
    VelocityField,
)
from sensitivity.verification import TaylorResult, taylor_test

#: The point sensors of :func:`advection_functional`.
SENSORS = [[0.5, 0.5], [0.7, 0.3], [0.25, 0.8]]


def blob(x):
    """The initial tracer: a Gaussian at (0.3, 0.5)."""
    return np.exp(-20 * ((x[0] - 0.3) ** 2 + (x[1] - 0.5) ** 2))


def advection_problem(comm, n=6, control="stream", supg=False, inflow=False, kappa=0.05):
    """P1 θ on the n x n unit square; returns ``(problem, c, v, theta0)``.

    ``control="stream"``: ψ in P2 with u = curl ψ, ψ = sin²(πx)sin²(πy) (u·n = 0 on the walls);
    ``control="field"``: u in vector P1, u = (1 + 0.3y, 0.2 sin(πx)). ``c`` is the control
    Function, ``v`` a direction in its space, ``theta0`` the :func:`blob`. ``inflow``: θ = 1 on x = 0.
    """
    msh = mesh.create_unit_square(comm, n, n)
    V = fem.functionspace(msh, ("Lagrange", 1))
    if control == "stream":
        S = fem.functionspace(msh, ("Lagrange", 2))
        c = fem.Function(S)
        c.interpolate(lambda x: np.sin(np.pi * x[0]) ** 2 * np.sin(np.pi * x[1]) ** 2)
        ctrl = StreamFunction(c)
        v = fem.Function(S)
        v.interpolate(lambda x: x[0] * (1 - x[0]) * x[1] * (1 - x[1]) * (1 + x[0]))
    else:
        S = fem.functionspace(msh, ("Lagrange", 1, (2,)))
        c = fem.Function(S)
        c.interpolate(lambda x: np.vstack([1.0 + 0.3 * x[1], 0.2 * np.sin(np.pi * x[0])]))
        ctrl = VelocityField(c)
        v = fem.Function(S)
        v.interpolate(lambda x: np.vstack([np.cos(x[1]), x[0] * x[1]]))
    bcs = []
    if inflow:
        dofs = fem.locate_dofs_geometrical(V, lambda x: np.isclose(x[0], 0.0))
        bcs = [fem.dirichletbc(np.float64(1.0), dofs, V)]
    prob = AdvectionDiffusion(V, ctrl, kappa, bcs=bcs, supg=supg)
    th0 = fem.Function(V)
    th0.interpolate(blob)
    return prob, c, v, th0


def advection_functional(comm, *, control="stream", supg=False, inflow=False, theta=0.5, nsteps=12, n=6, dt=0.02,
                         **kwargs):
    """A reduced functional on :func:`advection_problem` with every kind of term; returns ``(F, v)``.

    Misfits: the :data:`SENSORS` at three steps (noise per step), region averages of x < 1/2 and
    x > 1/2, a field misfit at two steps; an L² + H¹ Tikhonov term. The data are drawn from a
    seeded generator (the same on every rank). ``kwargs`` go to :class:`ReducedFunctional`.
    """
    prob, c, v, th0 = advection_problem(comm, n=n, control=control, supg=supg, inflow=inflow)
    scheme = ThetaScheme(prob, dt, theta=theta)
    V = prob.V
    msh = V.mesh
    sensors = PointSensors(V, SENSORS)
    tdim = msh.topology.dim
    ncells = msh.topology.index_map(tdim).size_local
    midpoints = mesh.compute_midpoints(msh, tdim, np.arange(ncells, dtype=np.int32))
    tags = mesh.meshtags(msh, tdim, np.arange(ncells, dtype=np.int32),
                         np.where(midpoints[:, 0] < 0.5, 1, 2).astype(np.int32))
    regions = RegionAverages(V, tags, [1, 2])
    steps = np.array([max(1, nsteps // 3), max(2, 2 * nsteps // 3), nsteps])
    rng = np.random.default_rng(3)  # the same data on every rank
    data_s = rng.uniform(0, 0.3, (3, sensors.num_sensors))
    data_r = rng.uniform(0, 0.1, (3, 2))
    fields = []
    for k in range(2):
        f = fem.Function(V)
        f.interpolate(lambda x, k=k: 0.2 * np.exp(-10 * ((x[0] - 0.4 - 0.1 * k) ** 2 + (x[1] - 0.5) ** 2)))
        fields.append(f)
    misfits = [
        ObservationMisfit(sensors, steps, data_s, noise=[0.1, 0.2, 0.1]),
        ObservationMisfit(regions, steps, data_r, noise=0.05),
        FieldMisfit(V, [nsteps // 2, nsteps], fields, weight=3.0),
    ]
    reg = Tikhonov(prob.control.space, alpha=1e-3, beta=1e-3)
    F = ReducedFunctional(scheme, th0, nsteps, misfits, reg, **kwargs)
    return F, v


# --------------------------------------------------------------------------- maps for taylor_test


def control_map(prob, scheme, control: fem.Function, fn: Callable[[], Any]) -> Callable[[fem.Function], Any]:
    """The map ``point ↦ fn()`` evaluated with the control Function set to ``point`` (collective).

    Each call sets the dofs of ``control`` (ghosts included) to those of ``point``, rebuilds the
    operators (``prob.update()``, ``scheme.refresh()``), evaluates ``fn()`` and restores the
    control and the operators, so ``control`` itself can be the point of the Taylor test.
    """

    def evaluate(point: fem.Function):
        saved = control.x.array.copy()
        control.x.array[:] = point.x.array
        prob.update()
        scheme.refresh()
        try:
            return fn()
        finally:
            control.x.array[:] = saved
            prob.update()
            scheme.refresh()

    return evaluate


def tangent_taylor_test(prob, scheme, c, v, th0, nsteps: int, step: float):
    """Taylor test of the tangent: ‖θ_N(c + εv) − θ_N(c) − ερ_N‖ for ε = step / 2^k, k = 0..3.

    θ_N(c + εv) is the θ-scheme rerun with the perturbed control. Returns ``(result, theta_N,
    rho_N, F0)``: the :class:`TaylorResult`, the forward state and tangent of the tangent run, and
    θ_N of a plain run (the Taylor test's f(c); a test checks it equals ``theta_N``).
    """
    tangent = Tangent(scheme, [v])
    thN, (rho,) = tangent.run(th0, nsteps)
    tangent.destroy()
    run = control_map(prob, scheme, c, lambda: scheme.run(th0, nsteps))
    F0 = run(c)
    result = taylor_test(run, c, v, value=F0, derivative=rho, step=step)
    return result, thN, rho, F0


def reduced_taylor_test(F, v: fem.Function, value: float, slope: float, step: float) -> TaylorResult:
    """Taylor test of a reduced functional: |F(c + εv) − F(c) − ε slope| for ε = step / 2^k, k = 0..3.

    ``value`` = F(c) and ``slope`` = ⟨∇F, v⟩ (e.g. from the adjoint); F(c + εv) is a forward run
    with the perturbed control. The control is restored afterwards (collective).
    """
    c0 = F.control.x.petsc_vec.copy()

    def value_at(point):
        F.set_control(point)
        return F.value()

    try:
        return taylor_test(value_at, c0, v.x.petsc_vec, value=value, derivative=slope, step=step)
    finally:
        F.set_control(c0)
        c0.destroy()
