# SPDX-License-Identifier: GPL-3.0-or-later
"""scripts/bench_fit_basin.py: a head loaded into a fitter is that head (its vertices against
the result's own posing, its exact cues' residuals near zero), and a scene's report holds
together."""
import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bench_fit  # noqa: E402
import bench_fit_basin as B  # noqa: E402

SIZE = 96


@pytest.fixture(scope="module")
def bench():
    return bench_fit.Bench(argparse.Namespace(threads=2, override="", steps=20, size=SIZE))


def test_a_loaded_head_is_that_head_and_fits_its_exact_cues(bench):
    from headcast.fit import fit_images
    from headcast.fit import synthetic_cues as sc
    from headcast.fit.energy import prepare_frame

    truth, frames, rng = bench.scene(0)
    cues = sc.corrupt(frames[0], rng, None)
    fit = fit_images(bench.model, [cues], bench.cfg, image_size=SIZE)
    f = B.fitter_like(bench.model, fit, bench.cfg, (SIZE, SIZE))
    assert f.prior_scale == fit.info["prior_scale"] and f.cue_noise == fit.info["cue_noise"]
    frame = prepare_frame(f.head, cues, bench.cfg, f.size)

    B.load_head(f, fit)
    e_fit = B.energy_terms(f, frame)
    B.load_head(f, truth)
    loaded = f.result(np.ones(1, bool), shared_camera=True)
    # the fitter's own posing (float32) against FitResult.vertices (float64 numpy)
    np.testing.assert_allclose(loaded.vertices(bench.model), truth.vertices(bench.model), atol=2e-6)
    np.testing.assert_allclose(loaded.intrinsics, truth.intrinsics, rtol=1e-6)
    e_truth = B.energy_terms(f, frame)
    # the cues were rendered from this head: its dense residuals vanish, a 20-step fit's do not
    assert e_truth["normal"] < 0.02 * e_fit["normal"]
    assert e_truth["uv_dense"] < 0.02 * e_fit["uv_dense"]


def test_scene_report_starts_the_last_stage_at_the_truth(bench):
    r = B.scene_report(bench, 1, "exact")
    assert set(r) >= {"fit", "e_fit", "e_truth", "from_truth", "e_after"}
    # 20 steps leave the fit millimetres off; eight steps from the truth move it far less
    assert r["from_truth"] < 0.5 * r["fit"]
    # exact cues: at the truth the dense terms vanish (the priors need not: 20 steps keep them strong)
    for term in ("normal", "uv_dense"):
        assert r["e_truth"][term] < 0.02 * r["e_fit"][term]
