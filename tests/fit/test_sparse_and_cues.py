# SPDX-License-Identifier: GPL-3.0-or-later
"""The Levenberg-Marquardt sparse solve against the energy it shortcuts, coarse cues, the
synthetic cue renderer, and the result file."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from headcast.fit import FitConfig, load_fit_npz
from headcast.fit import synthetic_cues as sc
from headcast.fit.cues import downsample_cues
from headcast.fit.energy import EnergyOptions, prepare_frame
from headcast.fit.solver import Fitter
from headcast.fit.sparse_solve import SparseProblem, levenberg_marquardt
from headcast.render import project_points, rasterize, vertex_visibility

SIZE = 96
BLOCKS = ["shape", "expr", "eyelids", "joints", "R", "t"]


@pytest.fixture(scope="module")
def scene(synthetic_model):
    rng = np.random.default_rng(41)
    truth = sc.random_truth(synthetic_model, rng, 1, SIZE)
    return truth, sc.render_cues(synthetic_model, truth, 0)


def _fitter(model, truth, cfg, perturb=0.0):
    f = Fitter(model, cfg.with_(dtype="float64"), (SIZE, SIZE), 1)
    f.load_shared(truth.shape, truth.intrinsics[0])
    f.load_frame_fit(truth.frame(0))
    if perturb:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            f.params.expr[0, :10] += perturb * torch.randn(10, generator=g, dtype=torch.float64)
            f.params.shape[:10] += perturb * torch.randn(10, generator=g, dtype=torch.float64)
            f.params.t[0, 0] += 0.002
    return f


def test_sparse_residuals_equal_the_sparse_energy(synthetic_model, scene):
    """Sum of squared LM residuals == the energy's sparse terms plus priors (two code paths:
    full-mesh forward + renderer visibility vs posed vertex subset + functional kinematics)."""
    truth, frame = scene
    cfg = FitConfig(w_uv_dense=0.0, w_normal=0.0, w_silhouette=0.0, w_principal_point=0.0,
                    w_vertex_normal=150.0, lm_vertex_normal=150.0,
                    landmark_weights={"eyes": 1000.0, "iris": 1e4, "mouth": 500.0})
    f = _fitter(synthetic_model, truth, cfg, perturb=0.4)
    pf = prepare_frame(f.head, frame.cues, f.cfg, (SIZE, SIZE))
    prob = SparseProblem(f, 0, pf, BLOCKS)
    r = prob.residuals(prob.pack())
    with torch.no_grad():
        total, _, terms = f.energy(f.params, [0], [pf], EnergyOptions(dense=False))
    assert set(terms) >= {"uv_vertex", "vertex_normal", "landmarks", "lid", "prior"}
    np.testing.assert_allclose(float(r @ r), float(total), rtol=1e-6)


@pytest.mark.parametrize("blocks", [BLOCKS, BLOCKS[1:]], ids=["with identity", "frame only"])
def test_closed_form_jacobian_matches_forward_mode_autodiff(synthetic_model, scene, blocks):
    """The LM Jacobian (closed form, tangent-space rotation steps) equals ``jacfwd`` of the
    residuals through the retraction, for every block, away from the truth (posed joints and
    expression), with every residual kind present."""
    from torch.func import jacfwd

    truth, frame = scene
    cfg = FitConfig(landmark_weights={"eyes": 1000.0, "iris": 1e4, "mouth": 500.0})
    f = _fitter(synthetic_model, truth, cfg, perturb=0.4)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        f.params.joints[0] += 0.1 * torch.randn(f.params.joints[0].shape, generator=g, dtype=torch.float64)
        f.params.renormalize_rotations()
    pf = prepare_frame(f.head, frame.cues, f.cfg, (SIZE, SIZE))
    prob = SparseProblem(f, 0, pf, list(blocks))
    assert len(prob.vn_ids) and len(prob.corr_ids) and prob.P_sub is not None
    z = prob.pack()
    r, J = prob.linearize(z)
    np.testing.assert_allclose(r.numpy(), prob.residuals(z).numpy(), atol=1e-12)
    ref = jacfwd(lambda d: prob.residuals(prob.retract(z, d)))(torch.zeros(J.shape[1], dtype=torch.float64))
    k = 0
    for b in prob.blocks:  # block by block, so a failure names the block
        n = prob.step_sizes[b]
        np.testing.assert_allclose(J[:, k:k + n].numpy(), ref[:, k:k + n].numpy(), atol=1e-9 * float(ref.abs().max()),
                                   err_msg=b)
        assert float(ref[:, k:k + n].abs().max()) > 0, b
        k += n
    assert k == J.shape[1]


def test_levenberg_marquardt_reduces_the_sparse_cost(synthetic_model, scene):
    truth, frame = scene
    cfg = FitConfig()
    f = _fitter(synthetic_model, truth, cfg, perturb=0.8)
    pf = prepare_frame(f.head, frame.cues, f.cfg, (SIZE, SIZE))
    from headcast.fit import metrics as M

    before = SparseProblem(f, 0, pf, BLOCKS)
    c0 = float((lambda r: r @ r)(before.residuals(before.pack())))
    err0 = M.reprojection_error_px(synthetic_model, f.result(np.ones(1, bool), True), truth)[0]
    cost = levenberg_marquardt(f, 0, pf, 4, BLOCKS)
    assert cost is not None and cost < 0.5 * c0
    err1 = M.reprojection_error_px(synthetic_model, f.result(np.ones(1, bool), True), truth)[0]
    # the perturbation is largely undone; what is left (~0.25 px here, the same after 6
    # iterations) is where the priors at full weight move the sparse optimum off the truth
    assert err1 < 0.35 * err0, (err0, err1)
    assert levenberg_marquardt(f, 0, prepare_frame(f.head, sc.only(frame.cues, "normals"), cfg, (SIZE, SIZE)), 2) is None


def test_downsampled_cues_match_a_coarse_render(synthetic_model):
    """Cues rendered at 128 px and averaged 2x2 agree with cues rendered directly at 64 px."""
    from dataclasses import replace

    rng = np.random.default_rng(5)
    fine = sc.random_truth(synthetic_model, rng, 1, 128)
    coarse = replace(fine, image_size=(64, 64), intrinsics=fine.intrinsics / 2)
    a = downsample_cues(sc.render_cues(synthetic_model, fine, 0).cues, 2)
    b = sc.render_cues(synthetic_model, coarse, 0).cues
    both = a.uv_mask & b.uv_mask
    assert both.sum() > 0.9 * b.uv_mask.sum()
    assert np.median(np.abs(a.uv[both] - b.uv[both])) < 2e-3
    both = a.normal_mask & b.normal_mask
    cos = (a.normals[both] * b.normals[both]).sum(-1)
    assert np.median(cos) > 0.995
    assert np.abs(a.face_mask - b.face_mask).mean() < 0.05
    for ta, tb in zip(a.landmarks, b.landmarks):
        np.testing.assert_allclose(ta.points, tb.points, atol=1e-6)


def test_synthetic_cues_are_consistent_with_the_truth(synthetic_model, scene):
    """At the pixel where a visible vertex projects, the uv map holds (about) the vertex's uv;
    normals are unit; landmarks are the projected embedding; corruption keeps the shapes."""
    truth, frame = scene
    m = synthetic_model
    v = torch.tensor(truth.vertices(m))
    scr = project_points(v, *truth.intrinsics[0])
    vis = vertex_visibility(scr, rasterize(scr, torch.as_tensor(m.faces), (SIZE, SIZE), cull_backfaces=True))[0].numpy()
    face = np.intersect1d(m.masks["face"], np.nonzero(vis)[0])
    face = np.setdiff1d(face, m.masks["eye_region"])
    px = np.floor(scr[0, face, :2].numpy()).astype(int)
    uv = frame.cues.uv[px[:, 1], px[:, 0]]
    want = m.per_vertex_uv()[face]
    ok = frame.cues.uv_mask[px[:, 1], px[:, 0]]
    assert ok.mean() > 0.9
    assert np.median(np.linalg.norm(uv[ok] - want[ok], axis=1)) < 0.01  # within about a pixel of the layout
    n = frame.cues.normals[frame.cues.normal_mask]
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
    iris = [t for t in frame.cues.landmarks if t.term == "iris"][0]
    from headcast.fit.head import FitHead
    ids = FitHead(m).iris_ids
    np.testing.assert_allclose(iris.points, scr[0, ids, :2].numpy(), atol=1e-4)
    bad = sc.corrupt(frame, np.random.default_rng(0))
    assert bad.uv.shape == frame.cues.uv.shape and bad.normals.shape == frame.cues.normals.shape
    assert np.abs(bad.uv - frame.cues.uv)[frame.cues.uv_mask & bad.uv_mask].mean() > 1e-3
    assert [len(t.points) for t in bad.landmarks] == [len(t.points) for t in frame.cues.landmarks]


def test_taking_one_error_out_of_the_corruption_leaves_the_others_as_they_were(scene):
    """The benchmark's ablation: with the same generator, a corruption with one error's size
    at zero gives exactly the realistic corruption's other errors (every error draws its
    random numbers whatever its size)."""
    _, frame = scene
    full = sc.corrupt(frame, np.random.default_rng(3), sc.REALISTIC)

    def without(**change):
        return sc.corrupt(frame, np.random.default_rng(3), replace(sc.REALISTIC, **change))

    def same_landmarks(a, b):
        for ta, tb in zip(a.landmarks, b.landmarks):
            np.testing.assert_array_equal(ta.points, tb.points)
            np.testing.assert_array_equal(ta.weights, tb.weights)

    # no landmark errors: the maps are untouched, the landmarks exact and all present
    clean = without(landmark_noise_px=0.0, landmark_outlier_px=0.0, landmark_drop_frac=0.0)
    for name in ("uv", "uv_mask", "normals", "normal_mask", "face_mask"):
        np.testing.assert_array_equal(getattr(clean, name), getattr(full, name))
    for tc, te in zip(clean.landmarks, frame.cues.landmarks):
        np.testing.assert_allclose(tc.points, te.points, atol=1e-9)
        assert np.all(tc.weights == 1.0)
    # no uv warp: only the uv map changes
    nowarp = without(uv_warp_px=0.0)
    np.testing.assert_array_equal(nowarp.normals, full.normals)
    np.testing.assert_array_equal(nowarp.face_mask, full.face_mask)
    same_landmarks(nowarp, full)
    assert not np.array_equal(nowarp.uv, full.uv)
    # no normal bias: only the normals change
    nobias = without(normal_bias_deg=0.0)
    np.testing.assert_array_equal(nobias.uv, full.uv)
    same_landmarks(nobias, full)
    assert not np.array_equal(nobias.normals, full.normals)
    # no blur of one map: only that map changes, and the other blur is left as it was
    for change, kept, changed in (({"normal_blur_px": 0.0}, "uv", "normals"), ({"uv_blur_px": 0.0}, "normals", "uv")):
        sharp = without(**change)
        np.testing.assert_array_equal(getattr(sharp, kept), getattr(full, kept))
        same_landmarks(sharp, full)
        assert not np.array_equal(getattr(sharp, changed), getattr(full, changed))
    # no blobs: the uv map changes inside them only (a few hundred pixels of the 96^2 crop)
    noblob = without(blob_radius_px=0.0)
    same_landmarks(noblob, full)
    np.testing.assert_array_equal(noblob.uv_mask, full.uv_mask)
    changed = np.any(noblob.uv != full.uv, axis=-1)
    assert 0 < changed.sum() < 0.2 * full.uv_mask.sum()
    # no ragged edges: the masks change, the uv inside both masks does not
    straight = without(mask_edge_px=0.0)
    same_landmarks(straight, full)
    both = straight.uv_mask & full.uv_mask
    np.testing.assert_array_equal(straight.uv[both], full.uv[both])
    assert not np.array_equal(straight.uv_mask, full.uv_mask)


def test_result_file_round_trip(tmp_path, synthetic_model, scene):
    truth, _ = scene
    path = truth.save_npz(tmp_path / "fit.npz")
    back = load_fit_npz(path)
    for key in ("shape", "expression", "eyelids", "rotations", "R_head", "t_head", "intrinsics", "valid"):
        np.testing.assert_array_equal(getattr(back, key), getattr(truth, key))
    assert back.image_size == truth.image_size and back.joint_names == truth.joint_names
    np.testing.assert_allclose(back.vertices(synthetic_model), truth.vertices(synthetic_model))
    # K follows OpenCV (pixel centres at integers): projecting with K gives project() - 0.5
    p = truth.vertices(synthetic_model)[0, :5]
    uvw = p @ truth.K(0).T
    np.testing.assert_allclose(uvw[:, :2] / uvw[:, 2:], truth.project(p, 0) - 0.5)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        load_fit_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a Headcast fit file"):
        load_fit_npz(tmp_path / "other.npz")
