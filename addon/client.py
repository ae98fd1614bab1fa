# SPDX-License-Identifier: GPL-3.0-or-later
"""Client of the backend worker (``headcast serve``), in plain Python: no bpy, no backend imports.

The backend is a separate Python environment (torch, MediaPipe, ...). The add-on runs
``<backend python> -m headcast.cli serve`` as a subprocess and speaks its JSON-lines protocol
(the spec is the module docstring of ``backend/headcast/worker.py``): one request per line
on stdin, one event per line on stdout, logs on stderr.

Threads only read the pipes (stdout events go into a queue, stderr lines into a ring buffer);
every state change happens in :meth:`BackendClient.poll`, called by the GUI timer or by the
blocking :meth:`BackendClient.wait`, so callers never need locks.

A worker that dies while a job runs is restarted and the job resubmitted once (a track
resumes from the frames it had finished); a worker that dies before answering ``hello`` is a
configuration problem and fails its jobs with the last lines of its log.
"""
from __future__ import annotations

import collections
import itertools
import json
import os
import queue
import subprocess
import threading
import time
from dataclasses import dataclass, field

PROTOCOL_VERSION = 1
ACTIVE_STATES = ("submitted", "queued", "running")
FINAL_STATES = ("done", "error", "cancelled")
STDERR_LINES = 200  # log lines kept for error messages
# On Windows, a console window would pop up for every backend process.
NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)

# Model and device settings the add-on passes per request (``settings`` of a job request).
SETTING_KEYS = ("models.model", "models.flame", "models.uv_checkpoint", "models.normals_checkpoint", "fit.device")


class BackendConfigError(ValueError):
    """The backend settings are unusable (no interpreter, malformed environment text)."""


def parse_environment(text: str) -> dict[str, str]:
    """``"A=1; B=two"`` (entries separated by ``;`` or new lines) -> ``{"A": "1", "B": "two"}``."""
    env: dict[str, str] = {}
    for raw in text.replace("\n", ";").split(";"):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, value = entry.partition("=")
        name = name.strip()
        if not sep or not name or not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise BackendConfigError(f"extra environment entry {entry!r} is not NAME=VALUE")
        env[name] = value.strip()
    return env


def settings_environment(settings: dict[str, str]) -> dict[str, str]:
    """Request-style settings (``{"models.flame": ...}``) as the backend's environment variables.

    Used for commands that take no request (``headcast doctor``): ``HEADCAST_MODELS_FLAME`` etc.,
    the names ``backend/headcast/config.py`` reads.
    """
    env = {}
    for dotted, value in settings.items():
        section, _, key = dotted.partition(".")
        env[f"HEADCAST_{section.upper()}_{key.upper()}"] = str(value)
    return env


@dataclass(frozen=True)
class BackendConfig:
    """How to start the backend: its interpreter, extra environment, and per-request settings."""

    python: str
    extra_env: tuple[tuple[str, str], ...] = ()
    settings: tuple[tuple[str, str], ...] = ()  # ("models.flame", "/x/flame"), ...

    @classmethod
    def create(cls, python: str, extra_env: dict[str, str] | None = None,
               settings: dict[str, str] | None = None) -> "BackendConfig":
        if not python:
            raise BackendConfigError("no backend Python configured: set it in Preferences > Add-ons > Headcast "
                                     "(or press Set Up Backend)")
        unknown = set(settings or {}) - set(SETTING_KEYS)
        if unknown:
            raise BackendConfigError(f"unknown backend settings {sorted(unknown)} (known: {', '.join(SETTING_KEYS)})")
        clean = {k: str(v) for k, v in (settings or {}).items() if v not in (None, "")}
        return cls(python=str(python), extra_env=tuple(sorted((extra_env or {}).items())),
                   settings=tuple(sorted(clean.items())))

    def serve_command(self) -> list[str]:
        return [self.python, "-m", "headcast.cli", "serve"]

    def command(self, *args: str) -> list[str]:
        return [self.python, "-m", "headcast.cli", *args]

    def environment(self, with_settings: bool = False) -> dict[str, str]:
        """The process environment: Blender's, minus its Python home, plus the extra variables."""
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)  # Blender's own Python must not leak into the backend's
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(dict(self.extra_env))
        if with_settings:
            env.update(settings_environment(dict(self.settings)))
        return env


@dataclass
class Job:
    """One reconstruct or track request and everything the worker said about it."""

    id: str
    cmd: str
    params: dict
    label: str = ""
    state: str = "submitted"  # submitted | queued | running | done | error | cancelled
    stage: str = ""
    frame: int = 0
    total: int = 0
    step: int = 0
    loss: float | None = None
    elapsed: float | None = None
    eta: float | None = None
    result: dict | None = None
    error: dict | None = None  # {"code", "message", "file"}
    attempts: int = 1
    notes: list[str] = field(default_factory=list)
    cancel_requested: bool = False
    submitted_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def wall_seconds(self) -> float:
        return (self.finished_at or time.monotonic()) - self.submitted_at

    def fraction(self) -> float | None:
        """Progress within the current stage (frames done / frames), or None when unknown."""
        if self.state == "done":
            return 1.0
        if self.total and self.frame >= 0:
            return max(0.0, min(1.0, self.frame / self.total))
        return None

    def status_text(self) -> str:
        """One line for the panel: what runs now, where it is, how long it has left."""
        name = self.label or self.cmd
        if self.state == "submitted":
            return f"{name}: starting the backend" if self.attempts == 1 else f"{name}: restarting the backend"
        if self.state == "queued":
            return f"{name}: waiting for the job before it"
        if self.state == "running":
            parts = [f"{name}: {STAGE_NAMES.get(self.stage, self.stage or 'starting')}"]
            if self.total and self.frame >= 0:
                parts.append(f"frame {min(self.frame + 1, self.total)}/{self.total}")
            if self.eta is not None:
                parts.append(f"ETA {format_seconds(self.eta)}")
            return ", ".join(parts)
        if self.state == "done":
            return f"{name}: done in {format_seconds(self.wall_seconds)}"
        if self.state == "cancelled":
            return f"{name}: cancelled"
        return f"{name}: {error_text(self.error)}"

    def apply_event(self, event: dict) -> None:
        if self.finished:  # e.g. a late progress line after a cancel: the outcome stands
            return
        kind = event.get("event")
        if kind == "accepted":
            self.state = "queued" if event.get("queued") else "running"
        elif kind == "progress":
            self.state = "running"
            for key in ("stage", "frame", "total", "step", "loss", "elapsed", "eta"):
                if key in event:
                    setattr(self, key, event[key])
        elif kind == "result":
            self.result = {k: v for k, v in event.items() if k not in ("event", "id")}
            self._finish("done")
        elif kind == "error":
            self.error = {"code": event.get("code") or "error", "message": event.get("message") or "unknown error",
                          "file": event.get("file")}
            self._finish("error")
        elif kind == "cancelled":
            self._finish("cancelled")

    def fail(self, code: str, message: str, file: str | None = None) -> None:
        self.error = {"code": code, "message": message, "file": file}
        self._finish("error")

    def _finish(self, state: str) -> None:
        self.state = state
        self.finished_at = time.monotonic()


STAGE_NAMES = {"model": "loading the head model", "detect": "finding the face", "priors": "predicting priors",
               "camera": "fitting the camera", "fit": "fitting", "refine": "refining the fit",
               "first_frame": "fitting the first frame", "online": "tracking", "global": "smoothing the whole clip",
               "write": "writing the result"}


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def error_text(error: dict | None) -> str:
    """``message`` plus the file it concerns when the message does not name it already."""
    if not error:
        return "unknown error"
    message = str(error.get("message") or "unknown error")
    file = error.get("file")
    if file and str(file) not in message:
        message = f"{message} ({file})"
    return message


class BackendClient:
    """A ``headcast serve`` process: started on the first job, restarted when it dies, stopped on request."""

    def __init__(self, config: BackendConfig | None = None, restart_limit: int = 1) -> None:
        self.config = config
        self.restart_limit = restart_limit
        self.jobs: dict[str, Job] = {}
        self.info: dict | None = None  # the worker's hello event
        self.restarts = 0
        self.unmatched: list[dict] = []  # events that belong to no job (e.g. bad_json)
        self._proc: subprocess.Popen | None = None
        self._proc_config: BackendConfig | None = None
        self._events: "queue.Queue[tuple[subprocess.Popen, dict | None]]" = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # only for the stderr ring buffer
        self._stderr_reader: threading.Thread | None = None

    # --- process ------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def active_jobs(self) -> list[Job]:
        return [j for j in self.jobs.values() if not j.finished]

    def configure(self, config: BackendConfig) -> None:
        """Use ``config`` from now on.

        Model and device settings travel with each request, so only a new interpreter or
        environment stops a running worker (when it is idle; the next job starts the new one).
        """
        self.config = config
        old = self._proc_config
        changed = old is not None and (old.python, old.extra_env) != (config.python, config.extra_env)
        if self._proc is not None and changed and not self.active_jobs():
            self.stop()

    def start(self) -> None:
        if self.is_running():
            return
        if self.config is None:
            raise BackendConfigError("no backend configured")
        self._discard_process()
        self.info = None
        command = self.config.serve_command()
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, encoding="utf-8", errors="replace", bufsize=1,
                                    env=self.config.environment(), creationflags=NO_WINDOW)
        except OSError as exc:
            raise BackendConfigError(f"cannot start the backend {self.config.python}: {exc.strerror or exc}") from exc
        self._proc, self._proc_config = proc, self.config
        with self._lock:
            self._stderr.clear()
        threading.Thread(target=self._read_stdout, args=(proc,), name="headcast-events", daemon=True).start()
        self._stderr_reader = threading.Thread(target=self._read_stderr, args=(proc,), name="headcast-log", daemon=True)
        self._stderr_reader.start()
        self._send({"id": f"hello{next(self._ids)}", "cmd": "hello"})

    def _read_stdout(self, proc: subprocess.Popen) -> None:
        try:
            for line in proc.stdout:
                line = line.strip()
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    event = None
                if not isinstance(event, dict):  # the worker keeps stdout clean; be robust anyway
                    event = {"event": "log", "text": line}
                self._events.put((proc, event))
        except (OSError, ValueError):
            pass  # the pipe was closed under us: the process is being discarded
        self._events.put((proc, None))  # end of stream

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        try:
            for line in proc.stderr:
                with self._lock:
                    self._stderr.append(line.rstrip("\n"))
        except (OSError, ValueError):
            pass

    def log_tail(self, n: int = 12) -> str:
        with self._lock:
            lines = [line for line in self._stderr if line.strip()][-n:]
        return "\n".join(lines)

    def _send(self, request: dict) -> bool:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return False
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False  # it died; poll() notices and handles the jobs

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to shut down (it cancels its jobs), then make sure it is gone."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._send({"cmd": "shutdown"})
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for job in self.active_jobs():
            job.fail("backend_stopped", "the backend was stopped")
        self._discard_process()

    shutdown = stop

    def _discard_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    stream.close()
                except (OSError, ValueError):
                    pass

    # --- jobs -----------------------------------------------------------------------------------

    def submit(self, cmd: str, label: str = "", **params) -> Job:
        """Queue a ``reconstruct`` or ``track`` job (paths should be absolute) and return it."""
        if self.config is not None and self.config.settings:
            # the preferences' settings, under the request's own (e.g. the panel's known lens)
            params["settings"] = {**dict(self.config.settings), **(params.get("settings") or {})}
        job = Job(id=f"job{next(self._ids)}", cmd=cmd, params=params, label=label)
        self.jobs[job.id] = job
        try:
            self.start()
        except BackendConfigError as exc:
            job.fail("backend_start_failed", str(exc))
            return job
        self._send({"id": job.id, "cmd": cmd, **params})
        return job

    def cancel(self, job: Job | str) -> None:
        job = self.jobs[job] if isinstance(job, str) else job
        if job.finished:
            return
        job.cancel_requested = True
        if not self._send({"id": f"cancel-{job.id}", "cmd": "cancel", "job": job.id}):
            job._finish("cancelled")

    def poll(self, timeout: float = 0.0) -> list[Job]:
        """Apply the events that arrived (waiting up to ``timeout`` for the first); return changed jobs."""
        changed: dict[str, Job] = {}
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                proc, event = self._events.get(timeout=remaining) if remaining > 0 else self._events.get_nowait()
            except queue.Empty:
                break
            if proc is not self._proc:
                continue  # left over from a process that was replaced
            if event is None:
                self._on_exit(proc, changed)
                continue
            job = self._on_event(event)
            if job is not None:
                changed[job.id] = job
            deadline = time.monotonic()  # got one: drain the rest without waiting
        return list(changed.values())

    def _on_event(self, event: dict) -> Job | None:
        kind, req_id = event.get("event"), event.get("id")
        if kind == "hello":
            self.info = event
            if event.get("protocol") != PROTOCOL_VERSION:
                message = (f"the backend speaks protocol {event.get('protocol')}, this add-on needs "
                           f"{PROTOCOL_VERSION}: update the add-on or the backend so that they match")
                for job in self.active_jobs():
                    job.fail("protocol_mismatch", message)
                self.stop()
            return None
        job = self.jobs.get(str(req_id)) if req_id is not None else None
        if job is None:
            if kind in ("error", "log"):
                self.unmatched.append(event)
            return None
        if job.finished:
            return None
        job.apply_event(event)
        return job

    def _on_exit(self, proc: subprocess.Popen, changed: dict[str, Job]) -> None:
        """The worker's stdout closed: it exited. Fail or resubmit what it was doing."""
        try:
            code = proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(5)
        if self._stderr_reader is not None:
            self._stderr_reader.join(2.0)  # its last lines say why it stopped
        log = self.log_tail()
        started = self.info is not None
        self._discard_process()
        active = self.active_jobs()
        if not active:
            return
        if not started:
            message = (f"the backend did not start: {' '.join(self._proc_config.serve_command())} exited with code "
                       f"{code}" + (f"; its last output:\n{log}" if log else ""))
            for job in active:
                job.fail("backend_start_failed", message)
                changed[job.id] = job
            return
        retry = [j for j in active if j.attempts <= self.restart_limit and not j.cancel_requested]
        for job in active:
            if job in retry:
                continue
            if job.cancel_requested:
                job._finish("cancelled")
            else:
                job.fail("backend_crashed", f"the backend stopped unexpectedly (exit code {code}) while running this "
                         "job" + (f"; its last output:\n{log}" if log else ""))
            changed[job.id] = job
        if not retry:
            return
        self.restarts += 1
        try:
            self.start()
        except BackendConfigError as exc:
            for job in retry:
                job.fail("backend_start_failed", str(exc))
                changed[job.id] = job
            return
        for job in retry:
            job.attempts += 1
            job.state = "submitted"
            job.notes.append(f"the backend stopped (exit code {code}) and was restarted; the job was resubmitted")
            self._send({"id": job.id, "cmd": job.cmd, **job.params})
            changed[job.id] = job

    def wait(self, job: Job, timeout: float | None = None, on_update=None, interval: float = 0.2) -> Job:
        """Block until ``job`` finishes (the path used headless and in tests).

        ``on_update(job)`` is called after each change. Ctrl-C cancels the job and waits for the
        worker to confirm (up to 30 s) before re-raising. ``timeout`` cancels the job and fails it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not job.finished:
                if self._proc is None:  # defensive: every path that drops the process settles its jobs
                    job.fail("backend_stopped", "the backend is not running")
                    break
                if job in self.poll(interval) and on_update is not None:
                    on_update(job)
                if deadline is not None and time.monotonic() > deadline and not job.finished:
                    self.cancel(job)
                    self._wait_final(job, 30.0)
                    job.fail("timeout", f"no result within {format_seconds(timeout)}; the job was cancelled")
        except KeyboardInterrupt:
            self.cancel(job)
            self._wait_final(job, 30.0)
            raise
        return job

    def _wait_final(self, job: Job, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not job.finished and time.monotonic() < end:
            self.poll(0.2)
