# SPDX-License-Identifier: GPL-3.0-or-later
"""Headcast Blender extension.

Blender-side code only: it talks to the Headcast backend through a subprocess and reads
result files with numpy. It never imports torch or the backend package.
"""

import bpy


class HEADCAST_PT_main(bpy.types.Panel):
    bl_label = "Headcast"
    bl_idname = "HEADCAST_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Headcast"

    def draw(self, context):
        self.layout.label(text="Backend not configured yet")


CLASSES = (HEADCAST_PT_main,)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
