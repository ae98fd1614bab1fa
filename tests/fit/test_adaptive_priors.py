# SPDX-License-Identifier: GPL-3.0-or-later
"""Noise-adaptive priors: the cue-noise probe against constructed errors, the prior scale and
the 2-D vertex term's scale it sets, the energy's scaled terms against references, and the
effect on a fit."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from headcast.fit import FitConfig, fit_images
from headcast.fit import metrics as M
from headcast.fit import synthetic_cues as sc
from headcast.fit.energy import Energy, EnergyOptions, prepare_frame
from headcast.fit.solver import Fitter


def fitter_at_truth(model, truth, cfg=None):
    """A one-frame Fitter whose parameters are the true ones."""
    cfg = cfg or FitConfig()
    f = Fitter(model, cfg, truth.image_size, 1)
    f.load_shared(truth.shape, truth.intrinsics[0])
    f.load_frame_fit(truth.frame(0))
    return f


def rotation(axis, deg):
    """Rodrigues' rotation matrix (numpy, float64)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = math.radians(deg)
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * k @ k


def test_cue_noise_measures_a_known_normal_rotation_and_vertex_shift(synthetic_model, scene128):
    truth, frame = scene128
    f = fitter_at_truth(synthetic_model, truth)
    size = truth.image_size
    exact = f.energy.cue_noise(f.params, [0], [prepare_frame(f.head, frame.cues, f.cfg, size)])
    # at the truth, exact cues differ from the rendered head by interpolation alone
    assert exact["normal_deg"] < 1.0 and exact["uv"] * size[1] < 0.3, exact

    # every predicted normal turned by 20 degrees about one axis: a normal n moves by
    # arccos(cos t + (1 - cos t)(a.n)^2), whose median over the cue's pixels is the reference
    axis = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])
    normals = frame.cues.normals.reshape(-1, 3).astype(np.float64)
    turned_n = normals @ rotation(axis, 20.0).T
    valid = frame.cues.normal_mask.reshape(-1)
    cos_t = math.cos(math.radians(20.0))
    expected = np.degrees(np.arccos(np.clip(cos_t + (1 - cos_t) * (normals[valid] @ axis) ** 2, -1, 1)))
    turned = replace(frame.cues, normals=turned_n.reshape(frame.cues.normals.shape).astype(np.float32))
    noise = f.energy.cue_noise(f.params, [0], [prepare_frame(f.head, turned, f.cfg, size)])
    assert abs(noise["normal_deg"] - np.median(expected)) < 0.5, (noise, np.median(expected))

    # every correspondence target moved by (3, 4) px: the median residual is 5 px
    prepared = prepare_frame(f.head, frame.cues, f.cfg, size)
    prepared.corr_target = prepared.corr_target + torch.tensor([3.0, 4.0], dtype=prepared.corr_target.dtype)
    noise = f.energy.cue_noise(f.params, [0], [prepared])
    assert abs(noise["uv"] * size[1] - 5.0) < 0.3, noise

    # a cue that is not there is not measured
    only_uv = replace(frame.cues, normals=None, normal_mask=None)
    assert "normal_deg" not in f.energy.cue_noise(f.params, [0], [prepare_frame(f.head, only_uv, f.cfg, size)])


# probe floors of 1 deg (the normals' smooth part) and 0.6 px (of a 256 px width), references 6.5 deg and 1.4 px; a
# measurement m of a cue counts as sqrt(m^2 - floor^2), and so does the reference
_REF_N = math.sqrt(6.5 ** 2 - 1.0)  # the normal reference above its floor
_REF_UV = math.sqrt(1.4 ** 2 - 0.36)  # the uv reference above its floor, px


def _at(above: float, floor: float) -> float:
    """The measurement that is ``above`` over ``floor`` in quadrature."""
    return math.sqrt(above ** 2 + floor ** 2)


@pytest.mark.parametrize("noise, expected", [
    # the noisier cue decides: ratios 1/2 and 1/4 give (1/2)^2
    ({"normal_smooth_deg": _at(0.5 * _REF_N, 1.0), "uv": _at(0.25 * _REF_UV, 0.6) / 256}, 0.25),
    ({"normal_smooth_deg": _at(0.1 * _REF_N, 1.0), "uv": _at(0.2 * _REF_UV, 0.6) / 256}, 0.04),
    ({"normal_smooth_deg": _at(0.1 * _REF_N, 1.0)}, 0.01),
    ({"normal_smooth_deg": 6.5, "uv": 1.4 / 256}, 1.0),  # at the reference: the tuned priors
    ({"normal_smooth_deg": 30.0, "uv": 0.1}, 1.0),  # noisier than the tuning: the priors stay
    ({"normal_smooth_deg": 0.9, "uv": 0.5 / 256}, 1e-3),  # both at the probe's floor: the minimum
    ({"normal_smooth_deg": 1e-4, "uv": 1e-7}, 1e-3),  # never below prior_scale_min
    # one cue at its floor does not relax the priors while the other is at the reference
    ({"normal_smooth_deg": 0.5, "uv": 1.4 / 256}, 1.0),
    ({"normal_smooth_deg": 6.5, "uv": 0.5 / 256}, 1.0),
    ({}, 1.0),  # nothing to judge by
    # normals far off pixel by pixel but without a smooth error: only the smooth part counts
    ({"normal_deg": 30.0, "normal_white_deg": 30.0, "normal_smooth_deg": 0.9, "uv": 0.5 / 256}, 1e-3),
])
def test_prior_scale_from_the_measured_noise(synthetic_model, monkeypatch, noise, expected):
    cfg = FitConfig(noise_ref_normal_smooth_deg=6.5, noise_ref_uv=1.4 / 256, prior_scale_min=1e-3,
                    noise_floor_normal_smooth_deg=1.0, noise_floor_uv=0.6 / 256)
    f = Fitter(synthetic_model, cfg, (64, 64), 1)
    monkeypatch.setattr(f.energy, "cue_noise", lambda *a: dict(noise))
    assert f.probe_noise([0], [None]) == pytest.approx(expected, rel=1e-9)
    assert f.prior_scale == pytest.approx(expected, rel=1e-9) and f.cue_noise == noise


def test_without_floors_the_ratio_is_the_plain_noise_ratio(synthetic_model, monkeypatch):
    cfg = FitConfig(noise_ref_normal_smooth_deg=6.5, noise_ref_uv=1.4 / 256, noise_floor_normal_smooth_deg=0.0,
                    noise_floor_uv=0.0)
    f = Fitter(synthetic_model, cfg, (64, 64), 1)
    monkeypatch.setattr(f.energy, "cue_noise", lambda *a: {"normal_smooth_deg": 3.25, "uv": 0.35 / 256})
    assert f.probe_noise([0], [None]) == pytest.approx(0.5 * 0.5, rel=1e-9)  # ratios 1/2 and 1/4


@pytest.mark.parametrize("uv_px, expected", [
    (0.35, 1.0),  # cleaner than uv_noise_full_weight: full weight
    (1.0, 0.49),  # (0.7 / 1.0)^2
    (1.4, 0.25),  # the realistic tuning level
    (5.0, 0.25),  # never below uv_vertex_scale_min
    (None, 1.0),  # no uv cue: nothing to judge by
])
def test_vertex_term_scale_from_the_measured_uv_noise(synthetic_model, monkeypatch, uv_px, expected):
    cfg = FitConfig(uv_noise_full_weight=0.7 / 256, uv_vertex_scale_min=0.25)
    f = Fitter(synthetic_model, cfg, (64, 64), 1)
    noise = {"normal_smooth_deg": 3.0} if uv_px is None else {"normal_smooth_deg": 3.0, "uv": uv_px / 256}
    monkeypatch.setattr(f.energy, "cue_noise", lambda *a: dict(noise))
    f.probe_noise([0], [None])
    assert f.uv_vertex_scale == pytest.approx(expected, rel=1e-9)
    assert f.result(np.ones(1, bool), True).info["uv_vertex_scale"] == pytest.approx(expected, rel=1e-9)


def test_vertex_term_scales_in_the_energy_and_the_sparse_problem(synthetic_model, scene128):
    """The 2-D vertex term of the energy is linear in its scale (every other term is unchanged),
    and the Levenberg-Marquardt correspondence residuals scale by its square root."""
    from headcast.fit.sparse_solve import SparseProblem

    truth, frame = scene128
    cfg = FitConfig()
    f = fitter_at_truth(synthetic_model, truth, cfg)
    # move the head a little so the correspondences have residuals
    with torch.no_grad():
        f.params.t[0, 0] += 0.004
    prepared = prepare_frame(f.head, frame.cues, cfg, truth.image_size)
    full = f.energy(f.params, [0], [prepared], EnergyOptions())
    part = f.energy(f.params, [0], [prepared], EnergyOptions(uv_vertex_scale=0.3))
    assert float(full[2]["uv_vertex"][0]) > 0
    assert float(part[2]["uv_vertex"][0]) == pytest.approx(0.3 * float(full[2]["uv_vertex"][0]), rel=1e-5)
    for k in full[2]:
        if k != "uv_vertex":
            assert float(part[2][k][0]) == pytest.approx(float(full[2][k][0]), rel=1e-6), k

    blocks = ["expr", "joints", "R", "t"]
    r1 = SparseProblem(f, 0, prepared, blocks)
    f.uv_vertex_scale = 0.3
    r2 = SparseProblem(f, 0, prepared, blocks)
    n = 2 * len(r1.corr_ids)
    assert n > 0 and torch.equal(r1.corr_ids, r2.corr_ids)
    a, b = r1.residuals(r1.pack())[:n], r2.residuals(r2.pack())[:n]
    np.testing.assert_allclose(b.numpy(), math.sqrt(0.3) * a.numpy(), rtol=1e-5, atol=1e-9)
    # Fitter.run hands the scale to the energy
    seen = []
    energy = f.energy
    f.energy = lambda params, rows, frames, opts, prior: seen.append(opts.uv_vertex_scale) or energy(
        params, rows, frames, opts, prior)
    f.run("fit", [0], [prepared], 1, {"expr"})
    assert seen == [0.3]


def test_scaled_priors_match_a_numpy_reference(synthetic_model, scene128):
    truth, frame = scene128
    cfg = FitConfig()
    f = fitter_at_truth(synthetic_model, truth, cfg)
    prepared = prepare_frame(f.head, frame.cues, cfg, truth.image_size)
    e = {s: float(f.energy(f.params, [0], [prepared], EnergyOptions(prior_scale=s))[0]) for s in (1.0, 0.25)}
    beta = truth.shape[: cfg.n_shape].astype(np.float64)
    psi = truth.expression[0, : cfg.n_expr].astype(np.float64)
    scaled = cfg.w_shape * (beta ** 2).sum() + cfg.w_expr * (psi ** 2).sum()
    # only the identity and expression priors change, by (1 - 0.25) of their value
    assert e[1.0] - e[0.25] == pytest.approx(0.75 * scaled, rel=1e-4)


def test_prior_scale_is_kept_with_the_optimiser_state(synthetic_model):
    a = Fitter(synthetic_model, FitConfig(), (64, 64), 2)
    a.prior_scale, a.uv_vertex_scale, a.cue_noise = 0.037, 0.4, {"normal_deg": 1.0}
    b = Fitter(synthetic_model, FitConfig(), (64, 64), 2)
    b.load_optimiser_state(1, a.optimiser_state(1), shared=True)
    assert b.prior_scale == pytest.approx(0.037) and b.cue_noise == {"normal_deg": 1.0}  # not probed again
    assert b.uv_vertex_scale == pytest.approx(0.4)
    c = Fitter(synthetic_model, FitConfig(), (64, 64), 2)
    c.load_optimiser_state(1, a.optimiser_state(1), shared=False)
    assert c.prior_scale == 1.0 and c.uv_vertex_scale == 1.0 and c.cue_noise is None


def test_clean_cues_relax_the_priors_and_fit_closer(synthetic_model, scene128, exact_fit128):
    truth, frame = scene128
    m = synthetic_model
    adaptive, _ = exact_fit128
    assert adaptive.info["prior_scale"] < 0.1, adaptive.info
    fixed = fit_images(m, [frame.cues], FitConfig(steps=400, adaptive_priors=False))
    assert fixed.info["prior_scale"] == 1.0 and fixed.info["cue_noise"] == {}
    err_adaptive = M.posed_error_mm(m, adaptive, truth)[0]
    err_fixed = M.posed_error_mm(m, fixed, truth)[0]
    assert err_adaptive < 0.85 * err_fixed, (err_adaptive, err_fixed)


def test_noisy_cues_keep_the_priors(synthetic_model, scene128):
    _, frame = scene128
    cues = sc.corrupt(frame, np.random.default_rng(5), sc.REALISTIC)
    fit = fit_images(synthetic_model, [cues], FitConfig(steps=100, camera_steps=60))
    noise = fit.info["cue_noise"]
    assert noise["normal_deg"] > 4.0 and noise["normal_smooth_deg"] > 2.0 and fit.info["prior_scale"] > 0.5, fit.info
    assert fit.info["uv_vertex_scale"] < 0.5, fit.info  # the warped uv map weighs less


@pytest.mark.parametrize("noise, relaxed", [
    ({"normal_smooth_deg": 0.5, "uv": 0.3 / 256}, True),  # clean: the priors drop to their minimum
    ({"normal_smooth_deg": 6.5, "uv": 1.4 / 256}, False),  # at the tuning's noise: they stay
])
def test_momentum_after_the_probe_follows_the_relaxed_priors(synthetic_model, scene128, monkeypatch, noise, relaxed):
    """A coarse-to-fine stage steps with beta1 = adam_beta1_relaxed after a probe that relaxed the
    priors (and with the optimiser's own beta1 before it and otherwise), then hands the optimiser
    back with its own beta1."""
    truth, frame = scene128
    cfg = FitConfig(adam_beta1_relaxed=0.97, relaxed_prior_scale=0.1, noise_probe_at=0.5)
    f = Fitter(synthetic_model, cfg, truth.image_size, 1)
    # the probe falls in the coarse part, whose energy is another Energy instance
    monkeypatch.setattr(Energy, "cue_noise", lambda self, *a: dict(noise))
    seen = []
    run = f.run

    def recording_run(stage, rows, frames, steps, *a, **k):
        seen.append((k["schedule"][0], steps, f.opt.b1))
        return run(stage, rows, frames, steps, *a, **k)

    monkeypatch.setattr(f, "run", recording_run)
    prepared = prepare_frame(f.head, frame.cues, cfg, truth.image_size)
    f.run_coarse_to_fine("fit", [0], [frame.cues], [prepared], 10, {"R", "t", "shape", "expr"})
    # segments: coarse [0, 5) up to the probe, coarse [5, 6), full size [6, 10)
    assert [(a, n) for a, n, _ in seen] == [(0, 5), (5, 1), (6, 4)]
    after = 0.97 if relaxed else 0.9
    assert [b for _, _, b in seen] == [0.9, after, after], (seen, f.prior_scale, f.cue_noise)
    assert f.priors_relaxed() is relaxed
    assert f.opt.b1 == 0.9
