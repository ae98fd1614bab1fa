# SPDX-License-Identifier: GPL-3.0-or-later
"""Gradients: barycentrics, interpolation and antialiasing against finite differences, the
numba and torch kernels against each other, and a silhouette-only fit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from render_helpers import (brute_force, flame_to_camera, head_camera, head_screen,
                            random_soup, synthetic_head, uv_sphere_head)

from headcast.render import (antialias, interpolate, project_points, rasterize,
                             render_normals, visibility_numba)
from headcast.render.raster import pixel_barycentrics

CPU_BACKENDS = ["torch"] + (["numba"] if visibility_numba.AVAILABLE else [])
needs_numba = pytest.mark.skipif(not visibility_numba.AVAILABLE, reason="numba not installed")


def assert_no_pixel_near_an_edge(verts, faces, size, eps=1e-3):
    """Finite differences are only valid while no pixel centre crosses an edge."""
    *_, ambiguous = brute_force(verts[0].detach().double().numpy(), np.asarray(faces),
                                size[0], size[1], eps_px=eps)
    assert not ambiguous.any()


def soup64(n_faces, size, seed):
    """A small float64 scene of large overlapping random triangles."""
    verts, faces = random_soup(n_faces, size, seed, tri_scale=0.8)
    return verts.double(), faces


@pytest.mark.parametrize("use_numba", [False] + ([True] if visibility_numba.AVAILABLE else []))
def test_barycentric_backward_matches_finite_differences(use_numba):
    verts, faces = soup64(6, 20, 3)
    r = rasterize(verts, faces, (20, 20))
    assert r.pixel_index.numel() > 50

    def bary(v):
        return pixel_barycentrics(v, faces, r.pixel_index, r.pixel_face, (20, 20),
                                  use_numba=use_numba)

    v = verts.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(bary, (v,), eps=1e-6, atol=1e-7, rtol=1e-5)


@needs_numba
def test_barycentric_kernels_agree():
    verts, faces = random_soup(50, 64, 1)
    r = rasterize(verts, faces, (64, 64))
    g = torch.randn(r.pixel_index.numel(), 3, dtype=torch.float64)
    grads = []
    for use_numba in (False, True):
        v = verts.double().clone().requires_grad_(True)
        b = pixel_barycentrics(v, faces, r.pixel_index, r.pixel_face, (64, 64), use_numba)
        (b * g).sum().backward()
        grads.append((b.detach(), v.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_interpolation_gradients_match_finite_differences(backend):
    """Through the whole pipeline (rasterize -> interpolate) w.r.t. vertex positions and
    attributes; visibility is fixed under the tiny perturbations."""
    verts, faces = soup64(5, 24, 4)
    assert_no_pixel_near_an_edge(verts, faces, (24, 24))
    attr = torch.randn(1, verts.shape[1], 2, dtype=torch.float64)
    weights = torch.randn(1, 24, 24, 2, dtype=torch.float64)

    def render(v, a):
        r = rasterize(v, faces, (24, 24), backend=backend)
        return (interpolate(a, r, faces) * weights).sum()

    inputs = (verts.clone().requires_grad_(True), attr.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_interpolation_matches_reference_with_separate_uv_faces(backend):
    """Attributes indexed by their own face array (FLAME's uv faces), shared or per batch."""
    verts, faces = random_soup(30, 48, 4, batch=2)
    r = rasterize(verts, faces, (48, 40), backend=backend)
    n_uv = 200
    faces_uv = torch.randint(0, n_uv, faces.shape, generator=torch.Generator().manual_seed(0))
    uv = torch.rand(n_uv, 2)
    per_batch = torch.rand(2, n_uv, 3)
    out_shared = interpolate(uv, r, faces_uv)
    out_batch = interpolate(per_batch, r, faces_uv)
    assert out_shared.shape == (2, 48, 40, 2) and out_batch.shape == (2, 48, 40, 3)
    bary = r.bary.detach()
    for b in range(2):
        fid = r.face_id[b]
        covered = fid >= 0
        corners = faces_uv[fid[covered]]  # [N, 3]
        ref = (bary[b][covered][:, :, None] * uv[corners]).sum(1)
        torch.testing.assert_close(out_shared[b][covered], ref, rtol=1e-5, atol=1e-6)
        ref_b = (bary[b][covered][:, :, None] * per_batch[b][corners]).sum(1)
        torch.testing.assert_close(out_batch[b][covered], ref_b, rtol=1e-5, atol=1e-6)
        assert (out_shared[b][~covered] == 0).all()


@needs_numba
@pytest.mark.parametrize("normalize", [False, True])
def test_interpolation_kernels_agree(normalize, head_mesh):
    """numba and torch interpolation (optionally normalised, as for rendered normals):
    same values and the same gradients to attributes and vertex positions."""
    v, f = head_mesh
    faces = torch.tensor(f)
    results = []
    for backend in ("torch", "numba"):
        screen = head_screen(v, 96, dtype=torch.float64).requires_grad_(True)
        attr = torch.linspace(-1, 1, screen.shape[1] * 3, dtype=torch.float64)
        attr = attr.view(1, -1, 3).requires_grad_(True)
        r = rasterize(screen, faces, (96, 96), backend=backend)
        out = interpolate(attr, r, faces, normalize=normalize)
        weights = torch.cos(torch.arange(out.numel(), dtype=torch.float64)).view(out.shape)
        (out * weights).sum().backward()
        results.append((out.detach(), screen.grad, attr.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- antialias


def _occlusion_scene():
    """Background plane (2 faces, w = 4) + a fold in front of it: face 2 is front-facing,
    face 3 shares its edge (1, 2) but is folded back under it (opposite screen orientation),
    so that edge is a self-occlusion silhouette against the plane; face 4 is a separate
    triangle partly over the image border and partly over empty background."""
    verts = torch.tensor([[
        [1.2, 1.3, 4.0], [22.7, 1.1, 4.0], [22.6, 14.8, 4.0], [1.1, 14.9, 4.0],  # plane
        [4.3, 3.2, 2.0], [6.1, 12.7, 2.2], [15.4, 5.1, 2.4], [7.2, 6.3, 3.0],  # fold
        [17.3, 15.6, 1.5], [25.9, 19.4, 1.7], [13.9, 21.3, 1.6],  # lower right
    ]], dtype=torch.float64)
    faces = torch.tensor([[0, 2, 1], [0, 3, 2], [4, 5, 6], [5, 7, 6], [8, 10, 9]])
    return verts, faces, (22, 24)


def test_occlusion_scene_is_what_it_claims():
    verts, faces, size = _occlusion_scene()
    from headcast.render.triangles import signed_area2

    area = signed_area2(verts[0][faces][:, :, :2])
    assert (area[[0, 1, 2, 4]] < 0).all() and area[3] > 0  # face 3 is folded back
    r = rasterize(verts, faces, size)
    assert set(r.face_id.unique().tolist()) == {-1, 0, 1, 2, 4}  # face 3 hidden


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_antialias_gradients_match_finite_differences(backend):
    verts, faces, size = _occlusion_scene()
    assert_no_pixel_near_an_edge(verts, faces, size)
    colours = torch.rand(1, verts.shape[1], 3, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(0))
    weights = torch.randn(1, *size, 3, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(1))

    def render(v, c):
        r = rasterize(v, faces, size, backend=backend)
        return (antialias(interpolate(c, r, faces), r, v, faces) * weights).sum()

    inputs = (verts.clone().requires_grad_(True), colours.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_antialiased_mask_approximates_pixel_coverage(backend):
    """The antialiased mask of a large triangle is close to the exact area coverage of each
    pixel (supersampled reference), and its sum to the triangle's area."""
    corners = np.array([[5.3, 4.1], [40.7, 12.6], [14.2, 37.9]])
    verts = torch.tensor(np.concatenate((corners, np.ones((3, 1))), 1)[None])
    faces = torch.tensor([[0, 1, 2]])
    r = rasterize(verts, faces, (44, 44), backend=backend)
    aa = antialias(r.mask, r, verts, faces)[0, ..., 0].numpy()
    # 16 x 16 samples per pixel
    s = (np.arange(44 * 16) + 0.5) / 16
    sx, sy = np.meshgrid(s, s)
    e = [(corners[(k + 1) % 3, 0] - sx) * (corners[(k + 2) % 3, 1] - sy)
         - (corners[(k + 1) % 3, 1] - sy) * (corners[(k + 2) % 3, 0] - sx) for k in range(3)]
    inside = ((e[0] >= 0) & (e[1] >= 0) & (e[2] >= 0)) | ((e[0] <= 0) & (e[1] <= 0) & (e[2] <= 0))
    coverage = inside.reshape(44, 16, 44, 16).mean((1, 3))
    area = 0.5 * abs(np.cross(corners[1] - corners[0], corners[2] - corners[0]))
    assert abs(aa.sum() - area) < 0.005 * area
    boundary = (coverage > 0) & (coverage < 1)
    hard = r.mask[0, ..., 0].numpy()
    assert np.abs(aa - coverage)[boundary].mean() < 0.25 * np.abs(hard - coverage)[boundary].mean()
    assert np.abs(aa - coverage).max() < 0.5


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_antialias_silhouette_gradients_reach_the_edge_vertices(backend):
    """Mask-only antialiasing: gradient to the vertices of silhouette edges (background and
    self-occlusion), none to vertices that are on no silhouette."""
    verts, faces, size = _occlusion_scene()
    v = verts.clone().requires_grad_(True)
    r = rasterize(v, faces, size, backend=backend)
    ids = torch.where(r.face_id == 2, 1.0, 0.0).to(torch.float64)[..., None]  # face 2's mask
    antialias(ids, r, v, faces).sum().backward()
    g = v.grad[0, :, :2].norm(dim=1)
    assert (g[[4, 5, 6]] > 0).all()  # all three edges of face 2 are silhouettes
    assert g[7] == 0  # the hidden fold vertex
    # the mask of the plane changes where face 2 and face 4 occlude it
    v.grad = None
    plane = torch.where(r.face_id <= 1, 1.0, 0.0).to(torch.float64)[..., None]
    plane = plane * (r.face_id >= 0)[..., None]
    antialias(plane, r, v, faces).sum().backward()
    assert (v.grad[0, 4:7, :2].norm(dim=1) > 0).all()
    assert torch.equal(v.grad[0, 7], torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_antialias_ignores_interior_edges(backend):
    """A flat front-facing grid with a different colour per face: only pixels next to the
    outer border change."""
    n = 6
    xs = 3.3 + 4.1 * np.arange(n)
    gx, gy = np.meshgrid(xs, xs)
    verts = torch.tensor(np.stack((gx.ravel(), gy.ravel(), np.full(gx.size, 2.0)), -1)[None])
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            faces += [(a, c, d), (a, d, b)]
    faces = torch.tensor(faces)
    r = rasterize(verts, faces, (30, 30), backend=backend)
    flat_colour = torch.rand(len(faces), 3, dtype=torch.float64)
    image = torch.where(r.face_id[..., None] >= 0, flat_colour[r.face_id.clamp(min=0)],
                        torch.zeros((), dtype=torch.float64))
    out = antialias(image, r, verts, faces)
    covered = (r.face_id[0] >= 0).numpy()
    pad = np.pad(covered, 1)
    interior = covered & pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    assert torch.equal(out[0][torch.from_numpy(interior)], image[0][torch.from_numpy(interior)])
    assert not torch.equal(out, image)  # the border is antialiased


@needs_numba
def test_antialias_torch_and_numba_agree(head_mesh):
    """Same silhouette pairs and the same gradients from both implementations, on the
    head (many background and self-occlusion contour pixels)."""
    v, f = head_mesh
    faces = torch.tensor(f)
    size = 128
    # turn the head so that the nose occludes the cheek
    c, s = np.cos(0.6), np.sin(0.6)
    rot = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    cam = flame_to_camera(torch.tensor(v) @ rot.T)[None]
    results = []
    for backend in ("torch", "numba"):
        screen = project_points(cam, *head_camera(size, size)).clone().requires_grad_(True)
        r = rasterize(screen, faces, (size, size), backend=backend, cull_backfaces=True)
        image = torch.cat((r.mask, interpolate(screen[..., 2:].detach(), r, faces)), -1)
        out = antialias(image, r, screen, faces)
        (out * torch.linspace(0, 1, out.numel(), dtype=out.dtype).view(out.shape)).sum().backward()
        results.append((out.detach(), screen.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-9, atol=1e-9)
    changed = (results[0][0] != image.detach()).any(-1)
    covered_both = r.face_id >= 0
    assert changed.sum() > 100
    # some antialiased pixels lie inside the silhouette (self-occlusion edges)
    from scipy.ndimage import binary_erosion

    inner = torch.from_numpy(binary_erosion(covered_both[0].numpy(), iterations=3))
    assert (changed[0] & inner).sum() > 5


# ---------------------------------------------------------------- silhouette fit


def _fit_silhouette(verts, faces, size, backend, steps=150):
    """Recover a known scale and image-plane translation from the mask alone."""
    fx, fy, cx, cy = head_camera(size, size)
    base = torch.tensor(verts, dtype=torch.float32)[None]
    centre = base.mean(1, keepdim=True)

    def screen(scale, shift):
        v = (base - centre) * scale + centre + torch.cat((shift, shift.new_zeros(1)))
        return project_points(flame_to_camera(v), fx, fy, cx, cy)

    true_scale, true_shift = torch.tensor(1.08), torch.tensor([0.012, -0.009])
    with torch.no_grad():
        s = screen(true_scale, true_shift)
        target = rasterize(s, faces, (size, size), backend=backend).mask

    scale = torch.tensor(1.0, requires_grad=True)
    shift = torch.zeros(2, requires_grad=True)
    opt = torch.optim.Adam([scale, shift], lr=3e-3)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.98)
    for _ in range(steps):
        opt.zero_grad()
        s = screen(scale, shift)
        r = rasterize(s, faces, (size, size), backend=backend, cull_backfaces=True)
        loss = (antialias(r.mask, r, s, faces) - target).abs().mean()
        loss.backward()
        opt.step()
        sched.step()
    return scale.item(), shift.detach().numpy(), float(true_scale), true_shift.numpy()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_silhouette_fit_recovers_scale_and_translation(backend):
    size = 96 if backend == "numba" else 64  # the pure-torch path is slower
    v, f = uv_sphere_head(n_lat=24, n_lon=48)
    scale, shift, true_scale, true_shift = _fit_silhouette(v, torch.tensor(f), size, backend)
    pixel = 1.0 / (4 * size)  # metres per pixel at the head's depth
    assert abs(scale - true_scale) < 0.01
    assert np.abs(shift - true_shift).max() < 0.5 * pixel


def test_silhouette_fit_on_synthetic_head():
    head = synthetic_head()
    if head is None:
        pytest.skip("headcast.flame.synthetic is not available")
    v, f = head
    scale, shift, true_scale, true_shift = _fit_silhouette(v, torch.tensor(f), 96, CPU_BACKENDS[-1])
    pixel = 1.0 / (4 * 96)
    assert abs(scale - true_scale) < 0.01
    assert np.abs(shift - true_shift).max() < 0.5 * pixel


def test_normals_render_gradients_flow_to_vertices(head_mesh):
    v, f = head_mesh
    faces = torch.tensor(f)
    verts = torch.tensor(v, dtype=torch.float32)[None].requires_grad_(True)
    cam = flame_to_camera(verts)
    screen = project_points(cam, *head_camera(64, 64))
    r = rasterize(screen, faces, (64, 64))
    normals = render_normals(r, cam, faces)
    covered = r.face_id >= 0
    assert torch.allclose(normals[covered].norm(dim=-1), torch.ones(()), atol=1e-5)
    assert (normals[covered][:, 2] < 0.05).all()  # visible surface faces the camera
    normals.sum().backward()
    assert torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0
