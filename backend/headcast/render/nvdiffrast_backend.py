# SPDX-License-Identifier: GPL-3.0-or-later
"""Optional nvdiffrast backend (CUDA only).

nvdiffrast is distributed under the NVIDIA Source Code License (non-commercial, research
and evaluation only), so it is never a dependency of Headcast: this module is imported only
when a caller asks for it or when ``backend='auto'`` sees CUDA tensors, and everything
degrades to the torch backend when ``import nvdiffrast.torch`` fails.

Conversions to nvdiffrast's OpenGL conventions, so that callers see the same buffers as
from the torch/numba backends:

* clip space: ``x_clip = (2 x_px / W - 1) w``, ``y_clip = (1 - 2 y_px / H) w``, ``w_clip = w``;
  ``z_clip`` maps w in [near, far] to NDC [-1, 1] (standard perspective depth, so the depth
  test orders surfaces by w). ``near``/``far`` come from the data to keep depth precision.
* nvdiffrast's image row 0 is the bottom row: its buffers are flipped back (row r -> H-1-r).
* its ``rast[..., 3]`` is triangle_id + 1 (0 = empty); its ``(u, v)`` weight vertices 0 and
  1 and ``1 - u - v`` weights vertex 2.
* its z/w carries no gradient; the depth buffer is recomputed as the perspective-correct
  interpolation of w, detached.

Differences: nvdiffrast clips triangles at the near plane where the torch/numba passes drop
them, and it has its own tie-breaking on shared edges. Untested in CI (no GPU there).
"""
from __future__ import annotations

import weakref

import torch

from .raster import Raster

_IMPORT_ERROR: Exception | None = None
try:  # optional, non-commercial licence
    import nvdiffrast.torch as dr
except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
    dr = None
    _IMPORT_ERROR = exc

_CONTEXTS: dict = {}
_TRI32: dict = {}
_TOPOLOGY: dict = {}


def available() -> bool:
    """True when ``nvdiffrast.torch`` imports and CUDA is usable."""
    return dr is not None and torch.cuda.is_available()


def _context(device: torch.device):
    """One rasterizer context per device, created on first use."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    ctx = _CONTEXTS.get(device)
    if ctx is None:
        ctx = dr.RasterizeCudaContext(device=device)
        _CONTEXTS[device] = ctx
    return ctx


def to_clip(verts_screen: torch.Tensor, resolution: tuple[int, int], near: float):
    """Pixel-space (x, y, w) [B, V, 3] -> nvdiffrast clip space [B, V, 4] (float32)."""
    H, W = resolution
    x, y, w = verts_screen.to(torch.float32).unbind(-1)
    with torch.no_grad():
        wd = w.detach()
        in_front = wd > near
        w_min = torch.where(in_front, wd, torch.full_like(wd, float("inf"))).amin()
        z_near = max(float(near), 0.5 * float(w_min)) if torch.isfinite(w_min) else float(near)
        z_far = 2.0 * float(wd.amax()) + z_near
        z_clip = ((z_far + z_near) * wd - 2.0 * z_far * z_near) / (z_far - z_near)
    return torch.stack(((2.0 * x / W - 1.0) * w, (1.0 - 2.0 * y / H) * w, z_clip, w),
                       -1).contiguous()


def rasterize_nvdiffrast(verts_screen: torch.Tensor, faces: torch.Tensor,
                         resolution: tuple[int, int], cull_backfaces: bool,
                         near: float) -> Raster:
    """Rasterize with nvdiffrast and return buffers in the renderer's conventions."""
    if not available():
        raise RuntimeError(f"nvdiffrast is not available: {_IMPORT_ERROR}")
    H, W = resolution
    B = verts_screen.shape[0]
    ctx = _context(verts_screen.device)
    pos = to_clip(verts_screen, resolution, near)
    tri = _tri_int32(faces)

    calls = []  # (batch slice, rast, pos, tri, face map or None), kept for antialias
    if cull_backfaces:
        # nvdiffrast does not cull; rasterize each image with its front faces only.
        from .triangles import signed_area2

        with torch.no_grad():
            area = signed_area2(verts_screen.detach()[:, faces.long(), :2])  # [B, F]
        for b in range(B):
            keep = torch.nonzero(area[b] < 0).squeeze(1)
            tri_b = tri[keep].contiguous()
            pos_b = pos[b:b + 1].contiguous()
            rast, _ = dr.rasterize(ctx, pos_b, tri_b, resolution=[H, W])
            calls.append((slice(b, b + 1), rast, pos_b, tri_b, keep))
    else:
        rast, _ = dr.rasterize(ctx, pos, tri, resolution=[H, W])
        calls.append((slice(0, B), rast, pos, tri, None))

    face_ids, barys = [], []
    for _, rast, _, _, keep in calls:
        rast_td = rast.flip(1)  # bottom-up rows -> top-down rows
        fid = rast_td[..., 3].round().long() - 1
        if keep is not None:
            fid = torch.where(fid >= 0, keep[fid.clamp(min=0)], fid)
        u, v = rast_td[..., 0], rast_td[..., 1]
        face_ids.append(fid)
        barys.append(torch.stack((u, v, 1.0 - u - v), -1))
    face_id = torch.cat(face_ids, 0)
    bary = torch.cat(barys, 0).to(verts_screen.dtype)

    flat = face_id.reshape(-1)
    pixel_index = torch.nonzero(flat >= 0).squeeze(1)
    pixel_face = flat[pixel_index]
    pixel_bary = bary.reshape(-1, 3)[pixel_index]
    with torch.no_grad():
        # perspective-correct interpolation of w is exact (w is affine on the triangle)
        batch = torch.div(pixel_index, H * W, rounding_mode="floor")
        V = verts_screen.shape[1]
        w = verts_screen.detach()[..., 2].reshape(-1)[faces[pixel_face] + (batch * V)[:, None]]
        depth = torch.zeros(B * H * W, dtype=torch.float32, device=verts_screen.device)
        depth[pixel_index] = (pixel_bary.detach() * w).sum(1).to(torch.float32)
    return Raster(face_id, depth.view(B, H, W), pixel_index, pixel_face, pixel_bary,
                  (H, W), "nvdiffrast", native=calls)


def _cached(cache: dict, obj: torch.Tensor, make):
    """Memoise ``make(obj)`` on the tensor object (and its version counter)."""
    key = id(obj)
    hit = cache.get(key)
    if hit is not None and hit[0]() is obj and hit[1] == obj._version:
        return hit[2]
    value = make(obj)
    ref = weakref.ref(obj, lambda _r, k=key: cache.pop(k, None))
    cache[key] = (ref, obj._version, value)
    return value


def _tri_int32(faces: torch.Tensor) -> torch.Tensor:
    return _cached(_TRI32, faces, lambda f: f.to(torch.int32).contiguous())


def _topology_hash(tri: torch.Tensor):
    return _cached(_TOPOLOGY, tri, dr.antialias_construct_topology_hash)


def antialias_nvdiffrast(image: torch.Tensor, raster: Raster, faces: torch.Tensor) -> torch.Tensor:
    """nvdiffrast's antialias on a top-down image [B, H, W, C] rasterized by nvdiffrast."""
    outs = []
    for sl, rast, pos, tri, keep in raster.native:
        color = image[sl].flip(1).to(torch.float32).contiguous()
        # the per-image culled face subsets change every step: let nvdiffrast hash them
        topo = None if keep is not None else _topology_hash(tri)
        out = dr.antialias(color, rast, pos, tri, topology_hash=topo)
        outs.append(out.flip(1))
    return torch.cat(outs, 0).to(image.dtype)
