# SPDX-License-Identifier: GPL-3.0-or-later
"""Synthetic ground truth and cues: what the priors would predict if they were exact, and
the ways real networks err.

* :func:`random_truth` draws identities, expressions, poses and cameras (a smooth clip for
  video) as a :class:`FitResult`, the same container a fit returns, so errors are computed
  between two results;
* :func:`render_cues` renders exact uv, normal, mask and landmark cues of one frame with
  :mod:`headcast.render`;
* :func:`corrupt` applies network-like errors: smooth (low-frequency) warps and biases,
  pixel noise, blur, outlier blobs, a wrong eye region, ragged mask edges, landmark jitter
  and dropouts; :func:`drop_frames` removes whole frames.

Used by the tests, ``scripts/bench_fit.py`` and the pipeline's tests.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.ndimage import binary_dilation, binary_erosion, gaussian_filter

from ..flame import HeadModel, axis_angle_to_matrix
from ..render import interpolate, project_points, rasterize, vertex_normals
from .cues import FrameCues, LandmarkTarget
from .head import FACING_CAMERA, FitHead
from .result import FitResult

IBUG_EYES = np.arange(36, 48)
IBUG_MOUTH = np.arange(48, 68)
IBUG_CONTOUR = np.arange(0, 17)
IBUG_BROWS_NOSE = np.arange(17, 36)
#: (upper, lower) iBUG lid points: 37-41, 38-40 (right eye), 43-47, 44-46 (left eye)
IBUG_LID_PAIRS = np.array([[37, 41], [38, 40], [43, 47], [44, 46]])


# ---- ground truth ---------------------------------------------------------------------------

def _rot(aa) -> np.ndarray:
    return axis_angle_to_matrix(torch.as_tensor(np.asarray(aa, dtype=np.float64))).numpy()


def _smooth_series(rng: np.random.Generator, n: int, amplitude: float, period=(25.0, 70.0)) -> np.ndarray:
    """A smooth zero-mean-ish 1-D signal: two sinusoids with random periods and phases."""
    t = np.arange(n)
    out = np.zeros(n)
    for _ in range(2):
        p = rng.uniform(*period)
        out += np.sin(2 * np.pi * t / p + rng.uniform(0, 2 * np.pi))
    return amplitude * out / 2.0


def random_truth(model: HeadModel, rng: np.random.Generator, n_frames: int = 1, size: int = 256, *,
                 video: bool = False, shape_scale: float = 1.0, expr_scale: float = 0.6,
                 max_yaw_deg: float = 30.0, n_shape: int | None = None, n_expr: int | None = None) -> FitResult:
    """Random identity, per-frame expression and pose, and camera(s), as a :class:`FitResult`.

    ``video=True`` makes the frames a smooth clip with one camera; otherwise frames are
    independent (unordered photos), each with its own camera. The camera puts the head at
    about the framing of Pixel3DMM's face crop (head filling most of the frame).
    """
    ks = model.shapedirs.shape[2] if n_shape is None else n_shape
    ke = model.exprdirs.shape[2] if n_expr is None else n_expr
    n = n_frames
    shape = rng.normal(size=ks) * shape_scale
    if model.shape_bounds is not None:
        shape = np.clip(shape, model.shape_bounds[:ks, 0], model.shape_bounds[:ks, 1])
    n_j = model.n_joints
    names = list(model.joint_names)

    def series(amp, period=(25.0, 70.0)):
        return _smooth_series(rng, n, amp, period) if video else rng.uniform(-amp, amp, size=n)

    if video:
        expr = np.stack([_smooth_series(rng, n, expr_scale, (15.0, 50.0)) for _ in range(ke)], axis=1)
    else:
        expr = rng.normal(size=(n, ke)) * expr_scale
    if model.expr_bounds is not None:
        lo, hi = model.expr_bounds[:ke, 0], model.expr_bounds[:ke, 1]
        expr = np.clip(np.abs(expr), lo, hi)
    yaw = series(np.radians(max_yaw_deg))
    pitch = series(np.radians(12.0))
    roll = series(np.radians(8.0))
    rots = np.broadcast_to(np.eye(3), (n, n_j, 3, 3)).copy()
    if "jaw" in names:
        jaw_open = np.abs(series(0.2, (20.0, 40.0))) if video else rng.uniform(0.0, 0.25, size=n)
        rots[:, names.index("jaw")] = _rot(np.stack([jaw_open, series(0.03), series(0.02)], axis=1))
    if "neck" in names:
        rots[:, names.index("neck")] = _rot(np.stack([series(0.12), series(0.15), series(0.05)], axis=1))
    gaze = np.stack([series(0.15), series(0.2), np.zeros(n)], axis=1)
    for k, name in enumerate(("eye_left", "eye_right")):
        if name in names:
            rots[:, names.index(name)] = _rot(gaze + rng.normal(scale=0.01, size=(n, 3)))
    eyelids = None
    if model.eyelids is not None:
        eyelids = np.clip(np.abs(series(0.4, (10.0, 30.0))) if video else rng.uniform(0.0, 0.5, size=(n, 2)),
                          0.0, 1.0)
        if eyelids.ndim == 1:
            eyelids = np.stack([eyelids, eyelids], axis=1)
    R_model = _rot(np.stack([pitch, yaw, roll], axis=1))
    R_head = np.einsum("ij,njk->nik", FACING_CAMERA, R_model)
    n_cam = 1 if video else n
    f_rel = rng.uniform(3.5, 6.0, size=n_cam)
    pp = rng.uniform(-0.03, 0.03, size=(n_cam, 2))
    cam = np.zeros(n, dtype=np.int64) if video else np.arange(n)
    # distance such that ~0.24 m (the face crop at the head) spans the image width
    z = f_rel[cam] * 0.24 * (rng.uniform(0.92, 1.08) if video else rng.uniform(0.92, 1.08, size=n))
    if video:
        z = z * (1.0 + series(0.05))
    t = np.stack([series(0.01) * z, series(0.01) * z, z], axis=1)
    t[:, 1] += 0.01 * z  # the crop is centred a little below the eyes
    fx = f_rel[cam] * size
    intr = np.stack([fx, fx, size / 2 * (1 + pp[cam, 0]), size / 2 * (1 + pp[cam, 1])], axis=1)
    return FitResult(image_size=(size, size), shape=shape, expression=expr, eyelids=eyelids, rotations=rots,
                     R_head=R_head, t_head=t, intrinsics=intr, shared_camera=video, loss=np.zeros(n),
                     valid=np.ones(n, bool), joint_names=tuple(names), model_name=model.name,
                     licence=model.licence)


# ---- rendering ------------------------------------------------------------------------------

@dataclass
class SyntheticFrame:
    """Exact cues of one frame and per-pixel maps that the corruptions need."""

    cues: FrameCues
    eye_pixels: np.ndarray  # [H, W] bool, eye region (sockets and eyeballs) in the image
    coverage: np.ndarray  # [H, W] bool, any surface


def _region_indicator(model: HeadModel, names) -> np.ndarray:
    ind = np.zeros(model.n_vertices)
    for n in names:
        if n in model.masks:
            ind[model.masks[n]] = 1.0
    return ind


def render_cues(model: HeadModel, truth: FitResult, frame: int, *, head: FitHead | None = None,
                landmarks: bool = True,
                uv_regions=("face", "left_ear", "right_ear", "neck", "left_eyeball", "right_eyeball")) -> SyntheticFrame:
    """Render the exact cues of ``truth``'s frame at its image size.

    uv and normals are interpolated at pixel centres over the surface, normals from the
    mesh with the neck at rest (the head frame); the face mask is the rendered face region
    (the same region the silhouette term renders); landmarks are the projected iBUG-68
    groups (eyes with lid pairs, mouth, contour, brows/nose) and the irises.
    """
    h, w = truth.image_size
    dt = torch.float64
    head = head if head is not None and head.dtype == dt else FitHead(model, len(truth.shape),
                                                                      truth.expression.shape[1], dt)
    sh = torch.as_tensor(truth.shape, dtype=dt)[None]
    ex = torch.as_tensor(truth.expression[frame], dtype=dt)[None]
    el = None if truth.eyelids is None else torch.as_tensor(truth.eyelids[frame], dtype=dt)[None]
    rots = torch.as_tensor(truth.rotations[frame], dtype=dt)[None]
    verts, noneck = head.forward(sh, ex, el, rots, want_noneck=True)
    R = torch.as_tensor(truth.R_head[frame], dtype=dt)
    t = torch.as_tensor(truth.t_head[frame], dtype=dt)
    vcam = verts @ R.T + t
    fx, fy, cx, cy = (float(v) for v in truth.intrinsics[frame])
    screen = project_points(vcam, fx, fy, cx, cy)
    rast = rasterize(screen, head.faces, (h, w), cull_backfaces=True)
    covered = (rast.face_id[0] >= 0).numpy()
    ind = np.stack([_region_indicator(model, uv_regions),
                    _region_indicator(model, ("eye_region", "left_eyeball", "right_eyeball")),
                    _region_indicator(model, ("neck",))], axis=1)
    attr = torch.cat([vertex_normals(noneck, head.faces), torch.as_tensor(ind, dtype=dt)[None]], dim=-1)
    img = interpolate(attr, rast, head.faces)[0].numpy()
    normals = img[..., :3]
    normals = normals / np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)
    # the face mask is drawn per triangle, as the fitting's silhouette term renders it
    sil_face = head.sil_face.numpy() > 0.5
    ids = rast.face_id[0].numpy()
    face = covered & sil_face[np.maximum(ids, 0)]
    uv_region = (img[..., 3] > 0.5) & covered
    eye_pixels = (img[..., 4] > 0.5) & covered
    neck = (img[..., 5] > 0.5) & covered & ~face
    # like a face parser's masks: the silhouette is judged on background and neck pixels only
    cues = FrameCues(face_mask=face.astype(np.float32), silhouette_valid=~covered | neck,
                     normals=normals.astype(np.float32), normal_mask=face.copy())
    if model.uv is not None:
        uv = interpolate(torch.as_tensor(model.uv, dtype=dt), rast, torch.as_tensor(model.faces_uv))[0].numpy()
        cues.uv = np.where(uv_region[..., None], uv, 0.0).astype(np.float32)
        cues.uv_mask = uv_region
    if landmarks:
        cues.landmarks = truth_landmarks(model, head, vcam, rots, R, (fx, fy, cx, cy))
    return SyntheticFrame(cues=cues, eye_pixels=eye_pixels, coverage=covered)


def truth_landmarks(model: HeadModel, head: FitHead, vcam: torch.Tensor, rots: torch.Tensor, R: torch.Tensor,
                    intr) -> list[LandmarkTarget]:
    """Projected landmark groups of camera-frame vertices ``vcam`` [1, V, 3]."""
    fx, fy, cx, cy = intr
    out = []
    if model.landmarks is not None:
        contour = rots.clone()
        contour[:, 0] = torch.as_tensor(FACING_CAMERA, dtype=vcam.dtype) @ R
        pts = project_points(head.layer.landmarks68(vcam, contour), fx, fy, cx, cy)[0, :, :2].numpy()
        lid = np.array([[np.nonzero(IBUG_EYES == a)[0][0], np.nonzero(IBUG_EYES == b)[0][0]]
                        for a, b in IBUG_LID_PAIRS])
        out.append(LandmarkTarget(pts[IBUG_EYES], "ibug68", ids=IBUG_EYES, term="eyes", lid_pairs=lid))
        out.append(LandmarkTarget(pts[IBUG_MOUTH], "ibug68", ids=IBUG_MOUTH, term="mouth"))
        out.append(LandmarkTarget(pts[IBUG_CONTOUR], "ibug68", ids=IBUG_CONTOUR, term="contour"))
        out.append(LandmarkTarget(pts[IBUG_BROWS_NOSE], "ibug68", ids=IBUG_BROWS_NOSE, term="nose"))
    if head.iris_ids is not None:
        pts = project_points(vcam[:, torch.as_tensor(head.iris_ids)], fx, fy, cx, cy)[0, :, :2].numpy()
        out.append(LandmarkTarget(pts, "iris", term="iris"))
    if model.mediapipe is not None:
        mp = model.mediapipe
        from ..flame import barycentric_points
        p3 = barycentric_points(vcam, head.faces, torch.as_tensor(mp.faces), torch.as_tensor(mp.bary, dtype=vcam.dtype))
        pts = project_points(p3, fx, fy, cx, cy)[0, :, :2].numpy()
        out.append(LandmarkTarget(pts, "mediapipe", ids=mp.landmark_ids.copy(), term="landmarks"))
    return out


# ---- corruption -----------------------------------------------------------------------------

@dataclass
class Corruption:
    """How wrong the synthetic predictions are (pixel sizes at 256 px width; scaled).

    Smooth fields and noise are drawn per component: ``uv_warp_px`` is the rms shift along
    each image axis (about 2 px of displacement over the head); ``normal_bias_deg`` and
    ``normal_noise_deg``, converted to radians, are the rms of what is added to each of the
    three normal components (about 7.5° and 5.7° of angle once renormalised)."""

    uv_warp_px: float = 1.5  # smooth displacement of the uv map (low-frequency error)
    uv_noise: float = 0.001  # per-pixel uv noise (uv units)
    normal_bias_deg: float = 6.0  # smooth angular error of the normals
    normal_noise_deg: float = 4.0  # per-pixel angular noise
    # Gaussian blur of each map (networks predict smooth maps), before the pixel noise: a
    # blurred map keeps less of the face's fine detail above the same noise
    uv_blur_px: float = 1.0
    normal_blur_px: float = 1.0
    blobs: int = 2  # outlier blobs (wrong uv and normals inside)
    blob_radius_px: float = 8.0
    wrong_eyes: bool = True  # eye region: uv shifted, normals flattened
    mask_edge_px: float = 1.5  # ragged mask edges (random erosion / dilation)
    landmark_noise_px: float = 1.5
    landmark_outlier_frac: float = 0.05
    landmark_outlier_px: float = 8.0
    landmark_drop_frac: float = 0.05


EXACT = None
REALISTIC = Corruption()


def _smooth_noise(rng: np.random.Generator, shape, sigma_px: float, channels: int) -> np.ndarray:
    """Unit-RMS smooth random field [H, W, C] with correlation length ~sigma_px."""
    f = np.stack([gaussian_filter(rng.normal(size=shape), sigma_px) for _ in range(channels)], axis=-1)
    return f / max(np.sqrt(np.mean(f ** 2)), 1e-12)


def _warp(img: np.ndarray, dx: np.ndarray, dy: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample img at (x + dx, y + dy), nearest valid pixel (keeps masks crisp)."""
    h, w = valid.shape
    ys, xs = np.mgrid[0:h, 0:w]
    sx = np.clip(np.round(xs + dx).astype(int), 0, w - 1)
    sy = np.clip(np.round(ys + dy).astype(int), 0, h - 1)
    return img[sy, sx], valid[sy, sx]


def _ragged(mask: np.ndarray, rng: np.random.Generator, px: float) -> np.ndarray:
    noise = gaussian_filter(rng.normal(size=mask.shape), 3.0)  # drawn even when px is 0 (see corrupt)
    if px <= 0:
        return mask
    noise /= max(np.abs(noise).max(), 1e-12)
    grow = binary_dilation(mask, iterations=max(1, int(round(px))))
    shrink = binary_erosion(mask, iterations=max(1, int(round(px))))
    return np.where(noise > 0.3, grow, np.where(noise < -0.3, shrink, mask))


def corrupt(frame: SyntheticFrame, rng: np.random.Generator, c: Corruption | None = REALISTIC,
            persistent: dict | None = None, rho: float = 0.0) -> FrameCues:
    """A corrupted copy of the frame's cues (the exact cues themselves if ``c`` is None).

    ``persistent`` / ``rho``: for clips, the smooth error fields are mixed as
    ``rho * persistent + sqrt(1 - rho^2) * fresh`` (a network errs similarly on similar
    consecutive frames); see :func:`corrupt_clip`.

    Every kind of error draws its random numbers whether its size is zero or not, so that
    with the same generator a corruption that differs in one size (zero: that error taken
    out) has exactly the same other errors (the benchmark's ablation relies on it). Blobs
    are taken out with ``blob_radius_px=0`` and landmark outliers with
    ``landmark_outlier_px=0`` for that reason (their counts decide how much is drawn).
    """
    cues = frame.cues
    if c is None:
        return replace(cues, landmarks=list(cues.landmarks))
    h, w = frame.coverage.shape
    s = w / 256.0

    def smooth(name: str, sigma: float, ch: int) -> np.ndarray:
        fresh = _smooth_noise(rng, (h, w), sigma, ch)
        if persistent is None or rho <= 0:
            return fresh
        if name not in persistent:
            persistent[name] = _smooth_noise(rng, (h, w), sigma, ch)
        return rho * persistent[name] + np.sqrt(1 - rho * rho) * fresh

    out = FrameCues()
    blobs = np.zeros((h, w), bool)
    ys, xs = np.mgrid[0:h, 0:w]
    cov_y, cov_x = np.nonzero(frame.coverage)
    for _ in range(c.blobs if len(cov_x) else 0):
        k = rng.integers(len(cov_x))
        r = c.blob_radius_px * s * rng.uniform(0.6, 1.4)
        blobs |= (xs - cov_x[k]) ** 2 + (ys - cov_y[k]) ** 2 < r * r
    eyes = binary_dilation(frame.eye_pixels, iterations=max(1, int(2 * s))) if c.wrong_eyes else np.zeros((h, w), bool)

    if cues.uv is not None:
        warp = smooth("warp", 12.0 * s, 2) * c.uv_warp_px * s
        uv, m = _warp(cues.uv, warp[..., 0], warp[..., 1], cues.uv_mask)
        uv = gaussian_filter(uv, sigma=(c.uv_blur_px * s, c.uv_blur_px * s, 0)) if c.uv_blur_px > 0 else uv
        uv = uv + rng.normal(scale=c.uv_noise, size=uv.shape)
        shift = rng.uniform(-0.05, 0.05, size=2)  # a wrong but plausible uv: a few percent of the layout
        if blobs.any():
            uv[blobs] += shift
        if eyes.any():
            uv[eyes] += np.array([0.0, 0.012])
        m = _ragged(m, rng, c.mask_edge_px * s)
        out.uv, out.uv_mask = np.where(m[..., None], uv, 0.0).astype(np.float32), m
    if cues.normals is not None:
        n = cues.normals.astype(np.float64)
        n = n + np.radians(c.normal_bias_deg) * smooth("normal_bias", 10.0 * s, 3)
        if c.normal_blur_px > 0:
            n = gaussian_filter(n, sigma=(c.normal_blur_px * s, c.normal_blur_px * s, 0))
        n = n + np.radians(c.normal_noise_deg) * rng.normal(size=n.shape)
        d = rng.normal(size=3)
        if blobs.any():
            n[blobs] = d / np.linalg.norm(d)
        if eyes.any():
            n[eyes] = np.array([0.0, 0.0, 1.0])
        n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)
        mask = _ragged(cues.normal_mask, rng, c.mask_edge_px * s)
        out.normals, out.normal_mask = n.astype(np.float32), mask
    if cues.face_mask is not None:
        face = _ragged(cues.face_mask > 0.5, rng, c.mask_edge_px * s)
        out.face_mask = face.astype(np.float32)
        if cues.silhouette_valid is not None:  # segmentation labels are exclusive
            out.silhouette_valid = cues.silhouette_valid & ~face
    for t in cues.landmarks:
        pts = t.points + rng.normal(scale=c.landmark_noise_px * s, size=t.points.shape)
        outl = rng.random(len(pts)) < c.landmark_outlier_frac
        pts[outl] += rng.normal(size=(outl.sum(), 2)) * c.landmark_outlier_px * s
        wts = np.ones(len(pts)) if t.weights is None else np.array(t.weights, dtype=np.float64)
        wts[rng.random(len(pts)) < c.landmark_drop_frac] = 0.0
        out.landmarks.append(replace(t, points=pts, weights=wts))
    return out


def corrupt_clip(frames: list[SyntheticFrame], rng: np.random.Generator, c: Corruption | None = REALISTIC,
                 rho: float = 0.8) -> list[FrameCues]:
    """Corrupt every frame of a clip with temporally correlated smooth errors (correlation
    ``rho`` between frames: a network's errors on consecutive, similar frames are similar)
    and independent per-frame noise, blobs and landmark jitter."""
    persistent: dict = {}
    return [corrupt(f, rng, c, persistent, rho) for f in frames]


def drop_frames(frames: list, rng: np.random.Generator, fraction: float, keep_first: bool = True) -> list:
    """Replace a random ``fraction`` of the frames by None (no prediction for that frame)."""
    out = list(frames)
    for i in range(len(out)):
        if (i > 0 or not keep_first) and rng.random() < fraction:
            out[i] = None
    return out


def only(cues: FrameCues, *keep: str) -> FrameCues:
    """A copy with only some cue kinds: any of 'uv', 'normals', 'mask', 'landmarks'."""
    out = FrameCues()
    if "uv" in keep:
        out.uv, out.uv_mask = cues.uv, cues.uv_mask
    if "normals" in keep:
        out.normals, out.normal_mask = cues.normals, cues.normal_mask
    if "mask" in keep:
        out.face_mask, out.silhouette_valid = cues.face_mask, cues.silhouette_valid
    if "landmarks" in keep:
        out.landmarks = list(cues.landmarks)
    return out
