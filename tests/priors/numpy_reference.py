# SPDX-License-Identifier: GPL-3.0-or-later
"""Independent float64 numpy forward pass of the Pixel3DMM prior network, from the published facts.

Written separately from headcast.priors (explicit loops over heads and tokens, explicit
patch extraction, a PIL-style antialiased bicubic resampler, ConvTranspose written as a
per-offset matrix product), reading the same state dict.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def attention(q, k, v, heads):
    """q, k, v [N, D] -> [N, D]; head h uses columns h*d:(h+1)*d."""
    n, dim = q.shape
    d = dim // heads
    out = np.zeros_like(q)
    for h in range(heads):
        s = slice(h * d, (h + 1) * d)
        w = softmax(q[:, s] @ k[:, s].T / math.sqrt(d))
        out[:, s] = w @ v[:, s]
    return out


def cubic_aa(x, a=-0.5):
    """PIL's / torch's antialiasing bicubic kernel (a = -0.5)."""
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def aa_resample_matrix(n_in, n_out):
    """[n_out, n_in] weights of antialiased bicubic resampling (half-pixel centres, renormalised at borders)."""
    scale = n_in / n_out
    support = 2.0 * max(scale, 1.0)
    inv = 1.0 / max(scale, 1.0)
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = scale * (i + 0.5)
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        j = np.arange(lo, hi)
        w = cubic_aa((j - centre + 0.5) * inv)
        m[i, lo:hi] = w / w.sum()
    return m


def resample_pos_embed(pos, old, new):
    """[1, 1 + old*old, C] -> [1, 1 + new*new, C], class entry kept."""
    grid = pos[0, 1:].reshape(old, old, -1)
    m = aa_resample_matrix(old, new)
    grid = np.einsum("ij,jkc->ikc", m, grid)
    grid = np.einsum("ij,kjc->kic", m, grid)
    return np.concatenate([pos[:, :1], grid.reshape(1, new * new, -1)], axis=1)


def vit_tokens(sd, image, heads, patch, pretrain_grid):
    """image [H, W, 3] in [0, 1] -> patch tokens [(H/p)(W/p), C] after the final norm (class token dropped)."""
    p = "img_encoder.model."
    x = (image - MEAN) / STD
    H, W, _ = x.shape
    gh, gw = H // patch, W // patch
    w = sd[p + "patch_embed.proj.weight"]  # [C, 3, p, p]
    tokens = []
    for i in range(gh):
        for j in range(gw):
            patch_px = x[i * patch:(i + 1) * patch, j * patch:(j + 1) * patch].transpose(2, 0, 1)  # [3, p, p]
            tokens.append(np.tensordot(w, patch_px, axes=([1, 2, 3], [0, 1, 2])) + sd[p + "patch_embed.proj.bias"])
    t = np.stack(tokens)
    pos = resample_pos_embed(sd[p + "pos_embed"], pretrain_grid, gh) if gh != pretrain_grid else sd[p + "pos_embed"]
    t = np.concatenate([sd[p + "cls_token"][0], t]) + pos[0]
    depth = len({k.split(".")[3] for k in sd if k.startswith(p + "blocks.")})
    for b in range(depth):
        q = f"{p}blocks.{b}."
        y = layer_norm(t, sd[q + "norm1.weight"], sd[q + "norm1.bias"], 1e-6)
        qkv = y @ sd[q + "attn.qkv.weight"].T + sd[q + "attn.qkv.bias"]
        C = t.shape[1]
        a = attention(qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:], heads)
        t = t + a @ sd[q + "attn.proj.weight"].T + sd[q + "attn.proj.bias"]
        y = layer_norm(t, sd[q + "norm2.weight"], sd[q + "norm2.bias"], 1e-6)
        y = gelu(y @ sd[q + "mlp.fc1.weight"].T + sd[q + "mlp.fc1.bias"]) @ sd[q + "mlp.fc2.weight"].T + sd[q + "mlp.fc2.bias"]
        t = t + y
    t = layer_norm(t, sd[p + "norm.weight"], sd[p + "norm.bias"], 1e-6)
    return t[1:], (gh, gw)


def conv_transpose_2x2(x, w, b):
    """x [Cin, h, w], w [Cin, Cout, 2, 2] -> [Cout, 2h, 2w]: out[:, 2i+p, 2j+q] = sum_c x[c, i, j] w[c, :, p, q] + b."""
    cin, h, wd = x.shape
    out = np.zeros((w.shape[1], 2 * h, 2 * wd))
    for pp in range(2):
        for qq in range(2):
            out[:, pp::2, qq::2] = np.einsum("chw,co->ohw", x, w[:, :, pp, qq])
    return out + b[:, None, None]


def prior_forward(sd, image, *, encoder_heads, decoder_heads, patch, pretrain_grid, outputs,
                  use_pos_enc=False, n_views=1):
    """One image [H, W, 3] -> {name: [channels, H', W']} raw predictions."""
    sd = {k: np.asarray(v, dtype=np.float64) for k, v in sd.items()}
    t, (gh, gw) = vit_tokens(sd, image, encoder_heads, patch, pretrain_grid)
    if use_pos_enc:
        t = t + sd["patch_pos_enc"][0].reshape(t.shape[1], -1).T
    if n_views > 1:
        view = sd["view_embed"][0, 0, :, 0, 0]
        t = np.concatenate([t, np.tile(view, (len(t), 1))], axis=1)
    x = t @ sd["vol_decoder.down_proj.weight"].T + sd["vol_decoder.down_proj.bias"]
    E = x.shape[1]
    layers = len({k.split(".")[2] for k in sd if k.startswith("vol_decoder.layers.")})
    for i in range(layers):
        q = f"vol_decoder.layers.{i}."
        for norm_a, attn, norm_b, mlp in (("norm1", "self_attn", "norm2", "mlp"), ("norm3", "self_attn2", "norm4", "mlp2")):
            x = layer_norm(x, sd[f"{q}{norm_a}.weight"], sd[f"{q}{norm_a}.bias"], 1e-5)
            w_in = sd[f"{q}{attn}.in_proj_weight"]
            a = attention(x @ w_in[:E].T, x @ w_in[E:2 * E].T, x @ w_in[2 * E:].T, decoder_heads)
            x = x + a @ sd[f"{q}{attn}.out_proj.weight"].T
            y = layer_norm(x, sd[f"{q}{norm_b}.weight"], sd[f"{q}{norm_b}.bias"], 1e-5)
            y = gelu(y @ sd[f"{q}{mlp}.0.weight"].T + sd[f"{q}{mlp}.0.bias"])
            x = x + y @ sd[f"{q}{mlp}.3.weight"].T + sd[f"{q}{mlp}.3.bias"]
    grid = x.T.reshape(E, gh, gw)
    for k in (1, 2, 3):
        grid = gelu(conv_transpose_2x2(grid, sd[f"t_conv{k}.weight"], sd[f"t_conv{k}.bias"]))
    P = sum(c for _, c in outputs)
    _, h, w = grid.shape
    img = np.zeros((P, 2 * h, 2 * w))
    wt, bt = sd["token_2_patch_content.weight"], sd["token_2_patch_content.bias"]
    for i in range(h):
        for j in range(w):
            vec = wt @ grid[:, i, j] + bt  # (row, col, channel), channel fastest
            img[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2] = vec.reshape(2, 2, P).transpose(2, 0, 1)
    out, start = {}, 0
    for name, c in outputs:
        out[name] = img[start:start + c]
        start += c
    return out
