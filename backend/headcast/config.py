# SPDX-License-Identifier: GPL-3.0-or-later
"""Settings, layered: defaults < config file < environment < explicit arguments.

The config file is TOML at ``$HEADCAST_CONFIG`` or ``~/.config/headcast/config.toml``
(``$XDG_CONFIG_HOME`` respected)::

    [models]
    flame = "~/flame/generic_model.pkl"   # or the folder holding it and its assets
    uv_checkpoint = "~/pixel3dmm/uv.ckpt"
    normals_checkpoint = "~/pixel3dmm/normals.ckpt"

    [fit]
    steps = 500
    render_size = 256

Every key can also be set from the environment as ``HEADCAST_<SECTION>_<KEY>``
(e.g. ``HEADCAST_MODELS_FLAME``, ``HEADCAST_FIT_STEPS``).
"""
from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config file or setting is malformed; the message names the file or variable."""


@dataclass
class ModelSettings:
    model: str = "auto"  # auto | flame | open-head | synthetic | <path to a model file>
    flame: str = ""  # FLAME model file or folder (assets beside it)
    uv_checkpoint: str = ""
    normals_checkpoint: str = ""


@dataclass
class FitSettings:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    render_size: int = 256
    steps: int = 500  # a photo (or a set of photos): full-energy steps after the camera initialisation
    camera_steps: int = 75  # camera initialisation from landmarks (= FitConfig.camera_steps)
    first_frame_steps: int = 300  # first frame of a clip, identity free
    online_steps: int = 30  # later frames: at most this many, stopping early when converged (= FitConfig)
    global_epochs: float = 16.0  # clip-wide smoothing pass, in visits per frame (0 = off)
    use_uv: bool = True
    use_normals: bool = True
    use_landmarks: bool = True
    use_silhouette: bool = True
    global_pass: bool = True
    smooth_expression: float = 200.0
    smooth_jaw: float = 200.0
    smooth_neck: float = 1000.0
    smooth_rotation: float = 20000.0
    smooth_translation: float = 152000.0
    # A known lens: focal length in mm on a sensor this wide (mm, horizontal, as Blender's
    # camera: 36 by default, so a 35 mm-equivalent focal length works as it is). The camera's
    # focal length is then held instead of solved; 0 = solve it.
    focal_mm: float = 0.0
    sensor_mm: float = 36.0
    # A known identity: a Headcast result file of the same person made with the same head model
    # (e.g. from several photos); its identity is held instead of solved. '' = solve it.
    identity: str = ""
    # mirror-symmetry prior on the shaped mesh (Pixel3DMM's tracker: 5000; ours off, see FitConfig.w_mirror)
    mirror_symmetry: float = 0.0
    # photos whose normals turn out biased: the fraction of a GLS Gauss-Newton step taken after
    # the fit (FitConfig.gls_step_fraction, headcast/fit/gls_step.py; 0 = off)
    refine: float = 0.5


@dataclass
class OutputSettings:
    posed_vertices: bool = False  # store per-frame posed vertices in result files
    cache_dir: str = ""


@dataclass
class Settings:
    models: ModelSettings = field(default_factory=ModelSettings)
    fit: FitSettings = field(default_factory=FitSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    sources: list[str] = field(default_factory=list)  # where values came from, for `doctor`


def config_path() -> Path:
    if os.environ.get("HEADCAST_CONFIG"):
        return Path(os.environ["HEADCAST_CONFIG"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "headcast" / "config.toml"


def cache_dir(settings: Settings | None = None) -> Path:
    if settings is not None and settings.output.cache_dir:
        return Path(settings.output.cache_dir).expanduser()
    if os.environ.get("HEADCAST_CACHE"):
        return Path(os.environ["HEADCAST_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "headcast"


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Convert ``value`` to the type of ``default``; strings from the environment included."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    try:
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: expected a {type(default).__name__}, got {value!r}") from exc
    return str(value)


def _apply(settings: Settings, section: str, key: str, value: Any, where: str) -> None:
    group = getattr(settings, section, None)
    if group is None or section == "sources" or not dataclasses.is_dataclass(group):
        raise ConfigError(f"{where}: unknown section [{section}] (known: models, fit, output)")
    if not hasattr(group, key):
        known = ", ".join(f.name for f in dataclasses.fields(group))
        raise ConfigError(f"{where}: unknown key {section}.{key} (known: {known})")
    value = _coerce(value, getattr(group, key), where)
    check = _RANGES.get(f"{section}.{key}")
    if check is not None and not check[0](value):
        raise ConfigError(f"{where}: {value!r} is not {check[1]}")
    setattr(group, key, value)


# settings whose type alone does not make them meaningful
_RANGES = {
    "fit.focal_mm": (lambda v: math.isfinite(v) and v >= 0, "a focal length in mm (0: solve it)"),
    "fit.sensor_mm": (lambda v: math.isfinite(v) and v > 0, "a sensor width in mm (above 0)"),
}


def load_settings(path: Path | None = None, env: dict[str, str] | None = None,
                  overrides: dict[str, Any] | None = None) -> Settings:
    """Build the settings: defaults, then the config file, the environment, then ``overrides``.

    ``overrides`` maps ``"section.key"`` to a value (None values are ignored, so argparse
    namespaces can be passed through without clobbering lower layers).
    """
    settings = Settings()
    path = config_path() if path is None else Path(path)
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: top-level key {section!r} must be a [section]")
            for key, value in values.items():
                _apply(settings, section, key, value, f"{path}: {section}.{key}")
        settings.sources.append(str(path))
    env = os.environ if env is None else env
    for name, value in env.items():
        if not name.startswith("HEADCAST_") or name in ("HEADCAST_CONFIG", "HEADCAST_CACHE", "HEADCAST_VENV"):
            continue
        parts = name[len("HEADCAST_"):].lower().split("_", 1)
        if len(parts) == 2 and parts[0] in ("models", "fit", "output"):
            _apply(settings, parts[0], parts[1], value, f"environment variable {name}")
            settings.sources.append(name)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        _apply(settings, section, key, value, f"argument {dotted}")
    return settings


def as_dict(settings: Settings) -> dict:
    return {k: v for k, v in dataclasses.asdict(settings).items() if k != "sources"}
