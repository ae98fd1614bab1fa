# SPDX-License-Identifier: GPL-3.0-or-later
"""headcast.fit.gls_step: the GLS Gauss-Newton step after a single-image fit.

Its fast derivatives are checked against finite differences and against a second code path
(forward-mode differentiation of a plain evaluation of the cues); the step itself against
exact cues (it takes a perturbed head most of the way back to the truth and leaves the truth
where it is); the fitting runs it for photos whose normals the noise probe finds biased, and
only then; over several photos jointly, their identity shared."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from headcast.fit import FitConfig, fit_images
from headcast.fit import gls_step as G
from headcast.fit import metrics as M
from headcast.fit import synthetic_cues as sc
from headcast.render import rasterize, vertex_normals

SIZE = 96


@pytest.fixture(scope="module")
def scene(synthetic_model):
    """(truth, exact cues) of one random frame at SIZE px."""
    rng = np.random.default_rng(3)
    truth = sc.random_truth(synthetic_model, rng, 1, SIZE)
    return truth, sc.render_cues(synthetic_model, truth, 0).cues


def test_normals_jacobian_matches_central_differences(synthetic_model):
    verts = synthetic_model.v_template.astype(np.float64)
    faces = synthetic_model.faces
    jac, vn = G.normals_jacobian(verts, faces)
    t_faces = torch.as_tensor(faces)
    ref = vertex_normals(torch.as_tensor(verts)[None], t_faces, backend="torch")[0].numpy()
    np.testing.assert_allclose(vn, ref, atol=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(3):
        dv = rng.normal(size=verts.shape)
        eps = 1e-7
        hi = vertex_normals(torch.as_tensor(verts + eps * dv)[None], t_faces, backend="torch")[0].numpy()
        lo = vertex_normals(torch.as_tensor(verts - eps * dv)[None], t_faces, backend="torch")[0].numpy()
        fd = (hi - lo) / (2 * eps)
        an = (jac @ dv.reshape(-1)).reshape(-1, 3)
        assert np.abs(an - fd).max() < 1e-5 * np.abs(fd).max()


def test_pixel_normal_derivatives_match_central_differences():
    rng = np.random.default_rng(1)
    n = 50
    xy = rng.uniform(0, 20, size=(n, 3, 2))
    depth = rng.uniform(1.0, 2.0, size=(n, 3, 1))
    q = torch.as_tensor(np.concatenate([xy, depth], -1))
    m = torch.as_tensor(rng.normal(size=(n, 3, 3)))
    w = rng.dirichlet(np.ones(3), size=n)
    centres = torch.as_tensor((w[:, :, None] * xy).sum(1))  # inside each triangle
    normal, deriv = G.pixel_normal_derivatives(q, m, centres)
    inputs = torch.cat([q, m], -1)  # [N, 3 corners, 6]
    eps = 1e-6
    for corner in range(3):
        for k in range(6):
            bump = torch.zeros_like(inputs)
            bump[:, corner, k] = eps
            hi = G.pixel_normal_derivatives((inputs + bump)[..., :3], (inputs + bump)[..., 3:], centres)[0]
            lo = G.pixel_normal_derivatives((inputs - bump)[..., :3], (inputs - bump)[..., 3:], centres)[0]
            fd = (hi - lo) / (2 * eps)
            assert torch.allclose(deriv[:, :, corner, k], fd, atol=1e-6 * float(fd.abs().max()) + 1e-9)
    # the barycentrics are the renderer's: the same normal as the unit barycentric mean
    bary = G.perspective_barycentrics(q[:, :, :3].reshape(1, -1, 3), torch.arange(3 * n).view(n, 3), centres)[0]
    ref = (bary[..., None] * m).sum(1)
    assert torch.allclose(normal, ref / ref.norm(dim=-1, keepdim=True), atol=1e-12)


def test_barycentrics_match_the_rasterizer(synthetic_model, scene):
    truth, cues = scene
    lin = G.LinearisedFit(synthetic_model, truth, cues, FitConfig())
    with torch.no_grad():
        _, _, screen = lin._posed(torch.zeros(1, lin.layout.dim, dtype=torch.float64))
    raster = rasterize(screen, lin.head.faces, lin.size, cull_backfaces=True)
    bary = G.perspective_barycentrics(screen, lin.corners, lin.centres)[0]
    assert torch.allclose(bary, raster.pixel_bary.detach().double(), atol=1e-9)


def test_fast_jacobian_matches_forward_mode_of_the_plain_evaluation(synthetic_model, scene):
    truth, cues = scene
    lin = G.LinearisedFit(synthetic_model, truth, cues, FitConfig())
    s = lin.layout.slices
    cols = [s["shape"].start, s["shape"].start + 7, s["expr"].start + 3, s["joints"].start, s["joints"].start + 4,
            s["R"].start + 1, s["t"].start + 2, s["logf"].start, s["pp"].start + 1]
    if lin.layout.slices["eyelids"].stop > lin.layout.slices["eyelids"].start:
        cols.append(s["eyelids"].start)
    n0, jn, l0, jl = lin.jacobian_fast()
    r0, rn, q0, ql = lin.jacobian(columns=cols)
    assert len(n0) > 500 and len(l0) > 20
    np.testing.assert_allclose(n0, r0, atol=1e-12)
    np.testing.assert_allclose(l0, q0, atol=1e-9)
    for k in cols:
        scale_n, scale_l = np.abs(rn[:, :, k]).max(), np.abs(ql[:, :, k]).max()
        assert scale_n > 0
        assert np.abs(jn[:, :, k] - rn[:, :, k]).max() < 1e-4 * scale_n, k
        assert np.abs(jl[:, :, k] - ql[:, :, k]).max() < 1e-6 * scale_l + 1e-9, k


def test_gaussian_grid_basis_reproduces_the_kernel():
    rng = np.random.default_rng(2)
    pts = rng.uniform(40, 200, size=(300, 2))
    phi = G.gaussian_grid_basis(pts, 10.0, 256, spacing=10.0, reach=3.5)
    approx = (phi @ phi.T).toarray()
    d2 = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    exact = np.exp(-d2 / (4 * 10.0 ** 2))
    assert np.abs(approx - exact).max() < 0.03


def _perturbed(model, truth, lin):
    d = np.zeros(lin.layout.dim)
    s = lin.layout.slices
    d[s["shape"].start + np.array([0, 2, 5])] = [0.24, -0.18, 0.15]
    d[s["expr"].start + 1] = 0.12
    d[s["R"]] = [0.003, -0.0045, 0.0]
    return G.moved_result(truth, lin.layout, d)


def test_steps_with_exact_cues_agree_and_pull_back(synthetic_model, scene):
    truth, cues = scene
    cfg = FitConfig(gls_step_fraction=1.0, gls_normal_blur_px=0.0)  # exact cues are not blurred
    lin = G.LinearisedFit(synthetic_model, truth, cues, cfg)
    moved = _perturbed(synthetic_model, truth, lin)
    before = float(M.posed_error_mm(synthetic_model, moved, truth)[0])
    assert before > 0.5
    # Gauss-Newton's end point hardly depends on where it starts: from the perturbed head and
    # from the truth the whole steps end close together (the residual's sign, the Jacobian and
    # the solve agree; what is left is the cues' curvature over the perturbation)
    end_moved, info = G.refine(synthetic_model, moved, cues, cfg)
    end_truth, _ = G.refine(synthetic_model, truth, cues, cfg)
    assert float(M.posed_error_mm(synthetic_model, end_moved, end_truth)[0]) < 0.3 * before
    assert info["normal_pixels"] > 500 and info["landmarks"] > 20
    # the default half step halves the perturbation (the identity prior pulls too)
    half, _ = G.refine(synthetic_model, moved, cues, FitConfig(gls_normal_blur_px=0.0))
    assert float(M.posed_error_mm(synthetic_model, half, truth)[0]) < 0.5 * before
    # with a noise model as exact as the cues, the truth stays where it is
    exact = cfg.with_(gls_normal_bias_deg=0.05, gls_normal_noise_deg=0.05, gls_landmark_min_px=0.01)
    stay, _ = G.refine(synthetic_model, truth, cues, exact)
    assert float(M.posed_error_mm(synthetic_model, stay, truth)[0]) < 0.1 * before
    # a held identity is left as it is; the rest still moves
    held, _ = G.refine(synthetic_model, moved, cues, cfg, held=["shape"])
    np.testing.assert_array_equal(held.shape, moved.shape)
    assert not np.allclose(held.expression, moved.expression)


def test_the_eye_region_is_left_out(synthetic_model, scene):
    truth, cues = scene
    narrow = G.LinearisedFit(synthetic_model, truth, cues, FitConfig(gls_eye_margin_px=0.0))
    wide = G.LinearisedFit(synthetic_model, truth, cues, FitConfig())
    assert set(wide.normal_rows.tolist()) < set(narrow.normal_rows.tolist())
    # no pixel of the normal term shows an eyeball
    eyeballs = np.concatenate([synthetic_model.masks[k] for k in ("left_eyeball", "right_eyeball")])
    shown = narrow.corners[narrow.normal_rows].numpy()
    assert not np.isin(shown, eyeballs).any()


def test_the_fitting_steps_only_for_a_photo_with_biased_normals(synthetic_model):
    rng = np.random.default_rng(5)
    truth = sc.random_truth(synthetic_model, rng, 1, SIZE)
    frame = sc.render_cues(synthetic_model, truth, 0)
    noisy = sc.corrupt(frame, rng, sc.REALISTIC)
    cfg = FitConfig(steps=120)
    stages = []
    fit = fit_images(synthetic_model, [noisy], cfg, progress=lambda stage, *rest: stages.append(stage))
    assert fit.info["gls_step"]["fraction"] == 0.5
    assert stages[-1] == "refine" and stages.count("refine") == 1
    plain = fit_images(synthetic_model, [noisy], cfg.with_(gls_step_fraction=0.0))
    assert "gls_step" not in plain.info
    # the step moved the fit: half of the full step from the same fit
    assert not np.allclose(fit.shape, plain.shape)
    exact = fit_images(synthetic_model, [frame.cues], cfg)
    assert "gls_step" not in exact.info
    # several photos of one person: one joint step, the identity shared
    other = sc.corrupt(sc.render_cues(synthetic_model, truth, 0), np.random.default_rng(6), sc.REALISTIC)
    two = fit_images(synthetic_model, [noisy, other], cfg.with_(steps=40))
    assert two.info["gls_step"]["images"] == 2


def test_no_step_without_normals_to_weigh(synthetic_model, scene):
    truth, cues = scene
    blind = replace(cues, normal_mask=np.zeros_like(cues.normal_mask))
    same, info = G.refine(synthetic_model, truth, blind, FitConfig())
    assert same is truth and info["skipped"] and info["fraction"] == 0.0


def test_a_joint_step_over_two_views_shares_the_identity(synthetic_model):
    """Two frames of one person (another expression and pose each): the joint step moves the
    one identity, each frame's own parameters, and agrees with the single-frame step when the
    second frame's cues are absent."""
    rng = np.random.default_rng(7)
    truth = sc.random_truth(synthetic_model, rng, 2, SIZE)
    cues = [sc.render_cues(synthetic_model, truth, i).cues for i in range(2)]
    cfg = FitConfig(gls_normal_blur_px=0.0)
    lay = G.StepLayout.of(truth)
    d = np.zeros(lay.dim)
    d[lay.slices["shape"].start + np.array([0, 3])] = [0.3, -0.2]
    moved = G.moved_result(truth, lay, d, frame=0)  # the identity is shared: both frames move
    before = float(np.mean(M.posed_error_mm(synthetic_model, moved, truth)))
    both, info = G.refine(synthetic_model, moved, cues, cfg)
    assert info["images"] == 2
    after = float(np.mean(M.posed_error_mm(synthetic_model, both, truth)))
    assert after < 0.6 * before, (before, after)
    # each frame's own parameters moved on their own
    assert not np.allclose(both.expression[0] - moved.expression[0], both.expression[1] - moved.expression[1])
    one, info1 = G.refine(synthetic_model, moved, [cues[0], None], cfg)
    assert info1["images"] == 1
    first = replace(moved, expression=moved.expression[:1], rotations=moved.rotations[:1], R_head=moved.R_head[:1],
                    t_head=moved.t_head[:1], intrinsics=moved.intrinsics[:1], loss=moved.loss[:1],
                    valid=moved.valid[:1], eyelids=None if moved.eyelids is None else moved.eyelids[:1])
    ref, _ = G.refine(synthetic_model, first, cues[0], cfg)
    np.testing.assert_allclose(one.shape, ref.shape, atol=1e-9)
    np.testing.assert_array_equal(one.expression[1], moved.expression[1])
