"""No PETSc object of the package is left to the cyclic garbage collector.

Destroying some PETSc objects is collective (a MUMPS factorization frees its distributed factors with
MPI calls). Reference counting destroys an object at the same point of the program on every rank; the
cyclic collector runs when each rank's allocation counter says so, at different points on different
ranks, and a collective destroy there deadlocks or crashes the run. So none of the package's objects
may sit in a reference cycle with a PETSc object (a ReducedFunctional once held an Adjoint that held
it back). Third-party cycles (UFL's replacer caches) hold no KSP or Mat.
"""

from __future__ import annotations

import gc
from collections import Counter

import numpy as np
import pytest
from dolfinx import fem, mesh
from mpi4py import MPI

from sensitivity.estimation import BiLaplacianPrior, Posterior, ReducedMisfit
from sensitivity.fem import (
    AdvectionDiffusion,
    AsymptoticSurrogate,
    ObservationMisfit,
    PointSensors,
    ReducedFunctional,
    StreamFunction,
    SurrogateGradient,
    ThetaScheme,
    Tikhonov,
)


@pytest.fixture(scope="module")
def problem():
    msh = mesh.create_unit_square(MPI.COMM_WORLD, 4, 4)
    V = fem.functionspace(msh, ("Lagrange", 1))
    S = fem.functionspace(msh, ("Lagrange", 2))
    psi = fem.Function(S)
    psi.interpolate(lambda x: np.sin(np.pi * x[0]) ** 2 * np.sin(np.pi * x[1]) ** 2)
    theta0 = fem.Function(V)
    theta0.interpolate(lambda x: x[0])
    return AdvectionDiffusion(V, StreamFunction(psi), 0.1), theta0, PointSensors(V, [[0.3, 0.3]])


def _functional(problem, regularization=True):
    prob, theta0, sensors = problem
    reg = Tikhonov(prob.control.space, alpha=1e-3) if regularization else None
    return ReducedFunctional(ThetaScheme(prob, 0.01), theta0, 4,
                             [ObservationMisfit(sensors, [2, 4], np.zeros((2, 1)))], reg)


def _adjoint(problem):
    F = _functional(problem)
    F.derivative()
    F.hessian_action(F.control_space.function(F.control.x.petsc_vec))
    return F


def _surrogates(problem):
    F = _functional(problem)
    return [F, SurrogateGradient(F, 1), AsymptoticSurrogate(F)]


def _posterior(problem):
    misfit = ReducedMisfit(_functional(problem, regularization=False))
    posterior = Posterior(misfit, BiLaplacianPrior(misfit.space, 0.1, 1.0))
    posterior.value_and_derivative(misfit.space.zeros())
    posterior.gradient(misfit.space.zeros())
    return posterior


@pytest.mark.mpi
@pytest.mark.parametrize("make", [_adjoint, _surrogates, _posterior], ids=["adjoint", "surrogates", "posterior"])
def test_no_petsc_object_of_the_package_is_in_a_reference_cycle(problem, make):
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        made = make(problem)
        for s in made if isinstance(made, list) else [made]:
            if hasattr(s, "derivative") and not isinstance(s, ReducedFunctional):
                s.derivative()
        del made, s
        gc.collect()
        kinds = Counter(f"{type(o).__module__}.{type(o).__name__}" for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()
    offending = sorted(k for k in kinds if k.startswith(("petsc4py", "slepc4py", "sensitivity")))
    assert not offending, offending
