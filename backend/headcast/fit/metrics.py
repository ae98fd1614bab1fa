# SPDX-License-Identifier: GPL-3.0-or-later
"""Error measures between a fit and a ground truth (both :class:`FitResult`)."""
from __future__ import annotations

import numpy as np

from ..flame import HeadModel
from .result import FitResult


def rigid_align(src: np.ndarray, dst: np.ndarray, scale: bool = False) -> np.ndarray:
    """``src`` (P, 3) moved by the rotation and translation (and with ``scale`` the uniform
    scale) that best fit it to ``dst`` in the least-squares sense (Kabsch / Umeyama)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sv, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    D = np.diag([1.0, 1.0, d])
    rot = (u @ D @ vt).T
    s = float((sv * np.diag(D)).sum() / (a ** 2).sum()) if scale else 1.0
    return s * a @ rot.T + md


#: How errors are aligned before measuring. A single image fixes a head only up to a uniform
#: scale (a head k times larger and k times farther projects identically), which only the
#: identity prior decides; "similarity" removes it, as monocular face benchmarks do.
ALIGNMENTS = ("similarity", "rigid", "none")


def _aligned(x: np.ndarray, y: np.ndarray, align: str) -> np.ndarray:
    if align not in ALIGNMENTS:
        raise ValueError(f"align must be one of {ALIGNMENTS}")
    if align == "none":
        return x
    return rigid_align(x, y, scale=align == "similarity")


def face_ids(model: HeadModel) -> np.ndarray:
    return model.masks.get("face", np.arange(model.n_vertices))


def posed_error_mm(model: HeadModel, fit: FitResult, truth: FitResult, align: str = "similarity") -> np.ndarray:
    """Per-frame mean face-region vertex error in mm of the posed meshes (camera frame), after
    aligning each frame's face region (see :data:`ALIGNMENTS`)."""
    ids = face_ids(model)
    a = fit.vertices(model)[:, ids]
    b = truth.vertices(model)[:, ids]
    return np.asarray([np.linalg.norm(_aligned(x, y, align) - y, axis=1).mean() * 1000.0 for x, y in zip(a, b)])


def neutral_error_mm(model: HeadModel, fit: FitResult, truth: FitResult, align: str = "similarity") -> float:
    """Mean face-region error in mm of the identity alone (no expression, rest pose), aligned."""
    ids = face_ids(model)
    x = fit.neutral_vertices(model)[ids]
    y = truth.neutral_vertices(model)[ids]
    return float(np.linalg.norm(_aligned(x, y, align) - y, axis=1).mean() * 1000.0)


def reprojection_error_px(model: HeadModel, fit: FitResult, truth: FitResult, ids: np.ndarray | None = None) -> np.ndarray:
    """Per-frame mean pixel distance between the fitted and true projections of the face region."""
    ids = face_ids(model) if ids is None else ids
    a = fit.vertices(model)[:, ids]
    b = truth.vertices(model)[:, ids]
    out = []
    for i in range(fit.n_frames):
        out.append(np.linalg.norm(fit.project(a[i], i) - truth.project(b[i], i), axis=1).mean())
    return np.asarray(out)


def landmark_error_px(model: HeadModel, fit: FitResult, truth: FitResult) -> np.ndarray:
    """Per-frame mean reprojection error of the 51 static iBUG landmarks (face-region vertices if
    the model has no landmark embedding)."""
    if model.landmarks is None:
        return reprojection_error_px(model, fit, truth)
    import torch

    from ..flame import barycentric_points
    faces = torch.as_tensor(model.faces)
    fi = torch.as_tensor(model.landmarks.static_faces)
    bc = torch.as_tensor(model.landmarks.static_bary, dtype=torch.float64)
    out = []
    va, vb = fit.vertices(model), truth.vertices(model)
    for i in range(fit.n_frames):
        pa = barycentric_points(torch.as_tensor(va[i:i + 1]), faces, fi, bc)[0].numpy()
        pb = barycentric_points(torch.as_tensor(vb[i:i + 1]), faces, fi, bc)[0].numpy()
        out.append(np.linalg.norm(fit.project(pa, i) - truth.project(pb, i), axis=1).mean())
    return np.asarray(out)


def camera_scale(a: np.ndarray, b: np.ndarray) -> float:
    """The scale about the camera centre that best maps points ``a`` onto ``b`` (least squares):
    the one ambiguity of a monocular fit (k times larger and k times farther looks the same)."""
    return float((a * b).sum() / max((a * a).sum(), 1e-30))


def jitter_mm(model: HeadModel, fit: FitResult, truth: FitResult) -> float:
    """Frame-to-frame jitter: mean over consecutive frames and face vertices of
    |(fit_{t+1} - fit_t) - (truth_{t+1} - truth_t)| in mm (camera frame), i.e. motion the truth
    does not have. The fit is first scaled about the camera centre by one factor for the whole
    clip (:func:`camera_scale`), so a consistently wrong head size does not count as jitter."""
    ids = face_ids(model)
    a = fit.vertices(model)[:, ids]
    b = truth.vertices(model)[:, ids]
    a = a * camera_scale(a, b)
    d = np.diff(a, axis=0) - np.diff(b, axis=0)
    return float(np.linalg.norm(d, axis=-1).mean() * 1000.0)
