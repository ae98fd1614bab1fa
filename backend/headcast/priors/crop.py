# SPDX-License-Identifier: GPL-3.0-or-later
"""Square face crops the way Pixel3DMM makes them, with the box kept to map cameras back.

The official rule (``get_cstm_crop`` of the preprocessing, applied to per-frame face boxes
``(x, y, w, h)``):

* per clip, take the mean box (mean x, y, w, h, truncated to integers) and the union box
  (min x and y, max right/bottom extent); use the union box enlarged by 1.1 when
  ``(w_mean * 1.42) * (h_mean * 1.42) < (w_union * 1.1) * (h_union * 1.1)``, else the mean box
  enlarged by 1.42. A single photo has mean == union, so it always gets the mean rule;
* make it square by growing the shorter side, centred (integer halves);
* enlarge by ``int(side * (scale - 1) / 2)`` on each side;
* at the image border, shift both minimum corners by the larger overflow (or both maximum
  corners), which keeps the box square and inside the image (a face larger than the frame is
  cut rather than squashed). The official code compares the maximum against ``W - 1`` off by
  two; Headcast uses the exact border;
* the crop is ``image[ymin:ymax, xmin:xmax]`` (max exclusive) resized to 512x512 with
  ``cv2.resize`` (bilinear), and the box is saved as ``[ymin, ymax, xmin, xmax]``
  (``crop_ymin_ymax_xmin_xmax.npy``).

Coordinates: continuous pixel coordinates with pixel (i, j)'s centre at (j + 0.5, i + 0.5),
as Headcast's renderer and MediaPipe's normalised landmarks (times the image size) use. A
crop point p maps to the original as ``p / scale + (xmin, ymin)``, exactly what cv2's
half-pixel-aligned resize does.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CROP_SIZE = 512
MEAN_BOX_SCALE = 1.42
UNION_BOX_SCALE = 1.1


@dataclass(frozen=True)
class CropBox:
    """A square crop of the original footage: [ymin:ymax, xmin:xmax] resized to ``size``."""

    xmin: int
    ymin: int
    xmax: int  # exclusive
    ymax: int  # exclusive
    size: int = CROP_SIZE

    def __post_init__(self) -> None:
        if self.xmax - self.xmin <= 0 or self.ymax - self.ymin <= 0:
            raise ValueError(f"empty crop box {self}")

    @property
    def side(self) -> int:
        return self.xmax - self.xmin

    @property
    def scale(self) -> float:
        """Crop pixels per original pixel."""
        return self.size / (self.xmax - self.xmin)

    @property
    def scale_xy(self) -> tuple[float, float]:
        return self.size / (self.xmax - self.xmin), self.size / (self.ymax - self.ymin)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Original-image points [..., 2] (x, y) -> crop pixels."""
        sx, sy = self.scale_xy
        p = np.asarray(points, dtype=np.float64)
        return np.stack([(p[..., 0] - self.xmin) * sx, (p[..., 1] - self.ymin) * sy], axis=-1)

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Crop pixels [..., 2] (x, y) -> original-image points."""
        sx, sy = self.scale_xy
        p = np.asarray(points, dtype=np.float64)
        return np.stack([p[..., 0] / sx + self.xmin, p[..., 1] / sy + self.ymin], axis=-1)

    def intrinsics_to_original(self, fx, fy, cx, cy) -> tuple:
        """Pinhole intrinsics of the crop (pixels of the ``size`` image) -> of the original footage.

        cx, cy follow the same pixel convention as the points (centres at +0.5, as
        :func:`headcast.render.project_points` takes them); for OpenCV's K (centres at
        integers) add 0.5 before and subtract 0.5 after.
        """
        sx, sy = self.scale_xy
        return fx / sx, fy / sy, cx / sx + self.xmin, cy / sy + self.ymin

    def intrinsics_to_crop(self, fx, fy, cx, cy) -> tuple:
        """Inverse of :meth:`intrinsics_to_original`."""
        sx, sy = self.scale_xy
        return fx * sx, fy * sy, (cx - self.xmin) * sx, (cy - self.ymin) * sy

    def crop(self, image: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """The ``size`` x ``size`` crop of ``image`` (black where the box leaves the image)."""
        H, W = image.shape[:2]
        x0, y0, x1, y1 = max(self.xmin, 0), max(self.ymin, 0), min(self.xmax, W), min(self.ymax, H)
        region = image[y0:y1, x0:x1]
        if (x0, y0, x1, y1) != (self.xmin, self.ymin, self.xmax, self.ymax):
            pad = ((y0 - self.ymin, self.ymax - y1), (x0 - self.xmin, self.xmax - x1)) + ((0, 0),) * (image.ndim - 2)
            region = np.pad(region, [(max(a, 0), max(b, 0)) for a, b in pad])
        return cv2.resize(region, (self.size, self.size), interpolation=interpolation)

    def as_official(self) -> np.ndarray:
        """``[ymin, ymax, xmin, xmax]`` as Pixel3DMM's ``crop_ymin_ymax_xmin_xmax.npy`` stores it."""
        return np.array([self.ymin, self.ymax, self.xmin, self.xmax], dtype=np.int64)

    @classmethod
    def from_official(cls, values, size: int = CROP_SIZE) -> "CropBox":
        ymin, ymax, xmin, xmax = (int(v) for v in values)
        return cls(xmin, ymin, xmax, ymax, size)


def box_of_points(points: np.ndarray) -> np.ndarray:
    """Integer (x, y, w, h) box around points [N, 2] (floor of the minimum, ceil of the maximum)."""
    p = np.asarray(points, dtype=np.float64)
    x0, y0 = np.floor(p.min(axis=0)).astype(int)
    x1, y1 = np.ceil(p.max(axis=0)).astype(int)
    return np.array([x0, y0, x1 - x0, y1 - y0], dtype=np.int64)


def clip_crop_box(boxes: np.ndarray, image_size: tuple[int, int], size: int = CROP_SIZE) -> CropBox:
    """One static crop box for a clip from its per-frame face boxes [N, 4] (x, y, w, h).

    image_size: (H, W) of the frames. A photo is a clip of one frame.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        raise ValueError("no face boxes to crop around")
    H, W = image_size
    mean = boxes.mean(axis=0).astype(np.int64)
    ux, uy = boxes[:, 0].min(), boxes[:, 1].min()
    union = np.array([ux, uy, (boxes[:, 0] + boxes[:, 2] - ux).max(), (boxes[:, 1] + boxes[:, 3] - uy).max()]).astype(np.int64)
    if mean[2] * MEAN_BOX_SCALE * mean[3] * MEAN_BOX_SCALE < union[2] * UNION_BOX_SCALE * union[3] * UNION_BOX_SCALE:
        x, y, w, h = (int(v) for v in union)
        scale = UNION_BOX_SCALE
    else:
        x, y, w, h = (int(v) for v in mean)
        scale = MEAN_BOX_SCALE
    if w > h:  # square: grow the shorter side, centred
        y -= (w - h) // 2
        h = w
    elif h > w:
        x -= (h - w) // 2
        w = h
    xmax, ymax = x + w - 1, y + h - 1  # inclusive, as the official code counts
    x -= int(w * (scale - 1) / 2)
    y -= int(h * (scale - 1) / 2)
    xmax += int(w * (scale - 1) / 2)
    ymax += int(h * (scale - 1) / 2)
    if x < 0 or y < 0:
        shift = -min(x, y)
        x, y = x + shift, y + shift
    over = max(xmax - (W - 1), ymax - (H - 1))
    if over > 0:
        xmax, ymax = xmax - over, ymax - over
    # the official slice image[ymin:ymax, xmin:xmax] excludes the inclusive maximum
    if xmax - x < 1:
        raise ValueError(f"face box {boxes.tolist()} leaves no crop inside a {W}x{H} image")
    return CropBox(int(x), int(y), int(xmax), int(ymax), size)
