# SPDX-License-Identifier: GPL-3.0-or-later
"""Headcast Blender extension.

Blender-side code only: it reads result files with numpy (``result_file``, the same module the
backend writes them with, copied in by ``scripts/build_extension.py``) and builds the rig.
It never imports torch or the backend package.
"""
import bpy

from . import operators, panels

CLASSES = operators.CLASSES + panels.CLASSES


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.TOPBAR_MT_file_import.append(operators.menu_import)


def unregister():
    bpy.types.TOPBAR_MT_file_import.remove(operators.menu_import)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
