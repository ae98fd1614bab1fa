# SPDX-License-Identifier: GPL-3.0-or-later
"""Weights, learning rates, thresholds and step counts of the fitting.

The defaults follow Pixel3DMM's tracking configuration where it is known (see
``/work/shared/reference/pixel3dmm.md`` §4) and deviate where the synthetic benchmark
(``scripts/bench_fit.py``) measured an improvement; each deviation is commented.

Normalisation: image-space residuals are divided by the image width S before squaring, and
dense terms are summed over pixels and divided by H*W, so a weight means the same thing at
128² and 256².
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass
class FitConfig:
    # ---- model size ----
    n_shape: int = 300
    n_expr: int = 100

    # ---- data terms ----
    w_uv_vertex: float = 2.0e5  # 2-D vertex loss from nearest-uv correspondences (P3DMM: 2000 x 100)
    w_uv_dense: float = 2.0e5  # rendered uv against the predicted uv map (P3DMM: 2000 x 100)
    w_normal: float = 1000.0  # L1 of head-frame normals (P3DMM: 1000)
    # Ours: each corresponded vertex's normal against the predicted normal at its target pixel.
    # It gives the sparse problem solved by Levenberg-Marquardt (below) the depth information the
    # 2-D correspondences lack (without it LM alone left 0.8-2.0 mm on exact cues, with it
    # 0.4-0.6). In the Adam energy, next to the dense normal term, it changed nothing measurable
    # (exact 0.575 -> 0.574 mm, realistic 1.53 -> 1.57), so it is off there.
    w_vertex_normal: float = 0.0  # in the Adam energy
    lm_vertex_normal: float = 150.0  # in the Levenberg-Marquardt problem
    # L1 of the antialiased face-region coverage (P3DMM: 500). Ours 1000: the outline is what the
    # interior cues say least about. Synthetic benchmark with realistic corruption (5 scenes,
    # 256², with w_lid below): 500 -> 1000: 1.50 -> 1.44 mm (2000: 1.41, 4000: 1.39; exact cues
    # 0.256 -> 0.257 -> 0.265). Not higher: the synthetic masks err only by ragged edges, real
    # face parsers also by hair, hands and beards over the face, which a heavy silhouette follows.
    w_silhouette: float = 1000.0
    # Landmark groups. Pixel3DMM: eyes 1000 x 5, iris 1000 x 50, lids 1000 x 500, mouth, 68 and
    # contour off. Ours: 5x lower for eyes and iris (lids: see w_lid): with 1.5 px detector noise and
    # 5% outliers the official weights let a dozen eye points outweigh the dense cues (single
    # image: 1.77 -> 1.50 mm; video: frame-to-frame jitter 11 -> 4 mm on the synthetic benchmark).
    landmark_weights: dict = field(default_factory=lambda: {
        "landmarks": 0.0, "eyes": 1000.0, "iris": 1.0e4, "mouth": 0.0, "contour": 0.0,
        "nose": 0.0, "brows": 0.0})
    # A frame with neither a uv nor a normal map has nothing else to go on: all landmark groups
    # count then (detectors' mouth and contour points are a weaker fit to the model's
    # embedding, which is why they are off when the dense priors are there).
    landmark_weights_without_dense: dict = field(default_factory=lambda: {
        "landmarks": 5000.0, "eyes": 5000.0, "iris": 1.0e4, "mouth": 5000.0, "contour": 1000.0,
        "nose": 5000.0, "brows": 5000.0})
    # eyelid closure (upper-lower gap of the eye landmarks). Ours 1.5e4, 33x under P3DMM's: each
    # gap carries two points' detector noise. Realistic corruption (5 scenes, with w_silhouette
    # 1000): 5e4 -> 1.5e4: 1.49 -> 1.44 mm; exact cues unchanged. Two 40-frame clips, realistic,
    # this and w_silhouette together: posed 1.24 -> 1.24 and 1.20 -> 1.11 mm, jitter 2.23 -> 2.05
    # and 2.00 -> 1.72 mm, eyelid coefficient error 0.23 -> 0.18; the eye opening itself (3-D
    # distance of the lid landmark pairs, the final settings) 1.13 / 1.18 -> 1.00 / 1.00 mm,
    # correlation with the truth over the clip 0.17-0.63 -> 0.24-0.69.
    w_lid: float = 1.5e4

    # uv correspondences
    uv_delta: float = 5e-5  # squared uv distance below which a vertex has a correspondence (P3DMM)
    uv_dist_px: float = 20.0  # pixel-distance outlier cut at 256 px width (scaled with the width)
    # Ours: dense-uv pixels whose rendered and predicted uv differ by more than this are dropped.
    # Where the layout has a chart border (eyeball vs skin, seams) a one-pixel misalignment
    # gives a huge squared difference with a meaningless gradient; on the synthetic head those
    # pixels made up >99% of the dense uv energy and stalled the eyes and the identity.
    uv_dense_delta: float = 0.03
    uv_subpixel: bool = True  # refine the nearest pixel with the local uv Jacobian (ours; see bench)
    # vertices with a uv loss (P3DMM: face, ears and some neck) ... minus these
    uv_vertex_masks: tuple = ("face", "left_ear", "right_ear", "neck")
    uv_vertex_exclude: tuple = ("eye_region", "left_eyeball", "right_eyeball")
    visibility_tol: float = 1e-2  # relative depth tolerance of the visibility test

    # normals
    normal_delta: float = 0.33  # per-pixel outlier cut on the mean |difference| (P3DMM)
    # The eye mask covers the eyeballs plus the skin within this distance of them. Pixel3DMM
    # dilates the rendered eyeball mask by a 13 px blur at 512 px (about 3 mm at the head);
    # marking the vertices once gives the same band without an image-space pass per step.
    eye_margin_m: float = 0.003
    eye_masks: tuple = ("left_eyeball", "right_eyeball")
    # The smooth normal bias (ours). A normal network's error is mostly low-frequency: several
    # degrees, alike over a whole cheek. In one image that looks like a differently shaped face,
    # and an L1 loss that takes each pixel's error as independent bends the face to follow it
    # (scripts/bench_fit_bound.py: no weighting of such a loss gets below 1.1 mm in the
    # linearised problem, one that models the bias gets 0.56). When the noise probe (below)
    # finds the normals' smooth error above ``normal_bias_min_smooth_deg`` (median), the rest of
    # the stage subtracts from the normal residual its smooth part: a robust normalised
    # convolution of the inlier residuals (Gaussian of ``normal_bias_sigma_px`` at 256 px width, applied twice, see
    # Energy._normal_bias; ``normal_bias_lambda`` shrinks it where few pixels support it;
    # ``headcast.fit.bias_field``). What the bias explains no longer pulls the shape, and the
    # detail left is trustworthy enough to weigh 16x more (``w_normal_debiased``). The eye
    # region's predictions (lashes, glasses, highlights) are the least reliable and a pull there
    # spreads through the smoothing, so in that mode the normal and dense-uv terms leave the
    # ``noisy_eye_masks`` regions (plus ``eye_margin_m``) to the eye landmarks.
    # Synthetic benchmark, realistic corruption (256², 500 steps, seeds 0-9; seeds 0-4 / 5-9):
    # off 1.437 (1.365 / 1.509) mm posed; one Gaussian of 12 px, weight 2000 (L1): 1.318 (1.176
    # / 1.461); twice at 7 px, weight 4000 / 6000 / 10000 / 16000 / 25000 (L1): 1.336 / 1.249 /
    # 1.180 / 1.149 (1.160 / 1.139) / 1.178; twice at 9 px, 6000 / 16000: 1.208 / 1.152; these
    # settings with the Huber loss below: 1.151 (1.116 / 1.187). Exact cues are unchanged (their
    # probe is far below the threshold: the mode stays off). Not kept (seeds 0 and 2, one Gaussian): the eye
    # region left in (1.32 against 1.23 mm at 5 px), priors x0.5 / x2 in the mode, the same
    # smoothing of the 2-D vertex residuals (the uv warp: 1.13 against 1.10), a raw normal term
    # beside the de-biased one, 1000 steps (the same error: it is the energy's minimum, not
    # Adam's path). Per scene the error still moves by up to +-0.3 mm between such settings, and
    # a few scenes lose (seed 1, 27 deg of yaw: 1.23 -> 1.53 mm). Clips keep the plain normal
    # term (see headcast.fit.video).
    normal_bias_sigma_px: float = 7.0  # 0: off
    normal_bias_lambda: float = 0.01
    # Rounds of the smoothing (Energy._normal_bias): the de-biased residual keeps (1 - G)^passes
    # of the residual's spectrum (G: one Gaussian of normal_bias_sigma_px). 2 is the twicing above.
    # More rounds are nearer the Wiener weighting of the benchmark's bias (1 / (S_bias + S_noise)),
    # and in the linearised problem (other cues optimally weighted) 4 rounds at about 3x the
    # weight give 0.71-0.78 mm against 0.84 for 2 (scenes 0 and 6; the bound 0.56-0.60). Run from
    # the true head with this weight and the rendered normals blurred like the predictions
    # (normal_render_blur_px = 1), the last stage drifts less too: 0.963 mm against 1.050 (scenes
    # 0-9). But fitted from the mean head the heavier energy falls into worse minima in some
    # scenes (realistic, scenes 0-9, 1 thread: 1.325 mm against 1.151, two scenes above 2 mm; only
    # at full size 1.138; only for the last 15% of the steps 1.143; 3 rounds at 32000 with the blur
    # 1.117, but 1.425 against 1.385 on scenes 10-19): not the default. See BENCHMARKS,
    # "Fitting: how exact one photo can be".
    normal_bias_passes: int = 2
    # Ours, off: in the de-biased mode, blur the rendered normals like the predictions (a Gaussian
    # of this many px at 256 px width, background zero, renormalised) before comparing them. It
    # takes the blur's mismatch out of the residual (the predictions' blur is what keeps the
    # heavier energy above from its linearised gain: run from the truth with only Gaussian errors,
    # scenes 0-4: 0.796 mm without blur, 1.028 with the normal map blurred, 0.912 with that blur
    # modelled), but at the default weight the fit gains nothing measurable (1.155 mm against
    # 1.151, scenes 0-9).
    normal_render_blur_px: float = 0.0
    # the smooth part of the probe's normal residual (adaptive_priors below): at 256², exact cues
    # probe at 0.43-0.60 deg, normals with pixel noise only (the benchmark's 5.7 deg) at 0.76-0.93,
    # the realistic ones at 3.4-5.0 (seeds 0-9). Measured on the whole residual (6-8 deg realistic,
    # 2.7 with the pixel noise alone, against a threshold of 2.5), pixel noise alone switched the
    # mode on: scenes 0-2 with only that noise, 0.615 mm posed (exact cues: 0.267).
    normal_bias_min_smooth_deg: float = 2.0
    w_normal_debiased: float = 16000.0
    # Huber, not L1, on the de-biased residual (per component, radians: about the noise the
    # benchmark's normals carry per pixel). L1's pull is the same for any residual, so what
    # steadies it is the pixel noise: with the same weight and no noise the bias left over
    # after the smoothing pulled at full strength (seeds 0-2 without the normal noise: L1 1.571
    # mm, Huber 1.068; with it 1.152 / 1.093; seeds 0-9, realistic: 1.149 / 1.151).
    normal_huber_debiased: float = 0.07
    noisy_eye_masks: tuple = ("eye_region", "left_eyeball", "right_eyeball")
    # GLS step (ours, headcast.fit.gls_step): after a single-image fit whose normals the probe
    # found biased (the de-biased mode above), move the fit this fraction of the way to the
    # Gauss-Newton solution that weighs the normals by the covariance of their errors (a smooth
    # bias of gls_normal_bias_deg correlated over gls_bias_sigma_px, plus pixel noise), with
    # every landmark group the cues have (each by its own residual's spread), the identity and
    # expression priors and a damping of the pose and camera (0: off). The GLS solution alone
    # is no nearer the truth than the fit, but the two err differently and half-way between
    # gains. Realistic single image (fits of scenes 0-19 without the step, 1 thread; the fit
    # 1.268 mm posed): fractions 0.3 / 0.5 / 0.7 / 1 give 1.143 / 1.112 / 1.129 / 1.246, 14 of
    # 20 scenes nearer the truth at 0.5 (scenes 0-4: 1.115 -> 0.997). Not kept (0.5, 20
    # scenes): no damping 1.214, none of the focal length and principal point 1.133 (the step
    # trades depth for focal length); the noise sizes estimated from the fit's own residual
    # 1.251 (the fit has taken up part of the bias: 2.6 deg against the 6 drawn); the step over
    # the first 100 / 60 identity and 50 / 30 expression coefficients only 1.126 / 1.152; every
    # second / fourth pixel 1.110 / 1.132 (scenes 0-4: 1.021 / 1.035). About 2.4 s per image
    # at 256² on 2 cores. Several photos take one joint step (the identity shared); clips none
    # yet. See BENCHMARKS, "Fitting".
    gls_step_fraction: float = 0.5
    gls_bias_sigma_px: float = 10.0  # the normal bias's correlation length (Gaussian, at 256 px)
    gls_normal_blur_px: float = 1.0  # the predictions' blur, modelled in the step's rendering
    gls_normal_bias_deg: float = 6.0  # the normals' expected smooth error, per component
    gls_normal_noise_deg: float = 4.0  # and their pixel noise
    gls_normal_outlier_rad: float = 0.45  # normal residuals left out of the step (blobs)
    gls_eye_margin_px: float = 4.0  # the eye region left out of the step, widened (at 256 px)
    gls_landmark_outlier_px: float = 5.0  # landmarks left out of the step (at 256 px)
    gls_landmark_min_px: float = 0.5  # floor of a landmark group's estimated noise (at 256 px)
    # the step's damping (standard deviations): log focal length, principal point (half image
    # widths), joint rotations (rad), eyelids
    gls_damping: dict = field(default_factory=lambda: {"logf": 0.15, "pp": 0.02, "joints": 0.08, "eyelids": 0.15})

    # silhouette: model region whose rendered coverage is compared with the face mask
    silhouette_masks: tuple = ("face", "left_eyeball", "right_eyeball")

    # ---- regularisers ----
    # Ours: expression 0.2 and identity 0.1 (P3DMM 0.05 and 0.05). Stronger priors help with
    # realistic corruption and hurt with exact cues; the noise-adaptive scale below relaxes them
    # when the cues turn out clean, so they are tuned for noisy cues. Synthetic benchmark (3
    # scenes, 256², with the adaptive scale): (0.05, 0.1) -> (0.1, 0.2): realistic 1.47 -> 1.37
    # mm (0.2, 0.4: 1.36; 0.4, 0.8: 1.42); 40-frame clip, realistic: 1.25 -> 1.22 mm, jitter
    # 2.12 -> 2.07 mm, online steps per frame 17.0 -> 13.9.
    w_expr: float = 0.2
    w_shape: float = 0.1  # towards zero (or the model's prior mean, whitened)
    w_shape_prior: float = 0.2  # towards an optional prior code (e.g. MICA)
    w_jaw: float = 0.01
    # Ours 10 (P3DMM 0.1): the split between neck and head rotation is barely observed (the neck
    # is mostly outside the crop and the normal cue is in the neck's frame); with a weak prior the
    # tracked neck drifted to 17 degrees over a 16-frame synthetic clip, with 10 it stays put.
    w_neck: float = 10.0
    w_eyes: float = 0.01
    w_eye_symmetry: float = 0.1
    w_eyelids: float = 0.01
    w_principal_point: float = 1.0
    # Mirror symmetry of the shaped mesh, on the mean squared distance in m^2 between each vertex
    # and its partner's reflection (headcast.fit.symmetry). Pixel3DMM: 5000, expression included.
    # Ours: off. The synthetic benchmark's identities have a 25%-amplitude antisymmetric part and
    # its expressions are one-sided, so the prior has a true asymmetry to fight (rms 1.6-3 mm over
    # the head). 5 scenes, 256², 500 steps: 5000 (with expression): exact 0.227 -> 0.236 mm,
    # realistic 1.366 -> 1.369; 5e4: 0.275 / 1.361; identity only, 5000 / 5e4: realistic 1.365 /
    # 1.363. For parity with the official tracker set w_mirror=5000 (settings: fit.mirror_symmetry).
    # It is a term of the Adam energy; the Levenberg-Marquardt steps on the sparse terms leave it out.
    w_mirror: float = 0.0
    mirror_expression: bool = True
    mirror_tol: float = 1e-3  # metres: a vertex's partner is the template vertex this near its reflection
    # Noise-adaptive priors (ours). A prior's right weight against the data terms grows with
    # the cues' noise (for Gaussian noise the MAP weight is proportional to its variance). At
    # ``noise_probe_at`` of the first full-energy stage (single image, several images, first
    # frame of a clip) the fit measures how far its cues are from the head so far: the median
    # size of the smooth part of the normal residual (below), and the median 2-D vertex residual. w_shape,
    # w_shape_prior and w_expr are then scaled by clip(r^2, prior_scale_min, 1) for the rest of
    # the fit, r the larger of the two noise ratios (noise / noise_ref, both above the probe's
    # floor below). noise_ref is what the probe measures under the synthetic benchmark's
    # realistic corruption, at which the weights above are tuned; noisier cues keep them.
    # Realistic corruption probed at 6.2-7.7 deg (the whole angle, see below) and 1.3-1.6 px
    # (scale 0.9-1); exact cues at the floor (scale prior_scale_min). Benchmark (5 scenes, 256²,
    # 500 steps), this (without the floor, with the geometric mean of the ratios) and the priors above together: exact
    # cues 0.484 -> 0.321 mm, realistic 1.620 -> 1.538 mm. The larger ratio, not the geometric
    # mean: one clean cue must not relax the priors while the other is still biased. The
    # benchmark's ablation without the smooth uv warp (clean uv at 0.6 px, normals biased)
    # relaxed them to 0.03-0.16 with the mean and bent the identity (2 scenes: 1.25 -> 2.00 and
    # 1.22 -> 1.26 mm); with the larger ratio it gives 1.00 and 1.18 mm, and realistic and
    # exact cues are unchanged (1.248 / 1.224 and 0.380 / 0.154 mm on the same scenes). Whole
    # benchmark: that ablation row 1.926 -> 1.255 mm, realistic 1.366 -> 1.365, exact 0.227.
    adaptive_priors: bool = True
    noise_probe_at: float = 0.4
    # The normals are judged by the smooth part of their residual (its normalised convolution at
    # ``probe_smooth_sigma_px``, Energy.cue_noise), not by the whole angle: pixel noise averages
    # out over a face's thousands of pixels and needs no stronger prior, a smooth error alike over
    # a whole cheek does not average out (the benchmark's normal bias, 7.5 deg at 10 px, spans
    # about a dozen independent patches of a face). On the whole angle, the reference was 6.5
    # deg and the floor 1.0; normals with the benchmark's pixel noise alone (5.7 deg) probed at
    # 2.7 deg, kept a prior scale of 0.15 and switched the de-biased mode on: scenes 0-2, 0.615
    # mm posed against 0.267 with exact cues. On the smooth part (reference 3.4 deg, the low end
    # of the realistic corruption's 3.4-5.0 at 256²; floor 0.7, above exact cues' 0.43-0.63 at
    # 128², 256² and 512²), the same cues probe at 0.73-0.93 deg and leave the mode off; with
    # the floor at 0.6 (a prior scale of about 0.03): 0.374 mm. Realistic and exact cues are
    # fitted as before (realistic scenes 0-4: 1.115 against 1.116 mm; both probe at the same
    # scales as before: 1, and prior_scale_min). One condition loses:
    # the ablation without the smooth normal bias (pixel noise, warped uv), whose normals the
    # whole angle had put into the de-biased mode, where their 16x weight outweighed the warped uv
    # map: scenes 0-2, 0.953 -> 1.024 mm. Turning the mode on for a noisy uv map as well mended
    # that (0.953) but cost the clean normals of the ablation with only the uv warp (0.670 ->
    # 0.753 mm), so the mode follows the normals' smooth error alone.
    probe_smooth_sigma_px: float = 7.0
    noise_ref_normal_smooth_deg: float = 3.4
    noise_ref_uv: float = 1.4 / 256.0  # as a fraction of the image width
    # The probe's own floor: what it measures on exact cues, where the fit is 40% through (0.43-
    # 0.63 deg of smooth normal error, 0.66-0.96 deg of whole angle, and 0.0013-0.0022 of the
    # width, on the synthetic benchmark at 128², 256² and 512²).
    # It is taken out of each measurement and of the reference in quadrature before the ratio,
    # so cues at the reference level keep the tuned priors. Without it exact cues kept a prior
    # scale of ~0.03, whose pull alone moves a fit started at the truth to 0.30-0.44 mm; with it
    # they probe at prior_scale_min (5 scenes, 256², 500 steps: 0.250 -> 0.225 mm; 5 more
    # scenes 0.226; realistic unchanged, 1.365 -> 1.367).
    noise_floor_normal_smooth_deg: float = 0.7
    noise_floor_uv: float = 0.6 / 256.0
    prior_scale_min: float = 1e-3
    # The same probe also weighs the 2-D vertex term by its own noise, as an inverse variance:
    # w_uv_vertex holds up to ``uv_noise_full_weight`` of median residual and is scaled by
    # (uv_noise_full_weight / noise)^2 above it, down to ``uv_vertex_scale_min``. A smooth warp of
    # the uv map moves whole patches of correspondences together, so its weight should fall
    # faster than the normals' (whose error averages over many pixels). Synthetic benchmark (5
    # scenes, 256², 500 steps): realistic corruption 1.440 -> 1.365 mm (it probes at ~1.4 px, so
    # the weight drops to 5e4); exact cues keep 2e5 and 0.250 mm. A fixed 5e4 from the start:
    # realistic 1.365, exact 0.307 (the first steps, before the probe, need the full weight).
    uv_noise_full_weight: float = 0.7 / 256.0
    uv_vertex_scale_min: float = 0.25
    w_bounds: float = 100.0  # soft penalty outside coefficient bounds (hard clamp afterwards too)

    # ---- temporal smoothness (video), on squared first differences ----
    # P3DMM reg_smooth_*: expr 50, eyes 10, eyelids 2, jaw 50, neck 1000, R 2000, t 15200. Ours:
    # 4x on expression and jaw, 10x on the head rotation and translation, with a global pass
    # twice as long (global_epochs). The frame-to-frame jitter of a track is mostly the head's
    # depth (a millimetre closer looks almost the same in the image), which the official weights
    # barely hold. Synthetic benchmark, 100-frame clips with realistic corruption (seeds 0-2;
    # mean of per-scene means): posed 1.259 -> 1.208 mm, jitter 2.80 -> 1.53 mm (its depth part
    # 2.06 -> 0.88 mm); exact cues (seeds 0, 1): posed 0.274 -> 0.268 mm, jitter 0.96 -> 0.68.
    # The same weights with the old global pass: 1.223 / 1.95 mm; 30x (and the online pull
    # alike) with the old pass: 1.40 / 2.23.
    smooth_weights: dict = field(default_factory=lambda: {
        "expr": 200.0, "eyes": 10.0, "eyelids": 2.0, "jaw": 200.0, "neck": 1000.0,
        "R": 20000.0, "t": 152000.0})
    smooth_scale: float = 1.0
    # Ours: pull each online frame gently toward the previous one (the rotation and translation
    # as hard as 0.2 x the official weights did). Realistic clips, old global pass: 10x this,
    # posed 1.223 -> 1.253 mm and jitter 1.95 -> 1.91 (seeds 0-2); 50x, seed 0, 1.32 -> 1.41 mm
    # and 2.22 -> 2.54.
    online_smooth_scale: float = 0.02
    # Clips with landmarks and masks only (no uv or normal map: the add-on without network
    # weights) keep the official smoothing: these factors on smooth_weights, the online pull and
    # a quarter of the global pass. There the stronger smoothing moved the shared identity
    # instead (landmarks alone hold it weakly): two such clips (seeds 0, 1), posed 1.41 / 2.20
    # -> 1.50 / 2.94 mm, though with less jitter (2.86 / 3.36 -> 1.96 / 2.32 mm).
    landmark_clip_smooth: dict = field(default_factory=lambda: {"expr": 0.25, "jaw": 0.25, "R": 0.1, "t": 0.1})
    landmark_clip_online_smooth_scale: float = 0.2
    landmark_clip_global_fraction: float = 0.25

    # ---- optimiser (Adam learning rates per parameter group) ----
    # Ours: identity and expression at 0.03 (from 0.01) and the jaw at 0.01 (from 0.005): 500 steps
    # then go as far as 1500 did (3 synthetic scenes, exact cues 0.575 -> 0.482 mm, realistic
    # 1.549 -> 1.548 mm; 24-frame clip, realistic: 1.49 -> 1.45 mm).
    lr: dict = field(default_factory=lambda: {
        "shape": 0.03, "expr": 0.03, "eyelids": 0.005, "jaw": 0.01, "neck": 0.002, "eyes": 0.005,
        "R": 0.005, "t": 0.001, "focal": 0.02, "pp": 5e-4})
    # Ours: the stages that solve the identity and expression from the mean head (single and
    # several images, a clip's first frame) step the blendshape coefficients and the jaw faster.
    # Once the noise-adaptive scale relaxes the priors on clean cues, these groups have far to
    # go and Adam moves each coordinate by about its rate per step (5 synthetic scenes, 256²,
    # 500 steps: exact cues 0.321 -> 0.256 mm; realistic unchanged, 1.538 mm; twice these
    # rates: exact 0.267). The online and global video passes start next to their solution
    # and keep ``lr`` (40-frame clips with these rates there too: posed 1.26 -> 1.41 mm on one).
    lr_full_fit: dict = field(default_factory=lambda: {"shape": 0.2, "expr": 0.2, "jaw": 0.05})
    lr_decay_at: tuple = (0.6, 0.85)  # fractions of a stage where all learning rates ...
    lr_decay: float = 0.3  # ... are multiplied by this
    # Ours: Adam's momentum (beta1) in a coarse-to-fine stage once the noise probe has relaxed the
    # priors to relaxed_prior_scale or below (clean cues). The weak priors leave a long, flat,
    # bending valley in which the focal length, the depth and the identity trade off; at beta1
    # 0.9 Adam's steps across it cancel and it hardly moves along it (see BENCHMARKS, "the energy
    # or the optimiser"). Heavier momentum keeps the consistent part of the gradient. Synthetic
    # benchmark, exact cues (256², 500 steps, 1 thread, paired): scenes 0-4 0.221 -> 0.192 mm, 5-9
    # 0.223 -> 0.192; beta1 0.95 / 0.98 / 0.8 for the whole fit: 0.200 / 0.206 / 0.287. For the
    # whole fit 0.97 also moved realistic fits (by the fit's chaos: scenes 0-4 1.101 -> 1.181,
    # 5-9 1.234 -> 1.190), hence the switch at the probe; realistic cues keep their priors and 0.9.
    adam_beta1_relaxed: float = 0.97
    relaxed_prior_scale: float = 0.1

    # ---- stages ----
    # camera initialisation (sparse correspondences, no rendering). 75 (from 150): the synthetic
    # benchmark (5 scenes, 256², 500 steps) fits to the same error, exact cues 0.227 -> 0.226 mm
    # and realistic 1.365 -> 1.367 mm, about 1 s sooner per image; 50 was worse (exact 0.237).
    camera_steps: int = 75
    # Levenberg-Marquardt on the sparse terms after the camera (ours, optional). Measured on the
    # synthetic benchmark (3 scenes, 256², 500 steps): exact cues 0.59 -> 0.50 mm, realistic
    # 1.55 -> 1.65 mm, +4 s per image; so it is off by default.
    lm_iterations: int = 0
    # The same, warm-started, on each tracked frame (frame parameters only, at the online render
    # size): Adam's few online steps lag behind fast expressions, two LM iterations do not
    # (16-frame clip, 256²: posed 2.05 -> 1.56 mm after the global pass; +0.06 s per frame with
    # the closed-form Jacobian, +0.25 s with jacfwd).
    online_lm_iterations: int = 2
    steps: int = 500  # single image / multi-image full energy
    # Ours: the first part of the image and first-frame stages renders at 1/k of the size
    # (3 synthetic scenes, 256²: same errors, exact 0.579 / 0.574 mm, realistic 1.549 / 1.572
    # mm, 13.9-15.9 -> 12.0 s of CPU per image on one thread).
    coarse_fraction: float = 0.6
    coarse_downsample: int = 2
    first_frame_steps: int = 300  # video: first frame, full energy with identity free
    # Video online pass: frames start from their predecessor (with its optimiser state and the
    # LM step above), then Adam runs until the loss stops improving.
    online_steps: int = 30  # at most this many per later frame
    online_downsample: int = 2  # online pass rendered at 1/k of the fit size (same error, ~2x faster)
    online_min_steps: int = 8
    online_lr_scale: float = 0.5  # frames start next to their solution
    early_stop_window: int = 5
    early_stop_rel: float = 5e-3  # stop when the loss improved less than this fraction over the window
    global_epochs: float = 16.0  # video: global pass length in visits per frame (see smooth_weights)
    global_min_steps: int = 100
    global_batch: int = 8
    global_random_fraction: float = 0.3  # first part of the global pass on random frames
    # The global pass starts from converged frames: at full learning rates Adam's unit-size steps
    # only add noise (benchmark: 20-frame clip, posed 2.2 mm at 1.0 vs 1.5 mm at 0.3).
    global_lr_scale: float = 0.3
    max_images_per_step: int = 8  # multi-image: mini-batch size when there are more images

    # ---- camera ----
    init_focal: float = 4.5  # focal length / image width (a head at ~1 m filling a 1.42 face crop)
    init_distance: float = 1.0  # metres
    pnp_focal_factors: tuple = (1.0,)  # focal candidates (x init) tried by the PnP initialisation
    optimize_focal: bool = True
    optimize_pp: bool = True

    # ---- misc ----
    dtype: str = "float32"

    def landmark_weight(self, term: str, dense: bool = True) -> float:
        table = self.landmark_weights if dense else self.landmark_weights_without_dense
        return float(table.get(term, 0.0))

    def with_(self, **changes) -> "FitConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)
