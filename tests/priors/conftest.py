# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures for the priors tests: tiny networks, the astronaut photo, a synthetic clip, the embedding."""
from __future__ import annotations

import numpy as np
import pytest
import torch



@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    yield


@pytest.fixture(scope="session")
def astronaut():
    from skimage.data import astronaut as load

    return np.ascontiguousarray(load())


@pytest.fixture(scope="session")
def astronaut_prepared(astronaut):
    from headcast.priors import prepare_footage

    return prepare_footage(astronaut)


@pytest.fixture(scope="session")
def synthetic_embedding(synthetic_model, tmp_path_factory):
    from headcast.priors.embedding import build_mediapipe_embedding

    cache = tmp_path_factory.mktemp("mp_embedding")
    emb, report = build_mediapipe_embedding(synthetic_model, cache, return_report=True)
    return emb, report, cache


CLIP_OFFSETS = [(120, 60), (124, 61), (128, 63), (133, 64), (0, 0), (140, 66), (143, 68), (147, 69), (150, 71)]
CLIP_BLANK = 4  # this frame shows no face


@pytest.fixture(scope="session")
def synthetic_clip(synthetic_model, tmp_path_factory):
    """A 9-frame mp4 (640x480, 25 fps) of the synthetic head sliding right/down; frame 4 is empty.

    Returns (path, offsets [N, 2] of the head render's top-left corner in the frame, the render).
    """
    import cv2

    from headcast.priors.embedding import render_template, template_camera

    render = render_template(synthetic_model, template_camera(synthetic_model, 0.0, 0.0, 320)).image
    path = tmp_path_factory.mktemp("clip") / "synthetic_head.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 480))
    assert writer.isOpened()
    for i, (x, y) in enumerate(CLIP_OFFSETS):
        frame = np.full((480, 640, 3), 77, np.uint8)
        if i != CLIP_BLANK:
            frame[y:y + 320, x:x + 320] = render
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path, np.array(CLIP_OFFSETS, dtype=np.float64), render


@pytest.fixture(scope="session")
def synthetic_clip_prepared(synthetic_clip):
    from headcast.priors import prepare_footage

    return prepare_footage(synthetic_clip[0])
