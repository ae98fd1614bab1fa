# SPDX-License-Identifier: GPL-3.0-or-later
"""FLAME-format head models: loaders for the real files, the torch forward pass, and a synthetic stand-in."""
from .headmodel import FLAME_JOINT_NAMES, HeadModel, LandmarkEmbedding, ModelFileError, SurfacePoints
from .layer import HeadLayer, HeadOutput, barycentric_points
from .lbs import (axis_angle_to_matrix, identity_6d, matrix_to_axis_angle, matrix_to_rotation_6d,
                  rotation_6d_to_matrix, vertex_normals)
from .loaders import (load_eyelids, load_head_model, load_landmark_embedding, load_masks, load_model_file,
                      load_obj, save_model_npz)

__all__ = [
    "FLAME_JOINT_NAMES", "HeadModel", "SurfacePoints", "LandmarkEmbedding", "ModelFileError", "HeadLayer", "HeadOutput",
    "barycentric_points", "axis_angle_to_matrix", "identity_6d", "matrix_to_axis_angle",
    "matrix_to_rotation_6d", "rotation_6d_to_matrix", "vertex_normals", "load_eyelids", "load_head_model",
    "load_landmark_embedding", "load_masks", "load_model_file", "load_obj", "save_model_npz",
]
