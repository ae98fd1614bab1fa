# SPDX-License-Identifier: GPL-3.0-or-later
import os
import sys

import pytest

# make the shared helpers importable whatever pytest's import mode
sys.path.insert(0, os.path.dirname(__file__))

from render_helpers import uv_sphere_head  # noqa: E402


@pytest.fixture(scope="session")
def head_mesh():
    """Head-like closed mesh, 4902 v / 9800 f (FLAME axes, metres)."""
    return uv_sphere_head()


@pytest.fixture(scope="session")
def small_head_mesh():
    """A coarser head-like mesh (1520 f) for full-image brute force."""
    return uv_sphere_head(n_lat=20, n_lon=40)
