r"""The reduced objective :math:`F(c) = \sum_n f_n(\theta_n(c)) + \mathcal R(c)`: the public object every derivative uses.

One :class:`ReducedFunctional` holds the time scheme, the initial state, the number of
steps, the misfits and the regularization (docs/theory.md §2, §4). Its public methods are
the whole interface between the model and what differentiates or optimizes it:

- **pieces**, for derivative methods: :meth:`~ReducedFunctional.observed`,
  :meth:`~ReducedFunctional.misfit_value`, :meth:`~ReducedFunctional.add_misfit_gradient`,
  :meth:`~ReducedFunctional.add_misfit_hessian_action` at a step;
  :meth:`~ReducedFunctional.regularization_value` and its derivatives;
  :meth:`~ReducedFunctional.trajectory` (the forward states, kept or checkpointed);
- **the objective**: :meth:`~ReducedFunctional.value`,
  :meth:`~ReducedFunctional.derivative` (the ℓ² dual vector :math:`\partial F/\partial c_k`, by
  the discrete adjoint), :meth:`~ReducedFunctional.gradient` (its Riesz representer in the
  control space's inner product, :class:`~sensitivity.fem.objective.control_space.ControlSpace`),
  :meth:`~ReducedFunctional.directional_derivative` (by the tangent: the independent check)
  and :meth:`~ReducedFunctional.hessian_action`.

The discrete adjoint (:class:`~sensitivity.fem.derivatives.adjoint.Adjoint`), every surrogate
(:mod:`sensitivity.fem.surrogates`) and the estimation layer use only these methods.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import dolfinx.fem as fem
import numpy as np
from petsc4py import PETSc

from sensitivity.errors import InvalidArgumentError
from sensitivity.fem.derivatives.adjoint import Adjoint
from sensitivity.fem.derivatives.tangent import tangent_derivative
from sensitivity.fem.objective.control_space import ControlSpace
from sensitivity.fem.objective.misfit import Misfit
from sensitivity.fem.objective.regularization import Tikhonov
from sensitivity.fem.timestepping.theta import ThetaScheme, copy_state
from sensitivity.fem.timestepping.trajectory import Trajectory, make_trajectory
from sensitivity.validation import finite_array, finite_vector, integer

__all__ = ["ReducedFunctional"]


class ReducedFunctional:
    r"""The reduced objective :math:`F(c) = \sum_n f_n(\theta_n(c)) + \mathcal R(c)` of a model's control.

    Parameters
    ----------
    scheme : ThetaScheme
        The forward propagator; its problem's control Function is the parameter.
    theta0 : dolfinx.fem.Function or PETSc.Vec
        Initial state (independent of the control); copied.
    nsteps : int
        Number of time steps N.
    misfits : sequence of Misfit
        Data terms (:class:`~sensitivity.fem.ObservationMisfit`, :class:`~sensitivity.fem.FieldMisfit`).
    regularization : Tikhonov, optional
        :math:`\mathcal R(c)`.
    memory_budget : int, optional
        Bytes the stored trajectory may use; beyond that the adjoint checkpoints
        (revolve). Default: keep the whole trajectory.
    max_states : int, optional
        The same budget counted in state vectors.
    checkpoint_dir : str or os.PathLike, optional
        Directory for disk checkpoints (per-rank HDF5 files) when checkpointing.
    inner_product : petsc4py.PETSc.Mat, optional
        The control space's inner product :math:`W` of :meth:`gradient` (default the
        :math:`L^2` mass matrix; see :class:`ControlSpace`).

    Attributes
    ----------
    scheme, problem, nsteps, misfits, regularization
        As given (``problem`` is ``scheme.problem``).
    initial_state : petsc4py.PETSc.Vec
        :math:`\theta_0`.
    control_space : ControlSpace
        Vectors, Functions and the Riesz map of the control.
    stats : dict
        After :meth:`value_and_derivative`: the trajectory's counters.
    """

    def __init__(
        self,
        scheme: ThetaScheme,
        theta0: fem.Function | PETSc.Vec,
        nsteps: int,
        misfits: Sequence[Misfit],
        regularization: Tikhonov | None = None,
        *,
        memory_budget: int | None = None,
        max_states: int | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        inner_product: PETSc.Mat | None = None,
    ):
        if not isinstance(scheme, ThetaScheme):
            raise InvalidArgumentError(f"scheme must be a ThetaScheme, got {type(scheme).__name__}")
        self.nsteps = integer(nsteps, "nsteps", minimum=1)
        self.misfits = list(misfits)
        if not self.misfits or not all(isinstance(m, Misfit) for m in self.misfits):
            raise InvalidArgumentError("misfits must be a non-empty sequence of Misfit terms")
        for m in self.misfits:
            if m.steps.max() > nsteps:
                raise InvalidArgumentError(f"a misfit observes step {m.steps.max()} > nsteps = {nsteps}")
        if regularization is not None and not isinstance(regularization, Tikhonov):
            raise InvalidArgumentError(f"regularization must be a Tikhonov term, got {type(regularization).__name__}")
        self.scheme = scheme
        self.problem = scheme.problem
        self.regularization = regularization
        self.initial_state = copy_state(theta0, scheme.create_vector())
        self.control_space = ControlSpace(self.problem.control.space, inner_product)
        self._trajectory_options = {"memory_budget": memory_budget, "max_states": max_states,
                                    "directory": checkpoint_dir}
        self.stats: dict = {}
        self._adjoint = Adjoint(self)

    @property
    def theta0(self) -> PETSc.Vec:
        """:attr:`initial_state` (the name of the advection–diffusion literature)."""
        return self.initial_state

    # ------------------------------------------------------------------ control

    @property
    def control(self) -> fem.Function:
        """The control Function (stream function, velocity field, potential)."""
        return self.problem.control.function

    def set_control(self, values: fem.Function | PETSc.Vec | np.ndarray) -> None:
        """Set the control's dofs (a Function in the control space, its Vec, or the owned dof values) and
        rebuild the operators (collective)."""
        c = self.control
        if isinstance(values, fem.Function):
            self.control_space.check(values, "control values")
            values = values.x.petsc_vec
        if isinstance(values, PETSc.Vec):
            if values.getSize() != c.x.petsc_vec.getSize():
                raise InvalidArgumentError(f"control values must be a Vec of size {c.x.petsc_vec.getSize()}, "
                                           f"got {values.getSize()}")
            finite_vector(values, "control values")  # before anything is changed
            values.copy(c.x.petsc_vec)
        else:
            owned = c.x.petsc_vec.getLocalSize()
            c.x.petsc_vec.array[:] = finite_array(values, "control values", shape=(owned,))
        c.x.scatter_forward()
        self.problem.update()
        self.scheme.refresh()

    # ------------------------------------------------------------------ pieces

    def observed(self, n: int) -> bool:
        """Whether some misfit is active at step ``n`` (not collective)."""
        return any(m.active(n) for m in self.misfits)

    def misfit_value(self, n: int, theta: PETSc.Vec) -> float:
        r""":math:`f_n(\theta)`, the sum of the misfits active at step ``n`` (collective)."""
        return sum(m.value(n, theta) for m in self.misfits if m.active(n))

    def add_misfit_gradient(self, n: int, theta: PETSc.Vec, out: PETSc.Vec) -> None:
        r"""``out`` += :math:`\nabla f_n(\theta)`, a state-space dual vector (collective)."""
        for m in self.misfits:
            if m.active(n):
                m.add_gradient(n, theta, out)

    def add_misfit_hessian_action(self, n: int, theta: PETSc.Vec, rho: PETSc.Vec, out: PETSc.Vec) -> None:
        r"""``out`` += :math:`\nabla^2f_n(\theta)\,\rho` (collective)."""
        for m in self.misfits:
            if m.active(n):
                m.add_hessian_action(n, theta, rho, out)

    def regularization_value(self) -> float:
        r""":math:`\mathcal R(c)` at the current control (0 without regularization; collective)."""
        return 0.0 if self.regularization is None else self.regularization.value(self.control)

    def add_regularization_gradient(self, out: PETSc.Vec) -> None:
        r"""``out`` += :math:`\nabla\mathcal R(c)` as a control-space dual vector (collective)."""
        if self.regularization is not None:
            self.regularization.add_gradient(self.control, out)

    def add_regularization_hessian_action(self, v: PETSc.Vec, out: PETSc.Vec) -> None:
        r"""``out`` += :math:`\nabla^2\mathcal R\,v` (collective)."""
        if self.regularization is not None:
            self.regularization.add_hessian_action(v, out)

    def regularization_derivative(self, v: fem.Function) -> float:
        r""":math:`\langle\nabla\mathcal R(c), v\rangle` (collective)."""
        if self.regularization is None:
            return 0.0
        g = self.control_space.create_vector()
        self.add_regularization_gradient(g)
        value = g.dot(v.x.petsc_vec).real
        g.destroy()
        return value

    def forward(self, callback) -> None:
        """Run the scheme from the initial state; ``callback(n, theta_n)`` at n = 0..N (collective)."""
        self.scheme.run(self.initial_state, self.nsteps, callback=callback).destroy()

    def trajectory(self) -> Trajectory:
        """A new, empty store of the forward states within the memory limits given (collective)."""
        s = self.scheme
        return make_trajectory(s.step, s.create_vector, self.nsteps, **self._trajectory_options)

    # ------------------------------------------------------------------ the objective

    def value(self) -> float:
        """:math:`F(c)` for the current control: one forward run, nothing stored (collective)."""
        total = [0.0]

        def accumulate(n, theta):
            if self.observed(n):
                total[0] += self.misfit_value(n, theta)

        self.forward(accumulate)
        return total[0] + self.regularization_value()

    def value_and_derivative(self) -> tuple[float, fem.Function]:
        r""":math:`F(c)` and its derivative :math:`\partial F/\partial c_k` (the ℓ² dual vector, as a Function of
        the control space) by one forward run and one adjoint sweep (collective)."""
        value, vec = self._adjoint.value_and_derivative()
        self.stats = dict(self._adjoint.stats)
        out = self.control_space.function(vec, "derivative")
        vec.destroy()
        return value, out

    def derivative(self) -> fem.Function:
        r"""The derivative :math:`\partial F/\partial c_k` only (see :meth:`value_and_derivative`)."""
        return self.value_and_derivative()[1]

    def gradient(self) -> fem.Function:
        r"""The gradient: the Riesz representer :math:`W^{-1}\partial F/\partial c` in the control space's inner
        product (collective)."""
        return self.control_space.riesz_map(self.derivative())

    def directional_derivative(self, v: fem.Function) -> float:
        r""":math:`dF(c)[v]` by the tangent (forward; an independent check of :meth:`derivative`; collective)."""
        return tangent_derivative(self, v)

    def hessian_action(self, v: fem.Function) -> fem.Function:
        r""":math:`\nabla^2F(c)\,v` (a dual vector, as a Function) by the second-order adjoint (collective).

        Keeps the forward and tangent trajectories in memory (2(N + 1) states).
        """
        vec = self._adjoint.hessian_action(v)
        out = self.control_space.function(vec, "hessian_action")
        vec.destroy()
        return out

    def destroy(self) -> None:
        self.initial_state.destroy()
        self._adjoint.destroy()
        self.control_space.destroy()
