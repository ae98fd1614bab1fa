# SPDX-License-Identifier: GPL-3.0-or-later
"""Blender tests with the real ``bpy`` wheel: build the extension zip, install it, import results.

Runs on whichever bpy the interpreter has (4.5 in the project venv). To check another version,
give ``--bpy-version`` (or ``HEADCAST_BPY_VERSION``) and run under an interpreter with that bpy,
e.g. for 5.0::

    python3.11 -m venv /tmp/bpy50 && /tmp/bpy50/bin/pip install bpy==5.0.1 pytest "numpy<2"
    /tmp/bpy50/bin/python -m pytest tests/addon --bpy-version 5.0 -p no:cacheprovider

Without torch in that interpreter, the result files and backend references are written by
the project's venv (``.venv/bin/python``, or ``HEADCAST_BACKEND_PYTHON``) in a subprocess.
The job tests (operators, client, batch) always run the backend as a process of that venv,
with this checkout's ``backend/`` on its path and light fitting settings (``job_support.py``).
"""
import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from blender_checks import MODULE, REPO, ROOT  # noqa: E402
from job_support import BACKEND_PYTHON, FAST_ENV  # noqa: E402

# Before bpy is imported anywhere: keep Blender's user config, extensions and caches out of ~.
_USER_RESOURCES = tempfile.mkdtemp(prefix="headcast_blender_user_")
os.environ["BLENDER_USER_RESOURCES"] = _USER_RESOURCES
atexit.register(shutil.rmtree, _USER_RESOURCES, True)

if importlib.util.find_spec("bpy") is None:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def bpy(request):
    import bpy as bpy_module

    wanted = request.config.getoption("--bpy-version", default=os.environ.get("HEADCAST_BPY_VERSION", ""))
    have = ".".join(str(v) for v in bpy_module.app.version[:2])
    if wanted and wanted != have:
        pytest.fail(f"--bpy-version {wanted} asked for, but this interpreter has bpy {bpy_module.app.version_string}")
    return bpy_module


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory):
    out = tmp_path_factory.mktemp("extension")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_extension.py"), "--out", str(out)],
                   check=True, capture_output=True, timeout=120)
    (zip_path,) = out.glob("headcast-*.zip")
    return zip_path


@pytest.fixture(scope="session")
def addon(bpy, extension_zip):
    """The built zip installed and enabled as a real extension; disabled at the end of the session.

    (bpy 4.5 can hang at interpreter exit when classes stay registered.)
    """
    import addon_utils

    result = bpy.ops.extensions.package_install_files(filepath=str(extension_zip), repo=REPO,
                                                      enable_on_install=True)
    assert result == {"FINISHED"}
    module = sys.modules[MODULE]
    yield module
    if MODULE in bpy.context.preferences.addons:
        addon_utils.disable(MODULE, default_set=True)


@pytest.fixture
def scene(bpy, addon):
    """A fresh empty scene (the extension stays enabled) at frame 1."""
    bpy.ops.wm.read_homefile(use_empty=True)
    return bpy.context.scene


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory, request):
    """Result files, backend references and footage from ``make_results.py``."""
    out = tmp_path_factory.mktemp("headcast_results")
    if importlib.util.find_spec("torch") is not None:
        from make_results import write_fixtures

        write_fixtures(out, model=request.getfixturevalue("synthetic_model"))
    else:
        python = os.environ.get("HEADCAST_BACKEND_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
        subprocess.run([python, str(HERE / "make_results.py"), str(out)], check=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "backend")})
    return out


# --- the backend the job tests run ---------------------------------------------------------------

@pytest.fixture(scope="session")
def backend_env(tmp_path_factory):
    """Environment for backend processes: this checkout's backend, fast settings, private config and cache."""
    if not Path(BACKEND_PYTHON).is_file():
        pytest.skip(f"no backend interpreter at {BACKEND_PYTHON} (set HEADCAST_BACKEND_PYTHON)")
    home = tmp_path_factory.mktemp("backend_home")
    return {"PYTHONPATH": str(ROOT / "backend"), "HEADCAST_CONFIG": str(home / "no-config.toml"),
            "HEADCAST_CACHE": str(home / "cache"), "OMP_NUM_THREADS": "2", **FAST_ENV}


@pytest.fixture(scope="session")
def job_inputs(tmp_path_factory, request):
    """Photos, a clip and broken inputs from ``make_inputs.py``."""
    out = tmp_path_factory.mktemp("job_inputs")
    if importlib.util.find_spec("torch") is not None:
        from make_inputs import write_inputs

        write_inputs(out, model=request.getfixturevalue("synthetic_model"))
    else:
        subprocess.run([BACKEND_PYTHON, str(HERE / "make_inputs.py"), str(out)], check=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "backend")})
    return out


@pytest.fixture
def backend(addon, backend_env):
    """The add-on's preferences pointed at the project's backend with the synthetic model.

    Set afresh for every test (tests change them); the worker process itself lives on between
    tests because its interpreter and environment stay the same.
    """
    prefs = bpy_preferences(addon)
    prefs.backend_python = BACKEND_PYTHON
    prefs.backend_env = "; ".join(f"{k}={v}" for k, v in backend_env.items())
    prefs.model, prefs.device = "synthetic", "CONFIG"
    prefs.flame_path = prefs.uv_checkpoint = prefs.normals_checkpoint = ""
    prefs.venv_dir = prefs.base_python = prefs.backend_source = prefs.pip_args = prefs.pip_command = ""
    runtime = sys.modules[MODULE + ".runtime"]
    runtime.STATE.message = ("", "")
    yield prefs
    runtime.STATE.pending.clear()
    runtime.stop_timer()


def bpy_preferences(addon):
    import bpy

    return bpy.context.preferences.addons[MODULE].preferences
