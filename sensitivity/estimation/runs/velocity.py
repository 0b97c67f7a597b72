r"""The velocity problem of a run file (``problem.kind = "velocity"``): a flow from a passive scalar.

After Borggaard, Glatt-Holtz & Krometis (SIAM/ASA JUQ 8(3), 2020), on the no-flux unit square: the tracer
:math:`\theta` (P1) obeys :math:`\theta_t = \kappa\Delta\theta - u\cdot\nabla\theta`, :math:`\partial_n\theta = 0`,
with the divergence-free velocity :math:`u = \mathrm{curl}\,\psi = (\partial_y\psi, -\partial_x\psi)` of the
stream function (P\ ``problem.stream_degree``)

.. math::

    \psi = \sum_{1 \le k_1, k_2 \le K} q_k\,\varphi_k, \qquad
    \varphi_k = \frac{2\sin(k_1\pi x)\sin(k_2\pi y)}{\pi|k|},

:math:`K` = ``problem.modes`` (:math:`K^2` coefficients; the paper's 196 at :math:`K = 14`), each mode a unit
:math:`L^2` velocity tangential to the walls. The prior is Kraichnan-like: independent
:math:`q_k \sim N(\bar m, \sigma^2(|k|/\sqrt2)^{-2\alpha})`, :math:`\sigma` = ``prior.std``, :math:`\alpha` =
``problem.spectrum``. The tracer starts as a Gaussian blob of width ``problem.source_width`` at
(``problem.source_x``, 1/2) and is read at ``problem.sensors`` points of the midline :math:`y = 1/2`.

**The symmetry.** The mesh (crossed diagonals), the blob and the sensors are invariant under the reflection
:math:`R(x, y) = (x, 1 - y)`, and :math:`\theta\circ R` is the tracer of the velocity :math:`DR\,u\circ R`, whose
stream function is :math:`-\psi\circ R`, i.e. the coefficients :math:`q_k \mapsto (-1)^{k_2}q_k`. The data
cannot tell them apart: the likelihood is invariant, on the discrete level too, and a flow of odd-:math:`k_2`
modes (a single gyre :math:`k = (1, 1)` first) has the mirror image :math:`-v`, so the posterior has the two
modes :math:`\pm v` of the paper, separated by the saddle at :math:`q = 0`. :meth:`VelocityProblem.symmetries` gives
the reflection, so ``sampler.initial = "map modes"`` starts the chains in turn at the MAP point and its
image; :meth:`VelocityProblem.chain_report` says, per chain, which mode its draws visit, and gives the ArviZ
diagnostics of the draws folded onto one mode (``summary.json``, ``chains_report``). Starts far from
:math:`q = 0` (``map.spread``) find spurious local minima: fast flows that flush the blob past the sensors.

Forces: ``"exact"`` (the discrete adjoint), ``"first order"`` (the seed's :math:`t\,S_u(t)J`,
:class:`~sensitivity.fem.surrogates.FirstOrderSurrogate`), ``"laplace"``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from mpi4py import MPI

from sensitivity.estimation.runs.config import Key, integer_at_least, register_problem
from sensitivity.estimation.runs.fields import SOLVERS, FieldModel, FieldProblem, first_order_surrogate
from sensitivity.validation import in_range, non_negative, positive

__all__ = ["VelocityProblem", "mirror_signs", "sine_modes"]


def sine_modes(K: int) -> list[tuple[int, int]]:
    """The wave vectors :math:`1 \\le k_1, k_2 \\le K`, by :math:`|k|`, then :math:`k_1`."""
    return sorted(((a, b) for a in range(1, K + 1) for b in range(1, K + 1)), key=lambda k: (k[0] ** 2 + k[1] ** 2, k))


def mirror_signs(K: int) -> np.ndarray:
    r"""The signs :math:`(-1)^{k_2}` of the reflection :math:`y \mapsto 1 - y` on the coefficients (module
    docstring): the likelihood of :math:`q` and of ``mirror_signs(K) * q`` are equal."""
    return np.array([(-1.0) ** k[1] for k in sine_modes(K)])


def _mode(k: tuple[int, int]):
    scale = 2.0 / (np.pi * np.hypot(*k))
    return lambda x: scale * np.sin(k[0] * np.pi * x[0]) * np.sin(k[1] * np.pi * x[1])


@register_problem
class VelocityProblem(FieldProblem):
    """A stream function of sine modes from tracer readings (module docstring)."""

    kind = "velocity"
    observers = ("tracer",)
    keys: ClassVar[dict[str, Key]] = {
        **FieldProblem.COMMON_KEYS,
        "kappa": Key(0.01, positive, "diffusivity"),
        "stream_degree": Key(2, lambda v, n: in_range(integer_at_least(1)(v, n), n, 1, 3), "degree of psi"),
        "spectrum": Key(1.0, non_negative, "prior std of mode k scales like (|k|/sqrt 2)^-spectrum"),
        "source_x": Key(0.3, lambda v, n: in_range(v, n, 0.0, 1.0, low_open=True, high_open=True),
                        "x of the tracer blob (on y = 1/2)"),
        "source_width": Key(0.1, positive, "width of the tracer blob"),
        "sensors": Key(7, integer_at_least(1), "sensors on the midline y = 1/2"),
    }
    forces = ("exact", "first order")
    field_name, field_symmetric = "stream function", True

    surrogates: ClassVar[dict[str, Any]] = {"first order": first_order_surrogate}

    @classmethod
    def wave_vectors(cls, values: dict) -> list[tuple[int, int]]:
        return sine_modes(values["modes"])

    @classmethod
    def mode_scales(cls, values: dict) -> np.ndarray:
        k = np.array(cls.wave_vectors(values), dtype=float)
        return (np.hypot(k[:, 0], k[:, 1]) / np.sqrt(2.0)) ** (-values["spectrum"])

    @classmethod
    def model(cls, values: dict, comm: MPI.Comm) -> FieldModel:
        from sensitivity.fem import AdvectionDiffusion, PointSensors, StreamFunction, ThetaScheme

        from dolfinx import fem
        from dolfinx import mesh as dmesh

        n = values["cells"]
        msh = dmesh.create_unit_square(comm, n, n, diagonal=dmesh.DiagonalType.crossed)
        V = fem.functionspace(msh, ("Lagrange", 1))
        psi = fem.Function(fem.functionspace(msh, ("Lagrange", values["stream_degree"])), name="psi")
        problem = AdvectionDiffusion(V, StreamFunction(psi), kappa=values["kappa"])
        scheme = ThetaScheme(problem, values["dt"], petsc_options=SOLVERS[values["solver"]])
        x0, w = values["source_x"], values["source_width"]
        theta0 = fem.Function(V, name="theta0")
        theta0.interpolate(lambda x: np.exp(-((x[0] - x0) ** 2 + (x[1] - 0.5) ** 2) / (2 * w * w)))
        s = values["sensors"]
        points = np.column_stack([(np.arange(s) + 1.0) / (s + 1), np.full(s, 0.5)])
        modes = [_mode(k) for k in sine_modes(values["modes"])]
        return FieldModel(scheme, theta0, psi, [PointSensors(V, points)], modes)

    def symmetries(self) -> list[np.ndarray]:
        """The reflection :math:`q \\mapsto (-1)^{k_2}q` (module docstring)."""
        return [np.diag(mirror_signs(self.values["modes"]))]

    def reference(self, control: np.ndarray, map_point: np.ndarray | None) -> np.ndarray:
        """The point that names "the" mode: the MAP point, else the truth, else the mean of the draws ``control``
        (shape (chains, draws, m))."""
        for r in (map_point, self.truth):
            if r is not None:
                return np.asarray(r, dtype=float)
        return control.reshape(-1, self.size).mean(axis=0)

    def fold(self, control: np.ndarray, reference: np.ndarray) -> np.ndarray:
        r"""Draws of shape (..., m) with those in the mirror mode reflected, :math:`q \mapsto (-1)^{k_2}q`: the
        posterior folded onto the half :math:`\{q: q_{\rm odd}\cdot r_{\rm odd} \ge 0\}` of the reference
        ``reference``. The symmetry is exact, so the folded draws sample the posterior restricted to that half
        (times two), one mode: their ESS and :math:`\hat R` measure the mixing within a mode."""
        signs = mirror_signs(self.values["modes"])
        mirrored = (control[..., signs < 0] @ reference[signs < 0]) < 0
        return np.where(mirrored[..., None], control * signs, control)

    def draw_groups(self, control: np.ndarray, map_point: np.ndarray | None) -> dict[str, np.ndarray]:
        """All draws (the mean of both modes is near zero) and the draws folded onto the reference's mode."""
        return {"posterior": control, "mode": self.fold(control, self.reference(control, map_point))}

    def chain_report(self, chains, map_point: np.ndarray | None) -> dict[str, Any]:
        r"""Which of the mirror modes :math:`q` and :math:`(-1)^{k_2}q` each chain visits (the fraction of its
        draws on the reference's side, :meth:`fold`), and the ArviZ diagnostics of the folded draws."""
        import dataclasses

        from sensitivity.estimation.diagnostics import summarize

        signs = mirror_signs(self.values["modes"])
        reference = self.reference(chains.draws()["control"], map_point)
        if not np.any(reference[signs < 0]):
            return {"odd_modes": int(np.sum(signs < 0)), "fraction_like_reference": None}
        draws = chains.draws()["control"]
        fractions = [float(np.mean(chain[:, signs < 0] @ reference[signs < 0] >= 0)) for chain in draws]
        folded = summarize(dataclasses.replace(chains, control=self.fold(chains.control, reference)))

        def q(stat):
            return np.asarray(getattr(folded, stat)["q"].values, dtype=float)

        out = {"reflection": "y -> 1 - y: q_k -> (-1)^k2 q_k", "odd_modes": int(np.sum(signs < 0)),
               "reference": "map" if map_point is not None else ("truth" if self.truth is not None else "mean"),
               "fraction_like_reference": fractions,
               "chains_in_the_mirror_mode": int(sum(f < 0.5 for f in fractions)),
               "chains_that_cross": int(sum(0.05 < f < 0.95 for f in fractions)),
               "folded": {"mean": q("mean").tolist(), "sd": q("sd").tolist(), "mcse_mean": q("mcse_mean").tolist(),
                          "ess_bulk": q("ess_bulk").tolist(), "rhat": q("rhat").tolist(),
                          "min_ess_bulk": float(q("ess_bulk").min()), "max_rhat": float(q("rhat").max())}}
        if self.truth is not None:
            mean = q("mean")
            out["folded"]["distance_to_truth"] = float(np.linalg.norm(mean - self.truth))
            out["folded"]["distance_to_mirrored_truth"] = float(np.linalg.norm(mean - signs * self.truth))
        return out
