# SPDX-License-Identifier: GPL-3.0-or-later
"""scripts/bench_fit_gls.py: the GLS Gauss-Newton step undoes most of a perturbation of the head
when the normals and landmarks are exact (its Jacobians, residual signs and solve agree), and
stays put at the truth.

The uv correspondences are left out here: with exact cues at 96² their own subpixel error
(about 0.12 px rms) is not in the step's covariance, and the directions that the 2-D positions
barely see (depth) take it up (a step from the truth: 0.67 mm)."""
from dataclasses import replace
import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bench_fit  # noqa: E402
import bench_fit_gls as G  # noqa: E402

SIZE = 96


@pytest.fixture(scope="module")
def scene_cues():
    from headcast.fit import synthetic_cues as sc

    bench = bench_fit.Bench(argparse.Namespace(threads=2, override="", steps=20, size=SIZE))
    truth, frames, rng = bench.scene(3)
    return bench.model, truth, sc.corrupt(frames[0], rng, None)


def test_a_step_with_exact_cues_returns_a_perturbed_head_to_the_truth(scene_cues):
    import bench_fit_bound as BB
    from headcast.fit import metrics as M

    model, truth, cues = scene_cues
    head = BB.fitting_head(model, truth)
    at_truth = BB.Scene(model, truth, head)
    d = np.zeros(at_truth.dim)
    d[at_truth.slices["shape"].start + np.array([0, 2, 5])] = [0.24, -0.18, 0.15]
    d[at_truth.slices["expr"].start + 1] = 0.12
    d[at_truth.slices["R"]] = [0.003, -0.0045, 0.0]
    moved = at_truth.result(d)
    before = float(M.posed_error_mm(model, moved, truth)[0])
    assert before > 0.5
    cues = replace(cues, uv=None)

    scene, delta = G.gls_step(model, moved, cues, blur_px=0.0, prior_pull=False)
    after = float(M.posed_error_mm(model, scene.result(delta), truth)[0])
    assert after < 0.5 * before  # measured: 0.70 -> 0.26 mm
    # the step goes back along the perturbation: the perturbed identity coefficients move against it
    back = delta[scene.slices["shape"]][[0, 2, 5]]
    assert np.all(np.sign(back) == -np.sign(d[at_truth.slices["shape"].start + np.array([0, 2, 5])]))

    scene, delta = G.gls_step(model, truth, cues, blur_px=0.0, prior_pull=False)
    assert float(M.posed_error_mm(model, scene.result(delta), truth)[0]) < 0.01


def test_eye_pixels_cover_the_eyes_of_the_render(scene_cues):
    import bench_fit_bound as BB

    model, truth, cues = scene_cues
    head = BB.fitting_head(model, truth)
    scene = BB.Scene(model, truth, head)
    face_id = scene.render(np.zeros(scene.dim))["face_id"]
    eyes = G.eye_pixels(model, head, face_id)
    covered = face_id >= 0
    # a part of the face, not all of it, and it holds the projected eyeball centres
    assert 0.01 < eyes[covered].mean() < 0.5
    pts = truth.project(truth.vertices(model)[0][model.masks["left_eyeball"]].mean(0, keepdims=True), 0)[0]
    assert eyes[int(pts[1]), int(pts[0])]
