# SPDX-License-Identifier: GPL-3.0-or-later
"""The open MakeHuman head on a real photo, end to end: reconstruct the astronaut (default
settings, landmarks + mask: no network weights), import the result into Blender, and check
through Blender's own camera that the head's MediaPipe points lie on MediaPipe's detections.

The detections come from MediaPipe's face mesh run on the whole photo by the test helper,
independently of the pipeline's crop; the projection is the evaluated Blender mesh (armature
and shape keys) through ``world_to_camera_view``.
"""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from blender_checks import MODULE, ROOT, camera_pixels, evaluated_local
from job_support import BACKEND_PYTHON

# MediaPipe's face-mesh indices (canonical topology): eye corners and mouth corners / lip centres
EYE_CORNERS = (33, 133, 362, 263)
MOUTH = (61, 291, 13, 14)


@pytest.fixture(scope="module")
def open_head_result(tmp_path_factory, request):
    out = tmp_path_factory.mktemp("open_head_astronaut")
    if importlib.util.find_spec("torch") is not None and importlib.util.find_spec("mediapipe") is not None:
        from make_open_head_result import write_open_head_result

        write_open_head_result(out, request.getfixturevalue("open_head_pack"))
    else:
        if not os.path.isfile(BACKEND_PYTHON):
            pytest.skip(f"no backend interpreter at {BACKEND_PYTHON} (set HEADCAST_BACKEND_PYTHON)")
        subprocess.run([BACKEND_PYTHON, os.path.join(os.path.dirname(__file__), "make_open_head_result.py"), str(out)],
                       check=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT / "backend")})
    with np.load(out / "astronaut.check.npz") as npz:
        check = {k: npz[k] for k in npz.files}
    return out, check


def test_open_head_on_the_astronaut_lines_up_in_blender(bpy, scene, open_head_result, record_property):
    out, check = open_head_result
    assert str(check["mode"]) == "landmarks+mask"
    assert bpy.ops.headcast.import_result("EXEC_DEFAULT", filepath=str(out / "astronaut.headcast.npz")) == {"FINISHED"}
    importer = sys.modules[f"{MODULE}.blender.importer"]
    result_file = sys.modules[f"{MODULE}.result_file"]
    result = result_file.load_result(out / "astronaut.headcast.npz", posed_vertices=False)
    assert result.metadata["licence"].endswith("(CC0)") or "CC0" in result.metadata["licence"]
    coll, roles = importer.find_rig(result.rig_name)
    mesh, camera = roles["MESH"], roles["CAMERA"]

    # ARKit-named shape keys: the open head's expressions drive ARKit characters directly
    blocks = mesh.data.shape_keys.key_blocks
    assert "jawOpen" in blocks and "eyeBlinkLeft" in blocks and "mouthSmileRight" in blocks
    assert (scene.render.resolution_x, scene.render.resolution_y) == (512, 512)

    scene.frame_set(scene.frame_start)
    local, matrix = evaluated_local(bpy, mesh)
    world = local @ matrix[:3, :3].T + matrix[:3, 3]
    tri = result["faces"][check["faces"]]  # (L, 3) vertex ids of each embedded point's triangle
    points = np.einsum("lk,lkc->lc", check["bary"], world[tri])
    projected = camera_pixels(bpy, scene, camera, points)
    detected = check["detected"][check["landmark_ids"]]
    err = np.linalg.norm(projected - detected, axis=1)
    by_id = dict(zip(check["landmark_ids"].tolist(), err))
    record_property("mediapipe_reprojection_mean_px", float(err.mean()))
    record_property("reconstruct_seconds", float(check["seconds"]))
    print(f"open head on the astronaut: {len(err)} MediaPipe points, mean {err.mean():.2f} px, "
          f"median {np.median(err):.2f} px, max {err.max():.2f} px (512 px photo); "
          f"eye corners {np.mean([by_id[i] for i in EYE_CORNERS]):.2f} px, "
          f"mouth {np.mean([by_id[i] for i in MOUTH]):.2f} px; reconstruct {float(check['seconds']):.1f} s")
    # the face is ~200 px wide in the 512 px photo: a few pixels is a couple of percent of it
    assert err.mean() < 4.0, err.mean()
    assert max(by_id[i] for i in EYE_CORNERS) < 6.0, [by_id[i] for i in EYE_CORNERS]
    assert max(by_id[i] for i in MOUTH) < 6.0, [by_id[i] for i in MOUTH]
