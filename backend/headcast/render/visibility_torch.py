# SPDX-License-Identifier: GPL-3.0-or-later
"""Z-buffer visibility in plain torch (CPU, and CUDA as a fallback), without gradient.

Every triangle is expanded to the pixels of its bounding box (``repeat_interleave`` plus
offsets); each (triangle, pixel) pair is tested with the edge functions of
:mod:`headcast.render.triangles`, and the closest hit per pixel is found with a single
``scatter_reduce(amin)`` on an int64 key. The key packs the float32 bits of ``1/w`` (high
word, negated so that nearer sorts first) with the face index (low word), which makes the
tie-break "nearest, then lowest face id" -- the same rule as the numba pass.
Triangles are processed in chunks of at most ``chunk_pairs`` pairs to bound memory.
"""
from __future__ import annotations

import torch

from .triangles import TriangleSetup, gather_rows

_EMPTY_KEY = torch.iinfo(torch.int64).max
DEFAULT_CHUNK_PAIRS = 1 << 18


def _chunk_bounds(counts: torch.Tensor, cum: torch.Tensor, chunk_pairs: int):
    """Split triangles into consecutive runs, starting a new run whenever the running pair
    count crosses a multiple of ``chunk_pairs``; a run holds at most ``chunk_pairs`` plus
    one triangle's pairs."""
    total = int(cum[-1])
    n_chunks = -(-total // chunk_pairs)
    if n_chunks <= 1:
        return [(0, counts.numel())]
    starts = cum - counts
    cuts = torch.arange(1, n_chunks, device=cum.device, dtype=cum.dtype) * chunk_pairs
    edges = [0] + torch.searchsorted(starts, cuts).tolist() + [counts.numel()]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


@torch.no_grad()
def visibility_torch(setup: TriangleSetup, chunk_pairs: int = DEFAULT_CHUNK_PAIRS):
    """Return ``(face_id [B,H,W] int64 with -1 for empty, zinv [B,H,W] float32 with 0 for
    empty)``, where zinv is the perspective-correct 1/w of the visible surface."""
    B, F = setup.x0.shape
    H, W = setup.height, setup.width
    device = setup.xs.device

    nx = (setup.x1 - setup.x0 + 1).clamp(min=0).reshape(-1).long()
    ny = (setup.y1 - setup.y0 + 1).clamp(min=0).reshape(-1).long()
    counts = nx * ny
    tris = torch.nonzero(counts > 0).squeeze(1)  # global index b*F + f
    keys = torch.full((B * H * W,), _EMPTY_KEY, dtype=torch.int64, device=device)

    if tris.numel() > 0:
        counts = counts.index_select(0, tris)
        nx = nx.index_select(0, tris)
        cum = torch.cumsum(counts, 0)
        xs = setup.xs.reshape(-1, 3)
        ys = setup.ys.reshape(-1, 3)
        iw = setup.iw.reshape(-1, 3)
        x0 = setup.x0.reshape(-1)
        y0 = setup.y0.reshape(-1)
        for start, end in _chunk_bounds(counts, cum, chunk_pairs):
            _scatter_chunk(keys, tris[start:end], counts[start:end], nx[start:end],
                           xs, ys, iw, x0, y0, F, H, W)

    empty = keys == _EMPTY_KEY
    face_id = torch.where(empty, torch.full_like(keys, -1), keys & 0xFFFFFFFF)
    zbits = torch.where(empty, torch.zeros_like(keys), -(keys >> 32))
    zinv = zbits.to(torch.int32).view(torch.float32)
    return face_id.view(B, H, W), zinv.view(B, H, W)


def _scatter_chunk(keys, tris, counts, nx, xs, ys, iw, x0, y0, F, H, W):
    """Test one chunk of (triangle, bbox pixel) pairs and fold the hits into ``keys``."""
    device = keys.device
    n_pairs = int(counts.sum())
    local = torch.repeat_interleave(torch.arange(tris.numel(), device=device), counts,
                                    output_size=n_pairs)
    first = torch.cumsum(counts, 0) - counts
    offset = torch.arange(n_pairs, device=device) - first.index_select(0, local)
    tri = tris.index_select(0, local)
    row_len = nx.index_select(0, local)
    row = torch.div(offset, row_len, rounding_mode="floor")
    ix = x0.index_select(0, tri) + (offset - row * row_len).to(torch.int32)
    iy = y0.index_select(0, tri) + row.to(torch.int32)
    px = ix.to(torch.float32) + 0.5
    py = iy.to(torch.float32) + 0.5

    X, Y, IW = gather_rows(xs, tri), gather_rows(ys, tri), gather_rows(iw, tri)
    dx = X - px[:, None]
    dy = Y - py[:, None]
    dx0, dx1, dx2 = dx.unbind(1)
    dy0, dy1, dy2 = dy.unbind(1)
    e0 = dx1 * dy2 - dy1 * dx2
    e1 = dx2 * dy0 - dy2 * dx0
    e2 = dx0 * dy1 - dy0 * dx1
    covered = ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))
    s = (e0 + e1) + e2
    iw0, iw1, iw2 = IW.unbind(1)
    zinv = ((e0 * iw0 + e1 * iw1) + e2 * iw2) / s
    covered &= (s != 0) & (zinv > 0)  # zinv > 0 also rejects NaN

    batch = torch.div(tri, F, rounding_mode="floor")
    face = tri - batch * F
    pix = batch * (H * W) + iy.long() * W + ix.long()
    key = face - (zinv.view(torch.int32).long() << 32)
    key = torch.where(covered, key, torch.full_like(key, _EMPTY_KEY))
    keys.scatter_reduce_(0, pix, key, reduce="amin")
