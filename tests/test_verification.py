"""``sensitivity.verification``: the Taylor test and the dot-product test (docs/theory.md §6).

Checks, on maps whose derivatives are known in closed form: with the right first derivative the
remainder R1 falls at rate 2, with a wrong one at rate 1, and with the second-derivative term R2
falls at rate 3 (R0 at rate 1); the steps are ε0 2^-k with ε0 scaled to the point, or the
absolute ``step``; the point and direction may be NumPy arrays, distributed PETSc Vecs (a
Vec-valued and a scalar map) or dolfinx Functions (ghosts updated, the point left unchanged),
the last two on any number of ranks (marked ``mpi``). The dot-product test gives round-off for a
matrix and its transpose (NumPy and a distributed PETSc matrix) and a large error for a wrong
transpose; bad arguments raise InvalidArgumentError before anything is evaluated."""

from __future__ import annotations

import numpy as np
import pytest

from sensitivity.errors import InvalidArgumentError  # first: the package imports dolfinx_solver before petsc4py
from sensitivity.verification import TaylorResult, dot_product_test, taylor_test

# --------------------------------------------------------------------------- an analytic map R^3 -> R^3

X = np.array([0.7, -1.2, 0.4])
H = np.array([0.3, 0.5, -0.8])


def _f(x):
    return np.array([np.sin(x[0]) * x[1], np.exp(x[2]) + x[0] ** 2, x[0] * x[1] * x[2]])


def _df(x, h):
    """The Jacobian of :func:`_f` at x applied to h."""
    J = np.array([[np.cos(x[0]) * x[1], np.sin(x[0]), 0.0],
                  [2.0 * x[0], 0.0, np.exp(x[2])],
                  [x[1] * x[2], x[0] * x[2], x[0] * x[1]]])
    return J @ h


def _d2f(x, h):
    """d²f(x)[h, h], component by component."""
    return np.array([-np.sin(x[0]) * x[1] * h[0] ** 2 + 2.0 * np.cos(x[0]) * h[0] * h[1],
                     2.0 * h[0] ** 2 + np.exp(x[2]) * h[2] ** 2,
                     2.0 * (x[2] * h[0] * h[1] + x[1] * h[0] * h[2] + x[0] * h[1] * h[2])])


def test_rates_with_the_right_and_a_wrong_derivative_and_the_hessian():
    result = taylor_test(_f, X, H, derivative=_df(X, H), hessian=_d2f(X, H))
    assert isinstance(result, TaylorResult)
    assert sorted(result.rates) == sorted(result.residuals) == [0, 1, 2]
    assert np.all(np.abs(result.rates[0] - 1.0) < 0.1), result.rates
    assert np.all(np.abs(result.rates[1] - 2.0) < 0.1), result.rates
    assert np.all(np.abs(result.rates[2] - 3.0) < 0.1), result.rates
    assert result.min_rate(1) == pytest.approx(np.min(result.rates[1]))
    assert np.all(np.diff(result.residuals[1]) < 0) and result.residuals[1][0] < 1e-3
    # a wrong derivative (10 % off) leaves the first-order remainder at rate 1
    wrong = taylor_test(_f, X, H, derivative=1.1 * _df(X, H))
    assert np.all(np.abs(wrong.rates[1] - 1.0) < 0.1), wrong.rates
    assert sorted(wrong.rates) == [0, 1]
    with pytest.raises(KeyError, match="order 2 was not tested"):
        wrong.min_rate(2)
    # a value given is used instead of one more evaluation
    calls = []
    taylor_test(lambda x: calls.append(1) or _f(x), X, H, value=_f(X), derivative=_df(X, H), num_steps=3)
    assert len(calls) == 3


def test_steps_are_scaled_to_the_point_or_given():
    result = taylor_test(_f, X, H, derivative=_df(X, H))
    eps0 = 1e-2 * max(np.linalg.norm(X), 1.0) / np.linalg.norm(H)
    np.testing.assert_allclose(result.steps, eps0 / 2.0 ** np.arange(4), rtol=1e-15)
    assert len(result.rates[1]) == 3
    big = 50.0 * X  # a point of norm > 1: the first step grows with it
    assert taylor_test(_f, big, H, relative_step=1e-3).steps[0] == pytest.approx(
        1e-3 * np.linalg.norm(big) / np.linalg.norm(H), rel=1e-15)
    small = 1e-3 * X  # ... and not below max(|x|, 1) = 1
    assert taylor_test(_f, small, H).steps[0] == pytest.approx(1e-2 / np.linalg.norm(H), rel=1e-15)
    given = taylor_test(_f, X, H, derivative=_df(X, H), step=0.5, num_steps=6)
    np.testing.assert_array_equal(given.steps, 0.5 / 2.0 ** np.arange(6))
    assert len(given.rates[1]) == 5 and len(given.residuals[1]) == 6
    d = given.as_dict()
    assert d["eps"] == given.steps.tolist()
    assert d["R1"]["Residual"] == given.residuals[1].tolist() and d["R1"]["Rate"] == given.rates[1].tolist()
    assert set(d) == {"eps", "R0", "R1"}


def test_scalar_map_and_a_custom_norm():
    A = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 3.0]])
    b = np.array([1.0, -2.0, 0.5])

    def J(x):
        return 0.5 * x @ A @ x + np.sin(x @ b)

    slope = (A @ X + np.cos(X @ b) * b) @ H
    curvature = H @ A @ H - np.sin(X @ b) * (b @ H) ** 2
    result = taylor_test(J, X, H, derivative=slope, hessian=curvature)
    assert np.all(np.abs(result.rates[1] - 2.0) < 0.1), result.rates
    assert np.all(np.abs(result.rates[2] - 3.0) < 0.1), result.rates
    # a max norm instead of the Euclidean one: the same rates for a vector map
    inf = taylor_test(_f, X, H, derivative=_df(X, H), norm=lambda r: float(np.max(np.abs(r))))
    assert np.all(np.abs(inf.rates[1] - 2.0) < 0.1), inf.rates


# --------------------------------------------------------------------------- PETSc Vecs and dolfinx Functions

N = 20  # global size, split unevenly over 3 ranks


def _vecs(comm):
    from petsc4py import PETSc

    grid = np.linspace(0.0, 1.0, N)
    out = []
    for values in (0.5 + grid, np.cos(3.0 * grid), grid**2):
        v = PETSc.Vec().createMPI((PETSc.DECIDE, N), comm=comm)
        lo, hi = v.getOwnershipRange()
        v.array[:] = values[lo:hi]
        out.append(v)
    return out


@pytest.mark.mpi
def test_vec_valued_map_of_distributed_vecs(comm):
    """f(x) = x∘x∘x + (x·x) b: pointwise and collective parts; its derivatives in closed form."""
    x, h, b = _vecs(comm)
    x_before = x.array.copy()

    def f(p):
        assert p.getSizes() == x.getSizes()  # the point has the layout of x
        out = p.copy()
        out.array[:] = p.array**3
        out.axpy(p.dot(p), b)
        return out

    df = x.copy()
    df.array[:] = 3.0 * x.array**2 * h.array
    df.axpy(2.0 * x.dot(h), b)
    d2f = x.copy()
    d2f.array[:] = 6.0 * x.array * h.array**2
    d2f.axpy(2.0 * h.dot(h), b)
    result = taylor_test(f, x, h, derivative=df, hessian=d2f)
    assert np.all(np.abs(result.rates[1] - 2.0) < 0.1), result.rates
    assert np.all(np.abs(result.rates[2] - 3.0) < 0.1), result.rates
    rates = np.concatenate([result.rates[1], result.rates[2]])
    assert np.allclose(comm.allgather(rates), rates, rtol=0, atol=0)  # the same numbers on every rank
    wrong = df.copy()  # the derivative without its collective part 2(x·h)b, a typical slip
    wrong.axpy(-2.0 * x.dot(h), b)
    assert np.all(np.abs(taylor_test(f, x, h, derivative=wrong).rates[1] - 1.0) < 0.1)
    np.testing.assert_array_equal(x.array, x_before)  # the point is not modified
    assert df.norm() > 0 and d2f.norm() > 0  # ... nor the derivatives (not destroyed)
    for v in (x, h, b, df, d2f, wrong):
        v.destroy()


@pytest.mark.mpi
def test_scalar_map_of_distributed_vecs(comm):
    x, h, _ = _vecs(comm)

    def J(p):
        return 0.5 * p.dot(p) + comm.allreduce(float(np.sum(np.sin(p.array))))

    slope = x.dot(h) + comm.allreduce(float(np.sum(np.cos(x.array) * h.array)))
    curvature = h.dot(h) - comm.allreduce(float(np.sum(np.sin(x.array) * h.array**2)))
    result = taylor_test(J, x, h, derivative=slope, hessian=curvature)
    assert np.all(np.abs(result.rates[1] - 2.0) < 0.1), result.rates
    assert np.all(np.abs(result.rates[2] - 3.0) < 0.1), result.rates
    for v in (x, h):
        v.destroy()


@pytest.mark.mpi
def test_dolfinx_function_point(comm):
    """J(u) = ∫u³ dx on a distributed mesh: the point is a Function of the same space with its
    ghosts updated (the assembly reads them), so the rates are right on any number of ranks."""
    import ufl
    from dolfinx import fem, mesh

    msh = mesh.create_unit_square(comm, 6, 6)
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, h = fem.Function(V), fem.Function(V)
    u.interpolate(lambda x: 1.0 + x[0] * x[1])
    h.interpolate(lambda x: np.sin(np.pi * x[0]) + x[1])
    u_before = u.x.array.copy()

    def integral(expr):
        return comm.allreduce(fem.assemble_scalar(fem.form(expr * ufl.dx)))

    def J(w):
        assert isinstance(w, fem.Function) and w.function_space == V
        return integral(w**3)

    result = taylor_test(J, u, h, derivative=integral(3 * u**2 * h), hessian=integral(6 * u * h**2))
    assert np.all(np.abs(result.rates[1] - 2.0) < 0.1), result.rates
    assert np.all(np.abs(result.rates[2] - 3.0) < 0.1), result.rates
    wrong = taylor_test(J, u, h, derivative=1.1 * integral(3 * u**2 * h))
    assert np.all(np.abs(wrong.rates[1] - 1.0) < 0.1), wrong.rates
    np.testing.assert_array_equal(u.x.array, u_before)
    # the step is scaled to the (global) norm of the point's dofs
    eps0 = 1e-2 * max(u.x.petsc_vec.norm(), 1.0) / h.x.petsc_vec.norm()
    assert result.steps[0] == pytest.approx(eps0, rel=1e-14)


# --------------------------------------------------------------------------- dot-product test


def test_dot_product_test_of_a_matrix_and_its_transpose():
    rng = np.random.default_rng(4)
    A, B = rng.standard_normal((7, 5)), rng.standard_normal((7, 5))
    x, y = rng.standard_normal(5), rng.standard_normal(7)
    result = dot_product_test(lambda v: A @ v, lambda w: A.T @ w, x, y)
    assert result.forward == pytest.approx((A @ x) @ y, rel=1e-14)
    assert result.adjoint == pytest.approx(x @ (A.T @ y), rel=1e-14)
    assert result.relative_error < 1e-14, result
    wrong = dot_product_test(lambda v: A @ v, lambda w: B.T @ w, x, y)
    assert wrong.relative_error > 1e-2, wrong
    # a different pairing (weighted), the same verdicts
    W = np.diag([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    weighted = dot_product_test(lambda v: A @ v, lambda w: A.T @ W @ w, x, y,
                                inner=lambda a, b: float(a @ W @ b) if len(a) == 7 else float(a @ b))
    assert weighted.relative_error < 1e-14, weighted


@pytest.mark.mpi
def test_dot_product_test_of_a_distributed_matrix(comm):
    from petsc4py import PETSc

    m, n = 12, 9
    dense = np.random.default_rng(8).standard_normal((m, n))  # the same on every rank
    A = PETSc.Mat().createAIJ(((PETSc.DECIDE, m), (PETSc.DECIDE, n)), comm=comm)
    A.setPreallocationNNZ((n, n))
    lo, hi = A.getOwnershipRange()
    for i in range(lo, hi):
        A.setValues(i, np.arange(n, dtype=PETSc.IntType), dense[i])
    A.assemble()
    x, y = A.createVecRight(), A.createVecLeft()
    for v, values in ((x, np.linspace(-1.0, 1.0, n)), (y, np.cos(np.arange(m)))):
        r0, r1 = v.getOwnershipRange()
        v.array[:] = values[r0:r1]

    def mult(v):
        out = A.createVecLeft()
        A.mult(v, out)
        return out

    def mult_transpose(w):
        out = A.createVecRight()
        A.multTranspose(w, out)
        return out

    result = dot_product_test(mult, mult_transpose, x, y)
    expected = (dense @ np.linspace(-1.0, 1.0, n)) @ np.cos(np.arange(m))
    assert result.forward == pytest.approx(expected, rel=1e-13)
    assert result.relative_error < 1e-14, result

    def wrong_transpose(w):  # the transpose of the matrix with its first column doubled
        out = mult_transpose(w)
        r0, r1 = out.getOwnershipRange()
        if r0 == 0 and r1 > 0:
            out.array[0] *= 2.0
        return out

    assert dot_product_test(mult, wrong_transpose, x, y).relative_error > 1e-2
    for obj in (A, x, y):
        obj.destroy()


# --------------------------------------------------------------------------- bad arguments


def _never(x):
    raise AssertionError("evaluated despite a bad argument")


@pytest.mark.parametrize(
    "kwargs, direction, match",
    [
        ({}, np.zeros(3), "direction must be non-zero and finite, got norm 0.0"),
        ({}, np.array([1.0, np.nan, 0.0]), "direction must be non-zero and finite, got norm nan"),
        ({"hessian": np.ones(3)}, H, "hessian needs derivative"),
        ({"num_steps": 1}, H, "num_steps must be an integer >= 2, got 1"),
        ({"num_steps": 2.5}, H, "num_steps must be an integer >= 2, got 2.5"),
        ({"step": 0.0}, H, "step must be positive and finite, got 0.0"),
        ({"relative_step": -1e-2}, H, "relative_step must be positive and finite, got -0.01"),
    ],
)
def test_bad_arguments_raise_before_evaluating(kwargs, direction, match):
    with pytest.raises(InvalidArgumentError, match=match):
        taylor_test(_never, X, direction, **kwargs)


@pytest.mark.mpi
def test_zero_vec_direction_is_refused_on_every_rank(comm):
    x, h, _ = _vecs(comm)
    h.set(0.0)
    with pytest.raises(InvalidArgumentError, match="direction must be non-zero and finite, got norm 0.0"):
        taylor_test(_never, x, h)
    lo, hi = h.getOwnershipRange()
    # non-zero on the first rank only: the norm is global, so every rank accepts it. (Every rank
    # writes its array, so that every rank drops PETSc's cached norm of 0.)
    h.array[:] = np.where(np.arange(lo, hi) == 0, 1.0, 0.0)
    result = taylor_test(lambda p: p.dot(p), x, h, num_steps=2)
    assert result.steps[0] == pytest.approx(1e-2 * max(x.norm(), 1.0), rel=1e-14)
    for v in (x, h):
        v.destroy()


def test_a_non_finite_pairing_is_refused():
    with pytest.raises(InvalidArgumentError, match=r"<Ax, y> must be a finite number, got nan"):
        dot_product_test(lambda v: np.full(2, np.nan), lambda w: np.zeros(3), np.ones(3), np.ones(2))
