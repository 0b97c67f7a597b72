# ---
# jupytext:
#   text_representation:
#     extension: .py
#     format_name: light
# ---

"""First-order versus secular surrogate of ∇_J exp(tA) for a skew-Hermitian A = −iH
(docs/theory.md §1, seed §4.1).

Run as ``mpirun -n P python demos/skew_hermitian_surrogates.py --output DIR``.
"""

# # Surrogates of the derivative of a unitary group: first order versus secular
#
# In the toy quantum model of the seed note (§4.1) the state evolves by
# $x' = Ax$ with a skew-Hermitian generator $A = -iH$, $H = H_0 + \mathrm{diag}(V)$
# Hermitian, so $e^{tA}$ is unitary. Perturbing the potential, $V \to V + \varepsilon v$,
# perturbs the generator in the direction $J = -i\,\mathrm{diag}(v)$, and the sensitivity of
# the state is $Y(t)x_0$ with
#
# $$ Y(t) = \nabla_J e^{tA} = \int_0^t e^{(t-s)A} J e^{sA}\,ds . $$
#
# Write $A = W\,\mathrm{diag}(i\mu)\,W^*$ with unitary $W$. In the eigenbasis,
# $\hat Y_{jk} = \hat J_{jk}\,\Phi_{jk}(t)$ with $\hat J = W^*JW$ and
#
# $$ \Phi_{jk}(t) = \frac{e^{i\mu_j t} - e^{i\mu_k t}}{i(\mu_j - \mu_k)},\quad
#    |\Phi_{jk}| \le \frac{2}{|\mu_j - \mu_k|}\ (\mu_j \ne \mu_k), \qquad
#    \Phi_{jj}(t) = t\,e^{i\mu_j t}. $$
#
# The derivative is therefore *bounded off the eigen-diagonal and secular (growing like
# $t$) on it*. The first-order surrogate $t e^{tA}J$ (seed 1.6) treats every entry as
# secular, so its error grows like $t\,\|J - \mathcal P(J)\|_F$. The **secular surrogate**
#
# $$ t\,e^{tA}\,\mathcal P(J),\qquad \mathcal P(J) = W\,\mathrm{diag}(W^*JW)\,W^*
#    = \lim_{T\to\infty}\frac1T\int_0^T e^{-sA}Je^{sA}\,ds $$
#
# keeps exactly the secular part; its error is the off-diagonal part, bounded uniformly in
# $t$ by $\bigl(\sum_{j\ne k} 4|\hat J_{jk}|^2/|\mu_j-\mu_k|^2\bigr)^{1/2}$
# (``SkewHermitian.secular_error_bound``), so its *relative* error decays like $1/t$. For
# $J = -i\,\mathrm{diag}(v)$, $\mathcal P(J)$ is $-i$ times the first-order energy shifts
# $\langle w_k, v\,w_k\rangle$ (Hellmann–Feynman): the secular surrogate is the phase drift
# of first-order perturbation theory. At small $t$ the roles are reversed: the first-order
# surrogate is $O(t^2)$ accurate, the secular one only $O(t)$.
#
# Errors are measured in the Frobenius norm, the norm of the bound. The time grid is
# log-spaced (up to $t = 10^4$ by default) and split over the MPI ranks; the output does not
# depend on the number of ranks.

# +
from __future__ import annotations

import argparse
import math
import sys

from sensitivity.dense import SkewHermitian, expm_frechet
from sensitivity.io import new_figure, prepare_output_dir, save_figure, write_h5
from sensitivity.parallel import ArgumentParser, exit_on_error, progress, rank0_print

import numpy as np
from mpi4py import MPI

NAME = "skew_hermitian_surrogates"
# -

# ## Command line
#
# Every rank parses and validates the same ``argv`` before any collective call.


# +
def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog=NAME, description=(__doc__ or NAME).splitlines()[0])
    parser.add_argument("--output", default=f"output/{NAME}", help="output directory (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=None, help="dimension d of H (default 20; 8 with --small)")
    parser.add_argument("--num-times", type=int, default=None,
                        help="points of the log-spaced t-grid (default 201; 41 with --small)")
    parser.add_argument("--t-min", type=float, default=1e-2, help="first time (default: %(default)g)")
    parser.add_argument("--t-max", type=float, default=1e4, help="final time (default: %(default)g)")
    parser.add_argument("--direction", choices=("diagonal", "hermitian"), default="diagonal",
                        help="J = -i diag(v) (a potential perturbation, default) or J = -i K, K random Hermitian")
    parser.add_argument("--seed", type=int, default=3, help="random seed of H and J (default: %(default)s)")
    parser.add_argument("--small", action="store_true", help="a small, fast configuration (for tests)")
    args = parser.parse_args(argv)
    if args.dim is None:
        args.dim = 8 if args.small else 20
    if args.num_times is None:
        args.num_times = 41 if args.small else 201
    if not args.output:
        parser.error("--output must be a non-empty path")
    if args.dim < 2:
        parser.error(f"--dim must be an integer >= 2, got {args.dim}")
    if args.num_times < 10:
        parser.error(f"--num-times must be >= 10, got {args.num_times}")
    if not (math.isfinite(args.t_min) and args.t_min > 0):
        parser.error(f"--t-min must be a positive finite number, got {args.t_min}")
    if not (math.isfinite(args.t_max) and args.t_max > 0):
        parser.error(f"--t-max must be a positive finite number, got {args.t_max}")
    if args.t_max < 100 * args.t_min:
        parser.error(f"--t-max must be at least 100 * --t-min = {100 * args.t_min:g}, got {args.t_max}")
    if args.seed < 0:
        parser.error(f"--seed must be a non-negative integer, got {args.seed}")
    return args
# -


# ## The problem
#
# $H$ is drawn from the Gaussian unitary ensemble, scaled so that its spectrum fills about
# $[-\sqrt2, \sqrt2]$ whatever $d$; $v$ is standard Gaussian. Rank 0 draws and broadcasts.


# +
def random_hermitian(rng: np.random.Generator, d: int) -> np.ndarray:
    G = (rng.standard_normal((d, d)) + 1j * rng.standard_normal((d, d))) / np.sqrt(2.0)
    return (G + G.conj().T) / (2.0 * np.sqrt(d))


def make_problem(comm: MPI.Comm, dim: int, seed: int, direction: str):
    data = None
    if comm.rank == 0:
        rng = np.random.default_rng(seed)
        H = random_hermitian(rng, dim)
        if direction == "diagonal":
            J = -1j * np.diag(rng.standard_normal(dim))
        else:
            J = -1j * np.sqrt(dim) * random_hermitian(rng, dim)
        data = (H, J)
    H, J = comm.bcast(data, root=0)
    return H, SkewHermitian(-1j * H), J
# -


# ## Errors along the time grid
#
# The exact derivative comes from the Daleckii–Krein formula with the unitary eigenvectors
# (``SkewHermitian.frechet``); it is checked against Al-Mohy & Higham's algorithm
# (``expm_frechet``) at every time. Rank ``r`` takes the times ``r, r + P, …``.


def error_table(comm: MPI.Comm, S: SkewHermitian, J: np.ndarray, ts: np.ndarray):
    mine = list(range(comm.rank, len(ts), comm.size))
    rows = {}
    for i in progress(comm, mine, desc="t-grid"):
        t = float(ts[i])
        Y = S.frechet(t)(J)
        Y_ref = expm_frechet(S.A, J, t)
        norm_Y = np.linalg.norm(Y)
        rows[i] = [
            norm_Y,
            np.linalg.norm(Y - S.first_order_surrogate(J, t)),
            np.linalg.norm(Y - S.secular_surrogate(J, t)),
            np.linalg.norm(Y - Y_ref) / norm_Y,
        ]
    table = np.empty((len(ts), 4))
    for part in comm.allgather(rows):
        for i, row in part.items():
            table[i] = row
    return dict(zip(["norm_Y", "first_order", "secular", "exact_methods_rel_diff"], table.T))


# ## Rates
#
# Over the last one and a half decades of $t$ (where the secular error has saturated) we fit
# straight lines in log–log coordinates: the first-order error should have slope 1, the
# secular relative error slope −1.


# +
def loglog_slope(ts, values, t_from):
    mask = ts >= t_from
    if mask.sum() < 3:
        return math.nan
    return float(np.polyfit(np.log(ts[mask]), np.log(values[mask]), 1)[0])


def analyse(S: SkewHermitian, J, ts, table):
    bound = S.secular_error_bound(J)
    PJ = S.secular_projection(J)
    t_fit = ts[-1] / 10**1.5
    rel_first = table["first_order"] / table["norm_Y"]
    rel_secular = table["secular"] / table["norm_Y"]
    # the first time from which on the secular surrogate stays the better one
    worse = np.flatnonzero(table["secular"] >= table["first_order"])
    if worse.size == 0:
        crossover = float(ts[0])
    elif worse[-1] == len(ts) - 1:
        crossover = math.nan
    else:
        crossover = float(ts[worse[-1] + 1])
    summary = {
        "secular_max_error": float(table["secular"].max()),
        "secular_bound": bound,
        "secular_max_error_over_bound": float(table["secular"].max() / bound),
        "first_order_error_slope": loglog_slope(ts, table["first_order"], t_fit),
        "first_order_error_growth": float(table["first_order"][-1] / ts[-1]),
        "first_order_growth_theory": float(np.linalg.norm(J - PJ)),
        "first_order_relative_error_final": float(rel_first[-1]),
        "secular_relative_error_final": float(rel_secular[-1]),
        "secular_relative_error_slope": loglog_slope(ts, rel_secular, t_fit),
        "crossover_time": crossover,
        "exact_methods_max_rel_diff": float(table["exact_methods_rel_diff"].max()),
        "min_frequency_gap": float(np.min(np.diff(S.frequencies))),
        "t_fit_from": float(t_fit),
    }
    curves = {
        "relative_first_order": rel_first,
        "relative_secular": rel_secular,
        "relative_bound": bound / table["norm_Y"],
        "first_order_predicted": summary["first_order_growth_theory"] * ts,
    }
    return summary, curves
# -


# ## Plots
#
# Left: absolute errors with the uniform bound; right: relative errors with a $1/t$ guide.


# +
def plot(comm, path, ts, table, curves, s, dim, direction):
    fig = new_figure(figsize=(14, 5.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.loglog(ts, table["norm_Y"], color="0.75", lw=3, label=r"$\|\nabla_J e^{tA}\|_F$ (scale)")
    ax1.loglog(ts, table["first_order"], color="C3", lw=2, label=r"first order $te^{tA}J$")
    ax1.loglog(ts, curves["first_order_predicted"], ":", color="C3", lw=1.2,
               label=rf"$t\|J-\mathcal{{P}}(J)\|_F$ (fitted slope {s['first_order_error_slope']:.3f})")
    ax1.loglog(ts, table["secular"], color="C0", lw=2, label=r"secular $te^{tA}\mathcal{P}(J)$")
    ax1.axhline(s["secular_bound"], color="k", ls="--", lw=1.3,
                label=rf"uniform bound {s['secular_bound']:.3g} (max error {s['secular_max_error']:.3g})")
    ax1.set_ylabel(r"$\|\nabla_J e^{tA} - \mathrm{surrogate}\|_F$")
    ax1.set_title("absolute error")
    ax2.loglog(ts, curves["relative_first_order"], color="C3", lw=2, label="first order")
    ax2.loglog(ts, curves["relative_secular"], color="C0", lw=2,
               label=rf"secular (fitted slope {s['secular_relative_error_slope']:.3f})")
    ax2.loglog(ts, curves["relative_bound"], "k--", lw=1.3, label=r"bound $/ \|\nabla_J e^{tA}\|_F$")
    guide = curves["relative_bound"][-1] * ts[-1] / ts
    ax2.loglog(ts, guide, ":", color="0.4", lw=1.2, label=r"$\propto 1/t$")
    ax2.set_ylim(top=10 * max(curves["relative_first_order"].max(), curves["relative_secular"].max()))
    ax2.set_title("relative error")
    for ax in (ax1, ax2):
        ax.set_xlabel("t")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="best", framealpha=0.9)
    what = r"$J = -i\,\mathrm{diag}(v)$" if direction == "diagonal" else r"$J = -iK$, $K$ Hermitian"
    fig.suptitle(rf"Surrogates of $\nabla_J e^{{tA}}$, $A = -iH$ (GUE, d = {dim}), {what}")
    return save_figure(comm, fig, path, dpi=120)
# -


# ## Putting it together


# +
def print_summary(comm, s):
    keys = ["secular_max_error", "secular_bound", "secular_max_error_over_bound", "first_order_error_slope",
            "first_order_error_growth", "first_order_growth_theory", "secular_relative_error_final",
            "secular_relative_error_slope", "first_order_relative_error_final", "crossover_time",
            "exact_methods_max_rel_diff"]
    lines = [f"{'quantity':<34} {'value':>12}", "-" * 47] + [f"{k:<34} {s[k]:>12.4g}" for k in keys]
    rank0_print(comm, "\n".join(lines))


def main(argv=None, comm: MPI.Comm | None = None) -> dict:
    """Run the demo and return its summary numbers."""
    comm = MPI.COMM_WORLD if comm is None else comm
    args = parse_args(argv)
    out = prepare_output_dir(comm, args.output, what="--output", files=(f"{NAME}.png", f"{NAME}.h5"))
    H, S, J = make_problem(comm, args.dim, args.seed, args.direction)
    ts = np.logspace(np.log10(args.t_min), np.log10(args.t_max), args.num_times)
    rank0_print(comm, f"{NAME}: d = {args.dim}, J = {args.direction}, t in [{args.t_min:g}, {args.t_max:g}], "
                      f"{args.num_times} times on {comm.size} rank(s)")
    table = error_table(comm, S, J, ts)
    summary, curves = analyse(S, J, ts, table)
    plot(comm, out / f"{NAME}.png", ts, table, curves, summary, args.dim, args.direction)
    write_h5(comm, out / f"{NAME}.h5", {
        "t": ts,
        "H": H,
        "J": J,
        "frequencies": S.frequencies,
        "errors": {k: table[k] for k in ("first_order", "secular")},
        "norm_Y": table["norm_Y"],
        "exact_methods_rel_diff": table["exact_methods_rel_diff"],
        "curves": curves,
        "summary": summary,
    }, attrs={"demo": NAME, "dim": args.dim, "seed": args.seed, "direction": args.direction,
              "nprocs": comm.size})
    print_summary(comm, summary)
    rank0_print(comm, f"wrote {out / (NAME + '.png')} and {out / (NAME + '.h5')}")
    return summary


if __name__ == "__main__":
    sys.exit(exit_on_error(main))
# -
