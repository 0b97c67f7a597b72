r"""The Laplace approximation of a posterior at its MAP point, by a low-rank generalized eigendecomposition.

At the MAP point :math:`q_{\rm MAP}` (:func:`~sensitivity.estimation.map.find_map`) the posterior is
approximated by :math:`N(q_{\rm MAP}, \Gamma)`, :math:`\Gamma = (H + \mathcal C^{-1})^{-1}`, with
:math:`H` the Hessian of the misfit :math:`\Phi` there (the full Hessian, or its Gauss–Newton part;
docs/theory.md §4.3). With the generalized eigenpairs

.. math::

    Hv_i = \lambda_i\,\mathcal C^{-1}v_i,\qquad V^T\mathcal C^{-1}V = I,\qquad \lambda_1 \ge \lambda_2 \ge \dots,

of which few are large when the data inform few directions, :math:`H = \mathcal C^{-1}V\Lambda V^T\mathcal C^{-1}`
on their span, and the Sherman–Morrison–Woodbury identity gives

.. math::

    \Gamma = \mathcal C - V\,\mathrm{diag}\Bigl(\frac{\lambda_i}{1+\lambda_i}\Bigr)V^T,\qquad
    \mathrm{diag}\,\Gamma = \mathrm{diag}\,\mathcal C - \sum_i\frac{\lambda_i}{1+\lambda_i}v_i^2,

(indeed :math:`(\mathcal C^{-1} + \mathcal C^{-1}V\Lambda V^T\mathcal C^{-1})^{-1} = \mathcal C - V(\Lambda^{-1} + I)^{-1}V^T`),
and samples :math:`q_{\rm MAP} + (I - V\,\mathrm{diag}(1 - (1+\lambda_i)^{-1/2})V^T\mathcal C^{-1})\,s` with
:math:`s = \mathcal C^{1/2}\xi` a prior draw: their covariance is :math:`\mathcal C - V(2D - D^2)V^T` with
:math:`D = \mathrm{diag}(1 - (1+\lambda_i)^{-1/2})`, and :math:`2D - D^2 = \mathrm{diag}(\lambda_i/(1+\lambda_i))`.
Truncating the eigenpairs drops positive terms, so a truncated :math:`\Gamma` is larger than the exact one;
once the rank covers the numerical rank of :math:`H` (for a linear-Gaussian problem: the number of
observations) it equals the exact posterior covariance to round-off.

The eigenpairs come from the randomized double-pass algorithm of Halko, Martinsson & Tropp (2011) in
the generalized form of Saibaba, Lee & Kitanidis (2016), on any
:class:`~sensitivity.estimation.vectors.ParameterSpace` (:func:`generalized_eigh`):

1. :math:`\Omega`: ``rank + oversampling`` standard normal vectors
   (:meth:`ParameterSpace.standard_normal`: the same on any number of ranks for a seed);
2. :math:`\bar Y = H\Omega` (first pass), :math:`Y = \mathcal C\bar Y`;
3. :math:`Q`: a :math:`\mathcal C^{-1}`-orthonormal basis of :math:`Y` (Gram–Schmidt in the :math:`\mathcal C^{-1}`
   inner product with one reorthogonalization, using :math:`\mathcal C^{-1}Y = \bar Y`, dropping numerically
   dependent directions; then :math:`Q^T\mathcal C^{-1}Q` with :math:`\mathcal C^{-1}` applied explicitly is
   made the identity, so that :math:`Q^T\mathcal C^{-1}Q = I` to round-off);
4. :math:`T = Q^THQ` (second pass), :math:`T = S\Lambda S^T`, :math:`V = QS`, largest ``rank``.

The small dense algebra (Gram matrices, :math:`T`, its eigendecomposition) runs in NumPy on every rank
after one reduction per Gram matrix or projection (:meth:`ParameterSpace.gram`); the cost is
:math:`2(k + p)` Hessian actions, :math:`k + p` covariance and :math:`k + p` precision actions.

:func:`laplace_relative_error` compares a Laplace approximation with the exact posterior of a
linear-Gaussian problem, and :func:`laplace_rel_err` computes the benchmark's ``laplace_rel_err`` on
the verification problem :func:`~sensitivity.estimation.problems.point_observation_problem`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from sensitivity.errors import InvalidArgumentError, SensitivityError
from sensitivity.estimation.linear import LinearMisfit, dense_operator, exact_posterior
from sensitivity.estimation.posterior import Force, Misfit, Posterior
from sensitivity.estimation.prior import Prior
from sensitivity.estimation.vectors import ArraySpace, FunctionVectors, ParameterSpace
from sensitivity.validation import integer, same_on_all_ranks

import numpy as np
from mpi4py import MPI

__all__ = [
    "LaplaceApproximation",
    "LaplaceForce",
    "NotPositiveDefiniteError",
    "generalized_eigh",
    "laplace_rel_err",
    "laplace_relative_error",
]

#: A sampled direction whose norm falls below this fraction of its own once the earlier ones are
#: projected out is numerically dependent on them: dropped from the basis.
DROP_TOLERANCE = 1e-10


class NotPositiveDefiniteError(SensitivityError):
    """The Hessian at the point has an eigenvalue :math:`\\lambda \\le -1`: :math:`H + \\mathcal C^{-1}` is not
    positive definite (not a minimum; use the Gauss–Newton Hessian)."""


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(integer(seed, "seed", minimum=0))


def _orthonormalize(space: ParameterSpace, Y: list, BY: list, apply_B: Callable, drop: float) -> tuple[list, list]:
    """A B-orthonormal basis Q of span(Y) and BQ, given BY = B Y (module docstring, step 3).

    Classical Gram-Schmidt in the B inner product with one reorthogonalization (one reduction per
    projection, stable to round-off, unlike a Cholesky of the Gram matrix, which squares its condition
    number); a column whose B norm falls below ``drop`` times its own is numerically dependent and
    dropped. Then Q^T B Q with B applied explicitly is made the identity (it is I up to the solvers'
    round-off).
    """
    Q: list = []
    BQ: list = []
    for y0, by0 in zip(Y, BY):
        y, by = space.copy(y0), space.copy(by0)
        start = float(space.gram([y], [by])[0, 0])
        for _ in range(2):
            if Q:
                c = space.gram(BQ, [y])  # q_i^T B y
                (z,) = space.combine(Q, c)
                (bz,) = space.combine(BQ, c)
                space.axpy(-1.0, z, y)
                space.axpy(-1.0, bz, by)
                space.destroy(z)
                space.destroy(bz)
        norm2 = float(space.gram([y], [by])[0, 0])
        if start <= 0.0 or norm2 <= (drop**2) * start:
            space.destroy(y)
            space.destroy(by)
            continue
        scale = 1.0 / np.sqrt(norm2)
        Q.append(space.scale(y, scale))
        BQ.append(space.scale(by, scale))
    if not Q:
        return [], []
    explicit = [apply_B(q) for q in Q]
    G = space.gram(Q, explicit)
    s, U = np.linalg.eigh(0.5 * (G + G.T))
    if s[0] <= 0.5:  # Q^T B Q is I up to round-off: cannot happen for a symmetric positive definite B
        raise SensitivityError(f"the prior precision is not consistent with the covariance on the sampled subspace "
                               f"(an eigenvalue {s[0]:.3g} of Q^T C^-1 Q, which should be 1)")
    coefficients = U / np.sqrt(s)
    Q2, BQ2 = space.combine(Q, coefficients), space.combine(explicit, coefficients)
    for v in (*Q, *BQ, *explicit):
        space.destroy(v)
    return Q2, BQ2


def generalized_eigh(space: ParameterSpace, apply_H: Callable[[Any], Any], apply_B: Callable[[Any], Any],
                     apply_Binv: Callable[[Any], Any], rank: int, oversampling: int = 10, seed=0, *,
                     drop: float = DROP_TOLERANCE) -> tuple[np.ndarray, list, list]:
    r"""The largest eigenpairs of :math:`Hv = \lambda Bv`, :math:`V^TBV = I`, by the randomized double pass (collective).

    Parameters
    ----------
    space : ParameterSpace
    apply_H, apply_B, apply_Binv : callable
        ``f(v)`` returns a new vector: :math:`Hv` (symmetric), :math:`Bv` and :math:`B^{-1}v` (:math:`B`
        symmetric positive definite).
    rank, oversampling : int
        :math:`k \ge 1` eigenpairs from :math:`k + p` random vectors (at most ``space.size``).
    seed : int or numpy.random.Generator
        The random test vectors (the same on any number of ranks).
    drop : float
        Relative threshold below which directions of the sampled range are numerically null.

    Returns
    -------
    (eigenvalues, V, BV)
        Eigenvalues in descending order (at most ``rank``; fewer when the numerical rank of
        :math:`H` is smaller, whose range is then captured whole), the eigenvectors and :math:`BV`.
    """
    rng = _rng(seed)
    m = min(rank + oversampling, space.size)
    omega = [space.standard_normal(rng) for _ in range(m)]
    Ybar = [apply_H(w) for w in omega]  # first pass
    Y = [apply_Binv(y) for y in Ybar]
    for v in omega:
        space.destroy(v)
    Q, BQ = _orthonormalize(space, Y, Ybar, apply_B, drop)  # B Y = Ybar
    for v in (*Y, *Ybar):
        space.destroy(v)
    if not Q:
        return np.zeros(0), [], []
    HQ = [apply_H(q) for q in Q]  # second pass
    T = space.gram(Q, HQ)
    for v in HQ:
        space.destroy(v)
    theta, S = np.linalg.eigh(0.5 * (T + T.T))
    order = np.argsort(theta)[::-1][:rank]
    theta, S = theta[order], S[:, order]
    V, BV = space.combine(Q, S), space.combine(BQ, S)
    for v in (*Q, *BQ):
        space.destroy(v)
    return theta, V, BV


class LaplaceApproximation:
    r"""The Gaussian :math:`N(q_{\rm MAP}, \Gamma)` of a posterior at a point, :math:`\Gamma = (H + \mathcal C^{-1})^{-1}` (module docstring).

    Parameters
    ----------
    posterior : Posterior
    point : vector or MAPResult
        :math:`q_{\rm MAP}` (copied), or a :class:`~sensitivity.estimation.map.MAPResult` (its point).
    rank : int, optional
        Eigenpairs kept (at most the number of parameters; default 20, or all if fewer).
    oversampling : int
        Extra random vectors of the randomized eigensolver (default 10).
    gauss_newton : bool
        Use the misfit's Gauss–Newton Hessian (``Misfit.gauss_newton_action``, positive semi-definite)
        instead of the full Hessian (the default; positive semi-definite at a minimum). A misfit without
        a Gauss–Newton part (``ReducedMisfit`` today) gives its full Hessian for both.
    seed : int or numpy.random.Generator
        The eigensolver's random vectors (rank-independent).

    Attributes
    ----------
    map_point : vector
    eigenvalues : numpy.ndarray
        :math:`\lambda_1 \ge \dots \ge \lambda_r`, :math:`r \le` ``rank``.
    eigenvectors : list of vectors
        :math:`v_i`, :math:`\mathcal C^{-1}`-orthonormal.
    hessian_actions : int
        Misfit Hessian actions the eigensolver used.

    Notes
    -----
    Collective for distributed parameters. :meth:`pointwise_variance` needs the prior's exact
    pointwise variance (:meth:`Prior.pointwise_variance`: one covariance action per parameter for the
    bi-Laplacian prior; computed once).
    """

    def __init__(self, posterior: Posterior, point, *, rank: int | None = None, oversampling: int = 10,
                 gauss_newton: bool = False, seed=0):
        if not isinstance(posterior, Posterior):
            raise InvalidArgumentError(f"posterior must be a Posterior, got {type(posterior).__name__}")
        space = posterior.space
        rank = min(20, space.size) if rank is None else integer(rank, "rank", minimum=1, maximum=space.size)
        oversampling = integer(oversampling, "oversampling", minimum=0)
        if not isinstance(gauss_newton, bool):
            raise InvalidArgumentError(f"gauss_newton must be True or False, got {gauss_newton!r}")
        misfit = posterior.misfit
        kind = "gauss_newton_action" if gauss_newton else "hessian_action"
        if type(misfit).hessian_action is Misfit.hessian_action and (
                not gauss_newton or type(misfit).gauss_newton_action is Misfit.gauss_newton_action):
            raise InvalidArgumentError(f"the Laplace approximation needs the misfit's Hessian action; "
                                       f"{type(misfit).__name__} has no {kind}")
        if not isinstance(seed, np.random.Generator):
            seed = integer(seed, "seed", minimum=0)
        point = getattr(point, "point", point)  # a MAPResult
        # collective from here
        point = space.check(point, "point")
        if isinstance(space, ArraySpace):
            same_on_all_ranks(space.comm, np.asarray(point, dtype=float), "point")
        if not isinstance(seed, np.random.Generator):
            same_on_all_ranks(space.comm, seed, "seed")
        self.posterior, self.prior, self.space = posterior, posterior.prior, space
        self.gauss_newton = gauss_newton
        self.map_point = space.copy(point)
        self.hessian_actions = 0

        def apply_H(v):
            self.hessian_actions += 1
            return misfit.gauss_newton_action(self.map_point, v) if gauss_newton else \
                misfit.hessian_action(self.map_point, v)

        prior = self.prior
        self.eigenvalues, self.eigenvectors, self._BV = generalized_eigh(
            space, apply_H, prior.precision_action, prior.covariance_action, rank, oversampling, seed)
        if self.eigenvalues.size and self.eigenvalues.min() <= -1.0:
            lam = float(self.eigenvalues.min())
            self.destroy()
            raise NotPositiveDefiniteError(
                f"the {'Gauss-Newton ' if gauss_newton else ''}Hessian at the point has the prior-preconditioned "
                f"eigenvalue {lam:.3g} <= -1: H + C^-1 is not positive definite there (not a minimum?)")
        lam = self.eigenvalues
        self._shrink = lam / (1.0 + lam)  # lambda / (1 + lambda)
        self._sample_factor = 1.0 - 1.0 / np.sqrt(1.0 + lam)  # 1 - (1 + lambda)^-1/2
        self._prior_variance = None

    @property
    def rank(self) -> int:
        """The number of eigenpairs kept."""
        return len(self.eigenvectors)

    # ------------------------------------------------------------------ actions

    def _low_rank(self, coefficients: np.ndarray, out, basis=None) -> Any:
        """``out += sum_i coefficients[i] b_i`` for the ``basis`` vectors :math:`b_i` (default the eigenvectors)."""
        if self.rank:
            basis = self.eigenvectors if basis is None else basis
            (z,) = self.space.combine(basis, np.asarray(coefficients, dtype=float).reshape(-1, 1))
            self.space.axpy(1.0, z, out)
            self.space.destroy(z)
        return out

    def covariance_action(self, d, out=None) -> Any:
        r""":math:`\Gamma d = \mathcal Cd - V\,\mathrm{diag}(\lambda_i/(1+\lambda_i))V^Td` for a dual vector :math:`d`."""
        out = self.prior.covariance_action(d, out)
        if self.rank:
            c = self.space.gram(self.eigenvectors, [d])[:, 0]
            self._low_rank(-self._shrink * c, out)
        return out

    def misfit_hessian_action(self, v) -> Any:
        r"""The low-rank misfit Hessian :math:`\mathcal C^{-1}V\Lambda V^T\mathcal C^{-1}v` (a new vector)."""
        out = self.space.zeros()
        if self.rank:
            c = self.space.gram(self._BV, [v])[:, 0]
            self._low_rank(self.eigenvalues * c, out, self._BV)
        return out

    def precision_action(self, v, out=None) -> Any:
        r""":math:`\Gamma^{-1}v = \mathcal C^{-1}v + \mathcal C^{-1}V\Lambda V^T\mathcal C^{-1}v`."""
        out = self.prior.precision_action(v, out)
        h = self.misfit_hessian_action(v)
        self.space.axpy(1.0, h, out)
        self.space.destroy(h)
        return out

    def sample(self, rng: np.random.Generator, out=None) -> Any:
        r"""A draw :math:`q_{\rm MAP} + (I - V\,\mathrm{diag}(1 - (1+\lambda_i)^{-1/2})V^T\mathcal C^{-1})\,\mathcal C^{1/2}\xi`.

        Rank-independent for a given ``rng`` state (the prior's white noise is).
        """
        xi = rng.standard_normal(self.prior.noise_size)
        out = self.prior.sqrt_covariance_action(xi, out)
        if self.rank:
            c = self.space.gram(self._BV, [out])[:, 0]  # V^T C^-1 s
            self._low_rank(-self._sample_factor * c, out)
        return self.space.axpy(1.0, self.map_point, out)

    # ------------------------------------------------------------------ variances and fields

    def prior_variance(self) -> Any:
        r"""The prior's pointwise variance :math:`\mathrm{diag}\,\mathcal C` (a new vector; computed once)."""
        if self._prior_variance is None:
            self._prior_variance = self.prior.pointwise_variance()
        return self.space.copy(self._prior_variance)

    def pointwise_variance(self) -> Any:
        r""":math:`\mathrm{diag}\,\Gamma = \mathrm{diag}\,\mathcal C - \sum_i\frac{\lambda_i}{1+\lambda_i}v_i^2` (a new vector)."""
        var = self.prior_variance()
        if isinstance(self.space, FunctionVectors):
            local = np.array(var.array_r, dtype=float)
            for w, v in zip(self._shrink, self.eigenvectors):
                local -= w * np.asarray(v.array_r) ** 2
            var.array[:] = local
            return var
        for w, v in zip(self._shrink, self.eigenvectors):
            var -= w * np.asarray(v) ** 2
        return var

    def dense_covariance(self) -> np.ndarray:
        r""":math:`\Gamma` as a dense array in :meth:`ParameterSpace.to_array` order (small problems; collective)."""
        return dense_operator(self.space, self.covariance_action)

    def write_fields(self, path: str | os.PathLike) -> None:
        """Write the MAP point, the pointwise posterior variance and the prior variance as fields for ParaView.

        A VTX (ADIOS2 ``.bp``) directory (:class:`sensitivity.fem.FieldSeries`, renamed into place when
        complete) with the Functions ``map``, ``posterior_variance``, ``prior_variance`` and
        ``posterior_std``; for :class:`FunctionVectors` of a Lagrange space only (collective).
        """
        if not isinstance(self.space, FunctionVectors):
            raise InvalidArgumentError(f"write_fields needs FunctionVectors parameters, got {type(self.space).__name__}")
        from sensitivity.fem import FieldSeries

        control = self.space.control_space
        posterior_var, prior_var = self.pointwise_variance(), self.prior_variance()
        std = self.space.copy(posterior_var)
        std.sqrtabs()
        fields = [control.function(v, name) for v, name in ((self.map_point, "map"),
                                                              (posterior_var, "posterior_variance"),
                                                              (prior_var, "prior_variance"), (std, "posterior_std"))]
        for v in (posterior_var, prior_var, std):
            v.destroy()
        with FieldSeries(path, fields) as series:
            series.write(0.0)

    def destroy(self) -> None:
        for v in (*self.eigenvectors, *self._BV, self.map_point):
            self.space.destroy(v)
        if getattr(self, "_prior_variance", None) is not None:
            self.space.destroy(self._prior_variance)
            self._prior_variance = None
        self.eigenvectors, self._BV = [], []


class LaplaceForce(Force):
    r"""The force of the Laplace approximation's quadratic model of the misfit (docs/theory.md §4.4).

    .. math::

        \tilde F(q) = \partial\Phi(q_{\rm MAP}) + H_r(q - q_{\rm MAP}),\qquad
        H_r = \mathcal C^{-1}V\Lambda V^T\mathcal C^{-1},

    the derivative of :math:`\Phi(q_{\rm MAP}) + \langle\partial\Phi(q_{\rm MAP}), q - q_{\rm MAP}\rangle
    + \tfrac12\|q - q_{\rm MAP}\|^2_{H_r}` with the low-rank misfit Hessian of
    :class:`LaplaceApproximation` (:meth:`~LaplaceApproximation.misfit_hessian_action`). No PDE solve inside a
    trajectory: ``rank`` inner products and vector updates per leapfrog step; the exact :math:`\Phi` is
    evaluated once per trajectory, by the accept step, so the target stays exact. ``laplace`` is used, not
    copied: keep it alive (and undestroyed) while the force is in use.

    Parameters
    ----------
    laplace : LaplaceApproximation
        At the MAP point (collective: one exact misfit derivative there, computed once).
    """

    name = "Laplace"

    def __init__(self, laplace: LaplaceApproximation):
        if not isinstance(laplace, LaplaceApproximation):
            raise InvalidArgumentError(f"laplace must be a LaplaceApproximation, got {type(laplace).__name__}")
        self.laplace, self.space = laplace, laplace.space
        self.slope = laplace.posterior.misfit.value_and_derivative(laplace.map_point)[1]

    def derivative(self, q):
        step = self.space.axpy(-1.0, self.laplace.map_point, self.space.copy(q))
        out = self.laplace.misfit_hessian_action(step)
        self.space.destroy(step)
        return self.space.axpy(1.0, self.slope, out)

    def destroy(self) -> None:
        self.space.destroy(self.slope)


# --------------------------------------------------------------------------- checks against the exact posterior


def laplace_relative_error(laplace: LaplaceApproximation, misfit: LinearMisfit, prior: Prior) -> dict:
    r"""Relative errors of a Laplace approximation against the exact posterior of a linear-Gaussian problem.

    Returns ``covariance`` (:math:`\|\Gamma - \Gamma_{\rm exact}\|_F/\|\Gamma_{\rm exact}\|_F`), ``mean``
    (:math:`\|q_{\rm MAP} - m_{\rm post}\|/\|m_{\rm post}\|`), ``variance`` (the largest relative error of
    the pointwise variance) and ``eigenvalues`` (the largest relative error against a dense generalized
    eigensolve, ``scipy.linalg.eigh(H, C^-1)``), on every rank (collective; dense: small problems).
    """
    import scipy.linalg

    space = laplace.space
    mean, cov = exact_posterior(misfit, prior)
    G = laplace.dense_covariance()
    var = laplace.pointwise_variance()
    H = dense_operator(space, lambda v: misfit.hessian_action(None, v))
    R = dense_operator(space, prior.precision_action)
    exact = scipy.linalg.eigh(0.5 * (H + H.T), 0.5 * (R + R.T), eigvals_only=True)[::-1]
    lam = laplace.eigenvalues
    out = {
        "covariance": float(np.linalg.norm(G - cov) / np.linalg.norm(cov)),
        "mean": float(np.linalg.norm(space.to_array(laplace.map_point) - mean) / np.linalg.norm(mean)),
        "variance": float(np.max(np.abs(space.to_array(var) - np.diag(cov)) / np.diag(cov))),
        "eigenvalues": float(np.max(np.abs(lam - exact[:lam.size]) / np.abs(exact[0]))) if lam.size else 0.0,
    }
    space.destroy(var)
    return out


def laplace_rel_err(comm: MPI.Comm | None = None, n: int = 8, *, oversampling: int = 10, **problem) -> float:
    r"""The benchmark's ``laplace_rel_err``: the relative covariance error of the Laplace approximation (rank =
    number of observations) at the MAP point (``nls``, ``gttol`` 1e-12) of
    :func:`~sensitivity.estimation.problems.point_observation_problem` on an ``n`` × ``n`` mesh (≤ 1e-8 expected;
    collective). ``problem`` goes to the problem's builder."""
    from sensitivity.estimation.map import find_map
    from sensitivity.estimation.problems import point_observation_problem

    comm = MPI.COMM_WORLD if comm is None else comm
    posterior, misfit, prior = point_observation_problem(comm, n, **problem)
    q0 = posterior.space.zeros()
    result = find_map(posterior, q0, "nls", gttol=1e-12)
    laplace = LaplaceApproximation(posterior, result, rank=misfit.data.size, oversampling=oversampling)
    error = laplace_relative_error(laplace, misfit, prior)["covariance"]
    laplace.destroy()
    for v in (q0, result.point):
        posterior.space.destroy(v)
    prior.destroy()
    return error
