# SPDX-License-Identifier: GPL-3.0-or-later
"""Footage rendered from a head model: a face MediaPipe finds, moving the way a head moves.

Used by the demo (a clip to track without any real footage) and by the end-to-end tests.
The renders are shaded and painted like the landmark-embedding renders (skin, lips, irises),
so MediaPipe detects them as faces.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .flame import HeadLayer, HeadModel, axis_angle_to_matrix


@dataclass
class SyntheticClip:
    frames: np.ndarray  # [N, H, W, 3] uint8 RGB
    jaw: np.ndarray  # [N] jaw opening (rad)
    neck: np.ndarray  # [N, 3] neck axis-angle
    offsets: np.ndarray  # [N, 2] top-left corner of the head render in the frame (px)


def render_synthetic_clip(model: HeadModel, n_frames: int = 12, frame_size: tuple[int, int] = (480, 640),
                          head_px: int = 320, seed: int = 0) -> SyntheticClip:
    """A clip of the neutral identity turning, nodding and opening the jaw smoothly."""
    from .priors.embedding import render_template, template_camera

    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, n_frames)
    phase = rng.uniform(0, 2 * np.pi, size=4)
    yaw = 0.25 * np.sin(2 * np.pi * t + phase[0])
    pitch = 0.12 * np.sin(2 * np.pi * t + phase[1])
    jaw = 0.12 * (1 + np.sin(2 * np.pi * 1.5 * t + phase[2]))
    layer = HeadLayer(model, n_shape=0, n_expr=1, dtype=torch.float64)
    aa = np.zeros((n_frames, model.n_joints, 3))
    aa[:, 1, 0], aa[:, 1, 1] = pitch, yaw
    aa[:, 2, 0] = jaw
    with torch.no_grad():
        verts = layer(None, torch.zeros(n_frames, 1, dtype=torch.float64),
                      axis_angle_to_matrix(torch.tensor(aa))).vertices.numpy()
    camera = template_camera(model, 0.0, 0.0, head_px)
    H, W = frame_size
    frames = np.full((n_frames, H, W, 3), 77, np.uint8)
    drift = np.stack([40 * np.sin(2 * np.pi * t + phase[3]), 20 * np.cos(2 * np.pi * t + phase[3])], axis=1)
    offsets = np.round(np.array([(W - head_px) / 2, (H - head_px) / 2]) + drift).astype(int)
    for i in range(n_frames):
        img = render_template(model, camera, vertices=verts[i]).image
        x, y = offsets[i]
        frames[i, y:y + head_px, x:x + head_px] = img
    return SyntheticClip(frames=frames, jaw=jaw, neck=aa[:, 1], offsets=offsets.astype(np.float64))


def write_video(frames: np.ndarray, path: str | Path, fps: float = 25.0) -> Path:
    """Write RGB frames as an mp4 (OpenCV's mp4v codec, readable by OpenCV and Blender)."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write mp4 video here")
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path


def write_image(frame: np.ndarray, path: str | Path) -> Path:
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.ascontiguousarray(frame[..., ::-1]))
    return path
