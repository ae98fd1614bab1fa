# SPDX-License-Identifier: GPL-3.0-or-later
"""Per-scene inputs of the panel (``scene.headcast``): the chosen photo and clip, results folder, import options."""
from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, PointerProperty, StringProperty

from .blender.importer import RIG_PROP


def _is_headcast_rig(_self, coll) -> bool:
    return coll.get(RIG_PROP) is not None and coll.get("headcast_result") is not None


def _is_character(_self, obj) -> bool:
    return obj.type in ("MESH", "ARMATURE") and obj.get(RIG_PROP) is None


class HeadcastSceneSettings(bpy.types.PropertyGroup):
    image_path: StringProperty(name="Photo", subtype="FILE_PATH",
                               description="Photo for Reconstruct Face when no image is shown in an Image editor")
    clip_path: StringProperty(name="Clip", subtype="FILE_PATH",
                              description="Video (or image folder) for Track Clip when the scene has no active clip")
    output_dir: StringProperty(name="Results", subtype="DIR_PATH",
                               description="Folder for result files (empty: //headcast/ next to a saved .blend, "
                                           "else next to the footage)")
    animate: EnumProperty(
        name="Animate",
        items=(("HEAD", "Head", "The camera stays fixed and the head moves"),
               ("CAMERA", "Camera", "The head stays at the origin and the camera moves")),
        default="HEAD")
    footage_texture: BoolProperty(name="Project Footage", default=False,
                                  description="Give the head a material showing the footage projected from the camera")
    # --- a known camera lens (else the focal length is solved) ---
    known_lens: BoolProperty(name="Known Lens", default=False,
                             description="The footage's lens is known: hold its focal length instead of solving it "
                                         "(one view tells the focal length only weakly)")
    lens_mm: FloatProperty(name="Focal Length", default=50.0, min=1.0, soft_max=300.0, unit="CAMERA",
                           description="Focal length of the lens the footage was shot with, in mm")
    sensor_mm: FloatProperty(name="Sensor Width", default=36.0, min=1.0, soft_max=100.0, unit="CAMERA",
                             description="Width of the camera's sensor in mm (36: full frame, or a 35 mm-equivalent "
                                         "focal length)")
    # --- a known identity (else it is solved from the footage) ---
    identity_path: StringProperty(name="Identity", subtype="FILE_PATH",
                                  description="A Headcast result of the same person (e.g. from several photos) made "
                                              "with the same head model: its identity is held instead of solved "
                                              "(empty: solve it)")
    # --- retargeting ---
    retarget_source: PointerProperty(name="Rig", type=bpy.types.Collection, poll=_is_headcast_rig,
                                     description="The imported Headcast rig whose performance drives the character")
    retarget_target: PointerProperty(name="Character", type=bpy.types.Object, poll=_is_character,
                                     description="A mesh with shape keys, or an armature (its bones and the "
                                                 "shape keys of its child meshes)")
    retarget_mode: EnumProperty(
        name="Shape Keys",
        items=(("BAKE", "Bake", "Key the character's shape keys on every frame of the performance"),
               ("DRIVERS", "Live", "Drive the character's shape keys from the rig's (updates with re-imports)")),
        default="BAKE")
    retarget_bones: BoolProperty(name="Head, Jaw and Eye Bones", default=True,
                                 description="Bake the head, jaw and eye rotations onto the character's bones")
    retarget_mapping: StringProperty(name="Mapping", subtype="FILE_PATH",
                                     description="Optional JSON file naming which shape keys and bones to drive "
                                                 "(else matched by name)")


CLASSES = (HeadcastSceneSettings,)


def register_properties():
    bpy.types.Scene.headcast = PointerProperty(type=HeadcastSceneSettings)


def unregister_properties():
    del bpy.types.Scene.headcast
