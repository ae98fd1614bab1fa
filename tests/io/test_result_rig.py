# SPDX-License-Identifier: GPL-3.0-or-later
"""The rig stored in a result file, evaluated with numpy alone, reproduces the torch backend."""
import ast
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from headcast.flame import HeadLayer
from headcast.io import evaluate_rig, load_result, model_to_camera, project_to_pixels, rest_joints
from headcast.render import project_points

RESULT_FILE_PY = Path(__file__).resolve().parents[2] / "backend" / "headcast" / "io" / "result_file.py"


def backend_forward(model, shape, frames):
    """HeadLayer in float64 on the model's own (unbaked) bases: the reference for every frame."""
    n = frames.expression.shape[0]
    layer = HeadLayer(model, n_shape=len(shape), n_expr=frames.expression.shape[1], dtype=torch.float64)
    with torch.no_grad():
        return layer(torch.as_tensor(shape).expand(n, -1), torch.as_tensor(frames.expression),
                     torch.as_tensor(frames.joint_rotations), None, torch.as_tensor(frames.eyelids))


@pytest.mark.parametrize("which", ["float32 file", "float64 in memory"])
def test_numpy_rig_reproduces_backend_posed_vertices(which, synthetic_model, clip_params, result_path, result64):
    shape, frames, _ = clip_params
    result = load_result(result_path) if which == "float32 file" else result64
    expected = backend_forward(synthetic_model, shape, frames).vertices.numpy()
    got = evaluate_rig(result)
    assert got.shape == expected.shape == (30, synthetic_model.n_vertices, 3)
    per_frame = np.abs(got - expected).max(axis=(1, 2))
    # float32 storage costs ~1e-8 m; float64 must agree to rounding.
    assert per_frame.max() < (1e-5 if which == "float32 file" else 1e-10), per_frame
    # the correctives, eyelids and jaw really move the mesh, so the match is not trivial
    assert np.abs(expected - expected[:, :1].mean()).max() > 0.05
    assert np.abs(expected[1:] - expected[:-1]).max() > 1e-3
    # a frame subset evaluates the same as the whole clip
    np.testing.assert_allclose(evaluate_rig(result, [3, 17]), got[[3, 17]], atol=1e-12)


def test_stored_posed_vertices_are_the_backends(clip_params, synthetic_model, result_path):
    shape, frames, _ = clip_params
    expected = backend_forward(synthetic_model, shape, frames).vertices.numpy()
    stored = load_result(result_path)["posed_vertices"]
    assert stored.dtype == np.float32
    assert np.abs(stored - expected).max() < 1e-6


def test_rest_joints_follow_expression_and_eyelids(synthetic_model, clip_params, result64):
    shape, frames, _ = clip_params
    n = frames.expression.shape[0]
    layer = HeadLayer(synthetic_model, n_shape=len(shape), dtype=torch.float64)
    with torch.no_grad():
        shaped = layer.shaped(torch.as_tensor(shape).expand(n, -1), torch.as_tensor(frames.expression),
                              torch.as_tensor(frames.eyelids)).numpy()
    expected = np.einsum("jv,nvc->njc", synthetic_model.j_regressor, shaped)
    got = rest_joints(result64)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    # they do differ from the neutral joints, which is why the file keeps the regressor
    assert np.abs(got - result64["joints_rest"]).max() > 1e-5


def test_projection_matches_the_renderers_pinhole(synthetic_model, clip_params, result64):
    shape, frames, _ = clip_params
    verts = evaluate_rig(result64)
    cam = model_to_camera(result64, verts)
    # independent: rotate with torch, project with headcast.render.project_points
    rot = torch.as_tensor(frames.head_rotation)
    cam_t = (rot[:, None] @ torch.as_tensor(verts)[..., None])[..., 0] + torch.as_tensor(frames.head_translation)[:, None]
    fx, fy, cx, cy = (torch.as_tensor(frames.intrinsics[:, k]) for k in range(4))
    screen = project_points(cam_t, fx, fy, cx, cy).numpy()
    np.testing.assert_allclose(cam, cam_t.numpy(), atol=1e-12)
    np.testing.assert_allclose(project_to_pixels(result64, cam), screen[..., :2], atol=1e-9)
    assert (cam[..., 2] > 0.3).all()  # the synthetic clip keeps the head in front of the camera


def test_result_file_module_needs_only_numpy_and_the_standard_library():
    tree = ast.parse(RESULT_FILE_PY.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports would break the copy inside the Blender extension"
            imported.add(node.module.split(".")[0])
    foreign = {m for m in imported if m not in sys.stdlib_module_names and m != "numpy"}
    assert not foreign, foreign
    assert "numpy" in imported
