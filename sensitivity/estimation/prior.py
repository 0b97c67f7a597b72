r"""Gaussian priors :math:`N(\bar m, \mathcal C)`: in function space by the SPDE approach, and for coefficient vectors.

Every prior offers (docs/theory.md §4) the cost :math:`\tfrac12\|m - \bar m\|^2_{\mathcal C^{-1}}`, its
derivative :math:`\mathcal C^{-1}(m - \bar m)` (an ℓ² dual vector, like every derivative of the
package), the Hessian action :math:`\mathcal C^{-1}v`, the covariance action :math:`\mathcal Cd` (which
maps a derivative to the gradient in the prior's metric), a square root
:math:`L` with :math:`LL^T = \mathcal C` acting on white noise, and draws :math:`\bar m + L\xi`.
The function-space prior is :class:`~sensitivity.estimation.bilaplacian.BiLaplacianPrior`.

**Finite-dimensional prior** (:class:`GaussianPrior`): a mean and a covariance matrix (or its
diagonal, e.g. a prescribed spectrum of stream-function sine modes, or log-rates) on an
:class:`~sensitivity.estimation.vectors.ArraySpace`; the square root is the Cholesky factor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from sensitivity.errors import InvalidArgumentError
from sensitivity.estimation.vectors import ArraySpace, ParameterSpace
from sensitivity.validation import finite_array

__all__ = ["GaussianPrior", "Prior"]


class Prior(ABC):
    r"""A Gaussian prior :math:`N(\bar m, \mathcal C)` on a :class:`ParameterSpace` (collective methods).

    Attributes
    ----------
    space : ParameterSpace
    mean : vector
        :math:`\bar m`.
    noise_size : int
        Length of the white noise :math:`\xi` that :meth:`sqrt_covariance_action` maps to a draw.
    """

    space: ParameterSpace
    mean: Any
    noise_size: int

    @abstractmethod
    def precision_action(self, v: Any, out: Any | None = None) -> Any:
        r""":math:`\mathcal C^{-1}v` (the Hessian of the cost; a dual vector)."""

    @abstractmethod
    def covariance_action(self, d: Any, out: Any | None = None) -> Any:
        r""":math:`\mathcal Cd`: the gradient in the prior's metric of a derivative :math:`d`."""

    @abstractmethod
    def sqrt_covariance_action(self, xi: np.ndarray, out: Any | None = None) -> Any:
        r""":math:`L\xi` with :math:`LL^T = \mathcal C`, for white noise ``xi`` of shape (noise_size,) (the same on every rank)."""

    def cost(self, m: Any) -> float:
        r""":math:`\tfrac12(m - \bar m)^T\mathcal C^{-1}(m - \bar m)`."""
        d = self.space.copy(m)
        self.space.axpy(-1.0, self.mean, d)
        r = self.precision_action(d)
        value = 0.5 * self.space.dot(d, r)
        self.space.destroy(d)
        self.space.destroy(r)
        return value

    def derivative(self, m: Any, out: Any | None = None) -> Any:
        r""":math:`\mathcal C^{-1}(m - \bar m)`, the ℓ² derivative of :meth:`cost`."""
        d = self.space.copy(m)
        self.space.axpy(-1.0, self.mean, d)
        out = self.precision_action(d, out)
        self.space.destroy(d)
        return out

    def hessian_action(self, v: Any, out: Any | None = None) -> Any:
        r""":math:`\mathcal C^{-1}v`."""
        return self.precision_action(v, out)

    def sample(self, rng: np.random.Generator, out: Any | None = None) -> Any:
        r"""A draw :math:`\bar m + L\xi` of :math:`N(\bar m, \mathcal C)`; rank-independent for a given ``rng`` state."""
        out = self.sqrt_covariance_action(rng.standard_normal(self.noise_size), out)
        return self.space.axpy(1.0, self.mean, out)

    def pointwise_variance(self) -> Any:
        r"""The diagonal of :math:`\mathcal C` as a parameter vector, exactly, by one covariance action per
        parameter (small problems; subclasses with a cheaper formula override it; collective)."""
        n = self.space.size
        var = np.empty(n)
        unit = np.zeros(n)
        for k in range(n):
            unit[:] = 0.0
            unit[k] = 1.0
            e = self.space.from_array(unit)
            column = self.covariance_action(e)
            var[k] = self.space.to_array(column)[k]
            self.space.destroy(e)
            self.space.destroy(column)
        return self.space.from_array(var)


class GaussianPrior(Prior):
    r"""A Gaussian :math:`N(\bar m, \Sigma)` for a coefficient vector on an :class:`ArraySpace`.

    Parameters
    ----------
    space : ArraySpace
    mean : array_like, shape (n,), optional
        Default zero.
    covariance : array_like, shape (n, n) or (n,), optional
        A symmetric positive definite matrix, or its diagonal (variances). Exactly one of
        ``covariance`` and ``std`` (standard deviations, shape (n,) or a number).
    std : array_like or float, optional
    """

    def __init__(self, space: ArraySpace, mean=None, *, covariance=None, std=None):
        if not isinstance(space, ArraySpace):
            raise InvalidArgumentError(f"space must be an ArraySpace, got {type(space).__name__}")
        if (covariance is None) == (std is None):
            raise InvalidArgumentError("give exactly one of covariance and std")
        n = space.size
        self.space = space
        self.mean = np.zeros(n) if mean is None else finite_array(mean, "mean", shape=(n,)).copy()
        if std is not None:
            s = np.broadcast_to(finite_array(std, "std"), (n,)) if np.ndim(std) == 0 else finite_array(std, "std",
                                                                                                       shape=(n,))
            if np.any(s <= 0):
                raise InvalidArgumentError(f"std must be positive, got min {float(np.min(s))!r}")
            covariance = np.asarray(s, dtype=float) ** 2
        cov = finite_array(covariance, "covariance")
        if cov.shape == (n,):
            if np.any(cov <= 0):
                raise InvalidArgumentError(f"covariance (variances) must be positive, got min {float(cov.min())!r}")
            self._diagonal, self._L = cov.copy(), None
        elif cov.shape == (n, n):
            if not np.allclose(cov, cov.T, rtol=1e-12, atol=0.0):
                raise InvalidArgumentError("covariance must be symmetric")
            try:
                self._L = np.linalg.cholesky(cov)
            except np.linalg.LinAlgError:
                raise InvalidArgumentError("covariance must be positive definite (its Cholesky factorization failed)") \
                    from None
            self._diagonal = None
        else:
            raise InvalidArgumentError(f"covariance must have shape ({n},) or ({n}, {n}), got {cov.shape}")
        self.noise_size = n

    @property
    def variance(self) -> np.ndarray:
        """The marginal variances (the diagonal of :math:`\\Sigma`)."""
        return self._diagonal.copy() if self._L is None else np.sum(self._L**2, axis=1)

    def pointwise_variance(self) -> np.ndarray:
        """:attr:`variance` (the interface of :meth:`Prior.pointwise_variance`)."""
        return self.variance

    def precision_action(self, v, out=None):
        v = np.asarray(v, dtype=float)
        if self._L is None:
            r = v / self._diagonal
        else:
            import scipy.linalg

            r = scipy.linalg.cho_solve((self._L, True), v)
        return r if out is None else self.space.assign(r, out)

    def covariance_action(self, d, out=None):
        d = np.asarray(d, dtype=float)
        r = self._diagonal * d if self._L is None else self._L @ (self._L.T @ d)
        return r if out is None else self.space.assign(r, out)

    def sqrt_covariance_action(self, xi: np.ndarray, out=None):
        xi = finite_array(xi, "xi", shape=(self.noise_size,))
        r = np.sqrt(self._diagonal) * xi if self._L is None else self._L @ xi
        return r if out is None else self.space.assign(r, out)
