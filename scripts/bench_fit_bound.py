#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""How exact can any single-image fit be under the benchmark's realistic corruption?

A Bayesian lower bound for ``scripts/bench_fit.py``'s single-image rows: the error of the
best possible estimator (the posterior mean) when the cues' errors are exactly as
``headcast.fit.synthetic_cues.corrupt`` draws them and the estimator knows their statistics
and the scenes' prior. The fitting problem is linearised at the true head of each scene:

* cues = f(theta) + e, f the exact renders (head-frame normals at the covered face pixels,
  2-D positions of the visible uv-corresponded vertices, the face mask's outline along its
  normal, the landmarks), e Gaussian with the corruption's covariance: a smooth field plus
  white noise for the normals (bias 6 deg per component, Gaussian-filtered at 10 px, + 4 deg
  noise), for the uv targets (warp 1.5 px per axis filtered at 12 px + the warp's rounding
  to whole pixels) and for the outline (ragged edges), white landmark noise (1.5 px);
* theta ~ the scenes' prior (identity N(0, 1), expression N(0, 0.6^2), the pose and camera
  ranges of ``random_truth`` as Gaussians of the same variance; translation unconstrained);
* J = df/dtheta by central differences (float64), Fisher information J^T C^-1 J with the
  correlated covariances through Woodbury (a smooth field on a 4 px grid of Gaussians);
* the posterior covariance (J^T C^-1 J + P)^-1 is sampled, each sample's head measured as
  the benchmark measures a fit (face-region vertices, similarity-aligned; mm).

Outlier blobs, the wrong eye region (its pixels are left out, as the fit masks them) and
landmark outliers and dropouts are not modelled; each of these only lowers the bound, so it
stays a lower bound. What the fit reaches above it is what the estimator (energy, weights,
optimiser) leaves. Beside the bound the same linearised problem gives the error of simpler
estimators, which weigh some cues as if their errors were independent from sample to sample
(:func:`estimator_covariance`): the kind of energy the fitting has, and how far each way of
modelling the errors could take it.

    .venv/bin/python scripts/bench_fit_bound.py                 # 5 scenes, prints the section
    .venv/bin/python scripts/bench_fit_bound.py --fit --write   # with Headcast's own fits, into BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))
sys.path.insert(0, str(ROOT / "scripts"))

SECTION = "## Fitting: how exact one photo can be"


@dataclass
class Noise:
    """The corruption's error sizes in the units of the bound (pixels at 256 px, radians)."""

    normal_bias_rad: float = np.radians(6.0)
    normal_bias_sigma_px: float = 10.0
    normal_noise_rad: float = np.radians(4.0)
    uv_warp_px: float = 1.5
    uv_warp_sigma_px: float = 12.0
    uv_white_px: float = np.sqrt(1.0 / 12.0)  # the warp is applied rounded to whole pixels
    outline_px: float = 0.85  # ragged edges: +-2 px where the edge noise exceeds 0.3 of its max
    outline_sigma_px: float = 3.0
    outline_white_px: float = np.sqrt(1.0 / 12.0)  # the mask's own pixel quantisation
    landmark_px: float = 1.5


# ---- the parameters and the exact cues of a head ------------------------------------------

def _rotvec(v):
    from scipy.spatial.transform import Rotation
    return Rotation.from_rotvec(v).as_matrix()


class Scene:
    """A truth, its parameter vector's layout, its prior and its exact cues as functions of a
    perturbation ``d`` of that vector."""

    def __init__(self, model, truth, head):
        self.model, self.truth, self.head = model, truth, head
        ks, ke = len(truth.shape), truth.expression.shape[1]
        self.joints = list(range(1, model.n_joints))
        layout = [("shape", ks), ("expr", ke), ("eyelids", 2 if truth.eyelids is not None else 0),
                  ("joints", 3 * len(self.joints)), ("R", 3), ("t", 3), ("logf", 1), ("pp", 2)]
        self.slices, k = {}, 0
        for name, n in layout:
            self.slices[name] = slice(k, k + n)
            k += n
        self.dim = k
        # prior variances: those of random_truth's draws (a uniform on [a, b] as its variance)
        var = np.full(k, np.inf)
        var[self.slices["shape"]] = 1.0
        var[self.slices["expr"]] = 0.6 ** 2
        var[self.slices["eyelids"]] = 0.5 ** 2 / 12
        names = list(model.joint_names)
        jvar = {"neck": [0.12 ** 2 / 3, 0.15 ** 2 / 3, 0.05 ** 2 / 3],
                "jaw": [0.25 ** 2 / 12, 0.03 ** 2 / 3, 0.02 ** 2 / 3],
                "eye_left": [0.15 ** 2 / 3, 0.2 ** 2 / 3, 1e-4], "eye_right": [0.15 ** 2 / 3, 0.2 ** 2 / 3, 1e-4]}
        js = self.slices["joints"]
        for i, j in enumerate(self.joints):
            var[js.start + 3 * i: js.start + 3 * i + 3] = jvar.get(names[j], [np.inf] * 3)
        var[self.slices["R"]] = [np.radians(12) ** 2 / 3, np.radians(30) ** 2 / 3, np.radians(8) ** 2 / 3]
        var[self.slices["logf"]] = np.log(6 / 3.5) ** 2 / 12
        var[self.slices["pp"]] = 0.03 ** 2 / 3
        self.prior_precision = 1.0 / var
        # finite-difference steps
        eps = np.full(k, 1e-4)
        eps[self.slices["t"]] = 1e-6
        eps[self.slices["pp"]] = 1e-6
        self.eps = eps

    def result(self, d: np.ndarray):
        """The truth moved by ``d`` as a FitResult (frame 0)."""
        t = self.truth
        s = self.slices
        rots = t.rotations.copy()
        for i, j in enumerate(self.joints):
            rots[0, j] = _rotvec(d[s["joints"]][3 * i: 3 * i + 3]) @ rots[0, j]
        intr = t.intrinsics.copy()
        size = t.image_size[1]
        intr[0, :2] *= np.exp(d[s["logf"]][0])
        intr[0, 2:] += d[s["pp"]] * size / 2
        return replace(t, shape=t.shape + d[s["shape"]], expression=t.expression + d[s["expr"]][None],
                       eyelids=None if t.eyelids is None else t.eyelids + d[s["eyelids"]][None],
                       rotations=rots, R_head=(_rotvec(d[s["R"]]) @ t.R_head[0])[None],
                       t_head=t.t_head + d[s["t"]][None], intrinsics=intr)

    def render(self, d: np.ndarray) -> dict:
        """Exact cues of the moved head: covered pixels' face ids and head-frame normals, all
        vertices' pixel positions, the landmarks."""
        import torch

        from headcast.fit.synthetic_cues import truth_landmarks
        from headcast.render import interpolate, project_points, rasterize, vertex_normals

        r = self.result(d)
        head, dt = self.head, torch.float64
        rots = torch.as_tensor(r.rotations[0], dtype=dt)[None]
        verts, noneck = head.forward(torch.as_tensor(r.shape, dtype=dt)[None],
                                     torch.as_tensor(r.expression[0], dtype=dt)[None],
                                     None if r.eyelids is None else torch.as_tensor(r.eyelids[0], dtype=dt)[None],
                                     rots, want_noneck=True)
        R = torch.as_tensor(r.R_head[0], dtype=dt)
        vcam = verts @ R.T + torch.as_tensor(r.t_head[0], dtype=dt)
        fx, fy, cx, cy = (float(v) for v in r.intrinsics[0])
        screen = project_points(vcam, fx, fy, cx, cy)
        rast = rasterize(screen, head.faces, r.image_size, cull_backfaces=True)
        n = interpolate(vertex_normals(noneck, head.faces), rast, head.faces)[0].numpy()
        n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
        lms = truth_landmarks(self.model, head, vcam, rots, R, (fx, fy, cx, cy))
        return {"face_id": rast.face_id[0].numpy(), "normals": n, "px": screen[0, :, :2].numpy(),
                "screen": screen, "rast": rast,
                "landmarks": np.concatenate([lm.points for lm in lms]) if lms else np.zeros((0, 2))}


# ---- the Fisher information of each cue -----------------------------------------------------

from headcast.fit.gls_step import gaussian_grid_basis  # noqa: E402  (Phi Phi^T ~ the bias's correlation)

def smooth_plus_white_products(J: np.ndarray, phi, smooth: float, white: float):
    """(J^T J, J^T C J, J^T C^-1 J) for C = white^2 I + smooth^2 Phi Phi^T (the inverse by
    Woodbury, on the basis functions that touch the points); ``phi`` is unused when there is no
    smooth part (independent errors)."""
    jtj = J.T @ J
    if smooth <= 0:
        return jtj, white ** 2 * jtj, jtj / white ** 2
    used = np.unique(phi.nonzero()[1])
    phi = phi[:, used]
    b = np.asarray(phi.T @ J)
    m = (white / smooth) ** 2 * np.eye(phi.shape[1]) + (phi.T @ phi).toarray()
    return jtj, white ** 2 * jtj + smooth ** 2 * b.T @ b, (jtj - b.T @ np.linalg.solve(m, b)) / white ** 2


def dense_products(J: np.ndarray, points: np.ndarray, sigma: float, smooth: float, white: float):
    """The same for C = white^2 I + smooth^2 exp(-d^2 / (4 sigma^2)), directly."""
    d2 = ((points[:, None] - points[None]) ** 2).sum(-1)
    c = smooth ** 2 * np.exp(-d2 / (4 * sigma ** 2)) + white ** 2 * np.eye(len(points))
    return J.T @ J, J.T @ c @ J, J.T @ np.linalg.solve(c, J)


@dataclass
class Cue:
    """One cue linearised at the truth: J^T J, J^T C J and J^T C^-1 J (summed over its
    components) and its per-sample error variance (smooth + white)."""

    jtj: np.ndarray
    jtcj: np.ndarray
    fisher: np.ndarray
    variance: float

    @classmethod
    def of(cls, parts, variance):
        return cls(*(sum(p[k] for p in parts) for k in range(3)), variance=variance)


def jacobians(scene: Scene, mask_pixels: np.ndarray, log=print):
    """Central-difference Jacobians of the normals at ``mask_pixels`` [P, 2] (y, x), of the
    pixel positions of all vertices and of the landmarks; and which pixels kept a surface
    continuous with their own in every perturbation (normals are continuous across shared edges)."""
    faces = scene.head.faces.numpy()
    ys, xs = mask_pixels[:, 0], mask_pixels[:, 1]
    base = scene.render(np.zeros(scene.dim))
    f0 = base["face_id"][ys, xs]
    ok = np.ones(len(ys), bool)
    Jn = np.zeros((len(ys), 3, scene.dim))
    Jv = np.zeros((scene.model.n_vertices, 2, scene.dim))
    Jl = np.zeros((len(base["landmarks"]), 2, scene.dim))
    t0 = time.perf_counter()
    for k in range(scene.dim):
        d = np.zeros(scene.dim)
        d[k] = scene.eps[k]
        hi, lo = scene.render(d), scene.render(-d)
        for r in (hi, lo):
            f = r["face_id"][ys, xs]
            # a different triangle is fine if it shares a vertex with the original (same surface)
            share = (faces[np.maximum(f, 0)][:, :, None] == faces[f0][:, None, :]).any((1, 2)) & (f >= 0)
            ok &= (f == f0) | share
        Jn[:, :, k] = (hi["normals"][ys, xs] - lo["normals"][ys, xs]) / (2 * scene.eps[k])
        Jv[:, :, k] = (hi["px"] - lo["px"]) / (2 * scene.eps[k])
        Jl[:, :, k] = (hi["landmarks"] - lo["landmarks"]) / (2 * scene.eps[k])
        if k % 100 == 99:
            log(f"  jacobian {k + 1}/{scene.dim} ({time.perf_counter() - t0:.0f} s)")
    return base, Jn, ok, Jv, Jl


def outline_observations(base: dict, face_mask: np.ndarray, sil_valid: np.ndarray, faces: np.ndarray,
                         Jv: np.ndarray, bary: np.ndarray):
    """The face mask's outline where a parser would see it (next to background or neck): its
    pixels [P, 2] (x, y) and d(outward normal . surface point's position)/dtheta [P, D]."""
    from scipy.ndimage import binary_erosion, gaussian_filter

    edge = face_mask & ~binary_erosion(face_mask)
    gy, gx = np.gradient(gaussian_filter(face_mask.astype(np.float64), 1.5))
    ys, xs = np.nonzero(edge)
    nrm = -np.stack([gx[ys, xs], gy[ys, xs]], 1)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    out_x = np.clip(np.round(xs + 2 * nrm[:, 0]).astype(int), 0, face_mask.shape[1] - 1)
    out_y = np.clip(np.round(ys + 2 * nrm[:, 1]).astype(int), 0, face_mask.shape[0] - 1)
    seen = sil_valid[out_y, out_x] & (base["face_id"][ys, xs] >= 0)
    ys, xs, nrm = ys[seen], xs[seen], nrm[seen]
    corners = faces[base["face_id"][ys, xs]]  # [P, 3]
    jpos = (bary[ys, xs][:, :, None, None] * Jv[corners]).sum(1)  # [P, 2, D]
    return np.stack([xs + 0.5, ys + 0.5], 1), (nrm[:, :, None] * jpos).sum(1)


@dataclass
class Linearised:
    """A scene's cues linearised at its truth: derivatives of each observation and where it is
    (pixels, x right, y down)."""

    normals: np.ndarray  # [P, 3, D] head-frame normals at the face pixels
    normal_px: np.ndarray  # [P, 2]
    uv: np.ndarray  # [M, 2, D] pixel positions of the visible corresponded vertices
    uv_px: np.ndarray  # [M, 2]
    landmarks: np.ndarray  # [L, 2, D]
    outline: np.ndarray  # [O, D] outline displacement along its normal
    outline_px: np.ndarray  # [O, 2]
    scale: float  # image width / 256


def fitting_head(model, result):
    """The fitting's head (float64, the default masks) for ``result``'s coefficient counts."""
    import torch

    from headcast.fit.config import FitConfig
    from headcast.fit.head import FitHead

    cfg = FitConfig()
    return FitHead(model, len(result.shape), result.expression.shape[1], torch.float64, cfg.uv_vertex_masks,
                   cfg.uv_vertex_exclude, cfg.silhouette_masks, cfg.eye_masks, cfg.eye_margin_m)


def linearise(model, seed: int, size: int = 256, log=print) -> tuple[Scene, Linearised]:
    """The benchmark's scene ``seed`` (its truth and exact cues), linearised."""
    import torch
    from scipy.ndimage import binary_dilation

    from headcast.fit import synthetic_cues as sc
    from headcast.fit.config import FitConfig
    from headcast.render import vertex_visibility

    rng = np.random.default_rng(1000 + seed)  # as scripts/bench_fit.py draws it
    truth = sc.random_truth(model, rng, 1, size)
    frame = sc.render_cues(model, truth, 0)
    cfg = FitConfig()
    head = fitting_head(model, truth)
    scene = Scene(model, truth, head)
    s = size / 256.0
    cues = frame.cues
    # normals: the face pixels, less the (dilated) eye region the corruption overwrites
    eyes = binary_dilation(frame.eye_pixels, iterations=max(1, int(2 * s)))
    normal_px = np.argwhere((cues.normal_mask > 0) & ~eyes)
    base, Jn, ok, Jv, Jl = jacobians(scene, normal_px, log)
    # uv: the corresponded vertices that are visible and land on the uv map
    vis = vertex_visibility(base["screen"], base["rast"], tol=cfg.visibility_tol, radius=1,
                            ids=torch.as_tensor(head.uv_vertex_ids)[None])[0].numpy()
    px = base["px"][head.uv_vertex_ids]
    inside = (px >= 0).all(1) & (px < size).all(1)
    pi = np.clip(px.astype(int), 0, size - 1)
    corr = head.uv_vertex_ids[vis & inside & cues.uv_mask[pi[:, 1], pi[:, 0]]]
    log(f"seed {seed}: {int(ok.sum())} normal pixels, {len(corr)} corresponded vertices, {scene.dim} parameters")
    bary = np.zeros((size, size, 3))
    bary.reshape(-1, 3)[base["rast"].pixel_index.numpy()] = base["rast"].pixel_bary.detach().numpy()
    opts, Jo = outline_observations(base, cues.face_mask > 0.5, cues.silhouette_valid, head.faces.numpy(), Jv, bary)
    return scene, Linearised(Jn[ok], normal_px[ok][:, ::-1] + 0.5, Jv[corr], base["px"][corr], Jl, Jo, opts, s)


def cue_products(lin: Linearised, noise: Noise) -> dict:
    """Each cue's :class:`Cue` under the error sizes ``noise``."""
    s = lin.scale
    phi = gaussian_grid_basis(lin.normal_px / s, noise.normal_bias_sigma_px, 256, 4.0)
    out = {"normals": Cue.of([smooth_plus_white_products(lin.normals[:, c], phi, noise.normal_bias_rad,
                                                         noise.normal_noise_rad) for c in range(3)],
                             noise.normal_bias_rad ** 2 + noise.normal_noise_rad ** 2)}
    out["uv"] = Cue.of([dense_products(lin.uv[:, c], lin.uv_px / s, noise.uv_warp_sigma_px, noise.uv_warp_px * s,
                                       noise.uv_white_px * s) for c in range(2)],
                       (noise.uv_warp_px ** 2 + noise.uv_white_px ** 2) * s * s)
    sl = noise.landmark_px * s
    out["landmarks"] = Cue.of([smooth_plus_white_products(j, None, 0.0, sl) for j in lin.landmarks.transpose(1, 0, 2)],
                              sl ** 2)
    out["outline"] = Cue.of([dense_products(lin.outline, lin.outline_px / s, noise.outline_sigma_px,
                                            noise.outline_px * s, noise.outline_white_px * s)],
                            (noise.outline_px ** 2 + noise.outline_white_px ** 2) * s * s)
    return out


def estimator_covariance(cues: dict, prior: np.ndarray, weights: dict) -> np.ndarray:
    """Error covariance of the linearised MAP-style estimator that weighs each cue by ``weights``:
    "full" (its true error covariance: the Bayes-optimal weighting) or a number w (errors taken
    as independent, each sample weighted w / its error variance: w = 1 weighs them as if they
    were). With H = sum A_c + P and A_c the weighting's J^T W J, the error is H^-1 (sum J^T W C W
    J + P) H^-1 (the prior term from the scene's own prior)."""
    h = prior.copy()
    n = prior.copy()
    for name, c in cues.items():
        w = weights.get(name, "full")
        if w == "full":
            h += c.fisher
            n += c.fisher
        else:
            a = w / c.variance
            h += a * c.jtj
            n += a * a * c.jtcj
    hi = np.linalg.inv(h)
    return hi @ n @ hi


def expected_errors(scene: Scene, cov: np.ndarray, draws: np.ndarray) -> tuple[float, float]:
    """Mean posed and neutral face-region errors (mm, similarity-aligned, as the benchmark
    measures a fit) of heads drawn around the truth with covariance ``cov``."""
    from headcast.fit import metrics as M

    w, v = np.linalg.eigh(0.5 * (cov + cov.T))
    root = v * np.sqrt(np.clip(w, 0.0, None))
    posed, neutral = [], []
    for z in draws:
        est = scene.result(root @ z)
        posed.append(float(M.posed_error_mm(scene.model, est, scene.truth)[0]))
        neutral.append(M.neutral_error_mm(scene.model, est, scene.truth))
    return float(np.mean(posed)), float(np.mean(neutral))


#: What the bound showed when it was written, and what was tried in the fitting with it (kept in the
#: section when it is rewritten; update it when the fitting changes).
FINDINGS = """What the rows say (2026-12-05):
- One photo's cues carry enough for the realistic target (posed error <= 1.0 mm): the bound is about 0.5 mm. Headcast's fit is 2.6 times above it.
- Re-weighting its energy cannot close the gap. Energies that take each pixel's or vertex's error as independent of its neighbours' (Headcast's kind, with any of the grid's weights) stay above 1.1 mm in the linearised problem: the band in which the earlier tuning of weights, priors and schedules ended.
- Weighing the normals by their error covariance (the smooth bias) closes nearly all of it, even with the uv map still taken as independent. Modelling the uv warp's correlation alone gains a quarter as much.
- Without the normal bias the bound is 0.25 mm, without both smooth errors 0.17 mm (Headcast's fit: 1.02 and 0.73 mm on scenes 0-2, see Fitting).

Tried in the fitting with this in mind (2026-12-05), none kept; posed mm, realistic, against 1.25 on scene 0 and 1.365 on scenes 0-4:
- The normal residual minus its masked local mean (Gaussian σ 5 / 10 / 20 px, 3% / 50% / 30% of the mean kept), scenes 0-4: 1.631 / 1.327 / 1.329.
- The normals' exact Gaussian term r^T C^-1 r (the bias by Woodbury on a 6 px grid of Gaussians), with the weights relative to the priors that it implies, in the Adam energy after the noise probe: 5.3-5.7 mm. Started at the truth, Adam raised this energy even at 1/500 of the full-fit learning rates. At these weights each pixel that enters or leaves the coverage or the outlier cut changes the energy by several units, and no gradient sees it.
- The same as a robust loss (Geman-McClure, less its mean, so that a pixel entering or leaving costs nothing on average) on the residual minus its closed-form bias estimate, residuals over 0.4 rad left out of that estimate. Started at the truth, with only the bias and the white noise in the cues, it stays within 0.23 mm. With the whole realistic corruption it drifts to 1.34 mm (400 steps at 1/20 of the full-fit rates), at a lower energy than the truth's. Without the wrong eye region it drifts to 0.99 mm, and without the eye region, blobs and ragged edges to 0.72 mm, near what the bound expects of the posterior mean on that scene. Masking the whole eye region out of the normal term did not help (1.42 mm): the eye region's shifted uv pulls as well. Fitted from the start with this term after the noise probe: 1.93 mm.
- The uv correspondences weighed by their warp covariance (Adam, after the probe): 1.40-1.91 mm on scene 0, depending on the assumed white part (0.29-1.0 px) and weight.
- Gauss-Newton on the sparse terms, whitened: uv correspondences, vertex normals at their targets, landmarks, and the focal length by a numerical column. From the truth it went to 2.3-3.1 mm, and to about 1 mm even with exact cues (at these weights the sparse terms hold the shape only to about a millimetre).
- L-BFGS (strong Wolfe line search) on the full energy after Adam: it stops within 17 evaluations on this piecewise-smooth energy. Exact cues 0.218 against 0.226 mm, within the noise.

Done since (2026-12-06): the fitting de-biases the normals of photos (`FitConfig.normal_bias_sigma_px`, `headcast/fit/bias_field.py`). It is a simpler estimator than the one proposed here: once the noise probe finds biased normals, every step subtracts from the normal residual its smooth part, a robust normalised convolution of the inlier residuals applied twice (a profile of the explicit bias field, without a prior on it), leaves the whole eye region out of the normal and dense-uv terms, and weighs the rest 16 times more under a Huber loss. Realistic single image (bench_fit.py): 1.116 mm on scenes 0-4 (1.365 before), 1.187 on scenes 5-9 (1.509); the table's row above is the fit of 2026-12-05.

Next step: what still separates the fit from the bound. The smoothing has no prior on the bias, so it also takes away the face's own low-frequency normal signature, which in a near-frontal view is all that shows the depth profile (scene 6: 1.71 mm before, 1.77 now); and a few scenes lose (scene 1, 27° of yaw: 1.23 -> 1.53 mm). A bias field with its prior (the Wiener weighting of the bound, 1 / (S_bias(k) + S_noise) per frequency) would keep some of that signature, if it can be made robust to blobs and coverage changes.

Looked into since (2026-12-07, AMD EPYC, 1 thread): Headcast's de-biasing filter in the linearised problem, and why its better variants do not fit better.
- In the linearised problem, the de-biased normal term is an estimator whose weighting is the filter: its fixed point solves J^T (1 - S)^n r = 0, S the normalised convolution, n its rounds (`FitConfig.normal_bias_passes`). With every other cue optimally weighted, the default (7 px, 2 rounds) at its best weight gives 0.84 mm on scenes 0 and 6, against bounds of 0.555 and 0.596. With the uv map weighted as independent, as the fit does, it gives 0.90 on scene 0.
- The Wiener weighting of the benchmark's bias cuts more of the middle band, not less: 0.02 of the noise-only weight at 30 px wavelength, where 2 rounds keep 0.39. So 4 rounds at about 3 times the weight come nearer the bound: 0.71-0.78 mm on scene 0 and 0.75-0.79 on scene 6 (0.78 with the uv map as independent). Two rounds at 9 px do worse: 0.88 / 0.98 at the lowest weight tried.
- The fit's own energy agrees once the errors are Gaussian. The last stage run from the true head, scenes 0-4, with only the smooth errors, the pixel noise and the landmark noise: 0.910 mm with the default, 0.796 with 4 rounds at weight 48000.
- Of the realistic corruption's other errors, only the normal map's blur undoes that gain (1.028 mm). The uv map's blur, the outlier blobs, the wrong eye region, the ragged masks and the landmark outliers each leave it (0.754-0.778).
- Rendering the fit's normals blurred the same way (`FitConfig.normal_render_blur_px` = 1) brings back most of it: 0.912 with the normal blur, 0.946 with the whole realistic corruption. Run from the truth, scenes 0-9: 0.963 mm against the default's 1.050.
- Fitted from the mean head, that energy does not get there. Realistic, scenes 0-9 (0-4 / 5-9), against 1.151 (1.115 / 1.187):
  - the whole fit: 1.325 (1.090 / 1.559); scenes 7 and 9 went to 2.1 mm, and scene 9 ends with twice the identity norm of the default's fit;
  - the same with the identity and the expression reset to zero at the probe: scene 7 went to 54 mm;
  - the same with the identity and expression priors doubled: 1.372 (1.100 / 1.643; scene 9 3.19 mm). Scene 9's heavy fit puts more into the expression (norm 5.8 against the default fit's 2.5 and the truth's 6.3) and turns the eyes further off (18-25° against 10-12°);
  - the default up to the full-size steps, then the heavier energy: 1.138;
  - the heavier energy only for the last 15% / 28% of the steps: 1.143 / 1.145;
  - 4 rounds at weight 16000 / 48000 without the modelled blur: 1.256 / 1.369;
  - weight 24000 with the blur: 1.167;
  - the modelled blur alone at weight 16000 / 32000 / 64000: 1.155 / 1.119 / 1.161.
  - 3 rounds with the blur at weight 24000 / 32000 / 40000: 1.143 / 1.117 / 1.188. The 1.117 is chance: on scenes 10-19 it gives 1.425 against the default's 1.385, so 1.271 against 1.268 over scenes 0-19. Single scenes move by up to 0.3 mm between such settings, so a 10-scene mean carries a few hundredths of chance.
- Not kept either (scenes 0-9): the probe at 25% of the steps, 1.156; a Huber threshold of 0.14 / 0.035 rad, 1.200 / 1.130; a local-plane normalised convolution (exact for linear fields, at the face's outline too), 2 / 1 rounds, 1.171 / 1.249.
- Next step: a way into the heavier energy's basin. Its minimum near the truth is 0.09 mm better than the default's, but from the mean head it is not reached. Candidates: a continuation in the weight and the rounds, or several restarts compared by that energy.
Looked into since (2026-12-07, later; AMD EPYC, 1 thread, realistic single image, scenes 0-9 against the default's 1.151 mm unless said): where the remaining error sits, and more ways at it. None built in; the defaults are unchanged.
- The error is the identity's. Putting the true identity into each fit (its own expression, pose and camera kept) gives 0.697 mm; its first 30 coefficients alone, 0.911; the true expression, 1.114; the true joints or camera, no change. In the head frame the error is mostly depth (scene 6, near frontal: 1.33 mm of its 1.77 along the depth).
- The fit stops short of its energy's fixed point, and that is a gain. The last stage continued from the fit at its final rate (0.09 of the full-fit rates, 1200 more steps) or at rates decaying to 0.003: scenes 0-4 1.115 -> 1.220 / 1.183 mm (scene 1 1.53 -> 1.81). From the truth the same continuation keeps moving away at a steady rate (scenes 1 and 4: 1.54 / 1.37 mm after 600 steps, still rising). Taking one kind of error out of the cues (the bias, the warp, the blur, the noise, the blobs, the eyes, the landmarks and mask edges) slows that drift by at most a quarter. Along the ordinary fit, scenes 0-4 are nearest the truth at step 325 (1.061) but scenes 5-9 are not (1.227 there against 1.187 at step 500), so no schedule was found in this.
- Even clean cues end far from the truth under the realistic energy's full-strength priors. Exact cues, run from the truth with the probe's realistic settings: 0.54 / 0.76 mm (scenes 1 and 4, after 150 steps; the identity's norm 16.4 -> 3.8). With the prior scale at 0.001 it stays at 0.08 mm. The fit's identity is shrunk, with regression slopes of fit on truth of 0.13-0.69 over the first 10 coefficients. But scaling a fitted identity up afterwards costs (x1.2: 1.249 mm), and so do weaker priors on the first coefficients in the fit: 20 coefficients at 0.3 of the weight, 1.204; 10 at half the weight, 1.134 on scenes 0-9 and 1.382 on scenes 10-19 (the default: 1.385), chance.
- Two fits averaged, one on each core at no cost in wall time, gain nothing: their errors are nearly the same. Averaging the vertices of the default's fit and of fits with other de-biasing settings (3 rounds with the modelled blur at weight 32000; the modelled blur at 32000; a Huber threshold of 0.035) gives 1.107-1.133 mm against 1.116-1.139 for the fits alone (8 scenes).
- A smaller de-biasing Gaussian: 5 / 6 px, 1.228 / 1.183 mm; 5 px at weight 32000 with the modelled blur, 1.288.
- The normals' error covariance (GLS: the bias and the white noise of the benchmark's corruption), tried two ways:
  - In the linearised problem, with the real corruption's normal residual at the truth (scenes 0 and 6; the other cues' errors drawn from their model; the prior's pull on the identity and expression included): 0.707 / 0.972 mm with the normal map's blur modelled, against 0.848 / 1.389 for the default's filter at its weight. Unmodelled, the blur undoes GLS: with the other cues exact and without the prior's pull, scene 0's normals with their bias and noise give 0.521 mm, with the 1 px blur as well 1.326, with the blobs instead 0.823.
  - As Gauss-Newton from the fit (`scripts/bench_fit_gls.py`): the normals with that covariance (the rendering blurred like the cue, residuals over 0.45 rad left out, the eye region as the fit's raster shows it left out), the landmarks and, optionally, the uv correspondences with the warp's covariance; not the outline. Linearised at the fit by central differences of all 423 parameters: 30 s a step on one core.
  - Without the uv, fractions 0.3 / 0.4 / 0.5 / 0.6 / 0.7 / 1 of the step give 1.147 / 1.125 / 1.116 / 1.118 / 1.132 / 1.237 mm over scenes 0-19 (the fit: 1.268). Half a step: 1.013 on scenes 0-9, 0.942 on scenes 0-4 (against 1.115), 14 of the 20 scenes nearer the truth, the largest loss +0.15 mm (scene 2), the largest gain -0.69 (scene 1).
  - With the eye region of the true render (dilated 4 px) instead of the fit's: 1.018 at half a step on scenes 0-9 without the uv; with the uv 1.154 / 1.141 / 1.140 / 1.153 / 1.178 / 1.317 over scenes 0-19, and three half steps in a row 1.29 on scenes 0-9, rising.
  - So GLS on these cues has no minimum much nearer the truth than the fit's (a whole step: 1.237; steps repeated lose), but part of a step gains, as a mean of two estimators with different errors does: the step's end and the fit are far less alike than the Adam fits averaged above.
- Next step: part of a GLS step after the fit, built in. It needs the normals' Jacobian in about a second (forward-mode derivatives of the blendshapes, the skinning and the raster's barycentrics, instead of 846 renders), the outline among its cues, and the fraction of the step checked on more scenes and on clips.
Done since (2026-12-07, latest; AMD EPYC): half a GLS step after a photo's fit, built in (`headcast/fit/gls_step.py`, `FitConfig.gls_step_fraction` = 0.5; see "Fitting" above). Its derivatives come by the chain rule through sparse per-vertex and per-pixel derivatives (the blendshape directions analytically through the skinning) in about 1.6 s on 2 cores, against 30 s for the prototype's central differences; the Woodbury solve on a grid of Gaussians one correlation length apart takes 0.7 s. Against the prototype it leaves out the uv correspondences (they lose, as found), weighs every landmark group the cues have by its own residual's spread, and damps the focal length, principal point, joints and eyelids instead of the scenes' prior. Realistic single image, half a step: 1.112 mm over scenes 0-19 (the fit 1.268), 0.997 on scenes 0-4; the table's run 0.997. Several photos of one person take one joint step, their identity shared. The outline is still not among its cues, and clips do not take the step. `scripts/bench_fit_gls.py` now sweeps the built-in step's fraction and settings."""

#: independent-error weights searched (the kind of weighting Headcast's fitting energy uses)
GRID_NORMALS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1)
GRID_UV = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 1.0)


def fit_error(model, seed: int) -> float:
    """The posed error of Headcast's own fit of the scene with realistic corruption."""
    import bench_fit

    bench = bench_fit.Bench(argparse.Namespace(threads=2, override="", steps=500, size=256))
    bench.model = model
    return bench.single(seed, "realistic")["posed"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--fit", action="store_true", help="also run Headcast's fit of each scene")
    ap.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = ap.parse_args(argv)
    import torch

    from bench_common import cpu_name, publish
    from headcast.flame.synthetic import build_synthetic_model

    torch.set_num_threads(2)
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    model = build_synthetic_model(seed=0)
    t_all = time.perf_counter()
    variants = {"realistic": Noise(), "without the normal bias": Noise(normal_bias_rad=0.0),
                "without both smooth errors": Noise(normal_bias_rad=0.0, uv_warp_px=0.0)}
    rows: dict = {}  # estimator name -> per-scene (posed, neutral)
    grid: dict = {}
    fits = []
    for seed in range(args.seeds):
        draws = np.random.default_rng(seed).standard_normal
        scene, lin = linearise(model, seed, log=log)
        prior = np.diag(np.where(np.isfinite(scene.prior_precision), scene.prior_precision, 0.0))
        for vname, noise in variants.items():
            cues = cue_products(lin, noise)
            z = draws((args.samples, scene.dim))
            est = {f"bound, {vname}": {}}
            if vname == "realistic":
                est["bound, realistic, without the normals"] = {"normals": 0.0}
                est["bound, realistic, without the uv map"] = {"uv": 0.0}
                for wn in GRID_NORMALS:
                    for wu in GRID_UV:
                        key = (wn, wu)
                        grid.setdefault(("independent", key), []).append(expected_errors(
                            scene, estimator_covariance(cues, prior, {"normals": wn, "uv": wu}), z[:32]))
                    grid.setdefault(("uv full", wn), []).append(expected_errors(
                        scene, estimator_covariance(cues, prior, {"normals": wn}), z[:32]))
                for wu in GRID_UV:
                    grid.setdefault(("normals full", wu), []).append(expected_errors(
                        scene, estimator_covariance(cues, prior, {"uv": wu}), z[:32]))
            for name, weights in est.items():
                r = expected_errors(scene, estimator_covariance(cues, prior, weights), z)
                rows.setdefault(name, []).append(r)
                log(f"seed {seed} {name}: posed {r[0]:.3f} mm, neutral {r[1]:.3f} mm")
        if args.fit:
            fits.append(fit_error(model, seed))
            log(f"seed {seed} Headcast's fit: posed {fits[-1]:.3f} mm")

    def best(kind):
        keys = [k for k in grid if k[0] == kind]
        k = min(keys, key=lambda k: np.mean([p for p, _ in grid[k]]))
        return k[1], grid[k]

    for kind, label in (("independent", "best independent-error weights (normals, uv) = {}"),
                        ("uv full", "uv map's correlation modelled, normals independent (w = {})"),
                        ("normals full", "normals' correlation modelled, uv independent (w = {})")):
        key, vals = best(kind)
        rows[label.format(key)] = vals
    total = time.perf_counter() - t_all

    order = [k for k in rows if k.startswith("bound, realistic")] + [k for k in rows if not k.startswith("bound")] \
        + [k for k in rows if k.startswith("bound, without")]
    lines = [SECTION, "",
             f"`scripts/bench_fit_bound.py`, {dt.date.today().isoformat()}, {cpu_name()}, torch {torch.__version__}, "
             f"Python {platform.python_version()}; scenes {', '.join(str(s) for s in range(args.seeds))} of the "
             f"fitting benchmark (256², synthetic model), {args.samples} posterior draws per row; {total / 60:.1f} min.",
             "",
             "A Bayesian lower bound on the single-image error with the benchmark's realistic corruption, and "
             "what kinds of estimator can get near it. The fit is linearised at each scene's true head; the "
             "cue errors are Gaussian with the corruption's covariances (normal bias 6° per component "
             "filtered at 10 px + 4° noise; uv warp 1.5 px per axis filtered at 12 px + its rounding to whole "
             "pixels; ragged mask outline; 1.5 px landmarks); the parameters have the scenes' prior. Blobs, "
             "the wrong eye region and landmark outliers are left out, which only lowers the bound. *bound*: "
             "the posterior mean's error, the best any estimator can do on average. The other rows are "
             "estimators of the same linearised problem that weigh each cue differently; *independent "
             "errors*: each sample weighted as if its error were independent of its neighbours' (w = 1: by "
             "its whole error variance), the kind of energy Headcast's fitting has; the best weights over a "
             f"grid (normals {list(GRID_NORMALS)}, uv {list(GRID_UV)}) by the mean over the scenes (the grid "
             "on the first 32 draws). Each row is a Monte Carlo mean over the draws: a few hundredths of a "
             "millimetre of noise.", "",
             "| estimator (linearised) | posed mm | neutral mm | scenes, posed |", "|---|---:|---:|---|"]
    for name in order:
        vals = rows[name]
        p = [v[0] for v in vals]
        lines.append(f"| {name} | {np.mean(p):.3f} | {np.mean([v[1] for v in vals]):.3f} | "
                     f"{' / '.join(f'{x:.2f}' for x in p)} |")
    if fits:
        lines.append(f"| Headcast's fit (bench_fit.py, realistic) | {np.mean(fits):.3f} | | "
                     f"{' / '.join(f'{x:.2f}' for x in fits)} |")
    publish(SECTION, lines, FINDINGS, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
