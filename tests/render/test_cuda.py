# SPDX-License-Identifier: GPL-3.0-or-later
"""CUDA checks: the torch backend on CUDA against CPU, and nvdiffrast against the torch
backend on CUDA (both skipped without a CUDA GPU; nvdiffrast ones also without
nvdiffrast)."""
from __future__ import annotations

import pytest
import torch
from render_helpers import flame_to_camera, head_camera, head_screen, uv_sphere_head

from headcast.render import antialias, interpolate, project_points, rasterize, render_normals

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _nvdiffrast():
    from headcast.render import nvdiffrast_backend

    if not nvdiffrast_backend.available():
        pytest.skip("nvdiffrast is not installed")


@pytest.fixture(scope="module")
def head():
    v, f = uv_sphere_head()
    return v, torch.tensor(f)


def _edge_pixels(face_id):
    """Pixels with a 4-neighbour of a different face id (where ids may legitimately
    differ between rasterizers)."""
    fid = torch.nn.functional.pad(face_id.float()[:, None], (1, 1, 1, 1), value=-2.0)[:, 0]
    centre = fid[:, 1:-1, 1:-1]
    edge = torch.zeros_like(centre, dtype=torch.bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= fid[:, dy:dy + centre.shape[1], dx:dx + centre.shape[2]] != centre
    return edge


@pytest.mark.parametrize("size", [128, 512])
def test_torch_backend_on_cuda_matches_cpu(size, head):
    v, faces = head
    screen = torch.cat([head_screen(v, size), head_screen(v * 0.9, size)])
    cpu = rasterize(screen, faces, (size, size), backend="torch")
    gpu = rasterize(screen.cuda(), faces.cuda(), (size, size), backend="torch")
    differ = (gpu.face_id.cpu() != cpu.face_id)
    assert differ.sum().item() <= 1e-3 * (cpu.face_id >= 0).sum().item()
    same = ~differ & (cpu.face_id >= 0)
    torch.testing.assert_close(gpu.depth.cpu()[same], cpu.depth[same], rtol=1e-5, atol=0)
    torch.testing.assert_close(gpu.bary.detach().cpu()[same], cpu.bary.detach()[same],
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("size", [128, 256, 512])
@pytest.mark.parametrize("cull", [False, True])
def test_nvdiffrast_matches_torch_on_cuda(size, cull, head):
    _nvdiffrast()
    v, faces = head
    screen = torch.cat([head_screen(v, size), head_screen(v * 0.9, size)]).cuda()
    faces = faces.cuda()
    ref = rasterize(screen, faces, (size, size), backend="torch", cull_backfaces=cull)
    nv = rasterize(screen, faces, (size, size), backend="nvdiffrast", cull_backfaces=cull)
    assert nv.backend == "nvdiffrast"
    differ = nv.face_id != ref.face_id
    covered = (ref.face_id >= 0).sum().item()
    assert (differ & ~_edge_pixels(ref.face_id)).sum().item() <= 1e-4 * covered
    assert differ.sum().item() <= 0.02 * covered
    same = ~differ & (ref.face_id >= 0)
    torch.testing.assert_close(nv.depth[same], ref.depth[same], rtol=1e-4, atol=0)
    torch.testing.assert_close(nv.bary.detach()[same], ref.bary.detach()[same], atol=2e-3,
                               rtol=0)
    assert (nv.depth[nv.face_id < 0] == 0).all()


def test_nvdiffrast_gradients_agree_with_torch(head):
    """Normal-map and antialiased-silhouette gradients: same direction from both backends."""
    _nvdiffrast()
    v, faces = head
    faces = faces.cuda()
    size = 256
    grads = {}
    for backend in ("torch", "nvdiffrast"):
        verts = torch.tensor(v, dtype=torch.float32, device="cuda")[None].requires_grad_(True)
        cam = flame_to_camera(verts)
        screen = project_points(cam, *head_camera(size, size))
        r = rasterize(screen, faces, (size, size), backend=backend)
        normals = render_normals(r, cam, faces)
        mask = antialias(r.mask, r, screen, faces)
        weights = torch.linspace(0, 1, size * size, device="cuda").view(1, size, size, 1)
        ((normals * weights).sum() + 10 * (mask * weights).sum()).backward()
        grads[backend] = (verts.grad.flatten(), normals.detach(), mask.detach())
    g_t, g_n = grads["torch"][0], grads["nvdiffrast"][0]
    assert torch.nn.functional.cosine_similarity(g_t, g_n, dim=0) > 0.95
    assert (grads["torch"][2] - grads["nvdiffrast"][2]).abs().mean() < 0.01
    uv = torch.rand(len(v), 2, device="cuda")
    for backend in ("torch", "nvdiffrast"):
        r = rasterize(head_screen(v, 64).cuda(), faces, (64, 64), backend=backend)
        out = interpolate(uv, r, faces)
        assert out.shape == (1, 64, 64, 2) and out.is_cuda


def test_auto_backend_prefers_nvdiffrast_on_cuda(head):
    _nvdiffrast()
    v, faces = head
    r = rasterize(head_screen(v, 64).cuda(), faces.cuda(), (64, 64))
    assert r.backend == "nvdiffrast"
