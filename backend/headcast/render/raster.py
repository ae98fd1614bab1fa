# SPDX-License-Identifier: GPL-3.0-or-later
"""Rasterization in pixel space: the :class:`Raster` buffers and backend dispatch.

Conventions (all backends): pixel space with x right, y down, pixel (ix, iy) has its centre
at (ix + 0.5, iy + 0.5); ``verts_screen[..., 2]`` is the camera-space depth ``w`` (> 0 in
front of the camera) used for perspective correction. Sampling is at pixel centres only.

Visibility is computed without gradient (like nvdiffrast); the barycentrics of the covered
pixels are then recomputed from ``verts_screen`` with an analytic backward
(:class:`_BaryFunction`), which is where gradients to vertex positions come from.
Silhouette gradients come from :func:`headcast.render.antialias`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import numba_kernels, visibility_numba
from .triangles import gather_rows, prepare_triangles
from .visibility_torch import DEFAULT_CHUNK_PAIRS, visibility_torch

BACKENDS = ("auto", "torch", "numba", "nvdiffrast")


@dataclass
class Raster:
    """Output of :func:`rasterize`.

    face_id: [B, H, W] int64, index into ``faces`` of the visible triangle, -1 where empty.
    depth: [B, H, W] float32, camera-space depth w of the visible surface, 0 where empty;
        detached (visibility carries no gradient).
    pixel_index: [N] int64, flat index ``b*H*W + y*W + x`` of each covered pixel.
    pixel_face: [N] int64, visible face of each covered pixel.
    pixel_bary: [N, 3] perspective-correct barycentrics of the covered pixels, differentiable
        w.r.t. the vertex positions; the compact form that :func:`interpolate` uses.
    resolution: (H, W).
    backend: which backend produced the buffers.
    """

    face_id: torch.Tensor
    depth: torch.Tensor
    pixel_index: torch.Tensor
    pixel_face: torch.Tensor
    pixel_bary: torch.Tensor
    resolution: tuple[int, int]
    backend: str
    # nvdiffrast's own buffers, kept so that antialias can use nvdiffrast's kernel.
    native: object = field(default=None, repr=False)
    _bary_dense: torch.Tensor | None = field(default=None, repr=False)
    _pixel_xyb: torch.Tensor | None = field(default=None, repr=False)
    _mask: torch.Tensor | None = field(default=None, repr=False)

    @property
    def batch_size(self) -> int:
        return self.face_id.shape[0]

    @property
    def pixel_batch(self) -> torch.Tensor:
        """[N] batch index of each covered pixel."""
        H, W = self.resolution
        return torch.div(self.pixel_index, H * W, rounding_mode="floor")

    @property
    def pixel_xyb(self) -> torch.Tensor:
        """[N, 3] int32 (x, y, batch) of each covered pixel; built on first use."""
        if self._pixel_xyb is None:
            self._pixel_xyb = pixel_coordinates(self.pixel_index, self.resolution)
        return self._pixel_xyb

    @property
    def bary(self) -> torch.Tensor:
        """[B, H, W, 3] barycentrics (zero where empty), differentiable; built on first use."""
        if self._bary_dense is None:
            H, W = self.resolution
            dense = self.pixel_bary.new_zeros(self.batch_size * H * W, 3)
            dense = dense.index_put((self.pixel_index,), self.pixel_bary)
            self._bary_dense = dense.view(self.batch_size, H, W, 3)
        return self._bary_dense

    @property
    def mask(self) -> torch.Tensor:
        """[B, H, W, 1] float coverage (no gradient; antialias it for silhouette gradients)."""
        if self._mask is None or self._mask.dtype != self.pixel_bary.dtype:
            self._mask = (self.face_id >= 0).unsqueeze(-1).to(self.pixel_bary.dtype)
        return self._mask


class _BaryFunction(torch.autograd.Function):
    """Perspective-correct barycentrics at pixel centres with an analytic backward.

    With ``d_k = v_k - p`` (2-D offsets of the vertices from the pixel centre) and
    ``E_k = cross(d_{k+1}, d_{k+2})``, the perspective-correct barycentrics are
    ``b_k = q_k / sum(q)`` with ``q_k = E_k / w_k`` (the screen-space area normaliser
    cancels). One fused node replaces ~20 per-pixel autograd nodes; with ``use_numba`` the
    forward and backward are single numba loops.
    """

    @staticmethod
    def forward(ctx, verts_flat, faces, pixel_face, pixel_xyb, verts_per_image, use_numba):
        ctx.meta = (verts_per_image, use_numba, verts_flat.shape[0])
        if use_numba:
            bary = verts_flat.new_empty(pixel_face.shape[0], 3)
            numba_kernels.bary_forward(verts_flat.detach().numpy(), faces.numpy(),
                                       pixel_face.numpy(), pixel_xyb.numpy(), verts_per_image,
                                       bary.numpy())
            ctx.save_for_backward(verts_flat, faces, pixel_face, pixel_xyb)
            return bary
        corner_index, px, py = _corner_index(faces, pixel_face, pixel_xyb, verts_per_image,
                                             verts_flat.dtype)
        corners = gather_rows(verts_flat, corner_index)  # [N, 3, 3]
        dx = corners[..., 0] - px[:, None]
        dy = corners[..., 1] - py[:, None]
        iw = 1.0 / corners[..., 2]
        dx1, dx2 = dx[:, _NEXT], dx[:, _PREV]  # d_{k+1}, d_{k+2}
        dy1, dy2 = dy[:, _NEXT], dy[:, _PREV]
        q = (dx1 * dy2 - dy1 * dx2) * iw
        inv_total = 1.0 / q.sum(1, keepdim=True)
        bary = q * inv_total
        ctx.save_for_backward(corner_index, dx, dy, iw, bary, inv_total)
        return bary

    @staticmethod
    def backward(ctx, grad_bary):
        none = (None,) * 5
        if not ctx.needs_input_grad[0]:
            return (None,) + none
        verts_per_image, use_numba, n_rows = ctx.meta
        if use_numba:
            verts_flat, faces, pixel_face, pixel_xyb = ctx.saved_tensors
            grad = torch.zeros(verts_flat.shape, dtype=torch.float64)
            numba_kernels.bary_backward(verts_flat.detach().numpy(), faces.numpy(),
                                        pixel_face.numpy(), pixel_xyb.numpy(), verts_per_image,
                                        grad_bary.contiguous().numpy(), grad.numpy())
            return (grad.to(verts_flat.dtype),) + none
        corner_index, dx, dy, iw, bary, inv_total = ctx.saved_tensors
        # b = q / Q  ->  dL/dq_k = (g_k - sum_j g_j b_j) / Q
        grad_q = (grad_bary - (grad_bary * bary).sum(1, keepdim=True)) * inv_total
        grad_e = grad_q * iw
        # q_k = E_k / w_k  ->  dL/dw_k = -dL/dq_k * q_k / w_k, with q_k = b_k * Q
        grad_w = -grad_q * bary * iw / inv_total
        # E_k = dx_{k+1} dy_{k+2} - dy_{k+1} dx_{k+2}; collect the terms of each d_m
        ge1, ge2 = grad_e[:, _NEXT], grad_e[:, _PREV]  # gE_{m+1}, gE_{m+2}
        grad_x = ge2 * dy[:, _NEXT] - ge1 * dy[:, _PREV]
        grad_y = ge1 * dx[:, _PREV] - ge2 * dx[:, _NEXT]
        grad_corners = torch.stack((grad_x, grad_y, grad_w), -1)  # [N, 3, 3]
        grad_verts = grad_corners.new_zeros(n_rows, 3)
        grad_verts.index_add_(0, corner_index.reshape(-1), grad_corners.reshape(-1, 3))
        return (grad_verts,) + none


_NEXT = [1, 2, 0]
_PREV = [2, 0, 1]


def pixel_coordinates(pixel_index: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """(x, y, batch) [N, 3] int32 of flat pixel indices ``b*H*W + y*W + x``."""
    H, W = resolution
    batch = torch.div(pixel_index, H * W, rounding_mode="floor")
    rem = pixel_index - batch * (H * W)
    row = torch.div(rem, W, rounding_mode="floor")
    return torch.stack((rem - row * W, row, batch), 1).to(torch.int32)


def _corner_index(faces, pixel_face, pixel_xyb, verts_per_image, dtype):
    """Vertex rows [N, 3] (into the flattened batch) and pixel centres of covered pixels."""
    xyb = pixel_xyb.long()
    corner_index = gather_rows(faces, pixel_face) + (xyb[:, 2] * verts_per_image)[:, None]
    return corner_index, xyb[:, 0].to(dtype) + 0.5, xyb[:, 1].to(dtype) + 0.5


def pixel_barycentrics(verts_screen: torch.Tensor, faces: torch.Tensor,
                       pixel_index: torch.Tensor, pixel_face: torch.Tensor,
                       resolution: tuple[int, int], use_numba: bool | None = None,
                       pixel_xyb: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable perspective-correct barycentrics [N, 3] of the given pixel centres
    (flat indices ``b*H*W + y*W + x``) inside the given faces (the faces need not be the
    visible ones)."""
    B, V = verts_screen.shape[:2]
    if use_numba is None:
        use_numba = _numba_usable(verts_screen)
    use_numba = use_numba and verts_screen.dtype in (torch.float32, torch.float64)
    if pixel_xyb is None:
        pixel_xyb = pixel_coordinates(pixel_index, resolution)
    verts_flat = verts_screen.reshape(B * V, 3)
    if use_numba:
        verts_flat = verts_flat.contiguous()
        faces = faces.contiguous()
    return _BaryFunction.apply(verts_flat, faces, pixel_face, pixel_xyb, V, use_numba)


def _numba_usable(verts_screen: torch.Tensor) -> bool:
    return visibility_numba.AVAILABLE and verts_screen.device.type == "cpu"


def _nvdiffrast_usable(verts_screen: torch.Tensor) -> bool:
    if verts_screen.device.type != "cuda":
        return False
    from . import nvdiffrast_backend

    return nvdiffrast_backend.available()


def resolve_backend(verts_screen: torch.Tensor, backend: str = "auto") -> str:
    """Pick the backend for these tensors: nvdiffrast on CUDA when it imports, numba on CPU
    when it imports, torch otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        if _nvdiffrast_usable(verts_screen):
            return "nvdiffrast"
        return "numba" if _numba_usable(verts_screen) else "torch"
    if backend == "numba" and not _numba_usable(verts_screen):
        raise RuntimeError("backend='numba' needs numba installed and CPU tensors")
    if backend == "nvdiffrast" and not _nvdiffrast_usable(verts_screen):
        raise RuntimeError("backend='nvdiffrast' needs nvdiffrast.torch and CUDA tensors")
    return backend


def rasterize(
    verts_screen: torch.Tensor,
    faces: torch.Tensor,
    resolution: tuple[int, int],
    *,
    cull_backfaces: bool = False,
    backend: str = "auto",
    near: float = 1e-6,
    chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
) -> Raster:
    """Rasterize triangles given in pixel space.

    verts_screen: [B, V, 3] (x, y, w): pixel coordinates (x right, y down, pixel centres at
        +0.5) and camera-space depth w > 0, e.g. from :func:`project_points`.
    faces: [F, 3] integer vertex indices, shared by the batch.
    resolution: (H, W).
    cull_backfaces: drop triangles that are clockwise as seen in the image (positive signed
        area with y down), i.e. the back faces of an outward-wound mesh.
    backend: 'auto' | 'torch' | 'numba' | 'nvdiffrast' (see :func:`resolve_backend`).
    near: triangles with a vertex at w <= near are dropped (no clipping) by torch/numba.
    chunk_pairs: memory bound of the torch visibility pass, in (triangle, pixel) pairs.
    """
    if verts_screen.dim() != 3 or verts_screen.shape[-1] != 3:
        raise ValueError(f"verts_screen must be [B, V, 3], got {tuple(verts_screen.shape)}")
    faces = faces.to(device=verts_screen.device, dtype=torch.int64)
    H, W = int(resolution[0]), int(resolution[1])
    which = resolve_backend(verts_screen, backend)
    if which == "nvdiffrast":
        from .nvdiffrast_backend import rasterize_nvdiffrast

        return rasterize_nvdiffrast(verts_screen, faces, (H, W), cull_backfaces, near)

    if which == "numba":
        face_id, zinv = visibility_numba.visibility_numba(verts_screen, faces, (H, W),
                                                          cull_backfaces, near)
    else:
        setup = prepare_triangles(verts_screen, faces, (H, W), cull_backfaces, near)
        face_id, zinv = visibility_torch(setup, chunk_pairs)
    mask = None
    if which == "numba":
        depth = torch.empty_like(zinv)
        mask = torch.empty(face_id.shape + (1,), dtype=torch.float32)
        pixel_index, pixel_face, pixel_xyb = (
            torch.from_numpy(a) for a in numba_kernels.compact_pixels(
                face_id.numpy(), zinv.numpy(), depth.numpy(), mask[..., 0].numpy()))
    else:
        depth = torch.where(zinv > 0, 1.0 / zinv, torch.zeros_like(zinv))
        flat = face_id.reshape(-1)
        pixel_index = torch.nonzero(flat >= 0).squeeze(1)
        pixel_face = flat.index_select(0, pixel_index)
        pixel_xyb = pixel_coordinates(pixel_index, (H, W))
    pixel_bary = pixel_barycentrics(verts_screen, faces, pixel_index, pixel_face, (H, W),
                                    use_numba=which == "numba", pixel_xyb=pixel_xyb)
    return Raster(face_id, depth, pixel_index, pixel_face, pixel_bary, (H, W), which,
                  _pixel_xyb=pixel_xyb, _mask=mask)
