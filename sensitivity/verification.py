r"""Verification of derivatives: Taylor tests and dot-product tests.

Every derivative the package computes is checked in two independent ways (see
``docs/theory.md``, "Verification"): a **Taylor test**, whose remainders must
shrink at the order the derivative predicts, and agreement with a second exact
method. This module offers the first, and the **dot-product test** of a
transposed (adjoint) operator, to users and to the package's own tests.

For a map :math:`f` at :math:`x` along :math:`h`, with steps
:math:`\varepsilon_k = \varepsilon_0 2^{-k}`, the remainders

.. math::

    R_0(\varepsilon) = \|f(x + \varepsilon h) - f(x)\|,\qquad
    R_1(\varepsilon) = \|f(x + \varepsilon h) - f(x) - \varepsilon\,df(x)[h]\|,

    R_2(\varepsilon) = \|f(x + \varepsilon h) - f(x) - \varepsilon\,df(x)[h]
                       - \tfrac{\varepsilon^2}{2}d^2f(x)[h, h]\|

shrink like :math:`\varepsilon`, :math:`\varepsilon^2` and :math:`\varepsilon^3` when the
derivatives are right; a wrong first derivative leaves :math:`R_1` at rate 1. The
observed rates :math:`\log_2(R(\varepsilon_k)/R(\varepsilon_{k+1}))` are returned, and a test
asserts on them (pyadjoint's ``taylor_to_dict`` is the model). The first step is
scaled to the point: :math:`\varepsilon_0 = s\,\max(\|x\|, 1)/\|h\|` for a relative step
:math:`s`, so the same call works for controls of any size.

Points, directions and values may be NumPy arrays, ``petsc4py.PETSc.Vec`` or
``dolfinx.fem.Function`` objects (values also plain numbers). For distributed
vectors every norm is collective, so call these functions on every rank.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sensitivity.validation import finite_number, integer, positive

__all__ = ["DotProductResult", "TaylorResult", "dot_product_test", "taylor_test"]


# --------------------------------------------------------------------------- vector algebra


def _vec(obj: Any):
    """The PETSc Vec of a dolfinx Function, the Vec itself, or ``None`` for anything else."""
    x = getattr(obj, "x", None)
    if x is not None and hasattr(x, "petsc_vec"):
        return x.petsc_vec
    if hasattr(obj, "axpy") and hasattr(obj, "norm") and hasattr(obj, "duplicate"):
        return obj
    return None


def _norm(value: Any) -> float:
    vec = _vec(value)
    if vec is not None:
        return float(vec.norm())
    return float(np.linalg.norm(np.ravel(np.asarray(value))))


def _combine(base: Any, terms: list[tuple[float, Any]]) -> Any:
    """``base + Σ c_k t_k`` as a new object of the type of ``base`` (a Function stays a Function)."""
    if hasattr(base, "function_space") and _vec(base) is not None:
        import dolfinx.fem as fem

        out = fem.Function(base.function_space)
        _vec(base).copy(out.x.petsc_vec)
        for c, t in terms:
            out.x.petsc_vec.axpy(c, _vec(t))
        out.x.scatter_forward()
        return out
    vec = _vec(base)
    if vec is not None:
        out = vec.copy()
        for c, t in terms:
            out.axpy(c, _vec(t))
        return out
    out = np.array(base, dtype=np.result_type(np.asarray(base), *(np.asarray(t) for _, t in terms), float))
    for c, t in terms:
        out = out + c * np.asarray(t)
    return out


def _release(obj: Any, keep: tuple[Any, ...]) -> None:
    """Destroy a PETSc Vec made here (not a Function's, not one of ``keep``)."""
    if hasattr(obj, "destroy") and not hasattr(obj, "function_space") and all(obj is not k for k in keep):
        obj.destroy()


# --------------------------------------------------------------------------- Taylor test


@dataclass(frozen=True)
class TaylorResult:
    """Remainders and observed rates of a Taylor test.

    Attributes
    ----------
    steps : numpy.ndarray, shape (n,)
        The steps :math:`\\varepsilon_k`.
    residuals : dict[int, numpy.ndarray]
        ``residuals[j]`` is :math:`R_j(\\varepsilon_k)`, for each order ``j`` tested (0, and 1, 2 when
        the first and second derivatives were given).
    rates : dict[int, numpy.ndarray]
        ``rates[j]``, shape (n - 1,), the observed orders :math:`\\log_2(R_j(\\varepsilon_k)/R_j(\\varepsilon_{k+1}))`;
        expected ``j + 1``.
    """

    steps: np.ndarray
    residuals: dict[int, np.ndarray]
    rates: dict[int, np.ndarray]

    def min_rate(self, order: int = 1) -> float:
        """The smallest observed rate of :math:`R_{\\mathrm{order}}` (a test asserts it is near ``order + 1``)."""
        if order not in self.rates:
            raise KeyError(f"order {order} was not tested; tested {sorted(self.rates)}")
        return float(np.min(self.rates[order]))

    def as_dict(self) -> dict[str, Any]:
        """``{"eps": [...], "R0": {"Residual": [...], "Rate": [...]}, ...}``, as pyadjoint's ``taylor_to_dict``."""
        out: dict[str, Any] = {"eps": self.steps.tolist()}
        for j in sorted(self.residuals):
            out[f"R{j}"] = {"Residual": self.residuals[j].tolist(), "Rate": self.rates[j].tolist()}
        return out


def taylor_test(
    functional: Callable[[Any], Any],
    x: Any,
    direction: Any,
    *,
    value: Any = None,
    derivative: Any = None,
    hessian: Any = None,
    relative_step: float = 1e-2,
    step: float | None = None,
    num_steps: int = 4,
    norm: Callable[[Any], float] | None = None,
) -> TaylorResult:
    r"""Taylor remainders of ``functional`` at ``x`` along ``direction`` and their observed rates.

    Parameters
    ----------
    functional : callable
        ``functional(point)`` returns :math:`f(\text{point})`: a number, a NumPy array or a PETSc
        Vec. ``point`` has the type of ``x`` and is only valid during the call (a Vec made here is
        destroyed afterwards), and a Vec it returns is destroyed after use. A functional that
        sets a model's control leaves it at the last point: restore it afterwards.
    x, direction : array_like, petsc4py.PETSc.Vec or dolfinx.fem.Function
        The point :math:`x` and the direction :math:`h` (same type and layout).
    value : optional
        :math:`f(x)`, if already known (else one more evaluation).
    derivative : optional
        :math:`df(x)[h]`, of the type of the value (a number for a scalar objective, e.g.
        :math:`\langle\nabla f, h\rangle`); gives :math:`R_1`.
    hessian : optional
        :math:`d^2f(x)[h, h]` (e.g. :math:`\langle h, \nabla^2f\,h\rangle`); gives :math:`R_2`. Needs
        ``derivative``.
    relative_step : float
        :math:`s` in :math:`\varepsilon_0 = s\max(\|x\|, 1)/\|h\|` (default 1e-2).
    step : float, optional
        An absolute :math:`\varepsilon_0` instead.
    num_steps : int
        Number of steps (>= 2): ``num_steps - 1`` rates per order.
    norm : callable, optional
        Norm of a remainder (default: absolute value, Euclidean norm, ``Vec.norm()``).

    Returns
    -------
    TaylorResult
    """
    relative_step = positive(relative_step, "relative_step")
    num_steps = integer(num_steps, "num_steps", minimum=2)
    if hessian is not None and derivative is None:
        raise _invalid("hessian needs derivative: the second-order remainder subtracts both terms")
    h_norm = _norm(direction)
    if not math.isfinite(h_norm) or h_norm == 0.0:
        raise _invalid(f"direction must be non-zero and finite, got norm {h_norm!r}")
    if step is None:
        eps0 = relative_step * max(_norm(x), 1.0) / h_norm
    else:
        eps0 = positive(step, "step")
    measure = norm or _norm
    f0 = functional(x) if value is None else value
    steps = eps0 / 2.0 ** np.arange(num_steps)
    orders = [0] + ([1] if derivative is not None else []) + ([2] if hessian is not None else [])
    residuals: dict[int, list[float]] = {j: [] for j in orders}
    for eps in steps:
        point = _combine(x, [(float(eps), direction)])
        f = functional(point)
        for j in orders:
            terms = [(-1.0, f0)]
            if j >= 1:
                terms.append((-float(eps), derivative))
            if j >= 2:
                terms.append((-0.5 * float(eps) ** 2, hessian))
            remainder = _scalar_or_combine(f, terms)
            residuals[j].append(measure(remainder))
            _release(remainder, (f, f0, derivative, hessian))
        _release(f, (f0,))
        _release(point, (x,))
    res = {j: np.asarray(r) for j, r in residuals.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = {j: np.log2(r[:-1] / r[1:]) for j, r in res.items()}
    return TaylorResult(steps, res, rates)


def _scalar_or_combine(f: Any, terms: list[tuple[float, Any]]) -> Any:
    """``f + Σ c_k t_k`` for a number ``f`` (a number) or a vector value (a new vector)."""
    if _vec(f) is None and isinstance(f, numbers.Number):
        return f + sum(c * t for c, t in terms)
    return _combine(f, terms)


def _invalid(message: str) -> Exception:
    from sensitivity.errors import InvalidArgumentError

    return InvalidArgumentError(message)


# --------------------------------------------------------------------------- dot-product test


@dataclass(frozen=True)
class DotProductResult:
    r""":math:`\langle Ax, y\rangle`, :math:`\langle x, A^Ty\rangle` and their relative difference."""

    forward: float
    adjoint: float
    relative_error: float


def dot_product_test(
    apply: Callable[[Any], Any],
    apply_transpose: Callable[[Any], Any],
    x: Any,
    y: Any,
    *,
    inner: Callable[[Any, Any], float] | None = None,
) -> DotProductResult:
    r"""Check :math:`\langle Ax, y\rangle = \langle x, A^Ty\rangle` (Devito's dot-product test).

    Parameters
    ----------
    apply, apply_transpose : callable
        :math:`x \mapsto Ax` and :math:`y \mapsto A^Ty` (NumPy arrays or PETSc Vecs).
    x, y : array_like or petsc4py.PETSc.Vec
        Test vectors in the domain and the range of :math:`A` (not the output of an operator
        under test: generic vectors, e.g. from analytic expressions or a seeded generator).
    inner : callable, optional
        The pairing (default the real part of the Euclidean dot product, collective for Vecs).

    Returns
    -------
    DotProductResult
        ``relative_error`` = :math:`|\langle Ax, y\rangle - \langle x, A^Ty\rangle|` divided by
        :math:`\|Ax\|\|y\|` (zero only for an exact transpose; round-off is ~1e-15).
    """
    pair = inner or _dot
    Ax, ATy = apply(x), apply_transpose(y)
    forward, adjoint = finite_number(pair(Ax, y), "<Ax, y>"), finite_number(pair(x, ATy), "<x, A^T y>")
    scale = _norm(Ax) * _norm(y)
    relative = abs(forward - adjoint) / scale if scale > 0 else abs(forward - adjoint)
    for obj in (Ax, ATy):
        _release(obj, (x, y))
    return DotProductResult(forward, adjoint, float(relative))


def _dot(a: Any, b: Any) -> float:
    va, vb = _vec(a), _vec(b)
    if va is not None and vb is not None:
        return float(np.real(vb.dot(va)))
    return float(np.real(np.vdot(np.asarray(b), np.asarray(a))))
