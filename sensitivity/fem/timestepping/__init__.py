"""Time schemes and trajectories: the propagator :math:`S` that turns generator matrices into states
(θ-scheme, exponential), and the storage of a forward trajectory for adjoint sweeps (docs/theory.md §2)."""

from sensitivity.fem.timestepping.exponential import ExponentialPropagator
from sensitivity.fem.timestepping.theta import ThetaScheme, copy_state
from sensitivity.fem.timestepping.trajectory import (
    CheckpointedTrajectory,
    MemoryTrajectory,
    Trajectory,
    make_trajectory,
)

__all__ = [
    "CheckpointedTrajectory",
    "ExponentialPropagator",
    "MemoryTrajectory",
    "ThetaScheme",
    "Trajectory",
    "copy_state",
    "make_trajectory",
]
