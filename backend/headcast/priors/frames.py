# SPDX-License-Identifier: GPL-3.0-or-later
"""Frames from a photo, a folder of images or a video file (OpenCV), as RGB uint8 arrays."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class FootageError(ValueError):
    """Footage that cannot be read; the message names the file."""

    def __init__(self, path, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


@dataclass
class Footage:
    """Decoded frames of one photo or clip."""

    frames: list[np.ndarray]  # each [H, W, 3] uint8 RGB
    names: list[str]
    kind: str  # 'image', 'folder', 'video' or 'array'
    source: str
    fps: float | None = None  # videos only
    is_clip: bool = field(default=False)  # frames of one shot (video / folder): one static crop

    def __len__(self) -> int:
        return len(self.frames)


def read_image(path: str | Path) -> np.ndarray:
    """One image file as RGB uint8 [H, W, 3] (grey and alpha images are converted)."""
    path = Path(path)
    if not path.is_file():
        raise FootageError(path, "file not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise FootageError(path, "not a readable image")
    if img.dtype == np.uint16:
        img = (img / 257).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def iter_video(path: str | Path, max_frames: int | None = None, stride: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, RGB frame) of a video file, every ``stride``-th frame."""
    path = Path(path)
    if not path.is_file():
        raise FootageError(path, "file not found")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FootageError(path, "OpenCV cannot open this video")
    try:
        index = taken = 0
        while max_frames is None or taken < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if index % stride == 0:
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                taken += 1
            index += 1
    finally:
        cap.release()


def video_fps(path: str | Path) -> float | None:
    cap = cv2.VideoCapture(str(path))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return float(fps) if fps and fps > 0 else None


def read_footage(source, max_frames: int | None = None, stride: int = 1) -> Footage:
    """Read a photo, an image folder (sorted by name), a video, or an array of frames.

    ``source``: a path, an RGB array [H, W, 3] (a photo) or [N, H, W, 3] (a clip), or a list of
    RGB arrays. ``max_frames`` / ``stride`` thin out long clips.
    """
    if stride < 1:
        raise ValueError("stride must be >= 1")
    if isinstance(source, np.ndarray) or (isinstance(source, (list, tuple)) and source
                                          and isinstance(source[0], np.ndarray)):
        frames = [source] if isinstance(source, np.ndarray) and source.ndim == 3 else list(source)
        for i, f in enumerate(frames):
            if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
                raise FootageError(f"<array frame {i}>", f"expected RGB uint8 [H, W, 3], got {f.dtype} {f.shape}")
        frames = frames[::stride][:max_frames]
        return Footage(frames, [f"{i:05d}" for i in range(len(frames))], "array", "<array>",
                       is_clip=len(frames) > 1)
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files = files[::stride][:max_frames]
        if not files:
            raise FootageError(path, f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        frames = [read_image(f) for f in files]
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise FootageError(path, f"the images have different sizes {sorted(shapes)}; a clip needs one size")
        return Footage(frames, [f.stem for f in files], "folder", str(path), is_clip=True)
    if not path.exists():
        raise FootageError(path, "file not found")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return Footage([read_image(path)], [path.stem], "image", str(path))
    if suffix in VIDEO_SUFFIXES:
        items = list(iter_video(path, max_frames, stride))
        if not items:
            raise FootageError(path, "the video has no readable frames")
        return Footage([f for _, f in items], [f"{i:05d}" for i, _ in items], "video", str(path),
                       fps=video_fps(path), is_clip=True)
    raise FootageError(path, f"unknown file type {suffix!r}; expected an image ({', '.join(IMAGE_SUFFIXES)}) "
                             f"or a video ({', '.join(VIDEO_SUFFIXES)})")
