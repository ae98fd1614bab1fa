# SPDX-License-Identifier: GPL-3.0-or-later
"""Turn a :class:`~headcast.flame.HeadModel`, identity coefficients and per-frame parameters into a result file.

The rig arrays are the model's own bases with the identity baked into the template, so a
reader needs no model file; see ``docs/result-format.md`` and :mod:`headcast.io.result_file`.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..flame.headmodel import HeadModel
from .result_file import FORMAT_VERSION, HeadcastResult, ResultFileError, save_result

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".exr"}


@dataclass
class FrameParameters:
    """Per-frame fit results for N frames (arrays, numpy or anything ``np.asarray`` takes).

    ``joint_rotations`` are local rotations in the model's joint order with the global joint
    normally identity; ``head_rotation``/``head_translation`` take model coordinates to the
    OpenCV camera frame; ``intrinsics`` are (fx, fy, cx, cy) in original-footage pixels.
    Defaults: crop boxes = the whole image, losses = NaN, every frame valid.
    """

    frame_indices: np.ndarray  # (N,)
    expression: np.ndarray  # (N, Ke)
    joint_rotations: np.ndarray  # (N, J, 3, 3)
    head_rotation: np.ndarray  # (N, 3, 3)
    head_translation: np.ndarray  # (N, 3)
    intrinsics: np.ndarray  # (N, 4)
    eyelids: np.ndarray | None = None  # (N, 2)
    crop_boxes: np.ndarray | None = None  # (N, 4)
    losses: np.ndarray | None = None  # (N,)
    valid: np.ndarray | None = None  # (N,)


@dataclass
class ClipInfo:
    """Where the frames came from and what made them."""

    source_path: str | Path
    image_size: tuple[int, int]  # (width, height) of the original footage
    fps: float
    rig_name: str | None = None  # default: the footage's file name without suffix
    network_weights: dict[str, str] = field(default_factory=dict)
    fit: dict = field(default_factory=dict)
    frame_sources: list[str] | None = None  # several photos: the photo of each frame


def identity_template(model: HeadModel, shape: np.ndarray | None) -> np.ndarray:
    """The model's template with the identity blendshapes applied, ``(V, 3)`` float64."""
    v = model.v_template.astype(np.float64)
    if shape is None or len(shape) == 0:
        return v.copy()
    shape = np.asarray(shape, dtype=np.float64).reshape(-1)
    if shape.shape[0] > model.shapedirs.shape[2]:
        raise ValueError(f"{shape.shape[0]} identity coefficients for a model with {model.shapedirs.shape[2]}")
    return v + model.shapedirs[..., :shape.shape[0]].astype(np.float64) @ shape


def rig_arrays(model: HeadModel, shape: np.ndarray | None = None, n_expr: int | None = None,
               dtype=np.float32) -> dict[str, np.ndarray]:
    """The rig part of a result: neutral with identity, bases, skeleton, skinning, uv.

    ``n_expr`` keeps the first expression columns (the fit may use fewer than the model has);
    float arrays are stored as ``dtype`` (float32 keeps files small and is far below the
    format's 1e-5 m reproduction tolerance).
    """
    n_e = model.exprdirs.shape[2] if n_expr is None else int(n_expr)
    if not 0 <= n_e <= model.exprdirs.shape[2]:
        raise ValueError(f"n_expr={n_e} but the model has {model.exprdirs.shape[2]} expression shapes")
    template = identity_template(model, shape)
    names = (list(model.expr_names[:n_e]) if model.expr_names is not None
             else [f"exp_{k:03d}" for k in range(n_e)])
    out = {
        "v_template": template.astype(dtype),
        "faces": model.faces.astype(np.int32),
        "expr_basis": model.exprdirs[..., :n_e].astype(dtype),
        "expr_names": np.array(names, dtype=str) if names else np.zeros(0, dtype="<U1"),
        "parents": model.parents.astype(np.int32),
        "joint_names": np.array(model.joint_names, dtype=str),
        "joint_regressor": model.j_regressor.astype(dtype),
        "weights": model.weights.astype(dtype),
        "shape": np.zeros(0) if shape is None else np.asarray(shape, dtype=np.float64).reshape(-1),
    }
    # Regress from the stored (possibly float32) arrays so the file is self-consistent.
    out["joints_rest"] = (out["joint_regressor"].astype(np.float64) @ out["v_template"].astype(np.float64)).astype(dtype)
    if model.uv is not None:
        out["uv"] = model.uv.astype(dtype)
        out["faces_uv"] = model.faces_uv.astype(np.int32)
    if model.expr_bounds is not None:
        out["expr_bounds"] = model.expr_bounds[:n_e].astype(np.float64)
    if model.eyelids is not None:
        out["eyelid_basis"] = model.eyelids.astype(dtype)
    if model.posedirs is not None:
        out["pose_basis"] = model.posedirs.astype(dtype)
    return out


def frame_arrays(frames: FrameParameters, image_size: tuple[int, int], has_eyelids: bool) -> dict[str, np.ndarray]:
    """The per-frame part of a result, with defaults filled in."""
    n = int(np.asarray(frames.frame_indices).shape[0])
    w, h = image_size
    out = {
        "frame_indices": np.asarray(frames.frame_indices, dtype=np.int64),
        "expression": np.asarray(frames.expression, dtype=np.float64),
        "joint_rotations": np.asarray(frames.joint_rotations, dtype=np.float64),
        "head_rotation": np.asarray(frames.head_rotation, dtype=np.float64),
        "head_translation": np.asarray(frames.head_translation, dtype=np.float64),
        "intrinsics": np.asarray(frames.intrinsics, dtype=np.float64),
        "crop_boxes": (np.tile(np.array([0.0, 0.0, w, h]), (n, 1)) if frames.crop_boxes is None
                       else np.asarray(frames.crop_boxes, dtype=np.float64)),
        "losses": np.full(n, np.nan) if frames.losses is None else np.asarray(frames.losses, dtype=np.float64),
        "valid": np.ones(n, dtype=bool) if frames.valid is None else np.asarray(frames.valid, dtype=bool),
    }
    if has_eyelids:
        out["eyelids"] = np.zeros((n, 2)) if frames.eyelids is None else np.asarray(frames.eyelids, dtype=np.float64)
    return out


def source_kind(path: str | Path) -> str:
    """'video', 'image', 'images' (a folder of frames) or 'unknown', from the path alone."""
    p = Path(path)
    if str(path) and p.is_dir():
        return "images"
    suffix = p.suffix.lower()
    return "video" if suffix in VIDEO_SUFFIXES else "image" if suffix in IMAGE_SUFFIXES else "unknown"


def posed_vertices(model: HeadModel, shape: np.ndarray | None, frames: FrameParameters) -> np.ndarray:
    """The backend's posed vertices (model frame, ``[N, V, 3]`` float64) from :class:`~headcast.flame.HeadLayer`."""
    import torch

    from ..flame.layer import HeadLayer

    expr = torch.as_tensor(np.asarray(frames.expression, dtype=np.float64))
    layer = HeadLayer(model, n_shape=0 if shape is None else len(shape), n_expr=expr.shape[1], dtype=torch.float64)
    n = expr.shape[0]
    betas = None if shape is None or len(shape) == 0 else torch.as_tensor(np.asarray(shape, dtype=np.float64)).expand(n, -1)
    lids = None
    if model.eyelids is not None and frames.eyelids is not None:
        lids = torch.as_tensor(np.asarray(frames.eyelids, dtype=np.float64))
    with torch.no_grad():
        out = layer(betas, expr, torch.as_tensor(np.asarray(frames.joint_rotations, dtype=np.float64)), None, lids)
    return out.vertices.numpy()


def build_result(model: HeadModel, shape: np.ndarray | None, frames: FrameParameters, clip: ClipInfo,
                 include_posed_vertices: bool = False, dtype=np.float32) -> HeadcastResult:
    """A validated :class:`HeadcastResult` from the model, identity and per-frame parameters."""
    expression = np.asarray(frames.expression)
    if expression.ndim != 2:
        raise ValueError(f"expression must be (N, Ke), got shape {expression.shape}")
    arrays = rig_arrays(model, shape, n_expr=expression.shape[1], dtype=dtype)
    arrays.update(frame_arrays(frames, clip.image_size, has_eyelids="eyelid_basis" in arrays))
    if include_posed_vertices:
        arrays["posed_vertices"] = posed_vertices(model, shape, frames).astype(np.float32)
    source = str(clip.source_path)
    name = clip.rig_name or (Path(source).name.split(".")[0] if source else "headcast")
    metadata = {
        "format_version": FORMAT_VERSION,
        "headcast_version": __version__,
        "rig_name": name,
        "source_path": source,
        "source_kind": source_kind(source) if source else "unknown",
        "image_size": [int(clip.image_size[0]), int(clip.image_size[1])],
        "fps": float(clip.fps),
        "model_name": model.name,
        "licence": model.licence,
        "network_weights": {str(k): str(v) for k, v in clip.network_weights.items()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "fit": dict(clip.fit),
    }
    if clip.frame_sources is not None:
        if len(clip.frame_sources) != expression.shape[0]:
            raise ValueError(f"{len(clip.frame_sources)} frame sources for {expression.shape[0]} frames")
        metadata["frame_sources"] = [str(x) for x in clip.frame_sources]
    return HeadcastResult(arrays, metadata, path=f"<result {name}>")


def write_result(path: str | Path, model: HeadModel, shape: np.ndarray | None, frames: FrameParameters,
                 clip: ClipInfo, include_posed_vertices: bool = False, sidecar: bool = True,
                 compress: bool = True, dtype=np.float32) -> Path:
    """Build, validate and write ``path`` (should end in ``.headcast.npz``) plus its JSON sidecar."""
    path = Path(path)
    try:
        result = build_result(model, shape, frames, clip, include_posed_vertices, dtype)
    except ResultFileError as exc:  # name the file being written, not the in-memory placeholder
        raise ResultFileError(path, exc.problem) from None
    return save_result(path, result, sidecar=sidecar, compress=compress)
