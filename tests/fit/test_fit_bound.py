# SPDX-License-Identifier: GPL-3.0-or-later
"""The lower-bound analysis of scripts/bench_fit_bound.py: its linear algebra against direct
dense computations, its Bayes optimality, and its finite-difference Jacobians against autograd."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bench_fit_bound as B  # noqa: E402


def _random_points(rng, n=150, size=64.0):
    return rng.uniform(10.0, size - 10.0, size=(n, 2))


def test_woodbury_products_match_the_dense_covariance():
    rng = np.random.default_rng(0)
    pts = _random_points(rng)
    phi = B.gaussian_grid_basis(pts, 6.0, 64, 4.0)
    J = rng.normal(size=(len(pts), 5))
    smooth, white = 0.1, 0.07
    C = white ** 2 * np.eye(len(pts)) + smooth ** 2 * (phi @ phi.T).toarray()
    jtj, jtcj, fisher = B.smooth_plus_white_products(J, phi, smooth, white)
    np.testing.assert_allclose(jtj, J.T @ J, rtol=1e-12)
    np.testing.assert_allclose(jtcj, J.T @ C @ J, rtol=1e-10)
    np.testing.assert_allclose(fisher, J.T @ np.linalg.solve(C, J), rtol=1e-6, atol=1e-8)


def test_grid_basis_reproduces_the_filtered_noise_covariance():
    """Phi Phi^T approximates exp(-d^2 / (4 sigma^2)), the covariance of white noise filtered by
    a Gaussian of sigma and scaled to unit variance (checked against such noise, drawn)."""
    from scipy.ndimage import gaussian_filter

    sigma = 6.0
    rng = np.random.default_rng(1)
    pts = np.array([[32.0, 32.0], [36.0, 32.0], [32.0, 44.0], [40.0, 40.0]])
    phi = B.gaussian_grid_basis(pts, sigma, 64, 4.0)
    approx = (phi @ phi.T).toarray()
    d2 = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    np.testing.assert_allclose(approx, np.exp(-d2 / (4 * sigma ** 2)), atol=0.02)
    # and the kernel itself is what synthetic_cues' smooth fields have: sample them
    ix, iy = (pts - 0.5).astype(int).T
    draws = []
    for _ in range(400):
        f = gaussian_filter(rng.normal(size=(64, 64)), sigma, mode="wrap")
        f /= np.sqrt(np.mean(f ** 2))
        draws.append(f[iy, ix])
    emp = np.cov(np.array(draws).T)
    np.testing.assert_allclose(emp, np.exp(-d2 / (4 * sigma ** 2)), atol=0.15)


def _toy_cues(rng, dim=6):
    pts = _random_points(rng, 120)
    phi = B.gaussian_grid_basis(pts, 8.0, 64, 4.0)
    cues = {}
    for name, (sm, wh) in {"normals": (0.1, 0.07), "uv": (1.5, 0.3)}.items():
        J = rng.normal(size=(len(pts), dim))
        cues[name] = B.Cue.of([B.smooth_plus_white_products(J, phi, sm, wh)], sm ** 2 + wh ** 2)
    prior = np.diag(rng.uniform(0.5, 2.0, size=dim))
    return cues, prior


def test_full_weights_give_the_posterior_covariance():
    rng = np.random.default_rng(2)
    cues, prior = _toy_cues(rng)
    cov = B.estimator_covariance(cues, prior, {})
    np.testing.assert_allclose(cov, np.linalg.inv(prior + sum(c.fisher for c in cues.values())), rtol=1e-8)


@pytest.mark.parametrize("weights", [{"normals": 1.0, "uv": 1.0}, {"normals": 0.01, "uv": 0.3},
                                     {"normals": 0.0}, {"uv": 5.0}])
def test_no_other_weighting_beats_the_bound(weights):
    """The error covariance of any other weighting exceeds the posterior's (Loewner order):
    the bound is a bound, and the estimator formula is consistent with it."""
    rng = np.random.default_rng(3)
    cues, prior = _toy_cues(rng)
    best = B.estimator_covariance(cues, prior, {})
    other = B.estimator_covariance(cues, prior, weights)
    assert np.linalg.eigvalsh(other - best).min() > -1e-10
    assert np.trace(other) > np.trace(best) * 1.001


def test_estimator_covariance_matches_a_simulation():
    """A second code path: draw parameters from the prior and cue errors with their covariance,
    apply the weighted linear estimator, and compare its empirical error covariance."""
    rng = np.random.default_rng(4)
    dim, n = 3, 60
    pts = _random_points(rng, n)
    phi = B.gaussian_grid_basis(pts, 8.0, 64, 4.0)
    sm, wh = 0.5, 0.2
    C = wh ** 2 * np.eye(n) + sm ** 2 * (phi @ phi.T).toarray()
    J = rng.normal(size=(n, dim))
    cue = B.Cue.of([B.smooth_plus_white_products(J, phi, sm, wh)], sm ** 2 + wh ** 2)
    prior = np.diag([1.0, 2.0, 0.5])
    w = 0.2
    predicted = B.estimator_covariance({"c": cue}, prior, {"c": w})
    a = w / (sm ** 2 + wh ** 2)
    H = a * J.T @ J + prior
    theta = rng.multivariate_normal(np.zeros(dim), np.linalg.inv(prior), size=20000)
    noise = rng.multivariate_normal(np.zeros(n), C, size=20000)
    y = theta @ J.T + noise
    est = np.linalg.solve(H, a * J.T @ y.T).T
    emp = np.cov((est - theta).T)
    np.testing.assert_allclose(emp, predicted, rtol=0.06, atol=1e-4)


def test_scene_jacobians_match_autograd(synthetic_model):
    """The central-difference Jacobians of the vertex positions and of the rendered normals
    against torch's reverse mode through the same model and renderer."""
    from headcast.fit import synthetic_cues as sc
    from headcast.fit.head import FitHead
    from headcast.render import interpolate, project_points, rasterize, vertex_normals

    model = synthetic_model
    truth = sc.random_truth(model, np.random.default_rng(5), 1, 64, n_shape=6, n_expr=3)
    head = FitHead(model, 6, 3, torch.float64)
    scene = B.Scene(model, truth, head)
    assert np.allclose(scene.result(np.zeros(scene.dim)).vertices(model), truth.vertices(model))
    base = scene.render(np.zeros(scene.dim))
    covered = np.argwhere(base["face_id"] >= 0)
    _, Jn, ok, Jv, _ = B.jacobians(scene, covered, log=lambda *a: None)
    assert ok.mean() > 0.9

    sl = scene.slices["shape"]
    dt = torch.float64
    beta = torch.as_tensor(truth.shape, dtype=dt).clone().requires_grad_(True)
    rots = torch.as_tensor(truth.rotations[0], dtype=dt)[None]

    def screen_of(b):
        verts, noneck = head.forward(b[None], torch.as_tensor(truth.expression[0], dtype=dt)[None],
                                     torch.as_tensor(truth.eyelids[0], dtype=dt)[None], rots, want_noneck=True)
        vcam = verts @ torch.as_tensor(truth.R_head[0], dtype=dt).T + torch.as_tensor(truth.t_head[0], dtype=dt)
        return project_points(vcam, *(float(v) for v in truth.intrinsics[0])), noneck

    some = np.random.default_rng(7).choice(model.n_vertices, 60, replace=False)
    jac = torch.autograd.functional.jacobian(lambda b: screen_of(b)[0][0, some, :2], beta,
                                             vectorize=True).numpy()  # [60, 2, 6]
    np.testing.assert_allclose(Jv[some][:, :, sl], jac, rtol=1e-5, atol=1e-6 * np.abs(jac).max())

    # normals: a vector-Jacobian product (one backward pass) against the same product of the FD Jacobian
    screen, noneck = screen_of(beta)
    rast = rasterize(screen, head.faces, truth.image_size, cull_backfaces=True)
    img = interpolate(vertex_normals(noneck, head.faces), rast, head.faces)[0]
    img = img / img.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    ys, xs = covered[ok].T
    v = torch.as_tensor(np.random.default_rng(6).normal(size=(len(ys), 3)), dtype=dt)
    (img[ys, xs] * v).sum().backward()
    fd = np.einsum("pc,pck->k", v.numpy(), Jn[ok][:, :, sl])
    np.testing.assert_allclose(fd, beta.grad.numpy(), rtol=2e-3, atol=1e-6 * np.abs(fd).max())
