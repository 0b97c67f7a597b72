"""Run programs under ``mpirun`` with a hard timeout, so a deadlock fails instead of hanging.

Used by the tests that launch the MPI suite, the demos and the harness self-test.
The child runs in its own process group; on timeout the whole group (mpirun, its
proxies and every rank) is killed and :class:`MPITimeout` is raised.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Seconds one MPI run may take before it is declared hung; override with SENSITIVITY_MPI_TIMEOUT.
DEFAULT_TIMEOUT = float(os.environ.get("SENSITIVITY_MPI_TIMEOUT", "900"))

#: Set in the environment of ranks launched by this harness.
UNDER_HARNESS = "SENSITIVITY_UNDER_MPI_HARNESS"


class MPITimeout(AssertionError):
    """An MPI run exceeded its timeout (a deadlock, or far too slow); it was killed."""


def mpirun_executable() -> str:
    """The ``mpirun`` next to this Python (the venv's MPICH wheel), else the one on PATH."""
    local = Path(sys.executable).parent / "mpirun"
    found = str(local) if local.exists() else shutil.which("mpirun")
    if found is None:
        raise FileNotFoundError("no mpirun next to the Python interpreter or on PATH")
    return found


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child launcher: without the PMI/Hydra variables of a parent MPI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "HYDRA_", "MPIR_", "OMPI_"))}
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["MPLBACKEND"] = "Agg"
    env[UNDER_HARNESS] = "1"
    env.update(extra or {})
    return env


def run(cmd: list[str], *, timeout: float = DEFAULT_TIMEOUT, cwd: str | os.PathLike | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` in a new process group; kill the group and raise :class:`MPITimeout` on timeout."""
    proc = subprocess.Popen(cmd, cwd=cwd or ROOT, env=clean_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise MPITimeout(f"killed after {timeout:g} s (deadlock?): {' '.join(cmd)}\n{_tail(out)}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


def run_mpi(nprocs: int, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``mpirun -n nprocs python ARGS`` under :func:`run`."""
    return run([mpirun_executable(), "-n", str(nprocs), sys.executable, *args], **kwargs)


def check(result: subprocess.CompletedProcess) -> str:
    """Return the output of a finished run, or fail with its tail."""
    if result.returncode != 0:
        raise AssertionError(f"exit code {result.returncode}: {' '.join(result.args)}\n{_tail(result.stdout)}")
    return result.stdout


def _tail(text: str | None, lines: int = 60) -> str:
    return "\n".join((text or "").splitlines()[-lines:])
