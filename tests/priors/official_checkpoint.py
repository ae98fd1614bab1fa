# SPDX-License-Identifier: GPL-3.0-or-later
"""Write randomly initialised prior-network checkpoints in the official Lightning layout.

The files look like Pixel3DMM's ``uv.ckpt`` / ``normals.ckpt``: a ``torch.save`` dict with
``state_dict`` (network tensors under ``net.`` plus the system buffer ``vertex_weight_mask``),
``hyper_parameters = {'cfg': DictConfig}``, and Lightning's bookkeeping (epoch, loops,
callbacks, optimizer states). The DictConfig is produced by stand-in classes that carry
OmegaConf's module and class names and pickle to OmegaConf 2.x's state layout
(``_metadata``/``_parent``/``_content`` for containers, ``_val`` for value nodes), so the
reader meets the same pickle opcodes and globals as in the real files, without OmegaConf.
"""
from __future__ import annotations

import sys
import types
import typing
from contextlib import contextmanager

import torch

from headcast.priors.network import PriorNetConfig, PriorNetwork


@contextmanager
def fake_omegaconf():
    """Provide ``omegaconf.{dictconfig.DictConfig, listconfig.ListConfig, nodes.AnyNode,
    base.Metadata, base.ContainerMetadata}`` while pickling; yields a ``to_config`` function."""
    saved = {k: sys.modules.get(k) for k in ("omegaconf", "omegaconf.dictconfig", "omegaconf.listconfig",
                                             "omegaconf.nodes", "omegaconf.base")}
    mods = {k: types.ModuleType(k) for k in saved}

    def make(module, name):
        cls = type(name, (), {"__getstate__": lambda self: self.state})
        cls.__module__, cls.__qualname__ = module, name
        setattr(mods[module], name, cls)
        return cls

    DictConfig = make("omegaconf.dictconfig", "DictConfig")
    ListConfig = make("omegaconf.listconfig", "ListConfig")
    AnyNode = make("omegaconf.nodes", "AnyNode")
    Metadata = make("omegaconf.base", "Metadata")
    ContainerMetadata = make("omegaconf.base", "ContainerMetadata")

    def meta(cls, key, object_type):
        m = cls()
        m.state = {"ref_type": typing.Any, "object_type": object_type, "optional": True, "key": key, "flags": {},
                   "flags_root": False, "resolver_cache": __import__("collections").defaultdict(dict)}
        return m

    def to_config(value, key=None, parent=None):
        if isinstance(value, dict):
            node = DictConfig()
            node.state = {"_metadata": meta(ContainerMetadata, key, dict), "_parent": parent, "_content": {}}
            node.state["_content"] = {k: to_config(v, k, node) for k, v in value.items()}
            return node
        if isinstance(value, (list, tuple)):
            node = ListConfig()
            node.state = {"_metadata": meta(ContainerMetadata, key, list), "_parent": parent, "_content": []}
            node.state["_content"] = [to_config(v, i, node) for i, v in enumerate(value)]
            return node
        node = AnyNode()
        node.state = {"_metadata": meta(Metadata, key, None), "_parent": parent, "_val": value}
        return node

    sys.modules.update(mods)
    try:
        yield to_config
    finally:
        for k, mod in saved.items():
            if mod is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = mod


def tiny_config(**kw) -> PriorNetConfig:
    """A small network in the official layout: 64x64 input, 4x4 tokens, position grid trained at 3x3."""
    base = dict(outputs=(("uv_map", 2),), encoder_dim=64, encoder_depth=2, encoder_heads=None, patch_size=16,
                pretrain_grid=3, embedding_dim=32, num_layers=2, num_heads=2, image_size=64,
                encoder_name="vit_tiny_patch16_224.dino")
    base.update(kw)
    return PriorNetConfig(**base)


def stored_config(cfg: PriorNetConfig, **model_extra) -> dict:
    """The ``cfg`` dict the official system stores, for a network of this configuration."""
    types_ = [name for name, _ in cfg.outputs]
    model = {
        "feature_map_type": "DINO", "encoder_backbone": cfg.encoder_name or f"vit_test_patch{cfg.patch_size}_224.dino",
        "finetune_backbone": False, "embedding_dim": cfg.embedding_dim, "num_layers": cfg.num_layers,
        "num_heads": cfg.resolved_num_heads, "prediction_type": types_[0] if len(types_) == 1 else types_,
        "pred_disentangled": False, "use_pos_enc": cfg.use_pos_enc, "use_uv_enc": False, "use_plucker": False,
        "conv_dec": cfg.conv_dec, "pred_conf": cfg.pred_conf, "view_embed_dim": cfg.view_embed_dim,
        "vol_embedding_out_dim": 80, "missing_value": "???",
    }
    model.update(model_extra)
    return {"model": model, "n_views": cfg.n_views, "data": {"mirror_aug": True}, "train": {"lr": 4e-4}}


def random_network(cfg: PriorNetConfig, seed: int = 0) -> PriorNetwork:
    """A prior network with every parameter random (not just initialised), deterministic."""
    torch.manual_seed(seed)
    net = PriorNetwork(cfg, backbone="headcast")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "norm" in name and name.endswith("weight"):  # LayerNorm gains around 1
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:  # unit-variance outputs for weights, modest biases
                fan = p.numel() // p.shape[0] if p.dim() > 1 else 25
                p.copy_(torch.randn(p.shape, generator=g) * fan ** -0.5)
    return net.eval()


def write_official_checkpoint(path, net: PriorNetwork, *, config: dict | None = "auto", extra_tensors=None,
                              drop=(), reshape=None) -> None:
    """Save ``net`` as an official-layout Lightning checkpoint.

    config: the stored ``cfg`` dict ('auto': derived from the network; None: no hyper_parameters).
    extra_tensors: {key: tensor} added to ``state_dict`` (full keys, e.g. 'net.foo.weight').
    drop: network keys (without ``net.``) left out. reshape: {key: tensor} replacing a tensor.
    """
    state = {f"net.{k}": v.detach().clone() for k, v in net.state_dict().items() if k not in drop}
    for k, v in (reshape or {}).items():
        state[f"net.{k}"] = v
    state["vertex_weight_mask"] = torch.ones(1, 5023, 3)
    state.update(extra_tensors or {})
    first = next(iter(state))
    ckpt = {
        "epoch": 12, "global_step": 120000, "pytorch-lightning_version": "2.4.0",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 13, "completed": 12}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None, 'mode': 'min'}": {
            "best_model_score": torch.tensor(0.25), "best_model_path": "/cluster/ckpts/last.ckpt"}},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(state[first])}},
                              "param_groups": [{"lr": 4e-4, "betas": (0.9, 0.95), "weight_decay": 0.05,
                                                "params": [0]}]}],
        "lr_schedulers": [{"last_epoch": 12, "base_lrs": [4e-4]}],
        "hparams_name": "kwargs",
    }
    if config is None:
        torch.save(ckpt, path)
        return
    cfg_dict = stored_config(net.config) if config == "auto" else config
    with fake_omegaconf() as to_config:
        ckpt["hyper_parameters"] = {"cfg": to_config(cfg_dict)}
        torch.save(ckpt, path)
