#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""A Gauss-Newton step with the normals' error covariance (GLS) after a single-image fit.

A research prototype, not part of the fitting: it asks whether weighing the predicted normals
by the covariance of their errors (a smooth bias plus white noise, the benchmark's
corruption model, see ``bench_fit_bound.Noise``) moves a finished fit nearer the truth than
the fitting's own de-biasing filter does. For each scene of ``scripts/bench_fit.py``'s
realistic single-image row it fits the image as the benchmark does, linearises the cues at
the fit (central differences of every parameter, ``bench_fit_bound.jacobians``) and solves

    (J^T C^-1 J + P) delta = J^T C^-1 r - P theta

for the normals (the rendered normals blurred like the cue's, C by Woodbury on a grid of
Gaussians), the nearest-uv correspondences (the warp's covariance) and the landmarks, with
the scene prior P (theta: the fit's identity and expression; the other parameters' prior
only damps the step). The face outline is not among the cues, and the correspondences' own
subpixel error is not in their covariance (with exact cues at 96² it alone moves a step from
the truth by 0.67 mm, along the depth that 2-D positions barely see). It reports the posed
error of the fit moved by fractions of delta. Each step costs about 30 s at 256² on one core.

    .venv/bin/python scripts/bench_fit_gls.py --seeds 0-9 [--no-uv]
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))
sys.path.insert(0, str(ROOT / "scripts"))

#: residuals left out as outliers (blobs): normals farther than this (rad), uv targets and
#: landmarks farther than UV_OUTLIER_PX from where the fit puts them
NORMAL_OUTLIER_RAD = 0.45
UV_OUTLIER_PX = 5.0
EYE_MARGIN_PX = 4  # the eye region's pixels, dilated: its cues are the corruption's wrong ones


def blur_image(a: np.ndarray, sigma_px: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(a, sigma=(sigma_px, sigma_px, 0)) if sigma_px > 0 else a


def eye_pixels(model, head, face_id: np.ndarray) -> np.ndarray:
    """Pixels that show a triangle touching the eye region or an eyeball, from the fit's own
    raster (not the truth's), dilated by EYE_MARGIN_PX."""
    from scipy.ndimage import binary_dilation

    ids = np.concatenate([model.masks[k] for k in ("eye_region", "left_eyeball", "right_eyeball") if k in model.masks])
    eye_face = np.isin(head.faces.numpy(), ids).any(1)
    shown = face_id >= 0
    mask = np.zeros(face_id.shape, bool)
    mask[shown] = eye_face[face_id[shown]]
    return binary_dilation(mask, iterations=EYE_MARGIN_PX)


def gls_step(model, fit, cues, noise=None, blur_px: float = 1.0, prior_pull: bool = True):
    """The GLS Gauss-Newton step from ``fit`` (a one-image FitResult) for ``cues``: returns
    (scene, delta) with ``scene.result(s * delta)`` the fit moved by a fraction s of it."""
    import bench_fit_bound as BB
    from headcast.fit.config import FitConfig
    from headcast.fit.correspondence import uv_correspondences

    noise = noise or BB.Noise()
    cfg = FitConfig()
    s = fit.image_size[1] / 256.0
    head = BB.fitting_head(model, fit)
    scene = BB.Scene(model, fit, head)
    base0 = scene.render(np.zeros(scene.dim))
    pixels = np.argwhere((cues.normal_mask > 0) & (base0["face_id"] >= 0) & ~eye_pixels(model, head, base0["face_id"]))
    base, Jn, ok, Jv, Jl = BB.jacobians(scene, pixels, log=lambda *a: None)
    ys, xs = pixels[:, 0], pixels[:, 1]
    rendered = blur_image(base["normals"].astype(np.float64), blur_px * s)
    r_n = cues.normals[ys, xs].astype(np.float64) - rendered[ys, xs]
    if blur_px > 0:  # the Jacobian of the blurred rendering (zero outside the pixels used)
        for c in range(3):
            img = np.zeros((*cues.normal_mask.shape, scene.dim))
            img[ys, xs] = Jn[:, c]
            Jn[:, c] = blur_image(img, blur_px * s)[ys, xs]
    keep = ok & (np.linalg.norm(r_n, axis=1) < NORMAL_OUTLIER_RAD)
    Jn, r_n = Jn[keep], r_n[keep]
    points = np.stack([xs[keep] + 0.5, ys[keep] + 0.5], 1) / s
    phi = BB.gaussian_grid_basis(points, noise.normal_bias_sigma_px, 256, 4.0)
    phi = phi[:, np.unique(phi.nonzero()[1])]
    white, smooth = noise.normal_noise_rad, noise.normal_bias_rad
    inner = (white / smooth) ** 2 * np.eye(phi.shape[1]) + (phi.T @ phi).toarray()

    def c_inv(v):  # (white^2 I + smooth^2 Phi Phi^T)^-1 v by Woodbury
        return (v - phi @ np.linalg.solve(inner, phi.T @ v)) / white ** 2

    H = np.zeros((scene.dim, scene.dim))
    b = np.zeros(scene.dim)
    for c in range(3):
        cj = c_inv(Jn[:, c])
        H += Jn[:, c].T @ cj
        b += cj.T @ r_n[:, c]
    if cues.uv is not None:
        corr = uv_correspondences(cues.uv, cues.uv_mask, head.uv_vertex_ids, head.uv_vertex_uv, cfg.uv_delta)
        r_uv = corr.target_px - base["px"][corr.vertex_ids]
        good = np.linalg.norm(r_uv, axis=1) < UV_OUTLIER_PX * s
        vid, r_uv = corr.vertex_ids[good], r_uv[good]
        at = base["px"][vid] / s
        d2 = ((at[:, None] - at[None]) ** 2).sum(-1)
        # the warp, its rounding to whole pixels and the subpixel refinement's own error (0.3 px)
        cov = (noise.uv_warp_px ** 2 * np.exp(-d2 / (4 * noise.uv_warp_sigma_px ** 2))
               + (noise.uv_white_px ** 2 + 0.3 ** 2) * np.eye(len(at))) * s * s
        for c in range(2):
            cj = np.linalg.solve(cov, Jv[vid, c])
            H += Jv[vid, c].T @ cj
            b += cj.T @ r_uv[:, c]
    if cues.landmarks:
        targets = np.concatenate([t.points for t in cues.landmarks])
        weights = np.concatenate([np.ones(len(t.points)) if t.weights is None else t.weights for t in cues.landmarks])
        r_l = targets - base["landmarks"]
        good = (weights > 0) & (np.linalg.norm(r_l, axis=1) < UV_OUTLIER_PX * s)
        var = (noise.landmark_px * s) ** 2
        for c in range(2):
            H += Jl[good, c].T @ Jl[good, c] / var
            b += Jl[good, c].T @ r_l[good, c] / var
    P = np.diag(np.where(np.isfinite(scene.prior_precision), scene.prior_precision, 0.0))
    theta = np.zeros(scene.dim)
    if prior_pull:
        theta[scene.slices["shape"]] = fit.shape
        theta[scene.slices["expr"]] = fit.expression[0]
    return scene, np.linalg.solve(H + P, b - P @ theta)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-4", help="scenes a-b (inclusive)")
    ap.add_argument("--fractions", default="0.3,0.5,0.7,1.0", help="fractions of the step to report")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-uv", action="store_true", help="leave the uv correspondences out of the step")
    args = ap.parse_args(argv)

    import bench_fit
    from headcast.fit import fit_images
    from headcast.fit import metrics as M
    from headcast.fit import synthetic_cues as sc

    bench = bench_fit.Bench(argparse.Namespace(threads=args.threads, override="", steps=500, size=256))
    lo, hi = (int(v) for v in args.seeds.split("-"))
    fractions = [float(v) for v in args.fractions.split(",")]
    rows = []
    print("| scene | fit mm | " + " | ".join(f"{f:g} step" for f in fractions) + " | step s |")
    print("|---:|---:|" + "---:|" * (len(fractions) + 1))
    for seed in range(lo, hi + 1):
        truth, frames, rng = bench.scene(seed)
        cues = sc.corrupt(frames[0], rng, sc.REALISTIC)
        fit = fit_images(bench.model, [cues], bench.cfg, image_size=bench.size)
        t0 = time.perf_counter()
        scene, delta = gls_step(bench.model, fit, replace(cues, uv=None) if args.no_uv else cues)
        sec = time.perf_counter() - t0
        errs = [float(M.posed_error_mm(bench.model, fit, truth)[0])]
        errs += [float(M.posed_error_mm(bench.model, scene.result(f * delta), truth)[0]) for f in fractions]
        rows.append(errs)
        print(f"| {seed} | " + " | ".join(f"{e:.3f}" for e in errs) + f" | {sec:.0f} |", flush=True)
    print("| mean | " + " | ".join(f"{e:.3f}" for e in np.mean(rows, 0)) + " | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
