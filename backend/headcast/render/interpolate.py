# SPDX-License-Identifier: GPL-3.0-or-later
"""Barycentric interpolation of vertex attributes into the covered pixels."""
from __future__ import annotations

import torch

from . import numba_kernels
from .raster import Raster
from .triangles import gather_rows


class _InterpolateFunction(torch.autograd.Function):
    """``out[pix_n] = sum_k bary[n, k] * attr[corner(n, k)]`` with a fused backward.

    ``corner(n, k) = faces[pixel_face[n], k] + batch(n) * batch_stride`` (stride 0 for
    attributes shared by the batch). Gradients go to the attributes (accumulated per row) and
    to the barycentrics (and through them to the vertex positions). The numba path can also
    normalise each interpolated vector in the same pass (rendered normals).
    """

    @staticmethod
    def forward(ctx, attr_flat, bary, faces, pixel_index, pixel_face, pixel_xyb,
                batch_stride, n_pixels, use_numba, normalize, eps):
        C = attr_flat.shape[1]
        if use_numba:
            out = torch.empty(n_pixels, C, dtype=attr_flat.dtype)  # the kernel zero-fills
            lengths = torch.empty(pixel_index.shape[0] if normalize else 0, dtype=torch.float64)
            numba_kernels.interp_forward(attr_flat.detach().numpy(), bary.detach().numpy(),
                                         faces.numpy(), pixel_index.numpy(),
                                         pixel_face.numpy(), pixel_xyb.numpy(), batch_stride,
                                         normalize, eps, out.numpy(), lengths.numpy())
            ctx.save_for_backward(attr_flat, bary, faces, pixel_index, pixel_face, pixel_xyb,
                                  out, lengths)
        else:
            assert not normalize
            corner_index = _corner_rows(faces, pixel_face, pixel_xyb, batch_stride)
            values = torch.einsum("nk,nkc->nc", bary, gather_rows(attr_flat, corner_index))
            out = attr_flat.new_zeros(n_pixels, C)
            out.index_copy_(0, pixel_index, values)
            ctx.save_for_backward(attr_flat, bary, faces, pixel_index, pixel_face, pixel_xyb)
        ctx.meta = (batch_stride, use_numba, normalize, eps)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        batch_stride, use_numba, normalize, eps = ctx.meta
        need_attr, need_bary = ctx.needs_input_grad[:2]
        grad_attr = grad_bary = None
        if use_numba:
            (attr_flat, bary, faces, pixel_index, pixel_face, pixel_xyb, out,
             lengths) = ctx.saved_tensors
            grad = torch.zeros(attr_flat.shape if need_attr else (0, 0), dtype=torch.float64)
            grad_bary = torch.empty(bary.shape if need_bary else (0, 3), dtype=bary.dtype)
            numba_kernels.interp_backward(
                attr_flat.detach().numpy(), bary.detach().numpy(), faces.numpy(),
                pixel_index.numpy(), pixel_face.numpy(), pixel_xyb.numpy(), batch_stride,
                normalize, eps, out.numpy(), lengths.numpy(), grad_out.contiguous().numpy(),
                need_attr, need_bary, grad.numpy(), grad_bary.numpy())
            grad_attr = grad.to(attr_flat.dtype) if need_attr else None
            grad_bary = grad_bary if need_bary else None
        else:
            attr_flat, bary, faces, pixel_index, pixel_face, pixel_xyb = ctx.saved_tensors
            corner_index = _corner_rows(faces, pixel_face, pixel_xyb, batch_stride)
            grad = grad_out.index_select(0, pixel_index)  # [N, C]
            if need_attr:
                contrib = bary[:, :, None] * grad[:, None, :]  # [N, 3, C]
                grad_attr = torch.zeros_like(attr_flat)
                grad_attr.index_add_(0, corner_index.reshape(-1),
                                     contrib.reshape(-1, grad.shape[1]))
            if need_bary:
                grad_bary = torch.einsum("nkc,nc->nk", gather_rows(attr_flat, corner_index),
                                         grad)
        return grad_attr, grad_bary, None, None, None, None, None, None, None, None, None


def _corner_rows(faces, pixel_face, pixel_xyb, batch_stride):
    rows = gather_rows(faces, pixel_face)
    if batch_stride:
        rows = rows + (pixel_xyb[:, 2].long() * batch_stride)[:, None]
    return rows


def interpolate(attr: torch.Tensor, raster: Raster, faces: torch.Tensor,
                normalize: bool = False, eps: float = 1e-8) -> torch.Tensor:
    """Interpolate per-vertex attributes over the covered pixels; zero where empty.

    attr: [B, T, C], [1, T, C] or [T, C] (shared by the batch).
    faces: [F, 3] indices into attr's T axis for every face of the rasterized mesh: the
        mesh's own faces, or a separate index set such as FLAME's uv faces (``faces_uv`` into
        ``uv[T, 2]``).
    normalize: divide each interpolated vector by its length (``max(length, eps)``), e.g.
        for rendered normals; fused into the same pass on the numba backend.
    Returns [B, H, W, C], differentiable w.r.t. ``attr`` and (through the barycentrics)
    the vertex positions given to :func:`rasterize`.
    """
    B = raster.batch_size
    H, W = raster.resolution
    faces = faces.to(device=attr.device, dtype=torch.int64)
    if attr.dim() == 2:
        attr = attr.unsqueeze(0)
    if attr.dim() != 3 or attr.shape[0] not in (1, B):
        raise ValueError(f"attr must be [B, T, C], [1, T, C] or [T, C]; got {tuple(attr.shape)}")
    T, C = attr.shape[1:]
    batch_stride = T if (attr.shape[0] == B and B > 1) else 0
    bary = raster.pixel_bary
    if bary.dtype != attr.dtype:
        bary = bary.to(attr.dtype)
    use_numba = (raster.backend == "numba" and attr.device.type == "cpu"
                 and attr.dtype in (torch.float32, torch.float64))
    attr_flat = attr.reshape(-1, C)
    if use_numba:
        attr_flat, bary, faces = attr_flat.contiguous(), bary.contiguous(), faces.contiguous()
    out = _InterpolateFunction.apply(attr_flat, bary, faces, raster.pixel_index,
                                     raster.pixel_face, raster.pixel_xyb, batch_stride, B * H * W,
                                     use_numba, normalize and use_numba, float(eps))
    out = out.view(B, H, W, C)
    if normalize and not use_numba:
        out = out / out.norm(dim=-1, keepdim=True).clamp_min(eps)
    return out
