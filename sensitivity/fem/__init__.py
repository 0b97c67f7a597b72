"""Finite-element sensitivities on DOLFINx (docs/theory.md §2–3), arranged by role.

The flow: a model turns forms into matrices (:mod:`.models`), a time scheme turns
matrices into states (:mod:`.timestepping`), an objective turns states into a number
(:mod:`.objective`), exact derivatives (:mod:`.derivatives`) or surrogates
(:mod:`.surrogates`) turn the number into a derivative; :mod:`.output` writes fields,
:mod:`.meshes` makes and reads meshes, and :mod:`.backend` is the one door to the
DOLFINx/PETSc calls that change between versions. Every name below is importable from
here. Importing this subpackage needs DOLFINx (the ``fenics`` extra); the parent package
has already imported ``dolfinx_solver`` first when it is installed.
"""

from sensitivity.fem.derivatives import Adjoint, OuterProductSums, Tangent, tangent_derivative
from sensitivity.fem.meshes import TaggedMesh, build_mesh, cells, facets, read_mesh, write_msh
from sensitivity.fem.models import (
    AdvectionDiffusion,
    Control,
    Generator,
    PotentialField,
    Schrodinger,
    StreamFunction,
    VelocityControl,
    VelocityField,
    gaussian_packet,
    schrodinger_space,
    stokes_velocity,
    wall_conditions,
)
from sensitivity.fem.objective import (
    ControlSpace,
    DensitySensors,
    FieldMisfit,
    Misfit,
    Observation,
    ObservationMisfit,
    PointSensors,
    ReducedFunctional,
    RegionAverages,
    RegionProbabilities,
    Tikhonov,
    steps_at,
)
from sensitivity.fem.output import FieldSeries, TriangleGather, gather_by_coordinates, plot_fields, scatter_by_coordinates
from sensitivity.fem.surrogates import (
    AsymptoticSurrogate,
    Eigenbasis,
    FirstOrderSurrogate,
    GroupInverse,
    SecularSurrogate,
    Surrogate,
    SurrogateGradient,
    SurrogateStateErrors,
    surrogate_state_errors,
)
from sensitivity.fem.timestepping import (
    CheckpointedTrajectory,
    ExponentialPropagator,
    MemoryTrajectory,
    ThetaScheme,
    Trajectory,
    make_trajectory,
)

__all__ = [
    "Adjoint",
    "AdvectionDiffusion",
    "AsymptoticSurrogate",
    "CheckpointedTrajectory",
    "Control",
    "ControlSpace",
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
    "Surrogate",
    "SurrogateGradient",
    "SurrogateStateErrors",
    "TaggedMesh",
    "Tangent",
    "ThetaScheme",
    "Tikhonov",
    "Trajectory",
    "TriangleGather",
    "VelocityControl",
    "VelocityField",
    "build_mesh",
    "cells",
    "facets",
    "gather_by_coordinates",
    "gaussian_packet",
    "make_trajectory",
    "plot_fields",
    "read_mesh",
    "scatter_by_coordinates",
    "schrodinger_space",
    "steps_at",
    "stokes_velocity",
    "surrogate_state_errors",
    "tangent_derivative",
    "wall_conditions",
    "write_msh",
]
