# SPDX-License-Identifier: GPL-3.0-or-later
"""Video tracking: first frame, an online pass frame by frame, then a global pass.

1. First frame (the first with any cue): camera initialisation, then the full energy with
   the identity and the camera free.
2. Online pass: every later frame starts from its predecessor and optimises its own
   parameters (identity and camera frozen) until the loss stops improving; each finished
   frame is reported through ``on_frame`` so a pipeline can save it, and a run can be
   resumed from those saved frames.
3. Global pass: mini-batches of random frames, then of contiguous windows, optimise all
   per-frame parameters together with the shared identity and camera under temporal
   smoothness; frames without cues are filled in by the smoothness.

There is no frame-count limit: the per-frame parameters are small tensors, and cues are
read from ``frames`` (any sequence, e.g. a lazy loader over files) when needed, with a
bounded cache; only the compact uv correspondences are kept for every frame.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

from ..flame import HeadModel
from .config import FitConfig
from .cues import CueError, FrameCues, downsample_cues
from .energy import EnergyOptions, PreparedFrame, prepare_frame
from .images import infer_image_size, known_focals, known_identity
from .progress import Monitor, ProgressFn
from .result import FitResult, FrameFit
from .solver import FRAME_ONLY, Fitter, Timer, free_groups


class _FrameStore:
    """Prepared frames on demand: a small LRU cache plus every frame's correspondences."""

    def __init__(self, fitter: Fitter, frames: Sequence[FrameCues | None], capacity: int) -> None:
        self.fitter = fitter
        self.frames = frames
        self.capacity = max(1, capacity)
        self.cache: OrderedDict[int, PreparedFrame] = OrderedDict()
        self.corr: dict[int, tuple] = {}
        self.empty: dict[int, bool] = {}

    def __getitem__(self, i: int) -> PreparedFrame:
        hit = self.cache.get(i)
        if hit is not None:
            self.cache.move_to_end(i)
            return hit
        f = self.fitter
        p = prepare_frame(f.head, self.frames[i], f.cfg, f.size, where=f"frame {i}", corr=self.corr.get(i))
        if p.corr_ids is not None:
            self.corr[i] = (p.corr_ids, p.corr_target)
        self.empty[i] = p.empty
        self.cache[i] = p
        if len(self.cache) > self.capacity:
            self.cache.popitem(last=False)
        return p

    def is_empty(self, i: int) -> bool:
        if i not in self.empty:
            self[i]
        return self.empty[i]


def _has_dense_cues(store: _FrameStore, n: int) -> bool:
    """Whether the clip's first frame with cues has a uv or a normal map (a clip has them on
    every frame or on none: they come from the same networks)."""
    first = next((i for i in range(n) if not store.is_empty(i)), None)
    return first is not None and store[first].pixel_table is not None


def _first_size(frames: Sequence, image_size, probe: int = 16):
    if image_size is not None:
        return infer_image_size([], image_size)
    for i in range(len(frames)):
        c = frames[i]
        if c is not None:
            try:
                return infer_image_size([c], None)
            except CueError:
                if i >= probe:
                    break
    raise CueError("frames", "no per-pixel cue to read the image size from: pass image_size=")


def track_video(model: HeadModel, frames: Sequence[FrameCues | None], config: FitConfig | None = None, *,
                image_size=None, shape_prior: np.ndarray | None = None, progress: ProgressFn | None = None,
                cancel=None, on_frame: Callable[[int, FrameFit], None] | None = None,
                resume: Sequence[FrameFit] | None = None, start_frame: int | None = None,
                global_pass: bool = True, cache_frames: int = 48, focal: float | None = None,
                identity=None) -> FitResult:
    """Track a clip: ``frames[i]`` are the cues of frame i (None where there is no prediction).

    resume: finished online frames 0..k-1 (as reported through ``on_frame``); tracking goes on
    at ``start_frame`` (default k) with their identity and camera.
    focal: a known focal length (f / W of the fit image), held instead of solved.
    identity: a known identity code (:func:`~headcast.fit.images.known_identity`), held
    instead of solved (a resumed track keeps the identity of its saved frames).
    """
    cfg = config or FitConfig()
    n = len(frames)
    if n == 0:
        raise CueError("frames", "the clip has no frames")
    size = _first_size(frames, image_size)
    monitor = Monitor(progress, cancel)
    timer = Timer()
    fitter = Fitter(model, cfg, size, n, None, shape_prior, monitor)
    known = known_focals(focal, 1)
    if known is not None:
        fitter.params.set_focal(0, math.log(known[0]))
    held_identity = fitter.hold_identity(known_identity(identity, fitter.head.n_shape))
    store = _FrameStore(fitter, frames, cache_frames)
    valid = np.zeros(n, bool)
    full = free_groups(cfg, focal_held=known is not None, identity_held=held_identity)

    def report(i: int, ok: bool) -> None:
        valid[i] = ok
        if on_frame is not None:
            on_frame(i, fitter.frame_fit(i, ok))

    # ---- resume or first frame ----
    resume = list(resume or [])
    start = len(resume) if start_frame is None else int(start_frame)
    if resume:
        if [r.index for r in resume[:start]] != list(range(min(start, len(resume)))) or start > len(resume):
            raise ValueError("resume must hold the finished frames 0..start_frame-1 in order")
        for r in resume[:start]:
            fitter.load_frame_fit(r)
            valid[r.index] = r.valid
        fitter.load_shared(resume[start - 1].shape, resume[start - 1].intrinsics)
        if all(r.state for r in resume[:start]):
            # exact raw parameters and optimiser state (load_shared above re-expressed the depths
            # for a new focal reference; the saved rows go with the saved reference)
            fitter.load_optimiser_state(start - 1, resume[start - 1].state, shared=True)
            for r in resume[:start]:
                fitter.load_optimiser_state(r.index, r.state, shared=False)
        if start >= n:
            start = n
    t_first = 0.0
    if start == 0:
        first = next((i for i in range(n) if not store.is_empty(i)), None)
        if first is None:
            raise CueError("frames", "no frame of the clip has a usable cue")
        fitter.init_camera(first, store[first], "camera", n, fit_focal=known is None)
        fitter.solve_sparse(first, store[first], cfg.lm_iterations, with_shape=not held_identity)
        # The de-biased normals (FitConfig.normal_bias_sigma_px) are for photos: in a clip they
        # made the track jitter more (100-frame synthetic clip, realistic: posed 1.255 -> 1.179
        # mm but jitter 1.49 -> 1.98 mm with the first frame de-biased, 2.50 with every pass),
        # the smoothing weights being tuned against the plain normal term.
        fitter.run_coarse_to_fine("first_frame", [first], [frames[first]], [store[first]], cfg.first_frame_steps,
                                  full, EnergyOptions(), label=first, total=n, normal_bias=False)
        for i in range(first):  # leading frames without cues take the first fitted frame's values
            fitter.params.copy_frame(first, i)
            report(i, False)
        report(first, True)
        start = first + 1
        t_first = timer()

    # ---- how hard to smooth: clips with a uv or normal map, or landmarks and masks only ----
    landmark_clip = not _has_dense_cues(store, n)
    groups = dict(cfg.landmark_clip_smooth) if landmark_clip else {}
    online_scale = cfg.landmark_clip_online_smooth_scale if landmark_clip else cfg.online_smooth_scale
    global_epochs = cfg.global_epochs * (cfg.landmark_clip_global_fraction if landmark_clip else 1.0)

    # ---- online pass (optionally at a coarser render size: more steps for the same time) ----
    t0 = timer()
    online_frames = 0
    steps_before = int(fitter.steps_taken.sum())
    k = max(1, int(cfg.online_downsample))
    small = (size[0] // k, size[1] // k)
    energy = fitter.energy_at(small)

    def prepared(i: int) -> PreparedFrame:
        if k == 1:
            return store[i]
        return prepare_frame(fitter.head, downsample_cues(frames[i], k), cfg, small, where=f"frame {i}")

    smooth = ({"n_frames": n, "scale": online_scale, "prev_only": True, "groups": groups}
              if online_scale > 0 else None)
    # The next frame's cues are read and prepared on a second thread while this one is fitted
    # (the fit is bound by per-operation overhead and leaves the other core mostly idle); only
    # that thread touches ``frames`` and ``store`` until the pass ends.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="headcast-prepare") as pool:
        ahead = pool.submit(prepared, start) if start < n else None
        for i in range(start, n):
            frame = ahead.result()
            ahead = pool.submit(prepared, i + 1) if i + 1 < n else None
            fitter.params.copy_frame(i - 1, i)
            fitter.opt.copy_row_state(i - 1, i)
            if frame.empty:
                report(i, False)
                continue
            if cfg.online_lm_iterations > 0:
                fitter.solve_sparse(i, frame, cfg.online_lm_iterations, with_shape=False, energy=energy)
            fitter.run("online", [i], [frame], cfg.online_steps, set(FRAME_ONLY), EnergyOptions(), label=i,
                       total=n, early_stop=True, smooth=smooth, lr_scale=cfg.online_lr_scale, decay=False,
                       energy=energy)
            online_frames += 1
            report(i, True)
    t_online = timer() - t0
    online_steps = int(fitter.steps_taken.sum()) - steps_before

    # ---- global pass ----
    t0 = timer()
    n_global = 0
    if global_pass and n > 1 and global_epochs > 0:
        rng = np.random.default_rng(0)
        b = min(cfg.global_batch, n)
        n_global = int(max(np.ceil(global_epochs * n / b), cfg.global_min_steps))
        n_random = int(cfg.global_random_fraction * n_global)
        n_valid = max(int(valid.sum()), 1)

        def batches(step: int):
            if step < n_random:
                rows = sorted(rng.choice(n, size=b, replace=False).tolist())
            else:
                s = int(rng.integers(0, n - b + 1))
                rows = list(range(s, s + b))
            return rows, [store[r] for r in rows]

        fitter.run("global", [], [], n_global, full, EnergyOptions(shape_scale=b / n_valid), total=n,
                   smooth={"n_frames": n, "scale": 1.0, "groups": groups}, batches=batches, lr_scale=cfg.global_lr_scale)
    t_global = timer() - t0
    info = {"seconds": timer(), "seconds_first": t_first, "seconds_online": t_online, "online_frames": online_frames,
            "online_steps": online_steps, "seconds_global": t_global, "global_steps": n_global}
    return fitter.result(valid, shared_camera=True, info=info)
