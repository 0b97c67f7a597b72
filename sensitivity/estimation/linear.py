r"""Linear-Gaussian problems: a misfit whose posterior is known exactly, to verify MAP, Laplace and samplers.

For a linear observation :math:`y = Gq + \varepsilon`, :math:`\varepsilon \sim N(0, \Sigma)`,
:math:`\Sigma = \mathrm{diag}(\sigma^2)`, and a Gaussian prior :math:`N(\bar m, \mathcal C)`, the posterior
is Gaussian (docs/theory.md §4):

.. math::

    \Gamma_{\rm post} = (G^T\Sigma^{-1}G + \mathcal C^{-1})^{-1},\qquad
    m_{\rm post} = \Gamma_{\rm post}(G^T\Sigma^{-1}y + \mathcal C^{-1}\bar m).

:class:`LinearMisfit` is :math:`\Phi(q) = \tfrac12\|\Sigma^{-1/2}(Gq - y)\|^2` for :math:`G` given by its
action and transpose (a matrix on an :class:`~sensitivity.estimation.vectors.ArraySpace`; e.g. point
values of a control field on :class:`~sensitivity.estimation.vectors.FunctionVectors`).
:func:`exact_posterior` forms the dense mean and covariance above in the partition-independent
order of :meth:`ParameterSpace.to_array`, by applying the operators to unit vectors (small problems).
:class:`MomentCheck` measures a sampler against them: the errors of the sampled means and variances of linear
functionals in units of their Monte Carlo standard error (ArviZ's MCSE).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.posterior import Misfit
from sensitivity.estimation.prior import Prior
from sensitivity.estimation.vectors import ArraySpace, ParameterSpace
from sensitivity.validation import callable_, finite_array, same_on_all_ranks

__all__ = ["LinearMisfit", "MomentCheck", "dense_operator", "exact_posterior"]


class LinearMisfit(Misfit):
    r""":math:`\Phi(q) = \tfrac12\sum_j((Gq)_j - y_j)^2/\sigma_j^2` for a linear map :math:`G` (module docstring).

    Parameters
    ----------
    space : ParameterSpace
    apply : callable
        ``apply(q)`` returns :math:`Gq` as a NumPy array of shape (m,), the same on every rank
        (collective for distributed ``q``).
    apply_transpose : callable
        ``apply_transpose(w)`` returns :math:`G^Tw` as a new vector of ``space`` for a NumPy ``w``.
    data : array_like, shape (m,)
    noise : float or array_like, shape (m,)
        :math:`\sigma > 0`.
    """

    def __init__(self, space: ParameterSpace, apply: Callable[[Any], np.ndarray],
                 apply_transpose: Callable[[np.ndarray], Any], data, noise):
        self.space = space
        self.apply, self.apply_transpose = callable_(apply, "apply"), callable_(apply_transpose, "apply_transpose")
        self.data = finite_array(data, "data")
        if self.data.ndim != 1:
            raise InvalidArgumentError(f"data must be a 1-D array, got shape {self.data.shape}")
        sigma = np.broadcast_to(finite_array(noise, "noise"), self.data.shape) if np.ndim(noise) == 0 else \
            finite_array(noise, "noise", shape=self.data.shape)
        if np.any(sigma <= 0):
            raise InvalidArgumentError(f"noise must be positive, got min {float(np.min(sigma))!r}")
        same_on_all_ranks(space.comm, self.data, "data")
        self.weights = 1.0 / np.asarray(sigma, dtype=float) ** 2

    @classmethod
    def from_matrix(cls, G, data, noise, comm=None) -> LinearMisfit:
        """The misfit of a dense matrix ``G`` (shape (m, n)) on an :class:`ArraySpace` of size n."""
        G = finite_array(G, "G")
        if G.ndim != 2:
            raise InvalidArgumentError(f"G must be a 2-D array, got shape {G.shape}")
        return cls(ArraySpace(G.shape[1], comm), lambda q: G @ q, lambda w: G.T @ w, data, noise)

    def residual(self, q) -> np.ndarray:
        r""":math:`Gq - y`."""
        return np.asarray(self.apply(q), dtype=float) - self.data

    def value(self, q) -> float:
        r = self.residual(q)
        return 0.5 * float(np.sum(self.weights * r**2))

    def value_and_derivative(self, q):
        r = self.residual(q)
        return 0.5 * float(np.sum(self.weights * r**2)), self.apply_transpose(self.weights * r)

    def hessian_action(self, q, v):
        r""":math:`G^T\Sigma^{-1}Gv` (independent of ``q``)."""
        return self.apply_transpose(self.weights * np.asarray(self.apply(v), dtype=float))


def dense_operator(space: ParameterSpace, apply: Callable[[Any], Any]) -> np.ndarray:
    """The matrix of a linear map of ``space`` into itself, in :meth:`ParameterSpace.to_array` order (collective).

    ``apply(x)`` returns a new vector of ``space``; it is applied to the ``space.size`` unit vectors.
    """
    n = space.size
    out = np.empty((n, n))
    unit = np.zeros(n)
    for k in range(n):
        unit[:] = 0.0
        unit[k] = 1.0
        x = space.from_array(unit)
        y = apply(x)
        out[:, k] = space.to_array(y)
        space.destroy(x)
        space.destroy(y)
    return out


def exact_posterior(misfit: LinearMisfit, prior: Prior) -> tuple[np.ndarray, np.ndarray]:
    r"""The exact posterior mean and covariance of a linear-Gaussian problem, as dense arrays (collective).

    Returns ``(mean, covariance)`` in :meth:`ParameterSpace.to_array` order, shapes (n,) and (n, n).
    """
    if not isinstance(misfit, LinearMisfit):
        raise InvalidArgumentError(f"misfit must be a LinearMisfit, got {type(misfit).__name__}")
    space = misfit.space
    H = dense_operator(space, lambda v: misfit.hessian_action(None, v))
    R = dense_operator(space, prior.precision_action)
    zero = space.zeros()
    _, b = misfit.value_and_derivative(zero)  # G^T Sigma^-1 (0 - y)
    rhs = -space.to_array(b) + R @ space.to_array(prior.mean)
    space.destroy(zero)
    space.destroy(b)
    precision = 0.5 * ((H + R) + (H + R).T)
    covariance = np.linalg.inv(precision)
    return covariance @ rhs, 0.5 * (covariance + covariance.T)


class MomentCheck:
    r"""Sampled moments of linear functionals :math:`w_i^Tq` against the exact posterior, in MCSE (module docstring).

    With the exact posterior :math:`N(m, \Gamma)`, the functionals have means :math:`c_i = w_i^Tm` and variances
    :math:`v_i = w_i^T\Gamma w_i`. A run stores the summaries :meth:`summaries` (``f``: :math:`w_i^Tq`, ``s``:
    :math:`(w_i^Tq - c_i)^2`); :meth:`z_scores` divides the errors of their sampled means by their MCSE, so that
    for a correct sampler they are of order one (:math:`|z| < 4` for all but about 1 in 15 000 functionals).

    Parameters
    ----------
    posterior : Posterior
        With a :class:`LinearMisfit` and a Gaussian prior (collective on its space, once).
    functionals : array_like, shape (k, n)
        The rows :math:`w_i` in :meth:`ParameterSpace.to_array` order.
    """

    def __init__(self, posterior, functionals):
        self.space = posterior.space
        self.W = finite_array(functionals, "functionals")
        if self.W.ndim != 2 or self.W.shape[1] != self.space.size:
            raise InvalidArgumentError(f"functionals must have shape (k, {self.space.size}), got {self.W.shape}")
        mean, covariance = exact_posterior(posterior.misfit, posterior.prior)
        self.mean = self.W @ mean
        self.variance = np.einsum("ij,jk,ik->i", self.W, covariance, self.W)

    def summaries(self) -> dict[str, Callable[[Any], np.ndarray]]:
        """``{"f": q -> W q, "s": q -> (W q - c)^2}``, for :func:`~sensitivity.estimation.sample`."""
        def values(q):
            return self.W @ self.space.to_array(q)

        return {"f": values, "s": lambda q: (values(q) - self.mean) ** 2}

    def z_scores(self, summary) -> tuple[np.ndarray, np.ndarray]:
        """``(z_mean, z_var)``, shapes (k,): the sampled minus the exact mean and variance over their MCSE, from a
        :class:`~sensitivity.estimation.diagnostics.ChainSummary` of a run with :meth:`summaries`."""
        z_mean = (summary.mean["f"].values - self.mean) / summary.mcse_mean["f"].values
        z_var = (summary.mean["s"].values - self.variance) / summary.mcse_mean["s"].values
        return z_mean, z_var

    def relative_mcse_of_variance(self, summary) -> np.ndarray:
        """The MCSE of the sampled variances over the exact ones: small when the MCSE is informative (a few wild
        draws inflate it along with the error)."""
        return summary.mcse_mean["s"].values / self.variance
