# SPDX-License-Identifier: GPL-3.0-or-later
"""Single-image fitting on synthetic ground truth (the synthetic FLAME-format head)."""
import threading
from dataclasses import replace

import numpy as np
import pytest

from headcast.fit import Cancelled, CueError, FitConfig, FrameCues, fit_images
from headcast.fit import metrics as M
from headcast.fit import synthetic_cues as sc


def mean_head_at_true_pose(model, truth):
    """The reference a fit must beat: the average head (no identity, no expression, rest
    joints) placed exactly at the true head pose and camera."""
    rot = np.broadcast_to(np.eye(3), truth.rotations.shape).copy()
    return replace(truth, shape=np.zeros_like(truth.shape), expression=np.zeros_like(truth.expression),
                   eyelids=None if truth.eyelids is None else np.zeros_like(truth.eyelids), rotations=rot)


def test_exact_cues_recover_face_and_camera(synthetic_model, scene128, exact_fit128):
    truth, _ = scene128
    fit, _ = exact_fit128
    m = synthetic_model
    posed = M.posed_error_mm(m, fit, truth)[0]
    reproj = M.reprojection_error_px(m, fit, truth)[0]
    baseline = M.posed_error_mm(m, mean_head_at_true_pose(m, truth), truth)[0]
    # well under a millimetre on the face (a single view fixes the head up to a uniform scale,
    # which only the identity prior decides: errors are taken after a similarity alignment)
    assert posed < 0.75, posed
    assert posed < 0.2 * baseline  # measured 0.17 x the mean head at the true pose
    assert M.neutral_error_mm(m, fit, truth) < 0.9
    # the camera: face vertices and landmarks reproject to within a fraction of a pixel
    assert reproj < 0.5, reproj
    assert M.landmark_error_px(m, fit, truth)[0] < 0.5
    assert fit.n_frames == 1 and fit.valid.tolist() == [True] and fit.shared_camera
    assert abs(fit.fx / truth.intrinsics[0, 0] - 1) < 0.25  # the focal length is only weakly observed
    assert np.allclose(fit.rotations[0, 0], np.eye(3))  # the global joint stays at identity
    assert np.isfinite(fit.loss).all() and fit.info["steps"] == 400


def test_progress_reports_each_stage(exact_fit128):
    _, stages = exact_fit128
    names = [s[0] for s in stages]
    assert names[0] == "camera" and names[-1] == "fit" and set(names) == {"camera", "fit"}
    fit_steps = [s[3] for s in stages if s[0] == "fit"]
    assert fit_steps == list(range(400))
    assert all(s[1] == 0 and s[2] == 1 and np.isfinite(s[4]) for s in stages)
    losses = [s[4] for s in stages if s[0] == "fit"]
    assert np.mean(losses[-20:]) < 0.2 * np.mean(losses[:5])


def test_cancellation_between_steps(synthetic_model, scene128):
    _, frame = scene128
    event = threading.Event()
    seen = []

    def progress(stage, f, n, step, loss):
        seen.append(stage)
        if len(seen) == 7:
            event.set()

    with pytest.raises(Cancelled):
        fit_images(synthetic_model, [frame.cues], FitConfig(steps=50), progress=progress, cancel=event)
    assert len(seen) == 7  # stopped right after the step that set the flag
    with pytest.raises(Cancelled):
        fit_images(synthetic_model, [frame.cues], FitConfig(steps=50), cancel=lambda: True)


@pytest.fixture(scope="module")
def scene96(synthetic_model):
    rng = np.random.default_rng(7)
    truth = sc.random_truth(synthetic_model, rng, 1, 96)
    return truth, sc.render_cues(synthetic_model, truth, 0)


@pytest.mark.parametrize("keep,bound", [(("uv",), 1.5), (("normals", "mask"), 1.5), (("landmarks",), 2.2)])
def test_any_subset_of_cues_fits(synthetic_model, scene96, keep, bound):
    """uv alone, normals (+ face mask) alone, or landmarks alone each recover the face far
    better than the average head at the true pose would be."""
    truth, frame = scene96
    m = synthetic_model
    cues = sc.only(frame.cues, *keep)
    fit = fit_images(m, [cues], FitConfig(steps=150), image_size=96)
    posed = M.posed_error_mm(m, fit, truth)[0]
    baseline = M.posed_error_mm(m, mean_head_at_true_pose(m, truth), truth)[0]
    assert posed < bound and posed < 0.5 * baseline, (keep, posed, baseline)
    assert M.reprojection_error_px(m, fit, truth)[0] < 1.0


def test_bad_input_is_reported(synthetic_model, scene96):
    _, frame = scene96
    with pytest.raises(CueError, match="no images"):
        fit_images(synthetic_model, [])
    with pytest.raises(CueError, match="none of the images has a usable cue"):
        fit_images(synthetic_model, [None, FrameCues()], image_size=96)
    with pytest.raises(CueError, match="image size"):
        fit_images(synthetic_model, [sc.only(frame.cues, "landmarks")])
    wrong = replace(frame.cues, normals=frame.cues.normals[:90])
    with pytest.raises(CueError, match=r"image 1: normals has shape \(90, 96, 3\)"):
        fit_images(synthetic_model, [frame.cues, wrong])


def test_a_known_focal_length_is_held_and_decides_the_fit(synthetic_model, scene128):
    """``focal=`` holds the camera's focal length: the result keeps it exactly, and the fit with
    the true one beats the fit with a 30% wrong one (the shape has to bend to make up for it)."""
    truth, frame = scene128
    m = synthetic_model
    f_true = truth.intrinsics[0, 0] / 128
    cfg = FitConfig(steps=250)
    fits = {k: fit_images(m, [frame.cues], cfg, focal=f_true * k) for k in (1.0, 1.3)}
    for k, fit in fits.items():
        np.testing.assert_allclose(fit.intrinsics[0, :2], f_true * k * 128, rtol=1e-6)  # float32 parameters
    right, wrong = (M.posed_error_mm(m, fits[k], truth)[0] for k in (1.0, 1.3))
    assert right < 0.75 and right < 0.8 * wrong, (right, wrong)
    # bad values name what is wrong
    with pytest.raises(CueError, match="focal"):
        fit_images(m, [frame.cues], cfg, focal=[f_true, f_true])  # two for one image
    with pytest.raises(CueError, match="positive"):
        fit_images(m, [frame.cues], cfg, focal=-1.0)


def test_a_known_identity_is_held_and_helps(synthetic_model, scene128):
    """``identity=`` holds the shape code: the result keeps it exactly, and with the true
    identity held the expression and pose fit the face better than when the identity is solved
    from the same realistic cues (the errors compared after the same alignment)."""
    truth, frame = scene128
    m = synthetic_model
    cues = sc.corrupt(frame, np.random.default_rng(5), sc.REALISTIC)
    cfg = FitConfig(steps=200)
    held = fit_images(m, [cues], cfg, identity=truth.shape)
    solved = fit_images(m, [cues], cfg)
    np.testing.assert_allclose(held.shape, truth.shape, atol=1e-6)  # float32 parameters
    e_held, e_solved = (M.posed_error_mm(m, f, truth)[0] for f in (held, solved))
    assert e_held < 0.8 * e_solved, (e_held, e_solved)  # measured 0.62x
    assert M.neutral_error_mm(m, held, truth) < 1e-3  # the identity is the truth's
    # a shorter code is padded with zeros; more coefficients than the model has are refused
    short = fit_images(m, [cues], FitConfig(steps=5, camera_steps=5), identity=truth.shape[:10])
    np.testing.assert_allclose(short.shape[:10], truth.shape[:10], atol=1e-6)
    assert not short.shape[10:].any()
    with pytest.raises(CueError, match="identity"):
        fit_images(m, [cues], cfg, identity=np.ones(len(truth.shape) + 5))
    with pytest.raises(CueError, match="finite"):
        fit_images(m, [cues], cfg, identity=np.full(3, np.nan))
