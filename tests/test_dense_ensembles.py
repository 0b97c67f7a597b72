"""Random rate-matrix ensembles and the seed §3 statistics; rank-independence under MPI."""

from __future__ import annotations

import numpy as np
import pytest

from sensitivity.dense import check_rate_matrix, ensemble_statistics, random_rate_matrix, spectral_statistics
from sensitivity.dense.ensembles import DISTRIBUTIONS, STATISTICS
from sensitivity.errors import InvalidArgumentError


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_random_rate_matrices_are_in_R(distribution):
    Q = random_rate_matrix(30, 7, distribution=distribution)
    check_rate_matrix(Q, strict=True)
    assert np.array_equal(Q, random_rate_matrix(30, 7, distribution=distribution))


def test_bad_arguments():
    with pytest.raises(InvalidArgumentError, match="d must be an integer >= 2, got 1"):
        random_rate_matrix(1)
    with pytest.raises(InvalidArgumentError, match="unknown distribution 'cauchy'"):
        random_rate_matrix(3, distribution="cauchy")
    with pytest.raises(InvalidArgumentError, match="scale must be positive"):
        random_rate_matrix(3, scale=-1.0)


def test_statistics_and_seed_bounds_hold():
    for d in (5, 40, 120):
        s = spectral_statistics(random_rate_matrix(d, d))
        assert set(s) == set(STATISTICS)
        lam = np.abs(np.linalg.eigvals(random_rate_matrix(d, d)))
        assert s["e_m"] == pytest.approx(np.sort(lam)[1], rel=1e-10)
        assert 0 < s["sigma_m"] <= s["sigma_M"] and 0 < s["e_m"] <= s["e_M"]
        assert s["value_F"] <= s["bound_3_1"] and s["value_2"] <= s["bound_3_2"] * (1 + 1e-12)


def test_em_grows_with_d():
    stats = ensemble_statistics([10, 40, 160], 3, seed=1)
    em = stats["e_m"].mean(axis=1)
    assert em[0] < em[1] < em[2]
    assert stats["e_m"].shape == (3, 3) and np.all(np.isfinite(stats["sigma_m"]))


@pytest.mark.mpi
def test_ensemble_is_independent_of_the_number_of_ranks(comm):
    parallel = ensemble_statistics([6, 11], 5, seed=3, comm=comm)
    serial = ensemble_statistics([6, 11], 5, seed=3)
    for key in STATISTICS:
        assert np.allclose(parallel[key], serial[key], rtol=1e-12, atol=0), key
