# SPDX-License-Identifier: GPL-3.0-or-later
"""The DINO (v1) ViT backbone of the Pixel3DMM prior networks, with timm's parameter names.

The official networks build their backbone with ``timm.create_model(name, pretrained=True,
dynamic_img_size=True)`` and call ``forward_features`` on ImageNet-normalised 512x512 images,
dropping the class token. timm cannot be imported in Headcast's CPU environment (it imports
torchvision, whose PyPI wheels for recent torch are CUDA builds), so this module implements
the same VisionTransformer itself:

* parameter names exactly as timm's ``VisionTransformer`` (``cls_token``, ``pos_embed``,
  ``patch_embed.proj``, ``blocks.{i}.norm1/attn.qkv/attn.proj/norm2/mlp.fc1/mlp.fc2``,
  ``norm``), so a checkpoint's ``img_encoder.model.*`` tensors load unchanged;
* DINO v1 models have no layer scale, no register tokens and no pre-norm;
  LayerNorm eps is 1e-6 and the MLP uses the exact (erf) GELU;
* the absolute position embedding, trained at 224 (a 14x14 grid for patch 16), is resampled
  on every forward to the actual token grid the way timm's ``resample_abs_pos_embed`` does
  with ``dynamic_img_size``: the class-token entry is kept as is, the grid part is
  interpolated in float32 with ``F.interpolate(mode='bicubic', antialias=True)`` (align_corners
  left at its default, False) and cast back.

When ``import timm`` works (e.g. with a CUDA torch), :func:`build_backbone` can use timm's own
model instead; both expose ``forward_features``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# timm's IMAGENET_DEFAULT_MEAN / _STD, which resolve_model_data_config returns for DINO v1 ViTs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resample_abs_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int],
                           old_grid: tuple[int, int] | None = None,
                           num_prefix_tokens: int = 1) -> torch.Tensor:
    """Resample a ViT absolute position embedding [1, P + gh*gw, C] to a new token grid.

    The first ``num_prefix_tokens`` entries (the class token) are kept; the grid entries are
    interpolated bicubically with antialiasing in float32, as timm does. Returns the input
    unchanged when the grid already matches.
    """
    n_tokens = pos_embed.shape[1]
    if n_tokens == new_grid[0] * new_grid[1] + num_prefix_tokens and new_grid[0] == new_grid[1]:
        return pos_embed
    if old_grid is None:
        side = int(math.sqrt(n_tokens - num_prefix_tokens))
        old_grid = (side, side)
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    dtype = grid.dtype
    grid = grid.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", antialias=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(dtype)
    return torch.cat([prefix, grid], dim=1) if num_prefix_tokens else grid


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> tokens [B, H/p, W/p, C] (rows first, as timm's NHWC output)."""
        return self.proj(x).permute(0, 2, 3, 1)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"backbone width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        # qkv features are laid out (3, heads, head_dim), as in timm
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DinoViT(nn.Module):
    """timm-compatible VisionTransformer (class token, absolute position embedding, no head)."""

    def __init__(self, embed_dim: int = 768, depth: int = 12, num_heads: int | None = None,
                 patch_size: int = 16, pretrain_grid: int = 14, mlp_hidden: int | None = None,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        num_heads = num_heads or max(1, embed_dim // 64)
        self.embed_dim = self.num_features = embed_dim
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.pretrain_grid = (pretrain_grid, pretrain_grid)
        self.num_prefix_tokens = 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pretrain_grid * pretrain_grid, embed_dim))
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        hidden = mlp_hidden or 4 * embed_dim
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, hidden, qkv_bias) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=1e-6)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised images [B, 3, H, W] -> tokens [B, 1 + (H/p)(W/p), C] after the final norm."""
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the patch size {self.patch_size}")
        tokens = self.patch_embed(x)
        B, gh, gw, C = tokens.shape
        pos = resample_abs_pos_embed(self.pos_embed, (gh, gw), self.pretrain_grid, self.num_prefix_tokens)
        x = torch.cat([self.cls_token.expand(B, -1, -1), tokens.reshape(B, gh * gw, C)], dim=1)
        x = x + pos
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def timm_available() -> bool:
    """Whether ``import timm`` works here (it fails where torchvision cannot load)."""
    try:
        import timm  # noqa: F401
    except Exception:  # ImportError, or torchvision's RuntimeError on a mismatched build
        return False
    return True


class DinoEncoder(nn.Module):
    """Normalise [0, 1] RGB with ImageNet statistics, run the ViT, drop the class token.

    The ViT sits under ``.model`` so that state-dict keys read ``model.cls_token`` etc., as the
    official ``DinoWrapper`` stores them.
    """

    def __init__(self, model: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.model = model
        # not buffers: the official checkpoints hold no normalisation tensors
        self._mean = tuple(float(m) for m in mean)
        self._std = tuple(float(s) for s in std)

    @property
    def num_features(self) -> int:
        return int(self.model.num_features)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] RGB in [0, 1] -> patch tokens [B, (H/p)(W/p), C] in row-major grid order."""
        mean = torch.tensor(self._mean, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
        std = torch.tensor(self._std, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
        return self.model.forward_features((rgb - mean) / std)[:, 1:]


def backbone_name_for(embed_dim: int, patch_size: int) -> str:
    """The timm name of the DINO v1 ViT with this width and patch size."""
    size = {384: "small", 768: "base"}.get(embed_dim)
    if size is None or patch_size not in (8, 16):
        raise ValueError(f"no DINO v1 ViT with width {embed_dim} and patch {patch_size}")
    return f"vit_{size}_patch{patch_size}_224.dino"


def build_backbone(embed_dim: int, depth: int, num_heads: int | None, patch_size: int,
                   pretrain_grid: int, mlp_hidden: int | None = None, qkv_bias: bool = True,
                   implementation: str = "auto", timm_name: str | None = None) -> DinoEncoder:
    """The backbone wrapped for the prior network.

    implementation: 'headcast' (our ViT), 'timm' (timm's VisionTransformer, built with
    ``pretrained=False``: the checkpoint holds the weights and nothing is downloaded) or
    'auto' (timm when it imports, else ours).
    """
    if implementation not in ("auto", "headcast", "timm"):
        raise ValueError(f"unknown backbone implementation {implementation!r}")
    use_timm = implementation == "timm" or (implementation == "auto" and timm_available())
    if use_timm:
        import timm

        name = timm_name or backbone_name_for(embed_dim, patch_size)
        kwargs = dict(pretrained=False, dynamic_img_size=True, num_classes=0)
        model = timm.create_model(name, **kwargs)
        if model.num_features != embed_dim or len(model.blocks) != depth:
            raise ValueError(f"timm model {name} has width {model.num_features} and depth {len(model.blocks)}, "
                             f"the checkpoint {embed_dim} and {depth}")
        config = timm.data.resolve_model_data_config(model)
        return DinoEncoder(model, config["mean"], config["std"])
    return DinoEncoder(DinoViT(embed_dim, depth, num_heads, patch_size, pretrain_grid, mlp_hidden, qkv_bias))
