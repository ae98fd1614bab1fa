# SPDX-License-Identifier: GPL-3.0-or-later
"""Footage, tiny network checkpoints and fast settings for the end-to-end pipeline tests."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

# Light fitting settings: the tests prove the plumbing and the contracts; accuracy is the
# fitting's own tests' and benchmark's business.
FAST = {"fit.render_size": 128, "fit.steps": 30, "fit.camera_steps": 30, "fit.first_frame_steps": 30,
        "fit.online_steps": 10, "fit.global_epochs": 1.0}


def fast_env(tmp_path: Path, **extra: str) -> dict:
    """Environment for a headcast subprocess: fast settings, private config and cache."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "backend"), HEADCAST_CONFIG=str(tmp_path / "no-config.toml"),
               HEADCAST_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="2")
    for dotted, value in FAST.items():
        section, key = dotted.split(".")
        env[f"HEADCAST_{section.upper()}_{key.upper()}"] = str(value)
    env.update(extra)
    return env


def headcast_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "headcast.cli", *map(str, args)]


@pytest.fixture(scope="session")
def astronaut_png(tmp_path_factory):
    import skimage.data

    from headcast.synthetic_footage import write_image
    return write_image(skimage.data.astronaut(), tmp_path_factory.mktemp("photos") / "astronaut.png")


@pytest.fixture(scope="session")
def synthetic_clip_mp4(synthetic_model, tmp_path_factory):
    from headcast.synthetic_footage import render_synthetic_clip, write_video

    clip = render_synthetic_clip(synthetic_model, n_frames=8, seed=3)
    return write_video(clip.frames, tmp_path_factory.mktemp("clips") / "head.mp4", fps=25.0)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Randomly initialised uv and normals networks in the official checkpoint layout."""
    from priors.official_checkpoint import random_network, tiny_config, write_official_checkpoint

    folder = tmp_path_factory.mktemp("weights")
    write_official_checkpoint(folder / "uv.ckpt", random_network(tiny_config(outputs=(("uv_map", 2),)), seed=1))
    write_official_checkpoint(folder / "normals.ckpt", random_network(tiny_config(outputs=(("normals", 3),)), seed=2))
    return folder


@pytest.fixture
def fast_settings(tmp_path):
    from headcast.config import load_settings

    def make(**overrides):
        return load_settings(tmp_path / "none.toml", env={}, overrides={**FAST, "output.cache_dir": str(tmp_path / "cache"),
                                                                         **overrides})
    return make


def rig_vertices_reference(result_path, model):
    """Posed camera-frame vertices of every frame, recomputed with the torch FLAME layer."""
    import torch

    from headcast.flame import HeadLayer
    from headcast.io import load_result

    r = load_result(result_path)
    a = r.arrays
    layer = HeadLayer(model, dtype=torch.float64)
    out = layer(torch.tensor(a["shape"][None].repeat(len(a["expression"]), 0), dtype=torch.float64),
                torch.tensor(a["expression"], dtype=torch.float64), torch.tensor(a["joint_rotations"], dtype=torch.float64),
                eyelids=None if "eyelids" not in a else torch.tensor(a["eyelids"], dtype=torch.float64))
    v = out.vertices.numpy()
    return np.einsum("nij,nvj->nvi", a["head_rotation"], v) + a["head_translation"][:, None]
