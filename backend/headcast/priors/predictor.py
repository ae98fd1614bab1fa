# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the uv and normal prior networks on face crops: batched, on CUDA when available, flip TTA."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_prior_network
from .conventions import decode_normals, decode_uv, flip_merge, normals_cue, uv_cue
from .network import PriorNetwork

WEIGHT_FILES = {"uv_map": "uv.ckpt", "normals": "normals.ckpt"}


@dataclass
class PriorMaps:
    """Network predictions for N crops, in the official output conventions.

    uv: [N, H, W, 2] float32 in [0, 1], channel 1 = 1 - v (the official uv PNG values), or None.
    normals: [N, H, W, 3] float32 unit normals in the head frame (FLAME axes), or None.
    """

    uv: np.ndarray | None = None
    normals: np.ndarray | None = None

    def uv_cue(self) -> np.ndarray | None:
        """uv in the model's own convention (same values as ``HeadModel.uv``)."""
        return None if self.uv is None else uv_cue(self.uv).astype(np.float32)

    def normals_cue(self) -> np.ndarray | None:
        return None if self.normals is None else normals_cue(self.normals)


def find_weights(folder: str | Path) -> dict[str, Path]:
    """The official weight files in ``folder`` (or its ``pretrained_weights/``): {'uv_map': ..., 'normals': ...}."""
    folder = Path(folder).expanduser()
    found = {}
    for kind, name in WEIGHT_FILES.items():
        for candidate in (folder / name, folder / "pretrained_weights" / name):
            if candidate.is_file():
                found[kind] = candidate
                break
    return found


def _as_rgb_tensor(crops, size: int, device, dtype) -> torch.Tensor:
    """uint8 [N, H, W, 3] or float [N, H, W, 3] in [0, 1] -> [N, 3, size, size] on device.

    Crops of another size are resized like the official script does (PIL bicubic).
    """
    arr = np.asarray(crops)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected RGB crops [N, H, W, 3], got shape {arr.shape}")
    if arr.shape[1:3] != (size, size):
        from PIL import Image

        u8 = arr if arr.dtype == np.uint8 else np.clip(arr * 255 + 0.5, 0, 255).astype(np.uint8)
        arr = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BICUBIC)) for a in u8])
    t = torch.from_numpy(np.ascontiguousarray(arr))
    t = t.float() / 255.0 if arr.dtype == np.uint8 else t.float()
    return t.permute(0, 3, 1, 2).to(device=device, dtype=dtype)


class PriorPredictor:
    """The uv and/or normal network with the official inference conventions.

    tta: average with the mirrored crop's prediction (the official default).
    half: run the networks under float16 autocast (CUDA only; ignored on CPU).
    batch_size: crops per forward pass (each pass holds 2x that many images with TTA).
    """

    def __init__(self, uv_network: PriorNetwork | None = None, normals_network: PriorNetwork | None = None,
                 *, tta: bool = True, half: bool = False, batch_size: int = 4) -> None:
        if uv_network is None and normals_network is None:
            raise ValueError("a PriorPredictor needs at least one of the uv and normal networks")
        self.networks: dict[str, PriorNetwork] = {}
        for kind, net in (("uv_map", uv_network), ("normals", normals_network)):
            if net is None:
                continue
            if kind not in dict(net.config.outputs):
                raise ValueError(f"the {kind} network predicts {[n for n, _ in net.config.outputs]}, not {kind}")
            self.networks[kind] = net.eval()
        self.tta = tta
        self.half = half
        self.batch_size = max(1, int(batch_size))

    @classmethod
    def from_checkpoints(cls, uv: str | Path | None = None, normals: str | Path | None = None, *,
                         device=None, backbone: str = "auto", **kwargs) -> "PriorPredictor":
        load = lambda p, kind: None if p is None else load_prior_network(  # noqa: E731
            p, device=device, backbone=backbone, prediction_type=kind)
        return cls(load(uv, "uv_map"), load(normals, "normals"), **kwargs)

    @classmethod
    def from_weights_dir(cls, folder: str | Path, **kwargs) -> "PriorPredictor":
        """Load ``uv.ckpt`` and/or ``normals.ckpt`` from a folder (FileNotFoundError if neither is there)."""
        found = find_weights(folder)
        if not found:
            raise FileNotFoundError(f"{folder}: neither uv.ckpt nor normals.ckpt found (also looked in pretrained_weights/)")
        return cls.from_checkpoints(found.get("uv_map"), found.get("normals"), **kwargs)

    @property
    def device(self) -> torch.device:
        return next(next(iter(self.networks.values())).parameters()).device

    def _autocast(self, device: torch.device):
        if self.half and device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def predict_raw(self, kind: str, rgb: torch.Tensor) -> torch.Tensor:
        """Raw (TTA-merged when enabled) prediction [B, C, H, W] float32 of one network."""
        net = self.networks[kind]
        with self._autocast(rgb.device):
            if self.tta:
                both = net(torch.cat([rgb, torch.flip(rgb, dims=[-1])]))[kind].float()
                raw, mirrored = both.split(rgb.shape[0])
                return flip_merge(kind, raw, mirrored)
            return net(rgb)[kind].float()

    @torch.no_grad()
    def predict(self, crops) -> PriorMaps:
        """Predict for face crops (uint8 [N, 512, 512, 3] RGB, or floats in [0, 1])."""
        device = self.device
        size = next(iter(self.networks.values())).config.image_size
        out: dict[str, list[np.ndarray]] = {k: [] for k in self.networks}
        n = len(crops)
        for start in range(0, n, self.batch_size):
            rgb = _as_rgb_tensor(crops[start:start + self.batch_size], size, device, torch.float32)
            for kind in self.networks:
                raw = self.predict_raw(kind, rgb)
                decoded = decode_uv(raw) if kind == "uv_map" else decode_normals(raw)
                out[kind].append(decoded.cpu().numpy().astype(np.float32))
        maps = {k: np.concatenate(v) if v else None for k, v in out.items()}
        return PriorMaps(uv=maps.get("uv_map"), normals=maps.get("normals"))
