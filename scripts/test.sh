#!/usr/bin/env bash
# The whole test suite: serial tests, and the MPI tests under mpirun -n 2 and -n 3
# (launched by tests/test_parallel.py, each under a timeout). Extra arguments go to pytest.
#
# It also makes a second venv, .venv-complex, with the complex PETSc build
# (dolfinx-solver-complex), where tests/test_complex_build.py checks that the
# Schrödinger module gives the real build's numbers with native complex psi.
# SENSITIVITY_COMPLEX=0 skips that venv (and so that test).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "${SENSITIVITY_COMPLEX:-1}" != "0" ]; then
    (SENSITIVITY_VENV="$root/.venv-complex" SENSITIVITY_EXTRAS="fenics-complex,test" \
        source "$root/scripts/bootstrap.sh")
    export SENSITIVITY_COMPLEX_PYTHON="$root/.venv-complex/bin/python"
fi
source "$root/scripts/bootstrap.sh"
cd "$root"
exec python -m pytest "$@"
