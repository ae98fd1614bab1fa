#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark the FLAME fitting on synthetic ground truth: accuracy and speed.

Draws random identities, expressions, poses and cameras on the synthetic model, renders
exact uv / normal / mask / landmark cues (``headcast.fit.synthetic_cues``), optionally
corrupts them the way real networks err (smooth warps and biases, noise, blur, outlier
blobs, a wrong eye region, ragged masks, landmark jitter and dropouts, dropped frames),
fits, and reports face-region vertex errors (posed and neutral, mm), landmark reprojection
error (px), focal error and time per image / per frame. Rewrites the "## Fitting" section
of BENCHMARKS.md (other sections are kept).

    .venv/bin/python scripts/bench_fit.py                 # full run, writes BENCHMARKS.md
    .venv/bin/python scripts/bench_fit.py --quick --no-write
    .venv/bin/python scripts/bench_fit.py --only single --seeds 3 --override '{"w_expr": 0.02}'

Targets (2 CPU cores, 256²): <= 15 s per single image (500 steps), >= 2 frames/s for the
video online pass, mean posed face-region error <= 1.0 mm with realistic corruption and
<= 0.2 mm with exact cues.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))
sys.path.insert(0, str(ROOT / "scripts"))
from bench_common import cpu_name, write_section  # noqa: E402
from headcast.openmp import set_default_wait_policy  # noqa: E402

set_default_wait_policy()  # as the headcast command does: the timings are what users get
SECTION = "## Fitting"


def openmp_waits() -> str:
    policy = os.environ.get("OMP_WAIT_POLICY")
    return f"OMP_WAIT_POLICY={policy}" if policy else f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', '(default)')}"


def med(xs) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def mean(xs) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


class Bench:
    def __init__(self, args) -> None:
        import torch

        from headcast.fit import FitConfig
        from headcast.flame.synthetic import build_synthetic_model

        torch.set_num_threads(args.threads)
        self.args = args
        self.model = build_synthetic_model(seed=0)
        over = json.loads(args.override) if args.override else {}
        self.cfg = FitConfig(steps=args.steps, **over)
        self.size = args.size

    def scene(self, seed: int, n: int = 1, video: bool = False):
        from headcast.fit import synthetic_cues as sc

        rng = np.random.default_rng(1000 + seed)
        truth = sc.random_truth(self.model, rng, n, self.size, video=video)
        frames = [sc.render_cues(self.model, truth, i) for i in range(n)]
        return truth, frames, rng

    def errors(self, fit, truth) -> dict:
        from headcast.fit import metrics as M

        m = self.model
        return {"posed": mean(M.posed_error_mm(m, fit, truth)),
                "posed_rigid": mean(M.posed_error_mm(m, fit, truth, "rigid")),
                "neutral": M.neutral_error_mm(m, fit, truth),
                "lmk_px": mean(M.landmark_error_px(m, fit, truth)),
                "focal_pct": float(np.mean(np.abs(fit.intrinsics[:, 0] / truth.intrinsics[:, 0] - 1)) * 100)}

    # ---- single image -------------------------------------------------------------------

    def single(self, seed: int, corruption, keep=None, known_focal: bool = False, identity_views: int = 0) -> dict:
        """One scene fitted from one image; ``corruption``: "exact", "realistic" or a
        :class:`~headcast.fit.synthetic_cues.Corruption`; ``known_focal``: the true focal
        length is given to the fit (held, as a user's known lens); ``identity_views``: the
        identity that many other photos of the person gave is held (the image's cues are the
        same as without)."""
        from headcast.fit import fit_images
        from headcast.fit import synthetic_cues as sc

        truth, frames, rng = self.scene(seed)
        c = corruption if isinstance(corruption, sc.Corruption) else None if corruption == "exact" else sc.REALISTIC
        cues = sc.corrupt(frames[0], rng, c)
        if keep:
            cues = sc.only(cues, *keep)
        identity = self.photo_identity(truth, seed, identity_views)[0] if identity_views else None
        t0 = time.perf_counter()
        focal = truth.intrinsics[0, 0] / self.size if known_focal else None
        fit = fit_images(self.model, [cues], self.cfg, image_size=self.size, focal=focal, identity=identity)
        sec = time.perf_counter() - t0
        return {**self.errors(fit, truth), "seconds": sec, "camera_s": fit.info["seconds_camera"]}

    # ---- several images -----------------------------------------------------------------

    def multi(self, seed: int, n_views: int) -> dict:
        from headcast.fit import fit_images
        from headcast.fit import metrics as M
        from headcast.fit import synthetic_cues as sc

        truth, frames, rng = self.scene(seed, n_views)
        cues = [sc.corrupt(f, rng, sc.REALISTIC) for f in frames]
        t0 = time.perf_counter()
        joint = fit_images(self.model, cues, self.cfg, image_size=self.size)
        sec = time.perf_counter() - t0
        singles = [M.neutral_error_mm(self.model, fit_images(self.model, [c], self.cfg, image_size=self.size), truth)
                   for c in cues]
        return {"joint_neutral": M.neutral_error_mm(self.model, joint, truth), "single_neutral": mean(singles),
                "best_single_neutral": min(singles), "posed": mean(M.posed_error_mm(self.model, joint, truth)),
                "seconds": sec}

    # ---- video --------------------------------------------------------------------------

    def photo_identity(self, truth, seed: int, n_views: int) -> tuple[np.ndarray, float]:
        """The identity a joint fit of ``n_views`` photos of ``truth``'s person recovers (realistic
        cues; each photo its own expression, pose and camera), and the fit's seconds."""
        from dataclasses import replace

        from headcast.fit import fit_images
        from headcast.fit import synthetic_cues as sc

        rng = np.random.default_rng(5000 + seed)
        views = replace(sc.random_truth(self.model, rng, n_views, self.size), shape=truth.shape)
        cues = [sc.corrupt(sc.render_cues(self.model, views, i), rng, sc.REALISTIC) for i in range(n_views)]
        t0 = time.perf_counter()
        fit = fit_images(self.model, cues, self.cfg, image_size=self.size)
        return fit.shape, time.perf_counter() - t0

    def video(self, seed: int, n: int, corruption: str, drop: float, identity_views: int = 0) -> dict:
        """A clip; with ``identity_views``, tracked holding the identity that many photos of the
        same person gave (the clip's cues are the same as without)."""
        from headcast.fit import metrics as M
        from headcast.fit import synthetic_cues as sc
        from headcast.fit import track_video

        truth, frames, rng = self.scene(seed, n, video=True)
        c = None if corruption == "exact" else sc.REALISTIC
        cues = sc.drop_frames(sc.corrupt_clip(frames, rng, c), rng, drop)
        identity, identity_s = self.photo_identity(truth, seed, identity_views) if identity_views else (None, 0.0)
        t0 = time.perf_counter()
        fit = track_video(self.model, cues, self.cfg, image_size=self.size, identity=identity)
        sec = time.perf_counter() - t0
        info = fit.info
        return {"identity_views": identity_views, "identity_s": identity_s,
                "posed": mean(M.posed_error_mm(self.model, fit, truth)),
                "posed_rigid": mean(M.posed_error_mm(self.model, fit, truth, "rigid")),
                "neutral": M.neutral_error_mm(self.model, fit, truth),
                "lmk_px": mean(M.landmark_error_px(self.model, fit, truth)),
                "jitter": M.jitter_mm(self.model, fit, truth), "seconds": sec,
                "online_fps": info["online_frames"] / max(info["seconds_online"], 1e-9),
                "online_steps_per_frame": info["online_steps"] / max(info["online_frames"], 1),
                "first_s": info["seconds_first"], "global_s": info["seconds_global"],
                "global_steps": info["global_steps"], "dropped": sum(x is None for x in cues)}


# Realistic corruption with one kind of error taken out at a time (Corruption field changes):
# which of the networks' errors the single-image error comes from. The other errors stay
# exactly as in the realistic row (synthetic_cues.corrupt draws every error's random numbers).
ABLATIONS = (
    ("smooth uv warp", {"uv_warp_px": 0.0}),
    ("uv noise", {"uv_noise": 0.0}),
    ("smooth normal bias", {"normal_bias_deg": 0.0}),
    ("normal noise", {"normal_noise_deg": 0.0}),
    ("blur", {"uv_blur_px": 0.0, "normal_blur_px": 0.0}),
    ("blur of the normal map", {"normal_blur_px": 0.0}),
    ("blur of the uv map", {"uv_blur_px": 0.0}),
    ("outlier blobs", {"blob_radius_px": 0.0}),
    ("wrong eye region", {"wrong_eyes": False}),
    ("ragged mask edges", {"mask_edge_px": 0.0}),
    ("landmark noise, outliers, dropouts", {"landmark_noise_px": 0.0, "landmark_outlier_px": 0.0,
                                            "landmark_drop_frac": 0.0}),
    ("both smooth errors (warp and normal bias)", {"uv_warp_px": 0.0, "normal_bias_deg": 0.0}),
)


def spread(xs) -> str:
    """'min-max, standard error s' of per-scene values (how far a 5-scene mean can be trusted)."""
    if len(xs) < 2:
        return "one scene"
    se = float(np.std(xs, ddof=1) / np.sqrt(len(xs)))
    return f"scenes {min(xs):.3f}-{max(xs):.3f}, standard error {se:.3f}"


def fmt(x, nd=2) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{nd}f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds and frames (a smoke run)")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=None, help="video length")
    parser.add_argument("--only", default="single,focal,identity,subsets,ablation,multi,video")
    parser.add_argument("--override", default="", help="JSON of FitConfig fields to change")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 5)
    n_video = args.frames or (20 if args.quick else 100)
    only = set(args.only.split(","))
    bench = Bench(args)
    import torch

    log = lambda *a: print(*a, flush=True)  # noqa: E731
    out: dict = {}
    t_all = time.perf_counter()

    for group, known, views, key in (("single", False, 0, "single_{}"), ("focal", True, 0, "focal::{}"),
                                     ("identity", False, 4, "identity::{}")):
        if group not in only:
            continue
        for corr in ("exact", "realistic") if group != "identity" else ("realistic",):
            res = []
            for s in range(seeds):
                r = bench.single(s, corr, known_focal=known, identity_views=views)
                log(f"{group} {corr} seed {s}: " + json.dumps({k: round(v, 3) for k, v in r.items()}))
                res.append(r)
            out[key.format(corr)] = res
    if "subsets" in only:
        for name, keep in (("uv + mask", ("uv", "mask")), ("normals + mask", ("normals", "mask")),
                           ("landmarks only", ("landmarks",)), ("uv + normals (no mask, no landmarks)", ("uv", "normals"))):
            res = []
            for s in range(max(1, seeds // 2 + 1) if not args.quick else 1):
                r = bench.single(s, "realistic", keep)
                log(f"subset {name} seed {s}: " + json.dumps({k: round(v, 3) for k, v in r.items()}))
                res.append(r)
            out[f"subset::{name}"] = res
    if "ablation" in only:
        from dataclasses import replace

        from headcast.fit import synthetic_cues as sc

        n_abl = max(1, seeds // 2 + 1) if not args.quick else 1
        base = out.get("single_realistic") or [bench.single(s, "realistic") for s in range(n_abl)]
        out["ablation_base"] = base[:n_abl]
        for name, change in ABLATIONS:
            res = []
            for s in range(n_abl):
                r = bench.single(s, replace(sc.REALISTIC, **change))
                log(f"ablation without {name} seed {s}: " + json.dumps({k: round(v, 3) for k, v in r.items()}))
                res.append(r)
            out[f"ablation::{name}"] = res
    if "multi" in only:
        res = []
        for s in range(max(1, seeds // 2) if not args.quick else 1):
            r = bench.multi(s, 4)
            log(f"multi seed {s}: " + json.dumps({k: round(v, 3) for k, v in r.items()}))
            res.append(r)
        out["multi"] = res
    if "video" in only:
        res = []
        for corr, drop, views in (("realistic", 0.05, 0), ("realistic", 0.05, 4), ("exact", 0.0, 0)):
            r = bench.video(0, n_video, corr, drop, identity_views=views)
            log(f"video {corr} drop {drop} identity views {views}: "
                + json.dumps({k: round(v, 3) for k, v in r.items()}))
            res.append((corr, drop, r))
        out["video"] = res
    total = time.perf_counter() - t_all

    # ---- the section ----
    cfg = bench.cfg
    head = (f"`scripts/bench_fit.py`, {dt.date.today().isoformat()}, {cpu_name()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__} ({args.threads} threads, {openmp_waits()}), Python {platform.python_version()}, "
            f"synthetic model ({bench.model.n_vertices} vertices), {args.size}² fits, {args.steps} steps per image, "
            f"{seeds} random scenes per row{' (quick run)' if args.quick else ''}; whole run {total / 60:.1f} min. "
            "Timings are wall-clock and noisy: other jobs share the machine.")
    lines = [SECTION, "", head, "",
             "Errors are means over the face-region vertices. *posed*: the posed mesh after a similarity "
             "alignment of the face region (a single view fixes the head only up to a uniform scale: k times "
             "larger and k times farther projects identically, which only the identity prior decides); "
             "*rigid*: after a rigid alignment only; *neutral*: the identity alone (no expression, rest pose), "
             "similarity-aligned; *lmk px*: reprojection error of the 51 static iBUG landmarks; *focal*: "
             "mean |f/f_true - 1|. Realistic corruption (per frame; sizes are rms per component, in brackets "
             "the rms displacement or angle over the head): smooth uv warp 1.5 px per axis (≈ 2 px) + uv noise "
             "0.001, smooth normal bias 6° per component (≈ 7.5°) + noise 4° (5.7°), 1 px blur of each map before the noise, "
             "2 outlier blobs (r ≈ 8 px), wrong eye region (uv shifted, normals flattened), ragged mask edges "
             "±1.5 px, landmark noise 1.5 px per axis with 5% outliers (8 px) and 5% dropouts; in clips the "
             "smooth warp and normal bias are correlated between frames (ρ = 0.8).", ""]
    if any(k.startswith(("single_", "subset", "focal", "identity")) for k in out):
        lines += ["| single image | posed mm | rigid mm | neutral mm | lmk px | focal % | s / image | camera init s |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        labels = {"exact": "exact cues", "realistic": "realistic corruption"}
        rows = [(labels[k.split("_")[1]], out[k]) for k in ("single_exact", "single_realistic") if k in out]
        held = {"focal": "focal length known (held)", "identity": "identity from 4 other photos (held)"}
        rows += [(f"{labels[k.split('::')[1]]}, {held[k.split('::')[0]]}", out[k]) for k in out
                 if k.split("::")[0] in held]
        rows += [(f"realistic, {k.split('::')[1]}", out[k]) for k in out if k.startswith("subset::")]
        for label, r in rows:
            lines.append(f"| {label} | {fmt(mean([x['posed'] for x in r]), 3)} | "
                         f"{fmt(mean([x['posed_rigid'] for x in r]), 3)} | {fmt(mean([x['neutral'] for x in r]), 3)} | "
                         f"{fmt(mean([x['lmk_px'] for x in r]))} | {fmt(mean([x['focal_pct'] for x in r]), 1)} | "
                         f"{fmt(med([x['seconds'] for x in r]), 1)} | {fmt(med([x['camera_s'] for x in r]), 1)} |")
        lines.append("")
    abl = [k for k in out if k.startswith("ablation::")]
    if abl:
        base = out["ablation_base"]
        b_posed = mean([x["posed"] for x in base])
        lines += [f"Where the realistic error comes from: the same {len(base)} scene(s) with one kind of "
                  f"error taken out of the realistic corruption (all of it: {fmt(b_posed, 3)} mm posed).", "",
                  "| realistic corruption without | posed mm | change mm | neutral mm | focal % |",
                  "|---|---:|---:|---:|---:|"]
        for key in abl:
            r = out[key]
            p = mean([x["posed"] for x in r])
            lines.append(f"| {key.split('::')[1]} | {fmt(p, 3)} | {p - b_posed:+.3f} | "
                         f"{fmt(mean([x['neutral'] for x in r]), 3)} | {fmt(mean([x['focal_pct'] for x in r]), 1)} |")
        lines.append("")
    if "multi" in out:
        r = out["multi"]
        lines += ["| 4 unordered images (realistic) | neutral mm, joint | neutral mm, single (mean) | "
                  "neutral mm, best single | posed mm | s (joint fit) |", "|---|---:|---:|---:|---:|---:|",
                  f"| {len(r)} scene(s) | {fmt(mean([x['joint_neutral'] for x in r]), 3)} | "
                  f"{fmt(mean([x['single_neutral'] for x in r]), 3)} | {fmt(mean([x['best_single_neutral'] for x in r]), 3)} | "
                  f"{fmt(mean([x['posed'] for x in r]), 3)} | {fmt(med([x['seconds'] for x in r]), 1)} |", ""]
    if "video" in out:
        lines += [f"| video, {n_video} frames | posed mm | rigid mm | neutral mm | lmk px | jitter mm | online frames/s | "
                  "online steps/frame | first frame s | global pass s (steps) | total s |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for corr, drop, r in out["video"]:
            dropped = f", {r['dropped']} frames dropped" if r["dropped"] else ""
            if r["identity_views"]:
                dropped += (f", identity from {r['identity_views']} photos held (their fit: "
                            f"{fmt(r['identity_s'], 1)} s, not in total s)")
            lines.append(f"| {corr}{dropped} | {fmt(r['posed'], 3)} | "
                         f"{fmt(r['posed_rigid'], 3)} | {fmt(r['neutral'], 3)} | {fmt(r['lmk_px'])} | {fmt(r['jitter'], 3)} | "
                         f"{fmt(r['online_fps'])} | {fmt(r['online_steps_per_frame'], 1)} | {fmt(r['first_s'], 1)} | "
                         f"{fmt(r['global_s'], 1)} ({r['global_steps']}) | {fmt(r['seconds'], 1)} |")
        lines += ["", "*jitter*: mean over consecutive frames and face vertices of |Δfit − Δtruth| (camera frame), "
                  "i.e. frame-to-frame motion the truth does not have."]
    targets = []
    if "single_realistic" in out:
        p = [x["posed"] for x in out["single_realistic"]]
        targets.append(f"posed error with realistic corruption {fmt(mean(p), 3)} mm (target ≤ 1.0; {spread(p)})")
    if "single_exact" in out:
        p = [x["posed"] for x in out["single_exact"]]
        targets.append(f"with exact cues {fmt(mean(p), 3)} mm (target ≤ 0.2; {spread(p)})")
        if "focal::exact" in out:
            p = [x["posed"] for x in out["focal::exact"]]
            targets.append(f"with exact cues and the focal length known {fmt(mean(p), 3)} mm ({spread(p)})")
        targets.append(f"single image {fmt(med([x['seconds'] for x in out['single_exact'] + out.get('single_realistic', [])]), 1)} s "
                       f"(target ≤ 15)")
    if "video" in out:
        targets.append(f"online pass {fmt(out['video'][0][2]['online_fps'])} frames/s (target ≥ 2)")
    lines += ["", "Targets: " + "; ".join(targets) + ".", ""]
    if cfg != type(cfg)(steps=args.steps):
        lines.append(f"Config overrides: `{args.override}`")
    body = "\n".join(lines) + "\n"
    print(body)
    if not args.no_write:
        write_section(args.out, SECTION, body)
        print(f"wrote the {SECTION!r} section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
