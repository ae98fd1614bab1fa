#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Headless batch: track or reconstruct each input, save a .blend per input, export, and report.

    blender -b -P scripts/batch.py -- INPUTS... --out DIR [--export glb|fbx|abc|usd] [options]
    python scripts/batch.py INPUTS... --out DIR [...]          # with the bpy module installed

Inputs: videos and image folders are tracked, photos reconstructed, and existing result files
(``*.headcast.npz``) only imported. Each goes into a fresh empty scene through the add-on's
own operators (the blocking path), and gives ``DIR/<name>.headcast.npz``, ``DIR/<name>.blend``,
the chosen exports (``DIR/<name>.glb`` ...) and, with ``--preview``, ``DIR/<name>_preview.png``
(Workbench render of the middle frame over its footage). A failing input is reported and the
batch goes on. ``DIR/report.json`` and ``DIR/report.txt`` list per input: status, frames,
timings, the error (code, message, file) and the files written; they are rewritten after
every input. Exit code: 0 all inputs done, 1 some failed, 2 bad usage.

The backend runs as ``<backend python> -m headcast.cli serve`` (the add-on's client) with this
checkout's ``backend/`` on its PYTHONPATH; fitting settings come from the environment
(``HEADCAST_FIT_STEPS`` ...) or the backend's config file, as for the ``headcast`` command.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPORT_FORMATS = ("glb", "fbx", "usd", "abc")
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
RESULT_SUFFIX = ".headcast.npz"
BATCH_REPO = "headcast_batch"  # the local extension repository the repo's add-on is enabled from
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def script_arguments(argv: list[str], inside_blender: bool) -> list[str]:
    """Blender passes its own arguments too; the script's follow ``--``."""
    if "--" in argv:
        return argv[argv.index("--") + 1:]
    return [] if inside_blender else argv[1:]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="batch.py", description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", help="photos, videos, image folders or .headcast.npz result files")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--export", action="append", default=[], metavar="FORMAT",
                   help=f"also export each rig: {', '.join(EXPORT_FORMATS)} (repeat or comma-separate)")
    p.add_argument("--preview", action="store_true", help="render a PNG of the middle frame over its footage")
    p.add_argument("--animate", choices=("HEAD", "CAMERA"), default="HEAD", help="what moves in the scene")
    p.add_argument("--max-frames", type=int, default=0, help="track only the first N frames of each video")
    p.add_argument("--focal-mm", type=float, default=0.0,
                   help="the footage's known lens focal length in mm, held instead of solved (0: solve it)")
    p.add_argument("--sensor-mm", type=float, default=36.0, help="the sensor width for --focal-mm (default 36)")
    p.add_argument("--identity", type=Path, default=None, metavar="RESULT",
                   help="a result file of the same person (e.g. from several photos): its identity is held for "
                        "every photo and clip instead of solved")
    p.add_argument("--backend-python", default="",
                   help="the backend's interpreter (default: $HEADCAST_BACKEND_PYTHON, this checkout's .venv, "
                        "or the running Python)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra backend environment")
    p.add_argument("--model", default="", help="auto | flame | open-head | synthetic | PATH (default: the backend's)")
    p.add_argument("--flame", default="", help="FLAME model file or folder")
    p.add_argument("--uv-checkpoint", default="")
    p.add_argument("--normals-checkpoint", default="")
    p.add_argument("--device", default="", choices=("", "auto", "cpu", "cuda"))
    return p


def export_formats(values: list[str]) -> list[str]:
    formats = []
    for value in values:
        for fmt in value.split(","):
            fmt = fmt.strip().lower()
            if fmt and fmt not in formats:
                if fmt not in EXPORT_FORMATS:
                    raise SystemExit(f"batch.py: unknown export format {fmt!r} "
                                     f"(choose from {', '.join(EXPORT_FORMATS)})")
                formats.append(fmt)
    return formats


def input_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(RESULT_SUFFIX):
        return "import"
    if path.is_dir() or path.suffix.lower() in VIDEO_SUFFIXES:
        return "track"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "reconstruct"
    return "unknown"


def unique_stem(path: Path, taken: set[str]) -> str:
    name = path.name
    stem = name[: -len(RESULT_SUFFIX)] if name.lower().endswith(RESULT_SUFFIX) else (path.stem if path.suffix else name)
    candidate, n = stem, 2
    while candidate in taken:
        candidate, n = f"{stem}_{n}", n + 1
    taken.add(candidate)
    return candidate


def default_backend_python(inside_blender: bool) -> str:
    if os.environ.get("HEADCAST_BACKEND_PYTHON"):
        return os.environ["HEADCAST_BACKEND_PYTHON"]
    venv = ROOT / ".venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if venv.is_file():
        return str(venv)
    return "" if inside_blender else sys.executable


# --- the add-on ----------------------------------------------------------------------------------

class AddonSession:
    """The Headcast add-on enabled for the batch: this checkout's copy, from a temporary local repository."""

    def __init__(self, bpy) -> None:
        self.bpy = bpy
        self.module_name = ""
        self.repo = None
        self.staging = None

    def __enter__(self):
        import addon_utils

        spec = importlib.util.spec_from_file_location("headcast_build_extension",
                                                      ROOT / "scripts" / "build_extension.py")
        build = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(build)
        for name in list(self.bpy.context.preferences.addons.keys()):
            # an installed Headcast would clash with this copy's classes; off for this run only
            if name.startswith("bl_ext.") and name.endswith(".headcast"):
                addon_utils.disable(name, default_set=False)
        self.staging = tempfile.TemporaryDirectory(prefix="headcast_batch_addon_")
        staged = build.stage(Path(self.staging.name))
        repos = self.bpy.context.preferences.extensions.repos
        self.repo = repos.new(name=BATCH_REPO, module=BATCH_REPO, custom_directory=str(staged.parent), source="USER")
        self.module_name = f"bl_ext.{BATCH_REPO}.{staged.name}"
        addon_utils.enable(self.module_name, default_set=True, handle_error=_raise)
        return self

    def module(self, name: str = ""):
        return importlib.import_module(self.module_name + (f".{name}" if name else ""))

    @property
    def preferences(self):
        return self.bpy.context.preferences.addons[self.module_name].preferences

    def __exit__(self, *exc) -> None:
        import addon_utils

        # disabling stops the backend and unregisters everything (bpy 4.5 can hang at exit otherwise)
        if self.module_name in self.bpy.context.preferences.addons:
            addon_utils.disable(self.module_name, default_set=True)
        if self.repo is not None:
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):  # it disables the (already disabled) add-on again
                self.bpy.context.preferences.extensions.repos.remove(self.repo)
        if self.staging is not None:
            self.staging.cleanup()


def _raise(exc: BaseException) -> None:
    raise exc


def configure(addon: AddonSession, args: argparse.Namespace, inside_blender: bool) -> str:
    prefs = addon.preferences
    python = args.backend_python or default_backend_python(inside_blender)
    if not python:
        raise SystemExit("batch.py: no backend Python: pass --backend-python or set HEADCAST_BACKEND_PYTHON")
    prefs.backend_python = python
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "backend"), os.environ.get("PYTHONPATH", "")) if p)}
    for entry in args.env:
        name, sep, value = entry.partition("=")
        if not sep:
            raise SystemExit(f"batch.py: --env {entry!r} is not NAME=VALUE")
        env[name.strip()] = value
    prefs.backend_env = "; ".join(f"{k}={v}" for k, v in env.items())
    if args.model:
        prefs.model = args.model if args.model in ("auto", "flame", "open-head", "synthetic") else "CONFIG"
        if prefs.model == "CONFIG":  # a model file: through the environment, like the headcast command
            prefs.backend_env += f"; HEADCAST_MODELS_MODEL={os.path.abspath(args.model)}"
    prefs.flame_path = args.flame
    prefs.uv_checkpoint = args.uv_checkpoint
    prefs.normals_checkpoint = args.normals_checkpoint
    prefs.device = args.device or "CONFIG"
    return python


# --- one input -------------------------------------------------------------------------------------

def run_input(bpy, addon: AddonSession, path: Path, stem: str, out: Path, args, formats: list[str]) -> dict:
    runtime = addon.module("runtime")
    client_mod = addon.module("client")
    kind = input_kind(path)
    entry = {"input": str(path), "name": stem, "kind": kind, "status": "error", "frames": None, "valid_frames": None,
             "model": None, "licence": None, "mode": None, "timings": {}, "backend_timings": {}, "outputs": {},
             "error": None}
    t_start = time.perf_counter()
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.headcast.animate = args.animate
    if args.focal_mm > 0:  # the panel's Known Lens, which the job operators send with the request
        scene.headcast.known_lens = True
        scene.headcast.lens_mm, scene.headcast.sensor_mm = args.focal_mm, args.sensor_mm
    if args.identity is not None:  # the panel's Identity
        scene.headcast.identity_path = str(args.identity)
    result = out / f"{stem}{RESULT_SUFFIX}"
    try:
        if kind == "unknown":
            raise BatchError("bad_input", f"not a photo, video, image folder or result file: {path}", str(path))
        if not path.exists():
            raise BatchError("missing_file", f"input not found: {path}", str(path))
        runtime.STATE.last_job = None
        if kind == "import":
            result = path
            _call(bpy.ops.headcast.import_result, "import", filepath=str(path), animate=args.animate)
            fit = addon.module("result_file").load_result(path, posed_vertices=False).metadata.get("fit") or {}
            entry["mode"] = fit.get("mode") if isinstance(fit, dict) else None
            entry["backend_timings"] = dict(fit.get("timings") or {}) if isinstance(fit, dict) else {}
        else:
            op = bpy.ops.headcast.track_clip if kind == "track" else bpy.ops.headcast.reconstruct_face
            extra = {"max_frames": args.max_frames} if kind == "track" and args.max_frames else {}
            try:
                _call(op, kind, filepath=str(path), output=str(result), **extra)
            finally:
                job = runtime.STATE.last_job
                if job is not None:
                    entry["timings"]["job_s"] = round(job.wall_seconds, 3)
                    if job.result:
                        entry["backend_timings"] = {k: round(v, 3) for k, v in job.result.get("timings", {}).items()}
                        entry.update({k: job.result.get(k) for k in ("mode", "model", "licence")})
                        entry["notes"] = job.result.get("notes", [])
                    if job.error:
                        raise BatchError(job.error["code"], client_mod.error_text(job.error), job.error.get("file"))
        entry["outputs"]["result"] = str(result)
        rig = _imported_rig(addon, scene)
        entry["frames"], entry["valid_frames"] = rig["frames"], rig["valid_frames"]
        entry["model"] = entry["model"] or rig["model"]
        entry["licence"] = entry["licence"] or rig["licence"]
        t0 = time.perf_counter()
        look_through_camera(bpy)
        blend = out / f"{stem}.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend), check_existing=False)
        entry["timings"]["save_s"] = round(time.perf_counter() - t0, 3)
        entry["outputs"]["blend"] = str(blend)
        for fmt in formats:
            t0 = time.perf_counter()
            suffix = "usdc" if fmt == "usd" else fmt
            entry["outputs"][fmt] = str(export_scene(bpy, scene, fmt, out / f"{stem}.{suffix}"))
            entry["timings"][f"export_{fmt}_s"] = round(time.perf_counter() - t0, 3)
        if args.preview:
            t0 = time.perf_counter()
            entry["outputs"]["preview"] = str(render_preview(bpy, scene, out / f"{stem}_preview.png"))
            entry["timings"]["preview_s"] = round(time.perf_counter() - t0, 3)
        entry["status"] = "ok"
    except BatchError as exc:
        entry["error"] = {"code": exc.code, "message": exc.message, "file": exc.file}
    except Exception as exc:  # noqa: BLE001 - one input's failure must not stop the batch
        entry["error"] = {"code": "internal", "message": f"{type(exc).__name__}: {exc}", "file": None}
    entry["timings"]["total_s"] = round(time.perf_counter() - t_start, 3)
    return entry


class BatchError(Exception):
    def __init__(self, code: str, message: str, file: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.file = code, message, file


def _call(op, kind: str, **kwargs) -> None:
    """Run an operator; its error report (a RuntimeError from bpy) becomes a BatchError."""
    try:
        result = op("EXEC_DEFAULT", **kwargs)
    except RuntimeError as exc:
        text = str(exc).strip()
        text = text[len("Error: "):] if text.startswith("Error: ") else text
        raise BatchError("import_failed" if kind == "import" else "job_failed", text.strip()) from exc
    if result != {"FINISHED"}:
        raise BatchError("cancelled", f"the {kind} did not finish ({', '.join(sorted(result))})")


def look_through_camera(bpy) -> None:
    """3D views of the saved file look through the solved camera: open, press play, see the rig on its footage."""
    for screen in bpy.data.screens:
        for area in screen.areas:
            for space in area.spaces:
                if space.type == "VIEW_3D" and space.region_3d is not None:
                    space.region_3d.view_perspective = "CAMERA"


def _imported_rig(addon: AddonSession, scene) -> dict:
    importer = addon.module("blender.importer")
    colls = [c for c in scene.collection.children if c.get(importer.RIG_PROP)]
    if not colls:
        raise BatchError("import_failed", "no rig was imported")
    coll = colls[-1]
    invalid = len(coll.get("headcast_invalid_frames", []))
    frames = scene.frame_end - scene.frame_start + 1
    return {"frames": frames, "valid_frames": frames - invalid, "model": coll.get("headcast_model"),
            "licence": coll.get("headcast_licence")}


# --- exports and preview ------------------------------------------------------------------------------

def _exporter(bpy, fmt: str):
    ops = {"glb": ("export_scene", "gltf"), "fbx": ("export_scene", "fbx"), "usd": ("wm", "usd_export"),
           "abc": ("wm", "alembic_export")}[fmt]
    op = getattr(getattr(bpy.ops, ops[0]), ops[1])
    try:
        op.get_rna_type()
    except KeyError as exc:  # the operator is not in this build of Blender
        raise BatchError("export_unavailable", f"this Blender has no {fmt} exporter ({'.'.join(ops)})") from exc
    return op


def export_scene(bpy, scene, fmt: str, path: Path) -> Path:
    """Export the scene's rig (mesh, shape keys, armature, animation, camera) with Blender's exporter."""
    op = _exporter(bpy, fmt)
    wanted = {
        "glb": dict(export_format="GLB", export_animations=True, export_morph=True, export_skins=True,
                    export_cameras=True, export_apply=False),
        "fbx": dict(bake_anim=True, add_leaf_bones=False, object_types={"ARMATURE", "MESH", "CAMERA"}),
        "usd": dict(export_animation=True),
        "abc": dict(start=scene.frame_start, end=scene.frame_end),
    }[fmt]
    known = set(op.get_rna_type().properties.keys())
    kwargs = {k: v for k, v in wanted.items() if k in known}  # option names move between versions
    try:
        result = op(filepath=str(path), **kwargs)
    except RuntimeError as exc:
        raise BatchError("export_failed", f"{fmt} export failed: {exc}", str(path)) from exc
    if result != {"FINISHED"} or not path.is_file():
        raise BatchError("export_failed", f"{fmt} export wrote nothing", str(path))
    return path


def render_preview(bpy, scene, path: Path, frame: int | None = None) -> Path:
    """A Workbench render of one frame of the rig, composited over its footage in the sequencer.

    The camera's background (the footage) is a viewport-only overlay, so a second scene plays
    the footage on channel 1 and the rig's scene, rendered with a transparent film, on channel 2.
    """
    cam = scene.camera
    if cam is None:
        raise BatchError("preview_failed", "the scene has no camera to render the preview from")
    frame = frame if frame is not None else (scene.frame_start + scene.frame_end) // 2
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.film_transparent = True
    shading = scene.display.shading
    # a cool tint the footage rarely has, so the rig stands out against skin
    shading.light, shading.color_type, shading.single_color = "STUDIO", "SINGLE", (0.45, 0.7, 1.0)
    preview = bpy.data.scenes.new(f"{scene.name} preview")
    try:
        r, pr = scene.render, preview.render
        pr.resolution_x, pr.resolution_y, pr.resolution_percentage = r.resolution_x, r.resolution_y, 100
        pr.pixel_aspect_x, pr.pixel_aspect_y = r.pixel_aspect_x, r.pixel_aspect_y
        pr.fps, pr.fps_base = r.fps, r.fps_base
        preview.frame_start, preview.frame_end = scene.frame_start, scene.frame_end
        editor = preview.sequence_editor_create()
        strips = editor.strips if hasattr(editor, "strips") else editor.sequences  # 'sequences' before 4.4
        background = cam.data.background_images[0] if len(cam.data.background_images) else None
        length = scene.frame_end - scene.frame_start + 1
        if background is not None and background.source == "MOVIE_CLIP" and background.clip is not None:
            clip = background.clip
            footage = bpy.path.abspath(clip.filepath)
            if clip.source == "SEQUENCE":
                plate = strips.new_image("plate", footage, channel=1, frame_start=int(clip.frame_start))
            else:
                plate = strips.new_movie("plate", footage, channel=1, frame_start=int(clip.frame_start))
        elif background is not None and background.image is not None:
            plate = strips.new_image("plate", bpy.path.abspath(background.image.filepath), channel=1,
                                     frame_start=scene.frame_start)
            plate.frame_final_duration = length
        else:
            plate = None
        rig = strips.new_scene("rig", scene, channel=2, frame_start=scene.frame_start)
        rig.scene_camera = cam
        rig.frame_final_duration = length
        rig.blend_type = "ALPHA_OVER"
        rig.blend_alpha = 0.6  # the footage shows through, so the fit can be judged
        pr.use_sequencer = True
        for s in (scene, preview):  # the footage's own colours, not a film look
            s.view_settings.view_transform = "Standard"
            s.view_settings.look = "None"
        pr.image_settings.file_format = "PNG"
        pr.filepath = str(path)
        preview.frame_set(int(frame))
        bpy.ops.render.render(write_still=True, scene=preview.name)
    except RuntimeError as exc:
        raise BatchError("preview_failed", f"preview render failed: {exc}", str(path)) from exc
    finally:
        bpy.data.scenes.remove(preview)
    if not path.is_file():
        raise BatchError("preview_failed", "the preview render wrote nothing", str(path))
    return path


# --- report ---------------------------------------------------------------------------------------------

def write_report(out: Path, report: dict) -> None:
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(tmp, out / "report.json")
    (out / "report.txt").write_text(summary_text(report))


def summary_text(report: dict) -> str:
    entries = report["inputs"]
    ok = sum(e["status"] == "ok" for e in entries)
    lines = [f"Headcast batch {report['started']}: {ok} of {len(entries)} inputs done, "
             f"{len(entries) - ok} failed ({report.get('seconds', 0):.1f} s)",
             f"Blender {report['blender']}; backend {report['backend_python']}", ""]
    for e in entries:
        total = e["timings"].get("total_s", 0.0)
        if e["status"] == "ok":
            lines.append(f"OK     {e['name']}: {e['kind']}, {e['valid_frames']}/{e['frames']} frames with a face, "
                         f"model {e['model']} ({e['licence']}), mode {e['mode'] or '-'}, {total:.1f} s")
            lines += [f"         {kind:8s} {path}" for kind, path in e["outputs"].items()]
        else:
            err = e["error"] or {}
            lines.append(f"ERROR  {e['name']}: {e['kind']}: [{err.get('code')}] {err.get('message')}"
                         + (f" (file: {err['file']})" if err.get("file") and err["file"] not in err.get("message", "")
                            else ""))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    inside_blender = "bpy" in sys.modules
    args = build_parser().parse_args(script_arguments(sys.argv if argv is None else argv, inside_blender))
    formats = export_formats(args.export)
    if args.focal_mm < 0 or args.sensor_mm <= 0:
        raise SystemExit("batch.py: --focal-mm must be 0 (solve it) or a focal length in mm, --sensor-mm above 0")
    if args.identity is not None:
        args.identity = args.identity.expanduser().resolve()
        if not args.identity.is_file():
            raise SystemExit(f"batch.py: --identity: no such result file: {args.identity}")
    if not inside_blender:
        # keep Blender's user config, extensions and caches of a plain-Python run out of the user's home
        os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp(prefix="headcast_batch_blender_")
    import bpy

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = {"headcast_batch": 1, "started": datetime.datetime.now().isoformat(timespec="seconds"),
              "blender": bpy.app.version_string, "platform": platform.platform(), "backend_python": "",
              "backend": None, "exports": formats, "inputs": []}
    with AddonSession(bpy) as addon:
        report["backend_python"] = configure(addon, args, inside_blender)
        taken: set[str] = set()
        for raw in args.inputs:
            path = Path(raw).expanduser().resolve()
            stem = unique_stem(path, taken)
            print(f"[batch] {path}", flush=True)
            entry = run_input(bpy, addon, path, stem, out, args, formats)
            report["inputs"].append(entry)
            info = addon.module("runtime").STATE.client.info
            report["backend"] = report["backend"] or (dict(info) if info else None)
            report["seconds"] = round(time.perf_counter() - started, 3)
            write_report(out, report)
            status = "ok" if entry["status"] == "ok" else f"error: {entry['error']['message']}"
            print(f"[batch] {stem}: {status}", flush=True)
    report["seconds"] = round(time.perf_counter() - started, 3)
    write_report(out, report)
    print(summary_text(report), end="", flush=True)
    failed = any(e["status"] != "ok" for e in report["inputs"])
    return EXIT_SOME_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    inside = "bpy" in sys.modules and bool(getattr(sys.modules["bpy"].app, "binary_path", ""))
    try:
        code = main()
    except SystemExit as exc:  # argparse and usage errors
        code = exc.code if isinstance(exc.code, int) else EXIT_USAGE
        if exc.code and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    if inside:
        sys.exit(code)
    os._exit(code)  # bpy module mode: skip interpreter teardown (bpy 4.5 can hang there)
