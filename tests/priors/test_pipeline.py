# SPDX-License-Identifier: GPL-3.0-or-later
"""compute_priors: the lower-accuracy mode without weights, and network priors with (tiny) weights."""
from __future__ import annotations

import logging
import warnings

import numpy as np

from headcast.priors import MODE_LANDMARKS, MODE_NETWORKS, PriorPredictor, compute_priors, uv_cue
from headcast.priors.footage import is_flame_topology

from .official_checkpoint import random_network, tiny_config, write_official_checkpoint


def _weights(folder):
    write_official_checkpoint(folder / "uv.ckpt", random_network(tiny_config(), seed=0))
    write_official_checkpoint(folder / "normals.ckpt", random_network(tiny_config(outputs=(("normals", 3),)), seed=1))
    return folder


def test_without_weights_runs_in_the_reported_lower_accuracy_mode(astronaut_prepared, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        priors = compute_priors(None, prepared=astronaut_prepared)
    assert priors.mode == MODE_LANDMARKS and priors.uv is None and priors.normals is None
    assert "lower-accuracy" in caplog.text and "lower accuracy" in priors.description
    assert priors.landmarks.found.all()
    empty = compute_priors(None, tmp_path, prepared=astronaut_prepared)  # a folder without weights
    assert empty.mode == MODE_LANDMARKS and any("no uv.ckpt / normals.ckpt" in n for n in empty.notes)


def test_with_weights_gives_uv_and_normal_cues(astronaut_prepared, tmp_path):
    folder = _weights(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        priors = compute_priors(None, folder, prepared=astronaut_prepared, device="cpu", batch_size=1)
        predictor = PriorPredictor.from_weights_dir(folder, device="cpu")
    assert priors.mode == MODE_NETWORKS and "full accuracy" in priors.description
    assert priors.uv.shape == (1, 512, 512, 2) and priors.normals.shape == (1, 512, 512, 3)
    maps = predictor.predict(astronaut_prepared.crops)  # the official 512 crops, no resizing
    np.testing.assert_allclose(priors.uv, uv_cue(maps.uv), atol=1e-5)  # cue = model uv convention
    np.testing.assert_allclose(priors.normals, maps.normals, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(priors.normals, axis=-1), 1.0, atol=1e-4)


def test_uv_prior_only_for_flame_topology(astronaut_prepared, synthetic_model, tmp_path):
    import dataclasses

    # a head with its own mesh and uv layout (as the open MakeHuman head): no FLAME uv prior
    other = dataclasses.replace(synthetic_model, name="another-head")
    assert not is_flame_topology(other)
    assert is_flame_topology(synthetic_model)  # the synthetic stand-in plays FLAME's part
    folder = _weights(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        priors = compute_priors(None, folder, model=other, prepared=astronaut_prepared, device="cpu")
    assert priors.mode == MODE_NETWORKS and priors.uv is None and priors.normals is not None
    assert any("does not have FLAME's topology" in n for n in priors.notes)
