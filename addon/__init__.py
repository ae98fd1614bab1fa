# SPDX-License-Identifier: GPL-3.0-or-later
"""Headcast Blender extension.

Blender-side code only: it reads result files with numpy (``result_file``, the same module the
backend writes them with, copied in by ``scripts/build_extension.py``), builds the rig, and
runs the backend as a separate process (``client``). It never imports torch or the backend package.
"""
import atexit

import bpy

from . import operators, panels, preferences, properties, runtime

CLASSES = properties.CLASSES + preferences.CLASSES + operators.CLASSES + panels.CLASSES


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    properties.register_properties()
    bpy.types.TOPBAR_MT_file_import.append(operators.menu_import)
    atexit.register(runtime.shutdown_at_exit)  # the worker also exits by itself when its stdin closes


def unregister():
    atexit.unregister(runtime.shutdown_at_exit)
    runtime.shutdown()
    bpy.types.TOPBAR_MT_file_import.remove(operators.menu_import)
    properties.unregister_properties()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
