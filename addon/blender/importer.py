# SPDX-License-Identifier: GPL-3.0-or-later
"""Build (or update) a Headcast rig in the scene from a result file, all or nothing.

Order of work: the file is read and validated before anything is created; every new data-block
is tracked so that a failure anywhere removes them and restores the scene settings; new data
is built completely first and only then swapped into an existing rig (re-import), so a failed
re-import leaves the old rig as it was.

The collection holds three objects: the armature (carries the head transform and the bones),
the head mesh (parented to it, Armature modifier, shape keys) and the camera.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import mathutils
import numpy as np

from .. import result_file as rf
from .animation import KEY_BREAKDOWN, KEY_KEYFRAME, ActionBuilder, shape_key_path
from .armature import add_corrective_drivers, build_bones, key_pose
from .camera import (Footage, apply_scene_settings, build_camera_data, frame_numbers, key_object_transform,
                     load_footage, load_frame_photos, resolve_footage, set_background,
                     set_photo_backgrounds)
from .conventions import fixed_camera_transform, head_object_transforms, moving_camera_transforms
from .mesh import add_shape_keys, add_vertex_groups, build_material, build_mesh, shape_key_specs

RIG_PROP = "headcast_rig"  # on the collection, objects, materials and actions a rig owns
ROLE_PROP = "headcast_role"  # on objects: MESH, ARMATURE or CAMERA
ANIMATE_HEAD = "HEAD"  # the camera stays fixed, the head moves (default)
ANIMATE_CAMERA = "CAMERA"  # the head stays at the origin, the camera moves


@dataclass
class ImportOptions:
    animate: str = ANIMATE_HEAD
    drive_correctives: bool = True  # pose correctives follow the bones (hand posing looks right)
    footage_texture: bool = False  # project the footage onto the head's material from the camera
    footage_path: str = ""  # use this footage instead of the path recorded in the result
    update_existing: bool = True  # re-import updates a rig of the same name in place
    set_scene: bool = True  # fps, frame range, render size, active camera and clip


@dataclass
class ImportReport:
    collection: object
    mesh_object: object
    armature_object: object
    camera_object: object
    updated: bool
    n_frames: int
    n_fcurves: int
    seconds: float
    warnings: list[str] = field(default_factory=list)


class Transaction:
    """Tracks what an import creates and the scene state it changes, to undo both on failure."""

    SCENE_ATTRS = ("frame_start", "frame_end", "frame_current", "camera", "active_clip")
    RENDER_ATTRS = ("fps", "fps_base", "resolution_x", "resolution_y", "resolution_percentage",
                    "pixel_aspect_x", "pixel_aspect_y")

    def __init__(self, context) -> None:
        self.context = context
        self.scene = context.scene
        self.created: list = []
        self.scene_state = {a: getattr(self.scene, a) for a in self.SCENE_ATTRS}
        self.render_state = {a: getattr(self.scene.render, a) for a in self.RENDER_ATTRS}
        self.active = context.view_layer.objects.active
        # images and clips are loaded with check_existing: only new ones belong to this import
        self._before = {i.as_pointer() for i in itertools.chain(bpy.data.images, bpy.data.movieclips)}

    def track(self, id_block):
        if id_block is not None and id_block.as_pointer() not in self._before:
            self.created.append(id_block)
        return id_block

    def rollback(self) -> None:
        if self.context.mode != "OBJECT":
            bpy.ops.object.mode_set(mode="OBJECT")
        alive = []
        for id_block in self.created:
            try:
                id_block.name  # raises ReferenceError once removed
            except ReferenceError:
                continue
            alive.append(id_block)
        bpy.data.batch_remove(alive)
        for attr, value in self.render_state.items():
            setattr(self.scene.render, attr, value)
        for attr, value in self.scene_state.items():
            try:
                setattr(self.scene, attr, value)
            except ReferenceError:  # the old camera or clip was removed meanwhile
                pass
        try:
            self.context.view_layer.objects.active = self.active
        except ReferenceError:
            pass


def find_rig(rig_name: str):
    """The collection (and its objects by role) of an imported rig called ``rig_name``, or None."""
    for coll in bpy.data.collections:
        if coll.get(RIG_PROP) == rig_name:
            return coll, {obj.get(ROLE_PROP): obj for obj in coll.objects if obj.get(ROLE_PROP)}
    return None


def import_result(context, filepath, options: ImportOptions | None = None) -> ImportReport:
    """Import (or update) the rig of a result file; raise :class:`result_file.ResultFileError` for bad files.

    Any failure removes everything this call created and restores the scene settings.
    """
    start = time.perf_counter()
    options = options or ImportOptions()
    if options.animate not in (ANIMATE_HEAD, ANIMATE_CAMERA):
        raise ValueError(f"animate must be {ANIMATE_HEAD!r} or {ANIMATE_CAMERA!r}, got {options.animate!r}")
    result = rf.load_result(filepath, posed_vertices=False)
    specs = shape_key_specs(result)
    if context.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")
    tx = Transaction(context)
    try:
        report = _build(context, result, specs, options, tx)
    except BaseException:
        tx.rollback()
        raise
    report.seconds = time.perf_counter() - start
    return report


def _tag(id_block, rig: str):
    id_block[RIG_PROP] = rig
    return id_block


def _build(context, result: rf.HeadcastResult, specs, options: ImportOptions, tx: Transaction) -> ImportReport:
    rig = result.rig_name
    frames = frame_numbers(result).astype(np.float64)
    # Frames without a usable face are keyed like the others but shown as breakdown keys.
    valid = result["valid"].astype(bool)
    key_types = np.where(valid, KEY_KEYFRAME, KEY_BREAKDOWN)
    warnings: list[str] = []
    found = find_rig(rig) if options.update_existing else None
    coll, roles = found if found else (None, {})
    if coll is None:
        coll = _tag(tx.track(bpy.data.collections.new(f"Headcast {rig}")), rig)
        context.scene.collection.children.link(coll)
    elif coll not in _scene_collections(context.scene):  # the user unlinked it: bring it back
        context.scene.collection.children.link(coll)

    footage = None
    # several photos: each frame shows its own photo (unless the user points at other footage)
    photos, warning = (None, "") if options.footage_path else load_frame_photos(result, tx.track)
    if photos is None:
        footage_path, warning = resolve_footage(result, options.footage_path)
        if footage_path is not None:
            footage, warning = load_footage(footage_path, options.footage_texture, tx.track)
    elif photos[0] is not None:
        footage = Footage(path=Path(photos[0].filepath), image=photos[0])  # the texture shows the first photo
    if warning:
        warnings.append(warning)

    arm_obj, arm_data, rest_rotations = _build_armature(context, result, coll, roles.get("ARMATURE"), tx)
    head_rot, head_loc, cam_rot, cam_loc = _placements(result, options.animate, valid)
    rig_anim = ActionBuilder(f"{rig}_rig", "OBJECT", arm_obj.name, key_types)
    _tag(tx.track(rig_anim.action), rig)
    key_pose(rig_anim, result, frames, rest_rotations)
    key_object_transform(rig_anim, frames, head_rot, head_loc)

    mesh, shapes_anim = _build_head_mesh(result, specs, arm_obj, rest_rotations, frames, key_types, tx)
    if options.drive_correctives:
        add_corrective_drivers(mesh.shape_keys, arm_obj, specs, rest_rotations, result.joint_names)
    texture = footage.image if (footage is not None and options.footage_texture) else None
    mesh.materials.append(_tag(tx.track(build_material(f"{rig}_skin", texture, int(frames[-1]))), rig))

    lens_anim = ActionBuilder(f"{rig}_lens", "CAMERA", f"{rig}_camera", key_types)
    _tag(tx.track(lens_anim.action), rig)
    cam_data, settings = build_camera_data(f"{rig}_camera", result, lens_anim, frames)
    _tag(tx.track(cam_data), rig)
    if settings["aspect_error"] > 1e-6:
        warnings.append(f"fx/fy varies over the clip by {settings['aspect_error']:.2g}; "
                        "Blender's pixel aspect is one value, the median is used")
    if photos is not None:
        set_photo_backgrounds(cam_data, photos, lens_anim, frames)
    elif footage is not None:
        set_background(cam_data, footage)
    lens_anim.apply(cam_data)
    cam_anim = ActionBuilder(f"{rig}_camera", "OBJECT", f"{rig}_camera", key_types)
    _tag(tx.track(cam_anim.action), rig)
    key_object_transform(cam_anim, frames, cam_rot, cam_loc)

    # The rig's existing objects get the new data swapped in below; missing ones are created.
    mesh_obj, cam_obj = roles.get("MESH"), roles.get("CAMERA")
    if mesh_obj is None:
        mesh_obj = _new_object(mesh, f"{rig}_head", "MESH", rig, coll, tx)
    if cam_obj is None:
        cam_obj = _new_object(cam_data, f"{rig}_camera", "CAMERA", rig, coll, tx)
    if options.set_scene:
        apply_scene_settings(context.scene, result, settings, cam_obj, footage)

    # --- commit: swap the new data and actions into the objects; reverted if anything fails -------
    commit = _Commit(rig)
    try:
        commit.swap(arm_obj, arm_data, rig_anim)
        commit.swap(mesh_obj, mesh, None)
        commit.swap(cam_obj, cam_data, cam_anim)
        _configure_mesh_object(mesh_obj, arm_obj, commit)
    except BaseException:
        commit.revert()
        raise
    # --- past the point of no return: only bookkeeping and removal of replaced data --------------
    builders = (rig_anim, shapes_anim, lens_anim, cam_anim)
    n_fcurves = sum(b.n_fcurves for b in builders)
    _record_provenance(coll, result, frames[~valid])
    try:
        commit.remove_replaced()
        for builder in builders:
            if builder.n_fcurves == 0:
                bpy.data.actions.remove(builder.action)
    except Exception as exc:  # defensive: this can only leave unused data behind
        warnings.append(f"could not remove replaced data: {exc}")
    context.view_layer.objects.active = arm_obj
    return ImportReport(collection=coll, mesh_object=mesh_obj, armature_object=arm_obj, camera_object=cam_obj,
                        updated=bool(roles), n_frames=result.n_frames, n_fcurves=n_fcurves, seconds=0.0,
                        warnings=warnings)


def _build_armature(context, result: rf.HeadcastResult, coll, existing, tx: Transaction):
    """New armature data with its bones; the rig's armature object (new, or the existing one).

    Bones need edit mode on an object in the view layer: a new rig builds on its own object,
    a re-import on a temporary one beside the existing rig (swapped in at the commit).
    """
    rig = result.rig_name
    arm_data = _tag(tx.track(bpy.data.armatures.new(f"{rig}_rig")), rig)
    arm_data.display_type = "STICK"
    if existing is None:
        arm_obj = host = _new_object(arm_data, f"{rig}_rig", "ARMATURE", rig, coll, tx)
    else:
        arm_obj = existing
        host = tx.track(bpy.data.objects.new(f"{rig}_rig_build", arm_data))
        coll.objects.link(host)
    rest_rotations = build_bones(context, host, result)
    if host is not arm_obj:
        bpy.data.objects.remove(host)
    return arm_obj, arm_data, rest_rotations


def _placements(result: rf.HeadcastResult, animate: str, valid: np.ndarray):
    """World rotation/location per frame of the head (armature object) and of the camera.

    The reference point, the mean head translation of the valid frames, puts the head near the
    world origin when the camera stays fixed.
    """
    rot, trans = result["head_rotation"].astype(np.float64), result["head_translation"].astype(np.float64)
    n = result.n_frames
    if animate == ANIMATE_HEAD:
        reference = trans[valid if valid.any() else slice(None)].mean(axis=0)
        head_rot, head_loc = head_object_transforms(rot, trans, reference)
        cam_rot, cam_loc = (np.broadcast_to(x, (n,) + x.shape) for x in fixed_camera_transform(reference))
    else:
        head_rot, head_loc = np.broadcast_to(np.eye(3), (n, 3, 3)), np.zeros((n, 3))
        cam_rot, cam_loc = moving_camera_transforms(rot, trans)
    return head_rot, head_loc, cam_rot, cam_loc


def _build_head_mesh(result: rf.HeadcastResult, specs, arm_obj, rest_rotations, frames, key_types, tx: Transaction):
    """Mesh data with vertex groups, shape keys and their keys (built on a scratch object, never linked)."""
    rig = result.rig_name
    mesh = _tag(tx.track(build_mesh(f"{rig}_head", result)), rig)
    scratch = tx.track(bpy.data.objects.new(f"{rig}_head_build", mesh))
    add_vertex_groups(scratch, result)
    add_shape_keys(scratch, result, specs)
    bpy.data.objects.remove(scratch)
    key = mesh.shape_keys
    shapes_anim = ActionBuilder(f"{rig}_shapes", "KEY", key.name, key_types)
    _tag(tx.track(shapes_anim.action), rig)
    for spec in specs:
        shapes_anim.channel(shape_key_path(spec.name), frames, spec.keyed_values)
    shapes_anim.apply(key)
    return mesh, shapes_anim


def _record_provenance(coll, result: rf.HeadcastResult, invalid_frames: np.ndarray) -> None:
    """Where the rig came from, on its collection (shown under Collection > Custom Properties)."""
    coll["headcast_result"] = result.path
    coll["headcast_licence"] = str(result.metadata["licence"])
    coll["headcast_model"] = str(result.metadata["model_name"])
    coll["headcast_version"] = str(result.metadata["headcast_version"])
    coll["headcast_invalid_frames"] = [int(f) for f in invalid_frames]


_OBJECT_STATE = ("parent", "matrix_parent_inverse", "location", "rotation_mode", "rotation_quaternion",
                 "rotation_euler", "scale")


class _Commit:
    """Swaps data and animation into objects, remembering enough to put the old ones back."""

    def __init__(self, rig: str) -> None:
        self.rig = rig
        self.saved: list[tuple] = []  # (object, old data, old action, old slot, object state)
        self.added_modifiers: list[tuple] = []
        self.replaced: list = []

    def save(self, obj) -> None:
        if any(entry[0] == obj for entry in self.saved):
            return
        ad = obj.animation_data
        state = {a: _copy_value(getattr(obj, a)) for a in _OBJECT_STATE}
        self.saved.append((obj, obj.data, ad.action if ad else None, ad.action_slot if ad else None, state))

    def swap(self, obj, data, builder: ActionBuilder | None) -> None:
        self.save(obj)
        old = obj.data
        if old is not data:
            self._keep_user_materials(old, data)
            obj.data = data
            self.replaced.append(old)
        if builder is not None:
            old_action = obj.animation_data.action if obj.animation_data else None
            builder.apply(obj)
            if old_action is not None and old_action != builder.action:
                self.replaced.append(old_action)

    def _keep_user_materials(self, old, data) -> None:
        """A user who swapped Headcast's material for their own keeps theirs on re-import."""
        mats = list(getattr(old, "materials", []))
        if isinstance(data, bpy.types.Mesh) and mats and mats[0] is not None and mats[0].get(RIG_PROP) is None:
            self.replaced.append(data.materials[0])
            data.materials[0] = mats[0]

    def revert(self) -> None:
        for obj, data, action, slot, state in reversed(self.saved):
            if obj.data is not data:
                obj.data = data
            if action is not None:
                obj.animation_data.action = action
                obj.animation_data.action_slot = slot
            elif obj.animation_data is not None:
                obj.animation_data.action = None
            for attr, value in state.items():
                setattr(obj, attr, value)
        for obj, modifier in self.added_modifiers:
            obj.modifiers.remove(modifier)

    def remove_replaced(self) -> None:
        """Drop the replaced data (and the actions and materials only it used) if nothing uses it now."""
        kinds = ((bpy.types.Mesh, bpy.data.meshes), (bpy.types.Armature, bpy.data.armatures),
                 (bpy.types.Camera, bpy.data.cameras))
        later = []
        for block in self.replaced:
            if block.users != 0:
                continue
            for kind, collection in kinds:
                if isinstance(block, kind):
                    key = getattr(block, "shape_keys", None)
                    if key is not None and key.animation_data is not None:
                        later.append(key.animation_data.action)
                    if block.animation_data is not None:
                        later.append(block.animation_data.action)
                    later.extend(getattr(block, "materials", []))
                    collection.remove(block)
                    break
            else:
                later.append(block)
        for block in later:
            if block is not None and block.users == 0 and block.get(RIG_PROP) == self.rig:
                (bpy.data.actions if isinstance(block, bpy.types.Action) else bpy.data.materials).remove(block)


def _copy_value(value):
    """Detach mathutils values (vectors, matrices) from the object; never copy data-blocks."""
    return value.copy() if isinstance(value, (mathutils.Vector, mathutils.Matrix, mathutils.Quaternion,
                                              mathutils.Euler)) else value


def _configure_mesh_object(mesh_obj, arm_obj, commit: _Commit) -> None:
    """Parent the head to the rig with an identity offset and deform it with an Armature modifier."""
    commit.save(mesh_obj)
    mesh_obj.parent = arm_obj
    mesh_obj.matrix_parent_inverse.identity()
    mesh_obj.location = (0.0, 0.0, 0.0)
    mesh_obj.rotation_mode = "QUATERNION"
    mesh_obj.rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
    mesh_obj.scale = (1.0, 1.0, 1.0)
    modifier = next((m for m in mesh_obj.modifiers if m.type == "ARMATURE"), None)
    if modifier is None:
        modifier = mesh_obj.modifiers.new("Armature", "ARMATURE")
        commit.added_modifiers.append((mesh_obj, modifier))
    modifier.object = arm_obj
    modifier.use_vertex_groups, modifier.use_bone_envelopes = True, False
    modifier.use_deform_preserve_volume = False


def _scene_collections(scene):
    def walk(coll):
        for child in coll.children:
            yield child
            yield from walk(child)
    return list(walk(scene.collection))


def _new_object(data, name: str, role: str, rig: str, coll, tx: Transaction):
    obj = _tag(tx.track(bpy.data.objects.new(name, data)), rig)
    obj[ROLE_PROP] = role
    coll.objects.link(obj)
    return obj
