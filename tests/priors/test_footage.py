# SPDX-License-Identifier: GPL-3.0-or-later
"""Frames, MediaPipe landmarks, crops and masks on the astronaut photo and on a rendered clip."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
from scipy.spatial import Delaunay

from headcast.priors import FootageError, landmark_set, prepare_footage, read_footage

from .conftest import CLIP_BLANK


def _inside_hull(points, size):
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    return Delaunay(points).find_simplex(np.stack([xx.ravel(), yy.ravel()], -1)).reshape(size, size) >= 0


def test_astronaut_face_found_where_mediapipe_puts_it(astronaut_prepared):
    p = astronaut_prepared
    assert p.found.tolist() == [True] and not p.is_clip and p.crops.shape == (1, 512, 512, 3)
    orig = p.landmarks.in_original()[0]
    # positions measured independently with MediaPipe 0.10.21 on the full 512x512 photo
    np.testing.assert_allclose(orig[1], [223.4, 130.0], atol=1.0)  # nose tip
    np.testing.assert_allclose(orig[468], [203.5, 101.1], atol=1.0)  # right iris centre (image left)
    np.testing.assert_allclose(orig[473], [246.6, 103.5], atol=1.0)


def test_astronaut_crop_contains_the_whole_face(astronaut_prepared, astronaut):
    p = astronaut_prepared
    box = p.landmarks.boxes[0]
    orig = p.landmarks.in_original()[0]
    margin = 0.1 * box.side
    assert box.side == box.ymax - box.ymin
    assert (orig[:, 0] > box.xmin + margin).all() and (orig[:, 0] < box.xmax - margin).all()
    assert (orig[:, 1] > box.ymin + margin).all() and (orig[:, 1] < box.ymax - margin).all()
    pts = p.landmarks.points[0]
    assert pts.shape == (478, 2) and (pts > 0).all() and (pts < 512).all()
    # the crop is the footage's pixels: compare with cropping and resizing by hand
    by_hand = cv2.resize(astronaut[box.ymin:box.ymax, box.xmin:box.xmax], (512, 512))
    assert np.array_equal(p.crops[0], by_hand)
    # landmarks sit on the crop's face: the iris centres are darker than the cheeks
    grey = p.crops[0].astype(float).mean(-1)
    iris = [grey[int(y), int(x)] for x, y in pts[[468, 473]]]
    cheek = grey[int(pts[205, 1]), int(pts[205, 0])]
    assert max(iris) < cheek - 40


def test_astronaut_mask_covers_the_face_not_the_background(astronaut_prepared):
    p = astronaut_prepared
    pts = p.landmarks.points[0]
    mask = p.face_mask[0]
    inner = list(set(landmark_set("eyes") + landmark_set("left_eyebrow") + landmark_set("right_eyebrow")
                     + landmark_set("nose") + landmark_set("mouth")))
    inner_face = _inside_hull(pts[inner], 512)
    assert mask[inner_face].mean() > 0.97
    whole_face = _inside_hull(pts, 512)
    grown = cv2.dilate(whole_face.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert not mask[~grown].any()
    # the grey wall left and right of the neck is background for the person segmentation
    fg = p.foreground[0]
    assert fg[270:330, 0:40].max() < 0.2 and fg[270:330, 480:512].max() < 0.2
    assert fg[inner_face].min() > 0.8


def test_clip_crop_is_static_and_landmarks_stable(synthetic_clip, synthetic_clip_prepared):
    path, offsets, render = synthetic_clip
    p = synthetic_clip_prepared
    assert p.is_clip and len(p) == len(offsets) and p.fps == pytest.approx(25.0)
    assert len(set(p.landmarks.boxes)) == 1  # one static crop for the clip
    expected_found = np.ones(len(offsets), bool)
    expected_found[CLIP_BLANK] = False
    assert p.found.tolist() == expected_found.tolist()  # the empty frame is flagged, not fatal
    assert np.isnan(p.landmarks.points[CLIP_BLANK]).all() and not p.face_mask[CLIP_BLANK].any()
    orig = p.landmarks.in_original()
    box = p.landmarks.boxes[0]
    found = orig[p.found]
    assert (found[..., 0] > box.xmin).all() and (found[..., 0] < box.xmax).all()
    assert (found[..., 1] > box.ymin).all() and (found[..., 1] < box.ymax).all()
    # the head only slides: landmarks relative to the render's corner stay put (MediaPipe's own jitter
    # and the mp4 compression allow about a pixel)
    rel = found - offsets[p.found][:, None]
    spread = rel.std(axis=0).max(axis=1)
    assert np.median(spread) < 1.0 and np.percentile(spread, 95) < 2.5
    # and they agree with a static-mode detection on the clean render
    from headcast.priors.mediapipe_faces import FaceLandmarker

    with FaceLandmarker() as lm:
        clean = lm.detect(render)[:, :2]
    assert np.median(np.linalg.norm(rel.mean(axis=0) - clean, axis=1)) < 1.5


def test_read_footage_sources_and_errors(tmp_path, astronaut):
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("b.png", "a.jpg", "c.png"):
        cv2.imwrite(str(folder / name), astronaut[..., ::-1])
    (folder / "notes.txt").write_text("not a frame")
    clip = read_footage(folder)
    assert clip.names == ["a", "b", "c"] and clip.is_clip and clip.kind == "folder"
    assert np.array_equal(clip.frames[1], astronaut)  # png is lossless and comes back RGB
    photo = read_footage(folder / "b.png")
    assert not photo.is_clip and photo.kind == "image" and len(photo) == 1
    assert len(read_footage(folder, max_frames=2)) == 2
    with pytest.raises(FootageError, match="missing.mp4: file not found"):
        read_footage(tmp_path / "missing.mp4")
    (tmp_path / "clip.gif").write_bytes(b"GIF89a")
    with pytest.raises(FootageError, match=r"clip.gif: unknown file type '.gif'"):
        read_footage(tmp_path / "clip.gif")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(FootageError, match="broken.png: not a readable image"):
        read_footage(tmp_path / "broken.png")
    cv2.imwrite(str(folder / "d.png"), astronaut[:100, :, ::-1])
    with pytest.raises(FootageError, match="different sizes"):
        read_footage(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FootageError, match="empty: no images"):
        read_footage(tmp_path / "empty")


def test_small_face_in_a_large_frame_is_found(astronaut, astronaut_prepared):
    canvas = np.full((1200, 1600, 3), 90, np.uint8)
    canvas[700:900, 1100:1300] = cv2.resize(astronaut, (200, 200), interpolation=cv2.INTER_AREA)
    p = prepare_footage(canvas)
    assert p.found.all()
    scale = 200 / 512
    expected = astronaut_prepared.landmarks.in_original()[0] * scale + [1100, 700]
    err = np.linalg.norm(p.landmarks.in_original()[0] - expected, axis=1)
    assert np.median(err) < 1.5  # frame pixels; the face is 40 px wide here
    assert p.landmarks.boxes[0].side < 120
    # in a clip the small face is followed from frame to frame, also after a frame without it
    frames = []
    for i in range(6):
        frame = np.full((1200, 1600, 3), 90, np.uint8)
        if i != 3:
            frame[700 + i:900 + i, 1100 + 3 * i:1300 + 3 * i] = canvas[700:900, 1100:1300]
        frames.append(frame)
    clip = prepare_footage(frames)
    assert clip.is_clip and clip.found.tolist() == [True, True, True, False, True, True]
    moved = clip.landmarks.in_original()[clip.found] - np.array([[3.0 * i, i] for i in (0, 1, 2, 4, 5)])[:, None]
    assert np.median(np.linalg.norm(moved - expected, axis=2)) < 1.5


def test_photo_without_a_face_is_flagged(caplog):
    blank = np.full((300, 400, 3), 128, np.uint8)
    with caplog.at_level(logging.WARNING):
        p = prepare_footage(blank)
    assert p.found.tolist() == [False] and "no face" in caplog.text
    assert p.crops.shape == (1, 512, 512, 3) and not p.face_mask.any()
    assert p.landmarks.boxes[0].side == 300  # a centred square of the frame


def test_unrelated_photos_get_their_own_crops(astronaut):
    small = cv2.resize(astronaut, (256, 256))
    canvas = np.full((512, 512, 3), 90, np.uint8)
    canvas[200:456, 220:476] = small
    p = prepare_footage([astronaut, canvas], per_image_crop=True)
    assert not p.is_clip and p.found.all()
    a, b = p.landmarks.boxes
    assert b.side == pytest.approx(a.side / 2, abs=3)
    # the same face in both crops: landmarks agree in crop coordinates, up to the integer box
    # corners (one pixel of the half-size face is 512 / side crop pixels)
    diff = p.landmarks.points[0] - p.landmarks.points[1]
    assert np.abs(diff.mean(axis=0)).max() < 1.5 * b.scale
    assert np.median(np.linalg.norm(diff - diff.mean(axis=0), axis=1)) < 3.0
