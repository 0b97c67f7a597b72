# ---
# jupytext:
#   text_representation:
#     extension: .py
#     format_name: light
# ---

"""Spectra of random rate matrices of growing dimension and the seed's §3 bounds.

Run as ``OMP_NUM_THREADS=1 mpirun -n P python demos/random_rate_matrix_spectra.py --output DIR``.
"""

# # High-dimensional asymptotics of random rate matrices (seed §3)
#
# The seed note's §3 asks how the term $Q^+J(I - QQ^+)$ of its Theorem 2.1 behaves for a
# random rate matrix $Q$ as the number of states $d$ grows, and bounds it in two ways:
#
# * §3.1 (eigenvalues, Frobenius norm):
#   $\|Q^+J(I-QQ^+)\|_F \le \sqrt{d-1}\,e_m^{-1}\,\|M\|_F\|M^{-1}\|_F\,\|J\|_F$, with
#   $e_m = \min_{\lambda\ne0}|\lambda|$ and $Q = MDM^{-1}$;
# * §3.2 (singular values, 2-norm): $\|Q^+J(I-QQ^+)\|_2 \le \|J\|_2/\sigma_m$, with
#   $\sigma_m$ the smallest nonzero singular value.
#
# for a single-entry direction $J = e_0e_1^T$ ($\|J\|_F = \|J\|_2 = 1$). The note observes
# empirically that $e_m, \sigma_m \to \infty$. Here we measure $e_m, e_M$ (smallest and
# largest nonzero $|\lambda|$), $\sigma_m, \sigma_M$, the eigenvector condition number
# $\|M\|_F\|M^{-1}\|_F$, both bounds and the bounded quantity itself, over an ensemble of
# rate matrices with i.i.d. Exp(1) rates, and fit power laws $c\,d^{\,p}$.
#
# What to expect: the rates have mean 1, so $Q$ is close to $\mathbf 1\mathbf 1^T - dI$,
# whose nonzero eigenvalues all equal $-d$; the random part has spectral radius of order
# $\sqrt d$. So $e_m$, $e_M$, $\sigma_m$, $\sigma_M$ all grow like $d$, with $O(\sqrt d)$
# corrections that make the fitted exponents of $e_m$, $\sigma_m$ slightly above 1 and
# those of $e_M$, $\sigma_M$ slightly below 1 at moderate $d$. The §3.2 bound therefore
# decays like $1/d$; the §3.1 bound carries the eigenvector condition number, which grows
# with $d$, and is far from sharp.
#
# A remark on §3.1: its first step writes $Q^+ = M D^+ M^{-1}$. That matrix is the *group
# inverse* $Q^\#$; it equals the Moore–Penrose $Q^+$ only when the stationary distribution
# is uniform, so §3.1 is a heuristic, not a proof. We evaluate it as stated (the observed
# ratio value/bound is reported).
#
# The samples are spread over the MPI ranks by ``ensemble_statistics`` (sample $k$ of
# dimension $d$ uses the seed $(s, d, k)$ and runs on rank $k \bmod P$), so the numbers do
# not depend on the number of ranks. The dense eigen- and singular-value decompositions
# call a threaded BLAS/LAPACK: with several ranks per core set ``OMP_NUM_THREADS=1``
# (oversubscribed threads made the default run five times slower on a 2-core machine).

# +
from __future__ import annotations

import argparse
import sys

from sensitivity.dense import ensemble_statistics
from sensitivity.dense.ensembles import DISTRIBUTIONS
from sensitivity.io import new_figure, prepare_output_dir, save_figure, write_h5
from sensitivity.parallel import ArgumentParser, exit_on_error, progress, rank0_print

import numpy as np
from mpi4py import MPI

NAME = "random_rate_matrix_spectra"
DEFAULT_DIMS = [10, 20, 50, 100, 200, 500, 1000]
SMALL_DIMS = [5, 10, 20, 50]
#: Statistics whose growth exponent in d is fitted.
FITTED = ("e_m", "e_M", "sigma_m", "sigma_M", "eigvec_cond_F", "value_F", "value_2", "bound_3_1", "bound_3_2")
# -

# ## Command line
#
# Every rank parses and validates the same ``argv`` before any collective call.


# +
def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog=NAME, description=(__doc__ or NAME).splitlines()[0])
    parser.add_argument("--output", default=f"output/{NAME}", help="output directory (default: %(default)s)")
    parser.add_argument("--dims", type=int, nargs="+", default=None,
                        help=f"dimensions d (default {' '.join(map(str, DEFAULT_DIMS))}; "
                             f"{' '.join(map(str, SMALL_DIMS))} with --small)")
    parser.add_argument("--samples", type=int, default=None, help="samples per dimension (default 8; 4 with --small)")
    parser.add_argument("--distribution", choices=DISTRIBUTIONS, default="exponential",
                        help="law of the off-diagonal rates (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="base random seed (default: %(default)s)")
    parser.add_argument("--small", action="store_true", help="a small, fast configuration (for tests)")
    args = parser.parse_args(argv)
    if args.dims is None:
        args.dims = SMALL_DIMS if args.small else DEFAULT_DIMS
    if args.samples is None:
        args.samples = 4 if args.small else 8
    if not args.output:
        parser.error("--output must be a non-empty path")
    bad = [d for d in args.dims if d < 2]
    if bad:
        parser.error(f"--dims entries must be integers >= 2 (a rate matrix needs two states), got {bad[0]}")
    args.dims = sorted(set(args.dims))
    if len(args.dims) < 2:
        parser.error(f"--dims needs at least two distinct dimensions to fit a growth exponent, got {args.dims}")
    if args.samples < 1:
        parser.error(f"--samples must be an integer >= 1, got {args.samples}")
    if args.seed < 0:
        parser.error(f"--seed must be a non-negative integer, got {args.seed}")
    return args
# -


# ## Power-law fits
#
# For each statistic we average $\log$ over the samples (a geometric mean, insensitive to
# the occasional outlier) and fit $\log(\text{mean}) = \log c + p\log d$ by least squares.


# +
def fit_power_law(dims, values):
    """(p, c) of values ≈ c d^p, fitted to the per-dimension geometric means."""
    logmean = np.log(values).mean(axis=1)
    p, logc = np.polyfit(np.log(dims), logmean, 1)
    return float(p), float(np.exp(logc))


def analyse(stats):
    dims = stats["d"].astype(float)
    fits = {name: dict(zip(("exponent", "prefactor"), fit_power_law(dims, stats[name]))) for name in FITTED}
    summary = {f"{name}_exponent": fits[name]["exponent"] for name in FITTED}
    summary.update({
        "max_value_over_bound_3_1": float(np.max(stats["value_F"] / stats["bound_3_1"])),
        "max_value_over_bound_3_2": float(np.max(stats["value_2"] / stats["bound_3_2"])),
        "d_max": int(dims[-1]),
        "e_m_mean_at_d_max": float(stats["e_m"][-1].mean()),
        "sigma_m_mean_at_d_max": float(stats["sigma_m"][-1].mean()),
        "e_m_over_d_at_d_max": float(stats["e_m"][-1].mean() / dims[-1]),
    })
    return fits, summary
# -


# ## Plots
#
# Markers are the geometric means over the samples with bars spanning the smallest to the
# largest sample, dots the individual samples, dashed lines the fitted power laws. The
# bounded quantity has rank one (so does $J$), hence its Frobenius and 2-norms coincide and
# one curve shows both.


# +
def _series(ax, dims, values, fit, color, marker, label):
    gmean = np.exp(np.log(values).mean(axis=1))
    spread = np.vstack([gmean - values.min(axis=1), values.max(axis=1) - gmean])
    ax.plot(np.repeat(dims, values.shape[1]), values.ravel(), ".", color=color, alpha=0.25, ms=4)
    ax.errorbar(dims, gmean, yerr=spread, fmt=marker, color=color, capsize=3, ms=6,
                label=rf"{label}: $\propto d^{{{fit['exponent']:.3f}}}$")
    ax.plot(dims, fit["prefactor"] * dims ** fit["exponent"], "--", color=color, lw=1)


def plot(comm, path, stats, fits, distribution):
    dims = stats["d"].astype(float)
    fig = new_figure(figsize=(17, 5.4), layout="constrained")
    axes = fig.subplots(1, 3)
    ax = axes[0]
    for name, color, marker, label in [("e_m", "C0", "o", r"$e_m$"), ("e_M", "C0", "s", r"$e_M$"),
                                       ("sigma_m", "C3", "o", r"$\sigma_m$"), ("sigma_M", "C3", "s", r"$\sigma_M$")]:
        _series(ax, dims, stats[name], fits[name], color, marker, label)
    ax.plot(dims, dims, ":", color="0.4", label=r"$d$")
    ax.set_title("nonzero eigenvalue moduli and singular values")
    ax = axes[1]
    for name, color, marker, label in [("bound_3_1", "C1", "s", r"§3.1 bound (F-norm)"),
                                       ("bound_3_2", "C2", "s", r"§3.2 bound $1/\sigma_m$ (2-norm)"),
                                       ("value_2", "k", "o", r"$\|Q^+J(I-QQ^+)\|_2 = \|\cdot\|_F$ (rank one)")]:
        _series(ax, dims, stats[name], fits[name], color, marker, label)
    ax.set_title(r"seed §3 bounds vs. the actual value, $J = e_0e_1^T$")
    ax = axes[2]
    _series(ax, dims, stats["eigvec_cond_F"], fits["eigvec_cond_F"], "C4", "o", r"$\|M\|_F\|M^{-1}\|_F$")
    ax.set_title("eigenvector condition number (enters §3.1)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("d")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="best", framealpha=0.9)
    fig.suptitle(f"Random rate matrices, i.i.d. {distribution} rates, {stats['e_m'].shape[1]} samples per d")
    return save_figure(comm, fig, path, dpi=120)
# -


# ## Putting it together


# +
def print_summary(comm, stats, summary):
    cols = ["e_m", "e_M", "sigma_m", "sigma_M", "eigvec_cond_F", "value_2", "bound_3_2", "value_F", "bound_3_1"]
    lines = [f"{'d':>6} " + " ".join(f"{c:>13}" for c in cols), "-" * (7 + 14 * len(cols))]
    for i, d in enumerate(stats["d"]):
        lines.append(f"{d:>6} " + " ".join(f"{stats[c][i].mean():>13.4g}" for c in cols))
    lines.append(f"{'p':>6} " + " ".join(f"{summary[c + '_exponent']:>13.3f}" for c in cols)
                 + "   <- fitted exponents of c d^p")
    lines.append(f"max value/bound: §3.1 {summary['max_value_over_bound_3_1']:.3g}, "
                 f"§3.2 {summary['max_value_over_bound_3_2']:.3g}")
    rank0_print(comm, "\n".join(lines))


def main(argv=None, comm: MPI.Comm | None = None) -> dict:
    """Run the demo and return its summary numbers."""
    comm = MPI.COMM_WORLD if comm is None else comm
    args = parse_args(argv)
    out = prepare_output_dir(comm, args.output, what="--output", files=(f"{NAME}.png", f"{NAME}.h5"))
    rank0_print(comm, f"{NAME}: d in {args.dims}, {args.samples} samples each, {args.distribution} rates, "
                      f"{comm.size} rank(s)")
    stats = ensemble_statistics(args.dims, args.samples, seed=args.seed, distribution=args.distribution, comm=comm,
                                progress=lambda jobs: progress(comm, jobs, desc="samples"))
    fits, summary = analyse(stats)
    plot(comm, out / f"{NAME}.png", stats, fits, args.distribution)
    write_h5(comm, out / f"{NAME}.h5", {"statistics": stats, "fits": fits, "summary": summary},
             attrs={"demo": NAME, "seed": args.seed, "distribution": args.distribution, "nprocs": comm.size})
    print_summary(comm, stats, summary)
    rank0_print(comm, f"wrote {out / (NAME + '.png')} and {out / (NAME + '.h5')}")
    return summary


if __name__ == "__main__":
    sys.exit(exit_on_error(main))
# -
