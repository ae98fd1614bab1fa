# SPDX-License-Identifier: GPL-3.0-or-later
"""The Pixel3DMM prior network (uv or normal maps from one 512x512 face crop), our own code.

Forward pass, as the official ``Network.forward`` computes it for one view:

1. DINO ViT backbone (:mod:`.vit`) on the ImageNet-normalised crop; the class token is
   dropped and the 32x32 patch tokens become a [B, C, 32, 32] grid in row-major order;
2. optionally a learned per-patch position code is added (``use_pos_enc``) and, for networks
   trained with several views, the first view's learned embedding is concatenated to every
   token (``n_views > 1``);
3. the decoder: a linear ``down_proj`` to width E, then ``num_layers`` blocks of two
   transformer sub-blocks over all tokens. Each sub-block normalises the residual stream
   itself (x = norm(x); x = x + attn(x); x = x + mlp(norm'(x))), so the stream is overwritten
   by the normalised values, unlike a standard pre-norm block. Attention is
   ``nn.MultiheadAttention`` without biases; LayerNorms use torch's default eps (1e-5); the
   MLP is Linear(E, 4E), exact GELU, Linear(4E, E). ``vol_decoder.norm`` exists in the
   checkpoints but is never applied;
4. three stride-2 transposed 2x2 convolutions, each followed by exact GELU: 32 -> 256;
5. a linear layer per 256x256 location to 2*2*P values, unpatchified with (row, column,
   channel) order, channel fastest: [B, P, 512, 512] raw predictions, no output activation.

Channels are split in the official order: pos_map(3) [pos_map_can(3)], uv_map(2) [disps(2)],
normals(3) [normals_can(3)], albedo(3), nocs(3). The uv network predicts ``uv_map``, the
normal network ``normals``.

The modules the official class always builds but inference never uses (``dir_norm``,
``dir_norm_uv``, ``uv_enc_mlp``, ``vol_decoder.norm``) are built here too, so that loading a
checkpoint can check every key strictly.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from .vit import build_backbone

# (name, channels) in the order the official network lays out its prediction channels;
# the second entry of a pair only exists for "disentangled" networks.
PREDICTION_LAYOUT = (
    ("pos_map", 3, "pos_map_can"),
    ("uv_map", 2, "disps"),
    ("normals", 3, "normals_can"),
    ("albedo", 3, None),
    ("nocs", 3, None),
)


def output_channels(prediction_types: tuple[str, ...], disentangled: bool = False) -> tuple[tuple[str, int], ...]:
    """(name, channels) of each output, in the official order, for the given prediction types."""
    known = {name for name, _, _ in PREDICTION_LAYOUT}
    unknown = set(prediction_types) - known
    if unknown:
        raise ValueError(f"unknown prediction types {sorted(unknown)}; known: {sorted(known)}")
    out = []
    for name, channels, twin in PREDICTION_LAYOUT:
        if name in prediction_types:
            out.append((name, channels))
            if disentangled and twin is not None:
                out.append((twin, channels))
    return tuple(out)


@dataclass(frozen=True)
class PriorNetConfig:
    """Dimensions and switches of one prior network (read from a checkpoint or given)."""

    outputs: tuple[tuple[str, int], ...] = (("uv_map", 2),)
    encoder_dim: int = 768  # C: ViT width
    encoder_depth: int = 12
    encoder_heads: int | None = None  # default encoder_dim // 64 (DINO v1: 6 for ViT-S, 12 for ViT-B)
    encoder_mlp_hidden: int | None = None  # default 4 * encoder_dim
    encoder_qkv_bias: bool = True
    patch_size: int = 16
    pretrain_grid: int = 14  # position embedding grid the ViT was trained with (224 / 16)
    encoder_name: str | None = None  # timm model name, for the timm implementation
    embedding_dim: int = 256  # E: decoder width
    num_layers: int = 6
    num_heads: int | None = None  # default embedding_dim // 64; the stored config usually says
    n_views: int = 1  # views the network was trained with; > 1 adds a learned view embedding
    view_embed_dim: int = 16
    use_pos_enc: bool = False
    conv_dec: bool = True  # transposed-convolution head (patch 2) instead of a patch-16 linear head
    pred_conf: bool = False  # an extra confidence head (built for strict loading, returned as 'conf')
    image_size: int = 512  # the networks are trained on 512x512 crops
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def prediction_dim(self) -> int:
        return sum(c for _, c in self.outputs)

    @property
    def feat_map_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def out_patch(self) -> int:
        return 2 if self.conv_dec else self.patch_size

    @property
    def resolved_encoder_heads(self) -> int:
        return self.encoder_heads or max(1, self.encoder_dim // 64)

    @property
    def resolved_num_heads(self) -> int:
        return self.num_heads or max(1, self.embedding_dim // 64)

    def with_overrides(self, **kwargs) -> "PriorNetConfig":
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})


class ModLN(nn.Module):
    """Adaptive LayerNorm of the official network (never used at inference; kept for its keys)."""

    def __init__(self, dim: int, mod_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(mod_dim, 2 * dim))


def _mlp(dim: int) -> nn.Sequential:
    # indices 0 and 3 carry the weights, as in the checkpoints (Linear, GELU, Dropout, Linear, Dropout)
    return nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(0.0), nn.Linear(4 * dim, dim), nn.Dropout(0.0))


class PairedAttentionBlock(nn.Module):
    """Two transformer sub-blocks; each one first replaces the stream by its normalised value."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"decoder width {dim} is not divisible by {num_heads} heads")
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, bias=False, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _mlp(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.self_attn2 = nn.MultiheadAttention(dim, num_heads, bias=False, batch_first=True)
        self.norm4 = nn.LayerNorm(dim)
        self.mlp2 = _mlp(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.self_attn(x, x, x, need_weights=False)[0]
        x = x + self.mlp(self.norm2(x))
        x = self.norm3(x)
        x = x + self.self_attn2(x, x, x, need_weights=False)[0]
        return x + self.mlp2(self.norm4(x))


class TokenDecoder(nn.Module):
    """``vol_decoder``: projection to width E and the paired attention blocks."""

    def __init__(self, in_dim: int, dim: int, num_layers: int, num_heads: int) -> None:
        super().__init__()
        self.down_proj = nn.Linear(in_dim, dim)
        self.layers = nn.ModuleList([PairedAttentionBlock(dim, num_heads) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)  # in the checkpoints, never applied

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.down_proj(tokens)
        for layer in self.layers:
            x = layer(x)
        return x


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int], patch: int, channels: int) -> torch.Tensor:
    """[B, gh*gw, patch*patch*channels] -> [B, channels, gh*patch, gw*patch].

    Each token's vector is laid out (row in patch, column in patch, channel), channel fastest.
    """
    B = tokens.shape[0]
    gh, gw = grid
    x = tokens.reshape(B, gh, gw, patch, patch, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(B, channels, gh * patch, gw * patch)


class PriorNetwork(nn.Module):
    """One Pixel3DMM prior network; ``forward`` maps RGB crops to raw prediction maps."""

    def __init__(self, config: PriorNetConfig, backbone: str = "auto") -> None:
        super().__init__()
        self.config = cfg = config
        C = cfg.encoder_dim
        self.img_encoder = build_backbone(C, cfg.encoder_depth, cfg.resolved_encoder_heads, cfg.patch_size,
                                          cfg.pretrain_grid, cfg.encoder_mlp_hidden, cfg.encoder_qkv_bias,
                                          implementation=backbone, timm_name=cfg.encoder_name)
        self.dir_norm = ModLN(C, 32)
        self.dir_norm_uv = ModLN(C, C)
        self.uv_enc_mlp = nn.Sequential(nn.SiLU(), nn.Linear(24, C))
        g = cfg.feat_map_size
        if cfg.use_pos_enc:
            self.patch_pos_enc = nn.Parameter(torch.randn(1, C, g, g) * C ** -0.5)
        decoder_in = C
        if cfg.n_views > 1:
            self.view_embed = nn.Parameter(torch.randn(1, cfg.n_views, cfg.view_embed_dim, 1, 1)
                                           * cfg.view_embed_dim ** -0.5)
            decoder_in += cfg.view_embed_dim
        E = cfg.embedding_dim
        self.vol_decoder = TokenDecoder(decoder_in, E, cfg.num_layers, cfg.resolved_num_heads)
        self.t_conv1 = nn.ConvTranspose2d(E, E, 2, stride=2)
        self.t_conv2 = nn.ConvTranspose2d(E, E, 2, stride=2)
        self.t_conv3 = nn.ConvTranspose2d(E, E, 2, stride=2)
        self.token_2_patch_content = nn.Linear(E, cfg.out_patch ** 2 * cfg.prediction_dim)
        if cfg.pred_conf:
            self.t_conv3_conf = nn.ConvTranspose2d(E, E, 2, stride=2)
            self.token_2_patch_conf = nn.Linear(E, cfg.out_patch ** 2)

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """rgb: [B, 3, H, W] in [0, 1] (H = W = 512 for the official networks).

        Returns raw (un-activated) maps {name: [B, channels, H', W']} with H' = 16 * H / patch
        (= H for patch 16), plus 'conf' [B, 1, H', W'] when the network has a confidence head.
        """
        cfg = self.config
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise ValueError(f"expected RGB images [B, 3, H, W], got {tuple(rgb.shape)}")
        B, _, H, W = rgb.shape
        tokens = self.img_encoder(rgb)  # [B, gh*gw, C]
        gh, gw = H // cfg.patch_size, W // cfg.patch_size
        if cfg.use_pos_enc:
            if (gh, gw) != tuple(self.patch_pos_enc.shape[-2:]):
                raise ValueError(f"the position code is trained for a {self.patch_pos_enc.shape[-1]}^2 token grid, "
                                 f"these images give {gh}x{gw}")
            tokens = tokens + self.patch_pos_enc.flatten(2).transpose(1, 2)
        if cfg.n_views > 1:  # inference sees a single view: the first view's embedding
            view = self.view_embed[:, 0, :, 0, 0].to(tokens.dtype)
            tokens = torch.cat([tokens, view[:, None].expand(B, gh * gw, -1)], dim=-1)
        x = self.vol_decoder(tokens)  # [B, gh*gw, E]
        x = x.transpose(1, 2).reshape(B, -1, gh, gw)
        out: dict[str, torch.Tensor] = {}
        if cfg.conv_dec:
            x = F.gelu(self.t_conv1(x))
            x = F.gelu(self.t_conv2(x))
            conf_feats = F.gelu(self.t_conv3_conf(x)) if cfg.pred_conf else None
            x = F.gelu(self.t_conv3(x))
        else:
            conf_feats = x if cfg.pred_conf else None
        grid = tuple(x.shape[-2:])
        patches = self.token_2_patch_content(x.flatten(2).transpose(1, 2))
        image = unpatchify(patches, grid, cfg.out_patch, cfg.prediction_dim)
        start = 0
        for name, channels in cfg.outputs:
            out[name] = image[:, start:start + channels]
            start += channels
        if conf_feats is not None:
            conf = self.token_2_patch_conf(conf_feats.flatten(2).transpose(1, 2))
            out["conf"] = unpatchify(conf, grid, cfg.out_patch, 1)
        return out
