# SPDX-License-Identifier: GPL-3.0-or-later
"""Footage to result file: the one pipeline behind the command line, the worker and the add-on.

``reconstruct(images)`` (one photo, or several photos of one person with a shared identity)
and ``track(video or image folder)`` run the same stages and report them through one
progress callback: ``model`` (load the head model and its MediaPipe embedding), ``detect``
(crop, landmarks, masks), ``priors`` (Pixel3DMM networks when the weights are configured),
``fit`` / ``online`` / ``global`` (the optimisation), ``write``.

Long tracks keep their finished frames in ``<output>.partial/`` while they run, and with network
weights the predicted uv / normal maps too (``priors/``, float16 at the fit size, ~0.4 MB a frame
at 256²); a later run with the same output resumes from them (after a crash, a kill or a cancel)
without predicting those frames again, and produces the same result as an uninterrupted run. The
folder is discarded when footage, model, weights or fit settings changed, and removed when the
result is written.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import __version__
from .config import Settings, cache_dir, load_settings
from .errors import Cancelled, InputError, NoFaceError, UnreadableMediaError
from .model_select import ModelChoice, select_model

log = logging.getLogger("headcast")

STILL_FPS = 24.0  # photos become frames of a 24 fps scene (Blender's default rate)

#: progress(stage, frame, total, step, loss): frame -1 when a step spans several frames
Progress = Callable[[str, int, int, int, float], None]


@dataclass
class PipelineResult:
    path: Path
    n_frames: int
    valid_frames: int
    mode: str  # 'pixel3dmm' or 'landmarks+mask'
    model: str
    licence: str
    timings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"path": str(self.path), "frames": self.n_frames, "valid_frames": self.valid_frames, "mode": self.mode,
                "model": self.model, "licence": self.licence, "timings": self.timings, "notes": self.notes}


class _Stages:
    """Progress reporting + cancellation + per-stage wall time."""

    def __init__(self, progress: Progress | None, cancel) -> None:
        self.progress = progress
        self.cancel = cancel
        self.timings: dict[str, float] = {}
        self._stage, self._t0 = None, 0.0

    def cancelled(self) -> bool:
        if self.cancel is None:
            return False
        return self.cancel.is_set() if hasattr(self.cancel, "is_set") else bool(self.cancel())

    def check(self) -> None:
        if self.cancelled():
            raise Cancelled()

    def enter(self, stage: str, total: int = 0) -> None:
        self.close()
        self.check()
        self._stage, self._t0 = stage, time.perf_counter()
        self.report(stage, 0, total, 0, float("nan"))

    def close(self) -> None:
        if self._stage is not None:
            self.timings[self._stage] = self.timings.get(self._stage, 0.0) + time.perf_counter() - self._t0
            self._stage = None

    def report(self, stage: str, frame: int, total: int, step: int, loss: float) -> None:
        if self.progress is not None:
            self.progress(stage, frame, total, step, loss)

    def fit_progress(self, stage: str, frame: int, total: int, step: int, loss: float) -> None:
        if stage != self._stage:  # the fitting's own stages (camera, first_frame, online, global)
            self.close()
            self._stage, self._t0 = stage, time.perf_counter()
        self.report(stage, frame, total, step, loss)


# --- model and embedding -----------------------------------------------------------------------

def _ensure_embedding(choice: ModelChoice, settings: Settings) -> None:
    """Every model needs a MediaPipe-478 embedding; build it by render-and-detect if missing."""
    if choice.model.mediapipe is not None:
        return
    from .priors import build_mediapipe_embedding

    src = Path(choice.model.source) if choice.model.source and Path(choice.model.source).exists() else None
    cache = None if src is not None and os.access(src.parent, os.W_OK) else cache_dir(settings) / "embeddings"
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    choice.model.mediapipe = build_mediapipe_embedding(choice.model, cache_dir=cache)


# --- priors to the fitting's cues ------------------------------------------------------------------

def _resize(img: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    import cv2

    if img.shape[0] == size and img.shape[1] == size:
        return img
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(img, (size, size), interpolation=interp)


def _landmark_targets(points: np.ndarray, scale: float) -> list:
    """MediaPipe's 478 points of one frame (crop pixels) as the fitting's landmark targets."""
    from .fit import LandmarkTarget
    from .priors import landmark_set

    pts = np.asarray(points, dtype=np.float64) * scale
    ok = np.isfinite(pts).all(axis=1)
    pts = np.where(ok[:, None], pts, 0.0)

    def target(names: Sequence[str], term: str, lid: bool = False) -> LandmarkTarget:
        ids = np.array([i for n in names for i in landmark_set(n)], dtype=np.int64)
        lid_pairs = None
        if lid:  # upper/lower lid chains run corner to corner: pair them point by point, corners excluded
            pairs, offset = [], 0
            for side in ("left", "right"):
                up, lo = landmark_set(f"{side}_eye_upper"), landmark_set(f"{side}_eye_lower")
                n = min(len(up), len(lo))
                pairs += [(offset + k, offset + len(up) + k) for k in range(1, n - 1)]
                offset += len(up) + len(lo)
            lid_pairs = np.array(pairs, dtype=np.int64)
        return LandmarkTarget(points=pts[ids], embedding="mediapipe", ids=ids, weights=ok[ids].astype(np.float64),
                              term=term, lid_pairs=lid_pairs)

    targets = [
        target(["left_eye_upper", "left_eye_lower", "right_eye_upper", "right_eye_lower"], "eyes", lid=True),
        target(["lips_outer", "lips_inner"], "mouth"),
        target(["face_oval"], "contour"),
        target(["nose"], "nose"),
        target(["left_eyebrow", "right_eyebrow"], "brows"),
    ]
    iris_ids = np.array([landmark_set("left_iris_centre")[0], landmark_set("right_iris_centre")[0]])
    targets.append(LandmarkTarget(points=pts[iris_ids], embedding="iris", ids=np.array([0, 1]),
                                  weights=ok[iris_ids].astype(np.float64), term="iris"))
    return targets


def priors_to_cues(priors, fit_size: int, settings: Settings) -> list:
    """Per-frame :class:`headcast.fit.FrameCues` at the fit resolution (None for frames without a face)."""
    from .fit import FrameCues

    footage = priors.footage
    crop = footage.crops.shape[1]
    scale = fit_size / crop
    cues = []
    for i in range(len(footage)):
        if not footage.found[i]:
            cues.append(None)
            continue
        face = _resize(footage.face_mask[i].astype(np.float32), fit_size)
        fg = _resize(footage.foreground[i].astype(np.float32), fit_size)
        c = FrameCues()
        if settings.fit.use_silhouette:
            c.face_mask = face
            c.silhouette_valid = (face > 0.5) | (fg < 0.5)
        dense_mask = face > 0.5
        if settings.fit.use_uv and priors.uv is not None:
            c.uv = _resize(priors.uv[i].astype(np.float32), fit_size, nearest=True)
            c.uv_mask = dense_mask
        if settings.fit.use_normals and priors.normals is not None:
            n = _resize(priors.normals[i].astype(np.float32), fit_size)
            c.normals = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-8)
            c.normal_mask = dense_mask
        if settings.fit.use_landmarks:
            c.landmarks = _landmark_targets(footage.landmarks.points[i], scale)
        cues.append(c)
    return cues


def fit_config(settings: Settings, n_expr: int | None = None):
    from .fit import FitConfig

    fs = settings.fit
    cfg = FitConfig(steps=fs.steps, camera_steps=fs.camera_steps, first_frame_steps=fs.first_frame_steps,
                    online_steps=fs.online_steps, online_min_steps=min(FitConfig.online_min_steps, fs.online_steps),
                    global_epochs=fs.global_epochs if fs.global_pass else 0.0, w_mirror=fs.mirror_symmetry,
                    gls_step_fraction=fs.refine)
    cfg = cfg.with_(smooth_weights={**cfg.smooth_weights, "expr": settings.fit.smooth_expression,
                                    "jaw": settings.fit.smooth_jaw, "neck": settings.fit.smooth_neck,
                                    "R": settings.fit.smooth_rotation, "t": settings.fit.smooth_translation})
    return cfg


# --- results ------------------------------------------------------------------------------------------

@dataclass
class _Prepared:
    """The fitting's cues of a photo set or clip, and how to map cameras back to the footage."""

    cues: list
    boxes: list  # per frame: the CropBox in the original footage
    crop_size: int
    original_size: tuple[int, int]  # (H, W) of the (first) footage: the result's image size
    mode: str
    description: str
    notes: list
    # per frame (H, W) when photos differ in size: their cameras are rescaled to the first photo's
    frame_sizes: list | None = None


def _frame_parameters(fit, prep: _Prepared, fit_size: int, frame_indices: np.ndarray):
    """Fit output (fit-image pixels) to the result file's per-frame arrays (original pixels)."""
    from .io import FrameParameters

    to_crop = prep.crop_size / fit_size
    intr = np.zeros((fit.n_frames, 4))
    for i in range(fit.n_frames):
        fx, fy, cx, cy = fit.intrinsics[i] * to_crop
        intr[i] = prep.boxes[i].intrinsics_to_original(fx, fy, cx, cy)
    crop_boxes = np.array([[b.xmin, b.ymin, b.xmax, b.ymax] for b in prep.boxes], dtype=np.float64)
    if prep.frame_sizes is not None:
        # Photos of other sizes than the first: each camera as if its photo were scaled to the first
        # photo's size (exact for the same aspect ratio; otherwise fx/fy absorb the stretch), so one
        # image size describes every frame of the result.
        H0, W0 = prep.original_size
        for i, (h, w) in enumerate(prep.frame_sizes):
            if (h, w) != (H0, W0):
                sx, sy = W0 / w, H0 / h
                intr[i] *= (sx, sy, sx, sy)
                crop_boxes[i] *= (sx, sy, sx, sy)
    return FrameParameters(frame_indices=frame_indices, expression=fit.expression, joint_rotations=fit.rotations,
                           head_rotation=fit.R_head, head_translation=fit.t_head, intrinsics=intr,
                           eyelids=fit.eyelids, crop_boxes=crop_boxes, losses=fit.loss, valid=fit.valid)


def lens_focals(settings: Settings, prep: _Prepared) -> np.ndarray | None:
    """The lens the user gave (``fit.focal_mm`` on a ``fit.sensor_mm`` wide sensor), as each
    frame's focal length in units of its crop's width (what the fitting holds), or None."""
    fs = settings.fit
    if fs.focal_mm <= 0:
        return None
    out = np.zeros(len(prep.boxes))
    for i, box in enumerate(prep.boxes):
        _, w = prep.frame_sizes[i] if prep.frame_sizes is not None else prep.original_size
        f_px = fs.focal_mm / fs.sensor_mm * w  # horizontal sensor fit, as a Blender camera's
        out[i] = box.intrinsics_to_crop(f_px, f_px, 0.0, 0.0)[0] / prep.crop_size
    return out


def identity_code(settings: Settings, choice: ModelChoice) -> np.ndarray | None:
    """The identity of the result file ``fit.identity`` names, as the model's shape
    coefficients to hold, or None (solve the identity).

    The file must come from the same head model: same name and vertex count, and its identity
    code must rebuild the file's neutral mesh with this model's own blendshapes (which a
    result of another FLAME release or another generated model would not)."""
    name = settings.fit.identity
    if not name:
        return None
    from .errors import MissingFileError
    from .io import ResultFileError, load_result
    from .io.writer import identity_template

    path = Path(name).expanduser()
    if not path.is_file():
        raise MissingFileError(f"identity result file not found: {name}", file=str(name))
    try:
        result = load_result(path, posed_vertices=False)
    except ResultFileError as exc:
        raise InputError(f"the identity file is not a usable Headcast result ({exc})", file=str(path)) from exc
    model = choice.model
    made_with = result.metadata["model_name"]
    if made_with != model.name or result.n_vertices != model.n_vertices:
        raise InputError(f"the identity was made with the head model '{made_with}' ({result.n_vertices} vertices); "
                         f"this job uses '{model.name}' ({model.n_vertices} vertices)", file=str(path))
    code = np.asarray(result["shape"], dtype=np.float64)
    if code.size > model.shapedirs.shape[2]:
        raise InputError(f"the identity has {code.size} coefficients, the model '{model.name}' has "
                         f"{model.shapedirs.shape[2]}", file=str(path))
    off = float(np.abs(identity_template(model, code) - result["v_template"]).max())
    if off > 1e-4:
        raise InputError(f"the identity was made with another file of the head model '{made_with}': its code does "
                         f"not rebuild its neutral mesh with this one ({off * 1000:.2f} mm off)", file=str(path))
    return code


def _identity_note(settings: Settings) -> list[str]:
    return [f"identity held from {settings.fit.identity}"] if settings.fit.identity else []


def _noise_note(fit, size: int) -> str:
    """What the fit measured of its cues' noise and how it set the priors and the 2-D vertex
    term's weight (FitConfig.adaptive_priors, FitConfig.uv_noise_full_weight)."""
    noise = fit.info.get("cue_noise") or {}
    parts = []
    if "normal_deg" in noise:
        part = f"normals {noise['normal_deg']:.1f} deg"
        if "normal_smooth_deg" in noise:
            part += f" (smooth part {noise['normal_smooth_deg']:.1f} deg)"
        parts.append(part)
    if "uv" in noise:
        parts.append(f"uv correspondences {noise['uv'] * size:.2f} px")
    measured = ", ".join(parts) if parts else "not measured"
    note = f"cue noise (median residual): {measured}; identity/expression priors x{fit.info.get('prior_scale', 1.0):.3g}"
    if "uv" in noise:
        note += f"; uv correspondences weighted x{fit.info.get('uv_vertex_scale', 1.0):.3g}"
    return note


def _write(output: Path, choice: ModelChoice, fit, prep: _Prepared, fit_size: int, frame_indices, source: str,
           fps: float, settings: Settings, weights: dict, timings: dict, frame_sources: list | None = None) -> Path:
    from .io import ClipInfo, write_result

    H, W = prep.original_size
    clip = ClipInfo(source_path=source, image_size=(W, H), fps=fps, network_weights=weights,
                    fit={"mode": prep.mode, "model_choice": choice.reason, "fit_size": fit_size,
                         "timings": {k: round(v, 3) for k, v in timings.items()}, "headcast": __version__,
                         **({"identity_from": str(Path(settings.fit.identity).expanduser().resolve())}
                            if settings.fit.identity else {})},
                    frame_sources=frame_sources)
    return write_result(output, choice.model, fit.shape, _frame_parameters(fit, prep, fit_size, frame_indices), clip,
                        include_posed_vertices=settings.output.posed_vertices)


_PREDICTORS: dict[tuple, object] = {}


def _weights(settings: Settings) -> tuple[object | None, dict]:
    """The user's Pixel3DMM checkpoints, loaded once per process, as compute_priors takes them."""
    uv, normals = settings.models.uv_checkpoint, settings.models.normals_checkpoint
    if not uv and not normals:
        return None, {}
    key = (uv, normals, settings.fit.device)
    names = {k: str(v) for k, v in (("uv", uv), ("normals", normals)) if v}
    if key in _PREDICTORS:
        return _PREDICTORS[key], names
    from .priors import PriorPredictor

    for p in (uv, normals):
        if p and not Path(p).expanduser().is_file():
            from .errors import MissingFileError
            raise MissingFileError(f"network checkpoint not found: {p}", file=str(p))
    predictor = PriorPredictor.from_checkpoints(Path(uv).expanduser() if uv else None,
                                                Path(normals).expanduser() if normals else None,
                                                device=None if settings.fit.device == "auto" else settings.fit.device)
    _PREDICTORS[key] = predictor
    return predictor, names


def _default_output(source: str | Path) -> Path:
    p = Path(source)
    return p.with_name(p.stem + ".headcast.npz") if p.suffix else p.parent / (p.name + ".headcast.npz")


def _prepare(source, stages: _Stages, settings: Settings, choice: ModelChoice, per_image_crop: bool,
             max_frames: int | None, predictor, stage_total: int = 0, map_cache_for=None) -> _Prepared:
    """Detect, crop and (with weights) predict the priors of one photo or clip.

    ``map_cache_for(n_frames)``: the :class:`~headcast.priors.footage.MapCache` to keep the
    network maps in (a track's partial folder), so a resumed track does not predict them again.
    """
    from .priors import FootageError, compute_priors, prepare_footage

    stages.enter("detect", stage_total)
    try:
        footage = prepare_footage(source, per_image_crop=per_image_crop, max_frames=max_frames)
    except FootageError as exc:
        raise UnreadableMediaError(str(exc), file=str(getattr(exc, "path", "") or source)) from exc
    if not footage.found.any():
        raise NoFaceError("no face found in the footage", file=str(source))
    n = len(footage)
    stages.enter("priors", n)
    cache = map_cache_for(n) if map_cache_for is not None else None
    priors = compute_priors(source, predictor, model=choice.model, prepared=footage,
                            out_size=settings.fit.render_size, cache=cache,
                            on_frames=lambda done: (stages.check(), stages.report("priors", done, n, 0, float("nan"))))
    return _Prepared(cues=priors_to_cues(priors, settings.fit.render_size, settings),
                     boxes=list(priors.footage.landmarks.boxes), crop_size=priors.footage.crops.shape[1],
                     original_size=priors.footage.original_size, mode=priors.mode, description=priors.description,
                     notes=list(priors.notes))


def reconstruct(images: str | Path | Sequence[str | Path], output: str | Path | None = None, *,
                settings: Settings | None = None, progress: Progress | None = None, cancel=None) -> PipelineResult:
    """One photo, or several photos of the same person (shared identity, per-photo pose and camera)."""
    from .fit import Cancelled as FitCancelled, fit_images

    settings = settings or load_settings()
    paths = [images] if isinstance(images, (str, Path)) else list(images)
    if not paths:
        raise InputError("no images given")
    for p in paths:
        if not Path(p).expanduser().exists():
            from .errors import MissingFileError
            raise MissingFileError(f"image not found: {p}", file=str(p))
    output = Path(output) if output else _default_output(paths[0])
    stages = _Stages(progress, cancel)
    stages.enter("model")
    choice = select_model(settings)
    _ensure_embedding(choice, settings)
    predictor, weights = _weights(settings)
    identity = identity_code(settings, choice)
    parts = [_prepare(str(Path(p).expanduser()), stages, settings, choice, True, None, predictor, len(paths))
             for p in paths]
    prep = _Prepared(cues=[c for part in parts for c in part.cues], boxes=[b for part in parts for b in part.boxes],
                     crop_size=parts[0].crop_size, original_size=parts[0].original_size, mode=parts[0].mode,
                     frame_sizes=[part.original_size for part in parts for _ in part.cues],
                     description=parts[0].description, notes=[n for part in parts for n in part.notes])
    size = settings.fit.render_size
    stages.enter("fit", len(prep.cues))
    try:
        fit = fit_images(choice.model, prep.cues, fit_config(settings), image_size=(size, size),
                         focal=lens_focals(settings, prep), identity=identity, progress=stages.fit_progress,
                         cancel=stages.cancelled)
    except FitCancelled as exc:
        raise Cancelled() from exc
    stages.enter("write")
    source = str(paths[0]) if len(paths) == 1 else os.path.commonpath([str(Path(p).resolve()) for p in paths])
    path = _write(output, choice, fit, prep, size, np.arange(fit.n_frames), source, STILL_FPS, settings, weights,
                  stages.timings, frame_sources=[str(Path(p).resolve()) for p in paths] if len(paths) > 1 else None)
    stages.close()
    log.info("model: %s; mode: %s", choice.reason, prep.description)
    return PipelineResult(path=path, n_frames=fit.n_frames, valid_frames=int(fit.valid.sum()), mode=prep.mode,
                          model=choice.model.name, licence=choice.model.licence, timings=stages.timings,
                          notes=[choice.reason, prep.description, *prep.notes, _noise_note(fit, size),
                                 *_identity_note(settings)])


# --- tracking with resumable partial results ---------------------------------------------------

def _file_identity(path: str | Path) -> dict:
    p = Path(path).expanduser()
    stat = p.stat() if p.is_file() else None
    return {"path": str(p.resolve()), "size": stat.st_size if stat else None,
            "mtime": stat.st_mtime_ns if stat else None}


def _fingerprint(source: str, settings: Settings, choice: ModelChoice, n_frames: int, weights: dict) -> str:
    """What a partial track's frames and cached maps depend on: footage, model, network weights, fit settings."""
    blob = json.dumps({"source": _file_identity(source), "frames": n_frames, "model": choice.model.source,
                       "model_name": choice.model.name, "fit": vars(settings.fit),
                       "weights": {k: _file_identity(v) for k, v in sorted(weights.items())},
                       "identity": _file_identity(settings.fit.identity) if settings.fit.identity else None},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class PartialTrack:
    """Finished online frames on disk: one small npz per frame, written atomically."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = folder
        self.fingerprint = fingerprint

    def open(self, keep: bool = True) -> None:
        """Create the folder; what is there is discarded if it belongs to another source or
        settings (or ``keep`` is false: a run that does not resume starts clean)."""
        stamp = self.folder / "fingerprint.txt"
        stale = not stamp.is_file() or stamp.read_text() != self.fingerprint
        if self.folder.exists() and (stale or not keep):
            log.info("discarding %s: %s", self.folder, "it belongs to another source or settings" if stale
                     else "not resuming")
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp.write_text(self.fingerprint)

    def save(self, index: int, frame) -> None:
        arrays = {k: np.asarray(v) for k, v in vars(frame).items() if v is not None and k != "state"}
        arrays.update({f"state__{k}": np.asarray(v) for k, v in (frame.state or {}).items()})
        tmp = self.folder / f".{index:06d}.tmp.npz"
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, self.folder / f"{index:06d}.npz")

    def load(self) -> list:
        """The longest run of finished frames 0..k-1."""
        from .fit import FrameFit

        frames = []
        while (self.folder / f"{len(frames):06d}.npz").is_file():
            try:
                with np.load(self.folder / f"{len(frames):06d}.npz", allow_pickle=False) as z:
                    d = {k: z[k] for k in z.files}
            except (OSError, ValueError):
                break  # a half-written frame after a crash: redo it
            state = {k[len("state__"):]: v for k, v in d.items() if k.startswith("state__")}
            frames.append(FrameFit(index=int(d["index"]), expression=d["expression"], eyelids=d.get("eyelids"),
                                   rotations=d["rotations"], R_head=d["R_head"], t_head=d["t_head"],
                                   loss=float(d["loss"]), valid=bool(d["valid"]), shape=d["shape"],
                                   intrinsics=d["intrinsics"], state=state or None))
        return frames

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def track(source: str | Path, output: str | Path | None = None, *, settings: Settings | None = None,
          progress: Progress | None = None, cancel=None, resume: bool = True,
          max_frames: int | None = None) -> PipelineResult:
    """Track a video file or an image folder into a per-frame rig animation."""
    from .fit import Cancelled as FitCancelled, track_video
    from .priors.footage import MapCache
    from .priors.frames import video_fps

    settings = settings or load_settings()
    src = Path(source).expanduser()
    if not src.exists():
        from .errors import MissingFileError
        raise MissingFileError(f"footage not found: {source}", file=str(source))
    output = Path(output) if output else _default_output(src)
    stages = _Stages(progress, cancel)
    stages.enter("model")
    choice = select_model(settings)
    _ensure_embedding(choice, settings)
    predictor, weights = _weights(settings)
    identity = identity_code(settings, choice)
    folder = output.with_name(output.name + ".partial")
    partial: PartialTrack | None = None

    def open_partial(n_frames: int) -> MapCache:
        """The partial folder for this clip, once its frame count is known (emptied if it belongs to
        other footage or settings), and the cache of network maps inside it."""
        nonlocal partial
        partial = PartialTrack(folder, _fingerprint(str(src), settings, choice, n_frames, weights))
        partial.open(keep=resume)
        return MapCache(folder / "priors")

    prep = _prepare(str(src), stages, settings, choice, False, max_frames, predictor, map_cache_for=open_partial)
    size = settings.fit.render_size
    cues = prep.cues
    n = len(cues)
    done = partial.load() if resume else []
    if done:
        log.info("resuming %s from frame %d of %d", src, len(done), n)
    focal = lens_focals(settings, prep)  # one static crop: the same for every frame
    stages.enter("online", n)
    try:
        fit = track_video(choice.model, cues, fit_config(settings), image_size=(size, size),
                          focal=None if focal is None else float(focal[0]), identity=identity,
                          progress=stages.fit_progress,
                          cancel=stages.cancelled, on_frame=partial.save, resume=done or None,
                          global_pass=settings.fit.global_pass and settings.fit.global_epochs > 0)
    except FitCancelled as exc:
        raise Cancelled(f"cancelled; finished frames are kept in {partial.folder} and a new run resumes there") from exc
    stages.enter("write")
    fps = (video_fps(src) if src.is_file() else None) or 25.0
    path = _write(output, choice, fit, prep, size, np.arange(n), str(src), fps, settings, weights, stages.timings)
    stages.close()
    partial.remove()
    return PipelineResult(path=path, n_frames=n, valid_frames=int(fit.valid.sum()), mode=prep.mode,
                          model=choice.model.name, licence=choice.model.licence, timings=stages.timings,
                          notes=[choice.reason, prep.description, *prep.notes, _noise_note(fit, size),
                                 *_identity_note(settings)])
