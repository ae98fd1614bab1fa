# SPDX-License-Identifier: GPL-3.0-or-later
"""Several unordered images of one person: one identity, per-image expression, pose and camera."""
import numpy as np
import pytest

from headcast.fit import FitConfig, fit_images
from headcast.fit import metrics as M
from headcast.fit import synthetic_cues as sc

SIZE = 112
STEPS = 150


@pytest.fixture(scope="module")
def four_views(synthetic_model):
    """Four photos of one identity (different expressions, poses and cameras) with realistic
    prediction errors, as ``(truth, cues)``."""
    rng = np.random.default_rng(21)
    truth = sc.random_truth(synthetic_model, rng, 4, SIZE, max_yaw_deg=35.0)
    cues = [sc.corrupt(sc.render_cues(synthetic_model, truth, i), rng, sc.REALISTIC) for i in range(4)]
    return truth, cues


def _view(truth, i):
    """The truth restricted to image i (same identity)."""
    from dataclasses import replace

    sel = slice(i, i + 1)
    return replace(truth, expression=truth.expression[sel], eyelids=truth.eyelids[sel], rotations=truth.rotations[sel],
                   R_head=truth.R_head[sel], t_head=truth.t_head[sel], intrinsics=truth.intrinsics[sel],
                   loss=truth.loss[sel], valid=truth.valid[sel])


def test_shared_identity_beats_every_single_view(synthetic_model, four_views):
    truth, cues = four_views
    m = synthetic_model
    cfg = FitConfig(steps=STEPS)
    joint = fit_images(m, cues, cfg)
    singles = [fit_images(m, [c], cfg) for c in cues]
    joint_err = M.neutral_error_mm(m, joint, truth)
    single_err = [M.neutral_error_mm(m, s, truth) for s in singles]
    assert joint_err < min(single_err), (joint_err, single_err)
    # every image keeps its own camera and pose, and each is fitted about as well as alone
    assert not joint.shared_camera and len(np.unique(joint.intrinsics[:, 0])) == 4
    with pytest.raises(ValueError, match="different cameras"):
        joint.fx
    posed_joint = M.posed_error_mm(m, joint, truth)
    posed_single = np.array([M.posed_error_mm(m, s, _view(truth, i))[0] for i, s in enumerate(singles)])
    assert posed_joint.mean() < 1.1 * posed_single.mean(), (posed_joint, posed_single)
    assert np.all(M.reprojection_error_px(m, joint, truth) < 2.0)


def test_an_image_without_predictions_is_skipped(synthetic_model, four_views):
    truth, cues = four_views
    fit = fit_images(synthetic_model, [cues[0], None, cues[2]], FitConfig(steps=30, camera_steps=20, lm_iterations=2))
    assert fit.valid.tolist() == [True, False, True] and fit.n_frames == 3
    assert np.all(np.isfinite(fit.expression)) and np.all(np.isfinite(fit.t_head))
