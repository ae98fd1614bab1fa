# SPDX-License-Identifier: GPL-3.0-or-later
"""Landmarks: static barycentric points and the yaw-dependent jaw contour."""

import numpy as np
import pytest
import torch

from headcast.flame import HeadLayer, axis_angle_to_matrix


def _expected_row(yaw_deg):
    """DECA's rule written out: a = round(min(-yaw, 39)); a >= 0 -> a; a < -39 -> 78; else 39 - a."""
    a = int(round(min(-yaw_deg, 39.0)))
    if a >= 0:
        return a
    return 78 if a < -39 else 39 - a


def _yaw(batch_deg, joint=0):
    aa = torch.zeros(len(batch_deg), 5, 3, dtype=torch.float64)
    aa[:, joint, 1] = torch.tensor(np.radians(batch_deg))
    return axis_angle_to_matrix(aa)


@pytest.mark.parametrize("joint", [0, 1])
def test_contour_row_selection_follows_yaw(synthetic_model, joint):
    layer = HeadLayer(synthetic_model, dtype=torch.float64)
    yaws = [-60.0, -39.4, -25.0, -10.2, -0.3, 0.0, 0.4, 12.6, 30.0, 38.6, 39.6, 50.0, 75.0]
    rows = layer.contour_rows(_yaw(yaws, joint)).tolist()
    assert rows == [_expected_row(y) for y in yaws]
    # a pitch or roll alone does not change the row
    aa = torch.zeros(2, 5, 3, dtype=torch.float64)
    aa[0, 0, 0], aa[1, 0, 2] = 0.3, -0.3
    assert layer.contour_rows(axis_angle_to_matrix(aa)).tolist() == [0, 0]


def test_landmarks_equal_barycentric_sums(synthetic_model):
    m = synthetic_model
    layer = HeadLayer(m, dtype=torch.float64)
    rng = np.random.default_rng(5)
    rot = _yaw([17.0, -28.0])
    out = layer(torch.tensor(rng.normal(size=(2, 300))), torch.tensor(rng.normal(size=(2, 100))), rot)
    lm = layer.landmarks68(out.vertices, rot).numpy()
    v = out.vertices.numpy()
    for b, yaw in enumerate((17.0, -28.0)):
        row = _expected_row(yaw)
        emb = m.landmarks
        faces = np.concatenate([emb.dynamic_faces[row], emb.static_faces])
        bary = np.concatenate([emb.dynamic_bary[row], emb.static_bary])
        ref = np.array([sum(bary[i, k] * v[b, m.faces[faces[i], k]] for k in range(3)) for i in range(68)])
        np.testing.assert_allclose(lm[b], ref, atol=1e-12)


@pytest.mark.parametrize("yaw", [-35.0, -20.0, 0.0, 20.0, 35.0])
def test_contour_points_lie_on_the_jaw_silhouette(synthetic_model, yaw):
    """Seen from the front after turning the head, the far side's contour sits on the outline.

    (On the side turning toward the camera the contour stays on the jaw line, inside the
    head's outline, as in FLAME's own dynamic embedding.)"""
    m = synthetic_model
    layer = HeadLayer(m, dtype=torch.float64)
    rot = _yaw([yaw])
    v = layer(None, torch.zeros(1, 1, dtype=torch.float64), rot).vertices
    lm = layer.landmarks68(v, rot)[0].numpy()
    v = v[0].numpy()
    eyes = np.concatenate([m.masks["left_eyeball"], m.masks["right_eyeball"], m.masks["left_ear"], m.masks["right_ear"]])
    skin = np.setdiff1d(np.arange(m.n_vertices), eyes)
    # the visible outline of the lower face: convex hull of the projected skin between the chin
    # and eye level (the neck below the chin and the ears excluded)
    from scipy.spatial import ConvexHull
    chin_y = lm[8, 1]
    region = skin[(v[skin, 2] > -0.03) & (v[skin, 1] > chin_y - 0.001) & (v[skin, 1] < lm[0, 1] + 0.01)]
    hull = ConvexHull(v[region, :2])
    far_side = (list(range(0, 6)) if yaw <= 0 else []) + (list(range(11, 17)) if yaw >= 0 else [])
    for k in far_side + [8]:
        signed = (hull.equations[:, :2] @ lm[k, :2] + hull.equations[:, 2]).max()
        assert signed > -0.006, f"contour point {k} lies {-signed * 1000:.1f} mm inside the outline"
    # the contour runs from the subject's right (x < 0) under the chin to the left
    assert lm[0, 0] < lm[8, 0] < lm[16, 0]
    assert lm[8, 1] < lm[0, 1] and lm[8, 1] < lm[16, 1]


def test_static_landmarks_are_where_a_face_has_them(synthetic_model):
    m = synthetic_model
    layer = HeadLayer(m, dtype=torch.float64)
    rot = torch.eye(3, dtype=torch.float64).repeat(1, 5, 1, 1)
    lm = layer.landmarks68(layer(None, torch.zeros(1, 1, dtype=torch.float64), rot).vertices, rot)[0].numpy()
    eye_r, eye_l = lm[36:42].mean(0), lm[42:48].mean(0)
    centre_l = m.v_template[m.masks["left_eyeball"]].mean(0)
    assert np.linalg.norm(eye_l[:2] - centre_l[:2]) < 0.006 and eye_l[0] > 0 > eye_r[0]
    assert lm[30, 2] == pytest.approx(lm[:, 2].max(), abs=1e-9), "nose tip is the front-most point"
    assert lm[48, 0] < lm[54, 0] and lm[51, 1] > lm[57, 1]  # mouth corners and lips
    assert lm[17:27, 1].min() > eye_l[1]  # brows above eyes
