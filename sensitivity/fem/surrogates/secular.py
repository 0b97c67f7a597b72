r"""The secular surrogate of Schrödinger sensitivities, from a few eigenpairs (SPEC §1 skew-Hermitian, §3).

**Eigenbasis.** With :math:`\psi = a + ib` the real-split generator of
:mod:`sensitivity.fem.schrodinger` is, on the free (non-wall) dofs, the real form of the
skew-Hermitian :math:`-iM^{-1}H`. Its lowest eigenpairs (SLEPc, shift-and-invert about a lower
bound of the spectrum; :class:`Eigenbasis`)

.. math::

    H\phi_k = E_kM\phi_k,\qquad \phi_k^TM\phi_l = \delta_{kl}\quad(\phi_k \text{ real, zero on the walls})

span a subspace the θ-scheme leaves invariant: it maps :math:`\psi = \sum_kc_k\phi_k`,
:math:`c_k = \phi_k^TM(a + ib)`, to :math:`\sum_kr_kc_k\phi_k` with the amplification factors
:math:`r_k = (1 - (1-\vartheta)iE_k\Delta t)/(1 + \vartheta iE_k\Delta t)` (:math:`|r_k| = 1` for
Crank–Nicolson).

**Secular surrogate** (:class:`SecularSurrogate`; SPEC §1: :math:`t\,e^{tA}\mathcal P(J)`,
:math:`\mathcal P(J) = W\mathrm{diag}(W^*JW)W^*` with degenerate eigenspaces kept whole). The
perturbation of the generator along :math:`v` is :math:`J = -iM^{-1}M_v`,
:math:`(M_v)_{ij} = \int v\phi_j\phi_i`, and with :math:`S^n` for :math:`e^{t_nQ}`

.. math::

    \rho_n \approx t_nS^n\mathcal P(J)\psi_0,\qquad
    \mathcal P(J)\psi_0 = \sum_kd_k(v)\phi_k,\qquad
    d_k(v) = -i\sum_{l\in C(k)}\langle\phi_k, M_v\phi_l\rangle\,c_l,

:math:`C(k)` the cluster of eigenvalues degenerate with :math:`E_k`. This keeps exactly the part
of the derivative that grows like :math:`t` (the frequency shifts
:math:`\partial E_k[v] = \langle\phi_k, M_v\phi_k\rangle` and their mixing inside degenerate
eigenspaces); the omitted off-diagonal part stays bounded in :math:`t`, so the relative error
falls like :math:`1/t`. :math:`\psi_0` must lie in the span of the computed eigenpairs; the part
outside is ignored and reported (``stats["outside_fraction"]``).

**Discrete time.** With :math:`S^n` in place of :math:`e^{t_nQ}` the secular part of the
*discrete* derivative is :math:`\partial(r_k^n) = -it_n\sigma_kr_k^n\,\partial E_k`,
:math:`\sigma_k = 1/((1 - (1-\vartheta)iE_k\Delta t)(1 + \vartheta iE_k\Delta t))`
(:meth:`Eigenbasis.discrete_factor`; :math:`1/(1 + E_k^2\Delta t^2/4)` for Crank–Nicolson,
:math:`\to 1` as :math:`\Delta t \to 0`), so the surrogate uses :math:`\sigma_kd_k` for
:math:`d_k`: without it the error of the surrogate against the exact discrete derivative would
grow like :math:`t\,E_k^2\Delta t^2/4`.

**Gradient.** A real-split misfit gradient :math:`g = (g_a, g_b)` pairs with
:math:`\sum_kz_k\phi_k` as :math:`\mathrm{Re}\sum_kz_k\overline{\gamma_k}`,
:math:`\gamma_k = \phi_k\cdot g_a + i\,\phi_k\cdot g_b`, so

.. math::

    dF_{\rm sec}\cdot v = \langle\nabla\mathcal R, v\rangle + \mathrm{Re}\sum_k\beta_kd_k(v),\qquad
    \beta_k = \sigma_k\sum_nt_nr_k^n\,\overline{\gamma_{n,k}},

accumulated during the forward sweep (no backward sweep; nothing but :math:`\beta` is stored),
and

.. math::

    \nabla F_{\rm sec} = \nabla\mathcal R + \sum_k\sum_{l\in C(k)}\mathrm{Im}(\beta_kc_l)\,
    \partial_c\langle\phi_k, M_v\phi_l\rangle,\qquad
    \langle\phi_k, M_v\phi_l\rangle = f_k^T\,\partial\mathbf A[v]\,e_l,

:math:`e_l = (\phi_l, 0)`, :math:`f_k = (0, \phi_k)`: one assembly per eigenpair. In a complex
build :math:`e_l = \phi_l` and :math:`f_k = i\phi_k` (the states :math:`\psi = \phi` and
:math:`\psi = i\phi`), every pairing is :math:`\mathrm{Re}(x^Hy)` and the same formulas hold. The first-order
surrogate :math:`t_nS^nJ\psi_0` for comparison is :class:`~sensitivity.fem.surrogate.FirstOrderSurrogate`.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dolfinx.fem as fem
import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import _backend
from sensitivity.fem.adjoint import ReducedFunctional
from sensitivity.fem.schrodinger import Schrodinger
from sensitivity.fem.propagator import ThetaScheme
from sensitivity.fem.surrogate import _SurrogateBase, default_mass_options
from sensitivity.fem.tangent import Tangent

__all__ = ["Eigenbasis", "SecularSurrogate", "SurrogateStateErrors", "surrogate_state_errors"]


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _tolerance(value, name: str, *, zero_ok: bool) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value) \
        and (0.0 <= value < 1.0 if zero_ok else 0.0 < value < 1.0)
    if not ok:
        raise InvalidArgumentError(f"{name} must be a number in {'[0' if zero_ok else '(0'}, 1), got {value!r}")
    return float(value)


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
        nev = _positive_int(nev, "nev")
        tol = _tolerance(tol, "tol", zero_ok=False)
        self.degeneracy_tol = _tolerance(degeneracy_tol, "degeneracy_tol", zero_ok=True)
        if target is not None and (isinstance(target, bool) or not isinstance(target, numbers.Real)
                                   or not np.isfinite(target)):
            raise InvalidArgumentError(f"target must be a finite number, got {target!r}")
        self.problem = problem
        comm = problem.V.mesh.comm
        free = self._free_nodes(problem)
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
        if _backend.COMPLEX:
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
        eps = _backend.create_eps(H, Ms, petsc_options, "eigenbasis", nev=want, target=target, tol=tol)
        phis = []
        try:
            eps.solve()
            nconv = eps.getConverged()
            if nconv < nev:
                raise _backend.SolverError(f"the eigensolver converged {nconv} of nev = {nev} eigenpairs "
                                           f"(target {target:g}, tol {tol:g})")
            energies = []
            for i in range(nconv):
                phis.append(H.createVecRight())
                energies.append(float(np.real(eps.getEigenpair(i, phis[-1]))))
            order = np.argsort(energies, kind="stable")
            energies = np.asarray(energies)[order]
            phis = [phis[i] for i in order]
            clusters = self._clusters(energies)
            keep = next(c[-1] + 1 for c in clusters if c[-1] >= nev - 1)
            if keep == nconv < ndofs:
                raise _backend.SolverError(f"cannot tell whether the eigenspace at E = {energies[nev - 1]:.6g} "
                                           f"continues beyond the {nconv} converged eigenpairs; raise nev")
            for phi in phis[keep:]:
                phi.destroy()
            phis, self.energies = phis[:keep], energies[:keep]
            self.clusters = [c for c in clusters if c[-1] < keep]
            if _backend.COMPLEX:
                phis = self._real_basis(phis, Ms)
            else:
                self._orthonormalize(phis, Ms)
            self.residuals = self._residuals(phis, H, Ms)
            self.real_modes, self.imag_modes = [], []
            for phi in phis:  # e = psi phi (Re part phi), f = psi i phi (Im part phi)
                e, f = problem.create_vector(), problem.create_vector()
                e.set(0.0)
                f.set(0.0)
                e.array[rows] = phi.array
                if _backend.COMPLEX:
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

    @staticmethod
    def _free_nodes(problem: Schrodinger) -> np.ndarray:
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

    def _clusters(self, energies: np.ndarray) -> list[np.ndarray]:
        clusters, start = [], 0
        for i in range(1, energies.size + 1):
            if i == energies.size or energies[i] - energies[i - 1] > self.degeneracy_tol * max(1.0, abs(energies[i])):
                clusters.append(np.arange(start, i))
                start = i
        return clusters

    def _orthonormalize(self, phis: list[PETSc.Vec], Ms: PETSc.Mat) -> None:
        """M-orthonormalize inside each degenerate cluster (distinct eigenvalues are M-orthogonal already)."""
        w = Ms.createVecLeft()
        for cluster in self.clusters:
            for pos, i in enumerate(cluster):
                for _ in range(2):  # Gram–Schmidt twice
                    for j in cluster[:pos]:
                        Ms.mult(phis[j], w)
                        phis[i].axpy(-phis[i].dot(w), phis[j])
                Ms.mult(phis[i], w)
                phis[i].scale(1.0 / np.sqrt(phis[i].dot(w).real))
        w.destroy()

    def _real_basis(self, phis: list[PETSc.Vec], Ms: PETSc.Mat) -> list[PETSc.Vec]:
        """Complex build: a real M-orthonormal basis of each eigenspace from the real and imaginary
        parts of its (complex) eigenvectors; the eigenspaces of the real symmetric pencil have one."""
        w = Ms.createVecLeft()
        out = []
        for cluster in self.clusters:
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
                raise _backend.SolverError(f"no real basis of the eigenspace at E = {self.energies[cluster[0]]:.6g}")
            out.extend(kept)
        for phi in phis:
            phi.destroy()
        w.destroy()
        return out

    def _residuals(self, phis, H, Ms) -> np.ndarray:
        hx, mx = H.createVecLeft(), H.createVecLeft()
        out = []
        for phi, E in zip(phis, self.energies):
            H.mult(phi, hx)
            Ms.mult(phi, mx)
            norm = hx.norm()
            hx.axpy(-E, mx)
            out.append(hx.norm() / norm)
        hx.destroy()
        mx.destroy()
        return np.asarray(out)

    def _fix_signs(self) -> None:
        r"""Flip :math:`\phi_k` so that :math:`\langle\phi_k, g\rangle_M > 0` for the fixed generic
        :math:`g = e^{0.3x + 0.5y + 0.7z}`: non-degenerate modes do not depend on the partition."""
        gdim = self.problem.V.mesh.geometry.dim
        weights = np.array([0.3, 0.5, 0.7])[:gdim]
        g = fem.Function(self.problem.V)
        if _backend.COMPLEX:
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


def _project_perturbation(basis: Eigenbasis, prob: Schrodinger, v: fem.Function, w0: PETSc.Vec,
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


class SecularSurrogate(_SurrogateBase):
    r"""The secular surrogate gradient of a Schrödinger :class:`ReducedFunctional` (module docstring).

    Parameters
    ----------
    functional : ReducedFunctional
        Its problem must be a :class:`~sensitivity.fem.schrodinger.Schrodinger` generator and its
        initial state should lie in the span of the ``nev`` lowest eigenpairs.
    nev : int
        Number of eigenpairs (see :class:`Eigenbasis`).
    eigen_options : dict, optional
        Keyword arguments of :class:`Eigenbasis` (``target``, ``tol``, ``degeneracy_tol``,
        ``petsc_options``).

    Attributes
    ----------
    basis : Eigenbasis
        Recomputed when the control changes.
    stats : dict
        After :meth:`value_and_gradient`: ``eigenpairs``, ``energies``, ``cluster_sizes``,
        ``outside_fraction``, ``eigen_residual``, ``assemblies``, ``eigensolves`` (so far),
        ``stored_vectors`` (0).
    """

    def __init__(self, functional: ReducedFunctional, nev: int, *, eigen_options: Mapping[str, Any] | None = None):
        super().__init__(functional)
        if not isinstance(self.functional.problem, Schrodinger):
            raise InvalidArgumentError("the secular surrogate needs a Schrodinger problem, got "
                                       f"{type(self.functional.problem).__name__}")
        self.nev = _positive_int(nev, "nev")
        self._eigen_options = dict(eigen_options or {})
        self.basis: Eigenbasis | None = None
        self._basis_control: np.ndarray | None = None
        self.eigensolves = 0

    def _current_basis(self) -> Eigenbasis:
        """The eigenbasis of the current potential (recomputed when it changed; collective)."""
        F = self.functional
        values = F.control.x.array
        comm = F.problem.V.mesh.comm
        same = self._basis_control is not None and np.array_equal(values, self._basis_control)
        if self.basis is None or not comm.allreduce(same, op=MPI.LAND):
            if self.basis is not None:
                self.basis.destroy()
            self.basis = Eigenbasis(F.problem, self.nev, **self._eigen_options)
            self._basis_control = values.copy()
            self.eigensolves += 1
        return self.basis

    def value_and_gradient(self) -> tuple[float, fem.Function]:
        r""":math:`F(c)` (exact) and :math:`\nabla F_{\rm sec}` (a Function in the control space; collective)."""
        F = self.functional
        s, prob = F.scheme, F.problem
        basis = self._current_basis()
        c = basis.coefficients(F.theta0)
        r = basis.amplification(s.dt, s.theta)
        beta = np.zeros(basis.size, dtype=complex)
        g = s.create_vector()
        total = [0.0]

        def record(n: int, theta: PETSc.Vec) -> None:
            if any(m.active(n) for m in F.misfits):
                total[0] += F._misfit_value(n, theta)
                if n > 0:
                    g.set(0.0)
                    F._add_misfit_gradient(n, theta, g)
                    beta[:] += n * s.dt * r**n * np.conj(basis.pairings(g))

        s.run(F.theta0, F.nsteps, callback=record).destroy()
        beta *= basis.discrete_factor(s.dt, s.theta)
        grad, work = F._new_control_vector(), F._new_control_vector()
        grad.set(0.0)
        x = s.create_vector()
        for cluster in basis.clusters:
            for k in cluster:  # sum_l Im(beta_k c_l) f_k^T dA e_l = f_k^T dA x_k
                x.set(0.0)
                x.maxpy(np.imag(beta[k] * c[cluster]), [basis.real_modes[l] for l in cluster])
                grad.axpy(1.0, prob.dA_adjoint_action(basis.imag_modes[k], x, work))
        value = total[0] + F._regularization_value()
        self._regularization_gradient(grad)
        out = F._as_function(grad, "secular_surrogate_gradient")
        self.stats = {
            "eigenpairs": basis.size,
            "energies": basis.energies.copy(),
            "cluster_sizes": [len(cl) for cl in basis.clusters],
            "outside_fraction": basis.outside_fraction(F.theta0),
            "eigen_residual": float(basis.residuals.max()),
            "assemblies": basis.size,
            "eigensolves": self.eigensolves,
            "stored_vectors": 0,
        }
        for obj in (g, grad, work, x):
            obj.destroy()
        return value, out

    def projected_perturbation(self, v: fem.Function, out: PETSc.Vec | None = None) -> PETSc.Vec:
        r""":math:`\mathcal P(J(v))\psi_0 = \sum_kd_k(v)\phi_k` in the real-split layout, from the assembled :math:`\partial\mathbf A[v]` (collective)."""
        F = self.functional
        F.problem.control.check_direction(v)
        return _project_perturbation(self._current_basis(), F.problem, v, F.theta0, out)

    def derivative(self, v: fem.Function) -> float:
        r"""The surrogate :math:`dF_{\rm sec}\cdot v`, by propagating :math:`\mathcal P(J(v))\psi_0` with the
        θ-scheme itself (an independent check of the eigen-factor shortcut and of the gradient; collective)."""
        F = self.functional
        s = F.scheme
        F.problem.control.check_direction(v)
        basis = self._current_basis()
        z = _project_perturbation(basis, F.problem, v, F.theta0, scale=basis.discrete_factor(s.dt, s.theta))
        theta, z_next, theta_next, g = (s.create_vector() for _ in range(4))
        F.theta0.copy(theta)
        total = 0.0
        for n in range(1, F.nsteps + 1):
            s.step(theta, theta_next)
            s.step(z, z_next)  # homogeneous walls: the same step propagates the perturbation
            theta, theta_next = theta_next, theta
            z, z_next = z_next, z
            if any(m.active(n) for m in F.misfits):
                g.set(0.0)
                F._add_misfit_gradient(n, theta, g)
                total += n * s.dt * g.dot(z).real
        for obj in (theta, z_next, theta_next, g, z):
            obj.destroy()
        return total + self._regularization_derivative(v)

    def destroy(self) -> None:
        if self.basis is not None:
            self.basis.destroy()
            self.basis = None


# --------------------------------------------------------------------------- measured errors


@dataclass(frozen=True)
class SurrogateStateErrors:
    r"""Errors of the surrogate state derivatives against the exact tangent :math:`\rho_n`, in the :math:`\mathbf M` norm.

    Attributes
    ----------
    times : numpy.ndarray, shape (m,)
    exact_norm : numpy.ndarray
        :math:`\|\rho_n\|_{\mathbf M}`.
    secular_error, first_order_error : numpy.ndarray
        :math:`\|t_nS^n\mathcal P(J)\psi_0 - \rho_n\|_{\mathbf M}` and :math:`\|t_nS^nJ\psi_0 - \rho_n\|_{\mathbf M}`.
    outside_fraction : float
        The part of :math:`\psi_0` outside the eigenbasis (:meth:`Eigenbasis.outside_fraction`).
    """

    times: np.ndarray
    exact_norm: np.ndarray
    secular_error: np.ndarray
    first_order_error: np.ndarray
    outside_fraction: float

    @property
    def secular_relative(self) -> np.ndarray:
        return self.secular_error / self.exact_norm

    @property
    def first_order_relative(self) -> np.ndarray:
        return self.first_order_error / self.exact_norm


def surrogate_state_errors(scheme: ThetaScheme, psi0: fem.Function | PETSc.Vec, v: fem.Function,
                           steps: Sequence[int], nev: int, **eigen_options) -> SurrogateStateErrors:
    r"""Measure the secular and first-order surrogates of :math:`\rho_n = \partial w_n[v]` along one trajectory.

    The FE counterpart of :func:`sensitivity.dense.quantum.surrogate_errors`: one tangent run
    gives :math:`\rho_n`; the surrogates propagate :math:`\mathcal P(J)\psi_0` and
    :math:`J\psi_0 = -P\mathbf M^{-1}\partial\mathbf A[v]\psi_0` with the same θ-scheme and are
    scaled by :math:`t_n`. Expected (SPEC §1): the secular error stays bounded, so its relative
    error falls like :math:`1/t`; the first-order error grows like :math:`t`.

    Parameters
    ----------
    scheme : ThetaScheme
        On a :class:`~sensitivity.fem.schrodinger.Schrodinger` problem.
    psi0 : dolfinx.fem.Function or petsc4py.PETSc.Vec
        Initial state, in the span of the ``nev`` lowest eigenpairs.
    v : dolfinx.fem.Function
        Direction in the potential's space.
    steps : sequence of int
        Steps :math:`n \ge 1` at which to measure.
    nev : int
        Eigenpairs of the secular surrogate; ``eigen_options`` go to :class:`Eigenbasis`.
    """
    prob = scheme.problem
    steps = sorted({int(n) for n in steps})
    if not steps or steps[0] < 1:
        raise InvalidArgumentError(f"steps must be positive integers, got {steps!r}")
    prob.control.check_direction(v)
    w0 = psi0.x.petsc_vec if isinstance(psi0, fem.Function) else psi0
    basis = Eigenbasis(prob, nev, **eigen_options)
    z = _project_perturbation(basis, prob, v, w0, scale=basis.discrete_factor(scheme.dt, scheme.theta))
    dA, y = prob.dA(v), prob.create_vector()
    u = prob.create_vector()  # J psi0 = -P M^-1 dA psi0
    dA.mult(w0, y)
    ksp = _backend.create_ksp(prob.M, default_mass_options(True), "secular_errors_mass")
    ksp.solve(y, u)
    u.scale(-1.0)
    scheme.set_dirichlet(u, homogeneous=True)
    nxt = prob.create_vector()
    rows = {"exact": [], "secular": [], "first_order": []}

    def record(n: int, theta: PETSc.Vec, rhos: list[PETSc.Vec]) -> None:
        if n == 0:
            return
        for vec in (z, u):  # one more θ-scheme step for each surrogate state
            scheme.step(vec, nxt)
            nxt.copy(vec)
        if n in steps:
            t = n * scheme.dt
            rows["exact"].append(prob.norm(rhos[0]))
            for name, vec in (("secular", z), ("first_order", u)):
                vec.copy(nxt)
                nxt.scale(t)
                nxt.axpy(-1.0, rhos[0])
                rows[name].append(prob.norm(nxt))

    tangent = Tangent(scheme, [v])
    wN, rhoN = tangent.run(w0, steps[-1], callback=record)
    outside = basis.outside_fraction(w0)
    for obj in (tangent, wN, *rhoN, basis, dA, y, z, u, nxt, ksp):
        obj.destroy()
    return SurrogateStateErrors(np.asarray(steps) * scheme.dt, np.asarray(rows["exact"]),
                                np.asarray(rows["secular"]), np.asarray(rows["first_order"]), outside)
