"""Shared pieces of the benchmark scripts: interleaved timing, machine description,
the ratio/target table and the atomic JSON report.

Benchmarks report ratios measured in one run (machines are noisy); wall times are
recorded, never asserted.

Every benchmark imports this module first (``import _harness``: the script's
directory is on ``sys.path`` when it runs as ``python benchmarks/NAME.py``, and
the isort sections of pyproject.toml put ``_harness`` first). Importing it

- sets ``OMP_NUM_THREADS=1`` unless the caller chose a value, before NumPy (or
  PETSc) loads its BLAS: the timings are of one thread per process, and the
  setting is recorded in the report (:func:`machine_info`);
- imports :mod:`sensitivity`, which imports ``dolfinx_solver`` and so MPI ahead
  of ``dolfinx`` and ``petsc4py``.

NumPy is therefore imported inside the functions here, not at the top.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import sensitivity

__all__ = [
    "finish_report",
    "interleaved",
    "machine_info",
    "plain",
    "print_targets",
    "ratio",
    "write_json_atomic",
]


def _one_blas_thread() -> None:
    if "OMP_NUM_THREADS" not in os.environ and "numpy" in sys.modules:
        warnings.warn("NumPy was imported before benchmarks/_harness.py: OMP_NUM_THREADS=1 may come too late "
                      "for its BLAS (import _harness first)", RuntimeWarning, stacklevel=3)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # recorded in the report


_one_blas_thread()


def interleaved(fns: Mapping[str, Callable[[], object]], repeats: int, warmup: bool = True) -> dict:
    """Time each callable ``repeats`` times, interleaved (after one warm-up each if ``warmup``), in seconds."""
    if warmup:
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    return {name: {"median": statistics.median(ts), "min": min(ts), "all": ts} for name, ts in times.items()}


def ratio(timings: Mapping[str, Mapping[str, float]], num: str, den: str) -> float:
    """Ratio of the median times of two entries of :func:`interleaved`'s result."""
    return timings[num]["median"] / timings[den]["median"]


def machine_info() -> dict:
    """Versions, CPU count, load and BLAS threading of this machine (for the report)."""
    import numpy as np
    import scipy

    info = {
        "python": sys.version.split()[0],
        "sensitivity": sensitivity.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "threads_env": {v: os.environ.get(v) for v in
                        ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")},
    }
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = {k: blas.get(k) for k in ("name", "version", "openblas configuration")}
    except Exception as exc:  # pragma: no cover - depends on the NumPy build
        info["blas"] = f"unavailable: {exc}"
    return info


def plain(obj):
    """Plain-Python copy of ``obj`` for JSON (NumPy scalars to floats/ints/bools)."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temporary file, then rename)."""
    from sensitivity.io import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def writer(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=2, allow_nan=False)
            fh.write("\n")

    atomic_write(path, writer)


def print_targets(report: Mapping, width: int = 38) -> None:
    """The table of target quantities: value, target (upper bound) and whether it is met."""
    print(f"\n  {'quantity':<{width}} {'value':>10} {'target':>10}  passed")
    for key, target in report["targets"].items():
        print(f"  {key:<{width}} {report[key]:>10.3g} {'<= ' + format(target, 'g'):>10}  {report['passed'][key]}")


def finish_report(report: dict, targets: Mapping[str, float], start: float, path, print_report,
                  checks: Mapping[str, bool] | None = None) -> int:
    """Mark each target (an upper bound) passed or not, and each of ``checks`` (other targets, already
    decided), add the runtime since ``start``, print with ``print_report`` and write the JSON
    atomically to ``path``; returns the exit code 0."""
    report["passed"] = {key: bool(report[key] <= target) for key, target in targets.items()}
    report["passed"].update({key: bool(value) for key, value in (checks or {}).items()})
    report["runtime_seconds"] = time.perf_counter() - start
    report = plain(report)
    print_report(report)
    write_json_atomic(path, report)
    print(f"wrote {path}")
    return 0
