# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared fixtures: the synthetic model is built once per session and written to a temp folder."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))
os.environ.setdefault("OMP_NUM_THREADS", "2")
# OpenMP threads that spin while waiting stall torch badly when the two cores are shared with
# other processes (measured: 3 ms -> 76 ms per FLAME forward); sleeping waits avoid that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_addoption(parser):
    parser.addoption("--bpy-version", default=os.environ.get("HEADCAST_BPY_VERSION", ""),
                     help="Blender version the bpy tests must run on, e.g. 4.5 or 5.0 (fails on any other)")


@pytest.fixture(scope="session")
def synthetic_model():
    from headcast.flame.synthetic import build_synthetic_model
    return build_synthetic_model(seed=0)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory, synthetic_model):
    from headcast.flame.synthetic import write_synthetic_model
    out = tmp_path_factory.mktemp("synthetic_flame")
    write_synthetic_model(out, seed=0, model=synthetic_model)
    return out


@pytest.fixture(scope="session")
def open_head_pack(tmp_path_factory):
    """Path of a freshly built open-head pack (with its MediaPipe embedding) in a temporary cache.

    Shared by the model tests and the Blender test of the open head on a photo (one build a session).
    """
    pytest.importorskip("mediapipe")
    from headcast.models import build_open_head

    out = tmp_path_factory.mktemp("headcast_cache") / "models" / "open-head-test.npz"
    return build_open_head(out)
