# SPDX-License-Identifier: GPL-3.0-or-later
"""FLAME fitting: from per-pixel uv and normal predictions, masks and landmarks to identity,
expression, jaw, neck, eyes, eyelids, head pose and camera.

Entry points: :func:`fit_images` (one image, or several unordered images of one person) and
:func:`track_video` (a clip). Cues go in as :class:`FrameCues`, results come out as
:class:`FitResult`; :mod:`headcast.fit.synthetic_cues` renders exact and corrupted cues for
tests and benchmarks.
"""
from .config import FitConfig
from .cues import LANDMARK_TERMS, CueError, FrameCues, LandmarkTarget, validate_cues
from .head import FACING_CAMERA, FitHead, posed_vertices
from .images import fit_images
from .progress import Cancelled, Monitor
from .result import FitResult, FrameFit, load_fit_npz
from .video import track_video

__all__ = [
    "FACING_CAMERA", "LANDMARK_TERMS", "Cancelled", "CueError", "FitConfig", "FitHead", "FitResult", "FrameCues",
    "FrameFit", "LandmarkTarget", "Monitor", "fit_images", "load_fit_npz", "posed_vertices", "track_video",
    "validate_cues",
]
