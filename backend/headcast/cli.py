# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``headcast`` command line.

Commands: ``reconstruct IMAGE... -o OUT``, ``track VIDEO -o OUT``, ``doctor``, ``serve``,
``synth-model DIR``, ``models build open-head``, ``export RESULT``, ``pose-mesh MODEL``.

Exit codes: 0 success; 1 unexpected failure; 2 bad usage, a missing or unreadable file, a
bad model or config; 3 no face in the footage; 130 cancelled (Ctrl-C).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from . import __version__
from .openmp import set_default_wait_policy

# before torch loads OpenMP: a short spin, neither the default's long one (stalls when the
# cores are shared with Blender or a second job) nor none at all (slow on an idle machine)
set_default_wait_policy()

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_NO_FACE, EXIT_CANCELLED = 0, 1, 2, 3, 130
EXIT_CODES = {"no_face": EXIT_NO_FACE, "cancelled": EXIT_CANCELLED, "internal": EXIT_FAILURE}


# --- progress output ------------------------------------------------------------------------------

class ProgressPrinter:
    """Progress bars on a terminal, plain log lines otherwise, or JSON events with ``--json``."""

    def __init__(self, mode: str, stream=None) -> None:
        self.mode = mode  # 'bar' | 'lines' | 'json'
        self.stream = stream or sys.stderr
        self._bar = None
        self._stage = None
        self._last = 0.0
        self._t0 = time.monotonic()

    @classmethod
    def choose(cls, json_events: bool) -> "ProgressPrinter":
        if json_events:
            return cls("json", sys.stdout)
        return cls("bar" if sys.stderr.isatty() else "lines")

    def event(self, event: dict) -> None:
        if self.mode == "json":
            self.stream.write(json.dumps(event) + "\n")
            self.stream.flush()

    def __call__(self, stage: str, frame: int, total: int, step: int, loss: float) -> None:
        now = time.monotonic()
        if self.mode == "json":
            if now - self._last >= 0.1 or stage != self._stage:
                self.event({"event": "progress", "stage": stage, "frame": frame, "total": total, "step": step,
                            "loss": None if loss != loss else loss, "elapsed": round(now - self._t0, 3)})
                self._last, self._stage = now, stage
            return
        if self.mode == "bar":
            from tqdm import tqdm
            if stage != self._stage:
                self.close()
                self._bar = tqdm(total=total or None, desc=stage, unit="frame" if total else "step", leave=False,
                                 file=self.stream)
                self._stage = stage
            if self._bar is not None:
                if total:
                    self._bar.n = max(frame, 0)
                self._bar.set_postfix(step=step, loss=f"{loss:.4g}" if loss == loss else "-", refresh=False)
                self._bar.refresh()
            return
        if stage != self._stage or now - self._last >= 2.0:
            where = f" frame {frame}/{total}" if total and frame >= 0 else ""
            loss_text = f" loss {loss:.5g}" if loss == loss else ""
            print(f"[{now - self._t0:7.1f}s] {stage}{where} step {step}{loss_text}", file=self.stream, flush=True)
            self._last, self._stage = now, stage

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _settings(args: argparse.Namespace):
    from .config import load_settings

    overrides = {
        "models.model": getattr(args, "model", None), "models.flame": getattr(args, "flame", None),
        "models.uv_checkpoint": getattr(args, "uv_checkpoint", None),
        "models.normals_checkpoint": getattr(args, "normals_checkpoint", None),
        "fit.device": getattr(args, "device", None), "fit.steps": getattr(args, "steps", None),
        "fit.render_size": getattr(args, "render_size", None),
        "fit.focal_mm": getattr(args, "focal_mm", None), "fit.sensor_mm": getattr(args, "sensor_mm", None),
        "fit.identity": getattr(args, "identity", None),
        "output.posed_vertices": True if getattr(args, "posed_vertices", False) else None,
    }
    return load_settings(Path(args.config) if getattr(args, "config", None) else None, overrides=overrides)


def _run_job(args: argparse.Namespace, job) -> int:
    printer = ProgressPrinter.choose(args.json)
    try:
        result = job(_settings(args), printer)
    finally:
        printer.close()
    if args.json:
        printer.event({"event": "result", **result.as_dict()})
    else:
        print(f"wrote {result.path} ({result.valid_frames}/{result.n_frames} frames with a face; model "
              f"{result.model}, licence {result.licence}; mode {result.mode})")
    return EXIT_OK


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from .pipeline import reconstruct
    return _run_job(args, lambda s, p: reconstruct(args.images, args.output, settings=s, progress=p))


def _cmd_track(args: argparse.Namespace) -> int:
    from .pipeline import track
    return _run_job(args, lambda s, p: track(args.video, args.output, settings=s, progress=p,
                                             resume=not args.restart, max_frames=args.max_frames))


def _cmd_serve(args: argparse.Namespace) -> int:
    from .worker import protocol_stdout, serve_pipeline
    out = protocol_stdout()
    return serve_pipeline(_settings(args), sys.stdin, out)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_doctor
    report = run_doctor(_settings(args), load_models=not args.quick)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        from .doctor import format_report
        print(format_report(report))
    return EXIT_OK if report["ok"] else EXIT_BAD_INPUT


def _cmd_synth_model(args: argparse.Namespace) -> int:
    from .flame.loaders import save_model_npz
    from .flame.synthetic import build_synthetic_model, write_synthetic_model

    model = build_synthetic_model(seed=args.seed)
    files = write_synthetic_model(args.outdir, seed=args.seed, model=model)
    if args.npz:
        files["npz"] = save_model_npz(model, Path(args.outdir) / "head_model.npz")
    print(f"synthetic FLAME-format model (seed {args.seed}, {model.n_vertices} vertices, "
          f"{model.faces.shape[0]} triangles) written to {args.outdir}:")
    for key, path in files.items():
        print(f"  {key:18s} {path}")
    return EXIT_OK


def _cmd_models(args: argparse.Namespace) -> int:
    from .models.open_head import main as models_main
    return models_main(args.rest)


def _cmd_export(args: argparse.Namespace) -> int:
    from .io import export_frames, export_glb_neutral, load_result

    result = load_result(args.result)
    out = Path(args.out or Path(args.result).with_suffix("").with_suffix("")).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in ("obj", "ply"):
        if getattr(args, fmt):
            written += export_frames(result, out, fmt, space=args.space)
    if args.glb:
        written.append(export_glb_neutral(result, out / "neutral.glb"))
    if not written:
        print("headcast: nothing to export: give --obj, --ply and/or --glb", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {len(written)} files to {out}")
    return EXIT_OK


def _cmd_pose_mesh(args: argparse.Namespace) -> int:
    """Evaluate the model at given or random parameters and write an OBJ (posed, with uvs)."""
    import numpy as np
    import torch

    from .flame import HeadLayer, axis_angle_to_matrix, load_head_model
    from .flame.synthetic import write_obj

    model = load_head_model(args.model)
    layer = HeadLayer(model, dtype=torch.float64)
    rng = np.random.default_rng(args.seed)
    scale = 0.0 if args.seed is None else 1.0
    shape = torch.tensor(rng.normal(size=(1, layer.n_shape)) * scale)
    expr = torch.tensor(rng.normal(size=(1, layer.n_expr)) * scale)
    aa = np.zeros((1, model.n_joints, 3))
    if args.jaw:
        aa[0, 2, 0] = args.jaw
    out = layer(shape, expr, axis_angle_to_matrix(torch.tensor(aa)))
    write_obj(Path(args.out), out.vertices[0].numpy(), model.faces, model.uv, model.faces_uv,
              header=f"{model.name} posed by headcast pose-mesh (licence: {model.licence})")
    print(f"wrote {args.out} ({model.n_vertices} vertices) from {model.source}")
    return EXIT_OK


def _add_job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, default=None, help="result file (default: next to the input)")
    p.add_argument("--model", help="auto | flame | open-head | synthetic | PATH (default: config or auto)")
    p.add_argument("--flame", help="FLAME model file or folder (overrides the config)")
    p.add_argument("--uv-checkpoint", help="Pixel3DMM uv.ckpt")
    p.add_argument("--normals-checkpoint", help="Pixel3DMM normals.ckpt")
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--steps", type=int, help="optimisation steps for a photo")
    p.add_argument("--render-size", type=int, help="fitting resolution (default 256)")
    p.add_argument("--focal-mm", type=float, help="known lens focal length in mm: held instead of solved")
    p.add_argument("--sensor-mm", type=float, help="sensor width in mm for --focal-mm (default 36, full frame)")
    p.add_argument("--identity", metavar="RESULT",
                   help="a result file of the same person (e.g. from several photos): its identity is held "
                        "instead of solved")
    p.add_argument("--posed-vertices", action="store_true", help="store posed vertices per frame in the result")
    p.add_argument("--json", action="store_true", help="print JSON events on stdout instead of progress bars")
    p.add_argument("--config", help="config file (default ~/.config/headcast/config.toml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headcast", description="Photo and video to an animated FLAME head rig.")
    parser.add_argument("--version", action="version", version=f"headcast {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("reconstruct", help="photo(s) of one person -> result file (shared identity)")
    p.add_argument("images", nargs="+")
    _add_job_options(p)
    p.set_defaults(func=_cmd_reconstruct)

    p = sub.add_parser("track", help="video file or image folder -> animated result file")
    p.add_argument("video")
    _add_job_options(p)
    p.add_argument("--restart", action="store_true", help="ignore finished frames of an earlier interrupted run")
    p.add_argument("--max-frames", type=int, default=None)
    p.set_defaults(func=_cmd_track)

    p = sub.add_parser("doctor", help="report the environment, configured models and which mode will run")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="do not load the model files")
    p.add_argument("--config")
    p.add_argument("--model")
    p.add_argument("--flame")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("serve", help="JSON-lines worker on stdin/stdout (used by the Blender add-on)")
    p.add_argument("--config")
    p.add_argument("--model")
    p.add_argument("--flame")
    p.add_argument("--device")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("synth-model", help="write the synthetic FLAME-format model and its assets")
    p.add_argument("outdir", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--npz", action="store_true", help="also write Headcast's single-file head_model.npz")
    p.set_defaults(func=_cmd_synth_model)

    p = sub.add_parser("models", help="build optional model packs (e.g. `headcast models build open-head`)",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("export", help="result file -> OBJ/PLY per frame and/or a GLB of the neutral head")
    p.add_argument("result")
    p.add_argument("--out", help="output folder (default: next to the result)")
    p.add_argument("--obj", action="store_true")
    p.add_argument("--ply", action="store_true")
    p.add_argument("--glb", action="store_true")
    p.add_argument("--space", choices=["model", "camera"], default="model")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("pose-mesh", help="write an OBJ of a model at neutral or random parameters")
    p.add_argument("model", type=Path, help="model file or folder (FLAME pkl/npz with assets beside it)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=None, help="random identity and expression (omit for neutral)")
    p.add_argument("--jaw", type=float, default=0.0, help="jaw opening in radians")
    p.set_defaults(func=_cmd_pose_mesh)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import describe

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s",
                        stream=sys.stderr)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("headcast: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # noqa: BLE001 - turned into a clear message and an exit code
        info = describe(exc)
        if info["code"] == "internal":
            raise
        if getattr(args, "json", False):
            print(json.dumps({"event": "error", **info}), flush=True)
        print(f"headcast: error: {info['message']}", file=sys.stderr)
        return EXIT_CODES.get(info["code"], EXIT_BAD_INPUT)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
