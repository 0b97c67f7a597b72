"""The numbers of one Schrödinger sensitivity problem, for comparing PETSc builds (docs/theory.md §3.3).

Runs unchanged in a real build (split state w = (Re ψ, Im ψ)) and in a complex build
(native complex ψ), serially or under mpirun, and writes every number that must agree as
JSON (rank 0): norm and energy drift of Crank–Nicolson, densities at points and region
probabilities, the density field at the nodes, a misfit objective with Tikhonov term, its
adjoint gradient (sorted by dof coordinates), the tangent derivative, a Hessian action, the
Taylor remainders of the gradient, and the first-order and secular surrogates (eigenpairs from
SLEPc, their gradients and measured errors).

    python tests/mpi_scripts/schrodinger_numbers.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sensitivity.fem import (  # first: the package imports dolfinx_solver before dolfinx
    DensitySensors,
    Eigenbasis,
    FirstOrderSurrogate,
    ObservationMisfit,
    PotentialField,
    ReducedFunctional,
    RegionProbabilities,
    Schrodinger,
    SecularSurrogate,
    ThetaScheme,
    Tikhonov,
    gather_by_coordinates,
    gaussian_packet,
    schrodinger_space,
    surrogate_state_errors,
)
from sensitivity.io import atomic_write
from sensitivity.verification import taylor_test

import numpy as np
from dolfinx import fem, mesh
from mpi4py import MPI
from petsc4py import PETSc

SENSORS = [[0.5, 0.5], [0.62, 0.41], [0.3, 0.55], [0.45, 0.7]]


def _sorted_owned(fn: fem.Function) -> np.ndarray:
    """Owned dof values of a scalar Function, gathered and sorted by dof coordinates (real parts)."""
    return np.real(gather_by_coordinates(fn)[1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args(argv)
    comm = MPI.COMM_WORLD
    msh = mesh.create_unit_square(comm, args.n, args.n)
    W = schrodinger_space(msh, 1)
    P1 = fem.functionspace(msh, ("Lagrange", 1))
    V, v = fem.Function(P1), fem.Function(P1)
    V.interpolate(lambda x: 20.0 * ((x[0] - 0.5) ** 2 + (x[1] - 0.5) ** 2))
    v.interpolate(lambda x: np.cos(3.0 * x[0]) + x[1] ** 2 - 0.3)
    prob = Schrodinger(W, PotentialField(V))
    psi0 = gaussian_packet(prob, [0.4, 0.5], 0.12, [6.0, 2.0])
    scheme = ThetaScheme(prob, 0.005)
    out: dict = {"scalar_type": str(np.dtype(PETSc.ScalarType)), "nprocs": comm.size}

    # conservation over 400 Crank–Nicolson steps
    E0 = prob.energy(psi0)
    drift = {"norm": 0.0, "energy": 0.0}

    def watch(n, w):
        drift["norm"] = max(drift["norm"], abs(prob.norm(w) - 1.0))
        drift["energy"] = max(drift["energy"], abs(prob.energy(w) - E0) / abs(E0))

    wN = scheme.run(psi0, 400, callback=watch)
    out.update(norm_drift=drift["norm"], energy_drift=drift["energy"], energy=E0)

    # observations of the final state
    tdim = msh.topology.dim
    cells = np.arange(msh.topology.index_map(tdim).size_local, dtype=np.int32)
    mid = mesh.compute_midpoints(msh, tdim, cells)[:, 0]
    tags = mesh.meshtags(msh, tdim, cells, np.select([mid < 0.4, mid < 0.7], [1, 2], 3).astype(np.int32))
    sensors, regions = DensitySensors(W, SENSORS), RegionProbabilities(W, tags, (1, 2, 3))
    out["densities"] = sensors.evaluate(wN).tolist()
    out["region_probabilities"] = regions.evaluate(wN).tolist()
    out["density_field"] = _sorted_owned(prob.density(wN)).tolist()
    wN.destroy()

    # a reduced objective: its value, adjoint gradient, tangent derivative, Hessian action
    rng = np.random.default_rng(11)
    misfits = [
        ObservationMisfit(sensors, [4, 8, 12], rng.uniform(0.0, 20.0, (3, 4)), noise=2.0),
        ObservationMisfit(regions, [6, 12], rng.uniform(0.1, 0.5, (2, 3)), noise=0.05),
    ]
    F = ReducedFunctional(scheme, psi0, 12, misfits, regularization=Tikhonov(P1, alpha=1e-3, beta=1e-4))
    value, grad = F.value_and_derivative()
    out.update(value=value, gradient=_sorted_owned(grad).tolist(),
               gradient_dot_v=float(grad.x.petsc_vec.dot(v.x.petsc_vec).real), derivative=F.directional_derivative(v))
    # the same gradient from revolve checkpoints: 3 states in RAM, the others on disk
    disk = Path(args.json).resolve().parent / f"checkpoints_{comm.size}"
    G = ReducedFunctional(scheme, psi0, 12, misfits, regularization=Tikhonov(P1, alpha=1e-3, beta=1e-4),
                          max_states=3, checkpoint_dir=disk)
    out["checkpointed_gradient"] = _sorted_owned(G.derivative()).tolist()
    out["checkpoint_disk_writes"] = G.stats["disk_writes"]
    G.destroy()
    hv = F.hessian_action(v)
    out.update(hessian=_sorted_owned(hv).tolist(), hessian_dot_v=float(hv.x.petsc_vec.dot(v.x.petsc_vec).real))
    c0 = F.control.x.petsc_vec.copy()

    def value_at(c):
        F.set_control(c)
        return F.value()

    taylor = taylor_test(value_at, c0, v.x.petsc_vec, value=value, derivative=out["gradient_dot_v"], step=0.5)
    F.set_control(c0)
    F.destroy()
    out["taylor_remainders"] = taylor.residuals[1].tolist()
    out["taylor_rates"] = taylor.rates[1].tolist()

    # surrogates: the first-order one on the packet; the secular one on four eigenstates
    F = ReducedFunctional(scheme, psi0, 12, misfits)
    first = FirstOrderSurrogate(F).derivative()
    out["first_order_gradient"] = _sorted_owned(first).tolist()
    basis = Eigenbasis(prob, 4)
    out["energies"] = basis.energies.tolist()
    phi = fem.Function(W)
    basis.synthesize(np.array([0.6, 0.5j, 0.4 + 0.3j, 0.2]), phi.x.petsc_vec)
    phi.x.scatter_forward()
    phi.x.petsc_vec.scale(1.0 / prob.norm(phi))
    basis.destroy()
    F = ReducedFunctional(scheme, phi, 40, [ObservationMisfit(sensors, [20, 40], np.ones((2, 4)), noise=1.0)])
    secular = SecularSurrogate(F, 4)
    out["secular_gradient"] = _sorted_owned(secular.derivative()).tolist()
    out["secular_derivative"] = secular.directional_derivative(v)
    errors = surrogate_state_errors(scheme, phi, v, [1, 10, 40], 4)
    out["secular_relative_errors"] = errors.secular_relative.tolist()
    out["first_order_relative_errors"] = errors.first_order_relative.tolist()
    secular.destroy()
    if comm.rank == 0:
        atomic_write(args.json, lambda tmp: open(tmp, "w").write(json.dumps(out, indent=1)))
        print(f"{out['scalar_type']} on {comm.size} rank(s): norm drift {out['norm_drift']:.2e}, "
              f"gradient·v {out['gradient_dot_v']:.12e}, derivative {out['derivative']:.12e}, "
              f"Taylor rates {np.round(out['taylor_rates'], 3)}")
    for obj in (scheme, c0):
        obj.destroy()
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
