# SPDX-License-Identifier: GPL-3.0-or-later
"""Smooth random per-frame parameters, for tests, benchmarks and demos of the result file.

They imitate a tracked clip: a face seen roughly frontally by a fixed pinhole camera, talking
(expression and jaw), turning a little, blinking and looking around.
"""
from __future__ import annotations

import numpy as np

from ..flame.headmodel import HeadModel
from .writer import FrameParameters


def axis_angle_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues' formula in numpy, ``[..., 3] -> [..., 3, 3]``."""
    aa = np.asarray(axis_angle, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    axis = aa / np.where(angle > 0, angle, 1.0)
    x, y, z = np.moveaxis(axis, -1, 0)
    zero = np.zeros_like(x)
    skew = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(aa.shape[:-1] + (3, 3))
    s, c = np.sin(angle)[..., None], np.cos(angle)[..., None]
    return np.eye(3) + s * skew + (1.0 - c) * (skew @ skew)


def _smooth(rng: np.random.Generator, n: int, dims: int, scale, n_waves: int = 3) -> np.ndarray:
    """Sums of a few random sinusoids over the frames, ``(n, dims)``, roughly ``scale`` in size."""
    t = np.arange(n, dtype=np.float64)[:, None]
    out = np.zeros((n, dims))
    for _ in range(n_waves):
        freq = rng.uniform(0.02, 0.15, size=dims)
        phase = rng.uniform(0, 2 * np.pi, size=dims)
        out += np.sin(t * freq + phase)
    return out * (np.asarray(scale) / np.sqrt(n_waves))


def synthetic_shape(model: HeadModel, seed: int = 0, n_shape: int = 100) -> np.ndarray:
    """Identity coefficients ~ N(0, 1) for the first ``n_shape`` components."""
    return np.random.default_rng(seed).normal(size=min(n_shape, model.shapedirs.shape[2]))


def synthetic_frames(model: HeadModel, n_frames: int, seed: int = 0, n_expr: int | None = None,
                     image_size: tuple[int, int] = (640, 480), aspect: float = 1.0, first_frame: int = 0,
                     invalid_every: int = 0, zoom: float = 0.0) -> FrameParameters:
    """``n_frames`` of smooth parameters.

    ``aspect`` = fy / fx; every ``invalid_every``-th frame is flagged invalid; ``zoom`` > 0 makes
    the focal length vary by about that fraction over the clip and the principal point drift.
    """
    rng = np.random.default_rng(seed)
    n_e = model.exprdirs.shape[2] if n_expr is None else n_expr
    n_j = model.n_joints
    w, h = image_size
    expression = _smooth(rng, n_frames, n_e, 1.0)
    aa = np.zeros((n_frames, n_j, 3))
    names = list(model.joint_names)
    if "neck" in names:
        aa[:, names.index("neck")] = _smooth(rng, n_frames, 3, [0.15, 0.25, 0.08])
    if "jaw" in names:
        jaw = _smooth(rng, n_frames, 3, [0.12, 0.02, 0.02])
        jaw[:, 0] = np.abs(jaw[:, 0]) + 0.02  # the jaw opens, it does not bend backwards
        aa[:, names.index("jaw")] = jaw
    for eye in ("eye_left", "eye_right"):
        if eye in names:
            aa[:, names.index(eye)] = _smooth(rng, n_frames, 3, [0.15, 0.2, 0.0])
    rotations = axis_angle_matrix(aa)
    rotations[:, 0] = np.eye(3)  # the head transform carries the global motion
    # Frontal view: model +y up -> camera -y (image up), model +z (face) -> camera -z (toward the lens).
    frontal = np.diag([1.0, -1.0, -1.0])
    head_rot = np.einsum("nab,bc->nac", axis_angle_matrix(_smooth(rng, n_frames, 3, [0.2, 0.45, 0.1])), frontal)
    head_t = np.array([0.01, 0.01, 0.75]) + _smooth(rng, n_frames, 3, [0.02, 0.015, 0.05])
    fx = 1.3 * w
    intr = np.tile([fx, fx * aspect, w / 2 + 0.031 * w, h / 2 - 0.027 * h], (n_frames, 1))
    if zoom:
        scale = 1.0 + _smooth(rng, n_frames, 1, zoom)[:, 0]
        intr[:, :2] *= scale[:, None]
        intr[:, 2:] += _smooth(rng, n_frames, 2, [zoom * w * 0.1, zoom * h * 0.1])
    eyelids = np.clip(_smooth(rng, n_frames, 2, 0.5) + 0.2, 0.0, 1.0) if model.eyelids is not None else None
    valid = np.ones(n_frames, dtype=bool)
    if invalid_every:
        valid[invalid_every - 1::invalid_every] = False
    losses = rng.uniform(0.01, 0.05, size=n_frames)
    losses[~valid] = np.nan
    side = 0.6 * min(w, h)
    box = [w / 2 - side / 2, h / 2 - side / 2, w / 2 + side / 2, h / 2 + side / 2]
    return FrameParameters(
        frame_indices=np.arange(first_frame, first_frame + n_frames), expression=expression,
        joint_rotations=rotations, head_rotation=head_rot, head_translation=head_t, intrinsics=intr,
        eyelids=eyelids, crop_boxes=np.tile(box, (n_frames, 1)), losses=losses, valid=valid)
