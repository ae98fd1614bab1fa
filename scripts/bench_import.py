#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark the Blender import: time and .blend size for 100, 1000 and 5000-frame results.

Writes synthetic-model results (smooth random parameters, 100 expressions, eyelids, 36
correctives), builds and installs the extension into the bpy wheel, imports each result with
the operator (median of ``--repeat`` runs, fresh empty scene each time), saves the .blend, and
measures playback evaluation speed (frame change + evaluated mesh) on 100 frames. Target:
1000 frames in under 3 s on 2 cores. Rewrites the "## Blender import" section of BENCHMARKS.md.

    .venv/bin/python scripts/bench_import.py [--frames 100 1000 5000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))
sys.path.insert(0, str(ROOT / "scripts"))
from bench_common import cpu_name, write_section  # noqa: E402
SECTION = "## Blender import"
TARGET_S = 3.0


def write_results(out: Path, counts: list[int]) -> dict[int, Path]:
    from headcast.flame.synthetic import build_synthetic_model
    from headcast.io import ClipInfo, write_result
    from headcast.io.synthetic import synthetic_frames, synthetic_shape

    model = build_synthetic_model(seed=0)
    shape = synthetic_shape(model, seed=1)
    paths = {}
    for n in counts:
        frames = synthetic_frames(model, n, seed=n)
        clip = ClipInfo(source_path="", image_size=(1280, 720), fps=30.0, rig_name=f"bench{n}")
        paths[n] = write_result(out / f"bench{n}.headcast.npz", model, shape, frames, clip, sidecar=False)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--playback-frames", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print the section, do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="headcast_bench_"))
    os.environ["BLENDER_USER_RESOURCES"] = str(work / "blender_user")
    try:
        import torch

        print("writing results ...", flush=True)
        paths = write_results(work, args.frames)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "build_extension.py"), "--out", str(work / "ext")],
                       check=True, capture_output=True)
        (zip_path,) = (work / "ext").glob("headcast-*.zip")

        import bpy  # noqa: I001 - bpy first: it puts addon_utils on the path
        import addon_utils

        assert bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default",
                                                        enable_on_install=True) == {"FINISHED"}
        rows = []
        try:
            for n, path in paths.items():
                times = []
                for _ in range(args.repeat):
                    bpy.ops.wm.read_homefile(use_empty=True)
                    start = time.perf_counter()
                    bpy.ops.headcast.import_result("EXEC_DEFAULT", filepath=str(path))
                    times.append(time.perf_counter() - start)
                blend = work / f"bench{n}.blend"
                start = time.perf_counter()
                bpy.ops.wm.save_as_mainfile(filepath=str(blend))
                save_s = time.perf_counter() - start
                blend_mb = blend.stat().st_size / 1e6
                bpy.ops.wm.save_as_mainfile(filepath=str(blend), compress=True)
                blend_z_mb = blend.stat().st_size / 1e6
                scene = bpy.context.scene
                mesh_obj = next(o for o in scene.objects if o.type == "MESH")
                m = min(args.playback_frames, n)
                start = time.perf_counter()
                for f in range(scene.frame_start, scene.frame_start + m):
                    scene.frame_set(f)
                    evaluated = mesh_obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
                    evaluated.to_mesh()
                    evaluated.to_mesh_clear()
                playback_fps = m / (time.perf_counter() - start)
                rows.append((n, statistics.median(times), min(times), path.stat().st_size / 1e6, blend_mb,
                             blend_z_mb, save_s, playback_fps))
                print(f"{n:5d} frames: import {statistics.median(times):.2f} s (min {min(times):.2f}), "
                      f".blend {blend_mb:.1f} MB ({blend_z_mb:.1f} MB compressed), playback {playback_fps:.0f} fps",
                      flush=True)
        finally:
            addon_utils.disable("bl_ext.user_default.headcast", default_set=True)
        bpy_version = bpy.app.version_string
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ok = {n: t < TARGET_S for n, t, *_ in rows}
    body = [SECTION, "",
            f"`scripts/bench_import.py` on {dt.date.today().isoformat()}: {cpu_name()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, bpy {bpy_version}, torch {torch.__version__} (writing the results only), "
            f"numpy {__import__('numpy').__version__}. Synthetic model (5117 vertices, 100 expressions, 2 eyelids, "
            f"36 correctives), 1280x720 at 30 fps, drivers on; import = `headcast.import_result` operator "
            f"(read + validate + build + keys), median of {args.repeat} runs in a fresh empty scene; "
            f"playback = frame change + evaluated mesh, first {args.playback_frames} frames. "
            f"Timings are noisy: other jobs share the machine.", "",
            "| frames | import (median) | import (min) | result file | .blend | .blend compressed | save | playback |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, med, best, npz_mb, blend_mb, blend_z_mb, save_s, fps in rows:
        body.append(f"| {n} | {med:.2f} s | {best:.2f} s | {npz_mb:.1f} MB | {blend_mb:.1f} MB | {blend_z_mb:.1f} MB | "
                    f"{save_s:.2f} s | {fps:.0f} fps |")
    if 1000 in ok:
        body += ["", f"Target (1000 frames under {TARGET_S:.0f} s): {'met' if ok[1000] else 'NOT met'}."]
    text = "\n".join(body) + "\n"
    print(text)
    if not args.no_write:
        write_section(args.out, SECTION, text)
        print(f"updated {args.out}")
    sys.stdout.flush()
    os._exit(0)  # bpy 4.5 can hang in a static destructor at interpreter exit


if __name__ == "__main__":
    sys.exit(main())
