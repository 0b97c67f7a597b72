#!/usr/bin/env bash
# The main demo under mpirun. Usage: bash scripts/demo.sh [NPROCS] [demo options...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
nprocs="${1:-2}"; shift || true
exec mpirun -n "$nprocs" python demos/velocity_sensitivity.py --output output/velocity_sensitivity "$@"
