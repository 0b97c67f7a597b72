"""Objectives and observations: what turns states into a number (docs/theory.md §2–4).

Observations of the state (point values, region averages, densities, region
probabilities), data misfits over time steps, regularization of the control, the
control space with its inner product, and the reduced objective that holds them
all together with the time scheme (:class:`ReducedFunctional`).
"""

from sensitivity.fem.objective.control_space import ControlSpace
from sensitivity.fem.objective.misfit import FieldMisfit, Misfit, ObservationMisfit, steps_at
from sensitivity.fem.objective.observation import (
    DensitySensors,
    Observation,
    PointSensors,
    RegionAverages,
    RegionProbabilities,
)
from sensitivity.fem.objective.reduced import ReducedFunctional
from sensitivity.fem.objective.regularization import Tikhonov

__all__ = [
    "ControlSpace",
    "DensitySensors",
    "FieldMisfit",
    "Misfit",
    "Observation",
    "ObservationMisfit",
    "PointSensors",
    "ReducedFunctional",
    "RegionAverages",
    "RegionProbabilities",
    "Tikhonov",
    "steps_at",
]
