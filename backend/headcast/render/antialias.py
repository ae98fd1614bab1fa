# SPDX-License-Identifier: GPL-3.0-or-later
"""Analytic edge antialiasing: the source of silhouette gradients.

Point-sampled coverage is piecewise constant in the vertex positions, so it has no useful
gradient. Following nvdiffrast's ``antialias`` semantics, every pair of horizontally or
vertically adjacent pixels whose visible triangles differ is examined: the pixel whose
surface is nearer is the *front* pixel, and if the segment between the two pixel centres
leaves the front triangle through a *silhouette edge*, the two point-sampled colours are
blended by where the edge crosses the segment. With the crossing at fraction ``t`` from
the front centre, the front surface covers ``t - 1/2`` of the other pixel (``t > 1/2``), or
misses ``1/2 - t`` of its own pixel (``t < 1/2``); in both cases the colour change is
``(t - 1/2) * (c_front - c_other)`` applied to the pixel the edge lies in. ``t`` depends
on the two edge vertices only, which receive the gradient. Each edge is handled only by
the pair direction it is most across (edges steeper than 45 degrees by horizontal pairs,
flatter ones by vertical pairs), so a pixel is not corrected twice for the same edge.

Silhouette edges are boundary edges (one adjacent face) and edges whose two faces have
opposite orientation on screen (one front-, one back-facing): this covers object/background
edges and self-occlusion edges (e.g. the nose in front of the cheek). Face adjacency comes
from an edge->face table built once per face tensor and cached.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from . import numba_kernels
from .raster import Raster
from .triangles import gather_rows, signed_area2


@dataclass
class EdgeTopology:
    """neighbors[f, k]: the face across edge k of face f (the edge opposite vertex k, from
    vertex k+1 to vertex k+2), or -1 for boundary and non-manifold (3+ faces) edges."""

    neighbors: torch.Tensor  # [F, 3] int64


def build_edge_topology(faces: torch.Tensor) -> EdgeTopology:
    """Build the edge->face table of a triangle list [F, 3] (vertex sharing defines edges)."""
    faces = torch.as_tensor(faces).to(torch.int64)
    F = faces.shape[0]
    start = faces[:, [1, 2, 0]].reshape(-1)  # edge e = 3*f + k
    end = faces[:, [2, 0, 1]].reshape(-1)
    n = int(faces.max()) + 1 if F else 1
    key = torch.minimum(start, end) * n + torch.maximum(start, end)
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    same = sorted_key[1:] == sorted_key[:-1]
    false = torch.zeros(1, dtype=torch.bool, device=faces.device)
    # an edge shared by exactly two faces is a run of exactly two equal keys
    pair = same & ~torch.cat((false, same[:-1])) & ~torch.cat((same[1:], false))
    first = torch.nonzero(pair).squeeze(1)
    e1, e2 = order[first], order[first + 1]
    neighbors = torch.full((3 * F,), -1, dtype=torch.int64, device=faces.device)
    neighbors[e1] = torch.div(e2, 3, rounding_mode="floor")
    neighbors[e2] = torch.div(e1, 3, rounding_mode="floor")
    return EdgeTopology(neighbors.view(F, 3))


_TOPOLOGY_CACHE: dict[int, tuple] = {}


def edge_topology(faces: torch.Tensor) -> EdgeTopology:
    """Cached :func:`build_edge_topology`: keyed on the face tensor object and its version
    counter, dropped when the tensor is freed."""
    key = id(faces)
    hit = _TOPOLOGY_CACHE.get(key)
    version = getattr(faces, "_version", None)
    if hit is not None and hit[0]() is faces and hit[1] == version:
        return hit[2]
    topology = build_edge_topology(faces)
    try:
        ref = weakref.ref(faces, lambda _ref, k=key: _TOPOLOGY_CACHE.pop(k, None))
    except TypeError:  # not weak-referenceable (e.g. a numpy array): don't cache
        return topology
    _TOPOLOGY_CACHE[key] = (ref, version, topology)
    return topology


def _cross_to(va: torch.Tensor, vb: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Edge function cross(va - p, vb - p) for [..., 2] points."""
    a = va - p
    b = vb - p
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def antialias(image: torch.Tensor, raster: Raster, verts_screen: torch.Tensor,
              faces: torch.Tensor, topology: EdgeTopology | None = None,
              backend: str = "auto") -> torch.Tensor:
    """Antialias ``image`` [B, H, W, C] across silhouette edges; returns [B, H, W, C].

    Differentiable w.r.t. ``image`` and ``verts_screen`` (the tensor given to
    :func:`rasterize`). ``topology`` overrides the cached edge table of ``faces``.
    backend: 'auto' uses nvdiffrast's kernel when the raster came from nvdiffrast, else the
    torch implementation; 'torch' forces the latter.
    """
    if backend not in ("auto", "torch", "nvdiffrast"):
        raise ValueError(f"unknown antialias backend {backend!r}")
    if raster.native is not None and backend != "torch":
        from .nvdiffrast_backend import antialias_nvdiffrast

        return antialias_nvdiffrast(image, raster, faces)
    if backend == "nvdiffrast":
        raise RuntimeError("antialias backend='nvdiffrast' needs a raster from nvdiffrast")

    B, H, W, C = image.shape
    if (H, W) != tuple(raster.resolution) or B != raster.batch_size:
        raise ValueError("image and raster sizes differ")
    neighbors = (topology or edge_topology(faces)).neighbors.to(image.device)
    faces = faces.to(device=image.device, dtype=torch.int64)

    front, other, batch, face, edge = _silhouette_crossings(raster, verts_screen, faces,
                                                            neighbors)
    flat = image.reshape(B * H * W, C)
    if front.numel() == 0:
        return image

    # Differentiable crossing position of the chosen edge along front -> other.
    V = verts_screen.shape[1]
    xy = verts_screen[..., :2].reshape(B * V, 2).to(image.dtype)
    k1 = (edge + 1) % 3
    k2 = (edge + 2) % 3
    va = xy[faces[face, k1] + batch * V]
    vb = xy[faces[face, k2] + batch * V]
    pf = _pixel_centres(front, H, W, xy.dtype)
    po = _pixel_centres(other, H, W, xy.dtype)
    ef = _cross_to(va, vb, pf)
    eo = _cross_to(va, vb, po)
    t = (ef / (ef - eo)).clamp(0.0, 1.0)

    shift = (t - 0.5)[:, None]
    delta = shift * (flat.index_select(0, front) - flat.index_select(0, other))
    target = torch.where(shift[:, 0] > 0, other, front)
    return flat.index_add(0, target, delta).view(B, H, W, C)


def _pixel_centres(flat_index: torch.Tensor, H: int, W: int, dtype) -> torch.Tensor:
    rem = flat_index % (H * W)
    row = torch.div(rem, W, rounding_mode="floor")
    col = rem - row * W
    return torch.stack((col.to(dtype) + 0.5, row.to(dtype) + 0.5), -1)


@torch.no_grad()
def _silhouette_crossings(raster: Raster, verts_screen: torch.Tensor, faces: torch.Tensor,
                          neighbors: torch.Tensor):
    """Adjacent pixel pairs that straddle a silhouette edge of the front pixel's triangle.

    Returns flat indices of the front and other pixel, the batch index, the front face and
    the index k (0..2) of the crossed edge, for every such pair.
    """
    B = raster.batch_size
    H, W = raster.resolution
    V = verts_screen.shape[1]
    xy = verts_screen.detach()[..., :2].to(torch.float64)
    if raster.backend == "numba" and xy.device.type == "cpu":
        front, other, face, edge = numba_kernels.aa_candidates(
            xy.reshape(B * V, 2).contiguous().numpy(), faces.contiguous().numpy(),
            neighbors.contiguous().numpy(), raster.face_id.contiguous().numpy(),
            raster.depth.contiguous().numpy(), V)
        front, other = torch.from_numpy(front), torch.from_numpy(other)
        batch = torch.div(front, H * W, rounding_mode="floor")
        return front, other, batch, torch.from_numpy(face), torch.from_numpy(edge)

    # Per-face screen orientation this step; an edge is a silhouette when it has no
    # neighbour or the neighbour faces the other way.
    F = faces.shape[0]
    tri_xy = xy.index_select(1, faces.reshape(-1)).view(B, F, 3, 2)
    orient = torch.sign(signed_area2(tri_xy))  # [B, F]
    nbr_orient = torch.gather(orient, 1, neighbors.clamp(min=0).reshape(1, -1).expand(B, -1))
    silhouette = (neighbors.reshape(1, -1) < 0) | (nbr_orient != orient.repeat_interleave(3, 1))
    has_silhouette = silhouette.view(B, F, 3).any(-1)  # [B, F]
    # a leading False column so that face id -1 (background) looks up False
    has_silhouette = torch.cat((has_silhouette.new_zeros(B, 1), has_silhouette), 1).reshape(-1)

    ids = raster.face_id
    depth = torch.where(ids >= 0, raster.depth, torch.full_like(raster.depth, float("inf")))
    row_offset = (torch.arange(B, device=ids.device) * (F + 1) + 1).view(B, 1, 1)
    fronts, others, across = [], [], []
    for step, sl_a, sl_b in ((1, (slice(None), slice(None), slice(0, -1)),
                              (slice(None), slice(None), slice(1, None))),
                             (W, (slice(None), slice(0, -1), slice(None)),
                              (slice(None), slice(1, None), slice(None)))):
        fa, fb = ids[sl_a], ids[sl_b]
        a_front = depth[sl_a] <= depth[sl_b]
        front_face = torch.where(a_front, fa, fb)
        lookup = has_silhouette.index_select(0, (front_face + row_offset).reshape(-1))
        candidate = ((fa != fb) & lookup.view_as(fa)).reshape(-1)
        sel = torch.nonzero(candidate).squeeze(1)  # flat index into the [B, h, w] pair grid
        pair_w = fa.shape[2]
        pair_hw = fa.shape[1] * pair_w
        b = torch.div(sel, pair_hw, rounding_mode="floor")
        rem = sel - b * pair_hw
        y = torch.div(rem, pair_w, rounding_mode="floor")
        a = b * (H * W) + y * W + (rem - y * pair_w)
        af = a_front.reshape(-1).index_select(0, sel)
        fronts.append(torch.where(af, a, a + step))
        others.append(torch.where(af, a + step, a))
        across.append(torch.full_like(a, 0 if step == 1 else 1))  # 0: along x, 1: along y
    front = torch.cat(fronts)
    other = torch.cat(others)
    along_y = torch.cat(across)
    batch = torch.div(front, H * W, rounding_mode="floor")
    face = ids.reshape(-1).index_select(0, front)

    # Which edge does the segment front -> other leave the front triangle through?
    tri = gather_rows(xy.reshape(B * V, 2), gather_rows(faces, face) + (batch * V)[:, None])
    va, vb = tri[:, [1, 2, 0]], tri[:, [2, 0, 1]]  # edge k runs from vertex k+1 to k+2
    pf = _pixel_centres(front, H, W, xy.dtype)[:, None, :]
    po = _pixel_centres(other, H, W, xy.dtype)[:, None, :]
    ef = _cross_to(va, vb, pf)  # [M, 3]
    eo = _cross_to(va, vb, po)
    sign = torch.where(orient[batch, face] > 0, 1.0, -1.0).to(ef.dtype)[:, None]
    # (ef is not required to be >= 0: float32 visibility may cover a centre that lies a
    # rounding error outside; its t is then slightly negative and clamped later.)
    crossing = eo * sign < 0
    t = torch.where(crossing, ef / torch.where(crossing, ef - eo, torch.ones_like(ef)),
                    torch.full_like(ef, float("inf")))
    t_min, edge = t.min(1)
    keep = torch.isfinite(t_min)
    keep &= silhouette.reshape(-1)[(batch * F + face) * 3 + edge]
    # as in nvdiffrast, an edge is handled only by the pair direction it is most across
    # (steep edges by horizontal pairs, flat edges by vertical pairs)
    rows = torch.arange(edge.numel(), device=edge.device)
    span = (vb[rows, edge] - va[rows, edge]).abs()  # [M, 2]
    keep &= torch.where(along_y == 0, span[:, 1] >= span[:, 0], span[:, 0] >= span[:, 1])
    return front[keep], other[keep], batch[keep], face[keep], edge[keep]
