"""Estimation on any objective of the package (docs/theory.md §4): priors, posteriors, MAP, the Laplace
approximation and MCMC, on NumPy arrays (dense parameters) or distributed PETSc vectors (PDE controls)."""

from sensitivity.estimation.bilaplacian import BiLaplacianPrior
from sensitivity.estimation.chains import Chains, read_chains
from sensitivity.estimation.diagnostics import (ChainSummary, posterior_fields, summarize, to_datatree, trace_plot,
                                                write_netcdf, write_posterior_fields)
from sensitivity.estimation.laplace import (
    LaplaceApproximation,
    LaplaceForce,
    NotPositiveDefiniteError,
    generalized_eigh,
    laplace_rel_err,
    laplace_relative_error,
)
from sensitivity.estimation.linear import LinearMisfit, MomentCheck, dense_operator, exact_posterior
from sensitivity.estimation.map import (
    FunctionalObjective,
    MAPCheckpoint,
    MAPResult,
    MatrixMetric,
    Metric,
    PriorMetric,
    find_map,
    map_iterations_growth,
)
from sensitivity.estimation.modal import ModalBasis, ModalForce, ModalMisfit
from sensitivity.estimation.posterior import ExactForce, Force, Misfit, Posterior, ReducedMisfit, SurrogateForce
from sensitivity.estimation.prior import GaussianPrior, Prior
from sensitivity.estimation.problems import advection_problem, point_observation_problem
from sensitivity.estimation.rates import (
    RATE_FORCE_KINDS,
    MultinomialRateMisfit,
    RateForce,
    log_rate_derivative,
    log_rate_tangent,
    log_rates,
    rate_matrix_from_log_rates,
)
from sensitivity.estimation.samplers import HMC, PCN, DualAveraging, InfiniteHMC, InfiniteMALA, Kernel, sample
from sensitivity.estimation.vectors import ArraySpace, FunctionVectors, ParameterSpace

__all__ = [
    "RATE_FORCE_KINDS",
    "HMC",
    "PCN",
    "ArraySpace",
    "BiLaplacianPrior",
    "ChainSummary",
    "Chains",
    "DualAveraging",
    "ExactForce",
    "Force",
    "FunctionVectors",
    "FunctionalObjective",
    "GaussianPrior",
    "InfiniteHMC",
    "InfiniteMALA",
    "Kernel",
    "LaplaceApproximation",
    "LaplaceForce",
    "LinearMisfit",
    "MAPCheckpoint",
    "MAPResult",
    "MatrixMetric",
    "Metric",
    "Misfit",
    "ModalBasis",
    "ModalForce",
    "ModalMisfit",
    "MomentCheck",
    "MultinomialRateMisfit",
    "NotPositiveDefiniteError",
    "ParameterSpace",
    "Posterior",
    "Prior",
    "PriorMetric",
    "RateForce",
    "ReducedMisfit",
    "SurrogateForce",
    "advection_problem",
    "dense_operator",
    "exact_posterior",
    "find_map",
    "generalized_eigh",
    "laplace_rel_err",
    "laplace_relative_error",
    "log_rate_derivative",
    "log_rate_tangent",
    "log_rates",
    "map_iterations_growth",
    "point_observation_problem",
    "posterior_fields",
    "rate_matrix_from_log_rates",
    "read_chains",
    "sample",
    "summarize",
    "to_datatree",
    "trace_plot",
    "write_netcdf",
    "write_posterior_fields",
]
