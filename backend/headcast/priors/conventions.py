# SPDX-License-Identifier: GPL-3.0-or-later
"""Output conventions of the official Pixel3DMM inference, and the fitting's cue conventions.

Raw network outputs live in [-1, 1]-ish space, [B, C, H, W]:

* **flip test-time augmentation**: the network also sees the horizontally mirrored crop; its
  prediction is mirrored back along W and made consistent with the unmirrored one, then the
  two are averaged (0.5 / 0.5). For uv, raw channel 0 becomes ``-u + 2 * 0.0075`` (the
  offset of the official code; FLAME's uv layout is mirror-symmetric about u = 0.50375 in
  [0, 1] terms by that rule); for normals (and uv displacements) raw channel 0 is negated.
* **uv**: ``clamp((raw + 1) / 2, 0, 1)``; channel 0 is u, channel 1 is ``1 - v`` of the uv
  template (the OBJ's ``vt`` / :attr:`HeadModel.uv`). These are the values of the official
  ``p3dmm/uv_map/*.png`` (R = u, G = 1 - v, B = 0).
* **normals**: the raw 3-vector is normalised; the official PNG stores ``[c0, 1 - c2, 1 - c1]``
  of ``clamp((n + 1) / 2, 0, 1)``, i.e. in [-1, 1] terms ``(n0, -n2, -n1)``. Decoded as
  ``2 * png - 1`` that vector is the surface normal in the head's own frame (FLAME axes: +x
  the subject's left, +y up, +z toward the face; the frame before the global head rotation,
  "FLAME space" in the Pixel3DMM README), which is what the official tracker compares with
  ``R_head^T`` times rendered world normals.

Cue conventions for the fitting (:func:`uv_cue`, :func:`normals_cue`):

* ``uv`` [H, W, 2] in the model's own uv convention, the same numbers as ``HeadModel.uv``:
  ``(png_u, 1 - png_g)``;
* ``normals`` [H, W, 3] unit vectors in the head frame: ``2 * png - 1``, renormalised.

The PNG files are 8-bit RGB written with truncation (``uint8(x * 255)``) like the official
script, so decoding loses up to 1/255.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

UV_MIRROR_OFFSET = 2 * 0.0075  # raw-space offset of the mirrored u in the official TTA
# outputs the official script averages with their mirror image (channel 0 is negated for all three)
FLIP_TTA_OUTPUTS = ("uv_map", "normals", "disps")


def flip_merge(name: str, raw: torch.Tensor, raw_mirrored: torch.Tensor) -> torch.Tensor:
    """Average a prediction [B, C, H, W] with the mirror-image prediction, official TTA rule.

    ``raw_mirrored`` is the network's output for the horizontally flipped input. Only the
    outputs the official script averages (uv_map, normals, disps) have a mirror rule.
    """
    if name not in FLIP_TTA_OUTPUTS:
        raise ValueError(f"no flip rule for output {name!r}; the official TTA covers {FLIP_TTA_OUTPUTS}")
    back = torch.flip(raw_mirrored, dims=[-1]).clone()
    back[:, 0] = -back[:, 0]
    if name == "uv_map":
        back[:, 0] = back[:, 0] + UV_MIRROR_OFFSET
    return (raw + back) / 2


def decode_uv(raw: torch.Tensor) -> torch.Tensor:
    """Raw uv [B, 2, H, W] -> official uv values [B, H, W, 2] in [0, 1] (channel 1 = 1 - v)."""
    return torch.clamp((raw + 1) / 2, 0, 1).permute(0, 2, 3, 1)


def decode_normals(raw: torch.Tensor) -> torch.Tensor:
    """Raw normals [B, 3, H, W] -> unit normals [B, H, W, 3] in the head frame (FLAME axes).

    Equal to ``2 * png - 1`` of the official PNG before its 8-bit quantisation.
    """
    n = raw / torch.linalg.vector_norm(raw, dim=1, keepdim=True).clamp_min(1e-12)
    return torch.stack([n[:, 0], -n[:, 2], -n[:, 1]], dim=-1)


def uv_cue(uv_official: np.ndarray | torch.Tensor):
    """Official uv values [..., 2] -> the model's uv convention (u, 1 - v')."""
    if isinstance(uv_official, torch.Tensor):
        return torch.stack([uv_official[..., 0], 1 - uv_official[..., 1]], dim=-1)
    uv_official = np.asarray(uv_official)
    return np.stack([uv_official[..., 0], 1 - uv_official[..., 1]], axis=-1)


def normals_cue(normals_head: np.ndarray | torch.Tensor):
    """Head-frame normals [..., 3] as the fitting uses them: renormalised unit vectors."""
    if isinstance(normals_head, torch.Tensor):
        return normals_head / torch.linalg.vector_norm(normals_head, dim=-1, keepdim=True).clamp_min(1e-12)
    n = np.asarray(normals_head, dtype=np.float32)
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


# --- the official PNG files ------------------------------------------------------------------

def _to_uint8(values01: np.ndarray) -> np.ndarray:
    # the official script truncates: (x * 255).astype(np.uint8)
    return (np.asarray(values01, dtype=np.float32) * 255).astype(np.uint8)


def uv_png_from_raw(raw: torch.Tensor) -> np.ndarray:
    """Exactly the official uv PNG content [B, H, W, 3] uint8 from raw uv [B, 2, H, W]."""
    uv = decode_uv(raw.float()).cpu().numpy()
    return _to_uint8(np.concatenate([uv, np.zeros_like(uv[..., :1])], axis=-1))


def normals_png_from_raw(raw: torch.Tensor) -> np.ndarray:
    """Exactly the official normals PNG content [B, H, W, 3] uint8 from raw normals [B, 3, H, W]."""
    raw = raw.float()
    n = raw / torch.linalg.vector_norm(raw, dim=1, keepdim=True)  # the official code adds no epsilon
    t = torch.clamp((n + 1) / 2, 0, 1)
    t = torch.stack([t[:, 0], 1 - t[:, 2], 1 - t[:, 1]], dim=-1)
    return _to_uint8(t.cpu().numpy())


def uv_png(uv_official: np.ndarray) -> np.ndarray:
    """Official uv values [..., H, W, 2] -> PNG content [..., H, W, 3] uint8."""
    uv = np.clip(np.asarray(uv_official, dtype=np.float32), 0, 1)
    return _to_uint8(np.concatenate([uv, np.zeros_like(uv[..., :1])], axis=-1))


def normals_png(normals_head: np.ndarray) -> np.ndarray:
    """Head-frame normals [..., H, W, 3] -> official normals PNG content uint8."""
    n = np.asarray(normals_head, dtype=np.float32)
    return _to_uint8(np.clip((n + 1) / 2, 0, 1))


def _write_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise OSError(f"{path}: could not write the PNG")
    return path


def _read_rgb(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 3 or img.shape[2] < 3 or img.dtype != np.uint8:
        raise ValueError(f"{path}: not an 8-bit RGB PNG as Pixel3DMM writes them")
    return img[..., 2::-1] if img.shape[2] == 3 else img[..., [2, 1, 0]]


def write_uv_png(path: str | Path, uv_official: np.ndarray) -> Path:
    """Write one official-format uv map (``p3dmm/uv_map/NNNNN.png``) from official uv values [H, W, 2]."""
    return _write_rgb(Path(path), uv_png(uv_official))


def write_normals_png(path: str | Path, normals_head: np.ndarray) -> Path:
    """Write one official-format normal map (``p3dmm/normals/NNNNN.png``) from head-frame normals [H, W, 3]."""
    return _write_rgb(Path(path), normals_png(normals_head))


def read_uv_png(path: str | Path) -> np.ndarray:
    """Official uv PNG -> official uv values [H, W, 2] float32 in [0, 1] (channel 1 = 1 - v)."""
    return _read_rgb(Path(path))[..., :2].astype(np.float32) / 255.0


def read_normals_png(path: str | Path) -> np.ndarray:
    """Official normals PNG -> head-frame unit normals [H, W, 3] float32."""
    n = _read_rgb(Path(path)).astype(np.float32) * (2.0 / 255.0) - 1.0
    return normals_cue(n)


def write_official_outputs(root: str | Path, uv_official: np.ndarray | None = None,
                           normals_head: np.ndarray | None = None, start: int = 0) -> list[Path]:
    """Write ``root/p3dmm/uv_map/{i:05d}.png`` and ``root/p3dmm/normals/{i:05d}.png`` for a clip."""
    root = Path(root)
    written = []
    for kind, maps, writer in (("uv_map", uv_official, write_uv_png), ("normals", normals_head, write_normals_png)):
        if maps is None:
            continue
        for i, m in enumerate(maps):
            written.append(writer(root / "p3dmm" / kind / f"{start + i:05d}.png", m))
    return written


def read_official_outputs(root: str | Path) -> dict[str, np.ndarray]:
    """Read a clip's official PNGs: {'uv_map': [N, H, W, 2] official values, 'normals': [N, H, W, 3] head frame}.

    Only the folders that exist are read; frames are sorted by file name.
    """
    root = Path(root)
    out = {}
    for kind, reader in (("uv_map", read_uv_png), ("normals", read_normals_png)):
        folder = root / "p3dmm" / kind
        if folder.is_dir():
            files = sorted(folder.glob("*.png"))
            if files:
                out[kind] = np.stack([reader(f) for f in files])
    if not out:
        raise FileNotFoundError(f"{root}: no p3dmm/uv_map or p3dmm/normals PNGs found")
    return out
