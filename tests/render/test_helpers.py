# SPDX-License-Identifier: GPL-3.0-or-later
"""Projection, normals, uv rendering, vertex visibility and the edge->face table."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from render_helpers import flame_to_camera, head_camera, synthetic_model, uv_sphere_head

from headcast.render import (build_edge_topology, edge_topology, interpolate, project_points,
                             rasterize, render_mask, render_normals, render_uv,
                             vertex_normals, vertex_visibility)


def test_project_points_matches_pinhole_formula():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(2, 50, 3, generator=g, dtype=torch.float64) + torch.tensor([-0.5, -0.5, 1.0])
    fx = torch.tensor([500.0, 600.0], dtype=torch.float64)
    out = project_points(pts, fx, 510.0, torch.tensor([[64.0], [70.0]]), 48.0)
    ref_u = fx[:, None] * pts[..., 0] / pts[..., 2] + torch.tensor([[64.0], [70.0]])
    ref_v = 510.0 * pts[..., 1] / pts[..., 2] + 48.0
    torch.testing.assert_close(out[..., 0], ref_u)
    torch.testing.assert_close(out[..., 1], ref_v)
    torch.testing.assert_close(out[..., 2], pts[..., 2])
    # the principal point lands on the image centre, which is a pixel corner for even sizes
    centre = project_points(torch.tensor([[[0.0, 0.0, 2.0]]]), 100.0, 100.0, 32.0, 24.0)
    assert centre[0, 0, :2].tolist() == [32.0, 24.0]
    with pytest.raises(ValueError):
        project_points(pts, torch.ones(3), 1.0, 0.0, 0.0)


def test_project_points_is_differentiable_in_intrinsics():
    pts = torch.tensor([[[0.1, -0.2, 2.0]]], dtype=torch.float64, requires_grad=True)
    f = torch.tensor(300.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, f: project_points(p, f, f, 10.0, 10.0), (pts, f))


def _reference_vertex_normals(verts, faces):
    acc = np.zeros_like(verts)
    for a, b, c in faces:
        n = np.cross(verts[b] - verts[a], verts[c] - verts[a])
        acc[a] += n
        acc[b] += n
        acc[c] += n
    return acc / np.linalg.norm(acc, axis=1, keepdims=True)


def test_vertex_normals_match_reference_and_point_outward():
    v, f = uv_sphere_head(n_lat=12, n_lon=24)
    n = vertex_normals(torch.tensor(v)[None], torch.tensor(f))[0].numpy()
    np.testing.assert_allclose(n, _reference_vertex_normals(v, f), atol=1e-12)
    sphere_v, sphere_f = uv_sphere_head(n_lat=30, n_lon=60, nose=0.0, stretch=0.0)
    ns = vertex_normals(torch.tensor(sphere_v)[None], torch.tensor(sphere_f))[0].numpy()
    radial = sphere_v / np.linalg.norm(sphere_v, axis=1, keepdims=True)
    assert (np.sum(ns * radial, 1) > 0.999).all()


def test_render_normals_face_the_camera_and_uv_interpolates():
    v, f = uv_sphere_head(n_lat=30, n_lon=60, nose=0.0, stretch=0.0)
    faces = torch.tensor(f)
    cam = flame_to_camera(torch.tensor(v, dtype=torch.float32)[None])
    screen = project_points(cam, *head_camera(64, 64))
    r = rasterize(screen, faces, (64, 64))
    normals = render_normals(r, cam, faces)
    covered = r.face_id >= 0
    # for a sphere centred at (0, 0, 1) in camera space the normal is (p - c) / radius
    centre = torch.tensor([0.0, 0.0, 1.0])
    p = interpolate(cam, r, faces)
    expected = (p - centre) / (p - centre).norm(dim=-1, keepdim=True)
    cos = (normals * expected).sum(-1)[covered]
    assert cos.min() > 0.995
    # uv through its own index set: one uv per face corner
    faces_uv = torch.arange(3 * len(f)).view(-1, 3)
    uv = torch.rand(3 * len(f), 2)
    out = render_uv(r, uv, faces_uv)
    ref = (r.bary[..., None] * uv[faces_uv[r.face_id.clamp(min=0)]]).sum(-2)
    torch.testing.assert_close(out[covered], ref[covered])
    mask = render_mask(r, screen, faces, antialiased=False)
    assert torch.equal(mask[..., 0] > 0, covered)
    soft = render_mask(r, screen, faces)
    assert ((soft > 0) & (soft < 1)).any() and soft.min() >= 0 and soft.max() <= 1


def test_synthetic_head_uv_render():
    model = synthetic_model()
    if model is None or getattr(model, "uv", None) is None:
        pytest.skip("headcast.flame.synthetic with uv is not available")
    faces = torch.as_tensor(np.asarray(model.faces))
    cam = flame_to_camera(torch.tensor(np.asarray(model.v_template), dtype=torch.float32)[None])
    screen = project_points(cam, *head_camera(64, 64))
    r = rasterize(screen, faces, (64, 64))
    uv = torch.tensor(np.asarray(model.uv), dtype=torch.float32)
    out = render_uv(r, uv, torch.as_tensor(np.asarray(model.faces_uv)))
    covered = r.face_id >= 0
    assert out.shape == (1, 64, 64, 2)
    lo, hi = uv.min(0).values, uv.max(0).values
    assert (out[covered] >= lo - 1e-5).all() and (out[covered] <= hi + 1e-5).all()


def test_vertex_visibility_on_a_sphere():
    """A convex sphere: visible exactly where the vertex faces the camera (away from the
    terminator, where a pixel-sized tolerance decides)."""
    v, f = uv_sphere_head(n_lat=40, n_lon=80, nose=0.0, stretch=0.0)
    faces = torch.tensor(f)
    cam = flame_to_camera(torch.tensor(v)[None])
    screen = project_points(cam, *head_camera(128, 128))
    r = rasterize(screen, faces, (128, 128))
    visible = vertex_visibility(screen, r)[0].numpy()
    normals = vertex_normals(cam, faces)[0]
    to_camera = -cam[0] / cam[0].norm(dim=-1, keepdim=True)
    facing = (normals * to_camera).sum(-1).numpy()
    assert visible[facing > 0.15].all()
    assert not visible[facing < -0.05].any()


def test_vertex_visibility_detects_occlusion():
    """A small sphere in front of a large one hides the large one's vertices behind it."""
    v, f = uv_sphere_head(n_lat=30, n_lon=60, nose=0.0, stretch=0.0)
    big = v  # radius 0.1, about 51 px on screen
    small = v * 0.3 + np.array([0.0, 0.0, 0.3])  # radius 0.03, toward the camera
    verts = torch.tensor(np.concatenate((big, small)))[None]
    faces = torch.tensor(np.concatenate((f, f + len(v))))
    cam = flame_to_camera(verts)
    screen = project_points(cam, *head_camera(128, 128))
    r = rasterize(screen, faces, (128, 128))
    visible = vertex_visibility(screen, r)[0].numpy()
    xy = screen[0, : len(v), :2].numpy() - 64.0
    front_big = big[:, 2] > 0.03
    small_radius_px = 0.03 * 4 * 128 / (1.0 - 0.3)
    dist = np.linalg.norm(xy, axis=1)
    behind = front_big & (dist < 0.8 * small_radius_px)
    clear = front_big & (dist > 1.2 * small_radius_px) & (big[:, 2] > 0.05)
    assert behind.sum() > 10 and clear.sum() > 100
    assert not visible[: len(v)][behind].any()
    assert visible[: len(v)][clear].all()
    # off-screen vertices are invisible
    shifted = screen.clone()
    shifted[..., 0] += 1000
    assert not vertex_visibility(shifted, r).any()


def test_edge_topology():
    v, f = uv_sphere_head(n_lat=10, n_lon=20)
    topo = build_edge_topology(torch.tensor(f)).neighbors
    assert (topo >= 0).all()  # closed mesh
    # symmetric: my neighbour across edge k has me as a neighbour across the same edge
    for face in range(len(f)):
        for k in range(3):
            g = topo[face, k].item()
            edge = {f[face][(k + 1) % 3], f[face][(k + 2) % 3]}
            back = [j for j in range(3) if {f[g][(j + 1) % 3], f[g][(j + 2) % 3]} == edge]
            assert len(back) == 1 and topo[g, back[0]].item() == face
    # an open fan: boundary edges have no neighbour; a non-manifold edge (3 faces) neither
    fan = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 2, 4], [2, 1, 5]])
    nb = build_edge_topology(fan).neighbors
    assert nb.tolist() == [[-1, 1, 2], [-1, 2, 0], [-1, 0, 1], [-1, -1, -1], [-1, -1, -1]]
    # cached per tensor object, rebuilt after an in-place change
    faces = torch.tensor(f)
    assert edge_topology(faces) is edge_topology(faces)
    first = edge_topology(faces)
    faces[0] = faces[0].flip(0)
    assert edge_topology(faces) is not first


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("radius", [0, 1])
def test_vertex_visibility_of_a_vertex_subset_matches_the_full_test(dtype, radius):
    """``ids=`` (a compiled pass when numba is there) agrees with the full tensor test, on the
    occluding two-sphere scene, off-screen and behind-camera vertices included."""
    v, f = uv_sphere_head(n_lat=30, n_lon=60, nose=0.0, stretch=0.0)
    verts = torch.tensor(np.concatenate((v, v * 0.3 + np.array([0.0, 0.0, 0.3]))), dtype=dtype)[None]
    faces = torch.tensor(np.concatenate((f, f + len(v))))
    screen = project_points(flame_to_camera(verts), *head_camera(128, 128))
    screen[0, :40, 0] += 200.0  # off to the right
    screen[0, 40:60, 2] = -1.0  # behind the camera
    r = rasterize(screen, faces, (128, 128))
    ids = torch.randint(0, screen.shape[1], (1, 2000), generator=torch.Generator().manual_seed(3))
    full = vertex_visibility(screen, r, radius=radius)
    sub = vertex_visibility(screen, r, radius=radius, ids=ids)
    assert sub.shape == ids.shape and 200 < int(sub.sum()) < 1900
    assert torch.equal(sub, torch.gather(full, 1, ids))
