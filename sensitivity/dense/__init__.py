"""Dense matrix-exponential sensitivity toolkit (docs/theory.md §1).

Exact Fréchet derivatives of ``exp(tQ)`` by four independent methods, gradients
of scalar functions of ``exp(tQ)``, the surrogate family (seed 1.6, 4.1, order K),
rate-matrix asymptotics with the corrected group-inverse formula and explicit
constants, skew-Hermitian secular surrogates, random rate-matrix ensembles
(seed §3), and the toy quantum model of seed §4.1 (exact Jacobian and adjoint
gradient in the potential, surrogates, estimation). Needs only NumPy and SciPy;
it is also the oracle for the PDE code.

One module per mathematical object:

- :mod:`~sensitivity.dense.frechet` — ∇_J exp(tQ) by the scipy, block and series methods, and the dispatch;
- :mod:`~sensitivity.dense.daleckii_krein` — divided differences, :class:`EigenFrechet`, the ``"eig"`` method;
- :mod:`~sensitivity.dense.gradient` — gradients of f(exp(tQ)) in every entry of Q;
- :mod:`~sensitivity.dense.surrogates` — truncations of the NH95 series;
- :mod:`~sensitivity.dense.rate_matrix` — ℛ, 𝒟, π, Q^#, κ and the corrected asymptotics;
- :mod:`~sensitivity.dense.skew_hermitian` — skew-Hermitian generators and the secular surrogate;
- :mod:`~sensitivity.dense.ensembles` — random rate matrices and the seed §3 statistics;
- :mod:`~sensitivity.dense.quantum` — the toy quantum model and its exact derivatives in the potential;
- :mod:`~sensitivity.dense.quantum_invariances` — what its data cannot see: gauge, chiral partner, symmetries;
- :mod:`~sensitivity.dense.quantum_surrogates` — how good its surrogates are over time;
- :mod:`~sensitivity.dense.potential_estimation` — least-squares estimation of its potential.

Arguments are checked by :mod:`sensitivity.validation` before anything is computed.
"""

from sensitivity.dense.daleckii_krein import EigenFrechet, exp_divided_differences, expm_frechet_eig
from sensitivity.dense.ensembles import ensemble_statistics, random_rate_matrix, spectral_statistics
from sensitivity.dense.frechet import (
    METHODS,
    ad_terms,
    expm_frechet,
    expm_frechet_block,
    expm_frechet_scipy,
    expm_frechet_series,
)
from sensitivity.dense.gradient import expm_gradient, value_and_gradient
from sensitivity.dense.potential_estimation import PotentialEstimate, estimate_potential
from sensitivity.dense.quantum import ToyQuantumModel
from sensitivity.dense.quantum_invariances import fix_gauge
from sensitivity.dense.quantum_surrogates import SurrogateErrors, surrogate_errors
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
from sensitivity.dense.surrogates import first_order_surrogate, seed_4_1_surrogate, series_surrogate

# One line per module, in the order of the list above.
__all__ = [
    "METHODS", "ad_terms", "expm_frechet", "expm_frechet_block", "expm_frechet_scipy", "expm_frechet_series",
    "EigenFrechet", "exp_divided_differences", "expm_frechet_eig",
    "expm_gradient", "value_and_gradient",
    "first_order_surrogate", "seed_4_1_surrogate", "series_surrogate",
    "AsymptoticBound", "RateMatrix", "check_rate_matrix", "group_inverse", "is_rate_matrix", "spectral_gap",
    "stationary_distribution",
    "SkewHermitian", "check_skew_hermitian", "secular_projection", "secular_surrogate",
    "ensemble_statistics", "random_rate_matrix", "spectral_statistics",
    "ToyQuantumModel", "fix_gauge",
    "SurrogateErrors", "surrogate_errors",
    "PotentialEstimate", "estimate_potential",
]  # fmt: skip
