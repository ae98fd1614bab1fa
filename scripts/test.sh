#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Set up (or reuse) .venv and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec timeout 1500 "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
