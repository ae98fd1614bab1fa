# SPDX-License-Identifier: GPL-3.0-or-later
"""MediaPipe (0.10.21, models bundled in the wheel, fully offline): face landmarks and masks.

* 478 landmarks from ``FaceMesh(refine_landmarks=True)``: static mode for photos, tracking
  mode for clips. When tracking loses the face, the frame is re-detected: in static mode,
  then around the previous frame's face, then with the full-range face detector over windows
  of the frame (a small face in a large frame is below the mesh's own detector's reach), the
  mesh then running on an enlarged window around the face found.
* person/background segmentation from ``SelfieSegmentation``.
* a face mask: the face-oval polygon of the landmarks.

Landmark coordinates are continuous pixel coordinates (x right, y down; MediaPipe's
normalised coordinates times the image width / height, so a pixel's centre is at +0.5).
The third column is MediaPipe's relative depth z, in the same pixel units as x.
"""
from __future__ import annotations

import cv2
import numpy as np

from .landmark_sets import N_LANDMARKS, landmark_set


def _mp():
    import mediapipe as mp  # imported lazily: it takes a second and logs to stderr

    return mp.solutions


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def _points(result, width: int, height: int) -> np.ndarray | None:
    if not result.multi_face_landmarks:
        return None
    lm = result.multi_face_landmarks[0].landmark
    if len(lm) != N_LANDMARKS:
        raise RuntimeError(f"MediaPipe returned {len(lm)} landmarks, expected {N_LANDMARKS} (refine_landmarks)")
    return np.array([[p.x * width, p.y * height, p.z * width] for p in lm], dtype=np.float64)


class FaceLandmarker:
    """478 MediaPipe landmarks per frame; ``tracking=True`` for consecutive video frames.

    search_small_faces: when the mesh finds no face, look for a small one with the full-range
    detector over windows of the frame (about 1 s on a frame without any face; in tracking
    mode at most on 5 frames).
    """

    def __init__(self, tracking: bool = False, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, search_small_faces: bool = True) -> None:
        solutions = _mp()
        self._static = solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                                    min_detection_confidence=min_detection_confidence)
        self._tracker = None
        if tracking:
            self._tracker = solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                                         refine_landmarks=True,
                                                         min_detection_confidence=min_detection_confidence,
                                                         min_tracking_confidence=min_tracking_confidence)
        self._full_range = solutions.face_detection.FaceDetection(model_selection=1,
                                                                  min_detection_confidence=min_detection_confidence)
        self.redetections = 0  # frames where tracking had lost the face and re-detection found it
        self._last = None  # (centre x, centre y, size) of the last tracked face
        # the windowed small-face search costs ~1 s on a frame without a face: in a clip it is
        # tried on a few frames only (a clip's face keeps its size once found)
        self.window_searches_left = (5 if tracking else None) if search_small_faces else 0

    def close(self) -> None:
        for obj in (self._static, self._tracker, self._full_range):
            if obj is not None:
                obj.close()

    def __enter__(self) -> "FaceLandmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _static_points(self, rgb: np.ndarray) -> np.ndarray | None:
        H, W = rgb.shape[:2]
        pts = _points(self._static.process(rgb), W, H)
        if pts is not None:
            return pts
        if self.window_searches_left is not None:
            if self.window_searches_left <= 0:
                return None
            self.window_searches_left -= 1
        found = self._face_box(rgb)
        return None if found is None else self._mesh_in_window(rgb, *found)

    def _face_box(self, rgb: np.ndarray) -> tuple[float, float, float] | None:
        """(centre x, centre y, size) of the most confident face, searching the whole frame, then
        half- and quarter-size windows (50 % overlap) so that small faces in large frames are found."""
        H, W = rgb.shape[:2]
        side = min(H, W)
        scales = [[(0, 0, W, H)]]
        for s in (side // 2, side // 4):
            if s < 96:
                break
            xs = sorted(set(range(0, W - s + 1, s // 2)) | {W - s})
            ys = sorted(set(range(0, H - s + 1, s // 2)) | {H - s})
            scales.append([(x, y, s, s) for y in ys for x in xs])
        for windows in scales:
            best = None
            for x0, y0, w, h in windows:
                result = self._full_range.process(np.ascontiguousarray(rgb[y0:y0 + h, x0:x0 + w]))
                for d in result.detections or ():
                    if best is None or d.score[0] > best[0]:
                        b = d.location_data.relative_bounding_box
                        best = (d.score[0], x0 + (b.xmin + b.width / 2) * w, y0 + (b.ymin + b.height / 2) * h,
                                max(b.width * w, b.height * h))
            if best is not None:
                return best[1:]
        return None

    def _mesh_in_window(self, rgb: np.ndarray, cx: float, cy: float, size: float) -> np.ndarray | None:
        """The mesh on a square window of twice ``size`` around (cx, cy), scaled to at most 512 px."""
        H, W = rgb.shape[:2]
        x0, y0 = int(np.floor(cx - size)), int(np.floor(cy - size))
        side = max(int(np.ceil(2 * size)), 8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, W), min(y0 + side, H)
        if sx1 <= sx0 or sy1 <= sy0:
            return None
        window = np.zeros((side, side, 3), np.uint8)
        window[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        scale = min(1.0, 512.0 / side)
        small = cv2.resize(window, (max(1, round(side * scale)),) * 2, interpolation=cv2.INTER_AREA) if scale < 1 else window
        pts = _points(self._static.process(np.ascontiguousarray(small)), small.shape[1], small.shape[0])
        if pts is None:
            return None
        pts *= side / small.shape[1]  # back to window pixels (x, y and z alike)
        pts[:, 0] += x0
        pts[:, 1] += y0
        return pts

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        """Landmarks [478, 3] (x, y, z in pixels) of the most prominent face, or None."""
        return self._static_points(_rgb(image))

    def track(self, image: np.ndarray) -> np.ndarray | None:
        """Like :meth:`detect` but in tracking mode (call on consecutive frames of one clip).

        When the tracker loses the face, the frame is re-detected: in static mode on the whole
        frame, then on a window around the previous frame's face (a face too small for the
        whole-frame detector), then by the windowed search.
        """
        rgb = _rgb(image)
        if self._tracker is None:
            return self._static_points(rgb)
        H, W = rgb.shape[:2]
        pts = _points(self._tracker.process(rgb), W, H)
        if pts is None:
            pts = _points(self._static.process(rgb), W, H)
            if pts is None and self._last is not None:
                pts = self._mesh_in_window(rgb, *self._last)
            if pts is None:
                pts = self._static_points(rgb)
            if pts is not None:
                self.redetections += 1
        if pts is not None:
            lo, hi = pts[:, :2].min(axis=0), pts[:, :2].max(axis=0)
            self._last = (*((lo + hi) / 2), float((hi - lo).max()))
        return pts


class ForegroundSegmenter:
    """MediaPipe selfie segmentation: person probability [H, W] float32 in [0, 1]."""

    def __init__(self) -> None:
        self._seg = _mp().selfie_segmentation.SelfieSegmentation(model_selection=0)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        mask = self._seg.process(_rgb(image)).segmentation_mask
        return np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)

    def close(self) -> None:
        self._seg.close()


def face_oval_mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pixels whose centres lie inside the face-oval polygon of landmarks [478, 2+]: bool [H, W]."""
    H, W = size
    oval = np.asarray(points)[list(landmark_set("face_oval")), :2]
    shift = 4  # sub-pixel vertex positions; cv2 puts pixel centres at integer coordinates
    poly = np.round((oval - 0.5) * (1 << shift)).astype(np.int32)
    mask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(mask, [poly], 1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(bool)
