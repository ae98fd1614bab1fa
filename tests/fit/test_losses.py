# SPDX-License-Identifier: GPL-3.0-or-later
"""Each loss term on tiny tensors: autograd against central finite differences (float64),
the direction it pulls, and what its masks and outlier cuts drop."""
import numpy as np
import pytest
import torch

from headcast.fit import losses as L


def fd_check(fn, x: torch.Tensor, eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-8):
    """Autograd gradient of scalar fn(x) against central differences, elementwise."""
    x = x.detach().clone().requires_grad_(True)
    fn(x).backward()
    num = torch.zeros_like(x)
    flat = x.detach().view(-1)
    for i in range(flat.numel()):
        a = flat.clone()
        a[i] += eps
        b = flat.clone()
        b[i] -= eps
        num.view(-1)[i] = (fn(a.view_as(x)) - fn(b.view_as(x))) / (2 * eps)
    np.testing.assert_allclose(x.grad.numpy(), num.numpy(), rtol=rtol, atol=atol)
    return x.grad


def rng_tensor(seed, *shape, scale=1.0):
    return torch.tensor(np.random.default_rng(seed).normal(size=shape) * scale, dtype=torch.float64)


def test_uv_vertex_loss_gradient_points_projections_to_targets():
    target = rng_tensor(0, 2, 5, 2, scale=10.0) + 50
    valid = torch.tensor([[1, 1, 0, 1, 1], [1, 0, 1, 1, 1]], dtype=torch.float64)
    proj = target + rng_tensor(1, 2, 5, 2, scale=3.0)
    g = fd_check(lambda p: L.uv_vertex_loss(p, target, valid, 64.0, dist_px=None).sum(), proj)
    # descent moves every valid projection straight toward its target; invalid ones get nothing
    direction = -(g * valid[..., None])
    np.testing.assert_allclose(direction.numpy(), ((target - proj) * valid[..., None]).numpy() *
                               direction.norm(dim=-1, keepdim=True).numpy() /
                               np.maximum((target - proj).norm(dim=-1, keepdim=True).numpy(), 1e-12) *
                               valid[..., None].numpy(), rtol=1e-6, atol=1e-12)
    assert torch.all(g[valid == 0] == 0)
    # value: mean over valid vertices and both coordinates of (residual / S)^2
    want = [((proj[b] - target[b]) / 64.0).pow(2).sum(-1)[valid[b] > 0].sum() / (2 * valid[b].sum()) for b in range(2)]
    np.testing.assert_allclose(L.uv_vertex_loss(proj, target, valid, 64.0, None).numpy(), torch.stack(want).numpy())


def test_uv_vertex_loss_pixel_cut_drops_far_vertices():
    target = torch.zeros(1, 3, 2, dtype=torch.float64)
    proj = torch.tensor([[[1.0, 1.0], [30.0, 0.0], [0.0, -2.0]]], dtype=torch.float64, requires_grad=True)
    loss = L.uv_vertex_loss(proj, target, torch.ones(1, 3, dtype=torch.float64), 100.0, dist_px=20.0)
    loss.sum().backward()
    assert proj.grad[0, 1].abs().sum() == 0  # L1 residual 30 > 20 px: an outlier
    assert proj.grad[0, 0].abs().sum() > 0 and proj.grad[0, 2].abs().sum() > 0
    np.testing.assert_allclose(float(loss.detach()), ((1 + 1) + 4) / 100.0 ** 2 / 4)


def test_robust_vertex_loss_is_bounded_and_descends():
    target = torch.zeros(1, 4, 2, dtype=torch.float64)
    proj = torch.tensor([[[1.0, 0.0], [0.0, -5.0], [40.0, 3.0], [300.0, 0.0]]], dtype=torch.float64)
    valid = torch.ones(1, 4, dtype=torch.float64)
    g = fd_check(lambda p: L.robust_vertex_loss(p, target, valid, 100.0, 10.0).sum(), proj)
    assert torch.all((g * (proj - target)).sum(-1) > 0)  # every point is pulled toward its target
    # a far outlier pulls much less than a point at the scale (Cauchy: influence ~ 1/r)
    assert g[0, 3].norm() < 0.2 * g[0, 2].norm()


def test_uv_dense_loss_value_gradient_and_chart_cut():
    n = 6
    uv_t = rng_tensor(2, n, 2, scale=0.1) + 0.5
    uv_r = uv_t + rng_tensor(3, n, 2, scale=0.005)
    uv_r[4] += 0.3  # a chart-border pixel: far off
    mask = torch.tensor([1, 1, 1, 0, 1, 1], dtype=torch.float64)
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    fn = lambda u: L.uv_dense_loss(u, uv_t, mask, batch, 2, 10, delta=0.03).sum()  # noqa: E731
    g = fd_check(fn, uv_r)
    assert torch.all(g[3] == 0) and torch.all(g[4] == 0)  # masked, and beyond the cut
    keep = torch.tensor([1, 1, 1, 0, 0, 1], dtype=torch.float64)
    d = (uv_r - uv_t).pow(2).sum(-1) * keep
    want = torch.stack([d[:3].sum(), d[3:].sum()]) / (2 * 10)
    np.testing.assert_allclose(L.uv_dense_loss(uv_r, uv_t, mask, batch, 2, 10, 0.03).numpy(), want.numpy())
    assert torch.all(((uv_r - uv_t) * g).sum(-1)[keep > 0] > 0)


def test_normal_loss_l1_outliers_and_mask():
    n_t = torch.nn.functional.normalize(rng_tensor(4, 5, 3), dim=-1)
    n_r = n_t + rng_tensor(5, 5, 3, scale=0.05)
    n_r[2] = -n_t[2]  # mean |diff| ~ 2/3 > 0.33: outlier
    mask = torch.tensor([1, 1, 1, 1, 0], dtype=torch.float64)
    batch = torch.zeros(5, dtype=torch.long)
    g = fd_check(lambda x: L.normal_loss(x, n_t, mask, 0.33, batch, 1, 8).sum(), n_r)
    assert torch.all(g[2] == 0) and torch.all(g[4] == 0)
    np.testing.assert_allclose(g[0].numpy(), (torch.sign(n_r[0] - n_t[0]) / 24).numpy())
    want = (n_r - n_t).abs().sum(-1)[[0, 1, 3]].sum() / (3 * 8)
    np.testing.assert_allclose(float(L.normal_loss(n_r, n_t, mask, 0.33, batch, 1, 8)), float(want))


def test_normal_loss_huber_is_quadratic_inside_and_l1_outside():
    n_t = torch.nn.functional.normalize(rng_tensor(6, 6, 3), dim=-1)
    n_r = n_t + rng_tensor(7, 6, 3, scale=0.08)  # components on both sides of delta
    delta = 0.07
    mask = torch.ones(6, dtype=torch.float64)
    batch = torch.zeros(6, dtype=torch.long)
    d = (n_r - n_t).abs()
    assert bool((d < delta).any()) and bool((d > delta).any())
    want = np.where(d.numpy() < delta, d.numpy() ** 2 / (2 * delta), d.numpy() - delta / 2).sum() / (3 * 8)
    got = L.normal_loss(n_r, n_t, mask, 0.33, batch, 1, 8, huber=delta)
    np.testing.assert_allclose(float(got), want)
    g = fd_check(lambda x: L.normal_loss(x, n_t, mask, 0.33, batch, 1, 8, huber=delta).sum(), n_r)
    # the pull: the residual / delta inside, its sign outside (then / (3 * 8))
    r = (n_r - n_t).numpy()
    np.testing.assert_allclose(g.numpy(), np.where(np.abs(r) < delta, r / delta, np.sign(r)) / 24, atol=1e-12)


def test_silhouette_loss_counts_only_valid_pixels():
    cov = torch.tensor([[[0.2, 0.9], [0.5, 0.0]]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    valid = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]], dtype=torch.float64)
    loss = L.silhouette_loss(cov, target, valid)
    loss.sum().backward()
    np.testing.assert_allclose(float(loss), (0.2 + 0.1 + 0.0) / 4)
    # descent raises coverage where the mask is set and lowers it where it is not
    assert cov.grad[0, 0, 0] > 0 and cov.grad[0, 0, 1] < 0 and cov.grad[0, 1, 0] == 0


def test_landmark_and_lid_losses():
    target = torch.tensor([[[10.0, 10.0], [10.0, 14.0], [20.0, 10.0]]], dtype=torch.float64)
    pred = target + torch.tensor([[[1.0, -1.0], [0.5, 2.0], [3.0, 3.0]]], dtype=torch.float64)
    w = torch.tensor([[1.0, 0.5, 0.0]], dtype=torch.float64)
    g = fd_check(lambda p: L.landmark_loss(p, target, w, 32.0).sum(), pred)
    assert torch.all(g[0, 2] == 0)  # weight 0: a missing point
    assert torch.all((g * (pred - target)).sum(-1)[0, :2] > 0)
    want = (w[0] * ((pred[0] - target[0]) / 32.0).pow(2).sum(-1)).sum() / (2 * 2)
    np.testing.assert_allclose(float(L.landmark_loss(pred, target, w, 32.0)), float(want))
    # eyelid closure: only the gap between the pair matters, not where the pair is
    pairs = torch.tensor([[0, 1]])
    shifted = pred.clone()
    shifted[0, :2] += torch.tensor([5.0, -7.0], dtype=torch.float64)
    np.testing.assert_allclose(float(L.lid_loss(pred, target, w, pairs, 32.0)),
                               float(L.lid_loss(shifted, target, w, pairs, 32.0)))
    g = fd_check(lambda p: L.lid_loss(p, target, torch.ones_like(w), pairs, 32.0).sum(), pred)
    gap_err = (pred[0, 0] - pred[0, 1]) - (target[0, 0] - target[0, 1])
    assert float((g[0, 0] * gap_err).sum()) > 0 and float((g[0, 1] * gap_err).sum()) < 0  # closes the gap error


def test_priors_and_smoothness():
    d6 = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [0.9, 0.1, 0.0, -0.1, 1.0, 0.2]], dtype=torch.float64)
    val = L.rotation_to_identity(d6)
    assert float(val[0]) == 0.0
    np.testing.assert_allclose(float(val[1]), 0.01 + 0.01 + 0.01 + 0.04)
    g = fd_check(lambda x: L.rotation_to_identity(x).sum(), d6)
    assert torch.all(g[0] == 0)
    x = rng_tensor(6, 3, 4)
    bounds = torch.tensor([[0.0, 1.0]] * 4, dtype=torch.float64)
    inside = torch.rand(3, 4, dtype=torch.float64)
    assert torch.all(L.bound_violation(inside, bounds) == 0)
    gb = fd_check(lambda v: L.bound_violation(v, bounds).sum(), x)
    assert torch.all(gb[x < 0] < 0) and torch.all(gb[x > 1] > 0)  # pushed back inside
    np.testing.assert_allclose(L.squared_norm(x, x[0]).numpy()[0], 0.0)
    prev = rng_tensor(7, 3, 4)
    gs = fd_check(lambda v: L.smoothness_loss(v, prev, torch.ones(3, dtype=torch.float64)).sum(), x)
    np.testing.assert_allclose(gs.numpy(), 2 * (x - prev).numpy())


def test_per_frame_sum():
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = L.per_frame_sum(vals, torch.tensor([0, 2, 2, 0]), 3)
    assert out.tolist() == [5.0, 0.0, 5.0]


@pytest.mark.parametrize("delta", [None, 0.33])
def test_normal_loss_batch_split(delta):
    n_t = torch.nn.functional.normalize(rng_tensor(8, 6, 3), dim=-1)
    n_r = torch.nn.functional.normalize(n_t + rng_tensor(9, 6, 3, scale=0.1), dim=-1)
    batch = torch.tensor([0, 0, 1, 1, 1, 1])
    both = L.normal_loss(n_r, n_t, torch.ones(6, dtype=torch.float64), delta, batch, 2, 16)
    one = L.normal_loss(n_r[2:], n_t[2:], torch.ones(4, dtype=torch.float64), delta, torch.zeros(4, dtype=torch.long), 1, 16)
    np.testing.assert_allclose(float(both[1]), float(one[0]))
