# SPDX-License-Identifier: GPL-3.0-or-later
"""End-to-end wall time and peak memory of the pipeline, split by stage.

    python scripts/bench_pipeline.py [--frames 300] [--model synthetic] [--write]

Runs ``headcast reconstruct`` on the astronaut photo and ``headcast track`` on a clip rendered
from the synthetic model, each in a fresh process (so peak RSS is the job's own), with the
default fitting settings, and appends a "## Pipeline" section to BENCHMARKS.md with --write.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))
sys.path.insert(0, str(ROOT / "scripts"))
from bench_common import BENCHMARKS, cpu_name, write_section  # noqa: E402


def run_job(args: list[str], env: dict) -> tuple[dict, float, float]:
    """Run a headcast command with --json; return its result event, wall time and peak RSS (MiB)."""
    cmd = [sys.executable, "-c", "import resource, runpy, sys; sys.argv = ['headcast'] + sys.argv[1:];"
           "rc = 0\ntry:\n    runpy.run_module('headcast.cli', run_name='__main__')\nexcept SystemExit as e:\n    rc = e.code or 0\n"
           "print('PEAK_RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)",
           *args, "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    result = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")][-1]
    peak = next(float(line.split()[1]) / 1024 for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS"))
    return result, wall, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--model", default="synthetic")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    import skimage.data
    import torch

    from headcast.flame.synthetic import build_synthetic_model
    from headcast.synthetic_footage import render_synthetic_clip, write_image, write_video

    work = Path(tempfile.mkdtemp(prefix="headcast_bench_"))
    # the OpenMP wait policy is the headcast command's own default unless the environment sets one
    env = dict(os.environ, PYTHONPATH=str(ROOT / "backend"), HEADCAST_CONFIG=str(work / "none.toml"))
    photo = write_image(skimage.data.astronaut(), work / "astronaut.png")
    clip = render_synthetic_clip(build_synthetic_model(0), n_frames=args.frames, seed=7)
    video = write_video(clip.frames, work / "clip.mp4", fps=25.0)

    rows = []
    res, wall, peak = run_job(["reconstruct", str(photo), "-o", str(work / "photo.headcast.npz"), "--model", args.model],
                              env)
    rows.append(("photo (astronaut, 512²)", 1, wall, peak, res["timings"], res["mode"]))
    res, wall, peak = run_job(["track", str(video), "-o", str(work / "clip.headcast.npz"), "--model", args.model], env)
    rows.append((f"clip ({args.frames} frames, 640x480)", args.frames, wall, peak, res["timings"], res["mode"]))

    lines = ["## Pipeline\n",
             f"`scripts/bench_pipeline.py`, {datetime.date.today()}, {cpu_name()}, "
             f"{os.cpu_count()} cores, torch {torch.__version__}, model `{args.model}`, default fit settings, "
             f"mode {rows[0][5]} (no network weights: the CPU networks cost ~11 s per 512² forward, see Priors). "
             "Each job in a fresh process; stage times from the result's timings.\n",
             "| job | wall | per frame | peak RSS | stages (s) |", "|---|---:|---:|---:|---|"]
    for name, n, wall, peak, timings, _mode in rows:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
        lines.append(f"| {name} | {wall:.1f} s | {wall / n:.2f} s | {peak:.0f} MiB | {stages} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_section(BENCHMARKS, "## Pipeline", text)

if __name__ == "__main__":
    main()
