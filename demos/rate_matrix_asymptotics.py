# ---
# jupytext:
#   text_representation:
#     extension: .py
#     format_name: light
# ---

"""Long-time asymptotics of ∇_J exp(tQ) for a rate matrix: the corrected formula versus
the seed's Theorem 2.1 and the polynomial surrogates (docs/theory.md §1).

Run as ``mpirun -n P python demos/rate_matrix_asymptotics.py --output DIR``.
"""

# # Long-time asymptotics of the derivative of exp(tQ) for a rate matrix
#
# This demo answers, for one random rate matrix, the question of the seed note's §2: *how
# well can the derivative of the matrix exponential*
#
# $$ Y(t) = \nabla_J e^{tQ} = \int_0^t e^{(t-s)Q} J e^{sQ}\,ds \qquad\text{(seed 1.4)} $$
#
# *be approximated by something cheap when $t$ is large?*
#
# Let $Q \in \mathcal D$ be an irreducible, diagonalizable rate matrix (non-negative rates
# off the diagonal, zero row sums). It has a simple eigenvalue $0$ with right eigenvector
# $\mathbf 1$ and left eigenvector the stationary distribution $\pi$, and every other
# eigenvalue has $\Re\lambda \le -\kappa < 0$, where $\kappa$ is the spectral gap. Splitting
# $e^{sQ} = \Pi + E(s)$ with $\Pi = \mathbf 1\pi^T$ and $\|E(s)\| \le c_V e^{-\kappa s}$
# inside the integral gives the **corrected asymptotic formula** (docs/theory.md §1)
#
# $$ Y(t) = t\,\Pi J\Pi - \Pi J Q^\# - Q^\# J \Pi + R(t),\qquad
#    \|R(t)\|_2 \le (C_0 + C_1 t)\,e^{-\kappa t}, $$
#
# with the *group inverse* $Q^\# = (Q + \Pi)^{-1} - \Pi$ and explicit constants
# $C_0 = 2\|\Pi\|\|J\|c_V\min(\|Q^\#\|, 1/e_m)$, $C_1 = c_V^2\|J\|$
# ($c_V$ the condition number of the eigenvector matrix). We compare it with
#
# * the seed's **Theorem 2.1**, which uses the Moore–Penrose pseudo-inverse $Q^+$ instead:
#   its error tends to $t\,(\pi^TJ\mathbf 1)\,\mathbf 1(\pi - \mathbf 1/d)^T + O(1)$, so it
#   grows linearly when $\pi^T J\mathbf 1 \ne 0$ and plateaus when $J\mathbf 1 = 0$;
#   it never decays (unless $\pi$ is uniform, when $Q^+ = Q^\#$);
# * the **first-order surrogate** $t e^{tQ}J$ (seed 1.6), whose error tends to
#   $-t\,\Pi J(I - \Pi) + O(1)$: linear growth with slope $\|\Pi J(I-\Pi)\|_2$;
# * the seed's **(4.1)** and the **order-K truncations** of the series (seed 1.5), which are
#   accurate for small $t$ but are polynomials in $t$ times $e^{tQ}$ and so cannot follow
#   $Y(t) \sim t\,\Pi J \Pi$. Since $e^{tQ}Q^l \to \Pi Q^l = 0$ for $l \ge 1$, only the
#   terms $\frac{t^{n+1}}{(n+1)!}e^{tQ}JQ^n \to \frac{t^{n+1}}{(n+1)!}\Pi J Q^n$ survive: the
#   order-K error grows like $t^{K+1}$, and (4.1), whose extra term $-\frac{t^3}{3}e^{tQ}QJQ$
#   decays, ends up with the error of the order-1 truncation.
#
# Two directions are studied: a generic $J$ (nonzero row sums), and $J_0 = J - J\mathbf 1
# \mathbf 1^T/d$ with $J_0\mathbf 1 = 0$ — a perturbation that keeps $Q + \varepsilon J_0$ a
# rate matrix, for which $-\Pi J_0 Q^\#$ is the derivative of the stationary projector
# ($d\pi^T = -\pi^T J_0 Q^\#$, Meyer 1975).
#
# The time grid is split over the MPI ranks; every time is computed by exactly one rank with
# the same arithmetic, so the output does not depend on the number of ranks.

# +
from __future__ import annotations

import argparse
import math
import sys

from sensitivity.dense import (
    RateMatrix,
    expm_frechet,
    first_order_surrogate,
    random_rate_matrix,
    seed_4_1_surrogate,
    series_surrogate,
)
from sensitivity.io import new_figure, prepare_output_dir, save_figure, write_h5
from sensitivity.parallel import ArgumentParser, exit_on_error, progress, rank0_print

import numpy as np
from matplotlib import colormaps
from mpi4py import MPI

NAME = "rate_matrix_asymptotics"

#: Relative round-off level marked in the plots: the floor is ROUNDOFF * max(‖Y(t)‖, ‖Y_asym(t)‖).
ROUNDOFF = 1e-15
#: An error counts as "above round-off" (used by the fit and the bound check) when it exceeds
#: ABOVE_ROUNDOFF times the floor, i.e. a relative error of 1e-12.
ABOVE_ROUNDOFF = 1e3
#: Default final time in units of the relaxation time 1/κ: e^{-40} ≈ 4e-18 is below round-off.
T_MAX_TIMES_KAPPA = 40.0
# -

# ## Command line
#
# Every rank parses the same ``argv`` and validates it in the same way before any collective
# call, so a bad value stops all ranks together with one message (printed by rank 0).


# +
def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog=NAME, description=(__doc__ or NAME).splitlines()[0])
    parser.add_argument("--output", default=f"output/{NAME}", help="output directory (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=None, help="number of states d (default 8; 6 with --small)")
    parser.add_argument("--num-times", type=int, default=None,
                        help="number of points of the linear t-grid (default 200; 60 with --small)")
    parser.add_argument("--t-max", type=float, default=None,
                        help=f"final time (default {T_MAX_TIMES_KAPPA:g}/κ, where e^(-κt) reaches round-off)")
    parser.add_argument("--orders", type=int, nargs="+", default=[1, 2, 4],
                        help="orders K of the series surrogates to compare (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of Q and J (default: %(default)s)")
    parser.add_argument("--small", action="store_true", help="a small, fast configuration (for tests)")
    args = parser.parse_args(argv)
    if args.dim is None:
        args.dim = 6 if args.small else 8
    if args.num_times is None:
        args.num_times = 60 if args.small else 200
    if not args.output:
        parser.error("--output must be a non-empty path")
    if args.dim < 2:
        parser.error(f"--dim must be an integer >= 2 (a rate matrix needs two states), got {args.dim}")
    if args.num_times < 10:
        parser.error(f"--num-times must be >= 10, got {args.num_times}")
    if args.t_max is not None and not (math.isfinite(args.t_max) and args.t_max > 0):
        parser.error(f"--t-max must be a positive finite number, got {args.t_max}")
    bad = [k for k in args.orders if k < 0]
    if bad:
        parser.error(f"--orders must be non-negative integers, got {bad[0]}")
    if args.seed < 0:
        parser.error(f"--seed must be a non-negative integer, got {args.seed}")
    args.orders = sorted(set(args.orders))
    return args
# -


# ## The problem
#
# $Q$ has i.i.d. exponential rates (``random_rate_matrix``); $J$ is a standard Gaussian matrix,
# so $J\mathbf 1 \ne 0$ almost surely, and $J_0$ removes its row means. Rank 0 draws them and
# broadcasts, so every rank works on the same matrices.


def make_problem(comm: MPI.Comm, dim: int, seed: int):
    data = None
    if comm.rank == 0:
        rng = np.random.default_rng(seed)
        Q = random_rate_matrix(dim, rng)
        J = rng.standard_normal((dim, dim))
        J0 = J - J.mean(axis=1, keepdims=True)
        data = (Q, J, J0)
    Q, J, J0 = comm.bcast(data, root=0)
    return RateMatrix(Q), {"general": J, "zero_row_sum": J0}


# ## Errors along the time grid
#
# For each $t$ we compute the exact derivative with ``expm_frechet`` (Al-Mohy & Higham) and the
# 2-norm error of each approximation. Rank ``r`` takes the times ``r, r + P, r + 2P, …``
# (round robin, because large ``t`` costs more squarings); ``allgather`` reassembles the table.


# +
def method_names(orders) -> list[str]:
    return ["corrected", "seed_theorem_2_1", "first_order", "seed_4_1"] + [f"order_{k}" for k in orders]


def error_table(comm: MPI.Comm, R: RateMatrix, J: np.ndarray, ts: np.ndarray, orders, desc: str):
    """Columns: ‖Y‖₂, ‖Y_asym‖₂, then the 2-norm error of every method, for every t."""
    Q = R.Q
    names = method_names(orders)
    mine = list(range(comm.rank, len(ts), comm.size))
    rows = {}
    for i in progress(comm, mine, desc=desc):
        t = float(ts[i])
        Y = expm_frechet(Q, J, t)
        asym = R.asymptotic_derivative(J, t)
        approx = {
            "corrected": asym,
            "seed_theorem_2_1": R.seed_theorem_2_1(J, t),
            "first_order": first_order_surrogate(Q, J, t),
            "seed_4_1": seed_4_1_surrogate(Q, J, t),
        }
        for k in orders:
            approx[f"order_{k}"] = series_surrogate(Q, J, t, order=k)
        rows[i] = [np.linalg.norm(Y, 2), np.linalg.norm(asym, 2)] + [np.linalg.norm(Y - approx[n], 2) for n in names]
    table = np.empty((len(ts), 2 + len(names)))
    for part in comm.allgather(rows):
        for i, row in part.items():
            table[i] = row
    norm_Y, norm_asym = table[:, 0], table[:, 1]
    return norm_Y, norm_asym, {n: table[:, 2 + j] for j, n in enumerate(names)}
# -


# ## Decay rate, bound check and growth rates
#
# Where the corrected formula's error is well above round-off (relative error $> 10^{-12}$)
# and $t \ge 1/\kappa$, a least-squares line through $\log\|R(t)\|$ gives the observed decay
# rate. The polynomial prefactor $C_0 + C_1 t$ biases it slightly below $\kappa$ (by about
# the mean of $1/t$ over the fitted range). The bound must hold at every $t$ where the error
# is above round-off. Growth rates of the first-order and seed errors are measured over the
# second half of the grid and compared with the predicted slopes.


# +
def fit_decay(ts, err, floor, kappa):
    """(rate, intercept, mask) of log err ≈ intercept − rate·t over the fitted range."""
    mask = (err > ABOVE_ROUNDOFF * floor) & (ts >= 1.0 / kappa)
    if mask.sum() < 3:
        return math.nan, math.nan, mask
    slope, intercept = np.polyfit(ts[mask], np.log(err[mask]), 1)
    return float(-slope), float(intercept), mask


def late_slope(ts, err):
    """Average slope d err/dt over the second half of the grid."""
    h = len(ts) // 2
    return float((err[-1] - err[h]) / (ts[-1] - ts[h]))


def analyse(R: RateMatrix, J, ts, norm_Y, norm_asym, errors):
    bound = R.asymptotic_bound(J)
    floor = ROUNDOFF * np.maximum(norm_Y, norm_asym)
    err = errors["corrected"]
    rate, intercept, mask = fit_decay(ts, err, floor, bound.kappa)
    above = err > ABOVE_ROUNDOFF * floor
    ratio = err[above] / bound(ts[above])
    d = R.dim
    Pi, pi, ones = R.Pi, R.pi, np.ones(d)
    summary = {
        "kappa": bound.kappa,
        "C": bound.C,
        "C0": bound.C0,
        "C1": bound.C1,
        "eigvec_condition": bound.eigvec_condition,
        "fitted_rate": rate,
        "fitted_rate_over_kappa": rate / bound.kappa,
        "max_ratio_error_over_bound": float(ratio.max()) if ratio.size else math.nan,
        "first_order_error_growth": late_slope(ts, errors["first_order"]),
        "first_order_growth_theory": float(np.linalg.norm(Pi @ J @ (np.eye(d) - Pi), 2)),
        "first_order_final_error": float(errors["first_order"][-1]),
        "seed_formula_final_error": float(errors["seed_theorem_2_1"][-1]),
        "seed_formula_error_growth": late_slope(ts, errors["seed_theorem_2_1"]),
        "seed_formula_growth_theory": float(np.sqrt(d) * abs(pi @ J @ ones) * np.linalg.norm(pi - 1.0 / d)),
        "corrected_final_error": float(err[-1]),
        "t_max": float(ts[-1]),
    }
    curves = {
        "bound": bound(ts),
        "roundoff_floor": floor,
        "fit_mask": mask.astype(np.int8),
        "fit_line": np.exp(intercept - rate * ts),
        "fit_intercept": intercept,
    }
    return summary, curves
# -


# ## Plots
#
# Left: the asymptotic formulas with the bound and the round-off floor; right: the polynomial
# surrogates (small-$t$ approximations) on the same axes.


# +
STYLE = {
    "corrected": dict(color="C0", lw=2.2, label=r"corrected: $t\Pi J\Pi - \Pi JQ^{\#} - Q^{\#}J\Pi$"),
    "seed_theorem_2_1": dict(color="C3", lw=1.8, label=r"seed Thm 2.1 (pseudo-inverse $Q^+$)"),
    "first_order": dict(color="0.35", lw=1.5, label=r"first order $te^{tQ}J$ (1.6)"),
    "seed_4_1": dict(color="C1", lw=1.8, ls="--", label="seed (4.1)"),
}


def plot(comm, path, ts, results, orders, dim):
    fig = new_figure(figsize=(14, 10), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    titles = {"general": r"$J$ with $J\mathbf{1} \neq 0$", "zero_row_sum": r"$J_0$ with $J_0\mathbf{1} = 0$"}
    for row, (key, res) in enumerate(results.items()):
        s, c, e = res["summary"], res["curves"], res["errors"]
        ax = axes[row, 0]
        ax.fill_between(ts, 1e-30, c["roundoff_floor"], color="0.9", zorder=0)
        ax.semilogy(ts, c["roundoff_floor"], ":", color="0.5", label=r"round-off $10^{-15}\|Y(t)\|_2$")
        ax.semilogy(ts, c["bound"], "k--", lw=1.5,
                    label=(rf"bound $(C_0+C_1t)e^{{-\kappa t}}$: $C_0$={s['C0']:.3g}, $C_1$={s['C1']:.3g}"
                           rf" (C={s['C']:.3g}), $\kappa$={s['kappa']:.3g}"))
        for name in ("corrected", "seed_theorem_2_1", "first_order"):
            ax.semilogy(ts, e[name], **STYLE[name])
        ax.semilogy(ts, s["first_order_growth_theory"] * ts, ":", color="0.35", lw=1.2,
                    label=r"predicted first-order error $t\|\Pi J(I-\Pi)\|_2$")
        if np.isfinite(s["fitted_rate"]):
            ax.semilogy(ts, np.where(c["fit_mask"] > 0, c["fit_line"], np.nan), "-", color="C2", lw=4, alpha=0.35,
                        label=rf"fit $e^{{-rt}}$: r = {s['fitted_rate']:.3g} ($\kappa$ = {s['kappa']:.3g})")
        ax.set_title(f"{titles[key]}: asymptotic formulas")
        ax.set_ylabel(r"$\|\nabla_J e^{tQ} - \mathrm{approx}\|_2$")
        ax = axes[row, 1]
        ax.semilogy(ts, c["roundoff_floor"], ":", color="0.5", label=r"round-off $10^{-15}\|Y(t)\|_2$")
        ax.semilogy(ts, e["first_order"], **STYLE["first_order"])
        for j, k in enumerate(orders):
            ax.semilogy(ts, e[f"order_{k}"], color=colormaps["viridis"](0.15 + 0.7 * j / max(1, len(orders) - 1)),
                        lw=1.5, label=f"series order K={k} (1.5)")
        ax.semilogy(ts, e["seed_4_1"], **STYLE["seed_4_1"])
        ax.semilogy(ts, e["corrected"], **{**STYLE["corrected"], "lw": 1.2, "alpha": 0.6})
        ax.set_title(f"{titles[key]}: polynomial surrogates")
        for ax in axes[row]:
            top = max(np.nanmax(v) for v in e.values())
            ax.set_ylim(1e-17, 10 * top)
            ax.grid(True, which="major", alpha=0.3)
        axes[row, 0].legend(fontsize=8, loc="lower left", framealpha=0.9)
        axes[row, 1].legend(fontsize=8, loc="center right", framealpha=0.9)
    for ax in axes[1]:
        ax.set_xlabel("t")
    s = results["general"]["summary"]
    fig.suptitle(f"Errors of approximations of $\\nabla_J e^{{tQ}}$, random rate matrix d = {dim}, "
                 f"spectral gap $\\kappa$ = {s['kappa']:.3g}")
    return save_figure(comm, fig, path, dpi=120)
# -


# ## Putting it together


# +
def print_summary(comm, results):
    keys = ["kappa", "C0", "C1", "C", "fitted_rate", "fitted_rate_over_kappa", "max_ratio_error_over_bound",
            "corrected_final_error", "first_order_error_growth", "first_order_growth_theory",
            "seed_formula_final_error", "seed_formula_error_growth", "seed_formula_growth_theory"]
    g, z = results["general"]["summary"], results["zero_row_sum"]["summary"]
    lines = [f"{'quantity':<28} {'J (J1 != 0)':>14} {'J0 (J0 1 = 0)':>14}", "-" * 58]
    lines += [f"{k:<28} {g[k]:>14.4g} {z[k]:>14.4g}" for k in keys]
    rank0_print(comm, "\n".join(lines))


def main(argv=None, comm: MPI.Comm | None = None) -> dict:
    """Run the demo; return the summary numbers of the generic direction J, with those of
    J0 (J0·1 = 0) under the key ``"zero_row_sum"``."""
    comm = MPI.COMM_WORLD if comm is None else comm
    args = parse_args(argv)
    out = prepare_output_dir(comm, args.output, what="--output", files=(f"{NAME}.png", f"{NAME}.h5"))
    R, directions = make_problem(comm, args.dim, args.seed)
    kappa = R.spectral_gap
    t_max = args.t_max if args.t_max is not None else T_MAX_TIMES_KAPPA / kappa
    ts = t_max * np.arange(1, args.num_times + 1) / args.num_times
    rank0_print(comm, f"{NAME}: d = {args.dim}, kappa = {kappa:.4g}, t in (0, {t_max:.4g}], "
                      f"{args.num_times} times on {comm.size} rank(s)")
    results = {"dim": args.dim}
    for key, J in directions.items():
        norm_Y, norm_asym, errors = error_table(comm, R, J, ts, args.orders, desc=key)
        summary, curves = analyse(R, J, ts, norm_Y, norm_asym, errors)
        results[key] = {"J": J, "norm_Y": norm_Y, "norm_asym": norm_asym, "errors": errors,
                        "curves": curves, "summary": summary}
    plot(comm, out / f"{NAME}.png", ts, {k: results[k] for k in directions}, args.orders, args.dim)
    write_h5(comm, out / f"{NAME}.h5", {
        "t": ts,
        "Q": R.Q,
        "pi": R.pi,
        "eigenvalues": R.eigenvalues,
        "orders": np.asarray(args.orders),
        **{key: results[key] for key in directions},
    }, attrs={"demo": NAME, "dim": args.dim, "seed": args.seed, "nprocs": comm.size})
    print_summary(comm, results)
    rank0_print(comm, f"wrote {out / (NAME + '.png')} and {out / (NAME + '.h5')}")
    summary = dict(results["general"]["summary"])
    summary["zero_row_sum"] = dict(results["zero_row_sum"]["summary"])
    return summary


if __name__ == "__main__":
    sys.exit(exit_on_error(main))
# -
