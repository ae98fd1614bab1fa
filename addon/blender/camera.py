# SPDX-License-Identifier: GPL-3.0-or-later
"""The solved camera (lens, sensor, shift, placement), the footage behind it, and the scene settings."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np

from .. import result_file as rf
from .animation import ActionBuilder
from .conventions import camera_settings, continuous_quaternions, matrix_to_quaternion

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ogv", ".dv"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".exr", ".hdr", ".tga"}
FRAME_OFFSET = 1  # Blender frame = footage frame index + 1, so footage frame 0 is scene frame 1


@dataclass
class Footage:
    """The footage as Blender data: a movie clip (video) or an image (still), plus an image for textures."""

    path: Path
    clip: object = None  # bpy.types.MovieClip
    image: object = None  # bpy.types.Image (still or movie), for the background or a texture


def build_camera_data(name: str, result: rf.HeadcastResult, builder: ActionBuilder,
                      frames: np.ndarray) -> tuple[bpy.types.Camera, dict]:
    """Camera data matching the intrinsics; lens and shift are keyed when they change."""
    cam = bpy.data.cameras.new(name)
    settings = camera_settings(result["intrinsics"], result.image_size)
    cam.type = "PERSP"
    cam.sensor_fit = "HORIZONTAL"
    cam.sensor_width = settings["sensor_width"]
    cam.sensor_height = settings["sensor_width"] * result.image_size[1] / result.image_size[0]
    depth = result["head_translation"][:, 2]
    cam.clip_start = float(max(1e-3, 0.05 * depth.min()))
    cam.clip_end = float(max(100.0, 10.0 * depth.max()))
    for channel in ("lens", "shift_x", "shift_y"):
        builder.channel(channel, frames, settings[channel], tol=1e-9)
    return cam, settings


def key_object_transform(builder: ActionBuilder, frames: np.ndarray, rotations: np.ndarray,
                         locations: np.ndarray) -> None:
    """World rotation (as quaternions) and location of an unparented object (rotation mode QUATERNION)."""
    quats = continuous_quaternions(matrix_to_quaternion(rotations))
    builder.static.append(("rotation_mode", "QUATERNION"))
    builder.channel("rotation_quaternion", frames, quats, group="Object Transforms")
    builder.channel("location", frames, locations, group="Object Transforms")
    builder.static.append(("scale", (1.0, 1.0, 1.0)))


def resolve_footage(result: rf.HeadcastResult, override: str = "") -> tuple[Path | None, str]:
    """The footage file to show, and a warning when it cannot be found.

    Looks at ``override``, then the recorded ``source_path`` (relative paths are relative to the
    result file), then a file of the same name next to the result file.
    """
    recorded = override or result.metadata.get("source_path", "")
    if not recorded:
        return None, "the result names no footage"
    path = _find_recorded(result, recorded)
    if path is not None:
        return path, ""
    return None, f"footage {recorded} not found; no background is shown"


def _find_recorded(result: rf.HeadcastResult, recorded: str) -> Path | None:
    """A path recorded in a result: as written (``//`` = blend-relative, relative = result-relative),
    else a file of the same name next to the result file."""
    path = Path(bpy.path.abspath(recorded)) if recorded.startswith("//") else Path(recorded).expanduser()
    if not path.is_absolute():
        path = Path(result.path).parent / path
    if path.exists():
        return path
    beside = Path(result.path).parent / path.name
    return beside if beside.exists() else None


def load_frame_photos(result: rf.HeadcastResult, track) -> tuple[list | None, str]:
    """Several photos: the image of each frame (None where missing), and a warning; None if the
    result is not a set of photos (no ``frame_sources``)."""
    sources = result.metadata.get("frame_sources")
    if not sources or len(sources) != result.n_frames:
        return None, ""
    images, loaded, missing = [], {}, []
    for recorded in sources:
        path = _find_recorded(result, recorded)
        if path is None:
            missing.append(recorded)
            images.append(None)
            continue
        if path not in loaded:
            loaded[path] = track(bpy.data.images.load(str(path), check_existing=True))
        images.append(loaded[path])
    warning = f"photos not found, no background on their frames: {', '.join(missing)}" if missing else ""
    return images, warning


def set_photo_backgrounds(cam: bpy.types.Camera, images: list, builder: ActionBuilder, frames: np.ndarray) -> None:
    """One background per photo, each visible (alpha keyed to 1) only on the frames fitted to it."""
    distinct = list(dict.fromkeys(img for img in images if img is not None))
    for k, img in enumerate(distinct):
        bg = _new_background(cam)  # STRETCH: each photo fills the frame, its camera is in the first photo's pixels
        bg.source = "IMAGE"
        bg.image = img
        alpha = np.array([1.0 if im is img else 0.0 for im in images])
        if not builder.channel(f"background_images[{k}].alpha", frames, alpha):
            bg.alpha = float(alpha[0])


def load_footage(path: Path, want_texture: bool, track) -> tuple[Footage | None, str]:
    """Load the footage (movie clip for a video or an image folder, image for a still)."""
    suffix = path.suffix.lower()
    footage = Footage(path=path)
    if path.is_dir():
        stills = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not stills:
            return None, f"footage folder {path} holds no images"
        footage.clip = track(bpy.data.movieclips.load(str(stills[0]), check_existing=True))
        if want_texture:
            footage.image = track(bpy.data.images.load(str(stills[0]), check_existing=True))
            footage.image.source = "SEQUENCE"
        return footage, ""
    if suffix in VIDEO_SUFFIXES:
        footage.clip = track(bpy.data.movieclips.load(str(path), check_existing=True))
        if want_texture:
            footage.image = track(bpy.data.images.load(str(path), check_existing=True))
        return footage, ""
    if suffix in IMAGE_SUFFIXES:
        footage.image = track(bpy.data.images.load(str(path), check_existing=True))
        return footage, ""
    return None, f"footage {path} is neither a video nor an image Blender reads"


def _new_background(cam: bpy.types.Camera):
    """A background image slot behind the scene, stretched over the frame (the render frame has the
    footage's size and pixel aspect)."""
    cam.show_background_images = True
    bg = cam.background_images.new()
    bg.display_depth = "BACK"
    bg.frame_method = "STRETCH"
    return bg


def set_background(cam: bpy.types.Camera, footage: Footage) -> None:
    """Show the footage behind the camera view, aligned so footage frame i is scene frame i + 1."""
    bg = _new_background(cam)
    bg.alpha = 1.0
    if footage.clip is not None:
        bg.source = "MOVIE_CLIP"
        bg.clip = footage.clip
        bg.clip_user.proxy_render_size = "FULL"
        footage.clip.frame_start = FRAME_OFFSET
    else:
        bg.source = "IMAGE"
        bg.image = footage.image


def frame_numbers(result: rf.HeadcastResult) -> np.ndarray:
    """Blender frame of each result frame."""
    return result["frame_indices"].astype(np.int64) + FRAME_OFFSET


def apply_scene_settings(scene: bpy.types.Scene, result: rf.HeadcastResult, settings: dict, camera_object,
                         footage: Footage | None) -> None:
    """fps (exact, via fps_base), frame range, render size and pixel aspect, active camera and clip."""
    fps = result.fps
    fps_int = max(1, int(round(fps)))
    scene.render.fps = fps_int
    scene.render.fps_base = fps_int / fps
    frames = frame_numbers(result)
    scene.frame_start, scene.frame_end = int(frames[0]), int(frames[-1])
    scene.frame_current = int(frames[0])
    w, h = result.image_size
    scene.render.resolution_x, scene.render.resolution_y = w, h
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = settings["pixel_aspect_x"]
    scene.render.pixel_aspect_y = settings["pixel_aspect_y"]
    scene.camera = camera_object
    if footage is not None and footage.clip is not None:
        scene.active_clip = footage.clip
