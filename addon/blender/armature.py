# SPDX-License-Identifier: GPL-3.0-or-later
"""The skeleton: one bone per joint at the neutral rest joints, pose keys, and corrective drivers.

Bones lie along Blender's axes so that their local frames are the model frame up to a signed
axis permutation: the root and neck point up (+Z; local axes = FLAME's axes exactly), the jaw
and eyes point forward (-Y, the gaze direction, local X = the subject's left). Rotating a bone
about its local X then nods/opens it, as in FLAME.
"""
from __future__ import annotations

import bpy
import numpy as np

from .. import result_file as rf
from .animation import ActionBuilder, new_driver, shape_key_path
from .conventions import bone_pose_channels, corrective_driver_expression, to_blender

UP = ((0.0, 0.0, 1.0), (0.0, -1.0, 0.0))  # bone direction, direction its Z axis aligns to
FORWARD = ((0.0, -1.0, 0.0), (0.0, 0.0, -1.0))
BONE_LAYOUT = {"jaw": (FORWARD, 0.5), "eye_left": (FORWARD, 0.15), "eye_right": (FORWARD, 0.15),
               "neck": (UP, 0.5), "global": (UP, 0.35)}  # name -> (direction, length / head height)


def _head_height(result: rf.HeadcastResult) -> float:
    v = result["v_template"]
    return float(v[:, 1].max() - v[:, 1].min()) or 0.2


def build_bones(context, host: bpy.types.Object, result: rf.HeadcastResult) -> np.ndarray:
    """Create the bones of ``host``'s armature in edit mode; return their rest rotations ``[J, 3, 3]``.

    ``host`` must be linked to the view layer. The returned rotations are read back from
    Blender (``bone.matrix_local``), so the pose maths uses exactly what Blender built.
    """
    arm = host.data
    heads = to_blender(result["joints_rest"])
    height = _head_height(result)
    names = result.joint_names
    view_layer = context.view_layer
    view_layer.objects.active = host
    host.hide_set(False)
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        edit_bones = []
        for j, name in enumerate(names):
            (direction, z_axis), length = BONE_LAYOUT.get(name, (UP, 0.2))
            bone = arm.edit_bones.new(name)
            bone.head = heads[j]
            bone.tail = heads[j] + length * height * np.asarray(direction)
            bone.align_roll(z_axis)
            bone.use_connect = False
            bone.use_deform = True
            parent = int(result["parents"][j])
            if parent >= 0:
                bone.parent = edit_bones[parent]
            edit_bones.append(bone)
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
    return np.array([np.array(arm.bones[name].matrix_local.to_3x3()) for name in names])


def key_pose(builder: ActionBuilder, result: rf.HeadcastResult, frames: np.ndarray,
             rest_rotations: np.ndarray) -> dict[str, np.ndarray]:
    """Key every bone's quaternion and location on the rig's action.

    Locations are keyed because FLAME's rest joints follow expression (see
    :func:`~.conventions.bone_pose_channels`); without them the mesh would be off by the
    joints' drift times the joint rotation.
    """
    quats, locs = bone_pose_channels(result["joint_rotations"].astype(np.float64), rf.rest_joints(result),
                                     result["joints_rest"].astype(np.float64), rest_rotations)
    for j, name in enumerate(result.joint_names):
        path = f'pose.bones["{bpy.utils.escape_identifier(name)}"]'
        builder.static.append((f"{path}.rotation_mode", "QUATERNION"))
        builder.channel(f"{path}.rotation_quaternion", frames, quats[:, j], group=name)
        builder.channel(f"{path}.location", frames, locs[:, j], group=name)
    return {"quaternions": quats, "locations": locs}


def add_corrective_drivers(key: bpy.types.Key, armature: bpy.types.Object, specs, rest_rotations: np.ndarray,
                           joint_names: list[str]) -> int:
    """Drive each pose-corrective key from its bone so that hand posing deforms like FLAME.

    Each driver reads the bone's local rotation (after constraints) as a quaternion and
    evaluates one entry of ``R - I``. Drivers win over the keys written for the same values;
    the keys remain for exporters that do not evaluate drivers.
    """
    made = 0
    for spec in specs:
        if spec.kind != "corrective":
            continue
        if spec.scale != 1.0:
            raise ValueError(f"corrective {spec.name!r} is scaled; drivers assume raw R - I values")
        driver = new_driver(key, shape_key_path(spec.name)).driver
        driver.type = "SCRIPTED"
        bone = joint_names[spec.joint]
        for component in "wxyz":
            var = driver.variables.new()
            var.name = component
            var.type = "TRANSFORMS"
            target = var.targets[0]
            target.id = armature
            target.bone_target = bone
            target.transform_type = f"ROT_{component.upper()}"
            target.rotation_mode = "QUATERNION"
            target.transform_space = "LOCAL_SPACE"
        driver.expression = corrective_driver_expression(rest_rotations[spec.joint], *spec.entry)
        made += 1
    return made
