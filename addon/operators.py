# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators. Every operator has an ``execute()`` path so it runs headless and in tests.

The job operators (Reconstruct Face, Reconstruct from Several Photos, Track Clip) are thin:
they choose the input, submit a job to the backend client and import its result. From a
button in the GUI (``invoke``) they return at once and the timer in ``runtime`` finishes the
job; from scripts, ``EXEC_DEFAULT`` and ``bpy.app.background`` they wait for it. Failures are
reported (Blender's report and the panel), never shown as a traceback, and create nothing.
"""
from __future__ import annotations

import time
from pathlib import Path

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from . import runtime
from .client import BackendConfigError, Job
from .result_file import RESULT_SUFFIX, ResultFileError
from .sources import (SourceError, absolute, active_image_path, editor_clip_path, existing, result_path,
                      scene_clip_path)


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


class HEADCAST_OT_report(bpy.types.Operator):
    """Show a Headcast message in Blender's reports (used by the timer, which has no operator of its own)"""

    bl_idname = "headcast.report"
    bl_label = "Headcast Message"
    bl_options = {"INTERNAL"}

    level: EnumProperty(items=(("INFO", "Info", ""), ("WARNING", "Warning", ""), ("ERROR", "Error", "")))
    message: StringProperty()

    def execute(self, context):
        self.report({self.level}, self.message)
        return {"FINISHED"}


def import_options(context):
    from .blender.importer import ImportOptions

    settings = context.scene.headcast
    return ImportOptions(animate=settings.animate, footage_texture=settings.footage_texture)


class _ConsoleProgress:
    """Progress lines on the console for headless runs: on each new stage, else every 10 s."""

    def __init__(self) -> None:
        self.stage, self.last = None, 0.0

    def __call__(self, job: Job) -> None:
        now = time.monotonic()
        if job.stage != self.stage or now - self.last > 10.0:
            self.stage, self.last = job.stage, now
            print(f"[headcast] {job.status_text()}", flush=True)


def fit_settings(context) -> dict:
    """The panel's known lens and identity as the backend's per-request settings (empty: solve
    the focal length and the identity); raises SourceError when the identity file is missing."""
    settings = context.scene.headcast
    out = {}
    if settings.known_lens:
        out.update({"fit.focal_mm": float(settings.lens_mm), "fit.sensor_mm": float(settings.sensor_mm)})
    identity = settings.identity_path.strip()
    if identity:
        out["fit.identity"] = str(existing(absolute(identity), "identity result file"))
    return out


class HEADCAST_OT_use_rig_identity(bpy.types.Operator):
    """Hold the identity of the selected Headcast head in later jobs (its result file becomes the panel's Identity)"""

    bl_idname = "headcast.use_rig_identity"
    bl_label = "Use the Selected Head's Identity"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        from .blender.importer import RIG_PROP, find_rig

        obj = context.active_object
        found = find_rig(obj.get(RIG_PROP)) if obj is not None and obj.get(RIG_PROP) else None
        path = found[0].get("headcast_result") if found else None
        if not path:
            self.report({"ERROR"}, "Select an imported Headcast head (its mesh, armature or camera) first")
            return {"CANCELLED"}
        context.scene.headcast.identity_path = str(path)
        self.report({"INFO"}, f"Identity: {Path(path).name} ({found[0].get('headcast_model', '?')})")
        return {"FINISHED"}


class _JobOperator:
    """Submit a job, then either hand it to the GUI timer or wait for it and import the result."""

    bl_options = {"REGISTER"}  # the import pushes its own undo step; starting a job changes nothing

    run_async: BoolProperty(options={"HIDDEN", "SKIP_SAVE"})
    output: StringProperty(name="Result File", subtype="FILE_PATH", options={"SKIP_SAVE"},
                           description="Where the result goes (empty: the panel's results folder, //headcast/ "
                                       "next to a saved .blend, or next to the footage)")
    cmd = ""

    def request(self, context) -> tuple[str, dict, Path]:
        """``(label, params, source)`` of the job; raises SourceError when there is no usable input."""
        raise NotImplementedError

    def wants_browser(self, context) -> bool:
        """True when invoke should open the file browser because nothing is chosen yet."""
        return False

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        self.run_async = True
        try:
            browse = self.wants_browser(context)
        except SourceError:
            browse = True
        if browse:
            context.window_manager.fileselect_add(self)
            return {"RUNNING_MODAL"}
        return self.execute(context)

    def _fail(self, text: str):
        runtime.notify("ERROR", text)
        self.report({"ERROR"}, text)
        return {"CANCELLED"}

    def execute(self, context):
        try:
            label, params, source = self.request(context)
            fit = fit_settings(context)
            if fit:
                params["settings"] = {**params.get("settings", {}), **fit}
            output = result_path(context, source, self.output)
            output.parent.mkdir(parents=True, exist_ok=True)
            backend = runtime.client()
        except (SourceError, BackendConfigError, OSError, RuntimeError) as exc:
            return self._fail(f"{self.bl_label}: {exc}")
        job = backend.submit(self.cmd, label=label, output=str(output), **params)
        runtime.STATE.last_job = job
        options = import_options(context)
        if self.run_async:
            runtime.STATE.pending[job.id] = runtime.PendingImport(job, options, "Imported")
            runtime.ensure_timer()
            runtime.notify("INFO", f"{label}: started")
            return {"FINISHED"}
        backend.wait(job, on_update=_ConsoleProgress() if bpy.app.background else None)
        level, text, report = runtime.finish_job(context, job, options)
        if report is not None:
            runtime.undo_push(f"Headcast: {label}")
            for warning in report.warnings:
                self.report({"WARNING"}, warning)
        runtime.notify(level, text)
        self.report({level}, text)
        return {"FINISHED"} if report is not None else {"CANCELLED"}


IMAGE_FILTER = "*.png;*.jpg;*.jpeg;*.bmp;*.tif;*.tiff;*.webp"
VIDEO_FILTER = "*.mp4;*.mov;*.avi;*.mkv;*.webm;*.m4v;*.mpg;*.mpeg"


class HEADCAST_OT_reconstruct_face(_JobOperator, bpy.types.Operator):
    """Reconstruct the head in a photo: the chosen file, else the Image editor's image, else the panel's photo"""

    bl_idname = "headcast.reconstruct_face"
    bl_label = "Reconstruct Face"
    cmd = "reconstruct"

    filepath: StringProperty(name="Photo", subtype="FILE_PATH", options={"SKIP_SAVE"})
    filter_glob: StringProperty(default=IMAGE_FILTER, options={"HIDDEN"})
    filter_image: BoolProperty(default=True, options={"HIDDEN"})
    filter_folder: BoolProperty(default=True, options={"HIDDEN"})

    def photo(self, context) -> Path | None:
        if self.filepath:
            return absolute(self.filepath)
        path = active_image_path(context)
        if path is None and context.scene.headcast.image_path:
            path = absolute(context.scene.headcast.image_path)
        return path

    def wants_browser(self, context) -> bool:
        return self.photo(context) is None

    def request(self, context):
        path = self.photo(context)
        if path is None:
            raise SourceError("no photo: choose a file, show an image in the Image editor, or set Photo in the panel")
        existing(path, "photo")
        return path.name, {"images": [str(path)]}, path


class HEADCAST_OT_reconstruct_photos(_JobOperator, bpy.types.Operator):
    """Reconstruct one head from several photos of the same person (shared identity)"""

    bl_idname = "headcast.reconstruct_photos"
    bl_label = "Reconstruct from Several Photos"
    cmd = "reconstruct"

    directory: StringProperty(subtype="DIR_PATH", options={"SKIP_SAVE"})
    files: CollectionProperty(type=bpy.types.OperatorFileListElement, options={"SKIP_SAVE"})
    filter_glob: StringProperty(default=IMAGE_FILTER, options={"HIDDEN"})
    filter_image: BoolProperty(default=True, options={"HIDDEN"})
    filter_folder: BoolProperty(default=True, options={"HIDDEN"})

    def wants_browser(self, context) -> bool:
        return not any(f.name for f in self.files)

    def request(self, context):
        names = [f.name for f in self.files if f.name]
        if not names:
            raise SourceError("no photos chosen")
        folder = absolute(self.directory) if self.directory else None
        paths = [existing(folder / n if folder else absolute(n), "photo") for n in names]
        label = paths[0].name if len(paths) == 1 else f"{paths[0].name} + {len(paths) - 1} more"
        return label, {"images": [str(p) for p in paths]}, paths[0]


class HEADCAST_OT_track_clip(_JobOperator, bpy.types.Operator):
    """Track a clip: the chosen file, else the Movie Clip editor's clip, the panel's Clip, the scene's active clip"""

    bl_idname = "headcast.track_clip"
    bl_label = "Track Clip"
    cmd = "track"

    filepath: StringProperty(name="Clip", subtype="FILE_PATH", options={"SKIP_SAVE"})
    filter_glob: StringProperty(default=VIDEO_FILTER, options={"HIDDEN"})
    filter_movie: BoolProperty(default=True, options={"HIDDEN"})
    filter_folder: BoolProperty(default=True, options={"HIDDEN"})
    resume: BoolProperty(name="Resume", default=True,
                         description="Continue an interrupted track of the same clip from its finished frames")
    max_frames: IntProperty(name="Max Frames", default=0, min=0, description="Track only the first frames (0: all)")

    def clip(self, context) -> Path | None:
        """The chosen file, the Movie Clip editor's clip, the panel's Clip field, the scene's active clip."""
        if self.filepath:
            return absolute(self.filepath)
        path = editor_clip_path(context)
        if path is None and context.scene.headcast.clip_path:
            path = absolute(context.scene.headcast.clip_path)
        return path or scene_clip_path(context)

    def wants_browser(self, context) -> bool:
        return self.clip(context) is None

    def request(self, context):
        path = self.clip(context)
        if path is None:
            raise SourceError("no clip: choose a file, open one in the Movie Clip editor, or set Clip in the panel")
        existing(path, "clip")
        params = {"video": str(path), "resume": self.resume}
        if self.max_frames:
            params["max_frames"] = self.max_frames
        return path.name, params, path


class HEADCAST_OT_cancel(bpy.types.Operator):
    """Cancel the running Headcast jobs (and a running set-up or check)"""

    bl_idname = "headcast.cancel"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    def execute(self, context):
        state = runtime.STATE
        jobs = state.client.active_jobs()
        for job in jobs:
            state.client.cancel(job)
        task = state.task
        if task is not None and not task.finished:
            task.cancel()
        if not jobs and (task is None or task.finished):
            self.report({"INFO"}, "Nothing to cancel")
            return {"CANCELLED"}
        runtime.notify("WARNING", f"Cancelling {len(jobs)} job(s)" + (" and the set-up" if task and not task.finished
                                                                       else ""))
        if bpy.app.background:
            state.client.poll(0.5)
        return {"FINISHED"}


class _TaskOperator:
    """Start a set-up or check task; the GUI timer finishes it, headless runs wait for it."""

    bl_options = {"REGISTER"}
    kind = ""

    def build(self, prefs):
        raise NotImplementedError

    def invoke(self, context, event):
        return self.run(context, wait=bpy.app.background)

    def execute(self, context):
        return self.run(context, wait=True)

    def run(self, context, wait: bool):
        try:
            prefs = runtime.preferences()
            task = self.build(prefs)
            runtime.start_task(task, self.kind)
        except (ValueError, RuntimeError, OSError) as exc:
            text = f"{self.bl_label}: {exc}"
            runtime.notify("ERROR", text)
            if self.kind == "check":
                runtime.STATE.doctor_error = text
            self.report({"ERROR"}, text)
            return {"CANCELLED"}
        if not wait:
            runtime.ensure_timer()
            return {"FINISHED"}
        task.wait()
        runtime.STATE.task_handled = True
        level, text = runtime.finish_task(task, self.kind)
        runtime.notify(level, text)
        self.report({level}, text)
        return {"CANCELLED"} if level == "ERROR" else {"FINISHED"}


class HEADCAST_OT_setup_backend(_TaskOperator, bpy.types.Operator):
    """Create a Python environment for the backend and install Headcast into it"""

    bl_idname = "headcast.setup_backend"
    bl_label = "Set Up Backend"
    kind = "setup"

    def build(self, prefs):
        import os
        import shlex

        from .tasks import ProcessTask, setup_steps, suitable_base_python, venv_python

        venv_dir = (runtime.abspath(prefs.venv_dir) if prefs.venv_dir
                    else str(runtime.default_venv_dir(create=True)))
        base = runtime.abspath(prefs.base_python) if prefs.base_python else suitable_base_python()
        # Blender's environment without its Python paths: the new environment is checked on its own
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
        steps = setup_steps(base, venv_dir, prefs.backend_source,
                            pip_command=shlex.split(prefs.pip_command, posix=os.name != "nt") or None,
                            pip_args=shlex.split(prefs.pip_args, posix=os.name != "nt"), env=env)
        task = ProcessTask("Backend set-up", steps)
        task.venv_python = str(venv_python(venv_dir))
        return task


class HEADCAST_OT_check_backend(_TaskOperator, bpy.types.Operator):
    """Run 'headcast doctor' with these settings and show what it finds"""

    bl_idname = "headcast.check_backend"
    bl_label = "Check Backend"
    kind = "check"

    def build(self, prefs):
        from .tasks import ProcessTask, doctor_step

        config = runtime.backend_config(prefs)
        return ProcessTask("Backend check", [doctor_step(config.command("doctor"), config.environment(True))])


class HEADCAST_OT_retarget(bpy.types.Operator):
    """Drive a character's shape keys (matched by name, e.g. ARKit) and head, jaw and eye bones from an imported rig"""

    bl_idname = "headcast.retarget"
    bl_label = "Retarget to Character"
    bl_options = {"REGISTER", "UNDO"}

    rig: StringProperty(name="Rig", default="", description="Rig collection (empty: the panel's choice)")
    target: StringProperty(name="Character", default="", description="Target object (empty: the panel's choice)")
    mode: EnumProperty(name="Shape Keys", items=(("BAKE", "Bake", ""), ("DRIVERS", "Live", "")), default="BAKE")
    bones: BoolProperty(name="Bones", default=True)
    mapping_file: StringProperty(name="Mapping", subtype="FILE_PATH", default="")

    def invoke(self, context, event):
        settings = context.scene.headcast
        self.rig = self.rig or (settings.retarget_source.name if settings.retarget_source else "")
        self.target = self.target or (settings.retarget_target.name if settings.retarget_target else "")
        self.mode, self.bones = settings.retarget_mode, settings.retarget_bones
        self.mapping_file = self.mapping_file or settings.retarget_mapping
        return self.execute(context)

    def execute(self, context):
        from .blender.importer import RIG_PROP, find_rig
        from .blender.retarget import RetargetError, retarget
        from .retarget_map import MappingFileError, read_mapping_file

        coll = bpy.data.collections.get(self.rig) if self.rig else None
        target = bpy.data.objects.get(self.target) if self.target else None
        found = find_rig(coll[RIG_PROP]) if coll is not None and coll.get(RIG_PROP) else None
        try:
            if found is None:
                raise RetargetError(f"no imported Headcast rig called {self.rig!r}" if self.rig
                                    else "choose the Headcast rig to retarget from")
            mapping = read_mapping_file(bpy.path.abspath(self.mapping_file)) if self.mapping_file else None
            report = retarget(context, found[1], target, self.mode, mapping, self.bones)
        except (RetargetError, MappingFileError) as exc:
            self.report({"ERROR"}, f"Not retargeted: {exc}")
            runtime.notify("ERROR", f"Not retargeted: {exc}")
            return {"CANCELLED"}
        bones = ", ".join(f"{role} -> {name}" for role, name in report.bones.items()) or "none"
        text = (f"Retargeted {report.n_shape_keys} shape keys onto {', '.join(report.targets) or '-'} "
                f"({'live' if self.mode == 'DRIVERS' else f'{report.n_frames} frames'}); bones: {bones}")
        if report.unmatched:
            text += f"; {len(report.unmatched)} rig keys have no match (e.g. {report.unmatched[0]})"
        self.report({"INFO"}, text)
        runtime.notify("INFO", text)
        return {"FINISHED"}


def menu_import(self, context):
    self.layout.operator(HEADCAST_OT_import_result.bl_idname, text="Headcast Result (.headcast.npz)")


CLASSES = (HEADCAST_OT_import_result, HEADCAST_OT_report, HEADCAST_OT_reconstruct_face,
           HEADCAST_OT_reconstruct_photos, HEADCAST_OT_track_clip, HEADCAST_OT_cancel, HEADCAST_OT_setup_backend,
           HEADCAST_OT_check_backend, HEADCAST_OT_retarget, HEADCAST_OT_use_rig_identity)
