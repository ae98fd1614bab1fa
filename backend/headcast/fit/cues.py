# SPDX-License-Identifier: GPL-3.0-or-later
"""What the fitting is fitted to: per-frame cues from the priors, all optional.

Conventions (shared with :mod:`headcast.render`): images are ``[H, W, C]`` numpy arrays at
the fit resolution, pixel space with x right, y down and pixel ``(ix, iy)`` centred at
``(ix + 0.5, iy + 0.5)``; landmark points are in the same pixel space.

* ``uv`` holds texture coordinates in the model's own uv convention (the values of
  ``model.uv``); converting a network's PNG convention is the priors' job.
* ``normals`` are unit vectors in the model's *head frame*: model axes (+y up, +z toward the
  face), after expression and jaw/eye pose but before the neck and head rotation
  (Pixel3DMM's "FLAME space").
* ``face_mask`` is the foreground face the silhouette term matches; ``silhouette_valid``
  restricts where that term is evaluated (e.g. only where the segmentation is sure).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..flame import SurfacePoints

#: landmark terms the fitting knows a weight for (see ``FitConfig.landmark_weights``)
LANDMARK_TERMS = ("landmarks", "eyes", "iris", "mouth", "contour", "nose", "brows")


class CueError(ValueError):
    """A cue has the wrong shape, type or values; the message names the frame and the cue."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")


@dataclass
class LandmarkTarget:
    """Detected 2-D points and where they sit on the model.

    points: ``[L, 2]`` pixel coordinates.
    embedding: where the points live on the model:
        ``"ibug68"`` the model's iBUG-68 embedding (contour chosen by the head's yaw),
        ``"mediapipe"`` the model's MediaPipe surface embedding (``model.mediapipe``),
        a :class:`~headcast.flame.SurfacePoints` (any surface embedding),
        ``"iris"`` the front vertex of each eyeball (rows: left eye = subject's left, +x, then right),
        or an integer array of vertex ids (one per point).
    ids: which points of the embedding the rows are: iBUG indices 0..67 for ``"ibug68"``
        (default: all 68 in order); detector ids (``SurfacePoints.landmark_ids``) for surface
        embeddings (default: all of the embedding, in its order); 0/1 for ``"iris"``.
        Ids the model cannot place are dropped.
    weights: ``[L]`` per-point confidence (0 = missing); default all 1.
    term: which weight of ``FitConfig.landmark_weights`` applies (eyes, iris, mouth, contour,
        ...); index lists that pick eye, mouth or contour subsets come from the priors.
    lid_pairs: ``[P, 2]`` rows (upper, lower) of ``points`` whose vertical gap drives the
        eyelid-closure term; None for none.
    """

    points: np.ndarray
    embedding: str | SurfacePoints | np.ndarray = "ibug68"
    ids: np.ndarray | None = None
    weights: np.ndarray | None = None
    term: str = "landmarks"
    lid_pairs: np.ndarray | None = None


@dataclass
class FrameCues:
    """Everything known about one frame; every field is optional."""

    uv: np.ndarray | None = None  # [H, W, 2]
    uv_mask: np.ndarray | None = None  # [H, W] bool
    normals: np.ndarray | None = None  # [H, W, 3] unit, head frame
    normal_mask: np.ndarray | None = None  # [H, W] bool
    face_mask: np.ndarray | None = None  # [H, W] float/bool foreground
    silhouette_valid: np.ndarray | None = None  # [H, W] bool, None = everywhere
    landmarks: list[LandmarkTarget] = field(default_factory=list)

    def is_empty(self) -> bool:
        return (self.uv is None and self.normals is None and self.face_mask is None
                and not any(np.any(_weights(t) > 0) for t in self.landmarks))


def _weights(t: LandmarkTarget) -> np.ndarray:
    return np.ones(len(t.points)) if t.weights is None else np.asarray(t.weights, dtype=np.float64)


def _image(where: str, name: str, arr, size: tuple[int, int], channels: int | None) -> np.ndarray:
    a = np.asarray(arr)
    want = size if channels is None else (*size, channels)
    if a.shape != want:
        raise CueError(where, f"{name} has shape {a.shape}, expected {want} (the fit image size)")
    if a.dtype != bool and not np.all(np.isfinite(a)):
        raise CueError(where, f"{name} contains NaN or infinite values")
    return a


def validate_cues(cues: FrameCues, size: tuple[int, int], where: str = "frame") -> FrameCues:
    """Check shapes and values against the fit image ``size`` (H, W); returns a normalised copy
    (float32 maps, bool masks, masks defaulted to where the map is defined)."""
    if not isinstance(cues, FrameCues):
        raise CueError(where, f"expected FrameCues, got {type(cues).__name__}")
    out = FrameCues(landmarks=[])
    if cues.uv is not None:
        out.uv = _image(where, "uv", cues.uv, size, 2).astype(np.float32)
        out.uv_mask = (np.ones(size, bool) if cues.uv_mask is None
                       else _image(where, "uv_mask", cues.uv_mask, size, None).astype(bool))
    elif cues.uv_mask is not None:
        raise CueError(where, "uv_mask given without uv")
    if cues.normals is not None:
        n = _image(where, "normals", cues.normals, size, 3).astype(np.float32)
        length = np.linalg.norm(n, axis=-1)
        mask = (np.ones(size, bool) if cues.normal_mask is None
                else _image(where, "normal_mask", cues.normal_mask, size, None).astype(bool))
        if mask.any() and np.median(np.abs(length[mask] - 1.0)) > 0.05:
            raise CueError(where, "normals are not unit vectors (decode the PNG to [-1, 1] first)")
        out.normals = n / np.maximum(length, 1e-6)[..., None]
        out.normal_mask = mask & (length > 0.5)
    elif cues.normal_mask is not None:
        raise CueError(where, "normal_mask given without normals")
    if cues.face_mask is not None:
        fm = _image(where, "face_mask", cues.face_mask, size, None).astype(np.float32)
        if fm.min() < 0 or fm.max() > 1:
            raise CueError(where, "face_mask values must lie in [0, 1]")
        out.face_mask = fm
        if cues.silhouette_valid is not None:
            out.silhouette_valid = _image(where, "silhouette_valid", cues.silhouette_valid, size, None).astype(bool)
    elif cues.silhouette_valid is not None:
        raise CueError(where, "silhouette_valid given without face_mask")
    for k, t in enumerate(cues.landmarks):
        lw = f"{where} landmarks[{k}]"
        if not isinstance(t, LandmarkTarget):
            raise CueError(lw, f"expected LandmarkTarget, got {type(t).__name__}")
        pts = np.asarray(t.points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise CueError(lw, f"points have shape {pts.shape}, expected (L, 2)")
        w = _weights(t)
        if w.shape != (len(pts),):
            raise CueError(lw, f"weights have shape {w.shape}, expected ({len(pts)},)")
        if np.any(w < 0):
            raise CueError(lw, "weights must be >= 0")
        # points that are missing (NaN) simply get weight 0
        bad = ~np.all(np.isfinite(pts), axis=1)
        w = np.where(bad, 0.0, w)
        pts = np.where(bad[:, None], 0.0, pts)
        ids = None if t.ids is None else np.asarray(t.ids, dtype=np.int64)
        if ids is not None and ids.shape != (len(pts),):
            raise CueError(lw, f"ids have shape {ids.shape}, expected ({len(pts)},)")
        lid = None
        if t.lid_pairs is not None:
            lid = np.asarray(t.lid_pairs, dtype=np.int64)
            if lid.ndim != 2 or lid.shape[1] != 2 or (lid.size and (lid.min() < 0 or lid.max() >= len(pts))):
                raise CueError(lw, f"lid_pairs must be (P, 2) rows into the {len(pts)} points")
        if t.term not in LANDMARK_TERMS:
            raise CueError(lw, f"unknown landmark term {t.term!r}; expected one of {LANDMARK_TERMS}")
        out.landmarks.append(LandmarkTarget(points=pts, embedding=t.embedding, ids=ids, weights=w,
                                            term=t.term, lid_pairs=lid))
    return out


def _block_mean(a: np.ndarray, w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mask-weighted mean over k x k blocks; returns (mean, weight sum) at the block grid."""
    h, wd = a.shape[0] // k * k, a.shape[1] // k * k
    a, w = a[:h, :wd], w[:h, :wd]
    ws = w.reshape(h // k, k, wd // k, k).sum((1, 3))
    if a.ndim == 3:
        s = (a * w[..., None]).reshape(h // k, k, wd // k, k, a.shape[2]).sum((1, 3))
        return s / np.maximum(ws, 1e-12)[..., None], ws
    s = (a * w).reshape(h // k, k, wd // k, k).sum((1, 3))
    return s / np.maximum(ws, 1e-12), ws


def downsample_cues(cues: FrameCues | None, factor: int) -> FrameCues | None:
    """The cues of a frame at 1/factor of the resolution (k x k blocks, trailing rows and
    columns dropped), for coarse fitting passes.

    Maps are averaged over the valid pixels of each block (normals renormalised), a block is
    valid when at least half of its pixels are, the face mask becomes fractional coverage, and
    landmark coordinates scale by 1/factor (pixel centres at +0.5 map onto the coarse grid).
    """
    if cues is None or factor == 1:
        return cues
    k = int(factor)
    half = k * k / 2.0
    out = FrameCues(landmarks=[])
    if cues.uv is not None:
        m = np.ones(cues.uv.shape[:2]) if cues.uv_mask is None else np.asarray(cues.uv_mask, np.float64)
        out.uv, ws = _block_mean(np.asarray(cues.uv, np.float64), m, k)
        out.uv_mask = ws >= half
        out.uv = out.uv.astype(np.float32)
    if cues.normals is not None:
        m = np.ones(cues.normals.shape[:2]) if cues.normal_mask is None else np.asarray(cues.normal_mask, np.float64)
        n, ws = _block_mean(np.asarray(cues.normals, np.float64), m, k)
        length = np.linalg.norm(n, axis=-1, keepdims=True)
        out.normals = (n / np.maximum(length, 1e-9)).astype(np.float32)
        out.normal_mask = (ws >= half) & (length[..., 0] > 0.5)
        out.normals[~out.normal_mask] = np.array([0.0, 0.0, 1.0], np.float32)
    if cues.face_mask is not None:
        ones = np.ones(cues.face_mask.shape)
        out.face_mask = _block_mean(np.asarray(cues.face_mask, np.float64), ones, k)[0].astype(np.float32)
        if cues.silhouette_valid is not None:
            out.silhouette_valid = _block_mean(np.asarray(cues.silhouette_valid, np.float64), ones, k)[0] > 0.999
    for t in cues.landmarks:
        out.landmarks.append(LandmarkTarget(np.asarray(t.points, np.float64) / k, t.embedding, t.ids, t.weights,
                                            t.term, t.lid_pairs))
    return out
