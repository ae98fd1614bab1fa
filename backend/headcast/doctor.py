# SPDX-License-Identifier: GPL-3.0-or-later
"""``headcast doctor``: what this installation can do, and which mode a job will run in."""
from __future__ import annotations

import importlib
import platform
import sys
from pathlib import Path

from . import __version__
from .config import Settings, config_path


def _version(module: str) -> tuple[bool, str]:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure means 'not usable'
        return False, f"not usable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return True, str(getattr(mod, "__version__", "installed"))


def run_doctor(settings: Settings, load_models: bool = True) -> dict:
    import torch

    report: dict = {"headcast": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    report["torch"] = torch.__version__
    cuda = torch.cuda.is_available()
    report["cuda"] = torch.cuda.get_device_name(0) if cuda else "no CUDA device"
    device = settings.fit.device if settings.fit.device != "auto" else ("cuda" if cuda else "cpu")
    report["device"] = device
    packages = {}
    for name, module in (("nvdiffrast", "nvdiffrast.torch"), ("numba", "numba"), ("mediapipe", "mediapipe"),
                         ("timm", "timm"), ("opencv", "cv2"), ("trimesh", "trimesh")):
        ok, text = _version(module)
        packages[name] = {"ok": ok, "version": text}
    report["packages"] = packages
    from .render import resolve_backend
    report["renderer"] = resolve_backend(torch.zeros(1, 1, 3, device="cpu" if device == "cpu" else device), "auto")
    report["config_file"] = str(config_path()) + ("" if config_path().is_file() else " (not present)")
    report["settings_from"] = settings.sources or ["defaults"]
    problems: list[str] = []

    models = {"model": settings.models.model, "flame": settings.models.flame or "(not configured)",
              "uv_checkpoint": settings.models.uv_checkpoint or "(not configured)",
              "normals_checkpoint": settings.models.normals_checkpoint or "(not configured)"}
    report["models"] = models
    if load_models:
        from .errors import describe
        from .model_select import select_model
        try:
            choice = select_model(settings, cache=False)
            report["head_model"] = {"kind": choice.kind, "name": choice.model.name, "licence": choice.model.licence,
                                    "vertices": choice.model.n_vertices, "why": choice.reason,
                                    "mediapipe_embedding": choice.model.mediapipe is not None}
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            problems.append(f"head model: {describe(exc)['message']}")
        for key in ("uv_checkpoint", "normals_checkpoint"):
            path = getattr(settings.models, key)
            if not path:
                continue
            if not Path(path).expanduser().is_file():
                problems.append(f"{key}: file not found: {path}")
                continue
            try:
                from .priors import read_checkpoint
                read_checkpoint(Path(path).expanduser())
                models[key] = f"{path} (loads)"
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{key}: {describe(exc)['message']}")
    networks = bool(settings.models.uv_checkpoint or settings.models.normals_checkpoint)
    report["mode"] = ("Pixel3DMM uv/normal priors + landmarks + mask (full accuracy)" if networks else
                      "landmarks + mask only (lower accuracy: no Pixel3DMM weights configured)")
    if not packages["mediapipe"]["ok"]:
        problems.append("mediapipe 0.10.21 is needed for face detection and landmarks (Python <= 3.12)")
    report["problems"] = problems
    report["ok"] = not problems
    return report


def format_report(report: dict) -> str:
    lines = [f"Headcast {report['headcast']} on Python {report['python']} ({report['platform']})",
             f"  torch        {report['torch']}; CUDA: {report['cuda']}; device used: {report['device']}",
             f"  renderer     {report['renderer']}"]
    for name, info in report["packages"].items():
        lines.append(f"  {name:12s} {info['version']}")
    lines.append(f"  config       {report['config_file']}; settings from {', '.join(report['settings_from'])}")
    for key, value in report["models"].items():
        lines.append(f"  {key:18s} {value}")
    if "head_model" in report:
        hm = report["head_model"]
        lines.append(f"  head model   {hm['name']} ({hm['vertices']} vertices), licence {hm['licence']}")
        lines.append(f"               chosen because: {hm['why']}")
    lines.append(f"  mode         {report['mode']}")
    if report["problems"]:
        lines.append("Problems:")
        lines += [f"  - {p}" for p in report["problems"]]
    else:
        lines.append("No problems found.")
    return "\n".join(lines)
