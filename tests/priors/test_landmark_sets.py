# SPDX-License-Identifier: GPL-3.0-or-later
"""Landmark subsets derived from MediaPipe's connection sets, checked against a real detection."""
from __future__ import annotations

import cv2
import numpy as np
from mediapipe.python.solutions import face_mesh_connections as fmc

from headcast.priors import LANDMARK_SETS, landmark_set
from headcast.priors.landmark_sets import IRIS_INDICES, LEFT_IRIS_CENTRE, RIGHT_IRIS_CENTRE


def _edges(chain, closed=False):
    pairs = list(zip(chain[:-1], chain[1:]))
    return pairs + [(chain[-1], chain[0])] if closed else pairs


def test_sets_are_mediapipes_connections():
    for side in ("left", "right"):
        eye = getattr(fmc, f"FACEMESH_{side.upper()}_EYE")
        up, low = landmark_set(f"{side}_eye_upper"), landmark_set(f"{side}_eye_lower")
        assert up[0] == low[0] and up[-1] == low[-1] and len(up) == len(low) == 9
        assert set(_edges(up)) | set(_edges(low)) == set(eye)
        assert len(landmark_set(f"{side}_eye")) == 16 and set(landmark_set(f"{side}_eye")) == {v for e in eye for v in e}
        ring = landmark_set(f"{side}_iris_ring")
        assert set(_edges(ring, closed=True)) == set(getattr(fmc, f"FACEMESH_{side.upper()}_IRIS"))
    lips = set(_edges(landmark_set("lips_outer_upper"))) | set(_edges(landmark_set("lips_outer_lower"))) \
        | set(_edges(landmark_set("lips_inner_upper"))) | set(_edges(landmark_set("lips_inner_lower")))
    assert lips == set(fmc.FACEMESH_LIPS)
    assert set(_edges(landmark_set("face_oval"), closed=True)) == set(fmc.FACEMESH_FACE_OVAL)
    assert len(landmark_set("face_oval")) == 36
    assert sorted(IRIS_INDICES) == list(range(468, 478)) and (RIGHT_IRIS_CENTRE, LEFT_IRIS_CENTRE) == (468, 473)
    assert set(landmark_set("mouth_corners")) == {landmark_set("lips_outer_upper")[0], landmark_set("lips_outer_upper")[-1]}


def test_sets_match_the_geometry_of_a_detected_face(astronaut_prepared):
    """Upper lids above lower lids, the subject's left on the image right, outer lips around inner ones."""
    pts = astronaut_prepared.landmarks.points[0]
    y = lambda name: pts[list(landmark_set(name)[1:-1]), 1].mean()  # noqa: E731
    for side in ("left", "right"):
        assert y(f"{side}_eye_upper") < y(f"{side}_eye_lower")
        centre = pts[landmark_set(f"{side}_iris_centre")[0]]
        ring = pts[list(landmark_set(f"{side}_iris_ring"))]
        np.testing.assert_allclose(ring.mean(axis=0), centre, atol=1.5)
        eye = pts[list(landmark_set(f"{side}_eye"))]
        assert eye[:, 0].min() < centre[0] < eye[:, 0].max() and eye[:, 1].min() < centre[1] < eye[:, 1].max()
    assert pts[list(landmark_set("left_eye")), 0].mean() > pts[list(landmark_set("right_eye")), 0].mean()
    right_corner, left_corner = landmark_set("mouth_corners")
    assert pts[left_corner, 0] > pts[right_corner, 0]
    for part in ("outer", "inner"):
        assert y(f"lips_{part}_upper") < y(f"lips_{part}_lower")
    assert y("lips_outer_upper") < y("lips_inner_upper") and y("lips_inner_lower") < y("lips_outer_lower")
    oval = pts[list(landmark_set("face_oval"))].astype(np.float32)
    others = [i for i in range(468) if i not in set(landmark_set("face_oval"))]
    inside = [cv2.pointPolygonTest(oval, (float(x), float(y)), True) > -2.0 for x, y in pts[others]]
    assert np.mean(inside) > 0.98  # the oval is the outline of the face mesh
    assert set(LANDMARK_SETS["eyelids"]) == set(landmark_set("eyes"))
