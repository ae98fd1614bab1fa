# SPDX-License-Identifier: GPL-3.0-or-later
"""From footage to the fitting's cues: crops, MediaPipe landmarks, masks, and network priors.

``prepare_footage`` finds the face in every frame (MediaPipe, tracking mode for clips), picks
one static square crop per clip (or one per photo) with the official Pixel3DMM rule, resizes
to 512x512, and computes per frame: 478 landmarks in crop pixels, a found flag, the face mask
(face-oval polygon, inside MediaPipe's person segmentation) and the person mask itself.
The per-frame face box fed to the crop rule is the landmarks' bounding box.

``compute_priors`` adds the Pixel3DMM uv and normal maps when the user has the network
weights. Without them Headcast still works in the lower-accuracy "landmarks + mask" mode,
which is reported in :attr:`FramePriors.mode` and logged.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .crop import CROP_SIZE, CropBox, box_of_points, clip_crop_box
from .frames import Footage, read_footage
from .landmark_sets import N_LANDMARKS, landmark_set
from .mediapipe_faces import FaceLandmarker, ForegroundSegmenter, face_oval_mask

log = logging.getLogger(__name__)

MODE_NETWORKS = "pixel3dmm"
MODE_LANDMARKS = "landmarks+mask"
MODE_DESCRIPTIONS = {
    MODE_NETWORKS: "Pixel3DMM uv/normal priors + landmarks + mask (full accuracy)",
    MODE_LANDMARKS: "landmarks + mask only, without the Pixel3DMM networks (lower accuracy: "
                    "no dense uv/normal cues; supply uv.ckpt / normals.ckpt for the accurate mode)",
}
FOREGROUND_THRESHOLD = 0.5


@dataclass
class LandmarkCues:
    """MediaPipe landmarks of every frame, in crop pixels.

    points: [N, 478, 2] float32, continuous crop-pixel coordinates (x right, y down, pixel
        centres at +0.5) of the ``image_size`` crop; NaN where the frame has no face.
    depth: [N, 478] MediaPipe's relative depth, crop-pixel units (NaN where not found).
    found: [N] bool.
    boxes: per frame, the crop box in the original footage (one shared box for a clip).
    """

    points: np.ndarray
    depth: np.ndarray
    found: np.ndarray
    boxes: list[CropBox]
    image_size: int = CROP_SIZE

    def subset(self, name: str) -> np.ndarray:
        """Points [N, k, 2] of a named landmark set (see :mod:`.landmark_sets`)."""
        return self.points[:, list(landmark_set(name))]

    def in_original(self) -> np.ndarray:
        """Points [N, 478, 2] mapped back to the original footage's pixels."""
        return np.stack([box.to_original(p) for box, p in zip(self.boxes, self.points)]).astype(np.float32)


@dataclass
class PreparedFootage:
    """Crops and landmark/mask cues of one photo or clip."""

    crops: np.ndarray  # [N, S, S, 3] uint8 RGB
    landmarks: LandmarkCues
    face_mask: np.ndarray  # [N, S, S] bool: inside the face oval and the person
    foreground: np.ndarray  # [N, S, S] float32 person probability (background ~ 0)
    names: list[str]
    source: str
    original_size: tuple[int, int]  # (H, W) of the footage
    is_clip: bool
    fps: float | None = None
    redetections: int = 0

    @property
    def found(self) -> np.ndarray:
        return self.landmarks.found

    def __len__(self) -> int:
        return len(self.crops)


@dataclass
class FramePriors:
    """Everything the fitting consumes for a photo or clip.

    uv: [N, S, S, 2] in the model's uv convention (as ``HeadModel.uv``), or None;
    normals: [N, S, S, 3] unit normals in the head frame (FLAME axes), or None;
    mode: ``'pixel3dmm'`` or ``'landmarks+mask'`` (lower accuracy, no network weights).
    """

    footage: PreparedFootage
    uv: np.ndarray | None = None
    normals: np.ndarray | None = None
    mode: str = MODE_LANDMARKS
    notes: list[str] = field(default_factory=list)

    @property
    def landmarks(self) -> LandmarkCues:
        return self.footage.landmarks

    @property
    def description(self) -> str:
        return MODE_DESCRIPTIONS[self.mode]


def _centre_box(image_size: tuple[int, int], size: int) -> CropBox:
    H, W = image_size
    side = min(H, W)
    x0, y0 = (W - side) // 2, (H - side) // 2
    return CropBox(x0, y0, x0 + side, y0 + side, size)


def prepare_footage(source, *, per_image_crop: bool | None = None, max_frames: int | None = None,
                    stride: int = 1, segment: bool = True, crop_size: int = CROP_SIZE) -> PreparedFootage:
    """Detect, crop and annotate a photo, an image folder, a video or an array of frames.

    per_image_crop: one crop per frame instead of one static crop for the clip (default: a
        single photo gets its own crop; videos, image folders and several arrays are clips
        with one static crop; pass True for a set of unrelated photos).
    Frames without a face are flagged (``found`` False, NaN landmarks, empty face mask); they
    get the clip's crop, or a centred square when no frame of a photo set has a face.
    """
    footage = source if isinstance(source, Footage) else read_footage(source, max_frames=max_frames, stride=stride)
    clip = footage.is_clip if per_image_crop is None else not per_image_crop
    H, W = footage.frames[0].shape[:2]
    n = len(footage)
    raw = np.full((n, N_LANDMARKS, 3), np.nan)
    with FaceLandmarker(tracking=clip) as landmarker:
        for i, frame in enumerate(footage.frames):
            if frame.shape[:2] != (H, W) and clip:
                raise ValueError(f"{footage.source}: frame {footage.names[i]} is {frame.shape[1]}x{frame.shape[0]}, "
                                 f"the clip {W}x{H}")
            pts = landmarker.track(frame) if clip else landmarker.detect(frame)
            if pts is not None:
                raw[i] = pts
        redetections = landmarker.redetections
    found = ~np.isnan(raw[:, 0, 0])
    face_boxes = [box_of_points(raw[i, :, :2]) if found[i] else None for i in range(n)]
    if clip:
        if found.any():
            shared = clip_crop_box(np.stack([b for b in face_boxes if b is not None]), (H, W), crop_size)
        else:
            shared = _centre_box((H, W), crop_size)
        boxes = [shared] * n
    else:
        boxes = [clip_crop_box(b[None], footage.frames[i].shape[:2], crop_size) if b is not None
                 else _centre_box(footage.frames[i].shape[:2], crop_size) for i, b in enumerate(face_boxes)]
    if not found.any():
        log.warning("%s: MediaPipe found no face in any of the %d frames", footage.source, n)
    elif not found.all():
        log.info("%s: no face in %d of %d frames (flagged)", footage.source, int((~found).sum()), n)
    crops = np.stack([box.crop(frame) for box, frame in zip(boxes, footage.frames)])
    points = np.full((n, N_LANDMARKS, 2), np.nan, np.float32)
    depth = np.full((n, N_LANDMARKS), np.nan, np.float32)
    for i in np.nonzero(found)[0]:
        points[i] = boxes[i].to_crop(raw[i, :, :2])
        depth[i] = raw[i, :, 2] * boxes[i].scale
    foreground = np.ones((n, crop_size, crop_size), np.float32)
    if segment:
        segmenter = ForegroundSegmenter()
        try:
            foreground = np.stack([segmenter(c) for c in crops])
        finally:
            segmenter.close()
    face_mask = np.zeros((n, crop_size, crop_size), bool)
    for i in np.nonzero(found)[0]:
        face_mask[i] = face_oval_mask(points[i], (crop_size, crop_size)) & (foreground[i] >= FOREGROUND_THRESHOLD)
    cues = LandmarkCues(points=points, depth=depth, found=found, boxes=boxes, image_size=crop_size)
    return PreparedFootage(crops=crops, landmarks=cues, face_mask=face_mask, foreground=foreground,
                           names=list(footage.names), source=footage.source, original_size=(H, W), is_clip=clip,
                           fps=footage.fps, redetections=redetections)


def is_flame_topology(model) -> bool:
    """Pixel3DMM's uv prior is FLAME's uv layout: usable only for FLAME's 5023-vertex topology.

    Headcast's synthetic stand-in plays FLAME's part in tests and the demo, so the uv path runs
    end to end with it too (its own uv layout takes the place of FLAME's).
    """
    if model is None:
        return False
    return (model.n_vertices == 5023 and model.faces.shape[0] == 9976) or model.name == "headcast-synthetic"


class MapCache:
    """Per-frame prior maps on disk, so that a resumed track does not run the networks again.

    One ``maps_<frame>.npz`` per frame in ``folder`` (written atomically), holding ``uv`` and/or
    ``normals`` as float16 at the size they were stored at.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, i: int) -> Path:
        return self.folder / f"maps_{i:06d}.npz"

    def get(self, i: int) -> dict[str, np.ndarray] | None:
        try:
            with np.load(self._path(i), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError):
            return None  # missing, or half-written by a crash: computed again

    def put(self, i: int, maps: dict[str, np.ndarray]) -> None:
        tmp = self.folder / f".maps_{i:06d}.tmp.npz"
        with open(tmp, "wb") as fh:
            np.savez(fh, **{k: np.asarray(v, dtype=np.float16) for k, v in maps.items()})
        os.replace(tmp, self._path(i))


def _resized(maps: np.ndarray, size: int | None, nearest: bool) -> np.ndarray:
    """[N, S, S, C] maps at ``size`` (nearest for uv, whose values must not blend across seams)."""
    if size is None or maps.shape[1] == size:
        return maps
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return np.stack([cv2.resize(m, (size, size), interpolation=interp) for m in maps])


def compute_priors(source, weights=None, *, model=None, prepared: PreparedFootage | None = None,
                   tta: bool = True, half: bool = False, batch_size: int = 4, device=None,
                   out_size: int | None = None, cache: MapCache | None = None, on_frames=None,
                   **prepare_kwargs) -> FramePriors:
    """Landmarks, masks and (with weights) the Pixel3DMM uv/normal maps for a photo or clip.

    weights: None (landmark + mask mode), a folder holding ``uv.ckpt`` / ``normals.ckpt``, or a
        ready :class:`headcast.priors.PriorPredictor`.
    model: the head model being fitted; the uv prior is only computed for FLAME topology
        (other models use landmarks, mask and normals).
    out_size: keep the maps at this size (the fit's) as float16 instead of the crop size as
        float32: a long clip's maps then take 0.7 MB a frame in memory at 256² instead of 5 MB.
    cache: a :class:`MapCache`: frames found there are not predicted again, predicted frames
        are stored there as they are done (a few frames at a time).
    on_frames: called with the number of frames done after each chunk (progress).
    """
    from .predictor import PriorPredictor, find_weights

    footage = prepared if prepared is not None else prepare_footage(source, **prepare_kwargs)
    priors = FramePriors(footage=footage)
    predictor = weights
    if weights is not None and not isinstance(weights, PriorPredictor):
        found = find_weights(weights)
        if found:
            predictor = PriorPredictor.from_checkpoints(found.get("uv_map"), found.get("normals"), device=device,
                                                        tta=tta, half=half, batch_size=batch_size)
        else:
            predictor = None
            priors.notes.append(f"no uv.ckpt / normals.ckpt in {Path(weights).expanduser()}")
    if predictor is None:
        log.warning("Pixel3DMM network weights not available: fitting runs in the lower-accuracy %r mode (%s)",
                    MODE_LANDMARKS, MODE_DESCRIPTIONS[MODE_LANDMARKS])
        priors.notes.append(MODE_DESCRIPTIONS[MODE_LANDMARKS])
        return priors
    skip_uv = model is not None and not is_flame_topology(model)
    if skip_uv and "uv_map" in predictor.networks:
        priors.notes.append(f"uv prior skipped: model {model.name!r} does not have FLAME's topology")
    kinds = [k for k in predictor.networks if not (k == "uv_map" and skip_uv)]
    if kinds:
        sub = PriorPredictor(predictor.networks.get("uv_map") if "uv_map" in kinds else None,
                             predictor.networks.get("normals"), tta=predictor.tta, half=predictor.half,
                             batch_size=predictor.batch_size)
        if out_size is None and cache is None:
            maps = sub.predict(footage.crops)
            priors.uv = maps.uv_cue()
            priors.normals = maps.normals_cue()
        else:
            priors.uv, priors.normals = _predict_cached(sub, footage, kinds, out_size, cache, on_frames)
        priors.mode = MODE_NETWORKS
    else:
        log.warning("no usable Pixel3DMM network for model %r: lower-accuracy %r mode", getattr(model, "name", None),
                    MODE_LANDMARKS)
        priors.notes.append(MODE_DESCRIPTIONS[MODE_LANDMARKS])
    return priors


def _predict_cached(predictor, footage: PreparedFootage, kinds: list[str], out_size: int | None,
                    cache: MapCache | None, on_frames=None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The uv / normal cue maps of every frame, from the cache where present, else predicted a
    chunk at a time (and cached); frames without a face get zero maps."""
    n = len(footage)
    size = out_size or footage.crops.shape[1]
    dtype = np.float16 if out_size else np.float32
    # cue name -> (network, channels)
    wanted = {name: c for name, (kind, c) in {"uv": ("uv_map", 2), "normals": ("normals", 3)}.items() if kind in kinds}
    maps = {name: np.zeros((n, size, size, c), dtype) for name, c in wanted.items()}
    todo = []
    for i in np.flatnonzero(footage.found):
        hit = cache.get(i) if cache is not None else None
        if hit is not None and all(name in hit and hit[name].shape[0] == size for name in maps):
            for name, arr in maps.items():
                arr[i] = hit[name]
        else:
            todo.append(int(i))
    if todo:
        log.info("predicting the priors of %d of %d frames (%d from the cache)", len(todo), n,
                 int(footage.found.sum()) - len(todo))
    chunk = max(1, predictor.batch_size) * 4
    for start in range(0, len(todo), chunk):
        ids = todo[start:start + chunk]
        predicted = predictor.predict(footage.crops[ids])
        got = {}
        if "uv" in maps:
            got["uv"] = _resized(predicted.uv_cue(), out_size, nearest=True)
        if "normals" in maps:
            got["normals"] = _resized(predicted.normals_cue(), out_size, nearest=False)
        for k, i in enumerate(ids):
            for name, arr in maps.items():
                arr[i] = got[name][k]
            if cache is not None:
                cache.put(i, {name: values[k] for name, values in got.items()})
        if on_frames is not None:
            on_frames(min(start + chunk, len(todo)))
    return maps.get("uv"), maps.get("normals")
