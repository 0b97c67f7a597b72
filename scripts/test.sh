#!/usr/bin/env bash
# The whole test suite: serial tests, and the MPI tests under mpirun -n 2 and -n 3
# (launched by tests/test_parallel.py, each under a timeout). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec python -m pytest "$@"
