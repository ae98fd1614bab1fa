# SPDX-License-Identifier: GPL-3.0-or-later
"""Add-on preferences: the backend's interpreter and environment, model files, device, set-up."""
from __future__ import annotations

import bpy
from bpy.props import EnumProperty, StringProperty

from . import runtime

MODEL_ITEMS = (
    ("CONFIG", "Backend Default", "Whatever the backend's config file or environment says (normally Automatic)"),
    ("auto", "Automatic", "Your FLAME model when one is set, else the open MakeHuman head, else the synthetic model"),
    ("flame", "FLAME", "Your FLAME model (set its file or folder below)"),
    ("open-head", "Open Head", "The CC0 MakeHuman-based head (no registration needed)"),
    ("synthetic", "Synthetic", "Headcast's own FLAME-format stand-in (for testing)"),
)
DEVICE_ITEMS = (
    ("CONFIG", "Backend Default", "Whatever the backend's config file or environment says (normally Automatic)"),
    ("auto", "Automatic", "A CUDA GPU when there is one, else the CPU"),
    ("cpu", "CPU", "Always the CPU"),
    ("cuda", "CUDA GPU", "The first CUDA GPU"),
)


class HeadcastPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_python: StringProperty(
        name="Backend Python", subtype="FILE_PATH",
        description="Interpreter of the environment the Headcast backend is installed in (empty: the one "
                    "Set Up Backend made, $HEADCAST_BACKEND_PYTHON, or the 'headcast' command on PATH)")
    backend_env: StringProperty(
        name="Extra Environment",
        description="Extra environment variables for the backend, NAME=VALUE separated by ';' "
                    "(e.g. PYTHONPATH=/src/headcast/backend; HEADCAST_FIT_STEPS=200)")
    model: EnumProperty(name="Head Model", items=MODEL_ITEMS, default="CONFIG")
    flame_path: StringProperty(name="FLAME Model", subtype="FILE_PATH",
                               description="FLAME model file (generic_model.pkl, flame2023.pkl) or the folder "
                                           "holding it and its assets")
    uv_checkpoint: StringProperty(name="UV Network", subtype="FILE_PATH",
                                  description="Pixel3DMM uv.ckpt (without it the faster, less accurate "
                                              "landmarks + mask mode runs)")
    normals_checkpoint: StringProperty(name="Normals Network", subtype="FILE_PATH",
                                       description="Pixel3DMM normals.ckpt")
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="CONFIG")

    venv_dir: StringProperty(name="Environment Folder", subtype="DIR_PATH",
                             description="Where Set Up Backend creates the virtual environment (empty: inside "
                                         "Blender's user folder for this extension)")
    base_python: StringProperty(name="Base Python", subtype="FILE_PATH",
                                description="Python 3.10-3.12 to create the environment with (empty: Blender's own "
                                            "Python, else python3.11/3.12/3.10 on PATH)")
    backend_source: StringProperty(name="Backend Package",
                                   description="What to install: the Headcast source folder, a wheel/sdist file, or "
                                               "a package name")
    pip_args: StringProperty(name="Extra pip Arguments",
                             description="Added to 'pip install', e.g. --extra-index-url "
                                         "https://download.pytorch.org/whl/cpu")
    pip_command: StringProperty(name="Installer Command",
                                description="Replaces '<environment python> -m pip' (an offline mirror's wrapper); "
                                            "leave empty normally")

    def draw(self, context):
        layout = self.layout
        box = layout.box()
        box.label(text="Backend", icon="CONSOLE")
        box.prop(self, "backend_python")
        box.prop(self, "backend_env")
        row = box.row()
        row.operator("headcast.check_backend", icon="CHECKMARK")
        draw_backend_status(box)

        box = layout.box()
        box.label(text="Models", icon="USER")
        box.prop(self, "model")
        box.prop(self, "flame_path")
        box.prop(self, "uv_checkpoint")
        box.prop(self, "normals_checkpoint")
        box.prop(self, "device")

        box = layout.box()
        box.label(text="Set Up Backend (for a machine with nothing installed)", icon="PACKAGE")
        box.prop(self, "backend_source")
        box.prop(self, "venv_dir")
        box.prop(self, "base_python")
        box.prop(self, "pip_args")
        box.prop(self, "pip_command")
        box.operator("headcast.setup_backend", icon="IMPORT")
        draw_task(box, runtime.STATE.task)


def draw_backend_status(layout) -> None:
    """The last check's answer (or its failure), a line each."""
    state = runtime.STATE
    if state.doctor_error:
        for i, line in enumerate(state.doctor_error.splitlines()[:8]):
            layout.label(text=line, icon="ERROR" if i == 0 else "BLANK1")
    elif state.doctor is not None:
        from .tasks import doctor_lines

        for line in doctor_lines(state.doctor):
            layout.label(text=line, icon="ERROR" if line.startswith("problem") else "INFO")


def draw_task(layout, task) -> None:
    if task is None:
        return
    if task.state == "running":
        layout.progress(factor=task.fraction(), type="BAR", text=task.status_text())
        layout.label(text=task.message[-120:])
        layout.operator("headcast.cancel", icon="CANCEL")
    elif task.state == "error":
        for i, line in enumerate(task.status_text().splitlines()[:8]):
            layout.label(text=line[-120:], icon="ERROR" if i == 0 else "BLANK1")
    else:
        layout.label(text=task.status_text(), icon="CHECKMARK" if task.state == "done" else "INFO")
    for warning in task.warnings:
        layout.label(text=warning.splitlines()[0], icon="ERROR")


CLASSES = (HeadcastPreferences,)
