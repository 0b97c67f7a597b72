"""Finite-element sensitivities on DOLFINx (SPEC §2–3).

One :class:`Generator` design serves every PDE: advection–diffusion
(:class:`AdvectionDiffusion`, velocity controls) and Schrödinger
(:class:`Schrodinger`, potential control) share the propagators, tangent, adjoint,
checkpointing and surrogates. Importing this subpackage needs DOLFINx (the
``fenics`` extra); the parent package has already imported ``dolfinx_solver``
first when it is installed.
"""

from sensitivity.fem.adjoint import OuterProductSums, ReducedFunctional
from sensitivity.fem.checkpointing import CheckpointedTrajectory, MemoryTrajectory, make_trajectory
from sensitivity.fem.exponential import ExponentialPropagator
from sensitivity.fem.generator import AdvectionDiffusion, Generator
from sensitivity.fem.group_inverse import GroupInverse
from sensitivity.fem.meshes import TaggedMesh, build_mesh, facets, read_mesh
from sensitivity.fem.objective import FieldMisfit, Misfit, ObservationMisfit, Tikhonov, steps_at
from sensitivity.fem.observation import DensitySensors, Observation, PointSensors, RegionAverages, RegionProbabilities
from sensitivity.fem.output import FieldSeries, TriangleGather, gather_by_coordinates, plot_fields, scatter_by_coordinates
from sensitivity.fem.propagator import ThetaScheme
from sensitivity.fem.schrodinger import PotentialField, Schrodinger, gaussian_packet, schrodinger_space, wall_conditions
from sensitivity.fem.secular import Eigenbasis, SecularSurrogate, SurrogateStateErrors, surrogate_state_errors
from sensitivity.fem.stokes import stokes_velocity
from sensitivity.fem.surrogate import AsymptoticSurrogate, FirstOrderSurrogate, SurrogateGradient
from sensitivity.fem.tangent import Tangent
from sensitivity.fem.velocity import Control, StreamFunction, VelocityControl, VelocityField

__all__ = [
    "AdvectionDiffusion",
    "AsymptoticSurrogate",
    "CheckpointedTrajectory",
    "Control",
    "DensitySensors",
    "Eigenbasis",
    "ExponentialPropagator",
    "FieldMisfit",
    "FieldSeries",
    "FirstOrderSurrogate",
    "Generator",
    "GroupInverse",
    "MemoryTrajectory",
    "Misfit",
    "Observation",
    "ObservationMisfit",
    "OuterProductSums",
    "PointSensors",
    "PotentialField",
    "ReducedFunctional",
    "RegionAverages",
    "RegionProbabilities",
    "Schrodinger",
    "SecularSurrogate",
    "StreamFunction",
    "SurrogateGradient",
    "SurrogateStateErrors",
    "TaggedMesh",
    "Tangent",
    "ThetaScheme",
    "Tikhonov",
    "TriangleGather",
    "VelocityControl",
    "VelocityField",
    "build_mesh",
    "facets",
    "gaussian_packet",
    "gather_by_coordinates",
    "make_trajectory",
    "plot_fields",
    "read_mesh",
    "scatter_by_coordinates",
    "schrodinger_space",
    "steps_at",
    "stokes_velocity",
    "surrogate_state_errors",
    "wall_conditions",
]
