# SPDX-License-Identifier: GPL-3.0-or-later
"""Load the official Pixel3DMM checkpoints (``uv.ckpt``, ``normals.ckpt``) into :class:`PriorNetwork`.

The files are PyTorch Lightning checkpoints of the training ``system``: ``state_dict`` holds
the network's tensors under ``net.`` plus the system buffer ``vertex_weight_mask``, and
``hyper_parameters`` holds ``{'cfg': <OmegaConf DictConfig>}``, the configuration the network
was built from. Neither Lightning nor OmegaConf is needed here (:mod:`.checkpoint_pickle`).

The network is built from the stored configuration where it can be read; every dimension is
also read off the tensor shapes (width, depth, patch size, decoder width and depth, output
channels, optional modules), which is all that is needed when the configuration is missing.
Head counts cannot be seen in shapes: they come from the configuration, else default to
width / 64, and can be overridden. Loading is strict: a key the network does not have, a key it
lacks, or a tensor of the wrong shape is reported with the file name, not silently ignored.
"""
from __future__ import annotations

import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..flame.headmodel import ModelFileError
from .checkpoint_pickle import plain_config, stub_pickle_module
from .network import PriorNetConfig, PriorNetwork, output_channels

NET_PREFIX = "net."
# Tensors of the Lightning system that are not part of the network.
SYSTEM_KEYS = ("vertex_weight_mask",)
OUTPUTS_BY_CHANNELS = {2: ("uv_map",), 3: ("normals",)}


class CheckpointError(ModelFileError):
    """A prior-network checkpoint is missing, unreadable or does not match the network."""


@dataclass
class CheckpointContents:
    path: Path
    state_dict: dict[str, torch.Tensor]  # network tensors, ``net.`` prefix removed
    config: dict | None  # the stored configuration as plain dicts/lists, if readable
    extra: dict[str, Any] = field(default_factory=dict)  # other top-level entries, as read


@dataclass
class CheckpointInfo:
    path: Path
    config: PriorNetConfig
    stored_config: dict | None
    notes: tuple[str, ...] = ()


def read_checkpoint(path: str | Path) -> CheckpointContents:
    """Read a Lightning checkpoint's network tensors and configuration (no code is run)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=False, pickle_module=stub_pickle_module)
    except (zipfile.BadZipFile, EOFError, RuntimeError, ValueError, TypeError, AttributeError, KeyError,
            IndexError, OSError, ImportError) as exc:  # torch reports truncated archives as RuntimeError
        raise CheckpointError(path, f"not a readable PyTorch checkpoint, or truncated ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # pickle.UnpicklingError and friends
        raise CheckpointError(path, f"not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(raw, dict) or "state_dict" not in raw:
        found = sorted(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(path, f"no 'state_dict' in the checkpoint (found: {found}); expected a Lightning "
                                    "checkpoint such as Pixel3DMM's uv.ckpt / normals.ckpt")
    state = raw["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(path, "'state_dict' is not a mapping of names to tensors")
    net_state, unexpected = {}, []
    for key, value in state.items():
        key = str(key)
        if key.startswith(NET_PREFIX):
            net_state[key[len(NET_PREFIX):]] = value
        elif key not in SYSTEM_KEYS:
            unexpected.append(key)
    if unexpected:
        raise CheckpointError(path, f"unexpected tensors outside the network: {', '.join(sorted(unexpected))}")
    if not net_state:
        raise CheckpointError(path, f"'state_dict' holds no '{NET_PREFIX}*' tensors")
    config = None
    hparams = plain_config(raw.get("hyper_parameters"))
    if isinstance(hparams, dict):
        config = hparams.get("cfg", hparams if "model" in hparams else None)
        if not isinstance(config, dict):
            config = None
    extra = {k: v for k, v in raw.items() if k not in ("state_dict", "hyper_parameters")}
    return CheckpointContents(path=path, state_dict=net_state, config=config, extra=extra)


def _count_indexed(state: dict, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    ids = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    if ids and ids != set(range(len(ids))):
        raise ValueError(f"{prefix}* indices are not contiguous: {sorted(ids)}")
    return len(ids)


def _shape(state: dict, key: str, path: Path) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(path, f"missing tensor '{NET_PREFIX}{key}'")
    return tuple(state[key].shape)


def _prediction_types(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    return tuple(str(t) for t in value)


def infer_config(state: dict[str, torch.Tensor], stored: dict | None = None, path: str | Path = "<checkpoint>",
                 prediction_type: str | tuple[str, ...] | None = None) -> PriorNetConfig:
    """The network configuration from the tensors' shapes, cross-checked with the stored config.

    ``stored`` is the checkpoint's configuration as plain dicts (``cfg``: ``model.*`` and
    ``n_views``) or None. ``prediction_type`` overrides what the network predicts, needed only
    when neither the configuration nor the channel count tells (e.g. 6 channels).
    """
    path = Path(path)
    notes = []
    model_cfg = (stored or {}).get("model") or {}
    enc = "img_encoder.model."
    if f"{enc}cls_token" not in state:
        raise CheckpointError(path, f"no DINO backbone tensors ('{NET_PREFIX}{enc}cls_token' missing)")
    if "facial_components" in state:
        raise CheckpointError(path, "this network regresses FLAME parameters (facial_components), it is not a "
                                    "uv/normal prior network")
    feature_map_type = model_cfg.get("feature_map_type", "DINO")
    if feature_map_type != "DINO":
        raise CheckpointError(path, f"feature_map_type {feature_map_type!r} is not supported (only the DINO backbone)")
    for flag, why in (("use_uv_enc", "uv encodings of the target"), ("use_plucker", "camera rays"),
                      ("prior_input", "prior predictions as input")):
        if model_cfg.get(flag):
            raise CheckpointError(path, f"the network was trained with {flag}=True and needs {why} as input, "
                                        "which inference from a photo does not have")
    C = _shape(state, f"{enc}cls_token", path)[-1]
    patch_w = _shape(state, f"{enc}patch_embed.proj.weight", path)
    patch = patch_w[-1]
    n_pos = _shape(state, f"{enc}pos_embed", path)[1] - 1
    grid = int(round(n_pos ** 0.5))
    if grid * grid != n_pos:
        raise CheckpointError(path, f"position embedding has {n_pos} grid entries, not a square grid")
    try:
        depth = _count_indexed(state, f"{enc}blocks.")
        layers = _count_indexed(state, "vol_decoder.layers.")
    except ValueError as exc:
        raise CheckpointError(path, str(exc)) from exc
    if depth == 0:
        raise CheckpointError(path, "no backbone blocks found")
    mlp_hidden = _shape(state, f"{enc}blocks.0.mlp.fc1.weight", path)[0]
    qkv_bias = f"{enc}blocks.0.attn.qkv.bias" in state
    E, decoder_in = _shape(state, "vol_decoder.down_proj.weight", path)
    n_views, view_dim = 1, 16
    if "view_embed" in state:
        _, n_views, view_dim, _, _ = _shape(state, "view_embed", path)
    if decoder_in != C + (view_dim if n_views > 1 else 0):
        raise CheckpointError(path, f"decoder input width {decoder_in} does not match backbone width {C}"
                                    + (f" + view embedding {view_dim}" if n_views > 1 else ""))
    use_pos_enc = "patch_pos_enc" in state
    image_size = 512
    if use_pos_enc:
        image_size = _shape(state, "patch_pos_enc", path)[-1] * patch
    pred_conf = "token_2_patch_conf.weight" in state
    rows = _shape(state, "token_2_patch_content.weight", path)[0]
    conv_dec = model_cfg.get("conv_dec")
    if conv_dec is None:  # a 2x2 patch head has 4 rows per channel, a patch-16 head 256
        conv_dec = rows % 4 == 0 and rows // 4 <= 32
    out_patch = 2 if conv_dec else patch
    if rows % (out_patch * out_patch):
        raise CheckpointError(path, f"token_2_patch_content has {rows} rows, not a multiple of {out_patch}x{out_patch}")
    P = rows // (out_patch * out_patch)
    types = _prediction_types(prediction_type) or _prediction_types(model_cfg.get("prediction_type"))
    disentangled = bool(model_cfg.get("pred_disentangled", False))
    if types:
        try:
            outputs = output_channels(types, disentangled)
        except ValueError as exc:
            raise CheckpointError(path, str(exc)) from exc
    elif P in OUTPUTS_BY_CHANNELS:
        outputs = output_channels(OUTPUTS_BY_CHANNELS[P])
        notes.append(f"prediction type inferred from {P} output channels: {OUTPUTS_BY_CHANNELS[P][0]}")
    elif P == 4:  # the only disentangled layout with 4 channels
        outputs = output_channels(("uv_map",), True)
        notes.append("prediction type inferred from 4 output channels: uv_map + disps")
    else:
        raise CheckpointError(path, f"{P} output channels and no stored prediction_type; pass prediction_type=")
    if sum(c for _, c in outputs) != P:
        raise CheckpointError(path, f"prediction types {[n for n, _ in outputs]} need {sum(c for _, c in outputs)} "
                                    f"channels, the checkpoint's head has {P}")
    num_heads = model_cfg.get("num_heads")
    if num_heads is None:
        notes.append(f"decoder head count not stored; using width/64 = {max(1, E // 64)}")
    # the stored configuration must agree with the shapes
    for key, value in (("embedding_dim", E), ("num_layers", layers)):
        if model_cfg.get(key) is not None and int(model_cfg[key]) != value:
            raise CheckpointError(path, f"stored config says model.{key}={model_cfg[key]}, the tensors say {value}")
    stored_views = (stored or {}).get("n_views")
    if stored_views is not None and int(stored_views) > 1 and n_views == 1:
        raise CheckpointError(path, f"stored config says n_views={stored_views} but there is no view_embed tensor")
    if model_cfg.get("use_pos_enc") is not None and bool(model_cfg["use_pos_enc"]) != use_pos_enc:
        raise CheckpointError(path, f"stored config says use_pos_enc={model_cfg['use_pos_enc']}, "
                                    f"patch_pos_enc is {'present' if use_pos_enc else 'absent'}")
    name = model_cfg.get("encoder_backbone")
    if name and f"patch{patch}" not in str(name):
        raise CheckpointError(path, f"stored backbone {name!r} does not match the patch size {patch} of the tensors")
    return PriorNetConfig(
        outputs=outputs, encoder_dim=C, encoder_depth=depth, encoder_heads=None, encoder_mlp_hidden=mlp_hidden,
        encoder_qkv_bias=qkv_bias, patch_size=patch, pretrain_grid=grid, encoder_name=str(name) if name else None,
        embedding_dim=E, num_layers=layers, num_heads=int(num_heads) if num_heads else None, n_views=n_views,
        view_embed_dim=view_dim, use_pos_enc=use_pos_enc, conv_dec=bool(conv_dec), pred_conf=pred_conf,
        image_size=image_size, notes=tuple(notes))


def check_state_dict(network: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Raise :class:`CheckpointError` listing every unexpected, missing or wrongly shaped tensor."""
    own = network.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state))
    wrong = [f"{NET_PREFIX}{k}: checkpoint {tuple(state[k].shape)}, network {tuple(own[k].shape)}"
             for k in sorted(set(own) & set(state)) if tuple(own[k].shape) != tuple(state[k].shape)]
    problems = []
    if unexpected:
        problems.append("unexpected tensors " + ", ".join(NET_PREFIX + k for k in unexpected))
    if missing:
        problems.append("missing tensors " + ", ".join(NET_PREFIX + k for k in missing))
    if wrong:
        problems.append("wrong shapes " + "; ".join(wrong))
    if problems:
        raise CheckpointError(path, "checkpoint does not match the prior network: " + " | ".join(problems))


def load_prior_network(path: str | Path, *, device: str | torch.device | None = None,
                       backbone: str = "auto", encoder_heads: int | None = None,
                       decoder_heads: int | None = None,
                       prediction_type: str | tuple[str, ...] | None = None,
                       image_size: int | None = None) -> PriorNetwork:
    """Build the network a Pixel3DMM checkpoint describes and load its tensors strictly.

    The network is returned in eval mode on ``device`` (default: CUDA when available, else
    CPU), with ``network.checkpoint`` (:class:`CheckpointInfo`) describing what was read.
    ``backbone``: 'auto' | 'headcast' | 'timm' (see :func:`headcast.priors.vit.build_backbone`).
    ``image_size``: the crop size the network expects (512 for the official networks; only a
    network with a position code stores it).
    """
    contents = read_checkpoint(path)
    config = infer_config(contents.state_dict, contents.config, contents.path, prediction_type)
    config = config.with_overrides(encoder_heads=encoder_heads, num_heads=decoder_heads, image_size=image_size)
    for note in config.notes:
        warnings.warn(f"{contents.path}: {note}", stacklevel=2)
    network = PriorNetwork(config, backbone=backbone)
    check_state_dict(network, contents.state_dict, contents.path)
    network.load_state_dict(contents.state_dict, strict=True)
    network.checkpoint = CheckpointInfo(contents.path, config, contents.config, config.notes)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return network.to(device).eval().requires_grad_(False)
