# SPDX-License-Identifier: GPL-3.0-or-later
"""Official TTA, decoding and PNG conventions, and the cue conventions, on constructed inputs."""
from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest
import torch

from headcast.priors import (PriorPredictor, decode_normals, decode_uv, flip_merge, read_normals_png,
                             read_official_outputs, read_uv_png, uv_cue, write_normals_png,
                             write_official_outputs, write_uv_png)
from headcast.priors.conventions import normals_png, normals_png_from_raw, uv_png, uv_png_from_raw

from .official_checkpoint import random_network, tiny_config, write_official_checkpoint


def test_uv_flip_merge_hand_computed():
    raw = torch.tensor([[0.2, 0.4, 0.6], [1.0, 2.0, 3.0]]).reshape(1, 2, 1, 3)
    mirrored = torch.tensor([[0.1, 0.3, -0.5], [4.0, 5.0, 6.0]]).reshape(1, 2, 1, 3)
    merged = flip_merge("uv_map", raw, mirrored)
    # u: mirror back [-0.5, 0.3, 0.1], negate and add 2 * 0.0075, average with [0.2, 0.4, 0.6]
    torch.testing.assert_close(merged[0, 0, 0], torch.tensor([0.3575, 0.0575, 0.2575]))
    torch.testing.assert_close(merged[0, 1, 0], torch.tensor([3.5, 3.5, 3.5]))
    assert torch.equal(mirrored, torch.tensor([[0.1, 0.3, -0.5], [4.0, 5.0, 6.0]]).reshape(1, 2, 1, 3))


def test_normals_flip_merge_hand_computed():
    raw = torch.tensor([[0.5, -0.5], [0.2, 0.4], [-1.0, -0.6]]).reshape(1, 3, 1, 2)
    mirrored = torch.tensor([[0.3, 0.1], [0.0, 0.6], [-0.2, -0.8]]).reshape(1, 3, 1, 2)
    merged = flip_merge("normals", raw, mirrored)
    # x: mirror back [0.1, 0.3], negated [-0.1, -0.3]; y and z just averaged with the mirror back
    torch.testing.assert_close(merged[0, :, 0], torch.tensor([[0.2, -0.4], [0.4, 0.2], [-0.9, -0.4]]))
    with pytest.raises(ValueError, match="no flip rule for output 'albedo'"):
        flip_merge("albedo", raw, mirrored)


def test_uv_decoding_hand_computed():
    raw = torch.tensor([[-1.0, 0.5], [1.2, -1.4], [0.0, 0.0]]).T.reshape(1, 2, 1, 3)
    uv = decode_uv(raw)
    assert uv.shape == (1, 1, 3, 2)
    torch.testing.assert_close(uv[0, 0], torch.tensor([[0.0, 0.75], [1.0, 0.0], [0.5, 0.5]]))
    # the cue undoes Pixel3DMM's v -> 1 - v
    np.testing.assert_allclose(uv_cue(np.array([[0.25, 0.75], [0.6, 0.1]])), [[0.25, 0.25], [0.6, 0.9]])


def test_normals_decoding_hand_computed():
    raw = torch.tensor([[0.0, 0.0, -2.0], [0.0, -3.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).T.reshape(1, 3, 1, 4)
    n = decode_normals(raw)[0, 0]
    s = 1 / math.sqrt(2)
    # head frame = (raw x, -raw z, -raw y) of the unit raw vector
    torch.testing.assert_close(n, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [s, 0.0, -s], [0.0, -1.0, 0.0]]))


def test_png_content_matches_official_formulas():
    raw_n = torch.tensor([0.0, 0.0, -1.0]).reshape(1, 3, 1, 1)
    # official: t = (n + 1) / 2 = (0.5, 0.5, 0); stored [t0, 1 - t2, 1 - t1] * 255, truncated
    assert normals_png_from_raw(raw_n)[0, 0, 0].tolist() == [127, 255, 127]
    assert normals_png(decode_normals(raw_n).numpy())[0, 0, 0].tolist() == [127, 255, 127]
    raw_uv = torch.tensor([0.3, -0.2]).reshape(1, 2, 1, 1)
    assert uv_png_from_raw(raw_uv)[0, 0, 0].tolist() == [165, 102, 0]  # int(0.65*255), int(0.4*255), 0
    g = torch.Generator().manual_seed(0)
    raw_uv = torch.randn(2, 2, 16, 16, generator=g)
    assert np.array_equal(uv_png(decode_uv(raw_uv).numpy()), uv_png_from_raw(raw_uv))
    raw_n = torch.randn(2, 3, 16, 16, generator=g)
    ours, official = normals_png(decode_normals(raw_n).numpy()).astype(int), normals_png_from_raw(raw_n).astype(int)
    assert np.abs(ours - official).max() <= 1 and (ours == official).mean() > 0.98


def test_png_files_round_trip(tmp_path):
    g = np.random.default_rng(1)
    uv = g.uniform(0, 1, (8, 12, 2)).astype(np.float32)
    n = g.normal(size=(8, 12, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    write_uv_png(tmp_path / "uv.png", uv)
    write_normals_png(tmp_path / "n.png", n)
    raw = cv2.imread(str(tmp_path / "uv.png"))[..., ::-1]
    assert raw.shape == (8, 12, 3) and (raw[..., 2] == 0).all()  # R = u, G = 1 - v, B = 0
    back = read_uv_png(tmp_path / "uv.png")
    assert ((uv - back) >= -1e-6).all() and ((uv - back) < 1 / 255 + 1e-6).all()  # truncation
    nb = read_normals_png(tmp_path / "n.png")
    angle = np.degrees(np.arccos(np.clip((nb * n).sum(-1), -1, 1)))
    assert angle.max() < 1.0 and np.allclose(np.linalg.norm(nb, axis=-1), 1, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_uv_png(tmp_path / "missing.png")
    cv2.imwrite(str(tmp_path / "grey.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="grey.png: not an 8-bit RGB PNG"):
        read_normals_png(tmp_path / "grey.png")


def test_official_folder_layout(tmp_path):
    uv = np.full((2, 4, 4, 2), 0.5, np.float32)
    n = np.zeros((2, 4, 4, 3), np.float32)
    n[..., 2] = 1
    written = write_official_outputs(tmp_path, uv, n)
    names = sorted(str(p.relative_to(tmp_path)) for p in written)
    assert names == ["p3dmm/normals/00000.png", "p3dmm/normals/00001.png",
                     "p3dmm/uv_map/00000.png", "p3dmm/uv_map/00001.png"]
    back = read_official_outputs(tmp_path)
    assert back["uv_map"].shape == (2, 4, 4, 2) and back["normals"].shape == (2, 4, 4, 3)
    np.testing.assert_allclose(back["normals"][..., 2], 1.0, atol=1e-2)
    with pytest.raises(FileNotFoundError):
        read_official_outputs(tmp_path / "empty")


def test_cue_conventions_against_the_model(synthetic_model, tmp_path):
    """uv cue == HeadModel.uv and normals cue == head-frame normals, through the official PNG files."""
    from headcast.render import project_points, rasterize, render_normals, render_uv

    m = synthetic_model
    v = torch.as_tensor(m.v_template, dtype=torch.float32)[None]
    cam = torch.stack([v[..., 0], -v[..., 1], 0.9 - v[..., 2]], -1)  # frontal OpenCV camera
    screen = project_points(cam, 350.0, 350.0, 64.0, 64.0)
    faces = torch.as_tensor(m.faces)
    r = rasterize(screen, faces, (128, 128), cull_backfaces=True)
    covered = (r.face_id[0] >= 0).numpy()
    uv_model = render_uv(r, torch.as_tensor(m.uv, dtype=torch.float32), torch.as_tensor(m.faces_uv))[0].numpy()
    n_head = render_normals(r, v, faces)[0].numpy()  # normals of the template in its own (head) frame
    uv_official = np.stack([uv_model[..., 0], 1 - uv_model[..., 1]], -1)  # what Pixel3DMM would predict
    write_official_outputs(tmp_path, uv_official[None], n_head[None])
    back = read_official_outputs(tmp_path)
    cue_uv = uv_cue(back["uv_map"][0])
    assert np.abs(cue_uv - uv_model)[covered].max() < 1.5 / 255
    # the head frame: the nose tip's normal points forward (+z), the forehead's up-forward (+y),
    # the subject's left cheek's to the left (+x)
    cue_n = back["normals"][0]
    cols = screen[0, :, :2].numpy()
    def normal_at(vertex):
        x, y = np.floor(cols[vertex]).astype(int)
        assert 0 <= x < 128 and 0 <= y < 128 and covered[y, x]
        return cue_n[y, x]

    nose = int(np.argmax(m.v_template[:, 2]))
    assert normal_at(nose)[2] > 0.9
    forehead = int(np.argmin(np.linalg.norm(m.v_template - [0.0, 0.085, 0.06], axis=1)))
    assert normal_at(forehead)[1] > 0.3 and normal_at(forehead)[2] > 0.3
    cheek = int(np.argmin(np.linalg.norm(m.v_template - [0.06, -0.02, 0.04], axis=1)))
    assert normal_at(cheek)[0] > 0.4
    np.testing.assert_allclose(cue_n[covered], n_head[covered], atol=0.02)


class _HalfImage(torch.nn.Module):
    """A stand-in network: raw uv = 2 * (red, green) - 1 of the input, pixel by pixel."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = tiny_config()

    def forward(self, rgb):
        return {"uv_map": rgb[:, :2] * 2 - 1 + self.anchor}


def test_predictor_tta_hand_computed():
    img = np.zeros((1, 64, 64, 3), np.uint8)
    img[0, :, :32, 0] = 255  # left half red
    img[0, 10:20, :, 1] = 51  # a green band
    maps = PriorPredictor(uv_network=_HalfImage(), tta=True).predict(img)
    # u: the mirrored prediction, flipped back, is the same red pattern; negated + 0.015 and
    # averaged it cancels to 0.0075 raw everywhere -> 0.50375 decoded. v' = green / 255.
    np.testing.assert_allclose(maps.uv[..., 0], 0.50375, atol=1e-6)
    np.testing.assert_allclose(maps.uv[0, 15, :, 1], 0.2, atol=1e-6)
    np.testing.assert_allclose(maps.uv[0, 30, :, 1], 0.0, atol=1e-6)
    no_tta = PriorPredictor(uv_network=_HalfImage(), tta=False).predict(img)
    np.testing.assert_allclose(no_tta.uv[0, 0, :32, 0], 1.0)
    np.testing.assert_allclose(no_tta.uv[0, 0, 32:, 0], 0.0)
    np.testing.assert_allclose(maps.uv_cue()[0, 15, :, 1], 0.8, atol=1e-6)


def test_predictor_batches_and_loads_weights_dir(tmp_path):
    uv_net = random_network(tiny_config(), seed=0)
    n_net = random_network(tiny_config(outputs=(("normals", 3),)), seed=1)
    write_official_checkpoint(tmp_path / "uv.ckpt", uv_net)
    (tmp_path / "pretrained_weights").mkdir()
    write_official_checkpoint(tmp_path / "pretrained_weights" / "normals.ckpt", n_net)
    crops = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = PriorPredictor.from_weights_dir(tmp_path, device="cpu", backbone="headcast", batch_size=1)
        three = PriorPredictor.from_weights_dir(tmp_path, device="cpu", backbone="headcast", batch_size=3)
    for p in (one, three):  # tiny test networks take 64x64 crops
        for net in p.networks.values():
            net.config = net.config.with_overrides(image_size=64)
    a, b = one.predict(crops), three.predict(crops)
    assert a.uv.shape == (3, 64, 64, 2) and a.normals.shape == (3, 64, 64, 3)
    np.testing.assert_allclose(a.uv, b.uv, atol=1e-5)
    np.testing.assert_allclose(a.normals, b.normals, atol=1e-4)
    assert (a.uv >= 0).all() and (a.uv <= 1).all()
    np.testing.assert_allclose(np.linalg.norm(a.normals, axis=-1), 1.0, atol=1e-5)
    # the same maps as running the network by hand with the official TTA
    x = torch.from_numpy(crops).float().permute(0, 3, 1, 2) / 255
    with torch.no_grad():
        raw = flip_merge("uv_map", uv_net(x)["uv_map"], uv_net(torch.flip(x, dims=[-1]))["uv_map"])
    np.testing.assert_allclose(a.uv, decode_uv(raw).numpy(), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="neither uv.ckpt nor normals.ckpt"):
        PriorPredictor.from_weights_dir(tmp_path / "pretrained_weights" / "none")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_half_precision_on_cuda_close_to_float32():
    net = random_network(tiny_config(), seed=0).cuda()
    crops = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    full = PriorPredictor(uv_network=net).predict(crops)
    half = PriorPredictor(uv_network=net, half=True).predict(crops)
    assert np.abs(full.uv - half.uv).max() < 2e-2
