#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""The GLS step after a single-image fit (``headcast.fit.gls_step``), by the fraction taken.

For each scene of ``scripts/bench_fit.py``'s realistic single-image row it fits the image
as the benchmark does but without the step (``gls_step_fraction = 0``), computes the step
once at that fit and reports the posed error of the fit moved by fractions of it (the
fitting takes ``FitConfig.gls_step_fraction``), with the step's own time. A tool for choosing
the fraction and the step's settings on more scenes than the benchmark's five.

    .venv/bin/python scripts/bench_fit_gls.py --seeds 0-19 [--override '{"gls_bias_sigma_px": 8}']
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))
sys.path.insert(0, str(ROOT / "scripts"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-4", help="scenes a-b (inclusive)")
    ap.add_argument("--fractions", default="0.3,0.5,0.7,1.0", help="fractions of the step to report")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--override", default="", help="JSON of FitConfig fields to change (the step's too)")
    args = ap.parse_args(argv)

    import bench_fit
    from headcast.fit import fit_images
    from headcast.fit import gls_step as G
    from headcast.fit import metrics as M
    from headcast.fit import synthetic_cues as sc

    bench = bench_fit.Bench(argparse.Namespace(threads=args.threads, override="", steps=500, size=256))
    cfg = bench.cfg.with_(**(json.loads(args.override) if args.override else {}))
    lo, hi = (int(v) for v in args.seeds.split("-"))
    fractions = [float(v) for v in args.fractions.split(",")]
    rows = []
    print("| scene | fit mm | " + " | ".join(f"{f:g} step" for f in fractions) + " | step s |")
    print("|---:|---:|" + "---:|" * (len(fractions) + 1))
    for seed in range(lo, hi + 1):
        truth, frames, rng = bench.scene(seed)
        cues = sc.corrupt(frames[0], rng, sc.REALISTIC)
        fit = fit_images(bench.model, [cues], cfg.with_(gls_step_fraction=0.0), image_size=bench.size)
        t0 = time.perf_counter()
        lin = G.LinearisedFit(bench.model, fit, cues, cfg)
        delta, _ = G.gls_delta(lin)
        sec = time.perf_counter() - t0
        errs = [float(M.posed_error_mm(bench.model, fit, truth)[0])]
        errs += [float(M.posed_error_mm(bench.model, G.moved_result(fit, lin.layout, f * delta), truth)[0])
                 for f in fractions]
        rows.append(errs)
        print(f"| {seed} | " + " | ".join(f"{e:.3f}" for e in errs) + f" | {sec:.1f} |", flush=True)
    print("| mean | " + " | ".join(f"{e:.3f}" for e in np.mean(rows, 0)) + " | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
