#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Set up (or reuse) .venv and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # spinning OpenMP waits stall torch on shared cores
exec timeout 1500 "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
