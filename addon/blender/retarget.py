# SPDX-License-Identifier: GPL-3.0-or-later
"""Retargeting an imported Headcast performance onto a character's shape keys and bones.

Shape keys: each matched target key gets the source key's value per frame (times the mapping's
scale), either baked into keyframes on the target's action or live through a driver (re-importing
a newer result then updates the character too).

Bones (baked): each role's bone on the character turns, in the world, exactly as the source turns
relative to its rest pose and to the camera:

    W(f) = C_ref C(f)^-1 M(f) P_b(f) R_b^-1

with ``M`` the source armature object's world rotation, ``P_b`` the source bone's pose and ``R_b``
its rest (armature space), ``C`` the camera's world rotation and ``C_ref`` the fixed camera of a
frontal head (so a rig imported with the head moving and one with the camera moving retarget
alike). ``head`` takes the source's ``neck`` bone (which carries the root and the head transform),
``jaw`` and the eyes their own. On the character, the bone's armature-space pose becomes
``A^-1 W A R_t`` (``A`` its armature object's rotation, ``R_t`` its rest) and its local rotation
follows from its parent's pose; bones in between that are not mapped are taken at rest.
Only rotations are retargeted: the character stays where it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import bpy
import numpy as np
from mathutils import Matrix, Quaternion

from ..retarget_map import BONE_ROLES, guess_bones, match_shape_keys
from .animation import channelbag_of, key_linear, new_driver, shape_key_path
from .conventions import AXIS_MAP
from .importer import RIG_PROP

SOURCE_BONE = {"head": "neck", "jaw": "jaw", "eye_left": "eye_left", "eye_right": "eye_right"}


class RetargetError(ValueError):
    pass


@dataclass
class RetargetReport:
    n_frames: int
    n_shape_keys: int  # target shape keys driven, over all target meshes
    unmatched: list = field(default_factory=list)  # rig shape keys that drive nothing
    bones: dict = field(default_factory=dict)  # role -> target bone
    targets: list = field(default_factory=list)  # names of the meshes whose keys were driven


def _rotation(matrix) -> np.ndarray:
    """The rotation part of a 4x4 or 3x3 Blender matrix (scale removed)."""
    m = np.array(matrix, dtype=np.float64)[:3, :3]
    return m / np.linalg.norm(m, axis=0, keepdims=True)


def shape_key_names(obj) -> list[str]:
    """A mesh object's shape keys except its reference (Basis) key."""
    key = obj.data.shape_keys if obj is not None and obj.type == "MESH" else None
    if key is None:
        return []
    return [kb.name for kb in key.key_blocks if kb != key.reference_key]


def target_meshes(target) -> list:
    """The meshes with shape keys a target stands for: itself, or an armature's child meshes."""
    if target.type == "MESH":
        return [target] if shape_key_names(target) else []
    if target.type == "ARMATURE":
        return [c for c in target.children_recursive if c.type == "MESH" and shape_key_names(c)]
    return []


def _write_curve(bag, data_path: str, index: int, frames: np.ndarray, values: np.ndarray, group: str) -> None:
    """Replace the F-curve ``data_path[index]`` in ``bag`` with linear keys ``values`` at ``frames``."""
    old = bag.fcurves.find(data_path, index=index)
    if old is not None:
        bag.fcurves.remove(old)
    fc = bag.fcurves.new(data_path, index=index)
    fc.group = bag.groups.get(group) or bag.groups.new(group)
    key_linear(fc, frames, values)


def _source_key_values(key, names: list[str], frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame values of the source's shape keys, from their F-curves (or their constant value)."""
    bag = channelbag_of(key)
    out = {}
    for name in names:
        fc = bag.fcurves.find(shape_key_path(name)) if bag is not None else None
        if fc is None:
            out[name] = np.full(len(frames), key.key_blocks[name].value)
        else:
            out[name] = np.array([fc.evaluate(float(f)) for f in frames])
    return out


def _source_bone_deltas(scene, roles: dict, frames: np.ndarray, wanted: list[str]) -> dict[str, np.ndarray]:
    """``W(f)`` ``[n, 3, 3]`` per wanted role (see the module docstring), sampled frame by frame."""
    arm, cam, mesh = roles["ARMATURE"], roles.get("CAMERA"), roles.get("MESH")
    rest = {role: _rotation(arm.data.bones[SOURCE_BONE[role]].matrix_local) for role in wanted}
    out = {role: np.empty((len(frames), 3, 3)) for role in wanted}
    keep_frame, keep_hidden = scene.frame_current, (mesh.hide_viewport if mesh is not None else None)
    try:
        if mesh is not None:  # the deformed head is not needed here; skipping it makes sampling ~10x faster
            mesh.hide_viewport = True
        for i, f in enumerate(frames):
            scene.frame_set(int(f))
            relative = AXIS_MAP @ _rotation(cam.matrix_world).T if cam is not None else np.eye(3)
            world = relative @ _rotation(arm.matrix_world)
            for role in wanted:
                pose = _rotation(arm.pose.bones[SOURCE_BONE[role]].matrix)
                out[role][i] = world @ pose @ rest[role].T
    finally:
        if mesh is not None:
            mesh.hide_viewport = keep_hidden
        scene.frame_set(keep_frame)
    return out


def _target_local_rotations(target, bone_map: dict[str, str], deltas: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each mapped target bone's local (basis) rotation ``[n, 3, 3]`` reproducing the world deltas."""
    bones = target.data.bones
    a = _rotation(target.matrix_world)
    mapped = {bone: role for role, bone in bone_map.items()}
    n = len(next(iter(deltas.values())))
    cache: dict[str, np.ndarray] = {}

    def unposed(bone) -> np.ndarray:
        """Armature-space rotation [n, 3, 3] of ``bone`` with its own basis at rest, under its parent's pose."""
        r = _rotation(bone.matrix_local)
        if bone.parent is None:
            return np.broadcast_to(r, (n, 3, 3))
        return pose(bone.parent.name) @ (_rotation(bone.parent.matrix_local).T @ r)

    def pose(name: str) -> np.ndarray:
        """Armature-space pose rotation [n, 3, 3] of any target bone (unmapped ones: basis at rest)."""
        if name not in cache:
            if name in mapped:
                r = _rotation(bones[name].matrix_local)
                cache[name] = np.einsum("ab,nbc,cd,de->nae", a.T, deltas[mapped[name]], a, r)
            else:
                cache[name] = unposed(bones[name])
        return cache[name]

    return {name: np.swapaxes(unposed(bones[name]), 1, 2) @ pose(name) for name in mapped}


def _key_bone_rotations(target, local: dict[str, np.ndarray], frames: np.ndarray) -> None:
    """Key the rotations in each pose bone's own rotation mode, continuous from frame to frame."""
    bag = channelbag_of(target, create_action=f"{target.name}_retarget")
    for name, mats in local.items():
        pb = target.pose.bones[name]
        path = f'pose.bones["{bpy.utils.escape_identifier(name)}"]'
        mode = pb.rotation_mode
        if mode == "QUATERNION" or mode == "AXIS_ANGLE":
            quats = np.array([list(Matrix(m.tolist()).to_quaternion()) for m in mats])
            for i in range(1, len(quats)):  # same hemisphere as the previous key: no flips in between
                if np.dot(quats[i], quats[i - 1]) < 0:
                    quats[i] = -quats[i]
            if mode == "QUATERNION":
                values, channel = quats, "rotation_quaternion"
            else:
                values = np.array([[q.angle, *q.axis] for q in (Quaternion(v) for v in quats)])
                channel = "rotation_axis_angle"
        else:
            values, prev = [], None
            for m in mats:
                e = Matrix(m.tolist()).to_euler(mode, prev) if prev is not None else Matrix(m.tolist()).to_euler(mode)
                values.append(list(e))
                prev = e
            values, channel = np.array(values), "rotation_euler"
        for index in range(values.shape[1]):
            _write_curve(bag, f"{path}.{channel}", index, frames, values[:, index], name)


def _drive_key(target_key, target_name: str, source_key, source_name: str, scale: float) -> None:
    driver = new_driver(target_key, shape_key_path(target_name)).driver
    var = driver.variables.new()
    var.name = "v"
    var.type = "SINGLE_PROP"
    var.targets[0].id_type = "KEY"
    var.targets[0].id = source_key
    var.targets[0].data_path = shape_key_path(source_name)
    driver.type = "SCRIPTED" if scale != 1.0 else "AVERAGE"
    if scale != 1.0:
        driver.expression = f"v * {scale!r}"


def retarget(context, roles: dict, target, mode: str = "BAKE", mapping: dict | None = None,
             bones: bool = True) -> RetargetReport:
    """Drive ``target`` (a mesh with shape keys, or an armature and its child meshes) from a rig.

    ``roles``: the rig's objects by role (:func:`.importer.find_rig`). ``mode``: ``BAKE`` (keys)
    or ``DRIVERS`` (live shape keys; bones are always baked). ``mapping``: a parsed mapping file
    (:func:`..retarget_map.read_mapping_file`). Everything is checked before anything is written.
    """
    if mode not in ("BAKE", "DRIVERS"):
        raise RetargetError(f"mode must be BAKE or DRIVERS, got {mode!r}")
    source_mesh = roles.get("MESH")
    if source_mesh is None or source_mesh.data.shape_keys is None or "ARMATURE" not in roles:
        raise RetargetError("the source is not a complete Headcast rig (head mesh with shape keys and armature)")
    if target is None:
        raise RetargetError("choose a target: a mesh with shape keys, or an armature")
    if target.get(RIG_PROP) is not None or target in roles.values():
        raise RetargetError(f"{target.name!r} is part of a Headcast rig; choose the character to drive")
    mapping = mapping or {}
    meshes = target_meshes(target)
    source_names = shape_key_names(source_mesh)
    maps = [(m, match_shape_keys(source_names, shape_key_names(m), mapping.get("shape_keys"))) for m in meshes]
    bone_map = {}
    if bones and target.type == "ARMATURE":
        bone_map = guess_bones([b.name for b in target.data.bones], mapping.get("bones"))
    if not any(mp.shape_keys for _, mp in maps) and not bone_map:
        names = ", ".join(source_names[:5])
        raise RetargetError(f"nothing on {target.name!r} matches the rig: no shape key named like the rig's "
                            f"({names}, ...) and no head, jaw or eye bone; use a mapping file")

    scene = context.scene
    key_action = source_mesh.data.shape_keys
    frames = _frame_range(key_action, roles["ARMATURE"], scene)
    source_values = _source_key_values(key_action, sorted({p.source for _, mp in maps for p in mp.shape_keys}), frames)
    deltas = _source_bone_deltas(scene, roles, frames, list(bone_map)) if bone_map else {}
    local = _target_local_rotations(target, bone_map, deltas) if bone_map else {}

    for mesh_obj, mp in maps:
        key = mesh_obj.data.shape_keys
        if not mp.shape_keys:
            continue
        if mode == "DRIVERS":
            for pair in mp.shape_keys:
                _drive_key(key, pair.target, key_action, pair.source, pair.scale)
            continue
        bag = channelbag_of(key, create_action=f"{mesh_obj.name}_retarget")
        for pair in mp.shape_keys:
            path = shape_key_path(pair.target)
            if key.animation_data is not None and key.animation_data.drivers.find(path) is not None:
                key.driver_remove(path)  # a driver from an earlier live retarget would hide the keys
            _write_curve(bag, path, 0, frames, source_values[pair.source] * pair.scale, "Headcast")
    if local:
        _key_bone_rotations(target, local, frames)
    driving = {p.source for _, mp in maps for p in mp.shape_keys}
    return RetargetReport(n_frames=len(frames), n_shape_keys=sum(len(mp.shape_keys) for _, mp in maps),
                          unmatched=[n for n in source_names if n not in driving], bones=bone_map,
                          targets=[m.name for m, mp in maps if mp.shape_keys])


def _frame_range(key, armature, scene) -> np.ndarray:
    """The frames the rig is keyed on (its actions' range), else the scene's range."""
    lo, hi = None, None
    for id_data in (key, armature):
        ad = id_data.animation_data
        if ad is not None and ad.action is not None:
            a, b = ad.action.frame_range
            lo, hi = (a, b) if lo is None else (min(lo, a), max(hi, b))
    if lo is None:
        lo, hi = scene.frame_start, scene.frame_end
    return np.arange(int(round(lo)), int(round(hi)) + 1, dtype=np.float64)


__all__ = ["BONE_ROLES", "RetargetError", "RetargetReport", "retarget", "target_meshes", "shape_key_names"]
