r"""Random rate-matrix ensembles and the seed's §3 statistics (docs/theory.md §1, §5).

For :math:`Q \in 𝒟` with eigen-decomposition :math:`Q = M D M^{-1}` (seed's
notation, columns of :math:`M` of unit norm) the seed's §3 bounds the term
:math:`Q^+J(I - QQ^+)` of its (false) Theorem 2.1 by

- §3.1: :math:`\|Q^+J(I-QQ^+)\|_F \le \sqrt{d-1}\,e_m^{-1}\,\|M\|_F\|M^{-1}\|_F\,\|J\|_F`,
  :math:`e_m = \min_{\lambda\ne0}|\lambda|`. Its derivation writes :math:`Q^+ = MD^+M^{-1}`,
  which is the group inverse :math:`Q^\#`, not the pseudo-inverse (they agree only
  when :math:`\pi` is uniform), so §3.1 is a heuristic (docs/theory.md §5); it is evaluated as stated and
  compared with the true value;
- §3.2: :math:`\|Q^+J(I-QQ^+)\|_2 \le \|J\|_2/\sigma_m`, :math:`\sigma_m` the least nonzero
  singular value.

:func:`spectral_statistics` evaluates :math:`e_m, e_M, \sigma_m, \sigma_M`, both bounds
for a single-entry :math:`J = e_0 e_1^T` and the bounded quantity itself;
:func:`ensemble_statistics` does so over an ensemble, spreading the samples over
MPI ranks with per-sample seeds so that the numbers do not depend on the number
of ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from sensitivity.dense.rate_matrix import check_rate_matrix
from sensitivity.errors import InvalidArgumentError
from sensitivity.validation import callable_, choice, integer, positive

__all__ = [
    "DISTRIBUTIONS",
    "STATISTICS",
    "ensemble_statistics",
    "random_generator",
    "random_rate_matrix",
    "spectral_statistics",
]

DISTRIBUTIONS = ("exponential", "uniform", "lognormal")
STATISTICS = ("e_m", "e_M", "sigma_m", "sigma_M", "eigvec_cond_F", "bound_3_1", "bound_3_2", "value_F", "value_2")


def random_generator(seed: np.random.Generator | int | None, name: str = "rng") -> np.random.Generator:
    """A NumPy generator from a generator (returned as is), a seed (an integer >= 0) or None (fresh entropy)."""
    if seed is None or isinstance(seed, np.random.Generator):
        return np.random.default_rng(seed)
    return np.random.default_rng(integer(seed, name, minimum=0))


def _check_distribution(distribution: Any) -> str:
    try:
        return choice(distribution, "distribution", DISTRIBUTIONS)
    except InvalidArgumentError as err:  # the message callers have always matched
        raise InvalidArgumentError(f"unknown distribution {distribution!r}; choose one of {DISTRIBUTIONS}") from err


def random_rate_matrix(d: int, rng: np.random.Generator | int | None = None, *, distribution: str = "exponential",
                       scale: float = 1.0) -> np.ndarray:
    """A random rate matrix in ℛ with i.i.d. off-diagonal rates (seed §3).

    Parameters
    ----------
    d : int
        Number of states (>= 2).
    rng : numpy.random.Generator or int or None
        Generator or seed (:func:`random_generator`).
    distribution : {"exponential", "uniform", "lognormal"}
        Law of the rates: Exp(scale), U(0, 2 scale), or exp(N(log scale, 1)).
    scale : float
        Positive scale of the rates.

    Returns
    -------
    numpy.ndarray, shape (d, d)
        Strictly positive off-diagonal rates, diagonal = minus the row sums.
    """
    d = integer(d, "d", minimum=2)
    scale = positive(scale, "scale")
    rng = random_generator(rng)
    distribution = _check_distribution(distribution)
    if distribution == "exponential":
        R = rng.exponential(scale, size=(d, d))
    elif distribution == "uniform":
        R = rng.uniform(0.0, 2.0 * scale, size=(d, d))
    else:
        R = rng.lognormal(np.log(scale), 1.0, size=(d, d))
    np.fill_diagonal(R, 0.0)
    np.fill_diagonal(R, -R.sum(axis=1))
    return R


def spectral_statistics(Q: ArrayLike) -> dict[str, float]:
    """The seed §3 quantities of one rate matrix (see the module docstring).

    ``Q`` must be in ℛ (:func:`~sensitivity.dense.rate_matrix.check_rate_matrix`).

    Returns
    -------
    dict
        Keys :data:`STATISTICS`: ``e_m``, ``e_M`` (least/largest nonzero ``|eigenvalue|``),
        ``sigma_m``, ``sigma_M`` (least nonzero/largest singular value),
        ``eigvec_cond_F`` (:math:`\\|M\\|_F\\|M^{-1}\\|_F`), ``bound_3_1``, ``bound_3_2``
        (for :math:`J = e_0e_1^T`), and ``value_F``, ``value_2``
        (:math:`\\|Q^+J(I-QQ^+)\\|` in the Frobenius and 2-norms).
    """
    Q = check_rate_matrix(Q)
    d = Q.shape[0]
    lam, M = np.linalg.eig(Q)
    zero = int(np.argmin(np.abs(lam)))
    others = np.abs(np.delete(lam, zero))
    U, sig, Vt = np.linalg.svd(Q)
    sig_nz = sig[:-1]  # the last singular value is the zero one (rank d - 1)
    # Q^+ from the SVD already in hand.
    Qp = (Vt[:-1].T / sig_nz) @ U[:, :-1].T
    J = np.zeros((d, d))
    J[0, 1] = 1.0
    term = Qp @ J @ (np.eye(d) - Q @ Qp)
    cond_F = float(np.linalg.norm(M) * np.linalg.norm(np.linalg.inv(M)))
    e_m = float(others.min())
    return {
        "e_m": e_m,
        "e_M": float(others.max()),
        "sigma_m": float(sig_nz.min()),
        "sigma_M": float(sig.max()),
        "eigvec_cond_F": cond_F,
        "bound_3_1": float(np.sqrt(d - 1) / e_m * cond_F),
        "bound_3_2": float(1.0 / sig_nz.min()),
        "value_F": float(np.linalg.norm(term)),
        "value_2": float(np.linalg.norm(term, 2)),
    }


def ensemble_statistics(
    dims: Sequence[int],
    samples: int,
    *,
    seed: int = 0,
    distribution: str = "exponential",
    comm: Any = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> dict[str, np.ndarray]:
    """Seed §3 statistics over an ensemble of random rate matrices.

    Sample ``k`` of dimension ``d`` uses ``numpy.random.default_rng([seed, d, k])``;
    the (dimension, sample) pairs are dealt round-robin to the ranks and the
    results gathered on every rank, so they are identical for any number of ranks.

    Parameters
    ----------
    dims : sequence of int
        Dimensions d (each >= 2).
    samples : int
        Samples per dimension.
    seed : int
        >= 0.
    distribution : str
        See :func:`random_rate_matrix`.
    comm : mpi4py.MPI.Comm, optional
        Communicator to spread the samples over (collective); serial if None.
    progress : callable, optional
        ``progress(iterable) -> iterable`` wrapper (e.g. a rank-0 tqdm bar).

    Returns
    -------
    dict
        ``"d"``: array (len(dims),) and, per key of :data:`STATISTICS`, an array
        ``(len(dims), samples)``.
    """
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Iterable):
        raise InvalidArgumentError(f"dims must be a sequence of integers >= 2, got {dims!r}")
    dims = [integer(d, f"dims[{i}]", minimum=2) for i, d in enumerate(dims)]
    if not dims:
        raise InvalidArgumentError("dims must not be empty")
    samples = integer(samples, "samples", minimum=1)
    seed = integer(seed, "seed", minimum=0)
    distribution = _check_distribution(distribution)
    if progress is not None:
        progress = callable_(progress, "progress")
    rank, size = (0, 1) if comm is None else (comm.rank, comm.size)
    local = np.zeros((len(STATISTICS), len(dims), samples))
    # Round-robin over the flattened (dimension, sample) list balances the ranks; the
    # per-sample seeds keep the numbers independent of the number of ranks.
    every = [(i, d, k) for i, d in enumerate(dims) for k in range(samples)]
    jobs = every[rank::size]
    for i, d, k in progress(jobs) if progress is not None else jobs:
        Q = random_rate_matrix(d, np.random.default_rng([seed, d, k]), distribution=distribution)
        stats = spectral_statistics(Q)
        local[:, i, k] = [stats[name] for name in STATISTICS]
    total = local
    if comm is not None:
        from mpi4py import MPI

        total = np.empty_like(local)
        comm.Allreduce(local, total, op=MPI.SUM)
    out = {"d": np.asarray(dims)}
    out.update({name: total[n] for n, name in enumerate(STATISTICS)})
    return out
