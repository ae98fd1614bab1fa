# SPDX-License-Identifier: GPL-3.0-or-later
"""Render-and-detect MediaPipe embedding on the synthetic model."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from headcast.flame import barycentric_points, load_model_file, save_model_npz
from headcast.priors import EmbeddingError, build_mediapipe_embedding, embedded_points, landmark_set
from headcast.priors import embedding as embedding_module
from headcast.priors.embedding import (embedding_cache_key, embedding_cache_path, eyeball_faces,
                                       mouth_line_vertices, render_template, template_camera)
from headcast.priors.mediapipe_faces import FaceLandmarker


def _position(emb, points, landmark):
    return points[list(emb.landmark_ids).index(landmark)]


def test_embedding_is_complete_and_valid(synthetic_model, synthetic_embedding):
    emb, report, _ = synthetic_embedding
    assert report.views_used == len(embedding_module.DEFAULT_VIEWS) and not report.from_cache
    assert len(emb.landmark_ids) >= 470 and len(set(emb.landmark_ids.tolist())) == len(emb.landmark_ids)
    assert np.allclose(emb.bary.sum(axis=1), 1) and (emb.bary >= -1e-9).all()
    dataclasses.replace(synthetic_model, mediapipe=emb).validate("<with embedding>")


def test_eye_landmarks_sit_on_and_around_the_eyeballs(synthetic_model, synthetic_embedding):
    emb, _, _ = synthetic_embedding
    m = synthetic_model
    pts = embedded_points(m, emb)
    face_of = dict(zip(emb.landmark_ids.tolist(), emb.faces.tolist()))
    for side, sign in (("left", 1.0), ("right", -1.0)):
        eyeball = set(eyeball_faces(m, side).tolist())
        centre = m.v_template[m.masks[f"{side}_eyeball"]].mean(axis=0)
        radius = np.linalg.norm(m.v_template[m.masks[f"{side}_eyeball"]] - centre, axis=1).max()
        iris = landmark_set(f"{side}_iris_centre") + landmark_set(f"{side}_iris_ring")
        for i in iris:
            assert face_of[i] in eyeball, i  # iris points on the eyeball of the same side
            assert abs(np.linalg.norm(_position(emb, pts, i) - centre) - radius) < 1e-3
        gaze = _position(emb, pts, landmark_set(f"{side}_iris_centre")[0]) - centre
        assert gaze[2] / np.linalg.norm(gaze) > 0.97  # the iris centre is at the front of the eyeball
        contour = landmark_set(f"{side}_eye")
        for i in contour:
            assert face_of[i] not in eyeball, i  # lid margins are skin, never the eyeball
            p = _position(emb, pts, i)
            assert sign * p[0] > 0 and np.linalg.norm(p - centre) < 2.5 * radius
        upper = np.mean([_position(emb, pts, i)[1] for i in landmark_set(f"{side}_eye_upper")[1:-1]])
        lower = np.mean([_position(emb, pts, i)[1] for i in landmark_set(f"{side}_eye_lower")[1:-1]])
        assert upper > centre[1] > lower


def test_mouth_landmarks_sit_on_the_lip_line(synthetic_model, synthetic_embedding):
    emb, _, _ = synthetic_embedding
    m = synthetic_model
    pts = embedded_points(m, emb)
    line = m.v_template[mouth_line_vertices(m)]
    assert len(line) > 10
    half_width = np.abs(line[:, 0]).max()
    for corner, sign in zip(landmark_set("mouth_corners"), (-1.0, 1.0)):  # subject's right corner first
        p = _position(emb, pts, corner)
        assert abs(p[1] - line[:, 1].mean()) < 0.003  # at the height of the lip line
        assert sign * p[0] > half_width - 0.003 and sign * p[0] < half_width + 0.012
    # inner-lip points on the line itself, split between the upper lip and the jaw-driven lower lip
    jaw = m.weights[:, m.joint_names.index("jaw")]
    face_of = dict(zip(emb.landmark_ids.tolist(), emb.faces.tolist()))
    for chain, lower in (("lips_inner_upper", False), ("lips_inner_lower", True)):
        for i in landmark_set(chain)[2:-2]:
            p = _position(emb, pts, i)
            assert np.linalg.norm(line - p, axis=1).min() < 0.004, i
            assert (jaw[m.faces[face_of[i]]].mean() >= 0.5) == lower, i


def test_embedding_reproduces_detections_on_new_renders(synthetic_model, synthetic_embedding):
    emb, _, _ = synthetic_embedding
    m = synthetic_model
    pts = embedded_points(m, emb)
    contour = set(landmark_set("face_oval"))
    interior = np.array([i not in contour for i in emb.landmark_ids])
    with FaceLandmarker() as landmarker:
        for yaw, pitch, size in ((5.0, -3.0, 512), (-10.0, 6.0, 512), (0.0, 0.0, 384)):
            cam = template_camera(m, yaw, pitch, size)
            detected = landmarker.detect(render_template(m, cam).image)
            assert detected is not None
            err = np.linalg.norm(cam.project(pts) - detected[emb.landmark_ids, :2], axis=1) * 512 / size
            assert np.median(err) < 3.5, (yaw, pitch)
            assert np.percentile(err[interior], 90) < 6.5, (yaw, pitch)


def test_embedding_follows_the_mesh(synthetic_model, synthetic_embedding):
    emb, _, _ = synthetic_embedding
    m = synthetic_model
    moved = m.v_template * 1.1 + np.array([0.01, -0.02, 0.03])
    got = embedded_points(m, emb, moved)
    want = barycentric_points(torch.as_tensor(moved)[None], torch.as_tensor(m.faces),
                              torch.as_tensor(emb.faces), torch.as_tensor(emb.bary))[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(got, embedded_points(m, emb) * 1.1 + [0.01, -0.02, 0.03], atol=1e-12)


def test_cache_is_used_and_invalidated(synthetic_model, synthetic_embedding, monkeypatch, caplog):
    emb, _, cache = synthetic_embedding
    path = cache / "headcast-synthetic.mediapipe_embedding.npz"
    assert path.is_file()

    class NoMediaPipe:
        def __init__(self, *a, **k):
            raise AssertionError("MediaPipe was run")

    monkeypatch.setattr("headcast.priors.mediapipe_faces.FaceLandmarker", NoMediaPipe)
    again, report = build_mediapipe_embedding(synthetic_model, cache, return_report=True)
    assert report.from_cache
    for field in ("landmark_ids", "faces", "bary"):
        assert np.array_equal(getattr(again, field), getattr(emb, field))
    changed = dataclasses.replace(synthetic_model, v_template=synthetic_model.v_template * 1.001)
    assert embedding_cache_key(changed) != embedding_cache_key(synthetic_model)
    with pytest.raises(AssertionError, match="MediaPipe was run"):  # stale cache: rebuilt
        build_mediapipe_embedding(changed, cache)
    corrupt = cache / "corrupt"
    corrupt.mkdir()
    (corrupt / "headcast-synthetic.mediapipe_embedding.npz").write_bytes(b"garbage")
    with pytest.raises(AssertionError, match="MediaPipe was run"):
        build_mediapipe_embedding(synthetic_model, corrupt)
    assert "unreadable MediaPipe embedding cache" in caplog.text


def test_default_cache_is_next_to_the_model_file(synthetic_dir, synthetic_model):
    loaded = load_model_file(synthetic_dir / "generic_model.pkl")
    assert embedding_cache_path(loaded) == synthetic_dir / "generic_model.mediapipe_embedding.npz"
    assert embedding_cache_path(synthetic_model) is None  # built in memory: no file to sit next to


def test_embedding_survives_the_npz_model_format(synthetic_model, synthetic_embedding, tmp_path):
    emb, _, _ = synthetic_embedding
    path = save_model_npz(dataclasses.replace(synthetic_model, mediapipe=emb), tmp_path / "head.npz")
    back = load_model_file(path).mediapipe
    assert np.array_equal(back.landmark_ids, emb.landmark_ids) and np.array_equal(back.faces, emb.faces)
    np.testing.assert_allclose(back.bary, emb.bary)


def test_no_face_is_a_clear_error(synthetic_model, tmp_path):
    v = synthetic_model.v_template
    centre = v.mean(axis=0)
    blob = centre + (v - centre) / np.linalg.norm(v - centre, axis=1, keepdims=True) * 0.1
    featureless = dataclasses.replace(synthetic_model, v_template=blob, masks={"face": synthetic_model.masks["face"]},
                                      source="")
    with pytest.raises(EmbeddingError, match="found no face on any render"):
        build_mediapipe_embedding(featureless, tmp_path, views=((0.0, 0.0), (10.0, 0.0)))
