"""Point sensors across ranks: values, the transpose (dot-product test, docs/theory.md §6), bad points."""

from __future__ import annotations

import numpy as np
import pytest

import sensitivity  # noqa: F401
from dolfinx import fem, mesh
from sensitivity.errors import InvalidArgumentError
from sensitivity.fem import PointSensors
from sensitivity.verification import dot_product_test

POINTS = np.array([[0.1, 0.2], [0.5, 0.5], [0.93, 0.61], [1.0, 1.0], [0.25, 0.75]])


@pytest.mark.mpi
@pytest.mark.parametrize("degree", [1, 2])
def test_values_and_transpose(comm, degree):
    msh = mesh.create_unit_square(comm, 7, 5)
    V = fem.functionspace(msh, ("Lagrange", degree))
    f = fem.Function(V)
    f.interpolate(lambda x: 1 + x[0] + 2 * x[1] + (x[0] * x[1] if degree == 2 else 0))
    sensors = PointSensors(V, POINTS)
    x, y = POINTS[:, 0], POINTS[:, 1]
    expected = 1 + x + 2 * y + (x * y if degree == 2 else 0)
    assert np.allclose(sensors.evaluate(f), expected, atol=1e-13)
    assert np.allclose(sensors.evaluate(f.x.petsc_vec), expected, atol=1e-13)
    assert np.sum(sensors.owner == comm.rank) == len(sensors._local)
    # dot-product test: <P g, w> = <g, P^T w>
    g = fem.Function(V)
    g.interpolate(lambda x: np.cos(3 * x[0]) * np.sin(2 * x[1] + 0.3))
    w = np.array([0.3, -1.0, 2.0, 0.5, 1.5])

    def transpose(weights):
        out = g.x.petsc_vec.duplicate()
        out.set(0.0)
        return sensors.apply_transpose(weights, out)

    result = dot_product_test(sensors.evaluate, transpose, g, w)
    lhs = result.forward
    assert abs(lhs - result.adjoint) < 1e-13 * max(1.0, abs(lhs))
    assert result.relative_error < 1e-13, result


@pytest.mark.mpi
def test_point_outside_the_mesh_fails_on_every_rank(comm):
    V = fem.functionspace(mesh.create_unit_square(comm, 4, 4), ("Lagrange", 1))
    with pytest.raises(InvalidArgumentError, match=r"sensor point 1 at \[1.5 0.5\] is outside the mesh"):
        PointSensors(V, [[0.5, 0.5], [1.5, 0.5]])
    with pytest.raises(InvalidArgumentError, match="points must be a finite array"):
        PointSensors(V, [[np.nan, 0.5]])
