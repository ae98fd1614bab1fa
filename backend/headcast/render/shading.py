# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers the fitting calls: vertex normals, rendered normals / uv / mask, and per-vertex
visibility from the depth buffer."""
from __future__ import annotations

import torch

from . import numba_kernels, visibility_numba
from .antialias import antialias
from .interpolate import interpolate
from .raster import Raster


def face_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unnormalised face normals [B, F, 3] (length = twice the area), following the winding
    (counter-clockwise seen from the side the normal points to)."""
    tri = verts.index_select(1, faces.reshape(-1)).view(verts.shape[0], -1, 3, 3)
    return torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)


class _VertexNormalsFunction(torch.autograd.Function):
    """numba forward/backward of :func:`vertex_normals` (CPU)."""

    @staticmethod
    def forward(ctx, verts, faces, eps):
        B, V, _ = verts.shape
        normals = torch.empty_like(verts)
        lengths = torch.empty(B, V, dtype=torch.float64)
        numba_kernels.vertex_normals_forward(verts.detach().numpy(), faces.numpy(), eps,
                                             normals.numpy(), lengths.numpy())
        ctx.save_for_backward(verts, faces, normals, lengths)
        ctx.eps = eps
        return normals

    @staticmethod
    def backward(ctx, grad_normals):
        verts, faces, normals, lengths = ctx.saved_tensors
        grad = torch.zeros(verts.shape, dtype=torch.float64)
        numba_kernels.vertex_normals_backward(verts.detach().numpy(), faces.numpy(), ctx.eps,
                                              normals.numpy(), lengths.numpy(),
                                              grad_normals.contiguous().numpy(), grad.numpy())
        return grad.to(verts.dtype), None, None


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12,
                   backend: str = "auto") -> torch.Tensor:
    """Unit area-weighted vertex normals [B, V, 3] of verts [B, V, 3] (any space).

    For an outward-wound mesh (FLAME) they point outward; in OpenCV camera space the
    visible surface then has normals with negative z. backend: 'auto' (numba for CPU
    tensors when available), 'numba' or 'torch'.
    """
    faces = faces.to(device=verts.device, dtype=torch.int64)
    use_numba = backend == "numba" or (
        backend == "auto" and visibility_numba.AVAILABLE and verts.device.type == "cpu"
        and verts.dtype in (torch.float32, torch.float64))
    if use_numba:
        return _VertexNormalsFunction.apply(verts.contiguous(), faces.contiguous(), float(eps))
    fn = face_normals(verts, faces)  # [B, F, 3]
    B, V = verts.shape[:2]
    acc = verts.new_zeros(B * V, 3)
    rows = (faces.reshape(1, -1) + V * torch.arange(B, device=verts.device)[:, None]).reshape(-1)
    acc = acc.index_add(0, rows, fn.repeat_interleave(3, dim=1).reshape(-1, 3))
    acc = acc.view(B, V, 3)
    return acc / acc.norm(dim=-1, keepdim=True).clamp_min(eps)


def render_normals(raster: Raster, verts: torch.Tensor, faces: torch.Tensor,
                   normalize: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Interpolated vertex normals [B, H, W, 3] of verts [B, V, 3] (zero where empty).

    ``verts`` is the mesh in whatever space the normals are wanted (world or camera), with
    the same vertex order as the mesh that was rasterized.
    """
    # the torch backend stays pure torch; numba rasters use the numba normals too
    backend = "numba" if raster.backend == "numba" else "torch"
    normals = vertex_normals(verts, faces, backend=backend)
    return interpolate(normals, raster, faces, normalize=normalize, eps=eps)


def render_uv(raster: Raster, uv: torch.Tensor, faces_uv: torch.Tensor) -> torch.Tensor:
    """Interpolated texture coordinates [B, H, W, 2] from ``uv`` [T, 2] (or [B, T, 2]) and
    the uv index set ``faces_uv`` [F, 3] (zero where empty)."""
    return interpolate(uv, raster, faces_uv)


def render_mask(raster: Raster, verts_screen: torch.Tensor, faces: torch.Tensor,
                antialiased: bool = True) -> torch.Tensor:
    """Coverage mask [B, H, W, 1]; antialiased (with silhouette gradients to
    ``verts_screen``) unless ``antialiased=False``."""
    mask = raster.mask.to(verts_screen.dtype)
    return antialias(mask, raster, verts_screen, faces) if antialiased else mask


@torch.no_grad()
def vertex_visibility(verts_screen: torch.Tensor, raster: Raster, tol: float = 1e-2,
                      radius: int = 0, ids: torch.Tensor | None = None) -> torch.Tensor:
    """Which vertices are visible: bool [B, V], or [B, M] for the vertex indices ``ids`` [B, M].

    A vertex is visible when it projects inside the image, is in front of the camera, and
    some covered pixel within ``radius`` pixels of the one containing it has a depth d with
    ``w <= d * (1 + tol)`` (not behind the visible surface). ``tol`` is relative to depth; it
    absorbs the depth change within a pixel on slanted surfaces. ``radius=1`` also accepts
    contour vertices whose own pixel centre falls just outside the silhouette.
    """
    B, V = verts_screen.shape[:2]
    H, W = raster.resolution
    if ids is not None:
        if visibility_numba.AVAILABLE and verts_screen.device.type == "cpu":
            # one compiled pass instead of ~60 tensor operations (the fitting's every step)
            return visibility_numba.vertex_test_numba(verts_screen, raster.depth, ids, tol, radius)
        return torch.gather(vertex_visibility(verts_screen, raster, tol, radius), 1, ids)
    x, y, w = verts_screen.detach().unbind(-1)
    ix = torch.floor(x)
    iy = torch.floor(y)
    inside = (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H) & (w > 0) & torch.isfinite(w)
    ix = torch.where(inside, ix, torch.zeros_like(ix)).long()
    iy = torch.where(inside, iy, torch.zeros_like(iy)).long()
    depth = raster.depth.reshape(B, H * W).to(w.dtype)
    visible = torch.zeros_like(inside)
    for oy in range(-radius, radius + 1):
        for ox in range(-radius, radius + 1):
            jx, jy = ix + ox, iy + oy
            ok = (jx >= 0) & (jx < W) & (jy >= 0) & (jy < H)
            flat = (jy.clamp(0, H - 1) * W + jx.clamp(0, W - 1))
            d = torch.gather(depth, 1, flat)
            visible |= ok & (d > 0) & (w <= d * (1.0 + tol))
    return visible & inside
