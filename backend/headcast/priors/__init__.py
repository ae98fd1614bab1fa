# SPDX-License-Identifier: GPL-3.0-or-later
"""Priors from real footage: face crops, MediaPipe landmarks and masks, Pixel3DMM uv/normal maps.

* :func:`prepare_footage` / :func:`compute_priors`: photo, image folder or video -> 512x512
  crops (official static-crop rule, box kept), 478 landmarks, face mask, and with the user's
  Pixel3DMM weights the uv and normal cues; without weights the lower-accuracy
  landmarks + mask mode;
* :class:`PriorNetwork`, :func:`load_prior_network`, :class:`PriorPredictor`: our own
  implementation of the Pixel3DMM networks, loading the official ``uv.ckpt`` /
  ``normals.ckpt`` without Lightning or OmegaConf;
* :mod:`.conventions`: the official TTA, decoding and PNG formats, and the fitting's cue
  conventions;
* :func:`build_mediapipe_embedding`: MediaPipe-478 landmarks on any head model by
  render-and-detect;
* :mod:`.landmark_sets`: named MediaPipe landmark subsets.
"""
from .checkpoint import CheckpointError, infer_config, load_prior_network, read_checkpoint
from .conventions import (decode_normals, decode_uv, flip_merge, normals_cue, read_normals_png,
                          read_official_outputs, read_uv_png, uv_cue, write_normals_png,
                          write_official_outputs, write_uv_png)
from .crop import CropBox, box_of_points, clip_crop_box
from .embedding import EmbeddingError, build_mediapipe_embedding, embedded_points
from .footage import (MODE_LANDMARKS, MODE_NETWORKS, FramePriors, LandmarkCues, PreparedFootage,
                      compute_priors, prepare_footage)
from .frames import Footage, FootageError, read_footage
from .landmark_sets import LANDMARK_SETS, landmark_set
from .network import PriorNetConfig, PriorNetwork
from .predictor import PriorMaps, PriorPredictor, find_weights

__all__ = [
    "CheckpointError", "infer_config", "load_prior_network", "read_checkpoint",
    "decode_normals", "decode_uv", "flip_merge", "normals_cue", "read_normals_png", "read_official_outputs",
    "read_uv_png", "uv_cue", "write_normals_png", "write_official_outputs", "write_uv_png",
    "CropBox", "box_of_points", "clip_crop_box",
    "EmbeddingError", "build_mediapipe_embedding", "embedded_points",
    "MODE_LANDMARKS", "MODE_NETWORKS", "FramePriors", "LandmarkCues", "PreparedFootage", "compute_priors",
    "prepare_footage", "Footage", "FootageError", "read_footage", "LANDMARK_SETS", "landmark_set",
    "PriorNetConfig", "PriorNetwork", "PriorMaps", "PriorPredictor", "find_weights",
]
