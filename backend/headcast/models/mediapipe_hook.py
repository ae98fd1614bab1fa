# SPDX-License-Identifier: GPL-3.0-or-later
"""The hook that gives a built head model its MediaPipe-478 embedding.

The embedding is made by render-and-detect (:func:`headcast.priors.build_mediapipe_embedding`);
when that module or MediaPipe itself is not installed the pack is built without it, and the
recipe records why, so the pack is rebuilt once the embedding can be made.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..flame.headmodel import HeadModel

log = logging.getLogger(__name__)
MISSING = "module missing"
DISABLED = "disabled"  # built without it on request


def attach_mediapipe_embedding(model: HeadModel, cache_dir: Path | None, refresh: bool = False) -> str:
    """Store the render-and-detect MediaPipe-478 embedding in ``model.mediapipe``; return the status.

    "built", or a reason it is missing: "module missing: ..." (the priors package or MediaPipe
    is not installed; the pack is rebuilt once it is) or "failed: ...".
    """
    try:
        from ..priors.embedding import build_mediapipe_embedding
    except ImportError as exc:
        return f"{MISSING}: {exc}"
    try:
        model.mediapipe = build_mediapipe_embedding(model, cache_dir=cache_dir, cache_name=model.name,
                                                    refresh=refresh)
    except ImportError as exc:
        return f"{MISSING}: {exc}"
    except (RuntimeError, ValueError, OSError) as exc:
        log.warning("open head: no MediaPipe embedding (%s)", exc)
        return f"failed: {exc}"
    return "built"


def embedding_possible() -> bool:
    try:
        from ..priors.embedding import build_mediapipe_embedding  # noqa: F401
        import mediapipe  # noqa: F401
    except ImportError:
        return False
    return True
