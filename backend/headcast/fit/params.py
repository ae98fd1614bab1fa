# SPDX-License-Identifier: GPL-3.0-or-later
"""The optimised quantities and how they map to the model and the camera.

Per frame (rows of ``[N, ...]`` tensors): expression, eyelids, the non-root joint rotations
(6D, rows b1, b2 of the matrix as in :func:`headcast.flame.rotation_6d_to_matrix`), the head
rotation R (6D) and translation t, with ``x_cam = R @ v + t`` for the posed model-frame
vertices ``v`` (global joint kept at identity).

Shared: identity, and per camera (one for a clip, one per photo for unordered images) the
focal length and principal point, parameterised as

* ``focal = log(f / W)``: fx = fy = W * exp(focal). The log makes an Adam step a relative
  change, which is what matters for a focal length; f / W is resolution-independent.
* the per-frame translation's depth is stored relative to the focal length: the metric
  ``t_z = t[2] * exp(focal - focal_ref)``. Changing the focal then zooms and dollies
  together (the head keeps its size in the image and only the perspective changes), which
  decouples the weakly observed focal length from the well observed image size, so Adam can
  follow the focal's own (small but consistent) gradient. ``focal_ref`` is re-based whenever
  the focal is set directly.
* ``pp = (px, py)``: cx = W/2 * (1 + px), cy = H/2 * (1 + py), an offset from the image
  centre in units of the half size (0 = centred), in the renderer's pixel convention
  (pixel centres at +0.5, so the centre of the image is W/2).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..flame.lbs import matrix_to_rotation_6d, rotation_6d_to_matrix
from .head import FACING_CAMERA, FitHead

PER_FRAME = ("expr", "eyelids", "joints", "R", "t")
SHARED = ("shape", "focal", "pp")


def intrinsics_from(focal: torch.Tensor, pp: torch.Tensor, size: tuple[int, int]):
    """(fx, fy, cx, cy) tensors from the parameters (any leading batch shape)."""
    h, w = size
    f = w * torch.exp(focal)
    return f, f, 0.5 * w * (1.0 + pp[..., 0]), 0.5 * h * (1.0 + pp[..., 1])


def params_from_intrinsics(fx: float, cx: float, cy: float, size: tuple[int, int]) -> tuple[float, np.ndarray]:
    h, w = size
    return math.log(fx / w), np.array([2.0 * cx / w - 1.0, 2.0 * cy / h - 1.0])


class Params:
    """Leaf tensors of a fit over ``n_frames`` frames and ``n_cameras`` cameras."""

    def __init__(self, head: FitHead, n_frames: int, cam_index: np.ndarray | None = None,
                 init_focal: float = 4.5, init_distance: float = 1.0) -> None:
        dt = head.dtype
        self.head = head
        self.n_frames = n_frames
        self.cam_index = torch.zeros(n_frames, dtype=torch.long) if cam_index is None else \
            torch.as_tensor(cam_index, dtype=torch.long)
        n_cam = int(self.cam_index.max()) + 1 if n_frames else 1
        j = head.n_joints - 1
        self.expr = torch.zeros(n_frames, head.n_expr, dtype=dt)
        self.eyelids = torch.zeros(n_frames, 2, dtype=dt)
        eye6 = matrix_to_rotation_6d(torch.eye(3, dtype=dt))
        self.joints = eye6.expand(n_frames, j, 6).clone()
        self.R = matrix_to_rotation_6d(torch.as_tensor(FACING_CAMERA, dtype=dt)).expand(n_frames, 6).clone()
        self.t = torch.tensor([0.0, 0.0, init_distance], dtype=dt).expand(n_frames, 3).clone()
        mean = head.model.shape_mean
        self.shape = (torch.zeros(head.n_shape, dtype=dt) if mean is None
                      else torch.as_tensor(mean[:head.n_shape], dtype=dt).clone())
        self.focal = torch.full((n_cam,), math.log(init_focal), dtype=dt)
        self.pp = torch.zeros(n_cam, 2, dtype=dt)
        self.focal_ref = self.focal.detach().clone()
        for t in self.tensors().values():
            t.requires_grad_(True)

    # ---- access ----------------------------------------------------------------------------

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"expr": self.expr, "eyelids": self.eyelids, "joints": self.joints, "R": self.R, "t": self.t,
                "shape": self.shape, "focal": self.focal, "pp": self.pp}

    def rotations(self, rows: torch.Tensor) -> torch.Tensor:
        """Joint rotations ``[B, J, 3, 3]`` with the global joint at identity."""
        b = rows.shape[0]
        eye = torch.eye(3, dtype=self.joints.dtype).expand(b, 1, 3, 3)
        return torch.cat([eye, rotation_6d_to_matrix(self.joints[rows])], dim=1)

    def head_rotation(self, rows: torch.Tensor) -> torch.Tensor:
        return rotation_6d_to_matrix(self.R[rows])

    def translation(self, rows: torch.Tensor) -> torch.Tensor:
        """Metric head translations ``[B, 3]`` (see the focal-relative depth above)."""
        cam = self.cam_index[rows]
        zoom = torch.exp(self.focal[cam] - self.focal_ref[cam])
        t = self.t[rows]
        return torch.cat([t[:, :2], t[:, 2:] * zoom[:, None]], dim=1)

    @torch.no_grad()
    def set_translation(self, row: int, t_metric) -> None:
        cam = int(self.cam_index[row])
        zoom = float(torch.exp(self.focal[cam] - self.focal_ref[cam]))
        t = torch.as_tensor(t_metric, dtype=self.t.dtype).clone()
        t[2] = t[2] / zoom
        self.t[row] = t

    @torch.no_grad()
    def set_focal(self, cam: int, focal: float) -> None:
        """Set a camera's focal parameter keeping every frame's metric translation."""
        rows = torch.nonzero(self.cam_index == cam).squeeze(1)
        metric = self.translation(rows)
        self.focal[cam] = focal
        self.focal_ref[cam] = focal
        self.t[rows] = metric

    def intrinsics(self, rows: torch.Tensor, size: tuple[int, int]):
        cam = self.cam_index[rows]
        return intrinsics_from(self.focal[cam], self.pp[cam], size)

    # ---- bookkeeping -----------------------------------------------------------------------

    @torch.no_grad()
    def renormalize_rotations(self, rows: torch.Tensor | None = None) -> None:
        """Re-project 6D codes onto exact rotation rows so Adam's step size stays meaningful."""
        sel = slice(None) if rows is None else rows
        self.joints[sel] = matrix_to_rotation_6d(rotation_6d_to_matrix(self.joints[sel]))
        self.R[sel] = matrix_to_rotation_6d(rotation_6d_to_matrix(self.R[sel]))

    @torch.no_grad()
    def copy_frame(self, src: int, dst: int) -> None:
        for name in PER_FRAME:
            t = getattr(self, name)
            t[dst] = t[src]

    @torch.no_grad()
    def clamp_bounds(self) -> None:
        """Hard-project coefficients into the model's bounds (ARKit weights in [0, 1] etc.)."""
        m = self.head.model
        if m.expr_bounds is not None:
            b = torch.as_tensor(m.expr_bounds[:self.head.n_expr], dtype=self.expr.dtype)
            self.expr.copy_(torch.maximum(torch.minimum(self.expr, b[:, 1]), b[:, 0]))
        if m.shape_bounds is not None:
            b = torch.as_tensor(m.shape_bounds[:self.head.n_shape], dtype=self.shape.dtype)
            self.shape.copy_(torch.maximum(torch.minimum(self.shape, b[:, 1]), b[:, 0]))

    def joint_lr(self, lr: dict) -> torch.Tensor:
        """Per-joint learning rates ``[J-1, 1]`` for the joint tensor, by joint name."""
        names = self.head.model.joint_names[1:]
        key = {"neck": "neck", "jaw": "jaw", "eye_left": "eyes", "eye_right": "eyes"}
        vals = [lr[key.get(n, "jaw")] for n in names]
        return torch.tensor(vals, dtype=self.joints.dtype)[:, None]


class RowAdam:
    """Adam whose per-frame tensors are updated one set of rows at a time (lazy Adam).

    Rows outside the current batch keep their moments and step counts untouched, as with
    sparse embeddings, so a frame that is not in the batch does not drift on stale momentum.
    Shared tensors are updated whenever they are active. ``lr`` values may be tensors that
    broadcast against a row (per-element learning rates).
    """

    def __init__(self, tensors: dict[str, torch.Tensor], per_frame: tuple[str, ...], lr: dict,
                 betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.tensors = tensors
        self.per_frame = set(per_frame)
        self.base_lr = dict(lr)
        self.scale = 1.0
        self.b1, self.b2 = betas
        self.eps = eps
        self.m = {k: torch.zeros_like(t) for k, t in tensors.items()}
        self.v = {k: torch.zeros_like(t) for k, t in tensors.items()}
        self.count = {k: torch.zeros(t.shape[0] if k in self.per_frame else 1, dtype=t.dtype)
                      for k, t in tensors.items()}

    @torch.no_grad()
    def step(self, rows: torch.Tensor, active: set[str]) -> None:
        for name in active:
            p = self.tensors[name]
            g = p.grad
            if g is None:
                continue
            lr = self.base_lr[name] * self.scale
            if name in self.per_frame:
                m, v = self.m[name][rows], self.v[name][rows]
                gr = g[rows]
                c = self.count[name][rows] + 1
                self.count[name][rows] = c
                shape = (-1,) + (1,) * (p.dim() - 1)
                c = c.view(shape)
            else:
                m, v, gr = self.m[name], self.v[name], g
                self.count[name] += 1
                c = self.count[name]
            m = self.b1 * m + (1 - self.b1) * gr
            v = self.b2 * v + (1 - self.b2) * gr * gr
            mhat = m / (1 - self.b1 ** c)
            vhat = v / (1 - self.b2 ** c)
            upd = lr * mhat / (vhat.sqrt() + self.eps)
            if name in self.per_frame:
                self.m[name][rows], self.v[name][rows] = m, v
                p[rows] -= upd
            else:
                self.m[name], self.v[name] = m, v
                p -= upd

    @torch.no_grad()
    def copy_row_state(self, src: int, dst: int) -> None:
        """Start row ``dst`` with row ``src``'s moments and step count (warm-started frames).

        A fresh Adam moves every coordinate by about the learning rate in its first steps,
        whatever the gradient's size: on a frame that starts next to its solution that is pure
        noise (jitter), so tracked frames inherit their predecessor's optimiser state."""
        for name in self.per_frame:
            self.m[name][dst] = self.m[name][src]
            self.v[name][dst] = self.v[name][src]
            self.count[name][dst] = self.count[name][src]

    def zero_grad(self) -> None:
        for p in self.tensors.values():
            p.grad = None
