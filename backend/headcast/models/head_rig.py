# SPDX-License-Identifier: GPL-3.0-or-later
"""FLAME's five joints from MakeHuman's CC0 rig: collapsed skinning weights and a joint regressor.

Bones are collapsed onto FLAME's joints (``global``, ``neck``, ``jaw``, ``eye_left``,
``eye_right``; parents -1, 0, 1, 1, 1):

* ``jaw``: the ``jaw`` bone and its subtree (lower lip, tongue);
* ``eye_left`` / ``eye_right``: ``eye.L`` / ``eye.R`` (``.L`` is the subject's left, +x);
* ``neck``: ``neck03``, ``head`` and every other face bone: the head turning on the upper neck;
* ``global``: everything else (``neck01``, ``neck02`` and the torso bones at the cut's edge).

Each joint sits at the head of its rig bone (``neck01``, ``neck03``, ``jaw``, ``eye.L``,
``eye.R``). The rig places bone heads from helper geometry that is not part of the head
(joint cubes, or pairs of far-apart vertices), so the joints are regressed from nearby pack
vertices instead: weights ``w`` that reproduce the rest position exactly (``sum w = 1``,
``w @ V = j``) and, in least squares, the rig's joint motion over sampled identities while
staying still under the ARKit expressions.
"""
from __future__ import annotations

import numpy as np

from ..flame.headmodel import FLAME_JOINT_NAMES
from .anny_data import AnnyDataError, BaseMesh
from .head_mesh import subtree, weight_share

JOINT_BONES = {"global": "neck01", "neck": "neck03", "jaw": "jaw", "eye_left": "eye.L", "eye_right": "eye.R"}
FLAME_PARENTS = np.array([-1, 0, 1, 1, 1], dtype=np.int64)
# regressor support: pack vertices within this distance of the rest joint (metres), and the
# ridge weight relative to the mean diagonal of the normal equations (chosen on held-out
# identities: sub-millimetre for the cube-defined joints at moderate weights). The neck
# joint's rig definition (the mean of a forehead vertex and a helper behind the shoulders)
# follows identity less smoothly, so it gets more damping.
REGRESSOR_SUPPORT = {"global": (0.13, 1e-5), "neck": (0.10, 1e-3), "jaw": (0.10, 1e-5),
                     "eye_left": (0.03, 1e-5), "eye_right": (0.03, 1e-5)}

def bone_head_vertices(rig: dict[str, dict], bone: str, mesh: BaseMesh, source: str = "rig.default.json") -> np.ndarray:
    """hm08 vertex ids whose mean is the bone's head, from the rig's own definition."""
    if bone not in rig:
        raise AnnyDataError(source, f"bone {bone!r} not found")
    head = rig[bone]["head"]
    strategy = head.get("strategy")
    if strategy == "CUBE":
        return mesh.group_vertices(head["cube_name"])
    if strategy == "MEAN":
        return np.asarray(head["vertex_indices"], dtype=np.int64)
    if strategy == "VERTEX":
        return np.asarray([head["vertex_index"]], dtype=np.int64)
    raise AnnyDataError(source, f"bone {bone!r} head has unknown strategy {strategy!r}")


def collapse_groups(rig: dict[str, dict]) -> dict[str, set[str]]:
    """Which rig bones drive each FLAME joint (see the module docstring)."""
    jaw = subtree(rig, "jaw")
    eyes = {"eye.L", "eye.R"}
    head = subtree(rig, "neck03") - jaw - eyes
    for bone in ("neck01", "neck02", "neck03", "head", "jaw", "eye.L", "eye.R"):
        if bone not in rig:
            raise AnnyDataError("rig.default.json", f"bone {bone!r} not found")
    if subtree(rig, "eye.L") != {"eye.L"} or subtree(rig, "eye.R") != {"eye.R"}:
        raise AnnyDataError("rig.default.json", "the eye bones are expected to be leaves")
    rest = set(rig) - jaw - eyes - head
    return {"global": rest, "neck": head, "jaw": jaw, "eye_left": {"eye.L"}, "eye_right": {"eye.R"}}


def collapsed_weights(rig: dict[str, dict], weights: dict, base_ids: np.ndarray, n_base: int) -> np.ndarray:
    """(V, 5) skinning weights: each vertex's normalised bone weights summed per FLAME joint."""
    groups = collapse_groups(rig)
    out = np.stack([weight_share(weights, groups[j], n_base)[base_ids] for j in FLAME_JOINT_NAMES], axis=1)
    sums = out.sum(axis=1)
    if np.abs(sums - 1.0).max() > 1e-9:
        bad = int(base_ids[np.argmax(np.abs(sums - 1.0))])
        raise AnnyDataError("weights.default.json", f"hm08 vertex {bad} of the head has no skinning weight")
    return out


def fit_joint_regressor(rest_vertices: np.ndarray, rest_joint: np.ndarray, vertex_deltas: np.ndarray,
                        joint_deltas: np.ndarray, still_deltas: np.ndarray, ridge: float) -> np.ndarray:
    """Regressor weights over the given (support) vertices: exact at rest, least squares on the samples.

    rest_vertices (S, 3); rest_joint (3,); vertex_deltas (N, S, 3) and joint_deltas (N, 3):
    sampled identity changes and the rig's joint motion for each; still_deltas (E, S, 3):
    changes under which the joint should not move (the expressions), weighted as much in
    total as the N samples. Minimises ``sum_n |w @ dV_n - dJ_n|^2 + (N/E) sum_e |w @ dE_e|^2
    + ridge' |w|^2`` subject to ``sum w = 1`` and ``w @ V = j`` (KKT system).
    """
    n_s = len(rest_vertices)
    still = np.sqrt(len(vertex_deltas) / max(len(still_deltas), 1)) * still_deltas
    a = np.concatenate([vertex_deltas.transpose(0, 2, 1).reshape(-1, n_s), still.transpose(0, 2, 1).reshape(-1, n_s)])
    b = np.concatenate([joint_deltas.reshape(-1), np.zeros(still.shape[0] * 3)])
    normal = a.T @ a
    normal += ridge * np.trace(normal) / n_s * np.eye(n_s)
    cons = np.vstack([np.ones(n_s), rest_vertices.T])  # (4, S)
    kkt = np.block([[normal, cons.T], [cons, np.zeros((4, 4))]])
    rhs = np.concatenate([a.T @ b, [1.0], rest_joint])
    return np.linalg.solve(kkt, rhs)[:n_s]


def regressor_support(joint: str, rest_vertices: np.ndarray, rest_joint: np.ndarray) -> tuple[np.ndarray, float]:
    """Candidate vertices (all pack vertices near the rest joint) and ridge weight of one joint's regressor."""
    radius, ridge = REGRESSOR_SUPPORT[joint]
    support = np.nonzero(np.linalg.norm(rest_vertices - rest_joint, axis=1) < radius)[0]
    if len(support) < 16:
        raise AnnyDataError("rig.default.json", f"too few head vertices near the {joint} joint to regress it")
    return support, ridge
