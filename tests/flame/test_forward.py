# SPDX-License-Identifier: GPL-3.0-or-later
"""The torch FLAME forward against the independent numpy reference."""
import numpy as np
import pytest
import torch

from headcast.flame import HeadLayer, axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_rotation_6d, rotation_6d_to_matrix
from headcast.flame.lbs import vertex_normals

from .numpy_reference import flame_forward, rodrigues


def _random_params(rng, model, batch):
    shape = rng.normal(size=(batch, model.shapedirs.shape[2])) * 1.5
    expr = rng.normal(size=(batch, model.exprdirs.shape[2])) * 1.5
    axis_angle = rng.normal(size=(batch, model.n_joints, 3)) * 0.4
    trans = rng.normal(size=(batch, 3)) * 0.05
    eyelids = rng.uniform(0, 1, size=(batch, 2))
    return shape, expr, axis_angle, trans, eyelids


def test_rodrigues_matches_reference():
    rng = np.random.default_rng(3)
    aa = rng.normal(size=(20, 3))
    ours = axis_angle_to_matrix(torch.tensor(aa)).numpy()
    ref = np.stack([rodrigues(r) for r in aa])
    # both use FLAME's |r + 1e-8| angle; the two algebraic forms differ only at that 1e-8 level
    np.testing.assert_allclose(ours, ref, atol=1e-7)
    small = aa[np.linalg.norm(aa, axis=1) < 3.0]
    back = matrix_to_axis_angle(torch.tensor(np.stack([rodrigues(r) for r in small]))).numpy()
    np.testing.assert_allclose(back, small, atol=1e-6)


def test_6d_round_trip_and_orthonormality():
    rng = np.random.default_rng(4)
    from scipy.spatial.transform import Rotation
    mats = Rotation.random(16, random_state=4).as_matrix()
    d6 = matrix_to_rotation_6d(torch.tensor(mats))
    np.testing.assert_allclose(rotation_6d_to_matrix(d6).numpy(), mats, atol=1e-12)
    noisy = rotation_6d_to_matrix(torch.tensor(rng.normal(size=(16, 6))))
    eye = noisy @ noisy.transpose(-1, -2)
    np.testing.assert_allclose(eye.numpy(), np.broadcast_to(np.eye(3), eye.shape), atol=1e-12)
    np.testing.assert_allclose(torch.linalg.det(noisy).numpy(), 1.0, atol=1e-12)


def test_forward_float64_matches_numpy_reference(synthetic_model):
    model = synthetic_model
    rng = np.random.default_rng(0)
    shape, expr, aa, trans, eyelids = _random_params(rng, model, batch=3)
    rot = np.stack([[rodrigues(r) for r in sample] for sample in aa])
    layer = HeadLayer(model, dtype=torch.float64)
    out = layer(torch.tensor(shape), torch.tensor(expr), torch.tensor(rot), torch.tensor(trans), torch.tensor(eyelids))
    for b in range(3):
        ref_v, ref_j = flame_forward(model, shape[b], expr[b], rot[b], trans[b], eyelids[b])
        np.testing.assert_allclose(out.vertices[b].numpy(), ref_v, atol=1e-6, rtol=0)
        np.testing.assert_allclose(out.joints[b].numpy(), ref_j, atol=1e-6, rtol=0)
    # every joint actually moves the mesh: rotating any one of them changes the output
    base = layer(torch.tensor(shape[:1]), torch.tensor(expr[:1]), torch.eye(3, dtype=torch.float64).expand(1, 5, 3, 3).clone()).vertices
    for j in range(5):
        r = torch.eye(3, dtype=torch.float64).repeat(1, 5, 1, 1)
        r[0, j] = torch.tensor(rodrigues([0.3, 0.2, 0.1]))
        moved = layer(torch.tensor(shape[:1]), torch.tensor(expr[:1]), r).vertices
        assert (moved - base).abs().max() > 1e-3, f"joint {j} does not move any vertex"


def test_forward_float32_close_to_float64(synthetic_model):
    rng = np.random.default_rng(1)
    shape, expr, aa, trans, eyelids = _random_params(rng, synthetic_model, batch=2)
    rot = axis_angle_to_matrix(torch.tensor(aa))
    out64 = HeadLayer(synthetic_model, dtype=torch.float64)(torch.tensor(shape), torch.tensor(expr), rot, torch.tensor(trans))
    out32 = HeadLayer(synthetic_model, dtype=torch.float32)(torch.tensor(shape).float(), torch.tensor(expr).float(),
                                                            rot.float(), torch.tensor(trans).float())
    np.testing.assert_allclose(out32.vertices.double().numpy(), out64.vertices.numpy(), atol=2e-6)


def test_truncated_coefficients_equal_zero_padding(synthetic_model):
    layer = HeadLayer(synthetic_model, dtype=torch.float64)
    rng = np.random.default_rng(2)
    shape = torch.tensor(rng.normal(size=(1, 50)))
    expr = torch.tensor(rng.normal(size=(1, 20)))
    rot = torch.eye(3, dtype=torch.float64).repeat(1, 5, 1, 1)
    short = layer(shape, expr, rot).vertices
    padded = layer(torch.cat([shape, torch.zeros(1, 250, dtype=torch.float64)], 1),
                   torch.cat([expr, torch.zeros(1, 80, dtype=torch.float64)], 1), rot).vertices
    np.testing.assert_allclose(short.numpy(), padded.numpy(), atol=1e-12)


def test_gradients_flow_to_every_parameter(synthetic_model):
    layer = HeadLayer(synthetic_model, n_shape=20, n_expr=10, dtype=torch.float64)
    shape = torch.zeros(1, 20, dtype=torch.float64, requires_grad=True)
    expr = torch.zeros(1, 10, dtype=torch.float64, requires_grad=True)
    aa = torch.full((1, 5, 3), 0.1, dtype=torch.float64, requires_grad=True)
    out = layer(shape, expr, axis_angle_to_matrix(aa))
    out.vertices.square().sum().backward()
    for t in (shape, expr, aa):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # finite-difference check of one pose coefficient
    def f(x):
        a = aa.detach().clone()
        a[0, 2, 0] = x
        return layer(shape.detach(), expr.detach(), axis_angle_to_matrix(a)).vertices.square().sum().item()
    eps = 1e-6
    fd = (f(0.1 + eps) - f(0.1 - eps)) / (2 * eps)
    assert fd == pytest.approx(aa.grad[0, 2, 0].item(), rel=1e-5)


def test_vertex_normals_match_numpy(synthetic_model):
    v = synthetic_model.v_template
    f = synthetic_model.faces
    ours = vertex_normals(torch.tensor(v)[None], torch.tensor(f))[0].numpy()
    ref = np.zeros_like(v)
    for tri in f:
        n = np.cross(v[tri[1]] - v[tri[0]], v[tri[2]] - v[tri[0]])
        for k in tri:
            ref[k] += n
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(ours, ref, atol=1e-10)
