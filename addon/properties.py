# SPDX-License-Identifier: GPL-3.0-or-later
"""Per-scene inputs of the panel (``scene.headcast``): the chosen photo and clip, results folder, import options."""
from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, PointerProperty, StringProperty


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


CLASSES = (HeadcastSceneSettings,)


def register_properties():
    bpy.types.Scene.headcast = PointerProperty(type=HeadcastSceneSettings)


def unregister_properties():
    del bpy.types.Scene.headcast
