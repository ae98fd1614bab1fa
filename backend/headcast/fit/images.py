# SPDX-License-Identifier: GPL-3.0-or-later
"""Single-image and multi-image (unordered photos of one person) fitting."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..flame import HeadModel
from .config import FitConfig
from .cues import CueError, FrameCues
from .energy import EnergyOptions, prepare_frame
from .progress import Monitor, ProgressFn
from .solver import Fitter, Timer, free_groups


def infer_image_size(cues: Sequence[FrameCues | None], image_size) -> tuple[int, int]:
    """The fit image size: given, or read off the first per-pixel cue."""
    if image_size is not None:
        h, w = (image_size, image_size) if np.isscalar(image_size) else image_size
        return int(h), int(w)
    for c in cues:
        if c is None:
            continue
        for name in ("uv", "normals", "face_mask"):
            a = getattr(c, name)
            if a is not None:
                return int(np.shape(a)[0]), int(np.shape(a)[1])
    raise CueError("cues", "no per-pixel cue to read the image size from: pass image_size=")


def known_focals(focal, n: int) -> np.ndarray | None:
    """A known focal length for each of n images (f / W, the fit image's width), or None.

    Why hold it: one view tells the focal length from the identity only through perspective,
    which a head at a metre barely shows, so a solved focal is often 5-20% off and the shape
    bends to make up for it. Synthetic benchmark (exact cues, 256², 500 steps, 10 scenes): the
    true focal held, 0.187 mm posed error against 0.225 mm solved (``scripts/bench_fit.py``).
    """
    if focal is None:
        return None
    f = np.asarray(focal, dtype=np.float64).reshape(-1)
    if f.size == 1:
        f = np.repeat(f, n)
    if f.size != n:
        raise CueError("focal", f"{f.size} focal lengths for {n} images")
    if not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise CueError("focal", f"focal lengths must be positive (got {f.tolist()})")
    return f


def known_identity(identity, n_shape: int) -> np.ndarray | None:
    """A known identity code (the shape coefficients of an earlier fit of the same person on
    the same model) as ``n_shape`` coefficients, or None.

    Why hold one: photos of several views fix the identity far better than one photo or a clip
    whose network errors repeat from frame to frame (synthetic benchmark: 4 photos, neutral
    error 1.10 mm against 1.45 mm from one), so an identity solved once can be reused for
    every later photo and clip of that person.
    """
    if identity is None:
        return None
    code = np.asarray(identity, dtype=np.float64).reshape(-1)
    if code.size > n_shape and np.any(code[n_shape:] != 0):
        raise CueError("identity", f"{code.size} identity coefficients, the model has {n_shape}")
    if not np.all(np.isfinite(code)):
        raise CueError("identity", "identity coefficients must be finite")
    out = np.zeros(n_shape)
    out[: min(code.size, n_shape)] = code[:n_shape]
    return out


def fit_images(model: HeadModel, cues: Sequence[FrameCues | None], config: FitConfig | None = None, *,
               image_size=None, shape_prior: np.ndarray | None = None, share_camera: bool = False,
               focal=None, identity=None, progress: ProgressFn | None = None, cancel=None):
    """Fit one identity to one or more images of the same person.

    Each image gets its own expression, pose and (unless ``share_camera``) its own camera;
    the identity is shared. One image is the single-image case: camera initialisation, then
    ``config.steps`` steps of the full energy. Images without usable cues are kept in the
    result with ``valid = False`` (their parameters stay at the initialisation).

    ``focal``: a known focal length, in units of the image width (f / W), for every image or
    one per image; it is held instead of solved (see :func:`known_focals`).
    ``identity``: a known identity code (see :func:`known_identity`), held instead of solved.
    """
    cfg = config or FitConfig()
    cues = list(cues)
    if not cues:
        raise CueError("cues", "no images to fit")
    size = infer_image_size(cues, image_size)
    monitor = Monitor(progress, cancel)
    timer = Timer()
    n = len(cues)
    cam_index = np.zeros(n, dtype=np.int64) if share_camera else np.arange(n)
    fitter = Fitter(model, cfg, size, n, cam_index, shape_prior, monitor)
    known = known_focals(focal, n)
    if known is not None:
        cams, first = np.unique(cam_index, return_index=True)  # a shared camera takes its first image's
        for cam, i in zip(cams, first):
            fitter.params.set_focal(int(cam), math.log(known[i]))
    held_identity = fitter.hold_identity(known_identity(identity, fitter.head.n_shape))
    frames = [prepare_frame(fitter.head, c, cfg, size, where=f"image {i}") for i, c in enumerate(cues)]
    valid = np.array([not f.empty for f in frames])
    rows = [i for i in range(n) if valid[i]]
    if not rows:
        raise CueError("cues", "none of the images has a usable cue")
    monitor.check()

    for i in rows:
        fitter.init_camera(i, frames[i], "camera", n, fit_focal=known is None and (not share_camera or i == rows[0]))
        # the identity is shared: solved per image only when there is one image
        fitter.solve_sparse(i, frames[i], cfg.lm_iterations, with_shape=len(rows) == 1 and not held_identity)
    t_camera = timer()

    active = free_groups(cfg, focal_held=known is not None, identity_held=held_identity)
    batch = cfg.max_images_per_step
    sel = [cues[i] for i in rows]
    if len(rows) <= batch:
        fitter.run_coarse_to_fine("fit", rows, sel, [frames[i] for i in rows], cfg.steps, active, EnergyOptions(),
                                  label=rows[0] if n == 1 else -1, total=n)
    else:
        rng = np.random.default_rng(0)
        # every image is visited about cfg.steps times, in shuffled mini-batches
        n_steps = int(np.ceil(cfg.steps * len(rows) / batch))
        order: list[int] = []

        def batches(step, by_row):
            nonlocal order
            if len(order) < batch:
                order = order + list(rng.permutation(rows))
            pick, order = sorted(set(order[:batch])), order[batch:]
            return pick, [by_row[i] for i in pick]

        fitter.run_coarse_to_fine("fit", rows, sel, [frames[i] for i in rows], n_steps, active,
                                  EnergyOptions(shape_scale=batch / len(rows)), total=n, batches=batches)

    # final per-image energies with everything settled (for the report and the result)
    with torch.no_grad():
        for i in rows:
            _, per, _ = fitter.energy(fitter.params, [i], [frames[i]], EnergyOptions(), fitter.shape_prior)
            fitter.frame_loss[i] = float(per[0])
    info = {"seconds": timer(), "seconds_camera": t_camera, "steps": int(cfg.steps), "images": n}
    result = fitter.result(valid, shared_camera=share_camera or n == 1, info=info)
    if cfg.gls_step_fraction > 0 and fitter.normals_biased() and any(cues[i].normals is not None for i in rows):
        # photos whose normals the probe found biased: part of a GLS step (headcast.fit.gls_step),
        # jointly over the images (their shared identity, and camera when shared)
        from .gls_step import refine

        monitor.step("refine", -1 if n > 1 else 0, n, 0, float(result.loss[rows].sum()))
        held = (["shape"] if held_identity else []) + (["logf"] if known is not None else [])
        step_cues = [cues[i] if valid[i] else None for i in range(n)]
        result, result.info["gls_step"] = refine(model, result, step_cues, cfg, held=held)
        result.info["seconds"] = timer()
    return result
