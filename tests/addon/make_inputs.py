# SPDX-License-Identifier: GPL-3.0-or-later
"""Footage for the add-on's job tests: ``astronaut.png`` (a real photo), ``wall.png`` (no face),
``clip.mp4`` (6 frames rendered from the synthetic model, 640x480, 25 fps) and ``broken.mp4``
(not a video).

Runs with the backend (torch) available: in-process from the fixtures when the test
interpreter has torch, otherwise as ``python make_inputs.py OUTDIR`` with the project's venv.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CLIP_FRAMES = 6


def write_inputs(out: str | Path, model=None) -> Path:
    import skimage.data

    from headcast.flame.synthetic import build_synthetic_model
    from headcast.synthetic_footage import render_synthetic_clip, write_image, write_video

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    photo = skimage.data.astronaut()
    write_image(photo, out / "astronaut.png")
    write_image(np.ascontiguousarray(photo[:, ::-1]), out / "astronaut_mirrored.png")
    write_image(np.full((200, 300, 3), 128, np.uint8), out / "wall.png")
    model = model if model is not None else build_synthetic_model(seed=0)
    clip = render_synthetic_clip(model, n_frames=CLIP_FRAMES, seed=3)
    write_video(clip.frames, out / "clip.mp4", fps=25.0)
    (out / "broken.mp4").write_bytes(b"\x00\x01 definitely not a video" * 100)
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "backend"))
    print(write_inputs(sys.argv[1]))
