# SPDX-License-Identifier: GPL-3.0-or-later
"""The synthetic FLAME-format model: counts, topology, rig behaviour, determinism."""
from collections import Counter

import numpy as np
import torch

from headcast.flame import HeadLayer, axis_angle_to_matrix
from headcast.flame.synthetic import CENTRE, build_synthetic_model


def _edge_counts(faces):
    edges = Counter()
    for a, b, c in faces:
        for u, v in ((a, b), (b, c), (c, a)):
            edges[(min(u, v), max(u, v))] += 1
    return edges


def _boundary_loops(faces):
    directed = {}
    counts = _edge_counts(faces)
    for a, b, c in faces:
        for u, v in ((a, b), (b, c), (c, a)):
            if counts[(min(u, v), max(u, v))] == 1:
                directed[u] = v
    loops, seen = 0, set()
    for start in directed:
        if start in seen:
            continue
        loops += 1
        v = start
        while v not in seen:
            seen.add(v)
            v = directed[v]
    return loops, len(directed)


def test_advertised_counts(synthetic_model):
    m = synthetic_model
    assert 4500 <= m.n_vertices <= 5500 and 9000 <= m.faces.shape[0] <= 11000
    assert m.shapedirs.shape[2] == 300 and m.exprdirs.shape[2] == 100
    assert m.posedirs.shape == (m.n_vertices, 3, 36)
    assert m.j_regressor.shape == (5, m.n_vertices) and m.weights.shape == (m.n_vertices, 5)
    assert m.parents.tolist() == [-1, 0, 1, 1, 1]
    np.testing.assert_allclose(m.weights.sum(1), 1.0, atol=1e-12)
    assert (m.weights >= 0).all()
    assert m.uv.shape[0] > m.n_vertices and (m.uv >= 0).all() and (m.uv <= 1).all()
    extent = m.v_template.max(0) - m.v_template.min(0)
    assert 0.15 < extent[0] < 0.25 and 0.25 < extent[1] < 0.4 and 0.18 < extent[2] < 0.26  # FLAME-sized, metres
    assert len(m.masks["left_eyeball"]) == len(m.masks["right_eyeball"])


def test_eyeballs_are_watertight_and_head_has_neck_and_mouth_openings(synthetic_model):
    m = synthetic_model
    for side in ("left_eyeball", "right_eyeball"):
        ids = set(m.masks[side].tolist())
        faces = m.faces[np.isin(m.faces, list(ids)).all(axis=1)]
        assert all(c == 2 for c in _edge_counts(faces).values()), side
        n_v, n_e, n_f = len(ids), len(_edge_counts(faces)), len(faces)
        assert n_v - n_e + n_f == 2, "eyeball is a topological sphere"
        centre = m.v_template[list(ids)].mean(0)
        tri = m.v_template[faces] - centre
        assert np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() > 0, "faces point outward"
    eyes = np.concatenate([m.masks["left_eyeball"], m.masks["right_eyeball"]])
    skin = m.faces[~np.isin(m.faces, eyes).any(axis=1)]
    counts = _edge_counts(skin)
    assert max(counts.values()) == 2, "skin is manifold"
    loops, n_boundary = _boundary_loops(skin)
    assert loops == 2, "exactly two openings: the neck cut and the mouth slit"
    boundary = set(m.masks["boundary"].tolist())
    assert boundary <= {v for e, c in counts.items() if c == 1 for v in e}


def test_normals_point_outward(synthetic_model):
    m = synthetic_model
    from headcast.flame.synthetic import _vertex_normals_np
    n = _vertex_normals_np(m.v_template, m.faces)
    eyes = np.concatenate([m.masks["left_eyeball"], m.masks["right_eyeball"]])
    skin = np.setdiff1d(np.arange(m.n_vertices), eyes)
    outward = (n[skin] * (m.v_template[skin] - CENTRE)).sum(1) > 0
    assert outward.mean() > 0.99


def test_jaw_opens_the_mouth_and_eyes_rotate_rigidly(synthetic_model):
    m = synthetic_model
    layer = HeadLayer(m, dtype=torch.float64)
    lm_rest = layer.landmarks68(layer(None, torch.zeros(1, 1, dtype=torch.float64), torch.eye(3, dtype=torch.float64).repeat(1, 5, 1, 1)).vertices,
                                torch.eye(3, dtype=torch.float64).repeat(1, 5, 1, 1))
    aa = torch.zeros(1, 5, 3, dtype=torch.float64)
    aa[0, 2, 0] = 0.3  # open the jaw
    aa[0, 3, 1] = 0.4  # turn the left eye
    rot = axis_angle_to_matrix(aa)
    out = layer(None, torch.zeros(1, 1, dtype=torch.float64), rot)
    lm = layer.landmarks68(out.vertices, rot)[0].numpy()
    gap_rest = (lm_rest[0, 62] - lm_rest[0, 66]).numpy()[1]
    gap_open = lm[62, 1] - lm[66, 1]  # inner upper lip minus inner lower lip (y up)
    assert gap_rest < 0.004 and gap_open > 0.015, (gap_rest, gap_open)
    # chin moves down and back, the forehead stays put
    v0, v1 = m.v_template, out.vertices[0].numpy()
    chin = np.argmin(np.linalg.norm(v0 - [0.0, -0.09, 0.065], axis=1))
    assert v1[chin, 1] < v0[chin, 1] - 0.008
    forehead = m.masks["forehead"]
    np.testing.assert_allclose(v1[forehead], v0[forehead], atol=1e-9)
    # the left eyeball keeps its shape (rigid) and its centre
    ids = m.masks["left_eyeball"]
    d0 = np.linalg.norm(v0[ids][:, None] - v0[ids][None], axis=-1)
    d1 = np.linalg.norm(v1[ids][:, None] - v1[ids][None], axis=-1)
    np.testing.assert_allclose(d1, d0, atol=1e-9)
    np.testing.assert_allclose(v1[ids].mean(0), v0[ids].mean(0), atol=1e-9)
    assert np.abs(v1[ids] - v0[ids]).max() > 0.003


def test_identity_modes_are_smooth_and_decaying_expression_is_local(synthetic_model):
    m = synthetic_model
    eyes = np.concatenate([m.masks["left_eyeball"], m.masks["right_eyeball"]])
    skin = np.setdiff1d(np.arange(m.n_vertices), eyes)
    norms = np.linalg.norm(m.shapedirs[skin], axis=(0, 1))
    assert norms[0] > 100 * norms[-1] and (np.diff(norms) < 0).all(), "variance decays mode by mode"
    gram = np.einsum("vck,vcl->kl", m.shapedirs[skin], m.shapedirs[skin]) / np.outer(norms, norms)
    np.testing.assert_allclose(gram, np.eye(300), atol=1e-8, err_msg="identity modes are orthogonal on the skin")
    # eyeballs move rigidly with identity: one translation per eyeball and mode
    for side in ("left_eyeball", "right_eyeball"):
        d = m.shapedirs[m.masks[side]]
        np.testing.assert_allclose(d, np.broadcast_to(d[:1], d.shape), atol=1e-12)
    assert np.abs(m.exprdirs[eyes]).max() == 0.0
    # expressions act on the face: most of their motion lies in the face mask
    face = np.zeros(m.n_vertices, bool)
    face[m.masks["face"]] = True
    energy = np.linalg.norm(m.exprdirs, axis=1) ** 2
    assert energy[face].sum() / energy.sum() > 0.9
    # neighbouring vertices move alike under identity (smooth fields)
    e = m.faces[:, :2]
    delta = np.linalg.norm(m.shapedirs[e[:, 0], :, :10] - m.shapedirs[e[:, 1], :, :10], axis=1)
    assert np.median(delta / norms[None, :10]) < 0.05


def test_deterministic_from_seed(synthetic_model):
    again = build_synthetic_model(seed=0)
    for key in ("v_template", "shapedirs", "exprdirs", "posedirs", "j_regressor", "weights", "uv"):
        np.testing.assert_array_equal(getattr(again, key), getattr(synthetic_model, key))
    other = build_synthetic_model(seed=1)
    np.testing.assert_array_equal(other.v_template, synthetic_model.v_template)  # geometry is fixed
    assert np.abs(other.shapedirs - synthetic_model.shapedirs).max() > 1e-4  # bases follow the seed


def test_joint_regressor_places_joints(synthetic_model):
    m = synthetic_model
    j = m.j_regressor @ m.v_template
    np.testing.assert_allclose(j[3], m.v_template[m.masks["left_eyeball"]].mean(0), atol=1e-12)
    assert j[3, 0] > 0 > j[4, 0], "joint 3 is the subject's left eye (+x)"
    assert j[0, 1] < j[1, 1] < j[2, 1] < j[3, 1], "root below neck below jaw below eyes"
    np.testing.assert_allclose(j[:3, 0], 0.0, atol=1e-12)
