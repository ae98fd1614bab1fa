# SPDX-License-Identifier: GPL-3.0-or-later
"""Set Up Backend (a real venv, a fake installer in place of pip) and Check (a real `headcast doctor`)."""
import json
import sys
import textwrap

import pytest

from blender_checks import MODULE, ROOT

# Stands in for pip: records its arguments, prints pip-like progress, and "installs" the backend
# by putting this checkout's backend/ on the new environment's path.
FAKE_PIP = textwrap.dedent('''
    import json, sys, sysconfig, pathlib
    log, venv, outcome, *args = sys.argv[1:]
    with open(log, "a") as f:
        f.write(json.dumps(args) + chr(10))
    print("Collecting torch>=2.2", flush=True)
    print("  Downloading torch-2.13.0-cp311-none-linux_x86_64.whl (180.0 MB)", flush=True)
    if outcome == "fail":
        print("ERROR: No matching distribution found for torch>=2.2", flush=True)
        sys.exit(1)
    site = (next(pathlib.Path(venv).glob("lib/python3*/site-packages"), None)
            or pathlib.Path(venv, "Lib", "site-packages"))
    (site / "headcast-backend.pth").write_text(BACKEND)
    print("Successfully installed headcast-0.1.0 torch-2.13.0", flush=True)
''').replace("BACKEND", repr(str(ROOT / "backend")))


def runtime():
    return sys.modules[MODULE + ".runtime"]


@pytest.fixture
def fake_pip(tmp_path):
    script = tmp_path / "fake_pip.py"
    script.write_text(FAKE_PIP)
    return script


def test_set_up_backend_creates_the_env_installs_and_points_the_preferences_at_it(bpy, backend, fake_pip, tmp_path):
    venv = tmp_path / "venv"
    log = tmp_path / "pip-args.json"
    backend.backend_python = ""
    backend.venv_dir = str(venv)
    backend.base_python = sys.executable
    backend.backend_source = str(ROOT)
    backend.pip_args = "--extra-index-url https://download.pytorch.org/whl/cpu"
    backend.pip_command = f"{sys.executable} {fake_pip} {log} {venv} ok"
    assert bpy.ops.headcast.setup_backend("EXEC_DEFAULT") == {"FINISHED"}
    python = venv / "bin" / "python"
    assert python.is_file() and backend.backend_python == str(python)
    # pip ran as scripts/setup_env.sh does: torch, the requirements with the project's constraints,
    # MediaPipe and anny without their dependencies, then the source folder without dependencies;
    # every call with the extra arguments
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    head = ["install", "--disable-pip-version-check", "--progress-bar", "off"]
    extra = ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]
    reqs = ROOT / "requirements"
    assert calls == [[*head, "torch", *extra],
                     [*head, "-r", str(reqs / "backend.txt"), "-c", str(reqs / "constraints.txt"), *extra],
                     [*head, "--no-deps", "-r", str(reqs / "backend-nodeps.txt"), *extra],
                     [*head, "--no-deps", str(ROOT), *extra]]
    task = runtime().STATE.task
    assert task.state == "done"
    lines = list(task.lines)
    assert "  Downloading torch-2.13.0-cp311-none-linux_x86_64.whl (180.0 MB)" in lines
    assert "Successfully installed headcast-0.1.0 torch-2.13.0" in lines
    # the check step ran the new environment's own interpreter
    assert any(line.startswith("headcast 0.1.0 on Python 3.") for line in lines)
    level, text = runtime().STATE.message
    assert level == "INFO" and str(venv) in text and "headcast 0.1.0" in text
    # the open-head build cannot work in this torch-less env: a warning, not a failure
    assert task.warnings and "building the open head model failed" in task.warnings[0]


def test_set_up_backend_failure_shows_pips_last_lines(bpy, backend, fake_pip, tmp_path):
    venv = tmp_path / "venv"
    backend.venv_dir, backend.base_python, backend.backend_source = str(venv), sys.executable, str(ROOT)
    backend.pip_command = f"{sys.executable} {fake_pip} {tmp_path / 'log.json'} {venv} fail"
    before = backend.backend_python
    with pytest.raises(RuntimeError, match="No matching distribution found for torch"):
        bpy.ops.headcast.setup_backend("EXEC_DEFAULT")
    assert backend.backend_python == before  # still the working backend
    assert runtime().STATE.task.state == "error" and "installing torch" in runtime().STATE.task.error
    backend.backend_source = str(tmp_path)  # not a project
    with pytest.raises(RuntimeError, match="not a Python project"):
        bpy.ops.headcast.setup_backend("EXEC_DEFAULT")


def test_check_runs_doctor_with_the_preferences(bpy, backend, tmp_path):
    assert bpy.ops.headcast.check_backend("EXEC_DEFAULT") == {"FINISHED"}
    report = runtime().STATE.doctor
    assert report["headcast"] == "0.1.0" and report["device"] == "cpu"
    assert report["head_model"]["name"] == "headcast-synthetic"  # the preference reached the backend
    assert report["models"]["model"] == "synthetic"
    # a FLAME file that does not exist: the check says so, naming it
    backend.model, backend.flame_path = "flame", str(tmp_path / "generic_model.pkl")
    bpy.ops.headcast.check_backend("EXEC_DEFAULT")
    report = runtime().STATE.doctor
    assert report["ok"] is False and any("generic_model.pkl" in p for p in report["problems"])
    assert runtime().STATE.message[0] == "WARNING"
    # an interpreter that is not a backend: a clear failure, no report
    backend.backend_python = str(tmp_path / "python")
    with pytest.raises(RuntimeError, match="Check failed: the backend did not answer"):
        bpy.ops.headcast.check_backend("EXEC_DEFAULT")
    assert runtime().STATE.doctor is None and runtime().STATE.doctor_error


def test_the_extension_carries_the_backend_requirements(bpy, backend):
    """A wheel or a package name as the source: the requirement files come from the installed extension."""
    tasks = sys.modules[MODULE + ".tasks"]
    folder = tasks.requirement_files("headcast==0.1.0")
    assert folder == tasks.BUNDLED_REQUIREMENTS
    for name in ("backend.txt", "backend-nodeps.txt", "constraints.txt"):
        assert (folder / name).read_text() == (ROOT / "requirements" / name).read_text(), name
    steps = tasks.setup_steps(sys.executable, str(ROOT / "no-such-venv"), "headcast==0.1.0")
    install = [s for s in steps if s.label == "installing the backend"][0]
    assert install.argv[-2:] == ["--no-deps", "headcast==0.1.0"]
