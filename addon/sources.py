# SPDX-License-Identifier: GPL-3.0-or-later
"""Which footage a job works on (a chosen file, the editor's active image or clip, the panel's field)
and where its result file goes."""
from __future__ import annotations

import os
from pathlib import Path

import bpy

RESULT_SUFFIX = ".headcast.npz"


class SourceError(ValueError):
    """No usable input: the message says what to choose or fix."""


def absolute(path: str) -> Path:
    """A Blender path (``//`` relative to the .blend) as an absolute path."""
    return Path(os.path.abspath(bpy.path.abspath(path)))


def active_image_path(context) -> Path | None:
    """The file of the image shown in the Image editor the operator runs from, if any."""
    space = getattr(context, "space_data", None)
    image = getattr(space, "image", None) if space is not None and space.type == "IMAGE_EDITOR" else None
    if image is None:
        return None
    if image.source not in ("FILE", "SEQUENCE", "MOVIE") or not image.filepath or image.packed_file is not None:
        raise SourceError(f"the active image '{image.name}' is not a file on disk; save it first or choose a file")
    return absolute(image.filepath)


def editor_clip_path(context) -> Path | None:
    """The footage of the clip shown in the Movie Clip editor the operator runs from, if any."""
    space = getattr(context, "space_data", None)
    clip = getattr(space, "clip", None) if space is not None and space.type == "CLIP_EDITOR" else None
    return clip_path(clip) if clip is not None else None


def scene_clip_path(context) -> Path | None:
    clip = context.scene.active_clip
    return clip_path(clip) if clip is not None else None


def clip_path(clip) -> Path:
    path = absolute(clip.filepath)
    # an image sequence clip points at its first image; the backend takes the folder
    return path.parent if clip.source == "SEQUENCE" else path


def existing(path: Path, what: str) -> Path:
    if not path.exists():
        raise SourceError(f"{what} not found: {path}")
    return path


def result_path(context, source: Path, explicit: str = "") -> Path:
    """Where a job's result goes: ``explicit``, else the panel's results folder, else ``//headcast/``
    next to a saved .blend, else next to the footage."""
    if explicit:
        return absolute(explicit)
    folder = context.scene.headcast.output_dir
    if folder:
        base = absolute(folder)
    elif bpy.data.filepath:
        base = Path(bpy.data.filepath).parent / "headcast"
    else:
        base = source.parent
    stem = source.name if source.is_dir() else source.stem
    return base / f"{stem}{RESULT_SUFFIX}"
