# SPDX-License-Identifier: GPL-3.0-or-later
"""The smooth normal-bias field: the normalised convolution against a float64 scipy
reference, its recovery of a known smooth bias at the true head, the probe that switches the
de-biased mode on for biased normals only, and the eye region that mode leaves out."""
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from headcast.fit import FitConfig
from headcast.fit import synthetic_cues as sc
from headcast.fit.bias_field import gaussian_blur, iterated_smooth_field, smooth_field
from headcast.fit.energy import EnergyOptions, prepare_frame
from headcast.render import interpolate, rasterize

from .test_adaptive_priors import fitter_at_truth


def reference_normalised_convolution(values, weights, sigma, lam):
    """float64: blur(w v) / (blur(w) + lam) with scipy's Gaussian (zero outside, 3 sigma)."""
    num = np.stack([gaussian_filter(values[..., c] * weights, sigma, mode="constant", truncate=3.0)
                    for c in range(values.shape[-1])], -1)
    den = gaussian_filter(weights, sigma, mode="constant", truncate=3.0)
    return num / (den[..., None] + lam)


@pytest.mark.parametrize("sigma, tol", [(2.5, 1e-4), (12.0, 0.04)])
def test_smooth_field_matches_a_float64_normalised_convolution(sigma, tol):
    rng = np.random.default_rng(0)
    h, w = 96, 80
    yy, xx = np.mgrid[0:h, 0:w]
    # a smooth field plus noise, sampled on a blob-shaped support with holes and outliers cut
    field = np.stack([np.sin(xx / 13.0 + c) * np.cos(yy / 17.0 - c) for c in range(3)], -1)
    values = field + 0.3 * rng.normal(size=field.shape)
    support = ((xx - 40) ** 2 / 35 ** 2 + (yy - 48) ** 2 / 42 ** 2 < 1) & (rng.random((h, w)) > 0.1)
    weights = (support & (rng.random((h, w)) > 0.05)).astype(np.float64)
    idx = np.flatnonzero(support)
    got = smooth_field(torch.as_tensor(values.reshape(-1, 3)[idx]), torch.as_tensor(weights.reshape(-1)[idx]),
                       torch.as_tensor(idx), (1, h, w), sigma, 0.01).numpy()
    want = reference_normalised_convolution(values, weights, sigma, 0.01).reshape(-1, 3)[idx]
    # the wide kernel runs on a pooled grid: compare with the field's own size
    err = np.sqrt(np.mean((got - want) ** 2)) / np.sqrt(np.mean(want ** 2))
    assert err < tol, err


def test_gaussian_blur_keeps_a_constant_inside_and_the_mass():
    img = torch.zeros(1, 1, 128, 128, dtype=torch.float64)
    img[..., 40:90, 30:100] = 1.0
    out = gaussian_blur(img, 12.0)
    assert out.shape == img.shape
    want = gaussian_filter(img[0, 0].numpy(), 12.0, mode="constant", truncate=3.0)
    assert np.abs(out[0, 0].numpy() - want).max() < 0.02  # the pooled blur, against the exact one
    assert abs(float(out.sum() / img.sum()) - 1.0) < 0.01


def biased_cues(frame, deg, seed=5, noise_deg=0.0):
    """The exact cues with only a smooth normal bias of ``deg`` and pixel noise of ``noise_deg``
    per component."""
    c = sc.Corruption(uv_warp_px=0, uv_noise=0, normal_bias_deg=deg, normal_noise_deg=noise_deg, uv_blur_px=0,
                      normal_blur_px=0, blobs=0, wrong_eyes=False, mask_edge_px=0, landmark_noise_px=0,
                      landmark_outlier_px=0, landmark_drop_frac=0)
    return sc.corrupt(frame, np.random.default_rng(seed), c)


def injected_normal_error(f, frame, cues) -> SimpleNamespace:
    """At the truth (``f`` a fitter loaded with it): the rendered normals, the given cues' normals
    and their validity at the covered pixels, the raster, the prepared frame, and the injected
    error (given minus exact normals) at the valid pixels, also as a float64 image [H, W, 3] with
    weights [H, W] (1 at those pixels) and their flat indices."""
    energy, size = f.energy, f.size
    exact = prepare_frame(f.head, frame.cues, f.cfg, size)
    given = prepare_frame(f.head, cues, f.cfg, size)
    _, _, _, v_normals, _, screen = energy._posed(f.params, torch.tensor([0]), True, None)
    raster = rasterize(screen, f.head.faces, size, cull_backfaces=True)
    n_px, t_exact, mask, _ = energy._pixel_normals(v_normals, raster, energy._gather_pixels([exact], raster))
    _, t_given, _, _ = energy._pixel_normals(v_normals, raster, energy._gather_pixels([given], raster))
    ok = mask > 0
    injected = (t_given - t_exact)[ok]
    h, w = size
    img, wts = np.zeros((h * w, 3)), np.zeros(h * w)
    idx = raster.pixel_index[ok].numpy()
    img[idx], wts[idx] = injected.double().numpy(), 1.0
    return SimpleNamespace(n_px=n_px, target=t_given, mask=mask, raster=raster, prepared=given, ok=ok,
                           injected=injected, img=img.reshape(h, w, 3), wts=wts.reshape(h, w), idx=idx)


def test_bias_of_a_smoothly_biased_normal_cue_is_recovered_at_the_truth(synthetic_model, scene128):
    truth, frame = scene128
    cfg = FitConfig(normal_bias_sigma_px=12.0, normal_huber_debiased=0.0)  # L1 both: comparable values
    f = fitter_at_truth(synthetic_model, truth, cfg)
    energy = f.energy
    e = injected_normal_error(f, frame, biased_cues(frame, 6.0))
    biased, injected = e.prepared, e.injected
    estimate = energy._normal_bias(e.n_px, e.target, e.mask, e.raster, 1)[e.ok]
    rms = lambda a: float(a.pow(2).mean().sqrt())  # noqa: E731
    assert rms(injected) > 0.05  # about 6 degrees
    # what the estimator aims at: the injected bias smoothed the same way (float64, scipy)
    sigma, lam = cfg.normal_bias_sigma_px * truth.image_size[1] / 256, cfg.normal_bias_lambda
    first = reference_normalised_convolution(e.img, e.wts, sigma, lam)
    # twicing: the first estimate plus the same smoothing of what it left
    second = reference_normalised_convolution(e.img - first * e.wts[..., None], e.wts, sigma, lam)
    want = (first + second).reshape(-1, 3)[e.idx]
    assert rms(estimate.double() - torch.as_tensor(want)) < 0.1 * rms(injected)
    # and that is most of the bias (the rest is detail finer than the smoothing)
    assert rms(estimate - injected) < 0.65 * rms(injected), (rms(estimate - injected), rms(injected))
    # and the de-biased normal term at the truth is a fraction of the raw one (per unit weight)
    raw = energy(f.params, [0], [biased], EnergyOptions(regularize=False, normal_bias=False))[2]["normal"]
    debiased = energy(f.params, [0], [biased], EnergyOptions(regularize=False, normal_bias=True))[2]["normal"]
    per_weight = float(debiased) / cfg.w_normal_debiased, float(raw) / cfg.w_normal
    assert per_weight[0] < 0.6 * per_weight[1], per_weight


def test_probe_switches_the_de_biased_mode_on_for_biased_normals_only(synthetic_model, scene128):
    truth, frame = scene128
    cfg = FitConfig(normal_bias_sigma_px=12.0)
    size = truth.image_size
    for cues, want in ((frame.cues, False), (biased_cues(frame, 6.0), True),
                       (biased_cues(frame, 0.0, noise_deg=4.0), False),  # pixel noise alone averages out
                       (sc.corrupt(frame, np.random.default_rng(1), sc.REALISTIC), True)):
        f = fitter_at_truth(synthetic_model, truth, cfg)
        f.probe_noise([0], [prepare_frame(f.head, cues, cfg, size)])
        assert f.normals_biased() == want, f.cue_noise
    f = fitter_at_truth(synthetic_model, truth, replace(cfg, normal_bias_sigma_px=0.0))
    f.probe_noise([0], [prepare_frame(f.head, biased_cues(frame, 6.0), cfg, size)])
    assert not f.normals_biased()


@pytest.mark.parametrize("bias_deg, noise_deg", [(6.0, 0.0), (0.0, 4.0), (6.0, 4.0)])
def test_probe_splits_the_normal_residual_into_its_smooth_part_and_the_rest(synthetic_model, scene128,
                                                                           bias_deg, noise_deg):
    truth, frame = scene128
    cfg = FitConfig()
    f = fitter_at_truth(synthetic_model, truth, cfg)
    size = truth.image_size
    e = injected_normal_error(f, frame, biased_cues(frame, bias_deg, noise_deg=noise_deg))
    noise = f.energy.cue_noise(f.params, [0], [e.prepared])
    # the reference: the injected error (predicted minus exact normals at the valid pixels; the
    # cues were rendered by the same rasteriser, so at the truth it is the whole residual) split
    # by a float64 normalised convolution with every valid pixel an inlier
    smooth = reference_normalised_convolution(e.img, e.wts, cfg.probe_smooth_sigma_px * size[1] / 256,
                                              cfg.normal_bias_lambda).reshape(-1, 3)[e.idx]
    want_smooth = np.degrees(np.median(np.linalg.norm(smooth, axis=1)))
    want_white = np.degrees(np.median(np.linalg.norm(e.img.reshape(-1, 3)[e.idx] - smooth, axis=1)))
    assert abs(noise["normal_smooth_deg"] - want_smooth) < 0.03 * want_smooth + 0.05, (noise, want_smooth)
    assert abs(noise["normal_white_deg"] - want_white) < 0.03 * want_white + 0.05, (noise, want_white)
    if noise_deg == 0:  # a smooth bias is mostly smooth part
        assert noise["normal_smooth_deg"] > 2.0 * noise["normal_white_deg"], noise
    if bias_deg == 0:  # pixel noise is mostly not
        assert noise["normal_smooth_deg"] < 0.3 * noise["normal_white_deg"], noise


def test_de_biased_mode_leaves_the_eye_region_out_of_the_normal_and_uv_terms(synthetic_model, scene128):
    truth, frame = scene128
    cfg = FitConfig(normal_bias_sigma_px=12.0)
    f = fitter_at_truth(synthetic_model, truth, cfg)
    head, energy, size = f.head, f.energy, truth.image_size
    region = synthetic_model.masks["eye_region"]
    assert bool(head.wide_eye_attr[region].all()) and not bool(head.eye_attr[region].all())
    prepared = prepare_frame(head, frame.cues, cfg, size)
    _, _, _, v_normals, _, screen = energy._posed(f.params, torch.tensor([0]), True, None)
    raster = rasterize(screen, head.faces, size, cull_backfaces=True)
    cue_px = energy._gather_pixels([prepared], raster)
    _, _, narrow, _ = energy._pixel_normals(v_normals, raster, cue_px, wide=False)
    _, _, wide, _ = energy._pixel_normals(v_normals, raster, cue_px, wide=True)
    # pixels of triangles inside the wide eye mask are left out, those of triangles away from it kept
    corners = head.wide_eye_attr[:, 0][head.faces][raster.pixel_face]  # [N, 3]
    inside, away = corners.amin(1) > 0, corners.amax(1) == 0
    assert bool((wide[inside] == 0).all())
    assert torch.equal(wide[away], narrow[away])
    assert float(narrow[inside].sum()) > 50  # the narrow mask kept many of them


@pytest.mark.parametrize("passes", [1, 2, 4])
def test_iterated_smooth_field_is_repeated_twicing_against_float64(passes):
    """(1 - (1 - S)^n) v, S the normalised convolution: the rounds against the float64 scipy
    reference applied to what each round left."""
    rng = np.random.default_rng(1)
    h, w = 72, 64
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = np.stack([np.sin(xx / 9.0 + c) * np.cos(yy / 11.0) for c in range(3)], -1)
    values = smooth + 0.2 * rng.normal(size=(h, w, 3))
    support = (xx - 32) ** 2 / 28 ** 2 + (yy - 36) ** 2 / 33 ** 2 < 1
    weights = (support & (rng.random((h, w)) > 0.1)).astype(np.float64)
    idx = np.flatnonzero(support)
    v_t, w_t, i_t = (torch.as_tensor(a) for a in (values.reshape(-1, 3)[idx], weights.reshape(-1)[idx], idx))
    got = iterated_smooth_field(v_t, w_t, i_t, (1, h, w), 2.5, 0.01, passes).numpy()
    rest = np.where(support[..., None], values, 0.0)
    total = np.zeros_like(rest)
    for _ in range(passes):
        part = np.where(support[..., None], reference_normalised_convolution(rest, weights, 2.5, 0.01), 0.0)
        total, rest = total + part, rest - part
    want = total.reshape(-1, 3)[idx]
    assert np.abs(got - want).max() < 1e-5
    # more rounds keep more of a smooth field: what is left of the sine shrinks
    if passes > 1:
        one = iterated_smooth_field(v_t, w_t, i_t, (1, h, w), 2.5, 0.01, 1).numpy()
        truth = smooth.reshape(-1, 3)[idx]
        assert np.abs(got - truth).mean() < np.abs(one - truth).mean()


def test_blurred_rendered_normals_match_a_float64_blur_of_the_normal_image(synthetic_model):
    """normal_render_blur_px: the rendered normals at the covered pixels, blurred like the
    predictions (background zero) and renormalised, against scipy on the same image."""
    truth = sc.random_truth(synthetic_model, np.random.default_rng(3), 1, 96)
    cfg = FitConfig(normal_render_blur_px=1.5)
    f = fitter_at_truth(synthetic_model, truth, cfg)
    e = f.energy
    with torch.no_grad():
        rows = torch.as_tensor([0])
        _, _, _, v_normals, _, screen = e._posed(f.params, rows, True, None)
        raster = rasterize(screen, f.head.faces, e.size, cull_backfaces=True)
        img = interpolate(v_normals, raster, f.head.faces).view(-1, 3)[raster.pixel_index]
        n_px = img / img.norm(dim=-1, keepdim=True)
        got = e._blurred_normals(n_px, raster, 1).numpy()
    h, w = e.size
    full = np.zeros((h * w, 3))
    full[raster.pixel_index.numpy()] = n_px.double().numpy()
    sigma = 1.5 * w / 256.0
    blurred = np.stack([gaussian_filter(full.reshape(h, w, 3)[..., c], sigma, mode="constant", truncate=3.0)
                        for c in range(3)], -1).reshape(-1, 3)[raster.pixel_index.numpy()]
    want = blurred / np.linalg.norm(blurred, axis=-1, keepdims=True)
    assert np.abs(got - want).max() < 1e-4
    assert np.abs(got - n_px.numpy()).max() > 1e-3  # it did blur
