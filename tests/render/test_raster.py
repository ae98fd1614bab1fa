# SPDX-License-Identifier: GPL-3.0-or-later
"""Visibility, depth and barycentrics against a brute-force float64 reference, and the
torch and numba visibility passes against each other."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from render_helpers import brute_force, head_screen, random_soup, synthetic_head

from headcast.render import rasterize
from headcast.render import visibility_numba
from headcast.render.triangles import prepare_triangles
from headcast.render.visibility_torch import visibility_torch

CPU_BACKENDS = ["torch"] + (["numba"] if visibility_numba.AVAILABLE else [])
needs_numba = pytest.mark.skipif(not visibility_numba.AVAILABLE, reason="numba not installed")


def check_against_reference(verts_screen, faces, size, backends, cull=False, pixels=None,
                            max_ambiguous=0.02):
    """Rasterize one image with each backend and compare with the brute-force reference on
    every pixel that is not within 1e-3 px of a triangle edge (nor a depth tie)."""
    faces = torch.as_tensor(faces)
    pix, ref_face, ref_depth, ref_bary, ambiguous = brute_force(
        verts_screen[0].double().numpy(), faces.numpy(), size, size, pixels=pixels, cull=cull)
    sure = ~ambiguous
    assert ambiguous.mean() <= max_ambiguous, ambiguous.mean()
    hit = sure & (ref_face >= 0)
    assert hit.sum() > 0.05 * len(pix)  # the scene is not empty
    for backend in [backends] if isinstance(backends, str) else backends:
        raster = rasterize(verts_screen, faces, (size, size), backend=backend,
                           cull_backfaces=cull)
        got_face = raster.face_id.reshape(-1)[pix].numpy()
        got_depth = raster.depth.reshape(-1)[pix].double().numpy()
        got_bary = raster.bary.reshape(-1, 3)[pix].detach().double().numpy()
        wrong = np.flatnonzero(sure & (got_face != ref_face))
        assert wrong.size == 0, f"{backend}: {wrong.size} pixels differ, e.g. {pix[wrong[:5]]}"
        np.testing.assert_allclose(got_depth[hit], ref_depth[hit], rtol=2e-6)
        np.testing.assert_allclose(got_bary[hit], ref_bary[hit], atol=2e-4)
        assert (got_depth[~hit & sure] == 0).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_single_triangle_golden(backend):
    """A hand-checked triangle: which pixel centres it covers, and depth/bary at one."""
    verts = torch.tensor([[[1.0, 1.0, 2.0], [7.0, 1.0, 2.0], [1.0, 5.0, 4.0]]])
    faces = torch.tensor([[0, 1, 2]])
    r = rasterize(verts, faces, (6, 8), backend=backend)
    # centres (x+0.5, y+0.5) with x >= 1, y >= 1 and (x+0.5-1)/6 + (y+0.5-1)/4 <= 1
    expected = np.zeros((6, 8), dtype=bool)
    for y in range(6):
        for x in range(8):
            cx, cy = x + 0.5, y + 0.5
            expected[y, x] = cx >= 1 and cy >= 1 and (cx - 1) / 6 + (cy - 1) / 4 <= 1
    assert np.array_equal((r.face_id[0] >= 0).numpy(), expected)
    # pixel (x=2, y=1): centre (2.5, 1.5) -> screen barycentrics (0.625, 0.25, 0.125)
    lam = np.array([1 - 1.5 / 6 - 0.5 / 4, 1.5 / 6, 0.5 / 4])
    q = lam / np.array([2.0, 2.0, 4.0])
    np.testing.assert_allclose(r.bary[0, 1, 2].detach().numpy(), q / q.sum(), atol=1e-6)
    assert r.depth[0, 1, 2].item() == pytest.approx(1.0 / q.sum(), rel=1e-6)
    assert r.depth[0, 0, 0].item() == 0 and r.face_id[0, 0, 0].item() == -1


@pytest.mark.parametrize("size,n_faces,seed", [(64, 60, 0), (64, 200, 1), (128, 150, 2)])
@pytest.mark.parametrize("cull", [False, True])
def test_random_soup_matches_brute_force(size, n_faces, seed, cull):
    verts, faces = random_soup(n_faces, size, seed)
    check_against_reference(verts, faces, size, CPU_BACKENDS, cull=cull)


@pytest.mark.parametrize("cull", [False, True])
def test_small_head_full_image_matches_brute_force(cull, small_head_mesh):
    v, f = small_head_mesh
    check_against_reference(head_screen(v, 64), f, 64, CPU_BACKENDS, cull=cull)


@pytest.mark.parametrize("size", [64, 256, 512])
def test_head_mesh_matches_brute_force(size, head_mesh):
    """The 9.8k-face head: every third pixel at 64², 800 random pixels at 256² and 512²."""
    v, f = head_mesh
    if size > 64:
        pixels = np.random.default_rng(size).choice(size * size, 800, replace=False)
    else:
        pixels = np.arange(0, size * size, 3)
    check_against_reference(head_screen(v, size), f, size, CPU_BACKENDS, pixels=pixels)


@pytest.mark.parametrize("size", [64, 256])
def test_synthetic_head_matches_brute_force(size):
    """The project's synthetic FLAME-format head (about 5k v / 10k f)."""
    head = synthetic_head()
    if head is None:
        pytest.skip("headcast.flame.synthetic is not available")
    v, f = head
    pixels = np.random.default_rng(size).choice(size * size, 600, replace=False)
    check_against_reference(head_screen(v, size), f, size, CPU_BACKENDS, pixels=pixels)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_watertight_on_pixel_aligned_grid(backend):
    """A planar grid whose vertices sit on pixel centres puts many centres exactly on shared
    edges: every centre in the closed square must be covered, none outside."""
    n, step, origin = 7, 6, 4.5
    xs = origin + step * np.arange(n)
    gx, gy = np.meshgrid(xs, xs)
    rng = np.random.default_rng(0)
    w = 2.0 + rng.uniform(0, 0.5, gx.size)  # non-planar depth: still a height field
    verts = torch.tensor(np.stack((gx.ravel(), gy.ravel(), w), -1)[None], dtype=torch.float32)
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            faces += [(a, b, d), (a, d, c)] if (i + j) % 2 else [(a, b, c), (b, d, c)]
    r = rasterize(verts, torch.tensor(faces), (48, 48), backend=backend)
    centres = np.arange(48) + 0.5
    inside = (centres >= xs[0]) & (centres <= xs[-1])
    expected = inside[:, None] & inside[None, :]
    assert np.array_equal((r.face_id[0] >= 0).numpy(), expected)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_jittered_grid_has_no_holes(backend):
    """Random interior vertex positions, fixed square border: no pixel centre inside the
    square may fall between triangles."""
    n, step, origin = 9, 5.0, 3.25
    xs = origin + step * np.arange(n)
    gx, gy = np.meshgrid(xs, xs)
    rng = np.random.default_rng(1)
    jitter = rng.uniform(-2.0, 2.0, (2, n, n))
    jitter[:, [0, -1], :] = 0
    jitter[:, :, [0, -1]] = 0
    pts = np.stack((gx + jitter[0], gy + jitter[1], 1.5 + rng.uniform(0, 1, (n, n))), -1)
    verts = torch.tensor(pts.reshape(1, -1, 3), dtype=torch.float32)
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            faces += [(a, b, d), (a, d, c)]
    r = rasterize(verts, torch.tensor(faces), (48, 48), backend=backend)
    centres = np.arange(48) + 0.5
    inside = (centres >= xs[0]) & (centres <= xs[-1])
    assert np.array_equal((r.face_id[0] >= 0).numpy(), inside[:, None] & inside[None, :])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backface_culling(backend):
    """Counter-clockwise in the image (negative signed area, y down) is front-facing."""
    front = [[2.0, 2.0, 1.0], [2.0, 12.0, 1.0], [12.0, 2.0, 1.0]]  # ccw as seen
    back = [[14.0, 14.0, 1.0], [24.0, 14.0, 1.0], [14.0, 24.0, 1.0]]  # cw as seen
    verts = torch.tensor([front + back])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    both = rasterize(verts, faces, (26, 26), backend=backend)
    culled = rasterize(verts, faces, (26, 26), backend=backend, cull_backfaces=True)
    assert set(both.face_id.unique().tolist()) == {-1, 0, 1}
    assert set(culled.face_id.unique().tolist()) == {-1, 0}
    assert torch.equal(culled.face_id == 0, both.face_id == 0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_culling_keeps_the_visible_surface_of_a_closed_mesh(backend, head_mesh):
    v, f = head_mesh
    screen = head_screen(v, 128)
    faces = torch.tensor(f)
    a = rasterize(screen, faces, (128, 128), backend=backend)
    b = rasterize(screen, faces, (128, 128), backend=backend, cull_backfaces=True)
    covered = (a.face_id >= 0).sum().item()
    assert (a.face_id != b.face_id).sum().item() <= 0.002 * covered


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_near_plane_and_invalid_vertices_drop_triangles(backend):
    verts = torch.tensor([[[2.0, 2.0, 1.0], [12.0, 2.0, 1.0], [2.0, 12.0, 1.0],
                           [2.0, 2.0, -1.0], [12.0, 2.0, 1.0], [2.0, 12.0, 1.0],
                           [2.0, 2.0, float("nan")], [12.0, 2.0, 0.5], [2.0, 12.0, 0.5],
                           [5.0, 5.0, 0.2], [5.0, 5.0, 0.2], [5.0, 5.0, 0.2]]])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]])
    r = rasterize(verts, faces, (16, 16), backend=backend)
    assert set(r.face_id.unique().tolist()) == {-1, 0}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_batch_equals_single_images(backend, small_head_mesh):
    v, f = small_head_mesh
    faces = torch.tensor(f)
    screens = torch.cat([head_screen(v * s, 64) for s in (0.8, 1.0, 1.3)])
    screens[1, :, 0] += 5.0
    batch = rasterize(screens, faces, (64, 48), backend=backend)
    for b in range(3):
        single = rasterize(screens[b:b + 1], faces, (64, 48), backend=backend)
        assert torch.equal(batch.face_id[b], single.face_id[0])
        assert torch.equal(batch.depth[b], single.depth[0])
        assert torch.allclose(batch.bary[b], single.bary[0])


def test_torch_chunking_does_not_change_the_result(head_mesh):
    v, f = head_mesh
    setup = prepare_triangles(head_screen(v, 96), torch.tensor(f), (96, 96))
    whole = visibility_torch(setup)
    chunked = visibility_torch(setup, chunk_pairs=997)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])


def _identical(verts, faces, size, cull=False):
    a = rasterize(verts, faces, size, backend="torch", cull_backfaces=cull)
    b = rasterize(verts, faces, size, backend="numba", cull_backfaces=cull)
    assert torch.equal(a.face_id, b.face_id)
    assert torch.equal(a.depth, b.depth)
    # (barycentrics: numba computes in float64, torch in float32)
    assert torch.allclose(a.pixel_bary, b.pixel_bary, atol=1e-4)
    return a


@needs_numba
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("cull", [False, True])
def test_torch_and_numba_visibility_identical_on_random_soups(seed, cull):
    g = torch.Generator().manual_seed(seed)
    verts, faces = random_soup(300, 80, seed, batch=2, tri_scale=0.4)
    # pixel-aligned vertices, exact depth ties, degenerate and huge triangles
    verts[:, :30, :2] = torch.floor(verts[:, :30, :2]) + 0.5
    verts[:, 30:60] = verts[:, 0:30]  # faces 10..19 duplicate faces 0..9: lowest id wins
    verts[:, 60:63] = torch.tensor([[5.0, 5.0, 1.0], [10.0, 10.0, 1.0], [15.0, 15.0, 1.0]])
    verts[:, 63:66] = torch.tensor([[-500.0, -500.0, 9.0], [900.0, -400.0, 9.0], [0.0, 900.0, 9.0]])
    verts[:, 66:69, 2] = torch.rand(2, 3, generator=g) * 1e-3
    a = _identical(verts, faces, (80, 72), cull)
    # the duplicated faces never win over their lower-index twin
    assert not ((a.face_id >= 10) & (a.face_id < 20)).any()


@needs_numba
@pytest.mark.parametrize("size", [64, 256, 512])
@pytest.mark.parametrize("cull", [False, True])
def test_torch_and_numba_visibility_identical_on_head(size, cull, head_mesh):
    v, f = head_mesh
    screens = torch.cat([head_screen(v, size), head_screen(v * 0.9, size)])
    _identical(screens, torch.tensor(f), (size, size), cull)


@needs_numba
def test_torch_and_numba_identical_on_synthetic_head():
    head = synthetic_head()
    if head is None:
        pytest.skip("headcast.flame.synthetic is not available")
    v, f = head
    for size in (128, 512):
        _identical(head_screen(v, size), torch.tensor(f), (size, size))


def test_backend_selection():
    verts, faces = random_soup(4, 16, 0)
    assert rasterize(verts, faces, (16, 16)).backend == (
        "numba" if visibility_numba.AVAILABLE else "torch")
    assert rasterize(verts, faces, (16, 16), backend="torch").backend == "torch"
    with pytest.raises(RuntimeError):
        rasterize(verts, faces, (16, 16), backend="nvdiffrast")  # CPU tensors
    with pytest.raises(ValueError):
        rasterize(verts, faces, (16, 16), backend="opengl")


def test_raster_buffers_are_consistent():
    verts, faces = random_soup(40, 32, 3)
    r = rasterize(verts, faces, (32, 40))
    assert r.face_id.shape == (1, 32, 40) and r.face_id.dtype == torch.int64
    assert r.depth.shape == (1, 32, 40) and not r.depth.requires_grad
    assert r.bary.shape == (1, 32, 40, 3)
    covered = r.face_id >= 0
    assert torch.equal(r.mask[..., 0] > 0, covered)
    assert torch.equal(r.pixel_face, r.face_id.reshape(-1)[r.pixel_index])
    assert torch.allclose(r.bary.sum(-1)[covered], torch.ones(()), atol=1e-5)
    assert (r.bary[~covered] == 0).all()


def test_perspective_correct_barycentrics_interpolate_depth_exactly(small_head_mesh):
    """Perspective-correct interpolation of w reproduces the depth buffer."""
    v, f = small_head_mesh
    screen = head_screen(v, 64, dtype=torch.float64)
    faces = torch.tensor(f)
    r = rasterize(screen, faces, (64, 64))
    w = screen[0, :, 2][faces[r.pixel_face]]
    np.testing.assert_allclose((r.pixel_bary.detach() * w).sum(1).numpy(),
                               r.depth.reshape(-1)[r.pixel_index].double().numpy(), rtol=1e-6)
