# SPDX-License-Identifier: GPL-3.0-or-later
"""Pinhole projection from camera space to the renderer's pixel space."""
from __future__ import annotations

import torch


def _per_batch(value, batch: int, like: torch.Tensor) -> torch.Tensor:
    """A scalar, [B] or [B, 1] intrinsic as a tensor that broadcasts against [B, V]."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        return t
    t = t.reshape(-1, 1)
    if t.shape[0] not in (1, batch):
        raise ValueError(f"intrinsic has {t.shape[0]} values for a batch of {batch}")
    return t


def project_points(verts_cam: torch.Tensor, fx, fy, cx, cy) -> torch.Tensor:
    """Project camera-space points [B, V, 3] to screen space [B, V, 3] = (x_px, y_px, z).

    Camera convention (OpenCV): x right, y down, z forward; points in front have z > 0.
    Pixel convention: x right, y down, pixel (ix, iy) has its centre at (ix + 0.5, iy + 0.5),
    so the image centre is (W/2, H/2). For an OpenCV intrinsic matrix (pixel centres at
    integers) pass ``cx = K[0, 2] + 0.5`` and ``cy = K[1, 2] + 0.5``.
    fx, fy, cx, cy: floats or tensors of shape [B] / [B, 1] (per batch item).
    The third output is the camera depth z, which the rasterizer uses for perspective
    correction and the depth buffer. Differentiable w.r.t. points and intrinsics.
    """
    if verts_cam.dim() != 3 or verts_cam.shape[-1] != 3:
        raise ValueError(f"verts_cam must be [B, V, 3], got {tuple(verts_cam.shape)}")
    B = verts_cam.shape[0]
    x, y, z = verts_cam.unbind(-1)
    inv_z = 1.0 / z
    u = _per_batch(fx, B, verts_cam) * x * inv_z + _per_batch(cx, B, verts_cam)
    v = _per_batch(fy, B, verts_cam) * y * inv_z + _per_batch(cy, B, verts_cam)
    return torch.stack((u, v, z), -1)
