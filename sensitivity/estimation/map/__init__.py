r"""The maximum a posteriori (MAP) point by PETSc TAO, in the prior's (or the control mass matrix's) geometry.

:func:`find_map` minimizes an objective :math:`U(q)` — a :class:`~sensitivity.estimation.posterior.Posterior`
(:math:`\Phi(q) + \tfrac12\|q - \bar m\|^2_{\mathcal C^{-1}}`) or a reduced objective with its own Tikhonov
term (:class:`FunctionalObjective`) — over a :class:`~sensitivity.estimation.vectors.ParameterSpace`
(docs/theory.md §4.2). Any object with ``space``, ``value(q)``, ``value_and_derivative(q)`` (the ℓ²
derivative) and, for the Newton methods, ``hessian_action(q, v)`` works.

Methods
-------
``"lmvm"``
    TAO's limited-memory BFGS with a Moré–Thuente line search. Its initial Hessian is the
    metric :math:`W` (:class:`Metric`: the prior precision :math:`\mathcal C^{-1}` of a posterior, the
    control space's mass matrix of a :class:`FunctionalObjective`), passed as a shell matrix whose
    ``solve`` applies :math:`W^{-1}` (TAO then applies it exactly, with none of its own rescaling): the
    first step is along the gradient in the metric, :math:`-W^{-1}d`, and the quasi-Newton updates
    refine :math:`W` rather than the identity of the dof vector. A prior precision is used as it is
    (it is the exact Hessian of the prior term; the updates learn the data's low-rank curvature);
    any other metric, a geometry without a scale, is rescaled to :math:`\tau W` at every iterate,
    :math:`\tau = y^TW^{-1}y/s^Ty` (Shanno–Phua in the metric; ``lmvm_scaling``). Until a curvature
    pair exists the first line search starts at step :math:`1/\|d\|_{W^{-1}}` (unit length in the
    metric) and extrapolates, so that a first step far too long for the data cannot overflow the
    objective and stop the line search.
``"nls"``, ``"ntr"``
    Newton–CG (line search, resp. trust region) on the exact Hessian action, a shell matrix
    calling ``hessian_action``, solved by Steihaug–Toint CG preconditioned by :math:`W^{-1}` (a shell
    PC: for a posterior the prior covariance :math:`\mathcal C`, so CG works on
    :math:`I + \mathcal CH_{\rm misfit}`, whose spectrum clusters at 1 with a mesh-independent number of
    outliers); the trust region of ``ntr`` is measured in the :math:`W` norm. The CG tolerance follows
    Eisenstat–Walker, :math:`\min(1/2, \sqrt{\|g_k\|/\|g_0\|})` relative (``krylov_rtol`` fixes it), and
    TAO's Hessian shift (``nls`` on an indefinite Hessian) is :math:`\sigma W`, not :math:`\sigma I`.

In every case the convergence test measures the derivative :math:`d` in the dual norm of the
metric, :math:`\|d\|_{W^{-1}} = \sqrt{d^TW^{-1}d}` (the norm of the gradient :math:`W^{-1}d` in the
metric), which converges under mesh refinement, while the ℓ² norm of :math:`d` scales with the cell
size; ``precondition=False`` keeps that test but drops :math:`W` from the iteration (TAO's default
diagonal scaling for ``lmvm``, plain CG for Newton), which is what makes iteration counts grow with
the mesh. :func:`map_iterations_growth` measures both.

Vectors
-------
Distributed parameters (:class:`~sensitivity.estimation.vectors.FunctionVectors`) are TAO's vectors
directly. Dense parameters (:class:`~sensitivity.estimation.vectors.ArraySpace`) run TAO on
``COMM_SELF`` vectors on every rank: every rank does the same work on the same numbers, so the
objective may be collective (each rank calls it at the same points in the same order).

Results, checkpoints and what a restart loses
---------------------------------------------
:class:`MAPResult` holds the point, the value, the norms of the derivative, the iteration, objective,
gradient and Hessian-action counts, TAO's converged reason (a name and a sentence) and the history
per iteration. With ``checkpoint=PATH`` the iterate (in :meth:`ParameterSpace.to_array` order, so any
number of ranks can resume it), the history, the counts and the caller's ``config`` are written to
HDF5 by rank 0 every ``checkpoint_every`` iterations and at the end (atomically:
:func:`sensitivity.io.write_h5`). ``resume=True`` continues from the stored iterate with the stored
history, counts and first gradient norm (so ``gttol`` and the Eisenstat–Walker forcing still refer to
the first iterate of the whole run). A run that is finished — TAO converged, or ``max_it`` iterations
reached — returns its stored result without any evaluation. **Lost across a restart:** the LMVM
quasi-Newton pairs (``lmvm`` restarts from its initial Hessian, :math:`W` or the stored :math:`\tau W`,
its first line search again from a unit step in the metric), the trust radius of ``ntr``
(re-initialized from the first Newton step) and the Hessian shift of ``nls``, and the iterations
between the last checkpoint and the interruption; the continued history is therefore not
bit-identical to an uninterrupted run (for ``nls`` without a shift it is up to round-off).

MPI
---
Every argument is validated on every rank before the first collective call, with the same message
on every rank; then every call is collective on the space's communicator.

Verification problems
---------------------
In :mod:`sensitivity.estimation.problems` (re-exported here): :func:`point_observation_problem` (a
linear-Gaussian problem on a mesh: point values of the control under the bi-Laplacian prior; its
posterior is known exactly, :func:`~sensitivity.estimation.linear.exact_posterior`),
:func:`advection_problem` (a nonlinear one: the stream function of an advection–diffusion flow from
point readings of the tracer) and :func:`map_iterations_growth` (Newton–CG iterations on three meshes;
the benchmark's ``map_iterations_growth`` is its ``growth``).

Modules
-------
:mod:`~sensitivity.estimation.map.metrics` (:class:`Metric` and its kinds),
:mod:`~sensitivity.estimation.map.objective` (:class:`FunctionalObjective`),
:mod:`~sensitivity.estimation.map.checkpoint` (:class:`MAPResult`, :class:`MAPCheckpoint`),
:mod:`~sensitivity.estimation.map.shells` (TAO's vectors and PETSc shell contexts),
:mod:`~sensitivity.estimation.map.run` (the history, the checkpoints and TAO's callbacks of one call),
:mod:`~sensitivity.estimation.map.driver` (:func:`find_map`).
"""

from __future__ import annotations

from sensitivity.estimation.map.checkpoint import (
    CHECKPOINT_FORMAT,
    HISTORY_KEYS,
    REASONS,
    MAPCheckpoint,
    MAPResult,
    reason_name,
)
from sensitivity.estimation.map.driver import METHODS, find_map
from sensitivity.estimation.map.metrics import MatrixMetric, Metric, PriorMetric
from sensitivity.estimation.map.objective import FunctionalObjective

# last: the verification problems call find_map
from sensitivity.estimation.problems import (
    REDUNDANT_LU,
    advection_problem,
    map_iterations_growth,
    point_observation_problem,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "HISTORY_KEYS",
    "METHODS",
    "REASONS",
    "REDUNDANT_LU",
    "FunctionalObjective",
    "MAPCheckpoint",
    "MAPResult",
    "MatrixMetric",
    "Metric",
    "PriorMetric",
    "advection_problem",
    "find_map",
    "map_iterations_growth",
    "point_observation_problem",
    "reason_name",
]
