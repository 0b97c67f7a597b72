"""PDE models and their controls: the generators :math:`M(c)w' = -A(c)w` and the parameters
:math:`c` they depend on (docs/theory.md §2–3)."""

from sensitivity.fem.models.advection_diffusion import AdvectionDiffusion
from sensitivity.fem.models.base import Generator
from sensitivity.fem.models.controls import Control, PotentialField, StreamFunction, VelocityControl, VelocityField
from sensitivity.fem.models.schrodinger import Schrodinger, gaussian_packet, schrodinger_space, wall_conditions
from sensitivity.fem.models.stokes import stokes_velocity

__all__ = [
    "AdvectionDiffusion",
    "Control",
    "Generator",
    "PotentialField",
    "Schrodinger",
    "StreamFunction",
    "VelocityControl",
    "VelocityField",
    "gaussian_packet",
    "schrodinger_space",
    "stokes_velocity",
    "wall_conditions",
]
