# SPDX-License-Identifier: GPL-3.0-or-later
"""``headcast serve``: a long-lived backend speaking newline-delimited JSON on stdin/stdout.

Requests (one JSON object per line)::

    {"id": "1", "cmd": "hello"}
    {"id": "2", "cmd": "reconstruct", "images": ["a.jpg"], "output": "a.headcast.npz"}
    {"id": "3", "cmd": "track", "video": "clip.mp4", "output": "clip.headcast.npz"}
    {"id": "4", "cmd": "cancel", "job": "3"}          # a running or queued job
    {"id": "5", "cmd": "shutdown"}

Events (one JSON object per line on stdout; logs go to stderr)::

    {"event": "hello", "id": "1", "version": ..., "protocol": 1, "capabilities": [...], "device": ...}
    {"event": "accepted", "id": "2", "queued": 0}
    {"event": "progress", "id": "2", "stage": ..., "frame": ..., "total": ..., "step": ..., "loss": ...,
     "elapsed": ..., "eta": ...}
    {"event": "result", "id": "2", "path": ...}
    {"event": "error", "id": "2", "code": ..., "message": ..., "file": ...}
    {"event": "cancelled", "id": "3"}
    {"event": "bye"}

One job runs at a time (models stay loaded between jobs); the others wait in a queue. Cancel
takes effect at the job's next optimisation step (well under a second). A job that raises
reports an ``error`` event and the worker carries on.
"""
from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

from . import __version__
from .errors import Cancelled, describe

PROTOCOL_VERSION = 1


@dataclass
class Job:
    id: str
    cmd: str
    params: dict
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0


class JobContext:
    """What a job handler gets: progress reporting and cooperative cancellation."""

    def __init__(self, job: Job, emit: Callable[[dict], None]) -> None:
        self.job = job
        self._emit = emit
        self._last = 0.0

    @property
    def cancel_event(self) -> threading.Event:
        return self.job.cancel

    def check_cancel(self) -> None:
        if self.job.cancel.is_set():
            raise Cancelled()

    def progress(self, stage: str, frame: int = 0, total: int = 0, step: int = 0, loss: float | None = None,
                 fraction: float | None = None) -> None:
        """Report progress (rate-limited to ~10 events/s) and honour cancellation."""
        self.check_cancel()
        now = time.monotonic()
        if now - self._last < 0.1 and fraction != 1.0:
            return
        self._last = now
        elapsed = now - self.job.started
        frac = fraction if fraction is not None else (frame / total if total else None)
        eta = elapsed * (1 - frac) / frac if frac and frac > 0 else None
        self._emit({"event": "progress", "id": self.job.id, "stage": stage, "frame": frame, "total": total,
                    "step": step, "loss": None if loss is None else float(loss), "elapsed": round(elapsed, 3),
                    "eta": None if eta is None else round(eta, 3)})


Handler = Callable[[dict, JobContext], dict]


class Worker:
    def __init__(self, handlers: dict[str, Handler], out: TextIO, hello_info: Callable[[], dict] | None = None,
                 log: TextIO | None = None) -> None:
        self.handlers = handlers
        self.out = out
        self.log = log or sys.stderr
        self.hello_info = hello_info or (lambda: {})
        self._lock = threading.Lock()
        self._queue: "queue.Queue[Job | None]" = queue.Queue()
        self._queued: dict[str, Job] = {}
        self._current: Job | None = None
        self._thread = threading.Thread(target=self._run_jobs, name="headcast-jobs", daemon=True)

    def emit(self, event: dict) -> None:
        line = json.dumps(event, default=str)
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    def _error(self, req_id: Any, code: str, message: str, file: str | None = None) -> None:
        self.emit({"event": "error", "id": req_id, "code": code, "message": message, "file": file})

    # --- the job thread ------------------------------------------------------------------------

    def _run_jobs(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                self._queued.pop(job.id, None)
                if job.cancel.is_set():  # cancelled while waiting: already reported
                    continue
                self._current = job
            job.started = time.monotonic()
            ctx = JobContext(job, self.emit)
            try:
                result = self.handlers[job.cmd](job.params, ctx)
                self.emit({"event": "result", "id": job.id, **result})
            except Cancelled:
                self.emit({"event": "cancelled", "id": job.id})
            except BaseException as exc:  # noqa: BLE001 - a failing job must not kill the worker
                info = describe(exc)
                if info["code"] == "internal":
                    import traceback
                    traceback.print_exc(file=self.log)
                self._error(job.id, info["code"], info["message"], info["file"])
            finally:
                with self._lock:
                    self._current = None

    # --- requests ----------------------------------------------------------------------------------

    def handle_line(self, line: str) -> bool:
        """Handle one request line; returns False when the worker should stop."""
        line = line.strip()
        if not line:
            return True
        try:
            req = json.loads(line)
        except json.JSONDecodeError as exc:
            self._error(None, "bad_json", f"request is not valid JSON ({exc.msg} at column {exc.colno})")
            return True
        if not isinstance(req, dict):
            self._error(None, "bad_request", "request must be a JSON object")
            return True
        req_id, cmd = req.get("id"), req.get("cmd")
        if cmd == "hello":
            self.emit({"event": "hello", "id": req_id, "version": __version__, "protocol": PROTOCOL_VERSION,
                       "capabilities": sorted(self.handlers), **self.hello_info()})
        elif cmd == "cancel":
            self._cancel(req_id, str(req.get("job", "")))
        elif cmd == "shutdown":
            return False
        elif cmd in self.handlers:
            job = Job(id=str(req_id if req_id is not None else f"job{time.monotonic_ns()}"), cmd=cmd,
                      params={k: v for k, v in req.items() if k not in ("id", "cmd")})
            with self._lock:
                waiting = len(self._queued) + (self._current is not None)
                self._queued[job.id] = job
            self.emit({"event": "accepted", "id": job.id, "queued": waiting})
            self._queue.put(job)
        else:
            known = ", ".join(["hello", "cancel", "shutdown", *sorted(self.handlers)])
            self._error(req_id, "unknown_command", f"unknown command {cmd!r} (known: {known})")
        return True

    def _cancel(self, req_id: Any, job_id: str) -> None:
        with self._lock:
            running = self._current is not None and self._current.id == job_id
            target = self._current if running else self._queued.pop(job_id, None)
        if target is None:
            self._error(req_id, "unknown_job", f"no running or queued job {job_id!r}")
            return
        target.cancel.set()
        if not running:  # a waiting job is dropped now; the job thread skips it silently
            self.emit({"event": "cancelled", "id": job_id})

    def serve(self, inp: TextIO) -> int:
        self._thread.start()
        try:
            for line in inp:
                if not self.handle_line(line):
                    break
        finally:
            self.shutdown()
        return 0

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._lock:
            waiting = list(self._queued.values())
            self._queued.clear()
            running = self._current
        for job in waiting:
            job.cancel.set()
            self.emit({"event": "cancelled", "id": job.id})
        if running is not None:
            running.cancel.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.emit({"event": "bye"})


def protocol_stdout() -> TextIO:
    """A private handle on the real stdout; fd 1 then points at stderr.

    Native libraries (MediaPipe, OpenCV) may print to fd 1; after this they can no longer
    corrupt the JSON stream.
    """
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", buffering=1, encoding="utf-8")


# --- the pipeline behind the worker ------------------------------------------------------------

def _job_settings(base, params: dict):
    """The worker's settings with a request's ``settings`` overrides (``{"fit.steps": 100}``)."""
    import copy

    from .config import ConfigError, _apply

    settings = copy.deepcopy(base)
    overrides = params.get("settings") or {}
    if not isinstance(overrides, dict):
        raise ConfigError("request field 'settings' must be an object of 'section.key': value")
    for dotted, value in overrides.items():
        section, _, key = str(dotted).partition(".")
        _apply(settings, section, key, value, f"request setting {dotted}")
    return settings


def _progress_adapter(ctx: JobContext):
    def progress(stage: str, frame: int, total: int, step: int, loss: float) -> None:
        ctx.progress(stage, frame=frame, total=total, step=step, loss=None if loss != loss else loss)
    return progress


def _reconstruct_job(base):
    def handler(params: dict, ctx: JobContext) -> dict:
        from .errors import InputError
        from .pipeline import reconstruct

        images = params.get("images") or ([params["image"]] if params.get("image") else [])
        if not images or not all(isinstance(i, str) for i in images):
            raise InputError("reconstruct needs 'images': a list of file paths (or 'image')")
        result = reconstruct(images, params.get("output"), settings=_job_settings(base, params),
                             progress=_progress_adapter(ctx), cancel=ctx.cancel_event)
        return result.as_dict()
    return handler


def _track_job(base):
    def handler(params: dict, ctx: JobContext) -> dict:
        from .errors import InputError
        from .pipeline import track

        video = params.get("video")
        if not isinstance(video, str):
            raise InputError("track needs 'video': a video file or an image folder")
        result = track(video, params.get("output"), settings=_job_settings(base, params),
                       progress=_progress_adapter(ctx), cancel=ctx.cancel_event,
                       resume=bool(params.get("resume", True)), max_frames=params.get("max_frames"))
        return result.as_dict()
    return handler


def _hello(settings) -> dict:
    import torch

    device = settings.fit.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"device": device, "model_setting": settings.models.model,
            "flame_configured": bool(settings.models.flame),
            "networks_configured": bool(settings.models.uv_checkpoint or settings.models.normals_checkpoint)}


def serve_pipeline(settings, inp: TextIO, out: TextIO) -> int:
    """Run the worker with the real pipeline until stdin closes or ``shutdown`` arrives."""
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    worker = Worker({"reconstruct": _reconstruct_job(settings), "track": _track_job(settings)}, out=out,
                    hello_info=lambda: _hello(settings))
    return worker.serve(inp)
