# SPDX-License-Identifier: GPL-3.0-or-later
"""The fitting's building blocks: cue validation, the fast forward pass against HeadLayer,
landmark embeddings, the camera parameterisation, and the row-wise Adam."""
import numpy as np
import pytest
import torch

from headcast.fit import CueError, FitConfig, FrameCues, LandmarkTarget, validate_cues
from headcast.fit.head import FitHead
from headcast.fit.params import Params, RowAdam, intrinsics_from
from headcast.flame import HeadLayer, SurfacePoints, axis_angle_to_matrix


# ---- cues -------------------------------------------------------------------------------

def test_bad_cues_name_the_frame_and_the_cue():
    size = (8, 10)
    with pytest.raises(CueError, match=r"frame 3: uv has shape \(8, 8, 2\), expected \(8, 10, 2\)"):
        validate_cues(FrameCues(uv=np.zeros((8, 8, 2))), size, "frame 3")
    with pytest.raises(CueError, match="normals are not unit vectors"):
        validate_cues(FrameCues(normals=np.full((8, 10, 3), 0.5)), size, "img")
    with pytest.raises(CueError, match="NaN"):
        bad = np.zeros((8, 10, 2))
        bad[1, 1] = np.nan
        validate_cues(FrameCues(uv=bad), size)
    with pytest.raises(CueError, match="face_mask values"):
        validate_cues(FrameCues(face_mask=np.full(size, 2.0)), size)
    with pytest.raises(CueError, match="uv_mask given without uv"):
        validate_cues(FrameCues(uv_mask=np.ones(size, bool)), size)
    with pytest.raises(CueError, match=r"landmarks\[0\]: points have shape"):
        validate_cues(FrameCues(landmarks=[LandmarkTarget(np.zeros((4, 3)))]), size)
    with pytest.raises(CueError, match="unknown landmark term"):
        validate_cues(FrameCues(landmarks=[LandmarkTarget(np.zeros((4, 2)), term="ears")]), size)
    with pytest.raises(CueError, match="lid_pairs"):
        validate_cues(FrameCues(landmarks=[LandmarkTarget(np.zeros((4, 2)), lid_pairs=[[0, 9]])]), size)


def test_missing_landmark_points_get_zero_weight():
    pts = np.array([[1.0, 2.0], [np.nan, 3.0], [4.0, 5.0]])
    out = validate_cues(FrameCues(landmarks=[LandmarkTarget(pts, weights=[1.0, 1.0, 0.5])]), (8, 8))
    t = out.landmarks[0]
    assert t.weights.tolist() == [1.0, 0.0, 0.5] and np.all(np.isfinite(t.points))
    normals = np.zeros((8, 8, 3))
    normals[..., 2] = 1.0
    normals[0, 0] = 0.0  # no prediction at this pixel
    out = validate_cues(FrameCues(normals=normals), (8, 8))
    assert not out.normal_mask[0, 0] and out.normal_mask.sum() == 63


# ---- forward pass and embeddings --------------------------------------------------------------

def test_fast_forward_equals_head_layer(synthetic_model):
    m = synthetic_model
    head = FitHead(m, dtype=torch.float64)
    rng = np.random.default_rng(0)
    shape = torch.tensor(rng.normal(size=300))
    expr = torch.tensor(rng.normal(size=(3, 100)))
    lids = torch.tensor(rng.uniform(size=(3, 2)))
    rot = axis_angle_to_matrix(torch.tensor(rng.normal(size=(3, 5, 3)) * 0.3))
    verts, noneck = head.forward(shape, expr, lids, rot, want_noneck=True)
    layer = HeadLayer(m, dtype=torch.float64)
    ref = layer(shape.expand(3, -1), expr, rot, None, lids).vertices
    np.testing.assert_allclose(verts.numpy(), ref.numpy(), atol=1e-12)
    rot_nn = rot.clone()
    rot_nn[:, m.joint_names.index("neck")] = torch.eye(3, dtype=torch.float64)
    np.testing.assert_allclose(noneck.numpy(), layer(shape.expand(3, -1), expr, rot_nn, None, lids).vertices.numpy(),
                               atol=1e-12)


def test_landmark_embeddings_resolve(synthetic_model):
    m = synthetic_model
    head = FitHead(m, dtype=torch.float64)
    # iris: the front-most eyeball vertex of each eye, left (+x) first
    for k, name in enumerate(("left_eyeball", "right_eyeball")):
        ids = m.masks[name]
        assert head.iris_ids[k] == ids[np.argmax(m.v_template[ids, 2])]
    assert m.v_template[head.iris_ids[0], 0] > 0 > m.v_template[head.iris_ids[1], 0]
    kind, data, keep = head.resolve_landmarks("ibug68", np.array([36, 45, 70]), 3, "t")
    assert kind == "ibug68" and keep.tolist() == [True, True, False]
    # a surface embedding keyed by detector ids: unknown ids are dropped
    sp = SurfacePoints(landmark_ids=np.array([10, 20, 30]), faces=np.array([0, 5, 9]),
                       bary=np.tile([[0.2, 0.3, 0.5]], (3, 1)))
    kind, (faces, bary), keep = head.resolve_landmarks(sp, np.array([30, 99, 10]), 3, "t")
    assert kind == "surface" and keep.tolist() == [True, False, True] and faces[[0, 2]].tolist() == [9, 0]
    v = torch.tensor(m.v_template)[None]
    pts = head.landmark_points(kind, (faces, bary), v, None)[0].numpy()
    want = (bary[0][:, None] * m.v_template[m.faces[9]]).sum(0)
    np.testing.assert_allclose(pts[0], want, atol=1e-12)
    assert head.resolve_landmarks("mediapipe", None, 3, "t") is None  # the model has no such embedding
    kind, vid, _ = head.resolve_landmarks(np.array([3, 4]), None, 2, "t")
    assert kind == "vertex" and vid.tolist() == [3, 4]
    with pytest.raises(CueError, match="unknown landmark embedding"):
        head.resolve_landmarks("wflw", None, 2, "t")
    with pytest.raises(CueError, match="vertices outside"):
        head.resolve_landmarks(np.array([0, 10 ** 7]), None, 2, "t")


def test_model_without_assets_switches_terms_off(synthetic_model):
    """No uv layout, no masks, no landmark embedding: the head still builds, with every
    asset-dependent term off."""
    from dataclasses import replace

    bare = replace(synthetic_model, uv=None, faces_uv=None, masks={}, landmarks=None, eyelids=None)
    head = FitHead(bare, dtype=torch.float32)
    assert not head.has_uv and len(head.uv_vertex_ids) == 0 and head.iris_ids is None
    assert not head.has_eye_mask and head.sil_face.sum() == bare.faces.shape[0]
    assert head.resolve_landmarks("ibug68", None, 68, "t") is None
    assert head.resolve_landmarks("iris", None, 2, "t") is None


# ---- camera and parameters --------------------------------------------------------------

def test_intrinsics_parameterisation():
    fx, fy, cx, cy = intrinsics_from(torch.tensor(np.log(4.0)), torch.tensor([0.1, -0.2]), (100, 200))
    assert float(fx) == pytest.approx(800.0) and float(fy) == pytest.approx(800.0)
    assert float(cx) == pytest.approx(110.0) and float(cy) == pytest.approx(40.0)


def test_dolly_zoom_keeps_the_image_size(synthetic_model):
    """Changing the focal parameter scales the metric depth with it: a point at the head's
    depth projects to the same pixel, only the perspective changes."""
    head = FitHead(synthetic_model, 300, 100, torch.float64)
    p = Params(head, 2, init_focal=4.0, init_distance=1.2)
    rows = torch.arange(2)
    with torch.no_grad():
        p.t[:, 0] = 0.02
    before = p.translation(rows).detach().clone()
    fx0 = p.intrinsics(rows, (256, 256))[0].detach()
    with torch.no_grad():
        p.focal += 0.3
    after = p.translation(rows).detach()
    fx1 = p.intrinsics(rows, (256, 256))[0].detach()
    np.testing.assert_allclose((fx1 * after[:, 0] / after[:, 2]).numpy(), (fx0 * before[:, 0] / before[:, 2]).numpy())
    np.testing.assert_allclose((after[:, 2] / before[:, 2]).numpy(), np.exp(0.3))
    # setting the focal directly keeps the metric translation instead
    p.set_focal(0, float(np.log(5.0)))
    np.testing.assert_allclose(p.translation(rows).detach().numpy(), after.detach().numpy())
    p.set_translation(1, [0.0, 0.01, 0.9])
    np.testing.assert_allclose(p.translation(rows)[1].detach().numpy(), [0.0, 0.01, 0.9])


def test_row_adam_matches_adam_and_leaves_other_rows_alone():
    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    s = torch.randn(2, dtype=torch.float64, requires_grad=True)
    ref_x = x.detach().clone()[[1, 3]].requires_grad_(True)
    ref_s = s.detach().clone().requires_grad_(True)
    opt = RowAdam({"x": x, "s": s}, ("x",), {"x": 0.05, "s": 0.02})
    ref = torch.optim.Adam([{"params": [ref_x], "lr": 0.05}, {"params": [ref_s], "lr": 0.02}])
    untouched = x.detach()[[0, 2]].clone()
    rows = torch.tensor([1, 3])
    for k in range(5):
        opt.zero_grad()
        ref.zero_grad()
        ((x[rows] - 1.0) ** 2 * (k + 1)).sum().backward(retain_graph=True)
        (s ** 3).sum().backward()
        ((ref_x - 1.0) ** 2 * (k + 1)).sum().backward()
        (ref_s ** 3).sum().backward()
        opt.step(rows, {"x", "s"})
        ref.step()
    np.testing.assert_allclose(x.detach()[[1, 3]].numpy(), ref_x.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(s.detach().numpy(), ref_s.detach().numpy(), rtol=1e-12)
    np.testing.assert_array_equal(x.detach()[[0, 2]].numpy(), untouched.numpy())
    assert opt.count["x"].tolist() == [0, 5, 0, 5]
    opt.copy_row_state(3, 0)
    assert opt.count["x"][0] == 5 and torch.equal(opt.m["x"][0], opt.m["x"][3])


def test_coefficient_bounds_are_enforced(synthetic_model):
    from dataclasses import replace

    m = replace(synthetic_model, expr_bounds=np.tile([[0.0, 1.0]], (100, 1)),
                shape_bounds=np.tile([[-2.0, 2.0]], (300, 1)))
    p = Params(FitHead(m, dtype=torch.float64), 1)
    with torch.no_grad():
        p.expr[0, :3] = torch.tensor([-0.5, 0.4, 1.7], dtype=torch.float64)
        p.shape[:2] = torch.tensor([3.0, -5.0], dtype=torch.float64)
    p.clamp_bounds()
    assert p.expr[0, :3].tolist() == [0.0, 0.4, 1.0] and p.shape[:2].tolist() == [2.0, -2.0]


def test_config_copies():
    cfg = FitConfig()
    other = cfg.with_(steps=7)
    assert other.steps == 7 and cfg.steps == 500
    assert cfg.landmark_weight("eyes") > 0 and cfg.landmark_weight("mouth") == 0
    assert cfg.landmark_weight("mouth", dense=False) > 0
