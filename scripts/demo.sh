#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Set up (or reuse) .venv and run the main job on this machine. Outputs go to out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
OUT="${1:-out/demo}"
mkdir -p "$OUT"
echo "[demo] writing the synthetic FLAME-format model (no FLAME licence needed)"
headcast synth-model "$OUT/model" --npz
echo "[demo] posing it: neutral, a random identity/expression, and an open jaw"
headcast pose-mesh "$OUT/model" --out "$OUT/head_neutral.obj"
headcast pose-mesh "$OUT/model" --out "$OUT/head_random.obj" --seed 1 --jaw 0.25
"$VENV/bin/python" scripts/render_preview.py "$OUT/model" "$OUT/preview.png"
echo "[demo] done: open $OUT/head_random.obj in Blender (File > Import > Wavefront) or look at $OUT/preview.png"
