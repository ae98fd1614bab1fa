# SPDX-License-Identifier: GPL-3.0-or-later
"""The loss terms of the fitting energy, as small pure functions of tensors.

All return one value per batch item (``[B]``) so the solvers can report per-frame losses and
stop early per frame. Image-space residuals are divided by the image width ``S``; dense terms
are averaged over all ``H * W`` pixels (and channels), masked pixels counting as zero, as in
Pixel3DMM, so a weight does not change meaning when the face covers more or less of the frame.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def uv_vertex_loss(proj_px: torch.Tensor, target_px: torch.Tensor, valid: torch.Tensor, width: float,
                   dist_px: float | None) -> torch.Tensor:
    """2-D vertex loss: mean squared (projection - nearest-uv pixel) / S over inlier vertices.

    proj_px, target_px: [B, M, 2]; valid: [B, M] (has a correspondence and is visible);
    dist_px: pixel-distance outlier cut on the L1 residual (None: no cut). Mean over the
    inlier vertices and both coordinates.
    """
    diff = (proj_px - target_px) / width
    keep = valid.to(diff.dtype)
    if dist_px is not None:
        keep = keep * ((proj_px - target_px).detach().abs().sum(-1) < dist_px).to(diff.dtype)
    count = keep.sum(1).clamp_min(1.0)
    return (diff.pow(2).sum(-1) * keep).sum(1) / (2.0 * count)


def vertex_normal_loss(n_vertex: torch.Tensor, n_target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Head-frame vertex normals against the normal cue at each vertex's uv correspondence:
    mean over the valid vertices and 3 channels of the squared difference.

    n_vertex, n_target: [B, M, 3]; valid: [B, M]."""
    d = (n_vertex - n_target).pow(2).sum(-1) * valid
    return d.sum(1) / (3.0 * valid.sum(1).clamp_min(1.0))


def robust_vertex_loss(proj_px: torch.Tensor, target_px: torch.Tensor, valid: torch.Tensor, width: float,
                       scale_px: float) -> torch.Tensor:
    """Cauchy-robust version of :func:`uv_vertex_loss` for the camera initialisation, where the
    fit is still far off and a hard pixel cut would drop everything: rho(r) = s^2 log(1 + r^2/s^2)."""
    r2 = (proj_px - target_px).pow(2).sum(-1)
    s2 = scale_px ** 2
    rho = s2 * torch.log1p(r2 / s2) / width ** 2
    keep = valid.to(r2.dtype)
    return (rho * keep).sum(1) / (2.0 * keep.sum(1).clamp_min(1.0))


def per_frame_sum(values: torch.Tensor, batch: torch.Tensor, n_batch: int) -> torch.Tensor:
    """Sum of per-pixel ``values`` [N] into their frames ``batch`` [N] -> [n_batch]."""
    return values.new_zeros(n_batch).index_add(0, batch, values)


def uv_dense_loss(uv_render: torch.Tensor, uv_target: torch.Tensor, mask: torch.Tensor, batch: torch.Tensor,
                  n_batch: int, n_pixels: int, delta: float | None = None) -> torch.Tensor:
    """Dense uv loss: mean over all pixels of the image and both channels of
    mask * (rendered uv - predicted uv)^2.

    Inputs are the covered pixels only: uv_render, uv_target [N, 2], mask [N] (predicted uv
    valid), batch [N] frame of each pixel; n_pixels = H * W (uncovered pixels count as zero);
    delta: pixels whose uv distance exceeds it are outliers (chart borders) and dropped.
    """
    d = (uv_render - uv_target).pow(2).sum(-1) * mask
    if delta is not None:
        d = d * (d.detach() < delta * delta).to(d.dtype)
    return per_frame_sum(d, batch, n_batch) / (2.0 * n_pixels)


def normal_loss(n_render: torch.Tensor, n_target: torch.Tensor, mask: torch.Tensor, delta: float | None,
                batch: torch.Tensor, n_batch: int, n_pixels: int, huber: float = 0.0) -> torch.Tensor:
    """L1 of head-frame normals, mean over all pixels of the image and the 3 channels.

    Covered pixels only: n_render, n_target [N, 3]; mask [N] (cue valid, not an eye);
    delta: a pixel whose mean absolute difference exceeds it is an outlier and dropped.
    """
    diff = (n_target - n_render).abs()
    keep = mask
    if delta is not None:
        keep = keep * (diff.detach().mean(-1) < delta).to(diff.dtype)
    if huber > 0:
        diff = torch.where(diff < huber, diff * diff / (2 * huber), diff - huber / 2)
    return per_frame_sum(diff.sum(-1) * keep, batch, n_batch) / (3.0 * n_pixels)


def silhouette_loss(coverage: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean over pixels of valid * |target mask - rendered (antialiased) coverage|; [B, H, W]."""
    d = (target - coverage).abs()
    if valid is not None:
        d = d * valid
    return d.flatten(1).sum(1) / target[0].numel()


def landmark_loss(pred_px: torch.Tensor, target_px: torch.Tensor, weights: torch.Tensor, width: float) -> torch.Tensor:
    """Weighted mean squared landmark error in units of the image width; [B, L, 2], weights [B, L].

    Averaged over the points that are present (weight > 0) and both coordinates."""
    d = ((pred_px - target_px) / width).pow(2).sum(-1)
    present = (weights > 0).to(d.dtype).sum(1).clamp_min(1.0)
    return (d * weights).sum(1) / (2.0 * present)


def lid_loss(pred_px: torch.Tensor, target_px: torch.Tensor, weights: torch.Tensor, pairs: torch.Tensor,
             width: float) -> torch.Tensor:
    """Eyelid closure: the gap vector between upper and lower lid points must match.

    pairs: [P, 2] (upper, lower) rows; a pair counts only when both points are present."""
    up, lo = pairs[:, 0], pairs[:, 1]
    gap_pred = pred_px[:, up] - pred_px[:, lo]
    gap_target = target_px[:, up] - target_px[:, lo]
    w = torch.minimum(weights[:, up], weights[:, lo])
    d = ((gap_pred - gap_target) / width).pow(2).sum(-1)
    present = (w > 0).to(d.dtype).sum(1).clamp_min(1.0)
    return (d * w).sum(1) / (2.0 * present)


def rotation_to_identity(d6: torch.Tensor) -> torch.Tensor:
    """Sum of squared differences of 6D codes ``[B, ..., 6]`` from the identity's code; [B]."""
    eye = d6.new_tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    return (d6 - eye).pow(2).flatten(1).sum(1)


def squared_norm(x: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of squares of each row of ``x`` [B, K] (minus ``centre``)."""
    if centre is not None:
        x = x - centre
    return x.pow(2).flatten(1).sum(1)


def bound_violation(x: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """Sum of squared distances outside [low, high] per row; x [B, K], bounds [K, 2]; [B]."""
    below = F.relu(bounds[:, 0] - x)
    above = F.relu(x - bounds[:, 1])
    return (below.pow(2) + above.pow(2)).flatten(1).sum(1)


def smoothness_loss(x: torch.Tensor, prev: torch.Tensor, pair_weight: torch.Tensor) -> torch.Tensor:
    """Squared first differences: sum over coordinates of (x - prev)^2 times a per-pair weight.

    x, prev: [P, ...] (prev may be detached: a neighbour outside the batch); [P]."""
    return (x - prev).pow(2).flatten(1).sum(1) * pair_weight
