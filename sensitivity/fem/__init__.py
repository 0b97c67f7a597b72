"""Finite-element sensitivities on DOLFINx (SPEC §2–3).

Importing this subpackage needs DOLFINx (the ``fenics`` extra); the parent
package has already imported ``dolfinx_solver`` first when it is installed.
"""

from sensitivity.fem.adjoint import ReducedFunctional
from sensitivity.fem.checkpointing import CheckpointedTrajectory, MemoryTrajectory, make_trajectory
from sensitivity.fem.exponential import ExponentialPropagator
from sensitivity.fem.generator import AdvectionDiffusion
from sensitivity.fem.meshes import TaggedMesh, build_mesh, facets, read_mesh
from sensitivity.fem.objective import FieldMisfit, Misfit, ObservationMisfit, Tikhonov, steps_at
from sensitivity.fem.observation import PointSensors, RegionAverages
from sensitivity.fem.output import FieldSeries, TriangleGather, plot_fields
from sensitivity.fem.propagator import ThetaScheme
from sensitivity.fem.stokes import stokes_velocity
from sensitivity.fem.surrogate import FirstOrderSurrogate
from sensitivity.fem.tangent import Tangent
from sensitivity.fem.velocity import StreamFunction, VelocityControl, VelocityField

__all__ = [
    "AdvectionDiffusion",
    "CheckpointedTrajectory",
    "FieldMisfit",
    "FirstOrderSurrogate",
    "MemoryTrajectory",
    "Misfit",
    "ObservationMisfit",
    "ReducedFunctional",
    "RegionAverages",
    "Tikhonov",
    "make_trajectory",
    "steps_at",
    "ExponentialPropagator",
    "FieldSeries",
    "PointSensors",
    "StreamFunction",
    "TaggedMesh",
    "Tangent",
    "ThetaScheme",
    "TriangleGather",
    "VelocityControl",
    "VelocityField",
    "build_mesh",
    "facets",
    "plot_fields",
    "read_mesh",
    "stokes_velocity",
]
