# SPDX-License-Identifier: GPL-3.0-or-later
"""MakeHuman's macro sliders (gender, age, muscle, weight, height, proportions, race) as target weights.

MakeHuman shapes a whole human with *macro targets*: files in ``targets/macrodetails`` named
after a combination of anchor values, e.g. ``universal-female-young-averagemuscle-maxweight``.
Each slider in [0, 1] is split into weights of its anchors by piecewise-linear "hat"
interpolation (``macrodetails/macro.json`` lists the anchors of every slider), and a target's
weight is the product of the weights of the anchors in its name:

=========== ======================================================================
slider      anchors (slider value)
=========== ======================================================================
gender      female (0), male (1)
age         baby (0, 1 year), child (0.1875, 11 years), young (0.5, 25), old (1, 90)
muscle      minmuscle (0), averagemuscle (0.5), maxmuscle (1)
weight      minweight (0), averageweight (0.5), maxweight (1)
height      minheight (0), none (0.5), maxheight (1)
proportions uncommonproportions (0), none (0.5), idealproportions (1)
race        african, asian, caucasian: each weight is its slider / the sum of the three
=========== ======================================================================

The four families used for the head (``macro.json``'s "combinations"; the breast family does
not reach the head) give 348 targets:

* ``universal-{gender}-{age}-{muscle}-{weight}`` (72)
* ``{race}-{gender}-{age}`` (24)
* ``height/{gender}-{age}-{muscle}-{weight}-{minheight|maxheight}`` (144)
* ``proportions/{gender}-{age}-{muscle}-{weight}-{uncommon|ideal}proportions`` (108; no baby files)

A shape is ``base + sum_t weight_t(sliders) * target_t``. Within one cell of the anchor grid the
weights are multilinear in the sliders, so every reachable weight vector is a convex
combination of the weight vectors at the grid corners (:func:`corner_sliders`).
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from .anny_data import AnnyDataError

GENDERS = ("female", "male")
AGES = ("baby", "child", "young", "old")
MUSCLES = ("minmuscle", "averagemuscle", "maxmuscle")
WEIGHTS = ("minweight", "averageweight", "maxweight")
HEIGHTS = ("minheight", "maxheight")
PROPORTIONS = ("uncommonproportions", "idealproportions")
RACES = ("african", "asian", "caucasian")
SLIDERS = ("gender", "age", "muscle", "weight", "height", "proportions") + RACES
# slider value of every anchor; None marks the neutral middle of height and proportions,
# where neither target applies
ANCHORS = {
    "gender": ((0.0, "female"), (1.0, "male")),
    "age": ((0.0, "baby"), (0.1875, "child"), (0.5, "young"), (1.0, "old")),
    "muscle": ((0.0, "minmuscle"), (0.5, "averagemuscle"), (1.0, "maxmuscle")),
    "weight": ((0.0, "minweight"), (0.5, "averageweight"), (1.0, "maxweight")),
    "height": ((0.0, "minheight"), (0.5, None), (1.0, "maxheight")),
    "proportions": ((0.0, "uncommonproportions"), (0.5, None), (1.0, "idealproportions")),
}
DEFAULT_SLIDERS = {"gender": 0.5, "age": 0.5, "muscle": 0.5, "weight": 0.5, "height": 0.5, "proportions": 0.5,
                   "african": 1 / 3, "asian": 1 / 3, "caucasian": 1 / 3}
# what macro.json must say for the table above to hold (checked when a pack is built)
EXPECTED_COMBINATIONS = {
    "racegenderage": ["race", "gender", "age"],
    "genderagemuscleweight": ["gender", "age", "muscle", "weight"],
    "genderagemuscleweightproportions": ["gender", "age", "muscle", "weight", "proportions"],
    "genderagemuscleweightheight": ["gender", "age", "muscle", "weight", "height"],
}


def macro_targets() -> list[tuple[str, tuple[str, ...]]]:
    """The 348 head-shaping macro targets: (path under ``macrodetails`` without ``.target.gz``, anchors)."""
    out = []
    for g, a, m, w in itertools.product(GENDERS, AGES, MUSCLES, WEIGHTS):
        out.append((f"universal-{g}-{a}-{m}-{w}", (g, a, m, w)))
    for r, g, a in itertools.product(RACES, GENDERS, AGES):
        out.append((f"{r}-{g}-{a}", (r, g, a)))
    for g, a, m, w, h in itertools.product(GENDERS, AGES, MUSCLES, WEIGHTS, HEIGHTS):
        out.append((f"height/{g}-{a}-{m}-{w}-{h}", (g, a, m, w, h)))
    for g, a, m, w, p in itertools.product(GENDERS, AGES[1:], MUSCLES, WEIGHTS, PROPORTIONS):
        out.append((f"proportions/{g}-{a}-{m}-{w}-{p}", (g, a, m, w, p)))
    return out


def check_macro_json(macro: dict, path: Path) -> None:
    """Fail clearly if ``macro.json`` does not describe the sliders the way this module assumes."""
    targets = macro.get("macrotargets")
    combos = macro.get("combinations")
    if not isinstance(targets, dict) or not isinstance(combos, dict):
        raise AnnyDataError(path, "expected 'macrotargets' and 'combinations' objects")
    for name, want in EXPECTED_COMBINATIONS.items():
        if combos.get(name) != want:
            raise AnnyDataError(path, f"combination {name!r} is {combos.get(name)!r}, expected {want}")
    for slider, anchors in ANCHORS.items():
        parts = targets.get(slider, {}).get("parts")
        if not parts:
            raise AnnyDataError(path, f"slider {slider!r} has no 'parts'")
        names = [n for _, n in anchors]
        found = [parts[0]["low"]] + [p["high"] for p in parts]
        found = [n if n else None for n in found]
        if found != names:
            raise AnnyDataError(path, f"slider {slider!r} has anchors {found}, expected {names}")


def _hat_weights(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation weights of ``x`` (N,) at ``positions`` (K,) -> (N, K); x clamped."""
    x = np.clip(np.asarray(x, dtype=np.float64), positions[0], positions[-1])
    seg = np.clip(np.searchsorted(positions, x, side="right") - 1, 0, len(positions) - 2)
    t = (x - positions[seg]) / (positions[seg + 1] - positions[seg])
    out = np.zeros((x.shape[0], len(positions)))
    rows = np.arange(x.shape[0])
    out[rows, seg] = 1.0 - t
    out[rows, seg + 1] += t
    return out


def anchor_weights(sliders: dict) -> dict[str, np.ndarray]:
    """Weight (N,) of every anchor name for a batch of slider settings (dict of (N,) arrays or floats)."""
    full = {k: np.atleast_1d(np.asarray(sliders.get(k, DEFAULT_SLIDERS[k]), dtype=np.float64)) for k in SLIDERS}
    unknown = set(sliders) - set(SLIDERS)
    if unknown:
        raise ValueError(f"unknown macro sliders {sorted(unknown)}; known: {', '.join(SLIDERS)}")
    n = max(v.shape[0] for v in full.values())
    full = {k: np.broadcast_to(v, (n,)) for k, v in full.items()}
    out = {}
    for slider, anchors in ANCHORS.items():
        pos = np.array([p for p, _ in anchors])
        w = _hat_weights(full[slider], pos)
        for k, (_, name) in enumerate(anchors):
            if name is not None:
                out[name] = w[:, k]
    race = np.stack([full[r] for r in RACES], axis=1)
    if (race < 0).any():
        raise ValueError("race sliders must be >= 0")
    total = race.sum(axis=1, keepdims=True)
    race = np.where(total > 0, race / np.where(total > 0, total, 1.0), 1.0 / 3.0)
    for k, r in enumerate(RACES):
        out[r] = race[:, k]
    return out


def macro_target_weights(sliders: dict) -> np.ndarray:
    """Weights (N, 348) of :func:`macro_targets` for a batch of slider settings."""
    aw = anchor_weights(sliders)
    cols = [np.prod([aw[a] for a in anchors], axis=0) for _, anchors in macro_targets()]
    return np.stack(cols, axis=1)


def corner_sliders() -> dict[str, np.ndarray]:
    """Every corner of the anchor grid (race: each race alone), as a batch of 1944 slider settings."""
    grid = [[p for p, _ in ANCHORS[s]] for s in ("gender", "age", "muscle", "weight", "height", "proportions")]
    rows = []
    for combo in itertools.product(*grid):
        for r in range(3):
            rows.append(list(combo) + [1.0 if k == r else 0.0 for k in range(3)])
    arr = np.asarray(rows)
    return {name: arr[:, k] for k, name in enumerate(SLIDERS)}


def sample_sliders(rng: np.random.Generator, n: int, adult: bool = True) -> dict[str, np.ndarray]:
    """Random slider settings: all uniform in [0, 1] (age in [0.5, 1] = 25..90 years when ``adult``),
    race mixture uniform on the simplex."""
    out = {s: rng.uniform(0.0, 1.0, n) for s in ("gender", "muscle", "weight", "height", "proportions")}
    out["age"] = rng.uniform(0.5 if adult else 0.0, 1.0, n)
    race = rng.dirichlet(np.ones(3), n)
    for k, r in enumerate(RACES):
        out[r] = race[:, k]
    return out
