# SPDX-License-Identifier: GPL-3.0-or-later
"""MediaPipe-478 landmark embedding of any head model, by rendering it and detecting on the renders.

No licensed correspondence file is needed: the model's neutral template is rendered with
simple shading (skin, darker lips, white eyeballs with a dark iris and pupil around the gaze
axis) from a few frontal-ish views with Headcast's rasterizer; MediaPipe runs on each render;
every detected point is back-projected onto the surface under it (the visible triangle at that
pixel, with perspective-correct barycentrics of the exact sub-pixel position); the 3D points of
all views are combined (median) and snapped to the closest point of the surface region the
landmark belongs to:

* iris points onto the eyeball of the same side (when the model has eyeball masks);
* eye-contour points (lid margins) and everything else onto the skin, never an eyeball;
* upper-lip points onto triangles that do not follow the jaw, lower-lip points onto triangles
  that do (when the model has a ``jaw`` joint), so the points separate when the mouth opens.

The result is a :class:`headcast.flame.SurfacePoints` (the MediaPipe ids, triangles,
barycentrics). It is cached as ``<model>.mediapipe_embedding.npz``, next to the model file by
default, keyed by a hash of the template, the faces and the settings; a stale cache is rebuilt.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..flame.headmodel import HeadModel, SurfacePoints
from .landmark_sets import LANDMARK_SETS, N_LANDMARKS

log = logging.getLogger(__name__)

EMBEDDING_VERSION = 1
# (yaw, pitch) in degrees: frontal-ish views where MediaPipe is reliable
DEFAULT_VIEWS = ((0.0, 0.0), (-15.0, 0.0), (15.0, 0.0), (0.0, -8.0), (0.0, 8.0), (-8.0, 5.0), (8.0, -5.0))
SKIN = (0.80, 0.62, 0.52)
LIPS = (0.66, 0.36, 0.36)
MOUTH_LINE = (0.22, 0.08, 0.08)
SCLERA = (0.95, 0.95, 0.95)
IRIS = (0.28, 0.20, 0.14)
PUPIL = (0.04, 0.04, 0.04)
BACKGROUND = 0.3
IRIS_COS, PUPIL_COS = 0.85, 0.96  # angular radii of iris (~32 deg) and pupil (~16 deg) on the eyeball
FACE_FRACTION = 0.5  # face height as a fraction of the render
CAMERA_DISTANCE = 0.8  # metres: a portrait-like perspective
SUPERSAMPLE = 2  # renders are antialiased by rendering at twice the size


class EmbeddingError(RuntimeError):
    """The render-and-detect embedding could not be built."""


@dataclass(frozen=True)
class TemplateCamera:
    """How the template is posed and seen: rotation about ``centre``, then a pinhole camera on +z."""

    yaw: float
    pitch: float
    centre: tuple[float, float, float]
    focal: float
    distance: float
    size: int

    def rotation(self) -> np.ndarray:
        a, b = np.radians(self.yaw), np.radians(self.pitch)
        ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
        return rx @ ry

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """Model-frame points [..., 3] (FLAME axes) -> OpenCV camera coordinates (x right, y down, z forward)."""
        p = (np.asarray(points, dtype=np.float64) - np.asarray(self.centre)) @ self.rotation().T
        return np.stack([p[..., 0], -p[..., 1], self.distance - p[..., 2]], axis=-1)

    def project(self, points: np.ndarray) -> np.ndarray:
        """Model-frame points [..., 3] -> continuous pixel coordinates [..., 2] (centres at +0.5)."""
        c = self.to_camera(points)
        half = self.size / 2.0
        return np.stack([self.focal * c[..., 0] / c[..., 2] + half, self.focal * c[..., 1] / c[..., 2] + half], axis=-1)


def _face_region(model: HeadModel) -> np.ndarray:
    if "face" in model.masks and len(model.masks["face"]):
        return model.v_template[model.masks["face"]]
    v = model.v_template
    z0, z1 = v[:, 2].min(), v[:, 2].max()
    return v[v[:, 2] > z0 + 0.6 * (z1 - z0)]  # the front of the head


def template_camera(model: HeadModel, yaw: float, pitch: float, size: int = 512) -> TemplateCamera:
    """A camera that frames the model's face at about half the image height."""
    face = _face_region(model)
    centre = tuple(float(c) for c in (face.min(0) + face.max(0)) / 2)
    height = max(float(np.ptp(face[:, 1])), 0.01)
    focal = FACE_FRACTION * size * CAMERA_DISTANCE / height
    return TemplateCamera(float(yaw), float(pitch), centre, focal, CAMERA_DISTANCE, int(size))


def eyeball_faces(model: HeadModel, side: str) -> np.ndarray:
    """Triangles whose three vertices all belong to the ``{side}_eyeball`` mask (empty without one)."""
    ids = model.masks.get(f"{side}_eyeball")
    if ids is None or len(ids) == 0:
        return np.zeros(0, np.int64)
    inside = np.zeros(model.n_vertices, bool)
    inside[ids] = True
    return np.nonzero(inside[model.faces].all(axis=1))[0]


def mouth_line_vertices(model: HeadModel) -> np.ndarray:
    """Vertices on the mouth opening: open-boundary vertices inside the ``lips`` mask.

    FLAME's lips (and the synthetic model's slit) meet along an open boundary; drawing it dark
    gives the renders the lip line that a closed mouth shows in a photo.
    """
    lips = model.masks.get("lips")
    if lips is None or len(lips) == 0:
        return np.zeros(0, np.int64)
    f = model.faces
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    unique, count = np.unique(edges, axis=0, return_counts=True)
    boundary = np.unique(unique[count == 1])
    return boundary[np.isin(boundary, lips)]


def template_colors(model: HeadModel) -> np.ndarray:
    """Per-vertex albedo (V, 3): skin, lips with a dark lip line, eyeballs with iris and pupil around +z."""
    colors = np.tile(np.asarray(SKIN), (model.n_vertices, 1))
    if "lips" in model.masks:
        colors[model.masks["lips"]] = LIPS
        colors[mouth_line_vertices(model)] = MOUTH_LINE
    for side in ("left", "right"):
        ids = model.masks.get(f"{side}_eyeball")
        if ids is None or len(ids) == 0:
            continue
        p = model.v_template[ids]
        d = p - p.mean(axis=0)
        gaze = d[:, 2] / np.maximum(np.linalg.norm(d, axis=1), 1e-12)  # cosine to the forward axis
        colors[ids] = SCLERA
        colors[ids[gaze > IRIS_COS]] = IRIS
        colors[ids[gaze > PUPIL_COS]] = PUPIL
    return colors


@dataclass
class TemplateRender:
    image: np.ndarray  # [S, S, 3] uint8 RGB
    face_id: np.ndarray  # [S*k, S*k] int64, -1 empty, at the supersampled resolution
    screen: np.ndarray  # [V, 3] float64 (x_px, y_px, depth) at the supersampled resolution
    camera: TemplateCamera
    supersample: int = 1


def render_template(model: HeadModel, camera: TemplateCamera, colors: np.ndarray | None = None,
                    vertices: np.ndarray | None = None, supersample: int = SUPERSAMPLE) -> TemplateRender:
    """Render the template (or other vertices of the same mesh) with Lambert shading and a headlight.

    The image is rendered at ``supersample`` times the size and area-averaged down, which
    gives the antialiased edges a photo has.
    """
    import cv2

    from ..render import interpolate, project_points, rasterize, vertex_normals

    verts = model.v_template if vertices is None else vertices
    cam = torch.as_tensor(camera.to_camera(verts), dtype=torch.float32)[None]
    faces = torch.as_tensor(model.faces, dtype=torch.int64)
    k = max(1, int(supersample))
    S = camera.size * k
    f = camera.focal * k
    screen = project_points(cam, f, f, S / 2.0, S / 2.0)
    raster = rasterize(screen, faces, (S, S), cull_backfaces=True)
    normals = interpolate(vertex_normals(cam, faces), raster, faces)[0]
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    albedo = interpolate(torch.as_tensor(template_colors(model) if colors is None else colors,
                                         dtype=torch.float32), raster, faces)[0]
    light = torch.tensor([0.3, -0.3, -1.0])  # towards the camera, from upper left
    light = light / light.norm()
    shade = 0.35 + 0.65 * (normals @ light).clamp_min(0.0)[..., None]
    covered = (raster.face_id[0] >= 0)[..., None]
    image = torch.where(covered, albedo * shade, torch.full_like(albedo, BACKGROUND))
    image = image.numpy()
    if k > 1:
        image = cv2.resize(image, (camera.size, camera.size), interpolation=cv2.INTER_AREA)
    image = (image * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    return TemplateRender(image, raster.face_id[0].numpy(), screen[0].double().numpy(), camera, k)


def _screen_barycentric(tri: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Perspective-correct barycentrics of pixel positions xy [N, 2] in screen triangles tri [N, 3, 3]."""
    a, b, c = tri[:, 0, :2], tri[:, 1, :2], tri[:, 2, :2]
    cross = lambda u, v: u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]  # noqa: E731
    area = cross(b - a, c - a)
    area = np.where(np.abs(area) < 1e-12, 1e-12, area)
    la = cross(b - xy, c - xy) / area
    lb = cross(c - xy, a - xy) / area
    lc = 1.0 - la - lb
    q = np.stack([la, lb, lc], axis=1) / tri[:, :, 2]  # screen-linear -> perspective-correct
    return q / q.sum(axis=1, keepdims=True)


SEARCH_RADIUS = 6  # pixels: how far a landmark may sit from a pixel of its own surface region


def _search_offsets(radius: int) -> np.ndarray:
    d = np.arange(-radius, radius + 1)
    off = np.stack(np.meshgrid(d, d, indexing="xy"), -1).reshape(-1, 2)
    return off[np.argsort((off ** 2).sum(1), kind="stable")]


def back_project(model: HeadModel, render: TemplateRender, points: np.ndarray,
                 allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Surface points (model frame) [N, 3] under pixel positions [N, 2], and a validity mask [N].

    The triangle is the one visible at the nearest pixel (within ``SEARCH_RADIUS``) whose
    triangle is allowed for that landmark (``allowed``: bool [N, F], default all): a lid-margin
    point that MediaPipe puts on the white of the eye takes the eyelid skin next to it, not the
    eyeball. A point off the silhouette only looks 1 pixel around it. The point's perspective-correct barycentrics in that triangle are used even when
    slightly outside it; the final snapping to the surface corrects that.
    """
    S = render.face_id.shape[0]
    n = len(points)
    points = np.asarray(points, dtype=np.float64) * render.supersample  # to the raster's pixels
    faces_at = np.full(n, -1)
    ix, iy = np.floor(points[:, 0]).astype(int), np.floor(points[:, 1]).astype(int)
    rows = np.arange(n)
    on_surface = np.zeros(n, bool)  # search far only from a covered pixel, not from the background
    inside = (ix >= 0) & (ix < S) & (iy >= 0) & (iy < S)
    on_surface[inside] = render.face_id[iy[inside], ix[inside]] >= 0
    for dx, dy in _search_offsets(SEARCH_RADIUS * render.supersample):
        if max(abs(dx), abs(dy)) > render.supersample:
            faces_at[~on_surface & (faces_at < 0)] = -2  # off the silhouette: give up beyond 1 px
        todo = faces_at == -1
        if not todo.any():
            break
        jx, jy = ix + dx, iy + dy
        inside = todo & (jx >= 0) & (jx < S) & (jy >= 0) & (jy < S)
        face = np.full(n, -1)
        face[inside] = render.face_id[jy[inside], jx[inside]]
        ok = face >= 0
        if allowed is not None:
            ok[ok] = allowed[rows[ok], face[ok]]
        faces_at[ok] = face[ok]
    valid = faces_at >= 0
    out = np.full((n, 3), np.nan)
    if valid.any():
        f = model.faces[faces_at[valid]]
        bary = _screen_barycentric(render.screen[f], points[valid])
        out[valid] = np.einsum("nk,nkc->nc", bary, model.v_template[f])
    return out, valid


def closest_point_barycentric(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentrics [N, 3] of the point of triangle (a, b, c) closest to p (all [N, 3]).

    Voronoi-region test of the triangle's vertices, edges and face (Ericson, Real-Time
    Collision Detection, 5.1.5), vectorised; the first matching region wins.
    """
    dot = lambda u, v: np.einsum("nc,nc->n", u, v)  # noqa: E731
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = dot(ab, ap), dot(ac, ap)
    bp = p - b
    d3, d4 = dot(ab, bp), dot(ac, bp)
    cp = p - c
    d5, d6 = dot(ab, cp), dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        den = 1.0 / (va + vb + vc)
    one, zero = np.ones_like(d1), np.zeros_like(d1)
    regions = [
        ((d1 <= 0) & (d2 <= 0), (one, zero, zero)),
        ((d3 >= 0) & (d4 <= d3), (zero, one, zero)),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), (1 - t_ab, t_ab, zero)),
        ((d6 >= 0) & (d5 <= d6), (zero, zero, one)),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), (1 - t_ac, zero, t_ac)),
        ((va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0), (zero, 1 - t_bc, t_bc)),
    ]
    interior = (1 - vb * den - vc * den, vb * den, vc * den)
    out = np.stack(interior, axis=1)
    done = np.zeros(len(p), bool)
    for cond, bary in regions:
        take = cond & ~done
        out[take] = np.stack(bary, axis=1)[take]
        done |= take
    return out


def snap_to_surface(model: HeadModel, points: np.ndarray, allowed_faces: np.ndarray,
                    k: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Closest surface point among ``allowed_faces`` for each point [N, 3]: (face ids [N], bary [N, 3])."""
    from scipy.spatial import cKDTree

    tri = model.v_template[model.faces[allowed_faces]]  # [F, 3, 3]
    k = min(k, len(allowed_faces))
    _, near = cKDTree(tri.mean(axis=1)).query(points, k=k)
    near = near.reshape(len(points), k)
    p = np.repeat(points, k, axis=0)
    cand = tri[near.ravel()]
    bary = closest_point_barycentric(p, cand[:, 0], cand[:, 1], cand[:, 2])
    dist = np.linalg.norm(np.einsum("nk,nkc->nc", bary, cand) - p, axis=1).reshape(len(points), k)
    best = dist.argmin(axis=1)
    rows = np.arange(len(points))
    return allowed_faces[near[rows, best]], bary.reshape(len(points), k, 3)[rows, best]


def _region_faces(model: HeadModel) -> dict[str, np.ndarray]:
    """Triangle sets per landmark class: eyeballs, skin, and the upper/lower lip sides."""
    n_f = model.faces.shape[0]
    left, right = eyeball_faces(model, "left"), eyeball_faces(model, "right")
    skin_mask = np.ones(n_f, bool)
    skin_mask[left] = skin_mask[right] = False
    skin = np.nonzero(skin_mask)[0]
    regions = {"left_eyeball": left if len(left) else skin, "right_eyeball": right if len(right) else skin,
               "skin": skin, "upper_lip": skin, "lower_lip": skin}
    if "jaw" in model.joint_names:
        jaw = model.weights[:, list(model.joint_names).index("jaw")][model.faces].mean(axis=1)
        upper, lower = skin[jaw[skin] < 0.5], skin[jaw[skin] >= 0.5]
        if len(upper) and len(lower):
            regions["upper_lip"], regions["lower_lip"] = upper, lower
    return regions


def landmark_regions() -> np.ndarray:
    """Region name of each of the 478 MediaPipe landmarks (see :func:`_region_faces`)."""
    region = np.array(["skin"] * N_LANDMARKS, dtype=object)
    for side in ("left", "right"):
        region[list(LANDMARK_SETS[f"{side}_iris_centre"] + LANDMARK_SETS[f"{side}_iris_ring"])] = f"{side}_eyeball"
    corners = {chain[i] for chain in (LANDMARK_SETS["lips_outer_upper"], LANDMARK_SETS["lips_inner_upper"])
               for i in (0, -1)}  # mouth corners belong to neither lip
    for chain, name in (("upper", "upper_lip"), ("lower", "lower_lip")):
        ids = [i for i in LANDMARK_SETS[f"lips_outer_{chain}"] + LANDMARK_SETS[f"lips_inner_{chain}"] if i not in corners]
        region[ids] = name
    return region


def embedding_cache_key(model: HeadModel, views=DEFAULT_VIEWS, image_size: int = 512) -> str:
    """Hash of everything the embedding depends on: template, faces, masks used, settings."""
    import mediapipe

    h = hashlib.sha256()
    settings = (EMBEDDING_VERSION, mediapipe.__version__, image_size, tuple(views), SUPERSAMPLE, SKIN, LIPS,
                MOUTH_LINE, SCLERA, IRIS, PUPIL, FACE_FRACTION, CAMERA_DISTANCE, SEARCH_RADIUS)
    h.update(repr(settings).encode())
    h.update(np.ascontiguousarray(model.v_template, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(model.faces, dtype=np.int64).tobytes())
    for key in ("face", "lips", "left_eyeball", "right_eyeball"):
        h.update(key.encode() + np.ascontiguousarray(model.masks.get(key, np.zeros(0)), dtype=np.int64).tobytes())
    if "jaw" in model.joint_names:
        h.update(np.ascontiguousarray(model.weights[:, list(model.joint_names).index("jaw")], dtype=np.float64).tobytes())
    return h.hexdigest()


def embedding_cache_path(model: HeadModel, cache_dir: str | Path | None = None,
                         cache_name: str | None = None) -> Path | None:
    """``<cache_dir>/<name>.mediapipe_embedding.npz``; by default next to the model file it was loaded from."""
    if cache_dir is None:
        source = Path(model.source) if model.source else None
        if source is None or not source.is_file():
            return None
        cache_dir, cache_name = source.parent, cache_name or source.stem
    name = cache_name or "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model.name)
    return Path(cache_dir).expanduser() / f"{name}.mediapipe_embedding.npz"


def _read_cache(path: Path, key: str) -> SurfacePoints | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                log.info("%s: cached MediaPipe embedding is for another template or settings; rebuilding", path)
                return None
            return SurfacePoints(landmark_ids=z["landmark_ids"].astype(np.int64), faces=z["faces"].astype(np.int64),
                                 bary=z["bary"].astype(np.float64))
    except (OSError, ValueError, KeyError, EOFError) as exc:
        log.warning("%s: unreadable MediaPipe embedding cache (%s); rebuilding", path, exc)
        return None


def _write_cache(path: Path, key: str, emb: SurfacePoints, spread: np.ndarray, counts: np.ndarray,
                 views: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, key=np.array(key), landmark_ids=emb.landmark_ids, faces=emb.faces, bary=emb.bary,
                        spread_m=spread, views_per_landmark=counts, views_used=np.array(views),
                        version=np.array(EMBEDDING_VERSION))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:  # write then rename, so readers never see half a file
        f.write(buf.getvalue())
    os.replace(tmp, path)


@dataclass
class EmbeddingReport:
    views_used: int  # renders in which MediaPipe found the face
    views_per_landmark: np.ndarray  # [478] how many renders placed each landmark
    spread_m: np.ndarray  # [478] rms distance of the per-view 3D points from their median (metres)
    cache_path: Path | None
    from_cache: bool


def build_mediapipe_embedding(model: HeadModel, cache_dir: str | Path | None = None, *,
                              views=DEFAULT_VIEWS, image_size: int = 512, cache_name: str | None = None,
                              refresh: bool = False, return_report: bool = False):
    """The MediaPipe-478 embedding of ``model`` by render-and-detect (see the module docstring).

    cache_dir: folder for ``<name>.mediapipe_embedding.npz``; None caches next to the model
        file the model was loaded from (``model.source``), or not at all when there is none.
    views: (yaw, pitch) degrees of the renders. refresh: ignore an existing cache.
    Returns :class:`SurfacePoints` (and an :class:`EmbeddingReport` with ``return_report``).
    Raises :class:`EmbeddingError` when MediaPipe finds no face on any render.
    """
    from .mediapipe_faces import FaceLandmarker

    cache = embedding_cache_path(model, cache_dir, cache_name)
    key = embedding_cache_key(model, views, image_size)
    if cache is not None and cache.is_file() and not refresh:
        cached = _read_cache(cache, key)
        if cached is not None:
            if return_report:
                with np.load(cache) as z:
                    report = EmbeddingReport(int(z["views_used"]), z["views_per_landmark"], z["spread_m"], cache, True)
                return cached, report
            return cached
    regions = _region_faces(model)
    region_of = landmark_regions()
    names = sorted(regions)
    region_masks = np.zeros((len(names), model.faces.shape[0]), bool)
    for r, name in enumerate(names):
        region_masks[r, regions[name]] = True
    allowed = region_masks[[names.index(r) for r in region_of]]  # [478, F]
    per_view = []
    with FaceLandmarker(tracking=False, search_small_faces=False) as landmarker:
        for yaw, pitch in views:
            render = render_template(model, template_camera(model, yaw, pitch, image_size))
            pts = landmarker.detect(render.image)
            if pts is None:
                log.info("%s: MediaPipe found no face on the render at yaw %g, pitch %g", model.name, yaw, pitch)
                continue
            xyz, valid = back_project(model, render, pts[:, :2], allowed)
            xyz[~valid] = np.nan
            per_view.append(xyz)
    if not per_view:
        raise EmbeddingError(f"MediaPipe found no face on any render of model {model.name!r}; "
                             "the template may not look like a face from the front (+z)")
    stack = np.stack(per_view)  # [views, 478, 3]
    counts = np.isfinite(stack[..., 0]).sum(axis=0)
    placed = counts > 0
    centre = np.full((N_LANDMARKS, 3), np.nan)
    spread = np.full(N_LANDMARKS, np.nan)
    centre[placed] = np.nanmedian(stack[:, placed], axis=0)
    spread[placed] = np.sqrt(np.nanmean(((stack[:, placed] - centre[placed]) ** 2).sum(-1), axis=0))
    ids = np.nonzero(placed)[0]
    faces = np.zeros(len(ids), np.int64)
    bary = np.zeros((len(ids), 3))
    for name, region_faces in regions.items():
        sel = np.nonzero(region_of[ids] == name)[0]
        if len(sel):
            faces[sel], bary[sel] = snap_to_surface(model, centre[ids[sel]], region_faces)
    emb = SurfacePoints(landmark_ids=ids.astype(np.int64), faces=faces, bary=bary)
    if cache is not None:
        _write_cache(cache, key, emb, spread, counts, len(per_view))
    if return_report:
        return emb, EmbeddingReport(len(per_view), counts, spread, cache, False)
    return emb


def embedded_points(model: HeadModel, emb: SurfacePoints, vertices: np.ndarray | None = None) -> np.ndarray:
    """3D positions [L, 3] of the embedded landmarks on ``vertices`` (default: the template)."""
    v = model.v_template if vertices is None else np.asarray(vertices)
    return np.einsum("nk,nkc->nc", emb.bary, v[model.faces[emb.faces]])
