# SPDX-License-Identifier: GPL-3.0-or-later
"""Nearest-uv correspondences against brute force and against an analytic uv map."""
import numpy as np
import pytest

from headcast.fit.correspondence import uv_correspondences


def affine_uv_map(h, w, a, b):
    """uv(x, y) = a @ (x, y) + b at pixel centres; the analytic inverse is known."""
    ys, xs = np.mgrid[0:h, 0:w]
    p = np.stack([xs + 0.5, ys + 0.5], -1)
    return p @ a.T + b


def test_matches_brute_force_nearest_pixel():
    rng = np.random.default_rng(0)
    h, w = 24, 30
    uv = rng.uniform(0, 1, size=(h, w, 2))
    mask = rng.random((h, w)) > 0.3
    vuv = rng.uniform(0, 1, size=(50, 2))
    delta = 0.004
    c = uv_correspondences(uv, mask, np.arange(50) + 100, vuv, delta, subpixel=False)
    ys, xs = np.nonzero(mask)
    d2 = ((uv[ys, xs][None] - vuv[:, None]) ** 2).sum(-1)  # (50, P)
    best = d2.argmin(1)
    found = d2.min(1) < delta
    assert c.vertex_ids.tolist() == (np.arange(50) + 100)[found].tolist()
    np.testing.assert_allclose(c.target_px, np.stack([xs[best] + 0.5, ys[best] + 0.5], 1)[found])
    np.testing.assert_allclose(c.uv_distance, d2.min(1)[found])


@pytest.mark.parametrize("subpixel", [False, True])
def test_subpixel_refinement_inverts_an_affine_uv_map(subpixel):
    h, w = 40, 40
    a = np.array([[0.011, 0.002], [-0.001, 0.009]])
    b = np.array([0.1, 0.2])
    uv = affine_uv_map(h, w, a, b)
    mask = np.ones((h, w), bool)
    rng = np.random.default_rng(1)
    pts = rng.uniform(5, 35, size=(60, 2))  # true pixel positions of the vertices
    vuv = pts @ a.T + b
    c = uv_correspondences(uv, mask, np.arange(60), vuv, delta=1e-3, subpixel=subpixel)
    assert len(c.vertex_ids) == 60
    err = np.linalg.norm(c.target_px - pts[c.vertex_ids], axis=1)
    if subpixel:
        assert err.max() < 1e-6  # exact for an affine map
    else:
        assert err.max() <= np.sqrt(0.5) + 1e-9 and err.mean() > 0.1  # quantised to pixel centres


def test_threshold_and_mask_drop_vertices():
    h, w = 20, 20
    uv = affine_uv_map(h, w, np.eye(2) * 0.01, np.zeros(2))
    mask = np.zeros((h, w), bool)
    mask[:, :10] = True  # only the left half has a prediction
    vuv = np.array([[0.05, 0.05], [0.15, 0.05], [0.5, 0.5]])  # left half, right half, off the map
    c = uv_correspondences(uv, mask, np.array([7, 8, 9]), vuv, delta=1e-4, subpixel=True)
    assert c.vertex_ids.tolist() == [7]
    np.testing.assert_allclose(c.target_px[0], [5.0, 5.0], atol=1e-9)
    for empty in (uv_correspondences(uv, np.zeros((h, w), bool), np.array([1]), vuv[:1], 1e-3),
                  uv_correspondences(uv, mask, np.array([1]), vuv[2:], 1e-4)):  # no mask / nothing near
        assert len(empty.vertex_ids) == 0 and empty.target_px.shape == (0, 2)


def test_subpixel_falls_back_at_degenerate_maps():
    """A constant uv patch (zero Jacobian) gives no correction rather than a wild one."""
    uv = np.full((10, 10, 2), 0.5)
    c = uv_correspondences(uv, np.ones((10, 10), bool), np.array([0]), np.array([[0.5, 0.5]]), 1e-3, subpixel=True)
    assert np.all(np.abs(c.target_px[0] - np.floor(c.target_px[0]) - 0.5) < 1e-12)
