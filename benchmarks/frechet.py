#!/usr/bin/env python
r"""Accuracy and speed of the dense Fréchet derivative :math:`\nabla_J e^{tQ}` (docs/theory.md §1).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/frechet.py --json out.json [--dim 200] [--repeats 5] [--quick]

Prints a table and writes a JSON report (atomically: a temporary file in the
target directory, then :func:`os.replace`). What is measured:

accuracy
    Over a fixed set of well-conditioned cases — d in {2, 5, 20, 60}, ``t`` in
    {0.5, 2, 8} with :math:`\|Q\|_2 = 1` (so :math:`\|tQ\|_2 \le 8`), real and
    complex, normal (symmetric/Hermitian, skew) and non-normal (Gaussian, rate
    matrices, reversible rate matrices) — the relative Frobenius error of every
    exact method of :func:`sensitivity.dense.expm_frechet` (the default, block, eig,
    series) and of a batched :class:`~sensitivity.dense.EigenFrechet` call, against
    :func:`scipy.linalg.expm_frechet`. Deterministic (fixed seeds).
speed (ratios of medians of interleaved timings, ``--dim`` d, one warm-up each)
    * the default ``expm_frechet(Q, J, t)`` over ``scipy.linalg.expm_frechet``;
    * ``expm_gradient`` (all d² entries) over one directional derivative;
    * ``EigenFrechet(Q, t)(Js)`` for a stack of k = 50 directions, construction
      included, over 50 calls of scipy's ``expm_frechet``: for a reversible rate
      matrix (real spectrum; the headline) and for a general random rate matrix
      (complex spectrum; informational), plus, informational, the real-spectrum
      ratio at several ``t`` (scipy's cost grows with :math:`\log\|tQ\|`, the
      eigen-method's does not).

Only ratios are targets; wall times are reported, never asserted. BLAS threads:
``OMP_NUM_THREADS`` defaults to 1 (as in the project's scripts) and is recorded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import _harness  # first: one BLAS thread by default, then MPI before dolfinx/petsc4py (see _harness)
from sensitivity.dense import (
    EigenFrechet,
    expm_frechet,
    expm_gradient,
    random_rate_matrix,
)

import numpy as np
import scipy
import scipy.linalg

TARGETS = {
    "max_rel_err_vs_scipy": 1e-12,
    "default_time_over_scipy": 1.5,
    "full_gradient_over_one_directional": 1.5,
    "k_directions_over_scipy_loop": 0.2,
}

#: Matrix families of the accuracy sweep: (kind, complex?).
KINDS = (
    ("symmetric", False),
    ("hermitian", True),
    ("skew", False),
    ("skew", True),
    ("nonnormal", False),
    ("nonnormal", True),
    ("rate", False),
    ("reversible", False),
)
ACCURACY_DIMS = (2, 5, 20, 60)
ACCURACY_TIMES = (0.5, 2.0, 8.0)
#: Non-normal cases are redrawn until their eigenvector matrix is this well conditioned.
MAX_EIGVEC_COND = 1e3
#: Methods compared with scipy; "default" is expm_frechet without a method argument.
ACCURACY_METHODS = ("default", "block", "eig", "series", "EigenFrechet_stack")


# --------------------------------------------------------------------------- test matrices


def reversible_rate_matrix(d: int, rng: np.random.Generator) -> np.ndarray:
    r"""A reversible rate matrix: diagonalizable, real spectrum, not symmetric.

    Symmetric rates :math:`S_{ij} = S_{ji} \sim \mathrm{Exp}(1)` and a stationary
    vector :math:`\pi_j \propto U(1/2, 3/2)`; :math:`Q_{ij} = S_{ij}\,d\,\pi_j` for
    :math:`i \ne j` (mean off-diagonal rate 1, like :func:`random_rate_matrix`),
    rows summing to zero. Detailed balance :math:`\pi_i Q_{ij} = \pi_j Q_{ji}` makes
    :math:`D^{1/2} Q D^{-1/2}` (:math:`D = \mathrm{diag}\,\pi`) symmetric, so ``Q`` is
    diagonalizable with real eigenvalues and eigenvector condition number at most
    :math:`\sqrt{\max\pi/\min\pi} \le \sqrt 3`; ``Q`` itself is not symmetric, so
    :class:`EigenFrechet` takes its general (``eig``) path.
    """
    E = np.triu(rng.exponential(1.0, size=(d, d)), 1)
    S = E + E.T
    pi = rng.uniform(0.5, 1.5, size=d)
    pi /= pi.sum()
    Q = S * (d * pi)[None, :]
    np.fill_diagonal(Q, 0.0)
    np.fill_diagonal(Q, -Q.sum(axis=1))
    return Q


def _gaussian(rng: np.random.Generator, d: int, complex_: bool) -> np.ndarray:
    A = rng.standard_normal((d, d))
    if complex_:
        A = A + 1j * rng.standard_normal((d, d))
    return A


def _eigvec_cond(Q: np.ndarray) -> float:
    return float(np.linalg.cond(np.linalg.eig(Q)[1]))


def accuracy_case(kind: str, complex_: bool, d: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(Q, J) with ||Q||_2 = 1 and ||J||_F = 1."""
    for _ in range(100):
        if kind in ("symmetric", "hermitian"):
            G = _gaussian(rng, d, complex_)
            Q = 0.5 * (G + G.conj().T)
        elif kind == "skew":
            G = _gaussian(rng, d, complex_)
            Q = 0.5 * (G - G.conj().T)
        elif kind == "nonnormal":
            Q = _gaussian(rng, d, complex_)
        elif kind == "rate":
            Q = random_rate_matrix(d, rng)
        elif kind == "reversible":
            Q = reversible_rate_matrix(d, rng)
        else:
            raise ValueError(kind)
        if kind in ("symmetric", "hermitian", "skew") or _eigvec_cond(Q) <= MAX_EIGVEC_COND:
            break
    else:  # pragma: no cover - 100 draws never all fail for these families
        raise RuntimeError(f"no well-conditioned {kind} matrix of size {d}")
    Q = Q / np.linalg.norm(Q, 2)
    J = _gaussian(rng, d, complex_)
    return Q, J / np.linalg.norm(J)


def _rel(Y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(Y - ref) / np.linalg.norm(ref))


def run_accuracy(seed: int = 20261120) -> dict:
    """Worst relative Frobenius errors against scipy, per method and overall."""
    worst = {m: 0.0 for m in ACCURACY_METHODS}
    where = {m: None for m in ACCURACY_METHODS}
    cases = 0
    for ik, (kind, complex_) in enumerate(KINDS):
        for d in ACCURACY_DIMS:
            rng = np.random.default_rng([seed, ik, d])
            Q, J = accuracy_case(kind, complex_, d, rng)
            J2 = _gaussian(rng, d, complex_)
            J2 /= np.linalg.norm(J2)
            cond = 1.0 if kind in ("symmetric", "hermitian") else _eigvec_cond(Q)
            for t in ACCURACY_TIMES:
                ref = scipy.linalg.expm_frechet(t * Q, t * J, compute_expm=False)
                ref2 = scipy.linalg.expm_frechet(t * Q, t * J2, compute_expm=False)
                ev = EigenFrechet(Q, t)
                stack = ev(np.stack([J, J2]))
                errs = {
                    "default": _rel(expm_frechet(Q, J, t), ref),
                    "block": _rel(expm_frechet(Q, J, t, method="block"), ref),
                    "eig": _rel(expm_frechet(Q, J, t, method="eig"), ref),
                    "series": _rel(expm_frechet(Q, J, t, method="series"), ref),
                    "EigenFrechet_stack": max(_rel(stack[0], ref), _rel(stack[1], ref2)),
                }
                cases += 1
                for m, e in errs.items():
                    if not e <= worst[m]:  # also catches NaN
                        worst[m] = e
                        where[m] = {"kind": kind, "complex": complex_, "d": d, "t": t, "eigvec_cond": cond}
    return {
        "max_rel_err_vs_scipy": max(worst.values()),
        "per_method": worst,
        "worst_case": where,
        "cases": cases,
        "dims": list(ACCURACY_DIMS),
        "times": list(ACCURACY_TIMES),
        "kinds": [f"{k}-{'complex' if c else 'real'}" for k, c in KINDS],
        "max_eigvec_cond_nonnormal": MAX_EIGVEC_COND,
    }


# --------------------------------------------------------------------------- timing


def time_single(Q, J, G, t, repeats) -> dict:
    timings = _harness.interleaved(
        {
            "default": lambda: expm_frechet(Q, J, t),
            "scipy": lambda: scipy.linalg.expm_frechet(t * Q, t * J, compute_expm=False),
            "gradient": lambda: expm_gradient(Q, G, t),
        },
        repeats,
    )
    return timings


def time_k_directions(Q, Js, t, repeats) -> dict:
    """EigenFrechet(Q, t)(Js) (construction included) versus a loop of scipy calls."""

    def scipy_loop():
        for J in Js:
            scipy.linalg.expm_frechet(t * Q, t * J, compute_expm=False)

    ev = EigenFrechet(Q, t)
    timings = _harness.interleaved(
        {
            "eigen_frechet": lambda: EigenFrechet(Q, t)(Js),
            "scipy_loop": scipy_loop,
            "eigen_construct": lambda: EigenFrechet(Q, t),
            "eigen_apply": lambda: ev(Js),
        },
        repeats,
    )
    Ys = ev(Js)
    err = max(_rel(Y, scipy.linalg.expm_frechet(t * Q, t * J, compute_expm=False)) for J, Y in zip(Js[:5], Ys[:5]))
    lam = ev.eigenvalues
    return {
        "ratio": _harness.ratio(timings, "eigen_frechet", "scipy_loop"),
        "timings": timings,
        "norm1_tQ": float(t * np.linalg.norm(Q, 1)),
        "eigvec_condition": float(ev.eigvec_condition),
        "complex_eigenvalues": int(np.count_nonzero(np.imag(lam))),
        "max_rel_err_first5_vs_scipy": err,
    }


def run_timing(d: int, k: int, repeats: int, sweep_times, seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    t = 1.0
    Q_general = random_rate_matrix(d, rng)  # i.i.d. Exp(1) rates: complex spectrum
    Q_reversible = reversible_rate_matrix(d, rng)  # real spectrum, see reversible_rate_matrix
    J = rng.standard_normal((d, d))
    G = rng.standard_normal((d, d))
    Js = rng.standard_normal((k, d, d))

    single = time_single(Q_general, J, G, t, repeats)
    headline = time_k_directions(Q_reversible, Js, t, repeats)
    complex_spectrum = time_k_directions(Q_general, Js, t, repeats)
    sweep = {}
    for ts in sweep_times:
        if ts == t:
            sweep[repr(ts)] = {"ratio": headline["ratio"], "norm1_tQ": headline["norm1_tQ"]}
        else:
            r = time_k_directions(Q_reversible, Js, ts, max(1, repeats // 2 + 1))
            sweep[repr(ts)] = {"ratio": r["ratio"], "norm1_tQ": r["norm1_tQ"]}
    return {
        "d": d,
        "k": k,
        "t": t,
        "repeats": repeats,
        "default_time_over_scipy": _harness.ratio(single, "default", "scipy"),
        "full_gradient_over_one_directional": _harness.ratio(single, "gradient", "default"),
        "k_directions_over_scipy_loop": headline["ratio"],
        "k_directions_over_scipy_loop_complex_spectrum": complex_spectrum["ratio"],
        "k_directions_over_scipy_loop_by_t": sweep,
        "single": {"Q": "random_rate_matrix(d) (Exp(1) rates)", "norm1_tQ": float(t * np.linalg.norm(Q_general, 1)),
                   "timings": single},
        "k_directions_real_spectrum": {"Q": "reversible_rate_matrix(d)", **headline},
        "k_directions_complex_spectrum": {"Q": "random_rate_matrix(d) (Exp(1) rates)", **complex_spectrum},
    }


# --------------------------------------------------------------------------- report


def print_report(report: dict) -> None:
    acc, tim = report["accuracy"], report["timing"]
    print(f"Accuracy vs scipy.linalg.expm_frechet ({acc['cases']} cases: d in {acc['dims']}, "
          f"t in {acc['times']}, ||Q||_2 = 1)")
    print(f"  {'method':<20} {'worst rel. Frobenius error':>27}   worst case")
    for m, e in acc["per_method"].items():
        w = acc["worst_case"][m] or {}
        case = (f"{w.get('kind')}-{'complex' if w.get('complex') else 'real'} d={w.get('d')} t={w.get('t')} "
                f"cond(V)={w.get('eigvec_cond', float('nan')):.1f}") if w else "-"
        print(f"  {m:<20} {e:>27.2e}   {case}")
    d, k = tim["d"], tim["k"]
    s = tim["single"]["timings"]
    print(f"\nTiming (d = {d}, medians of {tim['repeats']} interleaved repeats, "
          f"OMP_NUM_THREADS={report['machine']['threads_env']['OMP_NUM_THREADS']})")
    print(f"  scipy.linalg.expm_frechet            {1e3 * s['scipy']['median']:9.2f} ms")
    print(f"  expm_frechet (default)               {1e3 * s['default']['median']:9.2f} ms")
    print(f"  expm_gradient (all d^2 entries)      {1e3 * s['gradient']['median']:9.2f} ms")
    for key, label in (("k_directions_real_spectrum", "real spectrum (reversible)"),
                       ("k_directions_complex_spectrum", "complex spectrum (random rates)")):
        r = tim[key]
        tt = r["timings"]
        print(f"  {k} directions, {label}: ||tQ||_1 = {r['norm1_tQ']:.3g}, cond(V) = {r['eigvec_condition']:.3g}, "
              f"{r['complex_eigenvalues']} non-real eigenvalues")
        print(f"    EigenFrechet(Q, t)(Js)             {1e3 * tt['eigen_frechet']['median']:9.2f} ms "
              f"(construct {1e3 * tt['eigen_construct']['median']:.2f} + apply {1e3 * tt['eigen_apply']['median']:.2f})")
        print(f"    {k} x scipy.linalg.expm_frechet     {1e3 * tt['scipy_loop']['median']:9.2f} ms")
    print("  k-direction ratio vs t (real spectrum): "
          + ", ".join(f"t={t} (||tQ||_1={v['norm1_tQ']:.3g}): {v['ratio']:.3f}"
                      for t, v in tim["k_directions_over_scipy_loop_by_t"].items()))
    print(f"  k-direction ratio, complex spectrum: {tim['k_directions_over_scipy_loop_complex_spectrum']:.3f}")
    _harness.print_targets(report)
    load = report["machine"].get("load_average_at_end")
    print(f"\nwall time of the benchmark: {report['runtime_seconds']:.1f} s; "
          f"load average (1 min) at start/end: {(report['machine'].get('load_average_at_start') or ['?'])[0]} / "
          f"{(load or ['?'])[0]} on {report['machine']['cpu_count']} CPUs")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, type=Path, help="where to write the JSON report")
    parser.add_argument("--dim", type=int, default=None, help="dimension of the timing runs (default 200; 60 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 5; 2 with --quick)")
    parser.add_argument("--directions", type=int, default=50, help="number of directions k (default 50)")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a few seconds)")
    args = parser.parse_args(argv)
    d = args.dim if args.dim is not None else (60 if args.quick else 200)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    if d < 2 or repeats < 1 or args.directions < 1:
        parser.error("--dim must be >= 2, --repeats and --directions >= 1")
    sweep_times = (1.0,) if args.quick else (0.001, 0.01, 0.1, 1.0)

    start = time.perf_counter()
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    accuracy = run_accuracy()
    timing = run_timing(d, args.directions, repeats, sweep_times)
    report = {
        "benchmark": "frechet",
        "quick": bool(args.quick),
        "max_rel_err_vs_scipy": accuracy["max_rel_err_vs_scipy"],
        "max_rel_err_vs_scipy_per_method": accuracy["per_method"],
        "default_time_over_scipy": timing["default_time_over_scipy"],
        "full_gradient_over_one_directional": timing["full_gradient_over_one_directional"],
        "k_directions_over_scipy_loop": timing["k_directions_over_scipy_loop"],
        "k_directions_over_scipy_loop_complex_spectrum": timing["k_directions_over_scipy_loop_complex_spectrum"],
        "targets": dict(TARGETS),
        "accuracy": accuracy,
        "timing": timing,
        "machine": {**_harness.machine_info(), "load_average_at_start": load_start},
    }
    return _harness.finish_report(report, TARGETS, start, args.json, print_report)


if __name__ == "__main__":
    sys.exit(main())
