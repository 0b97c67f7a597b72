"""The one door to the DOLFINx/PETSc calls that change between versions.

Everything that assembles, imposes boundary rows, creates linear or eigen solvers,
writes VTX files, turns gmsh models into meshes or moves data between DOLFINx
Functions and PETSc vectors goes through here (no other module of the package
calls ``dolfinx.fem.petsc``, ``dolfinx.io`` or gmsh's DOLFINx bridge), so that a
DOLFINx upgrade changes this file only. Written against DOLFINx 0.11 / PETSc 3.25.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dolfinx.fem as fem
import dolfinx.fem.petsc as fem_petsc
import numpy as np
import ufl
from petsc4py import PETSc

from sensitivity.errors import SensitivityError

__all__ = [
    "COMPLEX",
    "DEFAULT_EIGEN_OPTIONS",
    "DEFAULT_LU_OPTIONS",
    "SolverError",
    "WRONG_TRANSPOSE_SOLVERS",
    "assemble_matrix",
    "assemble_vector",
    "check_transpose_solver",
    "control_derivative",
    "create_eps",
    "create_ksp",
    "dense_column",
    "dirichlet_values",
    "form",
    "gmsh_geometry",
    "gmsh_model_to_mesh",
    "gmsh_topology",
    "hermitian_transpose_mat_mult",
    "mat_solve_hermitian_transpose",
    "measure_size",
    "real_part",
    "reassemble_matrix",
    "set_up",
    "solve_hermitian_transpose",
    "solve_linear_problem",
    "to_dense",
    "unique_prefix",
    "vtx_writer",
]

#: Direct solve with MUMPS: the default for every linear operator of a time stepper.
DEFAULT_LU_OPTIONS: dict[str, Any] = {
    "ksp_type": "preonly",
    "pc_type": "lu",
    "pc_factor_mat_solver_type": "mumps",
}

_prefix_counter = itertools.count()

#: Whether PETSc (and so every state vector) is complex (``dolfinx-solver-complex``). In a complex
#: build states are complex, controls stay real (stored with zero imaginary part), adjoints use
#: Hermitian transposes and derivatives of real objectives are real parts (:func:`real_part`).
COMPLEX: bool = bool(np.issubdtype(PETSc.ScalarType, np.complexfloating))


class SolverError(SensitivityError):
    """A PETSc linear solve did not converge."""


def form(ufl_form):
    """Compile a UFL form (``dolfinx.fem.form``)."""
    return fem.form(ufl_form)


def measure_size(msh, measure) -> float:
    """:math:`\\int 1` over ``measure`` (e.g. ``dx(tag)``) on ``msh``, summed over ranks (collective)."""
    one = fem.Constant(msh, PETSc.ScalarType(1.0))
    return float(np.real(msh.comm.allreduce(fem.assemble_scalar(fem.form(one * measure)))))


def assemble_matrix(compiled_form) -> PETSc.Mat:
    """Assemble a bilinear form into a finalized PETSc matrix (no boundary conditions)."""
    A = fem_petsc.assemble_matrix(compiled_form)
    A.assemble()
    return A


def reassemble_matrix(mat: PETSc.Mat, compiled_form) -> PETSc.Mat:
    """Assemble a bilinear form again into ``mat`` (same sparsity; collective)."""
    mat.zeroEntries()
    fem_petsc.assemble_matrix(mat, compiled_form)
    mat.assemble()
    return mat


def dirichlet_values(space: fem.FunctionSpace, bcs) -> PETSc.Vec:
    """A vector of ``space`` holding the prescribed values of ``bcs`` on their dofs, zero elsewhere (owned
    entries; not collective). The caller destroys it."""
    g = fem.Function(space)
    fem_petsc.set_bc(g.x.petsc_vec, list(bcs))
    return g.x.petsc_vec.copy()


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


@contextmanager
def _options(petsc_options: Mapping[str, Any], name: str) -> Iterator[str]:
    """Put ``petsc_options`` in the options database under a fresh prefix for the block's duration.

    The solver made in the block reads them with ``setFromOptions`` and ``setUp``
    (where a factorization such as MUMPS reads its ``mat_mumps_*`` options); they are
    then removed, so solvers do not leak options into each other.
    """
    prefix = unique_prefix(name)
    db = PETSc.Options()
    for key, value in petsc_options.items():
        db[f"{prefix}{key}"] = value
    try:
        yield prefix
    finally:
        for key in petsc_options:
            del db[f"{prefix}{key}"]


def create_ksp(A: PETSc.Mat, petsc_options: Mapping[str, Any] | None, name: str) -> PETSc.KSP:
    """A KSP for ``A`` configured from a ``petsc_options`` dict under a unique prefix (set up).

    Non-convergence raises (``ksp_error_if_not_converged``).
    """
    options = dict(DEFAULT_LU_OPTIONS if petsc_options is None else petsc_options)
    options.setdefault("ksp_error_if_not_converged", True)
    ksp = PETSc.KSP().create(A.getComm())
    with _options(options, name) as prefix:
        ksp.setOptionsPrefix(prefix)
        ksp.setOperators(A)
        ksp.setFromOptions()
        set_up(ksp, name)  # factor while the options are still in the database
    return ksp


def set_up(ksp: PETSc.KSP, name: str) -> PETSc.KSP:
    """``ksp.setUp()`` (the factorization of a direct solver), with a PETSc failure raised as
    :class:`SolverError` naming the solver and the error code (collective)."""
    try:
        ksp.setUp()
    except PETSc.Error as exc:
        raise SolverError(f"setting up the {name} solver failed (PETSc error code {exc.ierr}): the operator is "
                          "singular, not finite, or the options do not fit it") from None
    return ksp


def solve_linear_problem(a, L, bcs, petsc_options: Mapping[str, Any] | None, name: str) -> fem.Function:
    """Solve the linear variational problem ``a(u, v) = L(v)`` with Dirichlet ``bcs`` (collective).

    ``petsc_options`` as for :func:`create_ksp` (default MUMPS LU); the solver and its
    matrix and vector are destroyed before returning the solution Function.
    """
    options = dict(DEFAULT_LU_OPTIONS if petsc_options is None else petsc_options)
    options.setdefault("ksp_error_if_not_converged", True)
    problem = fem_petsc.LinearProblem(a, L, bcs=list(bcs), petsc_options=options,
                                      petsc_options_prefix=unique_prefix(name))
    try:
        solution = problem.solve()
    finally:
        for obj in (problem.solver, problem.A, problem.b):
            obj.destroy()
    return solution


def vtx_writer(comm, path: str, functions):
    """A VTX (ADIOS2 ``.bp``) writer of ``functions`` that writes the mesh once (collective)."""
    import dolfinx.io

    return dolfinx.io.VTXWriter(comm, str(path), list(functions), engine="BPFile",
                                mesh_policy=dolfinx.io.VTXMeshPolicy.reuse)


def gmsh_model_to_mesh(model, comm, rank: int, gdim: int, partitioner=None, **kwargs):
    """``dolfinx.io.gmsh.model_to_mesh``: distribute the gmsh model held on ``rank`` (collective)."""
    from dolfinx.io.gmsh import model_to_mesh

    if partitioner is not None:
        kwargs["partitioner"] = partitioner
    return model_to_mesh(model, comm, rank, gdim=gdim, **kwargs)


def gmsh_geometry(model) -> np.ndarray:
    """The node coordinates of a gmsh model, shape (num_nodes, 3) (``dolfinx.io.gmsh.extract_geometry``)."""
    from dolfinx.io.gmsh import extract_geometry

    return extract_geometry(model)


def gmsh_topology(model):
    """Cells and markers of a gmsh model by cell type (``dolfinx.io.gmsh.extract_topology_and_markers``)."""
    from dolfinx.io.gmsh import extract_topology_and_markers

    return extract_topology_and_markers(model)


@contextmanager
def dense_column(block: PETSc.Mat, j: int, mode: str) -> Iterator[PETSc.Vec]:
    """Column ``j`` of a dense PETSc matrix as a Vec view (``mode`` "r", "w" or "rw"; not collective)."""
    vec = block.getDenseColumnVec(j, mode)
    try:
        yield vec
    finally:
        block.restoreDenseColumnVec(j, mode)


def to_dense(mat: PETSc.Mat) -> np.ndarray:
    """A (small) distributed PETSc matrix as a dense array gathered on every rank (collective)."""
    comm = mat.getComm().tompi4py()
    rstart, rend = mat.getOwnershipRange()
    n = mat.getSize()[1]
    local = np.zeros((rend - rstart, n), dtype=PETSc.ScalarType)
    for i in range(rstart, rend):
        cols, vals = mat.getRow(i)
        local[i - rstart, cols] = vals
    return np.vstack(comm.allgather(local))


#: Shift-and-invert with a MUMPS factorization: the default for the lowest eigenpairs.
DEFAULT_EIGEN_OPTIONS: dict[str, Any] = {
    "eps_type": "krylovschur",
    "st_type": "sinvert",
    "st_ksp_type": "preonly",
    "st_pc_type": "lu",
    "st_pc_factor_mat_solver_type": "mumps",
}


def create_eps(A: PETSc.Mat, B: PETSc.Mat | None, petsc_options: Mapping[str, Any] | None, name: str, *,
               nev: int, target: float, tol: float, problem_type: str = "GHEP"):
    r"""A SLEPc eigensolver for :math:`Ax = \lambda Bx`: the ``nev`` eigenvalues nearest ``target``
    (real part), relative tolerance ``tol``, further configured by ``petsc_options`` (``eps_*``,
    ``st_*``; default :data:`DEFAULT_EIGEN_OPTIONS`). Set up; call ``solve``."""
    from slepc4py import SLEPc

    options = dict(DEFAULT_EIGEN_OPTIONS if petsc_options is None else petsc_options)
    eps = SLEPc.EPS().create(A.getComm())
    with _options(options, name) as prefix:
        eps.setOptionsPrefix(prefix)
        eps.setOperators(A, B)
        eps.setProblemType(getattr(SLEPc.EPS.ProblemType, problem_type))
        eps.setDimensions(nev, PETSc.DECIDE, PETSc.DECIDE)
        eps.setTarget(target)
        eps.setWhichEigenpairs(SLEPc.EPS.Which.TARGET_REAL)
        eps.setTolerances(tol, 1000)
        eps.setFromOptions()
        eps.setUp()
    return eps


# --------------------------------------------------------------------------- real and complex builds


#: Factorizations whose transposed solve PETSc 3.25 gets wrong: SuperLU_DIST's ``MatSolveTranspose``
#: returns :math:`A^{-1}b`, not :math:`A^{-T}b`, without an error (measured: residual 3.4 against 1e-15 for
#: MUMPS on a 40 x 40 non-symmetric matrix, 1-3 ranks).
WRONG_TRANSPOSE_SOLVERS = ("superlu_dist",)


def check_transpose_solver(ksp: PETSc.KSP) -> None:
    """Raise :class:`SolverError` (on every rank alike) if ``ksp`` factors with a solver in
    :data:`WRONG_TRANSPOSE_SOLVERS`: adjoints would be silently wrong."""
    pc = ksp.getPC()
    if pc.getType() in ("lu", "cholesky"):
        solver = pc.getFactorSolverType()
        if solver in WRONG_TRANSPOSE_SOLVERS:
            raise SolverError(f"transposed solves with pc_factor_mat_solver_type = {solver!r} are wrong in this PETSc "
                              f"(it solves A x = b instead of A^T x = b); use 'mumps' (the default) for adjoints")


def _hermitian_transpose_solve(ksp: PETSc.KSP, solve, b, x):
    """``solve(b, x)`` is a transposed solve; make it the Hermitian one (``b`` unchanged, ``x`` returned)."""
    check_transpose_solver(ksp)
    if not COMPLEX:
        solve(b, x)
        return x
    b.conjugate()  # A^H x = b  <=>  A^T conj(x) = conj(b)
    try:
        solve(b, x)
    finally:
        b.conjugate()
    x.conjugate()
    return x


def solve_hermitian_transpose(ksp: PETSc.KSP, b: PETSc.Vec, x: PETSc.Vec) -> PETSc.Vec:
    """Solve :math:`A^Hx = b` with the factorization of ``ksp`` (:math:`A^T` in a real build; ``b`` unchanged)."""
    return _hermitian_transpose_solve(ksp, ksp.solveTranspose, b, x)


def mat_solve_hermitian_transpose(ksp: PETSc.KSP, B: PETSc.Mat, X: PETSc.Mat) -> PETSc.Mat:
    """Solve :math:`A^HX = B` for dense blocks with the factorization of ``ksp`` (``B`` unchanged)."""
    return _hermitian_transpose_solve(ksp, ksp.matSolveTranspose, B, X)


def hermitian_transpose_mat_mult(A: PETSc.Mat, Y: PETSc.Mat, out: PETSc.Mat | None = None) -> PETSc.Mat:
    """:math:`A^HY` for a dense block ``Y`` (``Y`` unchanged; ``out`` reused when given)."""
    if COMPLEX:
        Y.conjugate()
    try:
        out = A.transposeMatMult(Y) if out is None else A.transposeMatMult(Y, out)
    finally:
        if COMPLEX:
            Y.conjugate()
    if COMPLEX:
        out.conjugate()
    return out


def real_part(vec: PETSc.Vec) -> PETSc.Vec:
    """Drop the imaginary part of ``vec`` in place (a no-op in a real build; not collective)."""
    if COMPLEX:
        vec.array[:] = vec.array_r.real
    return vec


def control_derivative(functional, control: fem.Function):
    r"""The linear form :math:`\psi \mapsto \partial_c\,\mathrm{functional}[\psi]` on the control space (UFL).

    The derivative direction enters conjugated, ``conj(TestFunction)``, as complex-mode UFL wants of
    a linear form; for real basis functions and a real-valued control this changes nothing.
    """
    space = control.function_space
    direction = fem.Function(space)
    form = ufl.derivative(functional, control, direction)
    return ufl.replace(form, {direction: ufl.conj(ufl.TestFunction(space))})
