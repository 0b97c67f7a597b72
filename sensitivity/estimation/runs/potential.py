r"""The potential problem of a run file (``problem.kind = "potential"``): a quantum potential from densities.

The double well of ``demos/potential_estimation.py`` (docs/theory.md §3): :math:`i\psi_t = -\tfrac12\Delta\psi
+ V\psi` on the box :math:`[-L, L]^2` (``problem.half_width``), :math:`\psi = 0` on its boundary, from a Gaussian
packet in the left well moving towards the barrier; Crank–Nicolson on the real split :math:`\psi = a + ib` in P1.
Observed: the densities :math:`|\psi|^2` at ``problem.sensors`` × ``problem.sensors`` interior points
(``tracer``-like ``densities``) and the probabilities of the left and right halves (``probabilities``).

The potential is a polynomial of total degree ``problem.modes`` :math:`= K` in normalized Legendre modes,

.. math::

    V = \sum_{i + j \le K} q_{ij}\,\sqrt{(2i + 1)(2j + 1)}\,P_i(x/L)\,P_j(y/L)

(:math:`(K + 1)(K + 2)/2` coefficients; each mode has mean square one over the box, all but the constant
:math:`q_{00}` mean zero). The double well :math:`a((x/w)^2 - 1)^2 + by^2` of the synthetic data
(``problem.barrier``, ``separation``, ``confinement``) is a quartic: from :math:`K = 4` on it lies in the span,
and the run reports its coefficients as the truth. The prior: independent :math:`q_{ij} \sim N(\bar m,
\sigma^2\max(i + j, 1)^{-2\alpha})`, :math:`\alpha` = ``problem.spectrum``.

**Modulo the constant.** Adding a constant to :math:`V` changes only the phase of :math:`\psi` in continuous
time, so the densities cannot see :math:`q_{00}`; after Crank–Nicolson they do, through the time stepper's
phase error (a shift by 0.5 changes the misfit of the default run file by a thousand), so :math:`q_{00}` is a
parameter, but only the field modulo its mean, :math:`V - q_{00}`, is reported as the estimate:
``fields.bp``/``fields.png`` show the posterior mean and standard deviation of :math:`V - q_{00}`.

Forces: ``"exact"`` (the discrete adjoint), ``"secular"`` (the secular surrogate on ``problem.eigenpairs``
eigenpairs of the Hamiltonian, :class:`~sensitivity.fem.surrogates.SecularSurrogate`), ``"first order"``
(:class:`~sensitivity.fem.surrogates.FirstOrderSurrogate`), ``"laplace"``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from mpi4py import MPI

from sensitivity.estimation.runs.config import Key, integer_at_least, register_problem
from sensitivity.estimation.runs.fields import SOLVERS, FieldModel, FieldProblem, first_order_surrogate
from sensitivity.validation import non_negative, positive

__all__ = ["PotentialProblem", "legendre_mode", "legendre_modes"]

#: The packet of the demo: centre (as fractions of w and L), width, momentum.
PACKET_CENTER, PACKET_WIDTH, PACKET_MOMENTUM = (-1.0, 0.15), 0.35, (2.5, 0.5)


def legendre_modes(K: int) -> list[tuple[int, int]]:
    """The degrees :math:`(i, j)`, :math:`i + j \\le K`, by total degree, then :math:`i` (the constant first)."""
    return sorted(((i, j) for i in range(K + 1) for j in range(K + 1 - i)), key=lambda k: (k[0] + k[1], k))


def legendre_mode(k: tuple[int, int], L: float):
    """The mode :math:`\\sqrt{(2i + 1)(2j + 1)}P_i(x/L)P_j(y/L)` as ``x -> values`` (``x`` of shape (2 or 3, n))."""
    from numpy.polynomial.legendre import legval

    ci, cj = np.eye(k[0] + 1)[k[0]], np.eye(k[1] + 1)[k[1]]
    scale = np.sqrt((2 * k[0] + 1) * (2 * k[1] + 1))
    return lambda x: scale * legval(x[0] / L, ci) * legval(x[1] / L, cj)


@register_problem
class PotentialProblem(FieldProblem):
    """A polynomial potential from densities (module docstring)."""

    kind = "potential"
    observers = ("densities", "probabilities")
    keys: ClassVar[dict[str, Key]] = {
        **FieldProblem.COMMON_KEYS,
        "cells": Key(12, integer_at_least(2), "cells per side of the mesh"),
        "steps": Key(60, integer_at_least(1), "number of time steps"),
        "observe_every": Key(6, integer_at_least(1), "observe at every k-th step"),
        "noise": Key(0.01, positive, "noise standard deviation, relative to the largest value of each observer"),
        "half_width": Key(2.0, positive, "the box is [-L, L]^2"),
        "barrier": Key(3.0, positive, "barrier a of the true double well"),
        "separation": Key(1.4, positive, "well minima at x = +-w"),
        "confinement": Key(0.5, non_negative, "b in b y^2"),
        "sensors": Key(5, integer_at_least(1), "density sensors per direction"),
        "modes": Key(4, integer_at_least(0), "the total degree K of the polynomial potential"),
        "spectrum": Key(0.0, non_negative, "prior std of mode (i, j) scales like max(i + j, 1)^-spectrum"),
        "eigenpairs": Key(4, integer_at_least(1), "eigenpairs of the secular surrogate"),
        "true_coefficients": Key(None, FieldProblem.COMMON_KEYS["true_coefficients"].check,
                                 "true coefficients (default: the double well)"),
    }
    forces = ("exact", "secular", "first order")
    field_name = "V - mean"

    def field_coefficients(self, q: np.ndarray) -> np.ndarray:
        """``q`` without the constant (the field modulo its mean, module docstring)."""
        out = np.array(q, dtype=float, copy=True)
        out[..., 0] = 0.0
        return out

    @staticmethod
    def _secular(functional, values):
        from sensitivity.fem.surrogates import SecularSurrogate

        return SecularSurrogate(functional, values["eigenpairs"])

    surrogates: ClassVar[dict[str, Any]] = {"secular": _secular, "first order": first_order_surrogate}

    @classmethod
    def wave_vectors(cls, values: dict) -> list[tuple[int, int]]:
        return legendre_modes(values["modes"])

    @classmethod
    def mode_scales(cls, values: dict) -> np.ndarray:
        k = np.array(cls.wave_vectors(values), dtype=float)
        return np.maximum(k.sum(axis=1), 1.0) ** (-values["spectrum"])

    @classmethod
    def true_field(cls, values: dict, truth):
        if truth is not None or values["true_coefficients"] is not None:
            return None
        a, w, b = values["barrier"], values["separation"], values["confinement"]
        return lambda x: a * ((x[0] / w) ** 2 - 1.0) ** 2 + b * x[1] ** 2

    @classmethod
    def model(cls, values: dict, comm: MPI.Comm) -> FieldModel:
        from sensitivity.fem import (DensitySensors, PotentialField, RegionProbabilities, Schrodinger, ThetaScheme,
                                     gaussian_packet, schrodinger_space)

        from dolfinx import fem
        from dolfinx import mesh as dmesh

        L, n = values["half_width"], values["cells"]
        msh = dmesh.create_rectangle(comm, [[-L, -L], [L, L]], [n, n])
        W = schrodinger_space(msh, 1)
        V = fem.Function(fem.functionspace(msh, ("Lagrange", 1)), name="V")
        problem = Schrodinger(W, PotentialField(V))
        scheme = ThetaScheme(problem, values["dt"], petsc_options=SOLVERS[values["solver"]])
        center = [PACKET_CENTER[0] * values["separation"], PACKET_CENTER[1] * L]
        psi0 = gaussian_packet(problem, center, PACKET_WIDTH, PACKET_MOMENTUM)
        grid = np.linspace(-L, L, values["sensors"] + 2)[1:-1]
        sensors = DensitySensors(W, np.array([[x, y] for x in grid for y in grid]))
        tdim = msh.topology.dim
        cells = np.arange(msh.topology.index_map(tdim).size_local, dtype=np.int32)
        mid = dmesh.compute_midpoints(msh, tdim, cells)[:, 0]
        tags = dmesh.meshtags(msh, tdim, cells, np.where(mid < 0.0, 1, 2).astype(np.int32))
        regions = RegionProbabilities(W, tags, [1, 2])  # the left and the right well
        modes = [legendre_mode(k, L) for k in legendre_modes(values["modes"])]
        return FieldModel(scheme, psi0, V, [sensors, regions], modes)

