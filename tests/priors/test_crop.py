# SPDX-License-Identifier: GPL-3.0-or-later
"""The official static-crop rule, the crop geometry, and mapping cameras back to the footage."""
from __future__ import annotations

import numpy as np
import pytest

from headcast.priors import CropBox, box_of_points, clip_crop_box


def test_single_box_uses_the_mean_rule():
    # w < h: x -= (100 - 80) // 2 -> 90, side 100, inclusive max (189, 149); grow by
    # int(100 * (1.42 - 1) / 2) = int(20.999999999999996) = 20 in floating point, as the official code computes
    assert clip_crop_box([[100, 50, 80, 100]], (300, 400)) == CropBox(70, 30, 209, 169)


def test_spread_boxes_use_the_union_rule_and_border_shift():
    # mean (200, 100, 50, 50): 71^2 < union (100, 100, 250, 50) * 1.1 -> union, scale 1.1;
    # square: y -= 100 -> 0; grow int(250 * 0.05) = 12 -> (88, -12, 361, 261); ymin < 0 shifts both minima by 12
    box = clip_crop_box([[100, 100, 50, 50], [300, 100, 50, 50]], (300, 400))
    assert box == CropBox(100, 0, 361, 261)
    assert box.xmax - box.xmin == box.ymax - box.ymin


def test_right_border_shifts_both_maxima():
    # (170, 50, 40, 40): grow 8 -> (162, 42, 217, 97); 217 > 199 by 18 -> maxima (199, 79)
    box = clip_crop_box([[170, 50, 40, 40]], (200, 200))
    assert box == CropBox(162, 42, 199, 79)


def test_mean_box_truncates_like_the_official_code():
    boxes = [[10, 10, 41, 41], [11, 11, 42, 42]]  # mean (10.5, 10.5, 41.5, 41.5) -> (10, 10, 41, 41)
    assert clip_crop_box(boxes, (200, 200)) == clip_crop_box([[10, 10, 41, 41]], (200, 200))


def test_box_of_points():
    pts = np.array([[10.2, 20.7], [30.9, 5.1], [15.0, 40.0]])
    assert box_of_points(pts).tolist() == [10, 5, 21, 35]


def test_crop_maps_points_like_cv2_resize():
    """A blob drawn at a sub-pixel position in the footage is found at box.to_crop of it in the crop."""
    H, W = 400, 600
    x0, y0 = 311.37, 187.62
    yy, xx = np.mgrid[0:H, 0:W] + 0.5  # pixel centres
    blob = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 6.0 ** 2))
    image = np.repeat((blob * 255)[..., None], 3, axis=2).astype(np.float32)
    for box in (CropBox(231, 101, 402, 272), CropBox(280, 150, 360, 230, size=512)):
        crop = box.crop(image)[..., 0].astype(np.float64)
        assert crop.shape == (512, 512)
        cy, cx = np.mgrid[0:512, 0:512] + 0.5
        centroid = np.array([(crop * cx).sum(), (crop * cy).sum()]) / crop.sum()
        np.testing.assert_allclose(box.to_original(centroid), [x0, y0], atol=0.05)
        np.testing.assert_allclose(box.to_crop(box.to_original(centroid)), centroid, atol=1e-9)


def test_crop_pads_outside_the_image():
    image = np.full((50, 50, 3), 200, np.uint8)
    crop = CropBox(-10, -10, 90, 90).crop(image)
    assert crop.shape == (512, 512, 3)
    assert (crop[:45, :, :] == 0).all() and (crop[:, :45] == 0).all()  # 10/100 of 512 = 51 px black
    assert (crop[60:300, 60:300] == 200).all() and (crop[320:, 320:] == 0).all()


def test_intrinsics_round_trip_and_projection():
    box = CropBox(231, 101, 402, 272)
    K = (1234.5, 1230.0, 250.25, 261.75)
    np.testing.assert_allclose(box.intrinsics_to_crop(*box.intrinsics_to_original(*K)), K, rtol=1e-12)
    rng = np.random.default_rng(0)
    pts = rng.uniform([-0.1, -0.1, 0.8], [0.1, 0.1, 1.2], (20, 3))
    def project(fx, fy, cx, cy):
        return np.stack([fx * pts[:, 0] / pts[:, 2] + cx, fy * pts[:, 1] / pts[:, 2] + cy], -1)
    in_crop = project(*K)
    np.testing.assert_allclose(box.to_original(in_crop), project(*box.intrinsics_to_original(*K)), atol=1e-9)


def test_official_box_array():
    box = CropBox(69, 29, 210, 170)
    assert box.as_official().tolist() == [29, 170, 69, 210]  # crop_ymin_ymax_xmin_xmax.npy
    assert CropBox.from_official(box.as_official()) == box
    assert box.scale == pytest.approx(512 / 141)
    with pytest.raises(ValueError):
        CropBox(10, 10, 10, 20)
