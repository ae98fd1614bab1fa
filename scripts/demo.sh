#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Set up (or reuse) .venv and run the main job on this machine. Outputs go to out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
OUT="${1:-out/demo}"
mkdir -p "$OUT"
PY="$VENV/bin/python"

# Light fitting settings so that the demo takes a few minutes on two CPU cores (the defaults are
# for quality). Values already in the environment win; a config file's do not.
export HEADCAST_FIT_RENDER_SIZE="${HEADCAST_FIT_RENDER_SIZE:-192}"
export HEADCAST_FIT_STEPS="${HEADCAST_FIT_STEPS:-300}"
export HEADCAST_FIT_CAMERA_STEPS="${HEADCAST_FIT_CAMERA_STEPS:-150}"
export HEADCAST_FIT_FIRST_FRAME_STEPS="${HEADCAST_FIT_FIRST_FRAME_STEPS:-200}"
export HEADCAST_FIT_ONLINE_STEPS="${HEADCAST_FIT_ONLINE_STEPS:-40}"
export HEADCAST_FIT_GLOBAL_EPOCHS="${HEADCAST_FIT_GLOBAL_EPOCHS:-2}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
CLIP_FRAMES="${HEADCAST_DEMO_FRAMES:-24}"

echo "[demo] writing the synthetic FLAME-format model (no FLAME licence needed)"
headcast synth-model "$OUT/model" --npz >/dev/null

echo "[demo] footage: the astronaut photo, and a ${CLIP_FRAMES}-frame clip rendered from the synthetic model"
"$PY" - "$OUT" "$CLIP_FRAMES" <<'EOF'
import sys
from pathlib import Path

import skimage.data

from headcast.flame import load_head_model
from headcast.synthetic_footage import render_synthetic_clip, write_image, write_video

out, n = Path(sys.argv[1]), int(sys.argv[2])
write_image(skimage.data.astronaut(), out / "astronaut.png")
clip = render_synthetic_clip(load_head_model(out / "model" / "head_model.npz"), n_frames=n, seed=3)
write_video(clip.frames, out / "clip.mp4", fps=25.0)
EOF

echo "[demo] which head model and mode the jobs use (your FLAME and Pixel3DMM weights when configured):"
"$PY" - <<'EOF'
from headcast.config import load_settings
from headcast.doctor import run_doctor

report = run_doctor(load_settings())
head = report.get("head_model")
if head:
    print(f"[demo]   model: {head['name']} ({head['licence']}), because: {head['why']}")
for problem in report["problems"]:
    print(f"[demo]   problem: {problem}")
print(f"[demo]   mode:  {report['mode']}")
print(f"[demo]   device: {report['device']}")
EOF

echo "[demo] reconstructing the astronaut photo"
headcast reconstruct "$OUT/astronaut.png" -o "$OUT/astronaut.headcast.npz"
echo "[demo] tracking the clip"
headcast track "$OUT/clip.mp4" -o "$OUT/clip.headcast.npz" --restart

echo "[demo] building the Blender scenes (bpy from $VENV) and a preview render of one frame"
"$PY" scripts/batch.py "$OUT/astronaut.headcast.npz" "$OUT/clip.headcast.npz" --out "$OUT" --preview \
  | grep -v -e "^EGL Error" -e "^Saved:" -e "^Time:" -e "^Info:" -e "^$" || true
test -f "$OUT/clip.blend" -a -f "$OUT/astronaut.blend" -a -f "$OUT/clip_preview.png"

echo "[demo] done. Open $OUT/clip.blend or $OUT/astronaut.blend in Blender 4.5 or later and press play:"
echo "[demo]   the camera view shows the rig over its footage. Preview of one frame: $OUT/clip_preview.png"
echo "[demo]   (and $OUT/astronaut_preview.png); report: $OUT/report.txt"
