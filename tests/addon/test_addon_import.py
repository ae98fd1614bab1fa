# SPDX-License-Identifier: GPL-3.0-or-later
"""Importing results into real Blender: geometry, camera, keys, drivers, re-import, failures, save/reload."""
import sys

import numpy as np
import pytest

from blender_checks import DATA_COLLECTIONS, MODULE, data_snapshot, frame_errors, model_frame_vertices

MESH_TOL = 1e-4  # 0.1 mm
PIXEL_TOL = 0.5


def importer():
    return sys.modules[MODULE + ".blender.importer"]


def result_module():
    return sys.modules[MODULE + ".result_file"]


def reference(fixtures_dir, name):
    with np.load(fixtures_dir / f"{name}.reference.npz") as npz:
        return {k: npz[k] for k in npz.files}


def run_import(bpy, path, **options):
    """The operator, as a user (or a script) runs it; returns the rig's collection and objects by role."""
    assert bpy.ops.headcast.import_result("EXEC_DEFAULT", filepath=str(path), **options) == {"FINISHED"}
    rig_name = result_module().load_result(path, posed_vertices=False).rig_name
    coll, roles = importer().find_rig(rig_name)
    return coll, roles


@pytest.mark.parametrize("animate", ["HEAD", "CAMERA"])
def test_every_frame_matches_the_backend_mesh_and_projection(bpy, scene, fixtures_dir, animate):
    coll, roles = run_import(bpy, fixtures_dir / "clip.headcast.npz", animate=animate)
    ref = reference(fixtures_dir, "clip")
    mesh_err, pixel_err = frame_errors(bpy, scene, roles["MESH"], roles["CAMERA"], ref)
    assert mesh_err < MESH_TOL and pixel_err < PIXEL_TOL, (mesh_err, pixel_err)
    # float32 Blender reaches far better than the contract; keep it that way
    assert mesh_err < 2e-6 and pixel_err < 0.01, (mesh_err, pixel_err)
    camera_moves = roles["CAMERA"].animation_data is not None and roles["CAMERA"].animation_data.action is not None
    head_moves = any("location" == fc.data_path for fc in _fcurves(roles["ARMATURE"]))
    assert (camera_moves, head_moves) == ((False, True) if animate == "HEAD" else (True, False))


def _fcurves(id_data):
    ad = id_data.animation_data
    if ad is None or ad.action is None:
        return []
    return list(ad.action.layers[0].strips[0].channelbag(ad.action_slot).fcurves)


def test_scene_settings_camera_and_movie_background(bpy, scene, fixtures_dir):
    coll, roles = run_import(bpy, fixtures_dir / "clip.headcast.npz")
    render = scene.render
    assert render.fps / render.fps_base == pytest.approx(25.0)
    assert (scene.frame_start, scene.frame_end) == (5, 34)  # source frames 4..33, Blender frame = index + 1
    assert (render.resolution_x, render.resolution_y, render.resolution_percentage) == (640, 480, 100)
    assert render.pixel_aspect_y / render.pixel_aspect_x == pytest.approx(1 / 0.98, rel=1e-6)
    cam = roles["CAMERA"].data
    assert scene.camera == roles["CAMERA"] and cam.sensor_fit == "HORIZONTAL"
    assert cam.lens == pytest.approx(1.3 * 640 * cam.sensor_width / 640, rel=1e-6)  # fx = 1.3 W
    assert cam.show_background_images and len(cam.background_images) == 1
    bg = cam.background_images[0]
    assert bg.source == "MOVIE_CLIP" and bg.clip is not None
    assert bg.clip.filepath.endswith("footage.mp4") and bg.clip.frame_start == 1
    assert tuple(bg.clip.size) == (640, 480) and bg.clip.frame_duration == 40
    assert scene.active_clip == bg.clip
    assert coll["headcast_licence"] == "Headcast synthetic model (CC0)"
    mesh = roles["MESH"].data
    assert len(mesh.vertices) == 5117 and len(mesh.polygons) == 10116 and mesh.uv_layers.active is not None
    assert all(p.use_smooth for p in mesh.polygons[:50])
    assert roles["MESH"].parent == roles["ARMATURE"]
    assert [b.name for b in roles["ARMATURE"].data.bones] == ["global", "neck", "jaw", "eye_left", "eye_right"]
    assert sorted(g.name for g in roles["MESH"].vertex_groups) == sorted(b.name for b in roles["ARMATURE"].data.bones)


def test_still_image_background_and_projected_footage_texture(bpy, scene, fixtures_dir):
    coll, roles = run_import(bpy, fixtures_dir / "clip.headcast.npz", footage_path=str(fixtures_dir / "still.png"),
                             footage_texture=True)
    bg = roles["CAMERA"].data.background_images[0]
    assert bg.source == "IMAGE" and bg.image.filepath.endswith("still.png")
    nodes = roles["MESH"].data.materials[0].node_tree.nodes
    tex = nodes["Footage"]
    assert tex.image == bg.image
    link = tex.inputs["Vector"].links[0]
    assert link.from_node.type == "TEX_COORD" and link.from_socket.name == "Window"
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    assert bsdf.inputs["Base Color"].links[0].from_node == tex


def test_image_folder_becomes_a_sequence_background(bpy, scene, fixtures_dir):
    coll, roles = run_import(bpy, fixtures_dir / "clip.headcast.npz", footage_path=str(fixtures_dir / "frames"))
    bg = roles["CAMERA"].data.background_images[0]
    assert bg.source == "MOVIE_CLIP" and bg.clip.source == "SEQUENCE" and bg.clip.frame_start == 1
    assert bg.clip.filepath.endswith("00000.png")


def test_shape_keys_names_ranges_and_linear_keys(bpy, scene, fixtures_dir):
    coll, roles = run_import(bpy, fixtures_dir / "clip.headcast.npz")
    result = result_module().load_result(fixtures_dir / "clip.headcast.npz")
    blocks = roles["MESH"].data.shape_keys.key_blocks
    names = [b.name for b in blocks]
    assert names[:3] == ["Basis", "exp_000", "exp_001"] and "eyelid_left" in names and "pose_jaw_01" in names
    assert len(names) == 1 + 100 + 2 + 36
    expr = result["expression"]
    for k in range(100):
        block = blocks[f"exp_{k:03d}"]
        assert block.slider_min <= min(-3.0, expr[:, k].min()) and block.slider_max >= max(3.0, expr[:, k].max())
    curves = {fc.data_path: fc for fc in _fcurves(roles["MESH"].data.shape_keys)}
    fc = curves['key_blocks["exp_007"].value']
    assert len(fc.keyframe_points) == 30
    assert {kp.interpolation for kp in fc.keyframe_points} == {"LINEAR"}
    # frames without a face (every 9th) are breakdown keys, and listed on the collection
    invalid = [i for i, kp in enumerate(fc.keyframe_points) if kp.type == "BREAKDOWN"]
    assert invalid == list(np.nonzero(~result["valid"])[0]) == [8, 17, 26]
    assert list(coll["headcast_invalid_frames"]) == [13, 22, 31]
    co = np.array([kp.co[:] for kp in fc.keyframe_points])
    np.testing.assert_allclose(co[:, 0], result["frame_indices"] + 1)
    np.testing.assert_allclose(co[:, 1], expr[:, 7], atol=1e-6)
    assert fc.evaluate(10.5) == pytest.approx((expr[5, 7] + expr[6, 7]) / 2, abs=1e-6)
    # correctives are keyed (for exporters) and driven (for posing); the driver wins and agrees
    rot = result["joint_rotations"]
    scene.frame_set(12)  # source frame 11 = position 7
    assert blocks["pose_jaw_01"].value == pytest.approx(rot[7, 2, 0, 1], abs=1e-5)
    assert curves['key_blocks["pose_jaw_01"].value'].evaluate(12) == pytest.approx(rot[7, 2, 0, 1], abs=1e-6)
    assert roles["MESH"].data.shape_keys.animation_data.drivers.find('key_blocks["pose_jaw_01"].value').driver.is_valid


def test_arkit_names_and_unit_ranges(bpy, scene, fixtures_dir):
    coll, roles = run_import(bpy, fixtures_dir / "arkit.headcast.npz")
    blocks = roles["MESH"].data.shape_keys.key_blocks
    assert blocks[1].name == "browDownLeft" and "jawOpen" in blocks and "exp_000" not in blocks
    assert (blocks["jawOpen"].slider_min, blocks["jawOpen"].slider_max) == (0.0, 1.0)
    assert scene.render.fps == 1 and scene.frame_start == scene.frame_end - 9
    assert roles["CAMERA"].data.background_images[0].source == "IMAGE"
    ref = reference(fixtures_dir, "arkit")
    mesh_err, pixel_err = frame_errors(bpy, scene, roles["MESH"], roles["CAMERA"], ref, positions=[0, 9])
    assert mesh_err < MESH_TOL and pixel_err < PIXEL_TOL


def test_pose_bone_locations_carry_the_expression_dependent_joints(bpy, scene, fixtures_dir):
    """FLAME's joints move with expression; the keyed bone locations are what makes the match exact."""
    coll, roles = run_import(bpy, fixtures_dir / "clip.headcast.npz")
    ref = reference(fixtures_dir, "clip")
    with_locations, _ = frame_errors(bpy, scene, roles["MESH"], roles["CAMERA"], ref, positions=range(0, 30, 3))
    for fc in _fcurves(roles["ARMATURE"]):
        if fc.data_path.startswith("pose.bones") and fc.data_path.endswith(".location"):
            fc.mute = True
    for bone in roles["ARMATURE"].pose.bones:
        bone.location = (0.0, 0.0, 0.0)
    without, _ = frame_errors(bpy, scene, roles["MESH"], roles["CAMERA"], ref, positions=range(0, 30, 3))
    assert with_locations < 2e-6 < 1e-5 < without, (with_locations, without)


def test_hand_posing_the_jaw_deforms_like_flame(bpy, scene, fixtures_dir):
    rf = result_module()
    path = fixtures_dir / "clip.headcast.npz"
    result = rf.load_result(path)
    for drive in (True, False):
        bpy.ops.wm.read_homefile(use_empty=True)
        coll, roles = run_import(bpy, path, drive_correctives=drive)
        arm, key = roles["ARMATURE"], roles["MESH"].data.shape_keys
        arm.animation_data.action = None  # hand posing: no keys on the rig
        key.animation_data.action = None
        for block in key.key_blocks[1:]:
            block.value = 0.0
        for bone in arm.pose.bones:
            bone.location, bone.rotation_quaternion = (0, 0, 0), (1, 0, 0, 0)
        # open the jaw 0.3 rad about the bone's local X and turn the neck a little
        arm.pose.bones["jaw"].rotation_quaternion = (np.cos(0.15), np.sin(0.15), 0.0, 0.0)
        arm.pose.bones["neck"].rotation_quaternion = (np.cos(0.1), 0.0, np.sin(0.1), 0.0)
        arm.location, arm.rotation_quaternion = (0, 0, 0), (1, 0, 0, 0)
        bpy.context.view_layer.update()
        got = model_frame_vertices(bpy, roles["MESH"])
        # expected: the numpy rig with zero expression/eyelids and these rotations (bone frames:
        # jaw local X = model X; neck points up so its local Y is the model's Y)
        arrays = {k: v[:1] if rf.SPECS_BY_KEY.get(k) and rf.SPECS_BY_KEY[k].group == "frame" else v
                  for k, v in result.arrays.items() if k != "metadata"}
        arrays["expression"] = np.zeros_like(arrays["expression"])
        arrays["eyelids"] = np.zeros_like(arrays["eyelids"])
        rot = np.tile(np.eye(3), (1, 5, 1, 1))
        c, s = np.cos(0.3), np.sin(0.3)
        rot[0, 2] = [[1, 0, 0], [0, c, -s], [0, s, c]]
        c, s = np.cos(0.2), np.sin(0.2)
        rot[0, 1] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
        arrays["joint_rotations"] = rot
        expected = rf.evaluate_rig(rf.HeadcastResult(arrays, result.metadata, validate=False))[0]
        err = np.abs(got - expected).max()
        if drive:
            assert err < 1e-5, err
            assert key.key_blocks["pose_jaw_12"].value == pytest.approx(-np.sin(0.3), abs=1e-6)
        else:
            assert err > 1e-4, err  # without drivers the correctives stay put and the mesh is off


def test_reimport_updates_the_rig_in_place(bpy, scene, fixtures_dir):
    coll, roles = run_import(bpy, fixtures_dir / "clip.headcast.npz")
    pointers = {role: obj.as_pointer() for role, obj in roles.items()}
    counts = {k: len(v) for k, v in data_snapshot(bpy).items() if k in DATA_COLLECTIONS}
    roles["MESH"].modifiers.new("UserSubsurf", "SUBSURF").levels = 0  # the user's own change survives
    coll2, roles2 = run_import(bpy, fixtures_dir / "newer.headcast.npz")
    assert coll2 == coll and {r: o.as_pointer() for r, o in roles2.items()} == pointers
    # nothing piles up: same number of data-blocks, and no unused leftovers of the old rig
    # (the newer clip zooms, so it has one more action: the camera's lens keys)
    after = {k: len(v) for k, v in data_snapshot(bpy).items() if k in DATA_COLLECTIONS}
    assert after == dict(counts, actions=counts["actions"] + 1)
    for kind in ("meshes", "armatures", "cameras", "materials", "actions", "shape_keys"):
        assert all(block.users > 0 for block in getattr(bpy.data, kind)), kind
    assert len([c for c in bpy.data.collections if c.get("headcast_rig") == "clip"]) == 1
    assert "UserSubsurf" in roles2["MESH"].modifiers
    assert (scene.frame_start, scene.frame_end) == (1, 20)
    # this clip zooms: lens and shift are keyed on the camera data
    assert {fc.data_path for fc in _fcurves(roles2["CAMERA"].data)} == {"lens", "shift_x", "shift_y"}
    ref = reference(fixtures_dir, "newer")
    mesh_err, pixel_err = frame_errors(bpy, scene, roles2["MESH"], roles2["CAMERA"], ref, positions=[0, 7, 19])
    assert mesh_err < MESH_TOL and pixel_err < PIXEL_TOL


def test_invalid_file_fails_clearly_and_creates_nothing(bpy, scene, fixtures_dir, tmp_path):
    rf = result_module()
    good = rf.load_result(fixtures_dir / "clip.headcast.npz")
    arrays = {k: v for k, v in good.arrays.items()}
    arrays["expression"] = arrays["expression"][:, :60]
    bad = tmp_path / "bad.headcast.npz"
    np.savez(bad, **arrays)
    before = data_snapshot(bpy)
    with pytest.raises(RuntimeError) as err:
        bpy.ops.headcast.import_result("EXEC_DEFAULT", filepath=str(bad))
    assert "bad.headcast.npz: expression has shape (30, 60)" in str(err.value)
    assert data_snapshot(bpy) == before


@pytest.mark.parametrize("fail_in", ["build_camera_data", "add_corrective_drivers", "apply_scene_settings",
                                     "_configure_mesh_object"])
def test_failure_midway_leaves_the_scene_as_it_was(bpy, scene, fixtures_dir, monkeypatch, fail_in):
    mod = importer()

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure")

    # a fresh import, then a re-import over an existing rig
    before = data_snapshot(bpy)
    monkeypatch.setattr(mod, fail_in, broken)
    with pytest.raises(RuntimeError, match="injected failure"):
        mod.import_result(bpy.context, str(fixtures_dir / "clip.headcast.npz"))
    assert data_snapshot(bpy) == before
    monkeypatch.undo()
    coll, roles = run_import(bpy, fixtures_dir / "clip.headcast.npz")
    mesh_data = roles["MESH"].data
    before = data_snapshot(bpy)
    monkeypatch.setattr(mod, fail_in, broken)
    with pytest.raises(RuntimeError, match="injected failure"):
        mod.import_result(bpy.context, str(fixtures_dir / "newer.headcast.npz"))
    assert data_snapshot(bpy) == before
    assert roles["MESH"].data == mesh_data
    ref = reference(fixtures_dir, "clip")
    mesh_err, _ = frame_errors(bpy, scene, roles["MESH"], roles["CAMERA"], ref, positions=[3])
    assert mesh_err < MESH_TOL


def test_save_and_reload_keep_everything(bpy, scene, fixtures_dir, tmp_path):
    run_import(bpy, fixtures_dir / "clip.headcast.npz", animate="CAMERA")
    blend = tmp_path / "rig.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_homefile(use_empty=True)
    assert importer().find_rig("clip") is None
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    scene = bpy.context.scene
    coll, roles = importer().find_rig("clip")
    ref = reference(fixtures_dir, "clip")
    mesh_err, pixel_err = frame_errors(bpy, scene, roles["MESH"], roles["CAMERA"], ref, positions=[0, 11, 29])
    assert mesh_err < MESH_TOL and pixel_err < PIXEL_TOL
    assert scene.render.fps / scene.render.fps_base == pytest.approx(25.0) and (scene.frame_start, scene.frame_end) == (5, 34)
    assert roles["CAMERA"].data.background_images[0].clip.filepath.endswith("footage.mp4")
    assert len(roles["MESH"].data.shape_keys.animation_data.drivers) == 36
