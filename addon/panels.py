# SPDX-License-Identifier: GPL-3.0-or-later
"""The Headcast panel, in the sidebar of the 3D View, the Image editor and the Movie Clip editor."""
from __future__ import annotations

import bpy

from . import runtime
from .preferences import draw_backend_status, draw_task


def draw_jobs(layout) -> None:
    """A progress bar (stage, frame, ETA) and a Cancel button per running job, then the last outcome."""
    state = runtime.STATE
    jobs = state.client.active_jobs()
    for job in jobs:
        fraction = job.fraction()
        layout.progress(factor=fraction if fraction is not None else 0.0, type="BAR", text=job.status_text())
    if jobs:
        layout.operator("headcast.cancel", icon="CANCEL")
    if state.task is not None and not state.task.finished:
        draw_task(layout, state.task)
    level, text = state.message
    if text and not jobs:
        icon = {"ERROR": "ERROR", "WARNING": "ERROR"}.get(level, "INFO")
        box = layout.box()
        for i, line in enumerate(text.splitlines()[:10]):
            # long messages wrap by hand: panels do not wrap labels
            for j in range(0, max(1, len(line)), 60):
                box.label(text=line[j:j + 60], icon=icon if i == 0 and j == 0 else "BLANK1")


class _HeadcastPanel:
    bl_label = "Headcast"
    bl_region_type = "UI"
    bl_category = "Headcast"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.headcast
        space = context.space_data.type

        col = layout.column(align=True)
        if space != "IMAGE_EDITOR":
            col.prop(settings, "image_path")
        col.operator("headcast.reconstruct_face", icon="USER")
        col.operator("headcast.reconstruct_photos", icon="COMMUNITY")
        col = layout.column(align=True)
        if space != "CLIP_EDITOR":
            col.prop(settings, "clip_path")
        col.operator("headcast.track_clip", icon="TRACKING")
        col = layout.column(align=True)
        col.prop(settings, "known_lens")
        if settings.known_lens:
            col.prop(settings, "lens_mm")
            col.prop(settings, "sensor_mm")
        row = layout.row(align=True)
        row.prop(settings, "identity_path")
        row.operator("headcast.use_rig_identity", text="", icon="EYEDROPPER")

        draw_jobs(layout)

        col = layout.column(align=True)
        col.prop(settings, "output_dir")
        row = col.row(align=True)
        row.prop(settings, "animate", expand=True)
        col.prop(settings, "footage_texture")
        layout.operator("headcast.import_result", text="Import Result File", icon="IMPORT")


class HEADCAST_PT_main(_HeadcastPanel, bpy.types.Panel):
    bl_idname = "HEADCAST_PT_main"
    bl_space_type = "VIEW_3D"


class HEADCAST_PT_image(_HeadcastPanel, bpy.types.Panel):
    bl_idname = "HEADCAST_PT_image"
    bl_space_type = "IMAGE_EDITOR"


class HEADCAST_PT_clip(_HeadcastPanel, bpy.types.Panel):
    bl_idname = "HEADCAST_PT_clip"
    bl_space_type = "CLIP_EDITOR"


class _FoldInMain:
    """A closed fold under the main panel of the 3D View's sidebar."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Headcast"
    bl_parent_id = "HEADCAST_PT_main"
    bl_options = {"DEFAULT_CLOSED"}


class HEADCAST_PT_backend(_FoldInMain, bpy.types.Panel):
    """Backend status and the Check button."""

    bl_label = "Backend"
    bl_idname = "HEADCAST_PT_backend"

    def draw(self, context):
        layout = self.layout
        info = runtime.STATE.client.info
        if runtime.STATE.client.is_running() and info:
            layout.label(text=f"running: headcast {info.get('version')} on {info.get('device')}", icon="CHECKMARK")
        else:
            layout.label(text="not running (starts with the first job)", icon="INFO")
        row = layout.row(align=True)
        row.operator("headcast.check_backend", icon="CHECKMARK")
        row.operator("preferences.addon_show", text="Settings", icon="PREFERENCES").module = runtime.PACKAGE
        draw_backend_status(layout)


class HEADCAST_PT_retarget(_FoldInMain, bpy.types.Panel):
    """Retarget an imported performance onto a character."""

    bl_label = "Retarget"
    bl_idname = "HEADCAST_PT_retarget"

    def draw(self, context):
        settings = context.scene.headcast
        col = self.layout.column(align=True)
        col.prop(settings, "retarget_source")
        col.prop(settings, "retarget_target")
        col.prop(settings, "retarget_mode", expand=True)
        col.prop(settings, "retarget_bones")
        col.prop(settings, "retarget_mapping")
        self.layout.operator("headcast.retarget", icon="ARMATURE_DATA")


CLASSES = (HEADCAST_PT_main, HEADCAST_PT_image, HEADCAST_PT_clip, HEADCAST_PT_backend, HEADCAST_PT_retarget)
