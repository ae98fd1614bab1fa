# SPDX-License-Identifier: GPL-3.0-or-later
"""Smooth error fields of per-pixel cues, estimated from the fit's residuals.

A normal network errs smoothly: its error at one pixel is much like its neighbours' (a
low-frequency bias of several degrees), on top of independent noise. A loss that takes every
pixel's error as independent lets that bias bend the face, since in one image a smooth
normal error looks like a differently shaped face. Estimating the smooth part of the residual
and leaving it out of the loss makes the normal term judge only what the bias cannot explain.

The estimate is a robust normalised convolution: the residuals of the inlier pixels, blurred
with a Gaussian, divided by the blurred inlier weights (plus ``lam``, which shrinks the field
toward zero where few inliers support it: at the face's border, next to masked regions).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_kernel(sigma: float, dtype=torch.float32) -> torch.Tensor:
    """A normalised 1-D Gaussian, truncated at 3 sigma."""
    rad = max(1, int(3 * sigma + 0.5))  # as scipy.ndimage rounds it
    x = torch.arange(-rad, rad + 1, dtype=dtype)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``img`` [B, C, H, W] with ``sigma`` in pixels, zero outside.

    Wide kernels are applied on a grid average-pooled by ``k = sigma // 3`` and upsampled
    bilinearly: the result is smooth at that scale anyway, and the pooled blur costs about
    k^3 times less (at 256 px and sigma 12: 4x pooling, 19 taps instead of 73)."""
    h0, w0 = img.shape[-2:]
    k = max(1, int(sigma // 3))
    if k > 1:
        img = F.avg_pool2d(img, k, ceil_mode=True)
        sigma = sigma / k
    b, c, h, w = img.shape
    g = gaussian_kernel(sigma, img.dtype)
    rad = (len(g) - 1) // 2
    x = img.reshape(b * c, 1, h, w)
    x = F.conv2d(x, g.view(1, 1, 1, -1), padding=(0, rad))
    x = F.conv2d(x, g.view(1, 1, -1, 1), padding=(rad, 0)).view(b, c, h, w)
    if k > 1:
        x = F.interpolate(x, scale_factor=k, mode="bilinear", align_corners=False)[..., :h0, :w0]
    return x


def blur_at_pixels(values: torch.Tensor, pixel_index: torch.Tensor, shape: tuple[int, int, int],
                   sigma: float) -> torch.Tensor:
    """Per-pixel ``values`` [N, C] at flat pixel indices ``pixel_index`` [N] placed into images
    of ``shape`` = (B, H, W) (zero elsewhere), blurred (:func:`gaussian_blur`) and read back at
    the same pixels; [N, C]."""
    b, h, w = shape
    c = values.shape[1]
    img = values.new_zeros(b * h * w, c).index_put((pixel_index,), values)
    img = gaussian_blur(img.view(b, h, w, c).permute(0, 3, 1, 2), sigma)
    return img.permute(0, 2, 3, 1).reshape(b * h * w, c)[pixel_index]


@torch.no_grad()
def smooth_field(values: torch.Tensor, weights: torch.Tensor, pixel_index: torch.Tensor,
                 shape: tuple[int, int, int], sigma: float, lam: float) -> torch.Tensor:
    """Normalised convolution of per-pixel ``values`` [N, C] with ``weights`` [N] (0 for
    outliers) at flat pixel indices ``pixel_index`` [N] into images of ``shape`` = (B, H, W):
    blur(w * v) / (blur(w) + lam), read back at the same pixels; [N, C]."""
    c = values.shape[1]
    img = blur_at_pixels(torch.cat([values * weights[:, None], weights[:, None]], 1), pixel_index, shape, sigma)
    return img[:, :c] / (img[:, c:] + lam)


def iterated_smooth_field(values: torch.Tensor, weights: torch.Tensor, pixel_index: torch.Tensor,
                          shape: tuple[int, int, int], sigma: float, lam: float, passes: int) -> torch.Tensor:
    """``passes`` rounds of :func:`smooth_field`, each smoothing what the rounds before left
    ("twicing" repeated), summed: the smooth part S = 1 - (1 - G)^passes of ``values`` in the
    frequency terms of one Gaussian G. More rounds flatten S's top (it keeps more of a smooth
    field) and steepen its shoulder; [N, C]. Each round blurs the weights again with the
    values, as :func:`smooth_field` does, so that two rounds repeat the earlier twicing bit for bit."""
    total = torch.zeros_like(values)
    for _ in range(max(1, int(passes))):
        part = smooth_field(values - total, weights, pixel_index, shape, sigma, lam)
        total = total + part
    return total
