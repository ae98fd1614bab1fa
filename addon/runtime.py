# SPDX-License-Identifier: GPL-3.0-or-later
"""What the add-on keeps while Blender runs: the backend client, jobs waiting to be imported,
the set-up or check task, and the last message for the panel.

Two ways through a job, sharing :func:`finish_job`:

* GUI: the operator submits the job and returns; :func:`poll_timer` (a ``bpy.app.timers``
  callback, so the UI never freezes) applies the worker's events, redraws the panels and
  imports the result when it arrives;
* headless, scripts and tests (``EXEC_DEFAULT``, ``bpy.app.background``): the operator waits
  for the job with :meth:`BackendClient.wait` and imports the result itself. (In bpy module
  mode timers never fire; tests drive :func:`update` by hand instead.)
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from .client import BackendClient, BackendConfig, Job, error_text, parse_environment

PACKAGE = __package__
TIMER_INTERVAL = 0.25


@dataclass
class PendingImport:
    """A job started from the GUI whose result the timer imports."""

    job: Job
    options: object  # blender.importer.ImportOptions
    verb: str


@dataclass
class State:
    client: BackendClient = field(default_factory=BackendClient)
    pending: dict[str, PendingImport] = field(default_factory=dict)
    last_job: Job | None = None
    task: object = None  # tasks.ProcessTask (set-up or check), with task_kind
    task_kind: str = ""
    task_handled: bool = True
    doctor: dict | None = None
    doctor_error: str = ""
    message: tuple[str, str] = ("", "")  # (level INFO|WARNING|ERROR, text): last outcome, shown in the panel
    history: list[tuple[str, str]] = field(default_factory=list)


STATE = State()


def preferences():
    addon = bpy.context.preferences.addons.get(PACKAGE)
    if addon is None:
        raise RuntimeError(f"the Headcast add-on ({PACKAGE}) is not enabled")
    return addon.preferences


def abspath(path: str) -> str:
    return os.path.abspath(bpy.path.abspath(path)) if path else ""


def default_venv_dir(create: bool = False) -> Path:
    """The environment Set Up Backend makes when no folder is given: in the extension's user folder."""
    try:
        return Path(bpy.utils.extension_path_user(PACKAGE, path="backend-venv", create=create))
    except (ValueError, AttributeError):  # installed as a legacy add-on
        return Path(bpy.utils.user_resource("DATAFILES", path="headcast", create=create)) / "backend-venv"


def _script_interpreter(script: str) -> str:
    """The interpreter on a console script's ``#!`` line (pip writes the environment's python there)."""
    try:
        with open(script, "rb") as fh:
            first = fh.readline().decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return first[2:].strip().split()[0] if first.startswith("#!") and "python" in first else ""


def backend_python(prefs) -> str:
    """The configured interpreter; else $HEADCAST_BACKEND_PYTHON, the set-up environment, ``headcast`` on PATH."""
    from .tasks import venv_python

    if prefs.backend_python:
        return abspath(prefs.backend_python)
    if os.environ.get("HEADCAST_BACKEND_PYTHON"):
        return os.environ["HEADCAST_BACKEND_PYTHON"]
    made = venv_python(abspath(prefs.venv_dir) if prefs.venv_dir else default_venv_dir())
    if made.is_file():
        return str(made)
    script = shutil.which("headcast")
    return _script_interpreter(script) if script else ""


def request_settings(prefs) -> dict[str, str]:
    """The model and device preferences as the worker's per-request ``settings``."""
    settings = {}
    if prefs.model != "CONFIG":
        settings["models.model"] = prefs.model
    for key, value in (("models.flame", prefs.flame_path), ("models.uv_checkpoint", prefs.uv_checkpoint),
                       ("models.normals_checkpoint", prefs.normals_checkpoint)):
        if value:
            settings[key] = abspath(value)
    if prefs.device != "CONFIG":
        settings["fit.device"] = prefs.device
    return settings


def backend_config(prefs=None) -> BackendConfig:
    """The backend to run, from the preferences; raises BackendConfigError with what to fix."""
    prefs = prefs or preferences()
    return BackendConfig.create(backend_python(prefs), parse_environment(prefs.backend_env), request_settings(prefs))


def client(prefs=None) -> BackendClient:
    STATE.client.configure(backend_config(prefs))
    return STATE.client


def notify(level: str, text: str) -> None:
    """Remember an outcome for the panel (and the console when there is no UI)."""
    STATE.message = (level, text)
    STATE.history.append((level, text))
    del STATE.history[:-50]
    if bpy.app.background:
        print(f"[headcast] {level.lower()}: {text}", flush=True)


def job_failure_text(job: Job) -> str:
    what = f"{job.label} failed" if job.label else "the job failed"
    if job.state == "cancelled":
        return f"{job.label or 'the job'} was cancelled"
    text = f"{what}: {error_text(job.error)}"
    if job.error and job.error.get("code") == "internal":
        log = STATE.client.log_tail(6)
        text += f"\nbackend log:\n{log}" if log else ""
    return text


def finish_job(context, job: Job, options, verb: str = "Imported") -> tuple[str, str, object]:
    """Import a finished job's result (one import; all or nothing); ``(level, message, report)``.

    A failed or cancelled job creates nothing: the scene stays as it was.
    """
    from .blender.importer import import_result
    from .result_file import ResultFileError

    if job.state != "done":
        level = "WARNING" if job.state == "cancelled" else "ERROR"
        return level, job_failure_text(job), None
    try:
        report = import_result(context, job.result["path"], options)
    except ResultFileError as exc:
        return "ERROR", f"{job.label}: the backend's result could not be imported: {exc}", None
    except Exception as exc:  # noqa: BLE001 - shown in the panel and the report, never as a traceback
        return "ERROR", f"{job.label}: import failed: {type(exc).__name__}: {exc}", None
    res = job.result
    text = (f"{verb} {report.collection.name}: {res.get('valid_frames')}/{res.get('frames')} frames with a face; "
            f"model {res.get('model')} ({res.get('licence')}); mode {res.get('mode')}; "
            f"{job.wall_seconds:.1f} s")
    return "INFO", text, report


# --- the GUI path ------------------------------------------------------------------------------------

def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(poll_timer):
        bpy.app.timers.register(poll_timer, first_interval=TIMER_INTERVAL, persistent=True)


def stop_timer() -> None:
    if bpy.app.timers.is_registered(poll_timer):
        bpy.app.timers.unregister(poll_timer)


def busy() -> bool:
    task = STATE.task
    return bool(STATE.client.active_jobs() or STATE.pending or (task is not None and not STATE.task_handled))


def poll_timer():
    """The GUI timer: apply events, import finished results, redraw; stops itself when idle."""
    try:
        update()
    except Exception as exc:  # noqa: BLE001 - a timer that raises is dropped silently by Blender
        notify("ERROR", f"Headcast: {type(exc).__name__}: {exc}")
    redraw()
    return TIMER_INTERVAL if busy() else None


def _window_override():
    wm = bpy.context.window_manager
    window = bpy.context.window or (wm.windows[0] if wm is not None and len(wm.windows) else None)
    return bpy.context.temp_override(window=window) if window is not None else _NullContext()


class _NullContext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def update() -> None:
    """One round of the GUI path: events in, finished results imported, finished tasks handled."""
    STATE.client.poll()
    for job_id, pending in list(STATE.pending.items()):
        if not pending.job.finished:
            continue
        del STATE.pending[job_id]
        with _window_override():
            level, text, report = finish_job(bpy.context, pending.job, pending.options, pending.verb)
            if report is not None:
                undo_push(f"Headcast: {pending.job.label}")
            notify(level, text)
            _report(level, text)
    task = STATE.task
    if task is not None and task.finished and not STATE.task_handled:
        STATE.task_handled = True
        level, text = finish_task(task, STATE.task_kind)
        notify(level, text)
        with _window_override():
            _report(level, text)


def undo_push(message: str) -> None:
    try:
        bpy.ops.ed.undo_push(message=message)
    except RuntimeError:
        pass  # no undo stack (background): nothing to step back to anyway


def _report(level: str, text: str) -> None:
    """Put a message into Blender's reports (status bar, Info editor) from outside an operator."""
    try:
        bpy.ops.headcast.report(level=level, message=text)
    except (RuntimeError, AttributeError):
        pass


def redraw() -> None:
    wm = bpy.context.window_manager
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "IMAGE_EDITOR", "CLIP_EDITOR", "PREFERENCES"):
                area.tag_redraw()


# --- set-up and check tasks ------------------------------------------------------------------------

def start_task(task, kind: str) -> None:
    if STATE.task is not None and not STATE.task.finished:
        raise RuntimeError(f"{STATE.task.title} is still running")
    STATE.task, STATE.task_kind, STATE.task_handled = task, kind, False
    if kind == "check":
        STATE.doctor, STATE.doctor_error = None, ""
    task.start()


def finish_task(task, kind: str) -> tuple[str, str]:
    """Apply a finished task: a set-up points the preferences at the new environment; a check keeps its report."""
    from .tasks import doctor_lines, parse_doctor

    if kind == "check":
        try:
            STATE.doctor = parse_doctor(task)
        except ValueError as exc:
            STATE.doctor_error = f"Check failed: {exc}"
            return "ERROR", STATE.doctor_error
        problems = STATE.doctor.get("problems") or []
        summary = "; ".join(doctor_lines(STATE.doctor)[:3])
        return ("WARNING", f"Backend check: {len(problems)} problem(s): {'; '.join(problems)}") if problems else \
            ("INFO", f"Backend check: {summary}")
    if task.state == "done":
        python = getattr(task, "venv_python", "")
        if python:
            preferences().backend_python = python
        checked = [line for line in task.lines if line.startswith("headcast ")]  # the check step's answer
        text = f"Backend set up in {Path(python).parent.parent}" + (f": {checked[-1]}" if checked else "")
        if task.warnings:
            text += f" (warning: {task.warnings[0].splitlines()[0]})"
        return "INFO", text
    if task.state == "cancelled":
        return "WARNING", "Backend set-up cancelled"
    return "ERROR", f"Backend set-up failed: {task.error}"


def shutdown(timeout: float = 10.0) -> None:
    """Stop the worker and any task (the add-on is disabled, or Blender quits)."""
    stop_timer()
    task = STATE.task
    if task is not None and not task.finished:
        task.cancel()
        task.wait(timeout)
    STATE.pending.clear()
    STATE.client.stop(timeout)


def shutdown_at_exit() -> None:
    """Blender is quitting: a short wait for the worker, and nothing may raise this late."""
    try:
        shutdown(timeout=3.0)
    except Exception:  # noqa: BLE001 - bpy may already be half torn down
        STATE.client.stop(1.0)
