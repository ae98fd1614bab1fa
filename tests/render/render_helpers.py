# SPDX-License-Identifier: GPL-3.0-or-later
"""Meshes, cameras and brute-force references for the renderer tests."""
from __future__ import annotations

import functools

import numpy as np
import torch


def uv_sphere_head(n_lat: int = 50, n_lon: int = 100, radius: float = 0.1,
                   nose: float = 0.03, stretch: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """A closed, outward-wound head-like mesh in FLAME axes (+y up, +z toward the face):
    a UV sphere stretched along y with a nose bump. 50 x 100 gives 4902 v / 9800 f;
    ``nose=0, stretch=0`` gives a plain sphere."""
    theta = np.linspace(0.0, np.pi, n_lat + 1)[1:-1]  # polar angle from +y
    phi = np.linspace(0.0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    dirs = np.stack((np.sin(t) * np.sin(p), np.cos(t), np.sin(t) * np.cos(p)), -1)
    # nose: a bump around +z, slightly below the equator
    bump = nose * np.exp(-((dirs[..., 0] / 0.18) ** 2 + ((dirs[..., 1] + 0.05) / 0.25) ** 2))
    bump = bump * (dirs[..., 2] > 0)
    r = radius * (1.0 + stretch * dirs[..., 1] ** 2)[..., None] * dirs + bump[..., None] * dirs
    pole = radius * (1.0 + stretch)
    verts = np.concatenate(([[0.0, pole, 0.0]], r.reshape(-1, 3), [[0.0, -pole, 0.0]]))
    faces = []
    ring = lambda i, j: 1 + i * n_lon + (j % n_lon)  # noqa: E731
    south = len(verts) - 1
    for j in range(n_lon):
        faces.append((0, ring(0, j), ring(0, j + 1)))
        faces.append((south, ring(n_lat - 2, j + 1), ring(n_lat - 2, j)))
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            faces.append((a, c, b))
            faces.append((b, c, d))
    faces = np.asarray(faces, dtype=np.int64)
    # make the winding outward (normals along the radial direction)
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = (n * tri.mean(1)).sum(1) < 0
    faces[flip] = faces[flip][:, ::-1]
    return verts, faces


def flame_to_camera(verts: torch.Tensor, distance: float = 1.0) -> torch.Tensor:
    """FLAME axes -> OpenCV camera at z = +distance looking toward -z."""
    x, y, z = verts.unbind(-1)
    return torch.stack((x, -y, distance - z), -1)


def head_camera(width: int, height: int):
    """fx, fy, cx, cy for the head at 1 m (about 80 % of the frame)."""
    return 4.0 * width, 4.0 * width, width / 2.0, height / 2.0


def head_screen(verts: np.ndarray, size: int, dtype=torch.float32) -> torch.Tensor:
    """FLAME-axes vertices (V, 3) -> screen vertices [1, V, 3] for a size x size image."""
    from headcast.render import project_points

    cam = flame_to_camera(torch.as_tensor(verts, dtype=dtype)[None])
    return project_points(cam, *head_camera(size, size))


@functools.lru_cache(maxsize=1)
def synthetic_model():
    """The project's synthetic FLAME-format head model, or None where it is missing."""
    try:
        from headcast.flame.synthetic import build_synthetic_model
    except ImportError:
        return None
    return build_synthetic_model(seed=0)


def synthetic_head():
    """(v_template (V, 3) float64, faces (F, 3) int64) of the synthetic head, or None."""
    model = synthetic_model()
    if model is None:
        return None
    return np.asarray(model.v_template, dtype=np.float64), np.asarray(model.faces, dtype=np.int64)


def random_soup(n_faces: int, size: int, seed: int, batch: int = 1, tri_scale: float = 0.25):
    """Random triangles in screen space [B, 3F, 3] with depths in [1, 3]."""
    g = np.random.default_rng(seed)
    centres = g.uniform(-0.1 * size, 1.1 * size, (batch, n_faces, 1, 2))
    offsets = g.normal(0.0, tri_scale * size / 2, (batch, n_faces, 3, 2))
    xy = centres + offsets
    w = g.uniform(1.0, 3.0, (batch, n_faces, 3, 1))
    verts = np.concatenate((xy, w), -1).reshape(batch, 3 * n_faces, 3)
    faces = np.arange(3 * n_faces).reshape(n_faces, 3)
    return torch.tensor(verts, dtype=torch.float32), torch.tensor(faces)


def brute_force(verts_screen, faces, height: int, width: int, pixels=None, cull: bool = False,
                eps_px: float = 1e-3, eps_depth: float = 1e-5, chunk: int = 256):
    """Reference rasterization of one image in float64: every pixel centre against every
    triangle.

    Returns (pixels, face id (-1 empty), depth (0 empty), perspective-correct bary [P, 3],
    ambiguous [P]). A pixel is ambiguous when its centre lies within ``eps_px`` pixels of the
    boundary of a triangle that could be in front, or when the two nearest covering depths
    are within ``eps_depth`` (relative): such pixels may legitimately differ between exact
    and float32 implementations.
    """
    v = np.asarray(verts_screen, dtype=np.float64)
    faces = np.asarray(faces)
    tri = v[faces]  # [F, 3, 3]
    area = (tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1]) - \
           (tri[:, 1, 1] - tri[:, 0, 1]) * (tri[:, 2, 0] - tri[:, 0, 0])
    usable = (tri[:, :, 2] > 1e-6).all(1) & (area != 0)
    if cull:
        usable &= area < 0
    if pixels is None:
        pixels = np.arange(height * width)
    px = (pixels % width) + 0.5
    py = (pixels // width) + 0.5
    nxt, prv = [1, 2, 0], [2, 0, 1]
    edge_len = np.linalg.norm(tri[:, prv, :2] - tri[:, nxt, :2], axis=-1)  # edge k is opposite k
    sign = np.sign(area)[None, :, None]
    out_face = np.full(len(pixels), -1)
    out_depth = np.zeros(len(pixels))
    out_bary = np.zeros((len(pixels), 3))
    ambiguous = np.zeros(len(pixels), dtype=bool)
    for s in range(0, len(pixels), chunk):
        dx = tri[None, :, :, 0] - px[s:s + chunk, None, None]  # [P, F, 3]
        dy = tri[None, :, :, 1] - py[s:s + chunk, None, None]
        e = dx[..., nxt] * dy[..., prv] - dy[..., nxt] * dx[..., prv]
        dist = e * sign / np.maximum(edge_len[None], 1e-300)  # > 0 inside
        inside = (dist >= 0).all(-1) & usable[None]
        outside = (dist < -eps_px).any(-1) | ~usable[None]
        near_edge = ~outside & (dist < eps_px).any(-1)
        q = e / tri[None, :, :, 2]
        S = e.sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            zinv = q.sum(-1) / S  # perspective-correct 1/w of the triangle's plane
            plane_depth = np.where(zinv > 0, 1.0 / zinv, np.inf)
        depth = np.where(inside, plane_depth, np.inf)
        rows = np.arange(depth.shape[0])
        best = depth.argmin(1)
        d_best = depth[rows, best]
        hit = np.isfinite(d_best)
        out_face[s:s + chunk] = np.where(hit, best, -1)
        out_depth[s:s + chunk] = np.where(hit, d_best, 0.0)
        qb = q[rows, best]
        with np.errstate(divide="ignore", invalid="ignore"):
            out_bary[s:s + chunk] = np.where(hit[:, None], qb / qb.sum(-1, keepdims=True), 0.0)
        limit = np.where(hit, d_best * (1 + eps_depth), np.inf)[:, None]
        edge_amb = (near_edge & (plane_depth <= limit)).any(1)
        if depth.shape[1] > 1:
            second = np.partition(depth, 1, axis=1)[:, 1]
            tie = hit & (second <= d_best * (1 + eps_depth))
        else:
            tie = np.zeros_like(hit)
        ambiguous[s:s + chunk] = edge_amb | tie
    return pixels, out_face, out_depth, out_bary, ambiguous
