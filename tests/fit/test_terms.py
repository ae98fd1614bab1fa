# SPDX-License-Identifier: GPL-3.0-or-later
"""Each term of the fitting energy, through the model, the camera and the renderer, pulls a
perturbed parameter back toward the truth (exact cues rendered from the truth)."""
import numpy as np
import pytest
import torch

from headcast.fit import FitConfig
from headcast.fit import synthetic_cues as sc
from headcast.fit.energy import EnergyOptions, prepare_frame
from headcast.fit.solver import Fitter

SIZE = 96
ZERO = dict(w_uv_vertex=0.0, w_uv_dense=0.0, w_normal=0.0, w_silhouette=0.0, w_lid=0.0,
            landmark_weights={}, landmark_weights_without_dense={})
TERMS = {
    "uv_vertex": dict(w_uv_vertex=2e5),
    "uv_dense": dict(w_uv_dense=2e5),
    "normal": dict(w_normal=1000.0),
    "silhouette": dict(w_silhouette=500.0),
    "landmarks": dict(landmark_weights={"eyes": 1000.0, "mouth": 1000.0, "contour": 1000.0, "nose": 1000.0}),
    "iris": dict(landmark_weights={"iris": 1e4}),
}


@pytest.fixture(scope="module")
def scene96(synthetic_model):
    rng = np.random.default_rng(11)
    truth = sc.random_truth(synthetic_model, rng, 1, SIZE, max_yaw_deg=15.0)
    return truth, sc.render_cues(synthetic_model, truth, 0)


def _fitter_at_truth(model, truth, weights):
    cfg = FitConfig(**{**ZERO, **weights})
    f = Fitter(model, cfg, (SIZE, SIZE), 1)
    f.load_shared(truth.shape, truth.intrinsics[0])
    f.load_frame_fit(truth.frame(0))
    return f


def _grad(f, frame, name):
    p = f.params
    f.opt.zero_grad()
    total, _, terms = f.energy(p, [0], [frame], EnergyOptions(regularize=False))
    total.backward()
    return getattr(p, name).grad


@pytest.mark.parametrize("term", list(TERMS))
def test_translation_is_pulled_back(synthetic_model, scene96, term):
    truth, frame = scene96
    f = _fitter_at_truth(synthetic_model, truth, TERMS[term])
    pf = prepare_frame(f.head, frame.cues, f.cfg, (SIZE, SIZE))
    for axis, delta in ((0, 0.004), (1, -0.004)):
        with torch.no_grad():
            f.load_frame_fit(truth.frame(0))
            f.params.t[0, axis] += delta
        g = _grad(f, pf, "t")[0, axis]
        # descent (-g) must move t back: sign(-g) == -sign(delta)
        assert float(g) * delta > 0, f"{term}: translation axis {axis} gradient {float(g)} for offset {delta}"


@pytest.mark.parametrize("term", ["uv_vertex", "uv_dense", "normal", "landmarks"])
def test_expression_is_pulled_back(synthetic_model, scene96, term):
    """A wrong expression (the truth plus a random offset) gets a gradient whose descent
    direction reduces the offset."""
    truth, frame = scene96
    f = _fitter_at_truth(synthetic_model, truth, TERMS[term])
    pf = prepare_frame(f.head, frame.cues, f.cfg, (SIZE, SIZE))
    offset = torch.zeros(f.head.n_expr, dtype=f.params.expr.dtype)
    offset[:8] = torch.tensor(np.random.default_rng(2).choice([-1.0, 1.0], size=8) * 0.8)
    with torch.no_grad():
        f.params.expr[0] += offset
    g = _grad(f, pf, "expr")[0]
    assert float((g * offset).sum()) > 0, term


@pytest.mark.parametrize("term", ["uv_vertex", "uv_dense", "normal", "silhouette", "landmarks"])
def test_head_rotation_is_pulled_back(synthetic_model, scene96, term):
    """Yawing the head by 3 degrees: a small step along -gradient reduces the angle to the truth."""
    from headcast.flame.lbs import matrix_to_rotation_6d, rotation_6d_to_matrix

    truth, frame = scene96
    f = _fitter_at_truth(synthetic_model, truth, TERMS[term])
    pf = prepare_frame(f.head, frame.cues, f.cfg, (SIZE, SIZE))
    a = np.radians(3.0)
    yaw = torch.tensor([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]], dtype=f.params.R.dtype)
    R_true = torch.as_tensor(truth.R_head[0], dtype=f.params.R.dtype)
    with torch.no_grad():
        f.params.R[0] = matrix_to_rotation_6d(R_true @ yaw)
    g = _grad(f, pf, "R")[0]

    def angle(d6):
        R = rotation_6d_to_matrix(d6)
        c = ((R_true.T @ R).trace() - 1) / 2
        return float(torch.arccos(c.clamp(-1, 1)))

    before = angle(f.params.R[0].detach())
    after = angle(f.params.R[0].detach() - 1e-3 * g / g.norm())
    assert after < before, f"{term}: {np.degrees(before):.3f} -> {np.degrees(after):.3f} deg"


def test_energy_is_near_zero_at_the_truth(synthetic_model, scene96):
    """With exact cues the data terms vanish at the truth (up to pixel sampling): the energy
    has its minimum where the synthetic head is."""
    truth, frame = scene96
    weights = {k: v for w in TERMS.values() for k, v in w.items() if k != "landmark_weights"}
    weights["landmark_weights"] = {"eyes": 1000.0, "iris": 1e4}
    f = _fitter_at_truth(synthetic_model, truth, weights)
    pf = prepare_frame(f.head, frame.cues, f.cfg, (SIZE, SIZE))
    _, _, at_truth = f.energy(f.params, [0], [pf], EnergyOptions(regularize=False))
    with torch.no_grad():
        f.params.t[0, 0] += 0.003
    _, _, moved = f.energy(f.params, [0], [pf], EnergyOptions(regularize=False))
    for k in ("uv_vertex", "uv_dense", "normal", "silhouette", "landmarks"):
        assert float(at_truth[k][0]) < 0.05 * float(moved[k][0]) + 1e-6, (k, float(at_truth[k][0]), float(moved[k][0]))
