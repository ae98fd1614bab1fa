#!/usr/bin/env python
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark of headcast.priors: MediaPipe per frame, and the Pixel3DMM networks at 512².

* detection + 478 landmarks per frame (FaceMesh static mode on a photo, tracking mode on a
  clip), person segmentation per crop, and the whole ``prepare_footage`` per frame of a clip;
* the render-and-detect MediaPipe embedding of the synthetic head;
* one forward of the official-size networks (DINO ViT-B/16 backbone, decoder E=256, 6 blocks,
  8 heads; uv: 2 channels, normals: 3) on a 512x512 crop, with and without flip TTA, on CPU
  and, when available, on CUDA in float32 and float16 autocast. Random weights: the speed
  does not depend on them, and Headcast ships no weights.

Peak memory: CPU = peak resident set size during the stage (``VmHWM`` after resetting it),
CUDA = ``torch.cuda.max_memory_allocated``. Results go to stdout and to the "## Priors"
section of BENCHMARKS.md (other sections are kept).

    python scripts/bench_priors.py [--threads 2] [--repeats 3] [--no-write]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))
sys.path.insert(0, str(ROOT / "scripts"))
from bench_common import cpu_name, timed, write_section  # noqa: E402

from headcast.priors import PriorNetConfig, PriorNetwork, PriorPredictor, prepare_footage  # noqa: E402
from headcast.priors.mediapipe_faces import FaceLandmarker, ForegroundSegmenter  # noqa: E402

SECTION = "## Priors"


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fmt_ms(times: list[float]) -> str:
    ms = [t * 1000 for t in times]
    return f"{statistics.median(ms):.1f}" + (f" ({min(ms):.1f}–{max(ms):.1f})" if len(ms) > 1 else "")


def synthetic_clip(n: int = 20):
    """The synthetic head sliding across a 640x480 frame (the render-and-detect render)."""
    from headcast.flame.synthetic import build_synthetic_model
    from headcast.priors.embedding import render_template, template_camera

    model = build_synthetic_model(0)
    render = render_template(model, template_camera(model, 0.0, 0.0, 320)).image
    frames = []
    for i in range(n):
        frame = np.full((480, 640, 3), 77, np.uint8)
        x, y = 100 + 3 * i, 60 + i
        frame[y:y + 320, x:x + 320] = render
        frames.append(frame)
    return model, frames


def bench_mediapipe(repeats: int) -> list[tuple[str, str, str]]:
    from skimage.data import astronaut

    photo = np.ascontiguousarray(astronaut())
    rows = []
    with FaceLandmarker() as lm:
        reset_peak_rss()
        t = timed(lambda: lm.detect(photo), max(repeats * 10, 20), warmup=1)
        rows.append(("detection + 478 landmarks, static mode (astronaut, 512²)", fmt_ms(t), f"{peak_rss_mb():.0f}"))
    model, frames = synthetic_clip()
    with FaceLandmarker(tracking=True) as lm:
        for f in frames[:3]:
            lm.track(f)
        reset_peak_rss()
        t0 = time.perf_counter()
        for f in frames:
            lm.track(f)
        per = (time.perf_counter() - t0) / len(frames)
        rows.append(("478 landmarks, tracking mode (640x480 clip), per frame", f"{per * 1000:.1f}", f"{peak_rss_mb():.0f}"))
    seg = ForegroundSegmenter()
    crop = np.ascontiguousarray(np.asarray(__import__("cv2").resize(photo, (512, 512))))
    t = timed(lambda: seg(crop), max(repeats * 10, 20), warmup=1)
    seg.close()
    rows.append(("person segmentation (512² crop)", fmt_ms(t), "–"))
    reset_peak_rss()
    t0 = time.perf_counter()
    prepared = prepare_footage(frames)
    per = (time.perf_counter() - t0) / len(frames)
    assert prepared.found.all()
    rows.append((f"prepare_footage per frame ({len(frames)}-frame 640x480 clip: landmarks, static crop, "
                 "512² crops, segmentation, masks)", f"{per * 1000:.1f}", f"{peak_rss_mb():.0f}"))
    from headcast.priors.embedding import build_mediapipe_embedding

    reset_peak_rss()
    t0 = time.perf_counter()
    build_mediapipe_embedding(model, None)
    rows.append(("MediaPipe embedding of the synthetic head (7 renders, detect, back-project)",
                 f"{(time.perf_counter() - t0) * 1000:.0f}", f"{peak_rss_mb():.0f}"))
    return rows


def official_network(kind: str, device: str) -> PriorNetwork:
    outputs = (("uv_map", 2),) if kind == "uv_map" else (("normals", 3),)
    torch.manual_seed(0)
    return PriorNetwork(PriorNetConfig(outputs=outputs, num_heads=8), backbone="headcast").to(device).eval()


def bench_networks(device: str, repeats: int, half: bool = False, batch: int = 1) -> list[tuple[str, str, str]]:
    rows = []
    crops = np.random.default_rng(0).integers(0, 256, (batch, 512, 512, 3), dtype=np.uint8)
    for kind in ("uv_map", "normals"):
        net = official_network(kind, device)
        for tta in (False, True):
            predictor = PriorPredictor(**{("uv_network" if kind == "uv_map" else "normals_network"): net},
                                       tta=tta, half=half, batch_size=batch)
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()

                def run():
                    predictor.predict(crops)
                    torch.cuda.synchronize()
            else:
                reset_peak_rss()

                def run():
                    predictor.predict(crops)
            t = timed(run, repeats, warmup=1)
            mem = (f"{torch.cuda.max_memory_allocated() / 2**20:.0f}" if device == "cuda" else f"{peak_rss_mb():.0f}")
            label = (f"{'uv' if kind == 'uv_map' else 'normals'} network, {'with' if tta else 'without'} flip TTA, "
                     f"{device}{' fp16' if half else ''}, batch {batch}")
            per_image = [x / batch for x in t]
            rows.append((label + " (per image)", fmt_ms(per_image), mem))
        del net
    return rows


def render_section(rows, machine: str, repeats: int) -> str:
    lines = [SECTION, "", f"`scripts/bench_priors.py`, {machine}", "",
             f"Median (min–max) of {repeats}+ runs after a warm-up; peak memory = peak RSS of the process during "
             "the stage on CPU, `max_memory_allocated` on CUDA. Network rows time the whole `PriorPredictor.predict` "
             "(uint8 crop in, decoded maps out) of the official-size networks (DINO ViT-B/16 at 512², 32×32 tokens, "
             "decoder E=256 × 6 blocks, 8 heads) with random weights.", "",
             "| stage | ms | peak memory (MiB) |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-networks", action="store_true", help="MediaPipe stages only")
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    ap.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import mediapipe

    machine = (f"{datetime.date.today().isoformat()}, {cpu_name()}, {os.cpu_count()} cores, torch "
               f"{torch.__version__} ({args.threads} threads), mediapipe {mediapipe.__version__}, "
               f"Python {platform.python_version()}")
    if torch.cuda.is_available():
        machine += f", CUDA GPU {torch.cuda.get_device_name(0)}"
    else:
        machine += ", no CUDA GPU (CUDA rows not measured)"
    rows = bench_mediapipe(args.repeats)
    for row in rows:
        print(" | ".join(row), flush=True)
    if not args.skip_networks:
        net_rows = bench_networks("cpu", args.repeats)
        if torch.cuda.is_available():
            net_rows += bench_networks("cuda", max(args.repeats, 10))
            net_rows += bench_networks("cuda", max(args.repeats, 10), half=True)
            net_rows += bench_networks("cuda", max(args.repeats, 10), half=True, batch=8)
        for row in net_rows:
            print(" | ".join(row), flush=True)
        rows += net_rows
    section = render_section(rows, machine, args.repeats)
    print(section)
    if not args.no_write:
        write_section(args.output, SECTION, section)
        print(f"wrote the '{SECTION}' section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
