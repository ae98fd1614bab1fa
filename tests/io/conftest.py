# SPDX-License-Identifier: GPL-3.0-or-later
"""Result files written from the synthetic model, shared by the tests of this package."""
import pytest

from headcast.io import ClipInfo, build_result
from headcast.io.synthetic import synthetic_frames, synthetic_shape

N_FRAMES = 30


@pytest.fixture(scope="session")
def clip_params(synthetic_model):
    """Identity, 30 frames of smooth parameters (one invalid frame in seven) and clip info."""
    shape = synthetic_shape(synthetic_model, seed=1)
    frames = synthetic_frames(synthetic_model, N_FRAMES, seed=2, invalid_every=7, first_frame=5)
    clip = ClipInfo(source_path="/footage/talking_head.mp4", image_size=(640, 480), fps=25.0,
                    network_weights={"uv": "uv.ckpt", "normals": "normals.ckpt"})
    return shape, frames, clip


@pytest.fixture(scope="session")
def result64(synthetic_model, clip_params):
    """The result with float64 rig arrays and the backend's posed vertices."""
    shape, frames, clip = clip_params
    return build_result(synthetic_model, shape, frames, clip, include_posed_vertices=True, dtype="float64")


@pytest.fixture(scope="session")
def result_path(tmp_path_factory, synthetic_model, clip_params):
    """The result as the pipeline writes it: float32 rig, posed vertices, JSON sidecar."""
    from headcast.io import write_result

    shape, frames, clip = clip_params
    path = tmp_path_factory.mktemp("result") / "talking_head.headcast.npz"
    return write_result(path, synthetic_model, shape, frames, clip, include_posed_vertices=True)
