# SPDX-License-Identifier: GPL-3.0-or-later
"""Retargeting an imported performance onto a character, in real Blender.

The character is built here: an armature turned, moved and scaled in the world, bones with
other rolls and rotation modes than the rig's (an unmapped neck between spine and head), and a
child mesh whose shape keys spell the ARKit names differently. Checks: the character's keys equal
the rig's per frame; each mapped bone turns in the world exactly as the rig's bone does
(measured on Blender's evaluated pose matrices); a rig imported with the camera moving
retargets to the same animation as one imported with the head moving; live drivers follow.
"""
import json
import math
import sys

import numpy as np
import pytest

from blender_checks import MODULE

TARGET_KEYS = ("JawOpen", "blendShape1.eyeBlink_L", "eyeBlink_R", "Smile_L", "unrelated")


def _rot(matrix) -> np.ndarray:
    m = np.array(matrix, dtype=np.float64)[:3, :3]
    return m / np.linalg.norm(m, axis=0, keepdims=True)


def _character(bpy, name="Character"):
    """Armature (spine > neck > head > jaw, eye.L, eye.R) and a child mesh with shape keys."""
    from mathutils import Euler

    arm = bpy.data.armatures.new(name)
    obj = bpy.data.objects.new(name, arm)
    bpy.context.scene.collection.objects.link(obj)
    obj.location = (2.0, -1.0, 0.5)
    obj.rotation_euler = Euler((0.0, 0.0, math.radians(70.0)))
    obj.scale = (1.5, 1.5, 1.5)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    spec = {"spine": (None, (0, 0, 0), (0, 0, 1), 0.0), "neck": ("spine", (0, 0, 1), (0, 0.05, 1.3), 0.4),
            "head": ("neck", (0, 0.05, 1.3), (0, 0.05, 1.7), 0.9), "jaw": ("head", (0, -0.02, 1.4), (0, -0.2, 1.3), 0.3),
            "eye.L": ("head", (0.05, -0.1, 1.5), (0.05, -0.2, 1.5), -0.5),
            "eye.R": ("head", (-0.05, -0.1, 1.5), (-0.05, -0.2, 1.5), 0.2)}
    for bone_name, (parent, head, tail, roll) in spec.items():
        b = arm.edit_bones.new(bone_name)
        b.head, b.tail, b.roll = head, tail, roll
        if parent:
            b.parent = arm.edit_bones[parent]
    bpy.ops.object.mode_set(mode="OBJECT")
    obj.pose.bones["jaw"].rotation_mode = "ZXY"  # an Euler bone among quaternion ones
    mesh_data = bpy.data.meshes.new(f"{name}_face")
    mesh_data.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    face = bpy.data.objects.new(f"{name}_face", mesh_data)
    bpy.context.scene.collection.objects.link(face)
    face.parent = obj
    face.shape_key_add(name="Basis")
    for key in TARGET_KEYS:
        face.shape_key_add(name=key).value = 0.0  # (new keys start at 1.0 in Blender 5.0, 0.0 in 4.5)
    return obj, face


def _import(bpy, fixtures_dir, animate):
    assert bpy.ops.headcast.import_result("EXEC_DEFAULT", filepath=str(fixtures_dir / "arkit.headcast.npz"),
                                          animate=animate) == {"FINISHED"}
    return sys.modules[MODULE + ".blender.importer"].find_rig("arkit")


def _retarget(bpy, coll, target, **kw):
    return bpy.ops.headcast.retarget("EXEC_DEFAULT", rig=coll.name, target=target.name, **kw)


def _sample(bpy, scene, obj, face, frames):
    keys = face.data.shape_keys.key_blocks
    out = {"keys": [], "bones": []}
    for f in frames:
        scene.frame_set(f)
        out["keys"].append([keys[k].value for k in TARGET_KEYS])
        a = _rot(obj.matrix_world)
        out["bones"].append({b: a @ _rot(obj.pose.bones[b].matrix) @ _rot(obj.data.bones[b].matrix_local).T @ a.T
                             for b in ("head", "jaw", "eye.L", "eye.R", "neck")})
    return out


def test_bake_matches_the_rig_keys_and_world_bone_turns(bpy, scene, fixtures_dir, tmp_path):
    coll, roles = _import(bpy, fixtures_dir, "HEAD")
    obj, face = _character(bpy)
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"shape_keys": {"mouthSmileLeft": ["Smile_L", 0.5]}}))
    assert _retarget(bpy, coll, obj, mode="BAKE", mapping_file=str(mapping)) == {"FINISHED"}

    frames = list(range(scene.frame_start, scene.frame_end + 1))
    got = _sample(bpy, scene, obj, face, frames)
    src_keys = roles["MESH"].data.shape_keys.key_blocks
    arm = roles["ARMATURE"]
    worst_key, worst_bone = 0.0, 0.0
    for i, f in enumerate(frames):
        scene.frame_set(f)
        want = [src_keys["jawOpen"].value, src_keys["eyeBlinkLeft"].value, src_keys["eyeBlinkRight"].value,
                0.5 * src_keys["mouthSmileLeft"].value, 0.0]
        worst_key = max(worst_key, np.abs(np.array(got["keys"][i]) - want).max())
        m = _rot(arm.matrix_world)  # the head moves with the armature object; the camera stays
        for role, source_bone in (("head", "neck"), ("jaw", "jaw"), ("eye.L", "eye_left"), ("eye.R", "eye_right")):
            turn = m @ _rot(arm.pose.bones[source_bone].matrix) @ _rot(arm.data.bones[source_bone].matrix_local).T
            worst_bone = max(worst_bone, np.abs(got["bones"][i][role] - turn).max())
        # the unmapped neck stays at rest
        assert np.abs(got["bones"][i]["neck"] - np.eye(3)).max() < 1e-6
    assert worst_key < 1e-5, worst_key
    assert worst_bone < 1e-4, worst_bone
    # the performance really moves the head and opens the jaw (the check above is not vacuous)
    angles = [math.degrees(math.acos(np.clip((np.trace(b["head"]) - 1) / 2, -1, 1))) for b in got["bones"]]
    assert max(angles) > 2.0 and np.ptp([k[0] for k in got["keys"]]) > 0.05
    assert obj.pose.bones["jaw"].rotation_mode == "ZXY"
    bag_paths = {fc.data_path for fc in obj.animation_data.action.layers[0].strips[0].channelbag(
        obj.animation_data.action_slot).fcurves}
    assert 'pose.bones["jaw"].rotation_euler' in bag_paths and 'pose.bones["head"].rotation_quaternion' in bag_paths

    # running it again replaces the keys instead of stacking curves
    n_curves = len(obj.animation_data.action.layers[0].strips[0].channelbag(obj.animation_data.action_slot).fcurves)
    assert _retarget(bpy, coll, obj, mode="BAKE", mapping_file=str(mapping)) == {"FINISHED"}
    assert len(obj.animation_data.action.layers[0].strips[0].channelbag(
        obj.animation_data.action_slot).fcurves) == n_curves


def test_head_and_camera_imports_retarget_alike(bpy, scene, fixtures_dir):
    results = []
    for animate in ("HEAD", "CAMERA"):
        bpy.ops.wm.read_homefile(use_empty=True)
        scene = bpy.context.scene
        coll, _ = _import(bpy, fixtures_dir, animate)
        obj, face = _character(bpy)
        assert _retarget(bpy, coll, obj) == {"FINISHED"}
        results.append(_sample(bpy, scene, obj, face, list(range(scene.frame_start, scene.frame_end + 1))))
    for a, b in zip(*(r["bones"] for r in results)):
        for role in a:
            np.testing.assert_allclose(a[role], b[role], atol=1e-4)
    np.testing.assert_allclose(results[0]["keys"], results[1]["keys"], atol=1e-6)


def test_live_drivers_follow_the_rig(bpy, scene, fixtures_dir):
    coll, roles = _import(bpy, fixtures_dir, "HEAD")
    _, face = _character(bpy, "Mesh only")
    face.parent = None
    assert _retarget(bpy, coll, face, mode="DRIVERS", bones=False) == {"FINISHED"}
    src = roles["MESH"].data.shape_keys.key_blocks
    dst = face.data.shape_keys.key_blocks
    for f in (scene.frame_start, scene.frame_start + 3, scene.frame_end):
        scene.frame_set(f)
        assert dst["JawOpen"].value == pytest.approx(src["jawOpen"].value, abs=1e-6)
        assert dst["eyeBlink_R"].value == pytest.approx(src["eyeBlinkRight"].value, abs=1e-6)
    assert face.data.shape_keys.animation_data.drivers.find('key_blocks["JawOpen"].value') is not None


def test_bad_targets_fail_clearly_and_change_nothing(bpy, scene, fixtures_dir, tmp_path):
    coll, roles = _import(bpy, fixtures_dir, "HEAD")
    plain = bpy.data.objects.new("Plain", bpy.data.meshes.new("Plain"))
    scene.collection.objects.link(plain)
    n_actions = len(bpy.data.actions)
    with pytest.raises(RuntimeError, match="nothing on 'Plain' matches"):
        _retarget(bpy, coll, plain)
    with pytest.raises(RuntimeError, match="part of a Headcast rig"):
        _retarget(bpy, coll, roles["MESH"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _, face = _character(bpy)
    with pytest.raises(RuntimeError, match="bad.json: not valid JSON"):
        _retarget(bpy, coll, face, mapping_file=str(bad))
    assert len(bpy.data.actions) == n_actions and face.data.shape_keys.animation_data is None
