"""Dense matrix-exponential sensitivity toolkit (SPEC §1).

Exact Fréchet derivatives of ``exp(tQ)`` by four independent methods, gradients
of scalar functions of ``exp(tQ)``, the surrogate family (seed 1.6, 4.1, order K),
rate-matrix asymptotics with the corrected group-inverse formula and explicit
constants, skew-Hermitian secular surrogates, random rate-matrix ensembles
(seed §3), and the toy quantum model of seed §4.1 (exact Jacobian and adjoint
gradient in the potential, surrogates, estimation). Needs only NumPy and SciPy;
it is also the oracle for the PDE code.
"""

from sensitivity.dense.ensembles import (
    ensemble_statistics,
    random_rate_matrix,
    spectral_statistics,
)
from sensitivity.dense.frechet import (
    METHODS,
    EigenFrechet,
    ad_terms,
    exp_divided_differences,
    expm_frechet,
    expm_frechet_block,
    expm_frechet_eig,
    expm_frechet_scipy,
    expm_frechet_series,
    expm_gradient,
    value_and_gradient,
)
from sensitivity.dense.quantum import (
    PotentialEstimate,
    SurrogateErrors,
    ToyQuantumModel,
    estimate_potential,
    fix_gauge,
    surrogate_errors,
)
from sensitivity.dense.rate_matrix import (
    AsymptoticBound,
    RateMatrix,
    check_rate_matrix,
    group_inverse,
    is_rate_matrix,
    spectral_gap,
    stationary_distribution,
)
from sensitivity.dense.skew_hermitian import (
    SkewHermitian,
    check_skew_hermitian,
    secular_projection,
    secular_surrogate,
)
from sensitivity.dense.surrogates import (
    first_order_surrogate,
    seed_4_1_surrogate,
    series_surrogate,
)

__all__ = [
    "METHODS",
    "AsymptoticBound",
    "EigenFrechet",
    "PotentialEstimate",
    "RateMatrix",
    "SkewHermitian",
    "SurrogateErrors",
    "ToyQuantumModel",
    "ad_terms",
    "check_rate_matrix",
    "check_skew_hermitian",
    "ensemble_statistics",
    "estimate_potential",
    "exp_divided_differences",
    "expm_frechet",
    "expm_frechet_block",
    "expm_frechet_eig",
    "expm_frechet_scipy",
    "expm_frechet_series",
    "expm_gradient",
    "first_order_surrogate",
    "fix_gauge",
    "group_inverse",
    "is_rate_matrix",
    "random_rate_matrix",
    "secular_projection",
    "secular_surrogate",
    "seed_4_1_surrogate",
    "series_surrogate",
    "spectral_gap",
    "spectral_statistics",
    "stationary_distribution",
    "surrogate_errors",
    "value_and_gradient",
]
