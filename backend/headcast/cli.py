# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``headcast`` command line.

Exit codes: 0 success, 1 unexpected failure, 2 bad usage or bad input file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headcast", description="Photo and video to an animated FLAME head rig.")
    parser.add_argument("--version", action="version", version=f"headcast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth-model", help="write the synthetic FLAME-format model and its assets")
    p.add_argument("outdir", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--npz", action="store_true", help="also write Headcast's single-file head_model.npz")
    p.set_defaults(func=_cmd_synth_model)

    p = sub.add_parser("pose-mesh", help="write an OBJ of a model at neutral or random parameters")
    p.add_argument("model", type=Path, help="model file or folder (FLAME pkl/npz with assets beside it)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=None, help="random identity and expression (omit for neutral)")
    p.add_argument("--jaw", type=float, default=0.0, help="jaw opening in radians")
    p.set_defaults(func=_cmd_pose_mesh)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .flame.headmodel import ModelFileError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ModelFileError as exc:
        print(f"headcast: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
