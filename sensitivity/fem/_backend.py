"""The thin layer over DOLFINx/PETSc calls that change between versions.

Everything that assembles, creates solvers or moves data between DOLFINx
Functions and PETSc vectors goes through here, so that a DOLFINx upgrade changes
this file only. Written against DOLFINx 0.11 / PETSc 3.25.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import dolfinx.fem as fem
import dolfinx.fem.petsc as fem_petsc
from petsc4py import PETSc

from sensitivity.errors import SensitivityError

__all__ = [
    "DEFAULT_LU_OPTIONS",
    "SolverError",
    "assemble_matrix",
    "assemble_vector",
    "create_ksp",
    "form",
    "unique_prefix",
]

#: Direct solve with MUMPS: the default for every linear operator of a time stepper.
DEFAULT_LU_OPTIONS: dict[str, Any] = {
    "ksp_type": "preonly",
    "pc_type": "lu",
    "pc_factor_mat_solver_type": "mumps",
}

_prefix_counter = itertools.count()


class SolverError(SensitivityError):
    """A PETSc linear solve did not converge."""


def form(ufl_form):
    """Compile a UFL form (``dolfinx.fem.form``)."""
    return fem.form(ufl_form)


def assemble_matrix(compiled_form) -> PETSc.Mat:
    """Assemble a bilinear form into a finalized PETSc matrix (no boundary conditions)."""
    A = fem_petsc.assemble_matrix(compiled_form)
    A.assemble()
    return A


def assemble_vector(compiled_form, out: PETSc.Vec | None = None) -> PETSc.Vec:
    """Assemble a linear form into a PETSc vector with ghost contributions summed."""
    if out is None:
        out = fem_petsc.create_vector(compiled_form.function_spaces[0])
    with out.localForm() as local:
        local.set(0.0)
    fem_petsc.assemble_vector(out, compiled_form)
    out.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    return out


def unique_prefix(name: str) -> str:
    """A PETSc options prefix no other solver of this process uses."""
    return f"sensitivity_{name}_{next(_prefix_counter)}_"


def create_ksp(A: PETSc.Mat, petsc_options: Mapping[str, Any] | None, name: str) -> PETSc.KSP:
    """A KSP for ``A`` configured from a ``petsc_options`` dict under a unique prefix.

    The options are set under the prefix, read with ``setFromOptions`` and
    ``setUp`` (where a factorization such as MUMPS reads its ``mat_mumps_*``
    options) and then removed from the global database, so solvers do not leak
    options into each other. Non-convergence raises (``ksp_error_if_not_converged``).
    """
    options = dict(DEFAULT_LU_OPTIONS if petsc_options is None else petsc_options)
    options.setdefault("ksp_error_if_not_converged", True)
    prefix = unique_prefix(name)
    db = PETSc.Options()
    for key, value in options.items():
        db[f"{prefix}{key}"] = value
    ksp = PETSc.KSP().create(A.getComm())
    ksp.setOptionsPrefix(prefix)
    ksp.setOperators(A)
    ksp.setFromOptions()
    # Set up (and factor) while the options are still in the database: the factor
    # matrix (e.g. MUMPS, ``mat_mumps_icntl_*``) reads its options only here.
    ksp.setUp()
    for key in options:
        del db[f"{prefix}{key}"]
    return ksp
