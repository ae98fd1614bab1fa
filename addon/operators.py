# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators. Every operator has an ``execute()`` path so it runs headless and in tests."""
from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from .result_file import RESULT_SUFFIX, ResultFileError


class HEADCAST_OT_import_result(bpy.types.Operator, ImportHelper):
    """Import a Headcast result file: head mesh, shape keys, bones, camera and keyframes"""

    bl_idname = "headcast.import_result"
    bl_label = "Import Headcast Result"
    bl_options = {"REGISTER", "UNDO"}  # one undo step for the whole import

    filename_ext = RESULT_SUFFIX
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})
    animate: EnumProperty(
        name="Animate",
        items=(("HEAD", "Head", "The camera stays fixed and the head moves"),
               ("CAMERA", "Camera", "The head stays at the origin and the camera moves")),
        default="HEAD")
    drive_correctives: BoolProperty(
        name="Drive Correctives from Bones", default=True,
        description="Pose-corrective shape keys follow the bones, so posing the jaw by hand deforms like FLAME")
    footage_texture: BoolProperty(
        name="Project Footage", default=False,
        description="Give the head a material showing the footage projected from the camera")
    footage_path: StringProperty(
        name="Footage", subtype="FILE_PATH", default="",
        description="Footage to show instead of the path recorded in the result (e.g. after moving it)")
    update_existing: BoolProperty(
        name="Update Existing Rig", default=True,
        description="Re-importing a result with the same rig name replaces that rig's data in place")

    def execute(self, context):
        from .blender.importer import ImportOptions, import_result

        options = ImportOptions(animate=self.animate, drive_correctives=self.drive_correctives,
                                footage_texture=self.footage_texture, footage_path=self.footage_path,
                                update_existing=self.update_existing)
        try:
            report = import_result(context, self.filepath, options)
        except ResultFileError as exc:
            self.report({"ERROR"}, f"Not imported: {exc}")
            return {"CANCELLED"}
        for warning in report.warnings:
            self.report({"WARNING"}, warning)
        verb = "Updated" if report.updated else "Imported"
        self.report({"INFO"}, f"{verb} {report.collection.name}: {report.n_frames} frames in {report.seconds:.2f} s")
        return {"FINISHED"}


def menu_import(self, context):
    self.layout.operator(HEADCAST_OT_import_result.bl_idname, text="Headcast Result (.headcast.npz)")


CLASSES = (HEADCAST_OT_import_result,)
