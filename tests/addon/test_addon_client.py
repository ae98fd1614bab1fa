# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's backend client against a real ``headcast serve`` process (no bpy involved).

``client.py`` and ``tasks.py`` are loaded straight from ``addon/`` as plain modules: they must
work without Blender, which is what lets the GUI timer and the blocking path share them.
"""
import ast
import importlib.util
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from blender_checks import ROOT
from job_support import BACKEND_PYTHON


def load_plain(name: str):
    spec = importlib.util.spec_from_file_location(f"headcast_addon_{name}", ROOT / "addon" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def client_mod():
    return load_plain("client")


def test_client_and_tasks_use_only_the_standard_library():
    for name in ("client", "tasks"):
        tree = ast.parse((ROOT / "addon" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{name}.py: relative import (it must load on its own)"
                mods = [node.module]
            else:
                continue
            for mod in mods:
                root = mod.split(".")[0]
                assert root == "__future__" or root in sys.stdlib_module_names, (name, mod)


def test_environment_text_and_settings(client_mod):
    env = client_mod.parse_environment("A=1; B = two words ;\nPYTHONPATH=/x:/y;;")
    assert env == {"A": "1", "B": "two words", "PYTHONPATH": "/x:/y"}
    for bad in ("NOVALUE", "=3", "1A=2", "A-B=1"):
        with pytest.raises(client_mod.BackendConfigError, match="NAME=VALUE"):
            client_mod.parse_environment(bad)
    assert client_mod.settings_environment({"models.flame": "/f", "fit.device": "cpu"}) == \
        {"HEADCAST_MODELS_FLAME": "/f", "HEADCAST_FIT_DEVICE": "cpu"}
    with pytest.raises(client_mod.BackendConfigError, match="no backend Python"):
        client_mod.BackendConfig.create("")
    with pytest.raises(client_mod.BackendConfigError, match="unknown backend settings"):
        client_mod.BackendConfig.create("python", settings={"fit.steps": "3"})
    config = client_mod.BackendConfig.create("py", {"X": "1"}, {"models.model": "synthetic", "models.flame": ""})
    assert config.settings == (("models.model", "synthetic"),)  # empty values are not sent
    env = config.environment(with_settings=True)
    assert env["X"] == "1" and env["HEADCAST_MODELS_MODEL"] == "synthetic" and "PYTHONHOME" not in env


def test_job_progress_text(client_mod):
    job = client_mod.Job(id="j", cmd="track", params={}, label="clip.mp4")
    assert job.status_text() == "clip.mp4: starting the backend" and job.fraction() is None
    job.apply_event({"event": "accepted", "id": "j", "queued": 1})
    assert job.state == "queued"
    job.apply_event({"event": "progress", "id": "j", "stage": "online", "frame": 29, "total": 120, "step": 3,
                     "loss": 0.5, "elapsed": 10.0, "eta": 95.0})
    assert job.fraction() == pytest.approx(29 / 120)
    assert job.status_text() == "clip.mp4: tracking, frame 30/120, ETA 1 min 35 s"
    job.apply_event({"event": "error", "id": "j", "code": "no_face", "message": "no face found", "file": "/a/clip.mp4"})
    assert job.finished and job.status_text() == "clip.mp4: no face found (/a/clip.mp4)"
    job.apply_event({"event": "result", "id": "j", "path": "x"})  # nothing changes a finished job
    assert job.state == "error"


def test_worker_killed_mid_track_is_restarted_and_the_job_finishes(client_mod, backend_env, job_inputs, tmp_path):
    config = client_mod.BackendConfig.create(BACKEND_PYTHON, backend_env, {"models.model": "synthetic"})
    client = client_mod.BackendClient(config)
    out = tmp_path / "clip.headcast.npz"
    try:
        job = client.submit("track", label="clip", video=str(job_inputs / "clip.mp4"), output=str(out))
        stages = []

        def kill_when_fitting(j):
            stages.append(j.stage)
            if j.stage in ("first_frame", "online") and j.attempts == 1:
                os.kill(client.pid, signal.SIGKILL)

        first_pid = client.pid
        client.wait(job, timeout=300, on_update=kill_when_fitting)
        assert job.state == "done", job.error
        assert client.restarts == 1 and job.attempts == 2 and client.pid != first_pid
        assert "restarted" in job.notes[0]
        assert {"model", "detect"} <= set(stages)
        assert client.info["protocol"] == 1 and client.info["device"] == "cpu"
        assert job.result["frames"] == 6 and Path(job.result["path"]) == out and out.is_file()
        with np.load(out) as npz:
            assert npz["expression"].shape[0] == 6
        assert not out.with_name(out.name + ".partial").exists()
        pid = client.pid
    finally:
        client.stop()
    assert not client.is_running()
    with pytest.raises(ProcessLookupError):  # gone, and reaped
        os.kill(pid, 0)


def test_backend_that_cannot_start_fails_its_jobs_with_its_output(client_mod, tmp_path):
    # an environment whose 'headcast' is broken: the process dies before answering hello
    fake = tmp_path / "site" / "headcast"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch is missing from this environment')\n")
    config = client_mod.BackendConfig.create(sys.executable, {"PYTHONPATH": str(tmp_path / "site")})
    client = client_mod.BackendClient(config)
    job = client.submit("reconstruct", label="a.png", images=["/nonexistent/a.png"])
    client.wait(job, timeout=60)
    assert job.state == "error" and job.error["code"] == "backend_start_failed"
    assert "torch is missing from this environment" in job.error["message"]
    assert "exited with code 1" in job.error["message"] and client.restarts == 0
    # an interpreter that does not exist: a clear message at once, no exception
    client.configure(client_mod.BackendConfig.create(str(tmp_path / "no-python")))
    job = client.submit("reconstruct", images=["/x.png"])
    assert job.state == "error" and "cannot start the backend" in job.error["message"]
    assert str(tmp_path / "no-python") in job.error["message"]
    # a request's own settings (the panel's known lens) go with the preferences', and win over them
    client.configure(client_mod.BackendConfig.create(str(tmp_path / "no-python"), settings={
        "models.model": "synthetic", "fit.device": "cpu"}))
    job = client.submit("reconstruct", images=["/x.png"], settings={"fit.focal_mm": 85.0, "fit.device": "cuda"})
    assert job.params["settings"] == {"models.model": "synthetic", "fit.device": "cuda", "fit.focal_mm": 85.0}
    assert client.submit("reconstruct", images=["/x.png"]).params["settings"] == {
        "models.model": "synthetic", "fit.device": "cpu"}
    client.stop()


def test_cancel_a_queued_job_and_stop_with_work_in_flight(client_mod, backend_env, job_inputs, tmp_path):
    config = client_mod.BackendConfig.create(BACKEND_PYTHON, backend_env, {"models.model": "synthetic"})
    client = client_mod.BackendClient(config)
    clip = str(job_inputs / "clip.mp4")
    try:
        first = client.submit("track", video=clip, output=str(tmp_path / "a.headcast.npz"))
        second = client.submit("track", video=clip, output=str(tmp_path / "b.headcast.npz"))
        deadline = time.monotonic() + 120
        while second.state != "queued" and time.monotonic() < deadline:
            client.poll(0.2)
        assert second.state == "queued" and first.state == "running"
        client.cancel(second)
        # the worker drops a queued job at once, while the running one carries on to the end
        client.wait(second, timeout=120)
        assert second.state == "cancelled"
        client.wait(first, timeout=300)
        assert first.state == "done"
        assert not (tmp_path / "b.headcast.npz").exists()
        third = client.submit("track", video=clip, output=str(tmp_path / "c.headcast.npz"))
        while third.state != "running" and time.monotonic() < deadline:
            client.poll(0.2)
        pid = client.pid
    finally:
        client.stop()
    assert third.state == "error" and third.error["code"] == "backend_stopped"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_install_targets_and_base_python(tmp_path):
    tasks = load_plain("tasks")
    args, what = tasks.install_target(str(ROOT))
    assert args == [str(ROOT)] and "source folder" in what  # constraints come with the requirement files
    wheel = tmp_path / "headcast-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    assert tasks.install_target(str(wheel)) == ([str(wheel)], "package file headcast-0.1.0-py3-none-any.whl")
    assert tasks.install_target("headcast==0.1.0") == (["headcast==0.1.0"], "package headcast==0.1.0")
    assert tasks.install_target("git+https://example.org/headcast.git")[0] == ["git+https://example.org/headcast.git"]
    with pytest.raises(ValueError, match="not a Python project"):
        tasks.install_target(str(tmp_path))
    with pytest.raises(ValueError, match="not found"):
        tasks.install_target(str(tmp_path / "missing.whl"))
    with pytest.raises(ValueError, match="Backend package"):
        tasks.install_target("  ")
    # the first candidate that runs, has venv, and is 3.10-3.12 (MediaPipe's range)
    # (a candidate in that range: this interpreter, else the project's backend venv, e.g. under bpy 5.2's 3.13)
    from job_support import BACKEND_PYTHON
    candidate = sys.executable if (3, 10) <= sys.version_info[:2] <= (3, 12) else BACKEND_PYTHON
    assert tasks.suitable_base_python([str(tmp_path / "nope"), candidate]) == candidate
    if candidate != sys.executable:
        assert tasks.suitable_base_python([sys.executable]) == ""  # 3.13: outside MediaPipe 0.10.21's range
    assert tasks.suitable_base_python([str(tmp_path / "nope")]) == ""
