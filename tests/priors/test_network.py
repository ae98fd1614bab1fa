# SPDX-License-Identifier: GPL-3.0-or-later
"""The prior network against an independent float64 numpy forward pass, and against timm when it imports."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from headcast.priors.network import PriorNetConfig, PriorNetwork, unpatchify
from headcast.priors.vit import resample_abs_pos_embed, timm_available

from . import numpy_reference as ref
from .official_checkpoint import random_network, tiny_config


def _numpy_state(net):
    return {k: v.detach().double().numpy() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("old, new", [(3, 4), (14, 32), (7, 5)])
def test_pos_embed_resampling_matches_antialiased_bicubic_reference(old, new):
    g = torch.Generator().manual_seed(old * 100 + new)
    pos = torch.randn(1, 1 + old * old, 6, generator=g, dtype=torch.float64)
    got = resample_abs_pos_embed(pos, (new, new), (old, old), 1)
    want = ref.resample_pos_embed(pos.numpy(), old, new)
    assert got.shape == (1, 1 + new * new, 6) and got.dtype == torch.float64
    assert torch.equal(got[:, :1], pos[:, :1])  # the class entry is kept as is
    # timm interpolates in float32
    np.testing.assert_allclose(got.numpy(), want, atol=2e-6, rtol=1e-5)


def test_pos_embed_unchanged_on_trained_grid():
    pos = torch.randn(1, 10, 4)
    assert resample_abs_pos_embed(pos, (3, 3), (3, 3)) is pos


def test_unpatchify_layout_is_row_column_channel():
    # token (i, j) vector index (r*2 + c)*P + ch -> pixel (2i + r, 2j + c), channel ch
    B, gh, gw, P = 1, 2, 3, 2
    tokens = torch.arange(B * gh * gw * 4 * P, dtype=torch.float32).reshape(B, gh * gw, 4 * P)
    img = unpatchify(tokens, (gh, gw), 2, P)
    assert img.shape == (B, P, 4, 6)
    for i in range(gh):
        for j in range(gw):
            for r in range(2):
                for c in range(2):
                    for ch in range(P):
                        assert img[0, ch, 2 * i + r, 2 * j + c] == tokens[0, i * gw + j, (r * 2 + c) * P + ch]


@pytest.mark.parametrize("variant", [
    dict(),
    dict(outputs=(("normals", 3),), use_pos_enc=True, n_views=2, encoder_heads=4, num_heads=4),
])
def test_forward_matches_float64_numpy_reference(variant):
    cfg = tiny_config(**variant)
    net = random_network(cfg, seed=3).double()
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (64, 64, 3))
    with torch.no_grad():
        got = net(torch.from_numpy(image).permute(2, 0, 1)[None])
    want = ref.prior_forward(_numpy_state(net), image, encoder_heads=cfg.resolved_encoder_heads,
                             decoder_heads=cfg.resolved_num_heads, patch=16, pretrain_grid=3, outputs=cfg.outputs,
                             use_pos_enc=cfg.use_pos_enc, n_views=cfg.n_views)
    for name, channels in cfg.outputs:
        assert got[name].shape == (1, channels, 64, 64)
        scale = np.abs(want[name]).max()
        assert scale > 1e-3  # the comparison is not between two near-zero maps
        np.testing.assert_allclose(got[name][0].numpy(), want[name], atol=1e-9 * scale, rtol=1e-7)


def test_forward_is_per_image_in_a_batch():
    net = random_network(tiny_config(), seed=1)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batch = net(x)["uv_map"]
        single = torch.cat([net(x[i:i + 1])["uv_map"] for i in range(3)])
    torch.testing.assert_close(batch, single, atol=2e-5, rtol=1e-4)


def test_official_size_network_layout_and_one_forward():
    """ViT-B/16 + the base.yaml decoder: the keys and shapes listed in the reference, 32x32 tokens, 512 output."""
    cfg = PriorNetConfig(outputs=(("uv_map", 2),), num_heads=8)
    net = PriorNetwork(cfg, backbone="headcast").eval()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    enc = "img_encoder.model."
    expected = {
        enc + "cls_token": (1, 1, 768), enc + "pos_embed": (1, 197, 768), enc + "patch_embed.proj.weight": (768, 3, 16, 16),
        enc + "blocks.11.attn.qkv.weight": (2304, 768), enc + "blocks.11.mlp.fc1.weight": (3072, 768),
        enc + "norm.weight": (768,), "dir_norm.norm.weight": (768,), "dir_norm.mlp.1.weight": (1536, 32),
        "dir_norm_uv.mlp.1.weight": (1536, 768), "uv_enc_mlp.1.weight": (768, 24),
        "vol_decoder.down_proj.weight": (256, 768), "vol_decoder.layers.5.norm4.weight": (256,),
        "vol_decoder.layers.5.self_attn2.in_proj_weight": (768, 256),
        "vol_decoder.layers.5.self_attn2.out_proj.weight": (256, 256), "vol_decoder.layers.0.mlp.0.weight": (1024, 256),
        "vol_decoder.layers.0.mlp.3.weight": (256, 1024), "vol_decoder.norm.weight": (256,),
        "t_conv3.weight": (256, 256, 2, 2), "token_2_patch_content.weight": (8, 256),
    }
    for k, s in expected.items():
        assert shapes[k] == s, k
    assert "vol_decoder.layers.0.self_attn.in_proj_bias" not in shapes  # attention without biases
    assert "vol_decoder.layers.0.self_attn.out_proj.bias" not in shapes
    assert not any(k.startswith(enc + "blocks.12.") for k in shapes)
    seen = {}

    def record(module, inputs, output):
        seen["tokens"] = tuple(output.shape)

    net.vol_decoder.register_forward_hook(record)
    with torch.no_grad():
        out = net(torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0)))
    assert seen["tokens"] == (1, 32 * 32, 256)
    assert out["uv_map"].shape == (1, 2, 512, 512) and torch.isfinite(out["uv_map"]).all()


@pytest.mark.skipif(not timm_available(), reason="timm does not import here (no matching torchvision)")
def test_own_vit_matches_timm():
    import timm

    ours = PriorNetwork(tiny_config(encoder_dim=384, encoder_depth=2, pretrain_grid=14), backbone="headcast").img_encoder
    theirs = timm.create_model("vit_small_patch16_224.dino", pretrained=False, dynamic_img_size=True, num_classes=0,
                               depth=2)
    missing, unexpected = theirs.load_state_dict(ours.model.state_dict(), strict=True)
    x = torch.rand(2, 3, 64, 96)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs.forward_features((x - mean) / std)[:, 1:], atol=1e-5, rtol=1e-4)
