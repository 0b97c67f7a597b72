r"""Gradients of scalar functions of exp(tQ) with respect to every entry of Q (docs/theory.md §1).

For :math:`F(Q) = f(e^{tQ})` and :math:`G = \partial f/\partial X` at :math:`X = e^{tQ}`
(for complex :math:`X`, :math:`G = \partial f/\partial\Re X + i\,\partial f/\partial\Im X`,
so that :math:`df = \Re\langle G, dX\rangle_F`), the directional derivative is
:math:`dF[J] = \Re\langle G, L(tQ, tJ)\rangle_F` (seed 1.4), and the adjoint identity
:math:`L(A)^* = L(A^*)` of the Fréchet derivative turns all :math:`d^2` of them into
one Fréchet evaluation:

.. math:: \nabla_Q F = t\,L(tQ^*, G),\qquad dF[J] = \Re\langle \nabla_Q F, J\rangle_F .
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike

from sensitivity.dense.frechet import Method, expm_frechet
from sensitivity.errors import InvalidArgumentError
from sensitivity.validation import callable_, direction_matrix, finite_array, real_time, square_matrix

__all__ = ["expm_gradient", "value_and_gradient"]


def expm_gradient(Q: ArrayLike, G: ArrayLike, t: float = 1.0, *, method: Method = "scipy") -> np.ndarray:
    r"""Gradient of :math:`F(Q) = f(e^{tQ})` with respect to every entry of ``Q``.

    Given :math:`G = \partial f/\partial X` at :math:`X = e^{tQ}` (module docstring),
    at the cost of one Fréchet evaluation,

    .. math:: \nabla_Q F = t\,L(tQ^*, G),\qquad dF[J] = \Re\langle \nabla_Q F, J\rangle_F .

    Parameters
    ----------
    Q, G : array_like, shape (d, d)
    t : float
    method : {"scipy", "block", "eig", "series"}
        Fréchet method (:func:`~sensitivity.dense.frechet.expm_frechet`).

    Returns
    -------
    numpy.ndarray, shape (d, d)
        Real when ``Q`` is real (the gradient with respect to real entries).
    """
    Q = square_matrix(Q, "Q")
    G = direction_matrix(G, Q.shape[0], "G")
    t = real_time(t, "t")
    # expm_frechet(Q*, G, t) = L(tQ*, tG) = t L(tQ*, G)
    grad = expm_frechet(Q.conj().T, G, t, method=method)
    return grad.real if not np.iscomplexobj(Q) else grad


def value_and_gradient(
    f: Callable[[np.ndarray], tuple[float, np.ndarray]],
    Q: ArrayLike,
    t: float = 1.0,
    *,
    method: Method = "scipy",
) -> tuple[float, np.ndarray]:
    """``F(Q) = f(exp(tQ))`` and its gradient with respect to ``Q``.

    Parameters
    ----------
    f : callable
        ``f(X) -> (value, dfdX)`` with ``dfdX`` of shape ``(d, d)`` as in :func:`expm_gradient`.
        A non-finite value or ``dfdX`` raises :class:`~sensitivity.errors.InvalidArgumentError`.
    Q : array_like, shape (d, d)
    t : float
    method : str
        Fréchet method used for the gradient.
    """
    f = callable_(f, "f")
    Q = square_matrix(Q, "Q")
    t = real_time(t, "t")
    out = f(scipy.linalg.expm(t * Q))
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise InvalidArgumentError(f"f must return a pair (value, dfdX), got {type(out).__name__}")
    value = finite_array(out[0], "the value returned by f", shape=())
    G = direction_matrix(out[1], Q.shape[0], "the dfdX returned by f")
    return float(value), expm_gradient(Q, G, t, method=method)
