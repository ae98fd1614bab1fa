# SPDX-License-Identifier: GPL-3.0-or-later
"""Camera initialisation: a head pose (and focal length) before the full energy runs.

Ours instead of Pixel3DMM's 500 Adam steps on landmarks then uv: the nearest-uv
correspondences and the landmarks are already 2-D/3-D pairs on the mean head, so a robust
PnP (OpenCV's RANSAC + iterative refinement) solved for a few candidate focal lengths gives
the pose directly; a short robust Adam refinement (no rendering) then adjusts pose and focal.
Without any point cue, the face mask's centroid and area place the head instead.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from ..flame.lbs import matrix_to_rotation_6d
from ..render import project_points, rasterize
from .energy import PreparedFrame
from .head import FACING_CAMERA, FitHead
from .params import Params


def rest_vertices(head: FitHead, params: Params) -> np.ndarray:
    """Model-frame vertices of the current identity at rest (float64 numpy)."""
    with torch.no_grad():
        rots = torch.eye(3, dtype=head.dtype).expand(1, head.n_joints, 3, 3)
        eyelids = torch.zeros(1, 2, dtype=head.dtype) if head.has_eyelids else None
        v, _ = head.forward(params.shape[None], torch.zeros(1, head.n_expr, dtype=head.dtype), eyelids, rots)
    return v[0].double().numpy()


def point_pairs(head: FitHead, frame: PreparedFrame, verts: np.ndarray):
    """(3-D model points (P, 3), 2-D pixel targets (P, 2)) from correspondences and landmarks."""
    p3, p2 = [], []
    if frame.corr_ids is not None and len(frame.corr_ids):
        p3.append(verts[frame.corr_ids.numpy()])
        p2.append(frame.corr_target.double().numpy())
    vt = torch.as_tensor(verts)[None]
    eye = torch.eye(3, dtype=torch.float64).expand(1, head.n_joints, 3, 3)
    for pl in frame.landmarks:
        w = pl.weights.numpy() > 0
        if pl.kind == "ibug68":
            w &= np.asarray(pl.data) >= 17  # the contour depends on the unknown yaw: skip it here
            if not w.any():
                continue
        layer_dtype = head.layer.v_template.dtype
        pts = head.landmark_points(pl.kind, pl.data, vt.to(layer_dtype), eye.to(layer_dtype))[0].double().numpy()
        p3.append(pts[w])
        p2.append(pl.points.double().numpy()[w])
    if not p3:
        return np.zeros((0, 3)), np.zeros((0, 2))
    return np.concatenate(p3), np.concatenate(p2)


def pnp_pose(p3: np.ndarray, p2: np.ndarray, size: tuple[int, int], focal_candidates, width: float):
    """Best (R, t, f) over the candidate focal lengths (pixels), or None if PnP fails."""
    h, w = size
    best = None
    obj = np.ascontiguousarray(p3, dtype=np.float64)
    img = np.ascontiguousarray(p2 - 0.5, dtype=np.float64)  # OpenCV pixel centres are integers
    for f in focal_candidates:
        K = np.array([[f, 0, w / 2 - 0.5], [0, f, h / 2 - 0.5], [0, 0, 1.0]])
        rvec0, _ = cv2.Rodrigues(FACING_CAMERA)
        tvec0 = np.array([[0.0], [0.0], [f / width * 0.22]])  # any guess in front of the camera
        try:
            ok, rvec, tvec, inliers = cv2.solvePnPRansac(
                obj, img, K, None, rvec0.copy(), tvec0.copy(), useExtrinsicGuess=False, iterationsCount=200,
                reprojectionError=max(3.0, 0.02 * width), confidence=0.999, flags=cv2.SOLVEPNP_EPNP)
        except cv2.error:
            continue
        if not ok or inliers is None or len(inliers) < 6:
            continue
        idx = inliers[:, 0]
        ok, rvec, tvec = cv2.solvePnP(obj[idx], img[idx], K, None, rvec, tvec, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok or tvec[2, 0] <= 0:
            continue
        proj, _ = cv2.projectPoints(obj, rvec, tvec, K, None)
        err = np.linalg.norm(proj[:, 0] - img, axis=1)
        # robust score over all points: inlier count first, then their error
        inl = err < max(3.0, 0.02 * width)
        score = (-inl.sum(), float(np.mean(err[inl])) if inl.any() else np.inf)
        if best is None or score < best[0]:
            R, _ = cv2.Rodrigues(rvec)
            best = (score, R, tvec[:, 0], f)
    return None if best is None else best[1:]


@torch.no_grad()
def place_from_mask(head: FitHead, params: Params, row: int, mask: np.ndarray, size: tuple[int, int]) -> None:
    """Move the head so the rendered face region matches the mask's centroid and area."""
    h, w = size
    target = mask > 0.5
    if target.sum() < 10:
        return
    rows = torch.tensor([row])
    verts, _ = head.forward(params.shape[None], params.expr[rows],
                            params.eyelids[rows] if head.has_eyelids else None, params.rotations(rows))
    for _ in range(2):  # second pass corrects the perspective of the first
        R = params.head_rotation(rows)
        vcam = verts @ R.transpose(1, 2) + params.translation(rows)[:, None]
        fx, fy, cx, cy = params.intrinsics(rows, size)
        screen = project_points(vcam, fx, fy, cx, cy)
        rast = rasterize(screen, head.faces, (h, w), cull_backfaces=True)
        ids = rast.face_id[0]
        region = (head.sil_face[ids.clamp_min(0)] > 0.5) & (ids >= 0)
        if region.sum() < 10:
            return
        ys, xs = np.nonzero(target)
        ry, rx = np.nonzero(region.numpy())
        scale = math.sqrt(len(rx) / len(xs))
        t = params.translation(rows)[0].clone()
        z_new = float(t[2]) * scale
        f = float(fx[0])
        # shift so the centroids agree (at the new depth)
        dx = (xs.mean() - rx.mean()) / f * z_new
        dy = (ys.mean() - ry.mean()) / f * z_new
        params.set_translation(row, [float(t[0]) * scale + dx, float(t[1]) * scale + dy, z_new])


@torch.no_grad()
def set_pose(params: Params, row: int, R: np.ndarray, t: np.ndarray) -> None:
    dt = params.R.dtype
    params.R[row] = matrix_to_rotation_6d(torch.as_tensor(R, dtype=dt))
    params.set_translation(row, t)
