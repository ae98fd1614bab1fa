# SPDX-License-Identifier: GPL-3.0-or-later
"""Mirror-symmetry prior: partners of a constructed point set, the energy against a float64
brute force over the shaped mesh, its gradient against finite differences, and its place in
the fitting energy."""
import numpy as np
import pytest
import torch

from headcast.fit import FitConfig
from headcast.fit.head import FitHead
from headcast.fit.solver import Fitter
from headcast.fit.symmetry import REFLECT, MirrorPrior, mirror_partners


def symmetric_template(rng, n_half=40, n_mid=6):
    """Points in pairs (x, y, z) / (-x, y, z), some on the plane x = 0, one without a partner."""
    half = rng.uniform(0.01, 0.1, size=(n_half, 3)) + np.array([0.0, -0.05, -0.05])
    mid = rng.uniform(-0.1, 0.1, size=(n_mid, 3)) * np.array([0, 1, 1])
    lonely = np.array([[0.07, 0.3, 0.3]])
    return np.concatenate([half, half * REFLECT, mid, lonely]), n_half, n_mid


def brute_force(template, partner, shapedirs, exprdirs, beta, psi):
    v = template + shapedirs @ beta + (0 if exprdirs is None else exprdirs @ psi)
    ids = np.nonzero(partner >= 0)[0]
    return np.mean([np.sum((v[i] - REFLECT * v[partner[i]]) ** 2) for i in ids])


def test_partners_of_a_constructed_point_set():
    rng = np.random.default_rng(0)
    t, n_half, n_mid = symmetric_template(rng)
    # a little asymmetry below the tolerance is still paired
    t = t + rng.normal(scale=1e-5, size=t.shape)
    p = mirror_partners(t, tol=1e-3)
    np.testing.assert_array_equal(p[:n_half], np.arange(n_half) + n_half)
    np.testing.assert_array_equal(p[n_half:2 * n_half], np.arange(n_half))
    np.testing.assert_array_equal(p[2 * n_half:2 * n_half + n_mid], np.arange(2 * n_half, 2 * n_half + n_mid))
    assert p[-1] == -1


@pytest.mark.parametrize("with_expression", [False, True])
def test_energy_matches_a_brute_force_over_the_shaped_mesh(with_expression):
    rng = np.random.default_rng(1)
    t, *_ = symmetric_template(rng)
    t = t + rng.normal(scale=2e-4, size=t.shape)  # the template's own asymmetry counts too
    v = len(t)
    sd = rng.normal(scale=0.01, size=(v, 3, 7))
    ed = rng.normal(scale=0.01, size=(v, 3, 4))
    prior = MirrorPrior(t, sd, ed if with_expression else None, tol=1e-3, dtype=torch.float64)
    partner = mirror_partners(t, 1e-3)
    assert prior.n_paired == int((partner >= 0).sum()) > v // 2
    beta = rng.normal(size=7)
    psi = rng.normal(size=(3, 4))
    # without the expression a shared identity gives one row, which the energy broadcasts
    got = np.broadcast_to(prior.energy(torch.as_tensor(beta), torch.as_tensor(psi)).numpy(), (3,))
    want = [brute_force(t, partner, sd, ed if with_expression else None, beta, psi[b]) for b in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # a shared identity and a per-row identity give the same
    rows = prior.energy(torch.as_tensor(np.tile(beta, (3, 1))), torch.as_tensor(psi)).numpy()
    np.testing.assert_allclose(rows, got, rtol=1e-12)
    assert len(set(np.round(want, 12))) == (3 if with_expression else 1)
    # a symmetric shaped mesh has none: mirror-symmetric bases and a symmetric template
    ts, n_half, n_mid = symmetric_template(rng)
    part = mirror_partners(ts, 1e-3)
    sym = rng.normal(size=(len(ts), 3, 5))
    sym = 0.5 * (sym + REFLECT[None, :, None] * sym[np.where(part >= 0, part, np.arange(len(ts)))])
    zero = MirrorPrior(ts, sym, None, tol=1e-3, dtype=torch.float64)
    assert float(zero.energy(torch.as_tensor(rng.normal(size=5)), None)[0]) < 1e-25


def test_gradient_matches_finite_differences_and_pulls_toward_symmetry():
    rng = np.random.default_rng(2)
    t, *_ = symmetric_template(rng)
    sd = rng.normal(scale=0.01, size=(len(t), 3, 6))
    prior = MirrorPrior(t, sd, None, tol=1e-3, dtype=torch.float64)
    beta = torch.as_tensor(rng.normal(size=6), dtype=torch.float64).requires_grad_(True)
    e = prior.energy(beta, None).sum()
    (g,) = torch.autograd.grad(e, beta)
    h = 1e-6
    fd = []
    for k in range(6):
        d = torch.zeros(6, dtype=torch.float64)
        d[k] = h
        fd.append(float(prior.energy(beta.detach() + d, None).sum() - prior.energy(beta.detach() - d, None).sum()) / (2 * h))
    np.testing.assert_allclose(g.numpy(), fd, rtol=1e-6, atol=1e-12)
    step = beta.detach() - 0.1 * g / g.norm() * beta.detach().norm()
    assert float(prior.energy(step, None).sum()) < float(e.detach())


def test_fitting_energy_adds_the_weighted_prior(synthetic_model):
    head = FitHead(synthetic_model, 20, 10, torch.float64)
    prior = head.mirror_prior(1e-3, True)
    assert prior is not None and prior.fraction > 0.99  # the synthetic template is symmetric
    assert head.mirror_prior(1e-3, True) is prior  # built once
    rng = np.random.default_rng(3)
    shape, expr = torch.as_tensor(rng.normal(size=20)), torch.as_tensor(rng.normal(size=(2, 10)))
    priors = {}
    for w in (0.0, 5000.0):
        cfg = FitConfig(n_shape=20, n_expr=10, dtype="float64", w_mirror=w)
        f = Fitter(synthetic_model, cfg, (64, 64), 2, head=head)
        with torch.no_grad():
            f.params.shape.copy_(shape)
            f.params.expr.copy_(expr)
        terms = {}
        f.energy._frame_priors(f.params, torch.tensor([0, 1]), terms, 1.0)
        priors[w] = terms["prior"].detach()
    expected = 5000.0 * prior.energy(shape, expr)
    np.testing.assert_allclose((priors[5000.0] - priors[0.0]).numpy(), expected.numpy(), rtol=1e-9)
    assert float(expected.min()) > 0


def test_a_model_without_left_right_mirror_gets_no_prior(synthetic_model):
    from dataclasses import replace
    # the same head with x and z swapped: its left-right axis is no longer x
    swap = lambda a: a[:, [2, 1, 0]] if a.ndim == 2 else a[:, [2, 1, 0], :]  # noqa: E731
    turned = replace(synthetic_model, v_template=swap(synthetic_model.v_template) + np.array([0.05, 0, 0]),
                     shapedirs=swap(synthetic_model.shapedirs))
    head = FitHead(turned, 10, 5, torch.float64)
    assert head.mirror_prior(1e-3, False) is None
