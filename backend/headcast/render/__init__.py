# SPDX-License-Identifier: GPL-3.0-or-later
"""Differentiable triangle rasterizer in pixel space (CPU first, nvdiffrast on CUDA).

Conventions: pixel space with x right, y down, pixel (ix, iy) centred at (ix + 0.5, iy + 0.5);
screen vertices are (x_px, y_px, w) with w the camera-space depth (see :func:`project_points`,
OpenCV camera: x right, y down, z forward).

Typical fitting use::

    screen = project_points(verts_cam, fx, fy, cx, cy)          # [B, V, 3]
    rast = rasterize(screen, faces, (H, W), cull_backfaces=True)
    normals = render_normals(rast, verts_cam, faces)              # [B, H, W, 3]
    uv = interpolate(uv_coords, rast, faces_uv)                   # [B, H, W, 2]
    silhouette = antialias(rast.mask, rast, screen, faces)        # [B, H, W, 1]
    visible = vertex_visibility(screen, rast)                     # [B, V] bool

Backends: 'torch' (any device), 'numba' (CPU visibility pass, if numba is installed) and
'nvdiffrast' (CUDA, optional, non-commercial licence); 'auto' picks nvdiffrast for CUDA
tensors when it imports, numba for CPU tensors when it imports, torch otherwise.
"""
from .antialias import EdgeTopology, antialias, build_edge_topology, edge_topology
from .camera import project_points
from .interpolate import interpolate
from .raster import BACKENDS, Raster, rasterize, resolve_backend
from .shading import (face_normals, render_mask, render_normals, render_uv, vertex_normals,
                      vertex_visibility)

__all__ = [
    "BACKENDS",
    "EdgeTopology",
    "Raster",
    "antialias",
    "build_edge_topology",
    "edge_topology",
    "face_normals",
    "interpolate",
    "project_points",
    "rasterize",
    "render_mask",
    "render_normals",
    "render_uv",
    "resolve_backend",
    "vertex_normals",
    "vertex_visibility",
]
