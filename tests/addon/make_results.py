# SPDX-License-Identifier: GPL-3.0-or-later
"""Write the result files, backend references and footage the Blender tests use.

Runs with the backend (torch) available: in-process from the fixtures when the test
interpreter has torch, otherwise as ``python make_results.py OUTDIR`` with the project's venv,
so the Blender tests also run under a bpy-only interpreter (e.g. a bpy 5.0 venv).

Files: ``clip.headcast.npz`` (30 frames from source frame 4, fy/fx = 0.98, footage path
relative), ``newer.headcast.npz`` (same rig name, 20 other frames, zooming camera), ``arkit.headcast.npz``
(ARKit-style names, expression bounds [0, 1]), ``<name>.reference.npz`` with the backend's
posed vertices (HeadLayer, float64) and pixel projections (headcast.render.project_points),
``footage.mp4`` (40 frames, 640x480, 25 fps), ``still.png`` and ``frames/0000{0,1,2}.png``.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
ARKIT_NAMES = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight",
    "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft",
    "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight", "tongueOut",
)


def _references(model, shape, frames) -> dict[str, np.ndarray]:
    import torch

    from headcast.flame import HeadLayer
    from headcast.render import project_points

    n = frames.expression.shape[0]
    layer = HeadLayer(model, n_shape=len(shape), n_expr=frames.expression.shape[1], dtype=torch.float64)
    lids = None if frames.eyelids is None else torch.as_tensor(frames.eyelids)
    with torch.no_grad():
        posed = layer(torch.as_tensor(shape).expand(n, -1), torch.as_tensor(frames.expression),
                      torch.as_tensor(frames.joint_rotations), None, lids).vertices
        rot, trans = torch.as_tensor(frames.head_rotation), torch.as_tensor(frames.head_translation)
        cam = (rot[:, None] @ posed[..., None])[..., 0] + trans[:, None]
        k = [torch.as_tensor(frames.intrinsics[:, i]) for i in range(4)]
        pixels = project_points(cam, *k)[..., :2]
    return {"posed": posed.numpy(), "pixels": pixels.numpy(), "frame_indices": np.asarray(frames.frame_indices)}


def _footage(out: Path) -> None:
    import cv2

    w, h = 640, 480
    writer = cv2.VideoWriter(str(out / "footage.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
    for i in range(40):
        img = np.full((h, w, 3), 40, np.uint8)
        cv2.putText(img, f"{i:02d}", (40, 120), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 5)
        writer.write(img)
    writer.release()
    still = np.zeros((h, w, 3), np.uint8)
    still[:, : w // 2] = (0, 0, 255)
    cv2.imwrite(str(out / "still.png"), still)
    (out / "frames").mkdir(exist_ok=True)
    for i in range(3):
        cv2.imwrite(str(out / "frames" / f"{i:05d}.png"), np.full((h, w, 3), 60 * i, np.uint8))


def write_fixtures(out: str | Path, model=None) -> Path:
    from headcast.flame.synthetic import build_synthetic_model
    from headcast.io import ClipInfo, write_result
    from headcast.io.synthetic import synthetic_frames, synthetic_shape

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else build_synthetic_model(seed=0)
    shape = synthetic_shape(model, seed=1)
    _footage(out)
    clip = ClipInfo(source_path="footage.mp4", image_size=(640, 480), fps=25.0, rig_name="clip",
                    network_weights={"uv": "synthetic", "normals": "synthetic"})
    cases = {
        "clip": (model, synthetic_frames(model, 30, seed=2, first_frame=4, aspect=0.98, invalid_every=9), clip),
        "newer": (model, synthetic_frames(model, 20, seed=3, first_frame=0, zoom=0.1), clip),
    }
    arkit = copy.copy(model)
    arkit.exprdirs = model.exprdirs[..., :52]
    arkit.expr_names = ARKIT_NAMES
    arkit.expr_bounds = np.tile([0.0, 1.0], (52, 1))
    arkit_frames = synthetic_frames(arkit, 10, seed=4)
    arkit_frames.expression = np.clip(np.abs(arkit_frames.expression), 0.0, 1.0)
    cases["arkit"] = (arkit, arkit_frames, ClipInfo("still.png", (640, 480), 1.0, rig_name="arkit"))
    for name, (mdl, frames, info) in cases.items():
        write_result(out / f"{name}.headcast.npz", mdl, shape, frames, info)
        np.savez(out / f"{name}.reference.npz", **_references(mdl, shape, frames))
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "backend"))
    print(write_fixtures(sys.argv[1]))
