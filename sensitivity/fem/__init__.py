"""Finite-element sensitivities on DOLFINx (SPEC §2–3).

Importing this subpackage needs DOLFINx (the ``fenics`` extra); the parent
package has already imported ``dolfinx_solver`` first when it is installed.
"""

from sensitivity.fem.exponential import ExponentialPropagator
from sensitivity.fem.generator import AdvectionDiffusion
from sensitivity.fem.meshes import TaggedMesh, build_mesh, facets, read_mesh
from sensitivity.fem.observation import PointSensors
from sensitivity.fem.propagator import ThetaScheme
from sensitivity.fem.tangent import Tangent
from sensitivity.fem.velocity import StreamFunction, VelocityControl, VelocityField

__all__ = [
    "AdvectionDiffusion",
    "ExponentialPropagator",
    "PointSensors",
    "StreamFunction",
    "TaggedMesh",
    "Tangent",
    "ThetaScheme",
    "VelocityControl",
    "VelocityField",
    "build_mesh",
    "facets",
    "read_mesh",
]
