# SPDX-License-Identifier: GPL-3.0-or-later
"""Headcast's result file (``*.headcast.npz``) and mesh exports.

:mod:`headcast.io.result_file` is the format itself (numpy and the standard library only; the
Blender extension ships the same file). :mod:`headcast.io.writer` builds results from a
:class:`~headcast.flame.HeadModel` and per-frame fit parameters; :mod:`headcast.io.export`
writes OBJ/PLY per frame and a GLB of the neutral head.
"""
from .export import export_frames, export_glb_neutral, frame_vertices, split_uv_seams, write_obj
from .result_file import (ARRAY_SPECS, FORMAT_VERSION, METADATA_FIELDS, RESULT_SUFFIX, HeadcastResult,
                          ResultFileError, evaluate_rig, load_result, model_to_camera, project_to_pixels,
                          rest_joints, save_result, sidecar_path)
from .writer import ClipInfo, FrameParameters, build_result, identity_template, posed_vertices, rig_arrays, write_result

__all__ = [
    "ARRAY_SPECS", "FORMAT_VERSION", "METADATA_FIELDS", "RESULT_SUFFIX", "HeadcastResult", "ResultFileError",
    "evaluate_rig", "load_result", "model_to_camera", "project_to_pixels", "rest_joints", "save_result",
    "sidecar_path", "ClipInfo", "FrameParameters", "build_result", "identity_template", "posed_vertices",
    "rig_arrays", "write_result", "export_frames", "export_glb_neutral", "frame_vertices", "split_uv_seams",
    "write_obj",
]
