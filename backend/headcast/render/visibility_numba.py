# SPDX-License-Identifier: GPL-3.0-or-later
"""Z-buffer visibility with numba (CPU), 8-16x faster than the torch pass.

A classic per-triangle scan of the bounding-box pixels. It is serial: at these sizes it
takes about a millisecond, and staying out of numba's own OpenMP thread pool keeps it from
fighting torch's threads on small machines. The triangle set-up and the per-pixel
arithmetic are exactly those of :func:`headcast.render.triangles.prepare_triangles` and the
torch pass: the same float32 inputs, the same operations in the same order, no fast-math,
so both passes return identical buffers (the tests check this). Faces are visited in
increasing index and only a strictly nearer hit replaces the stored one, which is the torch
pass's tie-break (nearest, then lowest face id).

numba is optional: :data:`AVAILABLE` is False when it does not import.
"""
from __future__ import annotations

import math

import numpy as np
import torch

try:  # optional accelerator
    import numba

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only without numba
    numba = None
    AVAILABLE = False


if AVAILABLE:

    @numba.njit(cache=True, nogil=True, fastmath=False, inline="always")
    def _index_range(lo, hi, size):
        """First and last pixel index whose centre lies in [lo, hi] (float32 math)."""
        half = np.float32(0.5)
        first = np.ceil(lo - half)
        last = np.floor(hi - half)
        first = min(max(first, np.float32(0.0)), np.float32(size))
        last = min(max(last, np.float32(-1.0)), np.float32(size - 1))
        return int(first), int(last)

    @numba.njit(cache=True, nogil=True, fastmath=False)
    def _zbuffer_kernel(verts, faces, cull, near, zbuf, fbuf):
        n_batch, height, width = zbuf.shape
        n_faces = faces.shape[0]
        half = np.float32(0.5)
        zero = np.float32(0.0)
        one = np.float32(1.0)
        for b in range(n_batch):
            for f in range(n_faces):
                i0 = faces[f, 0]
                i1 = faces[f, 1]
                i2 = faces[f, 2]
                vx0 = verts[b, i0, 0]
                vy0 = verts[b, i0, 1]
                w0 = verts[b, i0, 2]
                vx1 = verts[b, i1, 0]
                vy1 = verts[b, i1, 1]
                w1 = verts[b, i1, 2]
                vx2 = verts[b, i2, 0]
                vy2 = verts[b, i2, 1]
                w2 = verts[b, i2, 2]
                # --- set-up, as in prepare_triangles ---
                if not (w0 > near and w1 > near and w2 > near):
                    continue
                if not (math.isfinite(vx0) and math.isfinite(vy0) and math.isfinite(w0)
                        and math.isfinite(vx1) and math.isfinite(vy1) and math.isfinite(w1)
                        and math.isfinite(vx2) and math.isfinite(vy2) and math.isfinite(w2)):
                    continue
                area = (vx1 - vx0) * (vy2 - vy0) - (vy1 - vy0) * (vx2 - vx0)
                if area == zero or (cull and not area < zero):
                    continue
                x0, x1 = _index_range(min(vx0, vx1, vx2), max(vx0, vx1, vx2), width)
                y0, y1 = _index_range(min(vy0, vy1, vy2), max(vy0, vy1, vy2), height)
                iw0 = one / w0
                iw1 = one / w1
                iw2 = one / w2
                # --- scan, as in visibility_torch._scatter_chunk ---
                for iy in range(y0, y1 + 1):
                    py = np.float32(iy) + half
                    dy0 = vy0 - py
                    dy1 = vy1 - py
                    dy2 = vy2 - py
                    for ix in range(x0, x1 + 1):
                        px = np.float32(ix) + half
                        dx0 = vx0 - px
                        dx1 = vx1 - px
                        dx2 = vx2 - px
                        e0 = dx1 * dy2 - dy1 * dx2
                        e1 = dx2 * dy0 - dy2 * dx0
                        e2 = dx0 * dy1 - dy0 * dx1
                        if not ((e0 >= zero and e1 >= zero and e2 >= zero)
                                or (e0 <= zero and e1 <= zero and e2 <= zero)):
                            continue
                        s = (e0 + e1) + e2
                        if s == zero:
                            continue
                        zinv = ((e0 * iw0 + e1 * iw1) + e2 * iw2) / s
                        if zinv > zbuf[b, iy, ix]:  # also false for NaN and zinv <= 0
                            zbuf[b, iy, ix] = zinv
                            fbuf[b, iy, ix] = f


if AVAILABLE:

    @numba.njit(cache=True, nogil=True, fastmath=False)
    def _vertex_test_kernel(xyw, ids, depth, factor, radius, out):
        """out[b, m] for vertex ids[b, m]: the test of :func:`headcast.render.vertex_visibility`
        (same dtype, same comparisons) in one pass."""
        n_batch, height, width = depth.shape
        zero = depth.dtype.type(0.0)
        for b in range(n_batch):
            for m in range(ids.shape[1]):
                v = ids[b, m]
                x = xyw[b, v, 0]
                y = xyw[b, v, 1]
                w = xyw[b, v, 2]
                if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(w) and w > zero):
                    continue
                ix = int(math.floor(x))
                iy = int(math.floor(y))
                if ix < 0 or ix >= width or iy < 0 or iy >= height:
                    continue
                hit = False
                for oy in range(-radius, radius + 1):
                    jy = iy + oy
                    if jy < 0 or jy >= height:
                        continue
                    for ox in range(-radius, radius + 1):
                        jx = ix + ox
                        if jx < 0 or jx >= width:
                            continue
                        d = depth[b, jy, jx]
                        if d > zero and w <= d * factor:
                            hit = True
                out[b, m] = hit


def vertex_test_numba(verts_screen: torch.Tensor, depth: torch.Tensor, ids: torch.Tensor, tol: float,
                      radius: int) -> torch.Tensor:
    """bool [B, M]: the visibility test of vertices ``ids`` [B, M] against ``depth`` [B, H, W]."""
    # compared in the vertices' precision, as the tensor test does (float32 below that)
    dt = torch.float64 if verts_screen.dtype == torch.float64 else torch.float32
    xyw = verts_screen.detach().to(dt).contiguous().numpy()
    d = depth.detach().to(dt).contiguous().numpy()
    out = np.zeros(tuple(ids.shape), dtype=np.bool_)
    _vertex_test_kernel(xyw, ids.detach().to(torch.int64).contiguous().numpy(), d, xyw.dtype.type(1.0 + tol),
                        int(radius), out)
    return torch.from_numpy(out)


def visibility_numba(verts_screen: torch.Tensor, faces: torch.Tensor,
                     resolution: tuple[int, int], cull_backfaces: bool = False,
                     near: float = 1e-6):
    """Return ``(face_id [B,H,W] int64 with -1 for empty, zinv [B,H,W] float32 with 0 for
    empty)``; the same contract and bits as the torch pass."""
    if not AVAILABLE:
        raise RuntimeError("numba is not installed; use the torch visibility pass")
    if verts_screen.device.type != "cpu":
        raise ValueError("the numba visibility pass runs on CPU tensors only")
    H, W = int(resolution[0]), int(resolution[1])
    verts = verts_screen.detach().to(torch.float32).contiguous().numpy()
    tri = faces.detach().to(torch.int64).contiguous().numpy()
    B = verts.shape[0]
    zbuf = np.zeros((B, H, W), dtype=np.float32)
    fbuf = np.full((B, H, W), -1, dtype=np.int64)
    if tri.shape[0] and B:
        _zbuffer_kernel(verts, tri, bool(cull_backfaces), np.float32(near), zbuf, fbuf)
    return torch.from_numpy(fbuf), torch.from_numpy(zbuf)
