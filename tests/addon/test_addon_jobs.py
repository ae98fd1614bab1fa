# SPDX-License-Identifier: GPL-3.0-or-later
"""The job operators in real Blender with a real backend process: photo, clip, several photos,
failures that must leave the scene alone, the GUI (timer) path driven by hand, and cancel."""
import importlib
import time

import numpy as np
import pytest

from blender_checks import MODULE, data_snapshot, model_frame_vertices


def addon_module(name):
    return importlib.import_module(f"{MODULE}.{name}")


def rig_of(path):
    rf = addon_module("result_file")
    result = rf.load_result(path)
    found = addon_module("blender.importer").find_rig(result.rig_name)
    assert found is not None, f"no rig {result.rig_name} in the scene"
    return result, found[0], found[1]


def test_reconstruct_face_imports_what_the_backend_wrote(bpy, scene, backend, job_inputs, tmp_path):
    out = tmp_path / "results" / "astronaut.headcast.npz"
    assert bpy.ops.headcast.reconstruct_face("EXEC_DEFAULT", filepath=str(job_inputs / "astronaut.png"),
                                             output=str(out)) == {"FINISHED"}
    result, coll, roles = rig_of(out)
    assert result.n_frames == 1 and coll["headcast_model"] == "headcast-synthetic"
    # the scene shows exactly the rig in the file: Blender's evaluated mesh against the numpy rig
    rf = addon_module("result_file")
    expected = rf.evaluate_rig(result)[0]
    bpy.context.scene.frame_set(int(result["frame_indices"][0]) + 1)
    assert np.abs(model_frame_vertices(bpy, roles["MESH"]) - expected).max() < 1e-4
    bg = roles["CAMERA"].data.background_images[0]
    assert bg.source == "IMAGE" and bg.image.filepath.endswith("astronaut.png")
    level, text = addon_module("runtime").STATE.message
    assert level == "INFO" and "headcast-synthetic" in text and "landmarks+mask" in text
    job = addon_module("runtime").STATE.last_job
    assert job.state == "done" and job.params["images"] == [str(job_inputs / "astronaut.png")]


def test_a_known_lens_in_the_panel_reaches_the_fit_and_the_camera(bpy, scene, backend, job_inputs, tmp_path):
    """Known Lens: the backend holds that focal length, so the imported camera has that lens."""
    scene.headcast.known_lens, scene.headcast.lens_mm, scene.headcast.sensor_mm = True, 85.0, 36.0
    try:
        out = tmp_path / "lens.headcast.npz"
        assert bpy.ops.headcast.reconstruct_face("EXEC_DEFAULT", filepath=str(job_inputs / "astronaut.png"),
                                                 output=str(out)) == {"FINISHED"}
    finally:
        scene.headcast.known_lens = False
    job = addon_module("runtime").STATE.last_job
    assert job.params["settings"]["fit.focal_mm"] == 85.0 and job.params["settings"]["fit.sensor_mm"] == 36.0
    _, _, roles = rig_of(out)
    cam = roles["CAMERA"].data
    assert abs(cam.lens * 36.0 / cam.sensor_width - 85.0) < 1e-3, (cam.lens, cam.sensor_width)


def test_the_selected_heads_identity_is_held_when_tracking_a_clip(bpy, scene, backend, job_inputs, tmp_path):
    """Identity: the eyedropper takes the selected head's result file, the track holds that identity
    (the clip's rig has the photo rig's neutral mesh), and a missing file stops the job before it starts."""
    photo_out, clip_out = tmp_path / "photo.headcast.npz", tmp_path / "clip.headcast.npz"
    assert bpy.ops.headcast.reconstruct_face("EXEC_DEFAULT", filepath=str(job_inputs / "astronaut.png"),
                                             output=str(photo_out)) == {"FINISHED"}
    photo, _, roles = rig_of(photo_out)
    with bpy.context.temp_override(active_object=roles["MESH"]):
        assert bpy.ops.headcast.use_rig_identity() == {"FINISHED"}
    assert scene.headcast.identity_path == str(photo_out)
    try:
        assert bpy.ops.headcast.track_clip("EXEC_DEFAULT", filepath=str(job_inputs / "clip.mp4"),
                                           output=str(clip_out), max_frames=3) == {"FINISHED"}
        job = addon_module("runtime").STATE.last_job
        assert job.params["settings"]["fit.identity"] == str(photo_out)
        clip, _, _ = rig_of(clip_out)
        np.testing.assert_allclose(clip["shape"], photo["shape"], atol=1e-6)
        np.testing.assert_allclose(clip["v_template"], photo["v_template"], atol=1e-6)
        # a missing identity file: reported, no job, nothing created
        scene.headcast.identity_path = str(tmp_path / "gone.headcast.npz")
        before = data_snapshot(bpy)
        with pytest.raises(RuntimeError, match="identity result file not found"):
            bpy.ops.headcast.track_clip("EXEC_DEFAULT", filepath=str(job_inputs / "clip.mp4"),
                                        output=str(tmp_path / "never.headcast.npz"))
        assert addon_module("runtime").STATE.last_job is job
        level, text = addon_module("runtime").STATE.message
        assert level == "ERROR" and "identity result file not found" in text and "gone.headcast.npz" in text
        assert data_snapshot(bpy) == before and not (tmp_path / "never.headcast.npz").exists()
    finally:
        scene.headcast.identity_path = ""
    # nothing selected that belongs to a rig: the eyedropper says so and changes nothing
    with bpy.context.temp_override(active_object=None), pytest.raises(RuntimeError, match="Select an imported"):
        bpy.ops.headcast.use_rig_identity()
    assert scene.headcast.identity_path == ""


def test_track_clip_takes_the_scenes_active_clip(bpy, scene, backend, job_inputs, tmp_path):
    clip = bpy.data.movieclips.load(str(job_inputs / "clip.mp4"))
    scene.active_clip = clip
    scene.headcast.output_dir = str(tmp_path)
    scene.headcast.animate = "CAMERA"
    assert bpy.ops.headcast.track_clip("EXEC_DEFAULT") == {"FINISHED"}
    result, coll, roles = rig_of(tmp_path / "clip.headcast.npz")
    assert result.n_frames == 6 and (scene.frame_start, scene.frame_end) == (1, 6)
    assert roles["CAMERA"].data.background_images[0].clip == clip  # the loaded clip is reused, not duplicated
    assert len(bpy.data.movieclips) == 1
    # CAMERA animation: the head stays put, the camera carries the motion
    assert roles["CAMERA"].animation_data.action is not None
    rf = addon_module("result_file")
    for position in (0, 5):
        bpy.context.scene.frame_set(position + 1)
        got = model_frame_vertices(bpy, roles["MESH"])
        assert np.abs(got - rf.evaluate_rig(result, frames=[position])[0]).max() < 1e-4


@pytest.mark.parametrize("case", ["no_face", "missing_model", "missing_photo"])
def test_failing_job_reports_the_error_and_leaves_the_scene_unchanged(bpy, scene, backend, job_inputs, tmp_path,
                                                                      case):
    photo = job_inputs / ("wall.png" if case == "no_face" else "astronaut.png")
    if case == "missing_model":
        backend.model, backend.flame_path = "flame", str(tmp_path / "FLAME" / "generic_model.pkl")
    if case == "missing_photo":
        photo = tmp_path / "nope.png"
    existing = bpy.data.objects.new("user_object", None)  # the user's own work stays as it was
    scene.collection.objects.link(existing)
    before = data_snapshot(bpy)
    with pytest.raises(RuntimeError) as err:
        bpy.ops.headcast.reconstruct_face("EXEC_DEFAULT", filepath=str(photo), output=str(tmp_path / "r.headcast.npz"))
    assert data_snapshot(bpy) == before
    assert not (tmp_path / "r.headcast.npz").exists()
    runtime = addon_module("runtime")
    level, text = runtime.STATE.message
    assert level == "ERROR" and text.splitlines()[0] in str(err.value)
    expected = {"no_face": ("no face found", "wall.png"),
                "missing_model": ("FLAME model not found", "generic_model.pkl"),
                "missing_photo": ("photo not found", "nope.png")}[case]
    assert all(part in text for part in expected), text
    if case != "missing_photo":  # that one never reaches the backend
        assert runtime.STATE.last_job.error["code"] == {"no_face": "no_face", "missing_model": "model_error"}[case]
    assert "Traceback" not in text


def test_gui_path_imports_from_the_timer_and_cancel_stops_a_track(bpy, scene, backend, job_inputs, tmp_path):
    """What a button press does: submit, return at once; the timer callback finishes the job.

    Timers never fire in bpy module mode, so the test calls the timer's body itself.
    """
    runtime = addon_module("runtime")
    photos = [{"name": "astronaut.png"}, {"name": "astronaut_mirrored.png"}]
    out = tmp_path / "photos.headcast.npz"
    before = data_snapshot(bpy)
    t0 = time.monotonic()
    assert bpy.ops.headcast.reconstruct_photos("EXEC_DEFAULT", directory=str(job_inputs), files=photos,
                                               output=str(out), run_async=True) == {"FINISHED"}
    assert time.monotonic() - t0 < 5.0, "a GUI job must not block"
    assert bpy.app.timers.is_registered(runtime.poll_timer)
    assert data_snapshot(bpy) == before and len(runtime.STATE.pending) == 1
    job = runtime.STATE.last_job
    assert job.params["images"] == [str(job_inputs / p["name"]) for p in photos]
    seen = set()
    deadline = time.monotonic() + 300
    while runtime.STATE.pending and time.monotonic() < deadline:
        interval = runtime.poll_timer()
        if runtime.STATE.pending:
            assert interval == runtime.TIMER_INTERVAL  # busy: the timer keeps itself alive
        seen.add(job.state)
        time.sleep(0.1)
    assert not runtime.STATE.pending and job.state == "done" and "running" in seen
    result, coll, roles = rig_of(out)
    assert result.n_frames == 2  # one frame per photo, one shared identity
    # each frame shows its own photo behind the camera
    cam = roles["CAMERA"].data
    assert [bg.image.filepath for bg in cam.background_images] == [str(job_inputs / p["name"]) for p in photos]
    for frame, visible in ((1, [1.0, 0.0]), (2, [0.0, 1.0])):
        bpy.context.scene.frame_set(frame)
        assert [bg.alpha for bg in cam.background_images] == visible
    assert runtime.STATE.message[0] == "INFO" and "2/2 frames" in runtime.STATE.message[1]
    assert runtime.poll_timer() is None  # idle: the timer unregisters itself

    # a track started from the GUI and cancelled from the panel imports nothing
    before = data_snapshot(bpy)
    assert bpy.ops.headcast.track_clip("EXEC_DEFAULT", filepath=str(job_inputs / "clip.mp4"),
                                       output=str(tmp_path / "clip.headcast.npz"), run_async=True) == {"FINISHED"}
    track = runtime.STATE.last_job
    while track.stage not in ("first_frame", "online") and time.monotonic() < deadline:
        runtime.poll_timer()
        time.sleep(0.05)
    assert bpy.ops.headcast.cancel("EXEC_DEFAULT") == {"FINISHED"}
    while runtime.STATE.pending and time.monotonic() < deadline:
        runtime.poll_timer()
        time.sleep(0.05)
    assert track.state == "cancelled"
    assert data_snapshot(bpy) == before and not (tmp_path / "clip.headcast.npz").exists()
    assert runtime.STATE.message[0] == "WARNING" and "cancelled" in runtime.STATE.message[1]
    assert bpy.ops.headcast.cancel("EXEC_DEFAULT") == {"CANCELLED"}  # nothing left to cancel


def test_panel_draws_in_every_state(bpy, addon, backend):
    """The panels' draw code (normally only run by a GUI) against a recording layout."""
    runtime = addon_module("runtime")
    client_mod = addon_module("client")
    panels = addon_module("panels")
    assert {panels.HEADCAST_PT_main.bl_space_type, panels.HEADCAST_PT_image.bl_space_type,
            panels.HEADCAST_PT_clip.bl_space_type} == {"VIEW_3D", "IMAGE_EDITOR", "CLIP_EDITOR"}
    for cls in panels.CLASSES:
        assert cls.is_registered and cls.bl_region_type == "UI"
    job = client_mod.Job(id="fake", cmd="track", params={}, label="clip.mp4", state="running", stage="online",
                         frame=9, total=20, eta=12.0)
    tasks = addon_module("tasks")
    setup = tasks.ProcessTask("Backend set-up", [tasks.Step("installing the backend", ["pip"])])
    setup.state, setup.message = "running", "Collecting torch"
    saved = dict(runtime.STATE.client.jobs), runtime.STATE.message, runtime.STATE.task
    try:
        for state in ("idle", "running", "error"):
            runtime.STATE.client.jobs = {"fake": job} if state == "running" else {}
            runtime.STATE.task = setup if state == "running" else None
            runtime.STATE.message = ("ERROR", "clip.mp4 failed: no face found\nsecond line") if state == "error" \
                else ("", "")
            for cls in (panels.HEADCAST_PT_main, panels.HEADCAST_PT_image, panels.HEADCAST_PT_clip):
                layout = Recorder()
                cls.draw(FakePanel(layout), FakeContext(bpy, cls.bl_space_type))
                ops = layout.calls("operator")
                assert "headcast.reconstruct_face" in ops and "headcast.track_clip" in ops
                assert "headcast.reconstruct_photos" in ops and "headcast.import_result" in ops
                if state == "running":
                    bar, setup_bar = layout.calls("progress")
                    assert bar["factor"] == pytest.approx(9 / 20)
                    assert bar["text"] == "clip.mp4: tracking, frame 10/20, ETA 12 s"
                    assert setup_bar["text"] == "Backend set-up: installing the backend (1/1)"
                    assert "Collecting torch" in layout.calls("label")
                    assert "headcast.cancel" in ops
                else:
                    assert not layout.calls("progress") and "headcast.cancel" not in ops
                if state == "error":
                    assert any("no face found" in t for t in layout.calls("label"))
            backend_layout = Recorder()
            panels.HEADCAST_PT_backend.draw(FakePanel(backend_layout), FakeContext(bpy, "VIEW_3D"))
            assert {"headcast.check_backend", "preferences.addon_show"} <= set(backend_layout.calls("operator"))
            prefs_layout = Recorder()
            type(backend).draw(FakePanel(prefs_layout, backend), None)
            assert {"headcast.check_backend", "headcast.setup_backend"} <= set(prefs_layout.calls("operator"))
    finally:
        runtime.STATE.client.jobs, runtime.STATE.message, runtime.STATE.task = saved


class Recorder:
    """Stands in for bpy.types.UILayout: checks each call against the real UILayout's RNA (argument
    names, icon names, operator ids, property names) and records it."""

    def __init__(self, log=None):
        self.log = [] if log is None else log

    def calls(self, kind):
        if kind == "progress":
            return [kw for k, kw in self.log if k == "progress"]
        key = {"operator": "operator", "label": "text"}[kind]
        return [kw.get(key) for k, kw in self.log if k == kind]

    def _record(self, kind, **kwargs):
        import bpy

        function = bpy.types.UILayout.bl_rna.functions[kind]
        params = {p.identifier: p for p in function.parameters}
        assert set(kwargs) <= set(params), (kind, set(kwargs) - set(params))
        for name in ("icon", "type"):
            if name in kwargs:
                assert kwargs[name] in params[name].enum_items.keys(), (kind, name, kwargs[name])
        self.log.append((kind, kwargs))
        return Recorder(self.log)

    def box(self):
        return self._record("box")

    def column(self, **kwargs):
        return self._record("column", **kwargs)

    def row(self, **kwargs):
        return self._record("row", **kwargs)

    def operator(self, operator, **kwargs):
        import bpy

        module, name = operator.split(".")
        getattr(getattr(bpy.ops, module), name).get_rna_type()  # raises KeyError for an unknown operator
        self._record("operator", operator=operator, **kwargs)
        return type("OperatorProperties", (), {})()

    def label(self, **kwargs):
        self._record("label", **kwargs)

    def progress(self, **kwargs):
        self._record("progress", **kwargs)

    def prop(self, data, property, **kwargs):
        rna = data._data if isinstance(data, FakePanel) else data
        assert property in rna.bl_rna.properties, property
        self._record("prop", data=None, property=property, **kwargs)


class FakePanel:
    def __init__(self, layout, data=None):
        self.layout = layout
        self._data = data

    def __getattr__(self, name):  # preferences draw() reads its own properties
        return getattr(self._data, name)


class FakeContext:
    def __init__(self, bpy, space_type):
        self.scene = bpy.context.scene
        self.space_data = type("Space", (), {"type": space_type})()
