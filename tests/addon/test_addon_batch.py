# SPDX-License-Identifier: GPL-3.0-or-later
"""``scripts/batch.py`` as a user runs it: a separate process, one good and one broken input."""
import importlib
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from blender_checks import MODULE, ROOT, model_frame_vertices
from job_support import BACKEND_PYTHON

EXPORT_MAGIC = {"glb": b"glTF", "fbx": b"Kaydara FBX Binary", "usdc": b"PXR-USDC", "abc": b"Ogawa"}


def read_glb(path):
    """The JSON chunk of a binary glTF (header, then a length-prefixed JSON chunk)."""
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    chunk_length, chunk_type = struct.unpack_from("<I4s", data, 12)
    assert chunk_type == b"JSON"
    return json.loads(data[20:20 + chunk_length])


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory, job_inputs, backend_env):
    out = tmp_path_factory.mktemp("batch")
    env = {**os.environ, **backend_env, "HEADCAST_BACKEND_PYTHON": BACKEND_PYTHON}
    env.pop("BLENDER_USER_RESOURCES", None)  # the script keeps its own
    # an identity to hold: a quick (20-step) reconstruction of the photo, unlike what the batch would solve
    identity = tmp_path_factory.mktemp("identity") / "person.headcast.npz"
    subprocess.run([BACKEND_PYTHON, "-m", "headcast.cli", "reconstruct", str(job_inputs / "astronaut.png"),
                    "--model", "synthetic", "--steps", "20", "-o", str(identity)], check=True, capture_output=True,
                   env=env, timeout=300)
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "batch.py"), str(job_inputs / "astronaut.png"),
                          str(job_inputs / "broken.mp4"), "--out", str(out), "--export", "glb,fbx",
                          "--export", "usd", "--export", "abc", "--model", "synthetic", "--focal-mm", "85",
                          "--identity", str(identity)],
                         capture_output=True, text=True, timeout=600, env=env)
    return run, out, identity


def test_batch_writes_blend_exports_and_a_report_with_the_error(bpy, scene, batch_run, job_inputs):
    run, out, identity = batch_run
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]  # 1: some inputs failed
    report = json.loads((out / "report.json").read_text())
    good, bad = report["inputs"]
    assert good["status"] == "ok" and good["kind"] == "reconstruct" and good["error"] is None
    assert (good["frames"], good["valid_frames"], good["model"]) == (1, 1, "headcast-synthetic")
    assert good["mode"] == "landmarks+mask" and good["licence"] == "Headcast synthetic model (CC0)"
    assert {"fit", "detect", "model"} <= set(good["backend_timings"])
    assert {"job_s", "save_s", "export_glb_s", "total_s"} <= set(good["timings"])
    assert bad["status"] == "error" and bad["kind"] == "track" and bad["frames"] is None
    assert bad["error"]["code"] == "unreadable_media" and bad["error"]["file"].endswith("broken.mp4")
    assert "broken.mp4" in bad["error"]["message"] and not bad["outputs"]
    assert report["backend"]["protocol"] == 1 and report["exports"] == ["glb", "fbx", "usd", "abc"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("report")) == sorted(
        ["astronaut.headcast.npz", "astronaut.headcast.json", "astronaut.blend", "astronaut.glb", "astronaut.fbx",
         "astronaut.usdc", "astronaut.abc"])
    text = (out / "report.txt").read_text()
    assert "1 of 2 inputs done, 1 failed" in text
    assert "OK     astronaut: reconstruct, 1/1 frames" in text and "ERROR  broken: track: [unreadable_media]" in text

    for name, magic in EXPORT_MAGIC.items():
        assert (out / f"astronaut.{name}").read_bytes()[:len(magic)] == magic, name
    gltf = read_glb(out / "astronaut.glb")
    (skin,) = gltf["skins"]
    assert len(skin["joints"]) == 5
    head_mesh = max(gltf["meshes"], key=lambda m: len(m["primitives"][0].get("targets", [])))
    assert len(head_mesh["primitives"][0]["targets"]) >= 100  # the expression shape keys
    assert any(node.get("camera") is not None for node in gltf["nodes"])

    # the saved .blend opens with the rig, and its mesh is the rig in the result file
    bpy.ops.wm.open_mainfile(filepath=str(out / "astronaut.blend"))
    importer = importlib.import_module(f"{MODULE}.blender.importer")
    rf = importlib.import_module(f"{MODULE}.result_file")
    coll, roles = importer.find_rig("astronaut")
    result = rf.load_result(out / "astronaut.headcast.npz")
    bpy.context.scene.frame_set(1)
    assert np.abs(model_frame_vertices(bpy, roles["MESH"]) - rf.evaluate_rig(result)[0]).max() < 1e-4
    assert roles["CAMERA"].data.background_images[0].image.filepath.endswith("astronaut.png")
    # --focal-mm 85: the lens was held, so the camera is an 85 mm lens on a 36 mm sensor
    cam = roles["CAMERA"].data
    assert abs(cam.lens * 36.0 / cam.sensor_width - 85.0) < 1e-3, (cam.lens, cam.sensor_width)
    # --identity: the held identity is the one in the identity file
    held = rf.load_result(identity)
    np.testing.assert_allclose(result["shape"], held["shape"], atol=1e-6)
    np.testing.assert_allclose(result["v_template"], held["v_template"], atol=1e-6)


def test_batch_usage_errors(bpy, tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "batch.py"), "x.png", "--out", str(tmp_path),
                          "--export", "obj"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "unknown export format 'obj'" in run.stderr
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "batch.py"), "x.png"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and "--out" in run.stderr
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "batch.py"), "x.png", "--out", str(tmp_path),
                          "--focal-mm", "-3"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--focal-mm" in run.stderr
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "batch.py"), "x.png", "--out", str(tmp_path),
                          "--identity", str(tmp_path / "nobody.headcast.npz")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and "--identity: no such result file" in run.stderr and "nobody" in run.stderr
