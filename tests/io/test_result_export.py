# SPDX-License-Identifier: GPL-3.0-or-later
"""OBJ/PLY per frame and the neutral GLB, read back with an independent reader (trimesh)."""
import numpy as np
import trimesh

from headcast.io import evaluate_rig, export_frames, export_glb_neutral, load_result, model_to_camera, split_uv_seams


def _read_obj(path):
    verts, uvs, faces, faces_uv = [], [], [], []
    for line in path.read_text().splitlines():
        tag, *rest = line.split()
        if tag == "v":
            verts.append([float(x) for x in rest])
        elif tag == "vt":
            uvs.append([float(x) for x in rest])
        elif tag == "f":
            faces.append([int(c.split("/")[0]) - 1 for c in rest])
            faces_uv.append([int(c.split("/")[1]) - 1 for c in rest])
    return np.array(verts), np.array(uvs), np.array(faces), np.array(faces_uv)


def test_obj_per_frame_holds_the_posed_mesh_with_uvs(tmp_path, result_path):
    result = load_result(result_path)
    paths = export_frames(result, tmp_path, "obj", frames=[0, 29])
    assert [p.name for p in paths] == ["talking_head_000005.obj", "talking_head_000034.obj"]
    expected = evaluate_rig(result, [0, 29])
    for path, want in zip(paths, expected):
        verts, uvs, faces, faces_uv = _read_obj(path)
        np.testing.assert_allclose(verts, want, atol=1e-6)  # 7 significant digits of ~0.2 m
        np.testing.assert_array_equal(faces, result["faces"])
        np.testing.assert_array_equal(faces_uv, result["faces_uv"])
        np.testing.assert_allclose(uvs, result["uv"], atol=1e-6)
        assert "licence: Headcast synthetic model (CC0)" in path.read_text().splitlines()[1]


def test_ply_in_camera_space_overlays_the_footage(tmp_path, result_path):
    result = load_result(result_path)
    paths = export_frames(result, tmp_path, "ply", frames=[3], space="camera")
    mesh = trimesh.load(paths[0], process=False)
    want = model_to_camera(result, evaluate_rig(result, [3]), [3])[0]
    np.testing.assert_allclose(mesh.vertices, want, atol=1e-12)
    np.testing.assert_array_equal(mesh.faces, result["faces"])
    assert b"comment Headcast" in paths[0].read_bytes()[:400]


def test_neutral_glb_keeps_positions_faces_and_uv_seams(tmp_path, result_path):
    result = load_result(result_path)
    path = export_glb_neutral(result, tmp_path / "neutral.glb")
    scene = trimesh.load(path, process=False)
    (mesh,) = scene.geometry.values()
    faces, faces_uv = result["faces"].astype(np.int64), result["faces_uv"].astype(np.int64)
    # every triangle corner keeps its position and its uv
    np.testing.assert_allclose(mesh.vertices[mesh.faces], result["v_template"][faces], atol=1e-7)
    np.testing.assert_allclose(mesh.visual.uv[mesh.faces], result["uv"][faces_uv], atol=1e-7)
    n_pairs = len({(int(v), int(t)) for v, t in zip(faces.ravel(), faces_uv.ravel())})
    assert len(mesh.vertices) == n_pairs > result.n_vertices  # seams split, nothing else


def test_split_uv_seams_against_a_dictionary():
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 20, size=(40, 3))
    faces_uv = rng.integers(0, 25, size=(40, 3))
    vid, tid, new_faces = split_uv_seams(faces, faces_uv)
    seen = {}
    for (a, b) in zip(faces.ravel(), faces_uv.ravel()):
        seen.setdefault((a, b), len(seen))
    assert len(vid) == len(seen)
    np.testing.assert_array_equal(vid[new_faces], faces)
    np.testing.assert_array_equal(tid[new_faces], faces_uv)
