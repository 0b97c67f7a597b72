r"""The secular surrogate of Schrödinger sensitivities, from a few eigenpairs (docs/theory.md §1 skew-Hermitian, §3).

**Eigenbasis.** With :math:`\psi = a + ib` the real-split generator of
:mod:`sensitivity.fem.models.schrodinger` is, on the free (non-wall) dofs, the real form of the
skew-Hermitian :math:`-iM^{-1}H`. Its lowest eigenpairs (SLEPc, shift-and-invert about a lower
bound of the spectrum; :class:`Eigenbasis`)

.. math::

    H\phi_k = E_kM\phi_k,\qquad \phi_k^TM\phi_l = \delta_{kl}\quad(\phi_k \text{ real, zero on the walls})

span a subspace the θ-scheme leaves invariant: it maps :math:`\psi = \sum_kc_k\phi_k`,
:math:`c_k = \phi_k^TM(a + ib)`, to :math:`\sum_kr_kc_k\phi_k` with the amplification factors
:math:`r_k = (1 - (1-\vartheta)iE_k\Delta t)/(1 + \vartheta iE_k\Delta t)` (:math:`|r_k| = 1` for
Crank–Nicolson).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dolfinx.fem as fem
import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import backend
from sensitivity.fem.models.schrodinger import Schrodinger
from sensitivity.validation import finite_number, in_range, integer

__all__ = ["Eigenbasis", "degenerate_clusters", "free_nodes", "orthonormalize", "project_perturbation", "real_basis",
           "residuals"]


class Eigenbasis:
    r"""The lowest eigenpairs :math:`H\phi_k = E_kM\phi_k` of a Schrödinger generator, in its real-split layout.

    Parameters
    ----------
    problem : Schrodinger
        Its Dirichlet conditions must be homogeneous and act on both components of the
        same nodes (:func:`~sensitivity.fem.schrodinger.wall_conditions`).
    nev : int
        Number of eigenpairs; a degenerate eigenspace cut by ``nev`` is completed.
    target : float, optional
        Shift of the shift-and-invert transform, below the wanted eigenvalues (default the
        minimum of the potential's dofs, a lower bound of the spectrum for P1/DG0 potentials).
    tol : float
        Relative tolerance of the eigensolver.
    degeneracy_tol : float
        Eigenvalues closer than ``degeneracy_tol * max(1, |E|)`` form one degenerate cluster.
    petsc_options : dict, optional
        SLEPc/PETSc options (``eps_*``, ``st_*``); default shift-and-invert with MUMPS.

    Attributes
    ----------
    energies : numpy.ndarray, shape (N,)
        :math:`E_k`, ascending (:math:`N \ge` ``nev``).
    clusters : list of numpy.ndarray
        Index sets of degenerate eigenvalues, a partition of ``range(N)``.
    real_modes, imag_modes : list of petsc4py.PETSc.Vec
        :math:`e_k = (\phi_k, 0)` and :math:`f_k = (0, \phi_k)` in the state layout (complex build:
        :math:`\phi_k` and :math:`i\phi_k`), :math:`\mathbf M`-orthonormal;
        signs fixed by a generic reference function, so that a non-degenerate mode is the same
        on any number of ranks (a degenerate eigenspace's basis is not).
    residuals : numpy.ndarray, shape (N,)
        :math:`\|H\phi_k - E_kM\phi_k\|_2 / \|H\phi_k\|_2`.
    """

    def __init__(self, problem: Schrodinger, nev: int, *, target: float | None = None, tol: float = 1e-12,
                 degeneracy_tol: float = 1e-8, petsc_options: Mapping[str, Any] | None = None):
        if not isinstance(problem, Schrodinger):
            raise InvalidArgumentError(f"problem must be a Schrodinger generator, got {type(problem).__name__}")
        nev = integer(nev, "nev", minimum=1)
        tol = in_range(tol, "tol", 0.0, 1.0, low_open=True, high_open=True)
        self.degeneracy_tol = in_range(degeneracy_tol, "degeneracy_tol", 0.0, 1.0, high_open=True)
        if target is not None:
            target = finite_number(target, "target")
        self.problem = problem
        comm = problem.V.mesh.comm
        free = free_nodes(problem)
        ndofs = comm.allreduce(free.size)
        if nev > ndofs:
            raise InvalidArgumentError(f"nev = {nev} exceeds the {ndofs} free nodes")
        if target is None:
            values = problem.control.function.x.array[: problem.control.space.dofmap.index_map.size_local]
            target = comm.allreduce(float(values.real.min()) if values.size else np.inf, op=MPI.MIN)
        rstart = problem.M.getOwnershipRange()[0]
        bs = problem.V.dofmap.bs  # 2: (Re, Im) rows of a node; 1: the complex psi
        rows = (bs * free).astype(np.int32)  # local rows of psi (of its real part)
        iset_a = PETSc.IS().createGeneral((rstart + rows).astype(PETSc.IntType), comm=comm)
        iset_b = PETSc.IS().createGeneral((rstart + rows + bs - 1).astype(PETSc.IntType), comm=comm)
        H = problem.A.createSubMatrix(iset_b, iset_a)  # real: Im rows, Re columns: +H; complex: A = iH
        if backend.COMPLEX:
            H.scale(-1j)
        Ms = problem.M.createSubMatrix(iset_a, iset_a)
        try:
            self._build_modes(H, Ms, rows, nev, ndofs, petsc_options, float(target), tol)
        finally:
            for obj in (H, Ms, iset_a, iset_b):
                obj.destroy()

    # ------------------------------------------------------------------ construction

    def _build_modes(self, H, Ms, rows, nev, ndofs, petsc_options, target, tol) -> None:
        """Eigenpairs of (H, Ms) on the free rows, their clusters and the state-layout modes."""
        problem = self.problem
        want = min(nev + 2, ndofs)  # two more, to see whether the last cluster is complete
        eps = backend.create_eps(H, Ms, petsc_options, "eigenbasis", nev=want, target=target, tol=tol)
        phis = []
        try:
            eps.solve()
            nconv = eps.getConverged()
            if nconv < nev:
                raise backend.SolverError(f"the eigensolver converged {nconv} of nev = {nev} eigenpairs "
                                           f"(target {target:g}, tol {tol:g})")
            energies = []
            for i in range(nconv):
                phis.append(H.createVecRight())
                energies.append(float(np.real(eps.getEigenpair(i, phis[-1]))))
            order = np.argsort(energies, kind="stable")
            energies = np.asarray(energies)[order]
            phis = [phis[i] for i in order]
            clusters = degenerate_clusters(energies, self.degeneracy_tol)
            keep = next(c[-1] + 1 for c in clusters if c[-1] >= nev - 1)
            if keep == nconv < ndofs:
                raise backend.SolverError(f"cannot tell whether the eigenspace at E = {energies[nev - 1]:.6g} "
                                           f"continues beyond the {nconv} converged eigenpairs; raise nev")
            for phi in phis[keep:]:
                phi.destroy()
            phis, self.energies = phis[:keep], energies[:keep]
            self.clusters = [c for c in clusters if c[-1] < keep]
            if backend.COMPLEX:
                phis = real_basis(phis, Ms, self.clusters, self.energies)
            else:
                orthonormalize(phis, Ms, self.clusters)
            self.residuals = residuals(phis, H, Ms, self.energies)
            self.real_modes, self.imag_modes = [], []
            for phi in phis:  # e = psi phi (Re part phi), f = psi i phi (Im part phi)
                e, f = problem.create_vector(), problem.create_vector()
                e.set(0.0)
                f.set(0.0)
                e.array[rows] = phi.array
                if backend.COMPLEX:
                    f.array[rows] = 1j * phi.array
                else:
                    f.array[rows + 1] = phi.array
                self.real_modes.append(e)
                self.imag_modes.append(f)
        finally:
            for obj in (*phis, eps):
                obj.destroy()
        self._fix_signs()
        self._mass_modes = []
        for mode in self.real_modes + self.imag_modes:
            mm = problem.create_vector()
            problem.M.mult(mode, mm)
            self._mass_modes.append(mm)

    def _fix_signs(self) -> None:
        r"""Flip :math:`\phi_k` so that :math:`\langle\phi_k, g\rangle_M > 0` for the fixed generic
        :math:`g = e^{0.3x + 0.5y + 0.7z}`: non-degenerate modes do not depend on the partition."""
        gdim = self.problem.V.mesh.geometry.dim
        weights = np.array([0.3, 0.5, 0.7])[:gdim]
        g = fem.Function(self.problem.V)
        if backend.COMPLEX:
            g.interpolate(lambda x: np.exp(weights @ x[:gdim]))
        else:
            g.interpolate(lambda x: np.vstack([np.exp(weights @ x[:gdim]), np.zeros(x.shape[1])]))
        Mg = self.problem.create_vector()
        self.problem.M.mult(g.x.petsc_vec, Mg)
        for k, side in enumerate(np.real(Mg.mDot(self.real_modes))):
            if side < 0.0:
                self.real_modes[k].scale(-1.0)
                self.imag_modes[k].scale(-1.0)
        Mg.destroy()

    # ------------------------------------------------------------------ use

    @property
    def size(self) -> int:
        """N, the number of eigenpairs kept."""
        return self.energies.size

    def coefficients(self, w: PETSc.Vec) -> np.ndarray:
        r""":math:`c_k = \phi_k^TM(a + ib)` of a real-split state ``w`` (complex, shape (N,); collective)."""
        d = np.real(w.mDot(self._mass_modes))  # Re <e_k, w>_M, Re <f_k, w>_M
        return d[: self.size] + 1j * d[self.size:]

    def pairings(self, g: PETSc.Vec) -> np.ndarray:
        r""":math:`\gamma_k = \phi_k\cdot g_a + i\,\phi_k\cdot g_b` of a real-split dual vector ``g`` (collective)."""
        d = np.real(g.mDot(self.real_modes + self.imag_modes))
        return d[: self.size] + 1j * d[self.size:]

    def synthesize(self, c: np.ndarray, out: PETSc.Vec) -> PETSc.Vec:
        r"""``out`` = :math:`\sum_kc_k\phi_k` in the real-split layout (not collective)."""
        c = np.asarray(c, dtype=complex)
        if c.shape != (self.size,):
            raise InvalidArgumentError(f"coefficients must have shape ({self.size},), got {c.shape}")
        out.set(0.0)
        out.maxpy(np.concatenate([c.real, c.imag]), self.real_modes + self.imag_modes)
        return out

    def outside_fraction(self, w: PETSc.Vec) -> float:
        r""":math:`\|w - \Pi w\|_{\mathbf M}/\|w\|_{\mathbf M}`, the part of ``w`` outside the span (collective)."""
        r = w.duplicate()
        self.synthesize(self.coefficients(w), r)
        r.aypx(-1.0, w)
        value = self.problem.norm(r) / self.problem.norm(w)
        r.destroy()
        return value

    def amplification(self, dt: float, theta: float) -> np.ndarray:
        r""":math:`r_k = (1 - (1-\vartheta)iE_k\Delta t)/(1 + \vartheta iE_k\Delta t)`: one θ-scheme step on :math:`\phi_k`."""
        z = 1j * self.energies * dt
        return (1.0 - (1.0 - theta) * z) / (1.0 + theta * z)

    def discrete_factor(self, dt: float, theta: float) -> np.ndarray:
        r""":math:`\sigma_k = 1/((1 - (1-\vartheta)iE_k\Delta t)(1 + \vartheta iE_k\Delta t))`: :math:`dr_k/dE_k = -i\Delta t\,\sigma_kr_k`.

        So :math:`\partial(r_k^n) = -it_n\,\sigma_kr_k^n\,\partial E_k`; :math:`\sigma_k \to 1` as
        :math:`\Delta t \to 0` (the exponential's :math:`-it\,e^{-iE_kt}\partial E_k`), and
        :math:`\sigma_k = 1/(1 + E_k^2\Delta t^2/4)` for Crank–Nicolson.
        """
        z = 1j * self.energies * dt
        return 1.0 / ((1.0 - (1.0 - theta) * z) * (1.0 + theta * z))

    def destroy(self) -> None:
        for vec in (*self.real_modes, *self.imag_modes, *self._mass_modes):
            vec.destroy()
        self.real_modes, self.imag_modes, self._mass_modes = [], [], []


def project_perturbation(basis: Eigenbasis, prob: Schrodinger, v: fem.Function, w0: PETSc.Vec,
                          out: PETSc.Vec | None = None, scale: np.ndarray | None = None) -> PETSc.Vec:
    r""":math:`\mathcal P(J(v))w_0 = \sum_kd_k\phi_k`, :math:`d_k = -i\sum_{l\in C(k)}\langle\phi_k, M_v\phi_l\rangle c_l`
    with :math:`\langle\phi_k, M_v\phi_l\rangle = f_k^T\partial\mathbf A[v]e_l`; ``scale`` multiplies :math:`d_k` (collective)."""
    c = basis.coefficients(w0)
    dA = prob.dA(v)
    y = prob.create_vector()
    X = np.zeros((basis.size, basis.size))
    for l in range(basis.size):
        dA.mult(basis.real_modes[l], y)
        X[:, l] = np.real(y.mDot(basis.imag_modes))
    d = np.zeros(basis.size, dtype=complex)
    for cluster in basis.clusters:
        d[cluster] = -1j * (X[np.ix_(cluster, cluster)] @ c[cluster])
    out = prob.create_vector() if out is None else out
    basis.synthesize(d if scale is None else scale * d, out)
    dA.destroy()
    y.destroy()
    return out


# --------------------------------------------------------------------------- construction helpers


def free_nodes(problem: Schrodinger) -> np.ndarray:
    """Owned nodes without wall conditions; checks the conditions are homogeneous and node-wise."""
    rows, values = problem.dirichlet_rows()
    comm = problem.V.mesh.comm
    bs = problem.V.dofmap.bs
    nodes_a, nodes_b = np.unique(rows[rows % bs == 0] // bs), np.unique(rows[rows % bs == bs - 1] // bs)
    bad = 0 if np.array_equal(nodes_a, nodes_b) else 1
    bad |= 0 if np.all(values == 0.0) else 2
    bad = comm.allreduce(bad, op=MPI.BOR)
    if bad & 1:
        raise InvalidArgumentError("the eigenbasis needs Dirichlet conditions on both components of the same "
                                   "nodes (wall_conditions)")
    if bad & 2:
        raise InvalidArgumentError("the eigenbasis needs homogeneous Dirichlet conditions (psi = 0 on the walls)")
    n_own = problem.V.dofmap.index_map.size_local
    return np.setdiff1d(np.arange(n_own), nodes_a).astype(np.int64)


def degenerate_clusters(energies: np.ndarray, tol: float) -> list[np.ndarray]:
    """Index sets of the runs of ascending ``energies`` closer than ``tol * max(1, |E|)``: a partition."""
    clusters, start = [], 0
    for i in range(1, energies.size + 1):
        if i == energies.size or energies[i] - energies[i - 1] > tol * max(1.0, abs(energies[i])):
            clusters.append(np.arange(start, i))
            start = i
    return clusters


def orthonormalize(phis: list[PETSc.Vec], Ms: PETSc.Mat, clusters: list[np.ndarray]) -> None:
    """M-orthonormalize inside each degenerate cluster (distinct eigenvalues are M-orthogonal already)."""
    w = Ms.createVecLeft()
    for cluster in clusters:
        for pos, i in enumerate(cluster):
            for _ in range(2):  # Gram–Schmidt twice
                for j in cluster[:pos]:
                    Ms.mult(phis[j], w)
                    phis[i].axpy(-phis[i].dot(w), phis[j])
            Ms.mult(phis[i], w)
            phis[i].scale(1.0 / np.sqrt(phis[i].dot(w).real))
    w.destroy()


def real_basis(phis: list[PETSc.Vec], Ms: PETSc.Mat, clusters: list[np.ndarray], energies: np.ndarray) -> list[PETSc.Vec]:
    """Complex build: a real M-orthonormal basis of each eigenspace from the real and imaginary
    parts of its (complex) eigenvectors; the eigenspaces of the real symmetric pencil have one."""
    w = Ms.createVecLeft()
    out = []
    for cluster in clusters:
        candidates = []
        for i in cluster:
            for part in (phis[i].array_r.real, phis[i].array_r.imag):
                vec = phis[i].duplicate()
                vec.array[:] = part
                candidates.append(vec)
        Ms.mult(phis[cluster[0]], w)
        scale = np.sqrt(phis[cluster[0]].dot(w).real)
        kept = []
        for vec in candidates:
            for _ in range(2):
                for q in kept:
                    Ms.mult(q, w)
                    vec.axpy(-vec.dot(w).real, q)
            Ms.mult(vec, w)
            norm = np.sqrt(max(vec.dot(w).real, 0.0))
            if len(kept) < len(cluster) and norm > 1e-6 * scale:
                vec.scale(1.0 / norm)
                kept.append(vec)
            else:
                vec.destroy()
        if len(kept) < len(cluster):
            raise backend.SolverError(f"no real basis of the eigenspace at E = {energies[cluster[0]]:.6g}")
        out.extend(kept)
    for phi in phis:
        phi.destroy()
    w.destroy()
    return out


def residuals(phis: list[PETSc.Vec], H: PETSc.Mat, Ms: PETSc.Mat, energies: np.ndarray) -> np.ndarray:
    r""":math:`\|H\phi_k - E_kM\phi_k\|_2/\|H\phi_k\|_2` for each pair (collective)."""
    hx, mx = H.createVecLeft(), H.createVecLeft()
    out = []
    for phi, E in zip(phis, energies):
        H.mult(phi, hx)
        Ms.mult(phi, mx)
        norm = hx.norm()
        hx.axpy(-E, mx)
        out.append(hx.norm() / norm)
    hx.destroy()
    mx.destroy()
    return np.asarray(out)
