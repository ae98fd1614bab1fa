# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared scenes for the fitting tests: ground truth drawn on the synthetic model and its
exact cues, rendered once per session at small sizes."""
import os

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    yield


@pytest.fixture(scope="session")
def scene128(synthetic_model):
    """One random frame at 128 px: (truth FitResult, SyntheticFrame)."""
    from headcast.fit import synthetic_cues as sc

    rng = np.random.default_rng(3)
    truth = sc.random_truth(synthetic_model, rng, 1, 128)
    return truth, sc.render_cues(synthetic_model, truth, 0)


@pytest.fixture(scope="session")
def exact_fit128(synthetic_model, scene128):
    """The single-image fit of the exact cues of ``scene128`` (shared by several tests)."""
    from headcast.fit import FitConfig, fit_images

    truth, frame = scene128
    stages = []
    fit = fit_images(synthetic_model, [frame.cues], FitConfig(steps=400),
                     progress=lambda stage, f, n, step, loss: stages.append((stage, f, n, step, loss)))
    return fit, stages
