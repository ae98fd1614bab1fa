# SPDX-License-Identifier: GPL-3.0-or-later
"""Per-triangle set-up shared by the torch and numba visibility passes.

Both passes consume exactly these float32 arrays and evaluate the per-pixel arithmetic in
the same order, so their face-id and depth buffers agree bit for bit.

Per-pixel arithmetic (written out identically in both passes), for a pixel centre
``(px, py) = (ix + 0.5, iy + 0.5)`` and a triangle with screen vertices ``(x_k, y_k)``::

    dx_k = x_k - px ; dy_k = y_k - py
    E_0 = dx_1*dy_2 - dy_1*dx_2      # edge v1->v2, opposite vertex 0
    E_1 = dx_2*dy_0 - dy_2*dx_0
    E_2 = dx_0*dy_1 - dy_0*dx_1
    covered  <=>  all E_k >= 0 or all E_k <= 0, and S = (E_0 + E_1) + E_2 != 0
    zinv = ((E_0*iw_0 + E_1*iw_1) + E_2*iw_2) / S      # perspective-correct 1/w

``E_k`` written as a cross product of the two vertex offsets is exactly antisymmetric in
floating point (swapping the edge's vertices negates it bit for bit), so a pixel centre is
never lost between two triangles that share an edge.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TriangleSetup:
    """Screen-space triangle data for the visibility passes (float32, no gradient).

    xs, ys, iw: [B, F, 3] vertex x, y (pixels) and 1/w.
    x0, x1, y0, y1: [B, F] int32 inclusive pixel-index ranges of the bounding box of pixel
    centres, clipped to the image; empty (x1 < x0) for culled, degenerate, non-finite
    triangles and for triangles with a vertex at w <= near.
    """

    xs: torch.Tensor
    ys: torch.Tensor
    iw: torch.Tensor
    x0: torch.Tensor
    x1: torch.Tensor
    y0: torch.Tensor
    y1: torch.Tensor
    height: int
    width: int


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for an integer index of any shape, via ``index_select`` (much faster
    than advanced indexing on CPU)."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, *table.shape[1:])


def signed_area2(tri_xy: torch.Tensor) -> torch.Tensor:
    """Twice the signed area of screen triangles [..., 3, 2] (x right, y down).

    Negative means counter-clockwise as seen in the image, which for an outward-wound mesh
    (FLAME's convention) is a front face.
    """
    e1 = tri_xy[..., 1, :] - tri_xy[..., 0, :]
    e2 = tri_xy[..., 2, :] - tri_xy[..., 0, :]
    return e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]


@torch.no_grad()
def prepare_triangles(
    verts_screen: torch.Tensor,
    faces: torch.Tensor,
    resolution: tuple[int, int],
    cull_backfaces: bool = False,
    near: float = 1e-6,
) -> TriangleSetup:
    """Gather per-face vertex data and pixel bounding boxes for the z-buffer pass."""
    height, width = int(resolution[0]), int(resolution[1])
    verts = verts_screen.detach().to(torch.float32)
    tri = verts.index_select(1, faces.reshape(-1)).view(verts.shape[0], -1, 3, 3)  # [B,F,3,3]
    xs = tri[..., 0].contiguous()
    ys = tri[..., 1].contiguous()
    ws = tri[..., 2]
    iw = (torch.ones_like(ws) / ws).contiguous()

    area = signed_area2(tri[..., :2])
    near32 = torch.tensor(near, dtype=torch.float32, device=ws.device)
    valid = (ws > near32).all(-1) & torch.isfinite(tri).all(-1).all(-1) & (area != 0)
    if cull_backfaces:
        valid &= area < 0

    # Pixel ix is a candidate when its centre ix + 0.5 lies in [xmin, xmax]. Clamp in float
    # first so huge coordinates never overflow the integer cast.
    def index_range(lo: torch.Tensor, hi: torch.Tensor, size: int):
        first = torch.ceil(lo - 0.5).clamp(0, size).to(torch.int32)
        last = torch.floor(hi - 0.5).clamp(-1, size - 1).to(torch.int32)
        return first, last

    x0, x1 = index_range(xs.amin(-1), xs.amax(-1), width)
    y0, y1 = index_range(ys.amin(-1), ys.amax(-1), height)
    # Invalid triangles get the empty range [0, -1] (their float bounds may be NaN).
    zero, minus_one = torch.zeros_like(x0), torch.full_like(x0, -1)
    x0, x1 = torch.where(valid, x0, zero), torch.where(valid, x1, minus_one)
    y0, y1 = torch.where(valid, y0, zero), torch.where(valid, y1, minus_one)
    return TriangleSetup(xs, ys, iw, x0.contiguous(), x1.contiguous(), y0.contiguous(),
                         y1.contiguous(), height, width)
