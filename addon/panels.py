# SPDX-License-Identifier: GPL-3.0-or-later
"""The sidebar panel (View3D > Sidebar > Headcast)."""
from __future__ import annotations

import bpy


class HEADCAST_PT_main(bpy.types.Panel):
    bl_label = "Headcast"
    bl_idname = "HEADCAST_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Headcast"

    def draw(self, context):
        layout = self.layout
        layout.operator("headcast.import_result", icon="IMPORT")
        layout.label(text="Backend not configured yet")


CLASSES = (HEADCAST_PT_main,)
