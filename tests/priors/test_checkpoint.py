# SPDX-License-Identifier: GPL-3.0-or-later
"""Loading official-layout Lightning checkpoints: round trip, strict mismatches, dimension inference."""
from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from dataclasses import replace

import pytest
import torch

from headcast.priors import CheckpointError, infer_config, load_prior_network, read_checkpoint
from headcast.priors.checkpoint_pickle import stub_pickle_module
from headcast.priors.vit import timm_available

from .official_checkpoint import random_network, stored_config, tiny_config, write_official_checkpoint


def _load(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_prior_network(path, device="cpu", backbone="headcast", image_size=64, **kw)


def _same_outputs(a, b, name="uv_map"):
    """Equal up to float32 rounding (attention kernels differ slightly with requires_grad)."""
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ya, yb = a(x)[name], b(x)[name]
    return torch.allclose(ya, yb, atol=1e-5 * ya.abs().max().item(), rtol=0)


def test_round_trip_with_stored_config(tmp_path):
    net = random_network(tiny_config(), seed=0)
    path = tmp_path / "uv.ckpt"
    write_official_checkpoint(path, net)
    before = {name: name in sys.modules for name in ("omegaconf", "pytorch_lightning", "lightning")}
    loaded = _load(path)
    assert {name: name in sys.modules for name in before} == before  # reading imports neither
    assert loaded.config == replace(net.config, encoder_mlp_hidden=4 * 64)
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert _same_outputs(net, loaded)
    stored = loaded.checkpoint.stored_config
    assert stored["model"]["embedding_dim"] == 32 and stored["model"]["num_heads"] == 2
    assert stored["model"]["prediction_type"] == "uv_map" and stored["n_views"] == 1
    assert stored["model"]["missing_value"] is None  # OmegaConf's '???' reads as missing
    assert stored["train"]["lr"] == pytest.approx(4e-4)


def test_round_trip_without_config_infers_dimensions_and_warns_about_heads(tmp_path):
    net = random_network(tiny_config(outputs=(("normals", 3),), num_heads=None), seed=1)
    path = tmp_path / "normals.ckpt"
    write_official_checkpoint(path, net, config=None)
    contents = read_checkpoint(path)
    assert contents.config is None and "vertex_weight_mask" not in contents.state_dict
    with pytest.warns(UserWarning) as record:
        loaded = load_prior_network(path, device="cpu", backbone="headcast")
    messages = " | ".join(str(w.message) for w in record)
    assert "head count not stored" in messages and "prediction type inferred from 3 output channels" in messages
    assert loaded.config.outputs == (("normals", 3),)
    assert loaded.config.resolved_num_heads == 1  # width 32 / 64, floored at 1
    assert _same_outputs(net, loaded, "normals")


def test_head_override_when_config_is_missing(tmp_path):
    net = random_network(tiny_config(num_heads=4, encoder_heads=4), seed=2)
    path = tmp_path / "uv.ckpt"
    write_official_checkpoint(path, net, config=None)
    default = _load(path)
    assert not _same_outputs(net, default)  # heads are not in the shapes: the default differs
    fixed = _load(path, decoder_heads=4, encoder_heads=4)
    assert _same_outputs(net, fixed)


@pytest.mark.parametrize("dims", [
    dict(encoder_dim=64, encoder_depth=1, embedding_dim=32, num_layers=1),
    dict(encoder_dim=128, encoder_depth=3, embedding_dim=64, num_layers=2, outputs=(("normals", 3),)),
    dict(encoder_dim=96, encoder_depth=2, embedding_dim=48, num_layers=3, n_views=2, view_embed_dim=8),
    dict(encoder_dim=64, encoder_depth=2, embedding_dim=32, num_layers=1, use_pos_enc=True, pred_conf=True,
         encoder_mlp_hidden=96, pretrain_grid=2),
])
def test_dimension_inference_from_shapes(dims):
    cfg = tiny_config(num_heads=None, **dims)
    net = random_network(cfg, seed=0)
    inferred = infer_config(net.state_dict(), None, "<test>")
    for field in ("outputs", "encoder_dim", "encoder_depth", "embedding_dim", "num_layers", "n_views", "patch_size",
                  "pretrain_grid", "use_pos_enc", "pred_conf", "conv_dec"):
        assert getattr(inferred, field) == getattr(cfg, field), field
    assert inferred.encoder_mlp_hidden == (cfg.encoder_mlp_hidden or 4 * cfg.encoder_dim)
    if cfg.n_views > 1:
        assert inferred.view_embed_dim == cfg.view_embed_dim
    if cfg.use_pos_enc:
        assert inferred.image_size == 64  # from the 4x4 position code and patch 16
    assert inferred.resolved_encoder_heads == max(1, cfg.encoder_dim // 64)
    assert inferred.resolved_num_heads == max(1, cfg.embedding_dim // 64)


def test_unexpected_key_is_reported(tmp_path):
    net = random_network(tiny_config(), seed=0)
    path = tmp_path / "uv.ckpt"
    write_official_checkpoint(path, net, extra_tensors={"net.refine_head.weight": torch.zeros(3, 3)})
    with pytest.raises(CheckpointError, match=r"uv\.ckpt.*unexpected tensors net\.refine_head\.weight"):
        _load(path)


def test_tensor_outside_the_network_is_reported(tmp_path):
    net = random_network(tiny_config(), seed=0)
    path = tmp_path / "uv.ckpt"
    write_official_checkpoint(path, net, extra_tensors={"ema.decay": torch.tensor(0.99)})
    with pytest.raises(CheckpointError, match="outside the network: ema.decay"):
        _load(path)


def test_wrong_shape_is_reported(tmp_path):
    net = random_network(tiny_config(), seed=0)
    path = tmp_path / "uv.ckpt"
    key = "vol_decoder.layers.1.mlp.0.weight"
    write_official_checkpoint(path, net, reshape={key: torch.zeros(100, 32)})
    with pytest.raises(CheckpointError, match=r"wrong shapes net\.vol_decoder\.layers\.1\.mlp\.0\.weight: "
                                              r"checkpoint \(100, 32\), network \(128, 32\)"):
        _load(path)


def test_missing_key_is_reported(tmp_path):
    net = random_network(tiny_config(), seed=0)
    path = tmp_path / "uv.ckpt"
    write_official_checkpoint(path, net, drop=("t_conv2.bias", "dir_norm.mlp.1.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensors net\.dir_norm\.mlp\.1\.weight, net\.t_conv2\.bias"):
        _load(path)


def test_stored_config_contradicting_the_tensors_is_reported(tmp_path):
    net = random_network(tiny_config(), seed=0)
    path = tmp_path / "uv.ckpt"
    cfg = stored_config(net.config)
    cfg["model"]["embedding_dim"] = 48
    write_official_checkpoint(path, net, config=cfg)
    with pytest.raises(CheckpointError, match="model.embedding_dim=48, the tensors say 32"):
        _load(path)


def test_network_needing_training_inputs_is_refused(tmp_path):
    net = random_network(tiny_config(), seed=0)
    path = tmp_path / "uv.ckpt"
    write_official_checkpoint(path, net, config=stored_config(net.config, use_uv_enc=True))
    with pytest.raises(CheckpointError, match="use_uv_enc=True"):
        _load(path)


def test_unreadable_files_name_the_file(tmp_path):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(CheckpointError, match="nope.ckpt: checkpoint file not found"):
        _load(missing)
    net = random_network(tiny_config(), seed=0)
    good = tmp_path / "uv.ckpt"
    write_official_checkpoint(good, net)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.ckpt: not a readable PyTorch checkpoint"):
        _load(truncated)
    other = tmp_path / "weights.pth"
    torch.save({"model": net.state_dict()}, other)
    with pytest.raises(CheckpointError, match=r"weights.pth: no 'state_dict' in the checkpoint \(found: \['model'\]\)"):
        _load(other)


class _RunsCode:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_code_in_a_checkpoint_is_never_run(tmp_path):
    net = random_network(tiny_config(), seed=0)
    path = tmp_path / "uv.ckpt"
    marker = tmp_path / "was_run"
    write_official_checkpoint(path, net)
    ckpt = torch.load(path, weights_only=False, pickle_module=stub_pickle_module)
    ckpt["callbacks"] = {"Evil": _RunsCode(marker)}
    del ckpt["hyper_parameters"]  # the stubs read back from it cannot be pickled again
    torch.save(ckpt, path)
    loaded = _load(path, decoder_heads=2)
    assert not marker.exists()
    assert _same_outputs(net, loaded)


@pytest.mark.skipif(importlib.util.find_spec("omegaconf") is None,
                    reason="OmegaConf is not installed (the reader does not need it)")
def test_real_omegaconf_config_is_read(tmp_path):
    from omegaconf import OmegaConf

    net = random_network(tiny_config(), seed=0)
    path = tmp_path / "uv.ckpt"
    write_official_checkpoint(path, net, config=None)
    ckpt = torch.load(path, weights_only=False)
    ckpt["hyper_parameters"] = {"cfg": OmegaConf.create(stored_config(net.config))}
    torch.save(ckpt, path)
    assert _load(path).checkpoint.stored_config == {**stored_config(net.config),
                                                    "model": {**stored_config(net.config)["model"], "missing_value": None}}


@pytest.mark.skipif(not timm_available(), reason="timm does not import here")
def test_checkpoint_loads_into_timm_backbone_with_same_outputs(tmp_path):
    cfg = tiny_config(encoder_dim=384, encoder_depth=12, pretrain_grid=14, encoder_name="vit_small_patch16_224.dino")
    net = random_network(cfg, seed=0)
    path = tmp_path / "uv.ckpt"
    write_official_checkpoint(path, net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        via_timm = load_prior_network(path, device="cpu", backbone="timm")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(via_timm(x)["uv_map"], net(x)["uv_map"], atol=1e-4, rtol=1e-4)
