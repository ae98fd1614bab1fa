# SPDX-License-Identifier: GPL-3.0-or-later
"""The nvdiffrast backend's plumbing, on CPU, with a stand-in for ``nvdiffrast.torch``.

The stand-in implements nvdiffrast's documented conventions (clip-space input, NDC with y
up, image row 0 at the bottom, ``rast = (u, v, z/w, triangle_id + 1)`` with u, v weighting
vertices 0 and 1) on top of the torch rasterizer. Running the backend against it checks the
conversions both ways (clip space, row flip, id offset, barycentric order, the culled
per-image face subsets and the depth buffer) without a GPU. The real nvdiffrast is
compared in test_cuda.py where a GPU is available.
"""
from __future__ import annotations

import pytest
import torch
from render_helpers import head_screen, random_soup

from headcast.render import nvdiffrast_backend, rasterize
from headcast.render.interpolate import interpolate


class FakeNvdiffrast:
    """Just enough of ``nvdiffrast.torch`` for the backend, in nvdiffrast's conventions."""

    calls = 0

    class RasterizeCudaContext:
        def __init__(self, device=None):
            self.device = device

    @staticmethod
    def rasterize(ctx, pos, tri, resolution, ranges=None, grad_db=True):
        assert pos.dtype == torch.float32 and tri.dtype == torch.int32 and pos.dim() == 3
        FakeNvdiffrast.calls += 1
        H, W = resolution
        ndc_x = pos[..., 0] / pos[..., 3]
        ndc_y = pos[..., 1] / pos[..., 3]
        # NDC -> pixels with row 0 at the bottom, then to the top-down pixel space of the
        # reference rasterizer
        x_px = (ndc_x + 1.0) * 0.5 * W
        y_up = (ndc_y + 1.0) * 0.5 * H
        screen = torch.stack((x_px, H - y_up, pos[..., 3]), -1)
        r = rasterize(screen, tri.long(), (H, W), backend="torch")
        z_over_w = interpolate(pos[..., 2:3] / pos[..., 3:4], r, tri.long())
        ids = (r.face_id + 1).to(torch.float32)[..., None]
        rast = torch.cat((r.bary[..., :2], z_over_w, ids), -1)
        return rast.flip(1), None  # top-down -> bottom-up rows

    @staticmethod
    def antialias(color, rast, pos, tri, topology_hash=None, pos_gradient_boost=1.0):
        assert color.is_contiguous() and color.dtype == torch.float32
        # mark the bottom row so that the test can check the flips
        out = color.clone()
        out[:, 0] += 100.0
        return out

    @staticmethod
    def antialias_construct_topology_hash(tri):
        return ("hash", tri.shape[0])


@pytest.fixture
def fake_nvdiffrast(monkeypatch):
    monkeypatch.setattr(nvdiffrast_backend, "dr", FakeNvdiffrast)
    monkeypatch.setattr(nvdiffrast_backend, "available", lambda: True)
    monkeypatch.setattr(nvdiffrast_backend, "_CONTEXTS", {})
    monkeypatch.setattr(nvdiffrast_backend, "_TOPOLOGY", {})
    FakeNvdiffrast.calls = 0
    return FakeNvdiffrast


@pytest.mark.parametrize("cull", [False, True])
def test_buffers_match_the_torch_backend(fake_nvdiffrast, cull, small_head_mesh):
    v, f = small_head_mesh
    faces = torch.tensor(f)
    screens = torch.cat([head_screen(v, 64), head_screen(v * 0.8, 64)])
    screens[1, :, 0] += 6.0
    ref = rasterize(screens, faces, (64, 56), backend="torch", cull_backfaces=cull)
    nv = nvdiffrast_backend.rasterize_nvdiffrast(screens, faces, (64, 56), cull, 1e-6)
    assert fake_nvdiffrast.calls == (2 if cull else 1)  # one call per image when culling
    assert nv.backend == "nvdiffrast" and nv.face_id.shape == ref.face_id.shape
    differ = nv.face_id != ref.face_id
    # the clip-space round trip moves vertices by float32 rounding only
    assert differ.sum().item() <= 0.002 * (ref.face_id >= 0).sum().item()
    same = ~differ & (ref.face_id >= 0)
    torch.testing.assert_close(nv.bary.detach()[same], ref.bary.detach()[same], atol=1e-4,
                               rtol=0)
    torch.testing.assert_close(nv.depth[same], ref.depth[same], rtol=1e-5, atol=0)
    assert (nv.depth[nv.face_id < 0] == 0).all()


def test_barycentrics_carry_gradients_and_antialias_flips_back(fake_nvdiffrast):
    verts, faces = random_soup(20, 32, 5)
    verts = verts.clone().requires_grad_(True)
    nv = nvdiffrast_backend.rasterize_nvdiffrast(verts, faces, (32, 32), False, 1e-6)
    nv.pixel_bary.sum().backward()  # d(sum of barycentrics)/d(vertices) is ~0 but defined
    assert verts.grad is not None
    image = torch.rand(1, 32, 32, 3)
    out = nvdiffrast_backend.antialias_nvdiffrast(image, nv, faces)
    # the stand-in marked its row 0 (the bottom); it must come back as our last row
    torch.testing.assert_close(out[:, -1], image[:, -1] + 100.0)
    torch.testing.assert_close(out[:, :-1], image[:, :-1])


def test_clip_space_conversion():
    screen = torch.tensor([[[0.0, 0.0, 2.0], [64.0, 48.0, 4.0], [32.0, 24.0, 3.0]]])
    clip = nvdiffrast_backend.to_clip(screen, (48, 64), 1e-6)
    ndc = clip[..., :3] / clip[..., 3:]
    # top-left image corner -> NDC (-1, +1); bottom-right -> (+1, -1); centre -> (0, 0)
    torch.testing.assert_close(ndc[0, :, :2], torch.tensor([[-1.0, 1.0], [1.0, -1.0], [0.0, 0.0]]))
    torch.testing.assert_close(clip[..., 3], screen[..., 2])
    z = ndc[0, :, 2]
    assert (z > -1).all() and (z < 1).all() and z[0] < z[2] < z[1]  # depth order kept
