# SPDX-License-Identifier: GPL-3.0-or-later
"""Footage to result file, end to end on CPU: photos, several photos, a clip, resume."""
import json
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from headcast.errors import Cancelled, NoFaceError
from headcast.io import evaluate_rig, load_result, model_to_camera, project_to_pixels
from headcast.pipeline import reconstruct, track

from .conftest import fast_env, headcast_cmd, rig_vertices_reference


def _mediapipe_points(image_rgb):
    from headcast.priors import prepare_footage
    prepared = prepare_footage(image_rgb)
    return prepared.landmarks.in_original()[0]


def test_cli_reconstruct_astronaut_with_tiny_checkpoints(tmp_path, astronaut_png, tiny_checkpoints, synthetic_model):
    """The full path: CLI, JSON events, both networks (random weights), synthetic model, result file."""
    out = tmp_path / "astronaut.headcast.npz"
    proc = subprocess.run(headcast_cmd("reconstruct", astronaut_png, "-o", out, "--model", "synthetic", "--json",
                                       "--uv-checkpoint", tiny_checkpoints / "uv.ckpt",
                                       "--normals-checkpoint", tiny_checkpoints / "normals.ckpt"),
                          capture_output=True, text=True, env=fast_env(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    stages = {e["stage"] for e in events if e["event"] == "progress"}
    assert {"model", "detect", "priors", "fit", "write"} <= stages
    result = events[-1]
    assert result["event"] == "result" and result["mode"] == "pixel3dmm" and result["frames"] == 1
    r = load_result(out)
    assert r.metadata["network_weights"]["uv"].endswith("uv.ckpt")
    assert r.metadata["licence"] == "Headcast synthetic model (CC0)"
    from headcast.io import sidecar_path
    assert json.loads(sidecar_path(out).read_text())["model_name"] == "headcast-synthetic"
    # the numpy rig reproduces the torch model's posed vertices
    cam = model_to_camera(r, evaluate_rig(r))
    np.testing.assert_allclose(cam, rig_vertices_reference(out, synthetic_model), atol=1e-5)


def test_reconstruct_lines_up_with_the_face(fast_settings, tmp_path, astronaut_png, synthetic_model):
    """Landmark + mask mode on the astronaut: the fitted head's eyes and mouth sit on hers."""
    import skimage.data

    res = reconstruct(astronaut_png, tmp_path / "a.headcast.npz",
                      settings=fast_settings(**{"models.model": "synthetic", "fit.steps": 120, "fit.render_size": 192}))
    assert res.mode == "landmarks+mask" and res.valid_frames == 1
    # no normal or uv cue to judge the noise by: the priors stay as tuned, and the user is told
    assert "cue noise (median residual): not measured; identity/expression priors x1" in res.notes
    r = load_result(res.path)
    assert tuple(r.metadata["image_size"]) == (512, 512)
    px = project_to_pixels(r, model_to_camera(r, evaluate_rig(r)))[0]
    detected = _mediapipe_points(skimage.data.astronaut())
    # eye centres: mean of the eyeball front vertices vs MediaPipe's iris centres (original pixels)
    for mask, iris in (("left_eyeball", 473), ("right_eyeball", 468)):
        ids = synthetic_model.masks[mask]
        front = ids[np.argsort(synthetic_model.v_template[ids, 2])[-5:]]
        err = np.linalg.norm(px[front].mean(0) - detected[iris])
        assert err < 6.0, f"{mask}: {err:.1f} px from the detected iris"


def test_photos_of_other_sizes_share_the_first_photos_image_size(fast_settings, tmp_path, astronaut_png,
                                                                  synthetic_model):
    """A half-size copy of the photo: its camera is expressed in the first photo's pixels, so the head
    it fits projects onto the same place of the 512 px frame."""
    import cv2
    import skimage.data

    small = tmp_path / "small.png"
    cv2.imwrite(str(small), cv2.resize(cv2.imread(str(astronaut_png)), (256, 256), interpolation=cv2.INTER_AREA))
    res = reconstruct([astronaut_png, small], tmp_path / "two.headcast.npz",
                      settings=fast_settings(**{"models.model": "synthetic", "fit.steps": 120, "fit.render_size": 192}))
    r = load_result(res.path)
    assert tuple(r.metadata["image_size"]) == (512, 512)
    px = project_to_pixels(r, model_to_camera(r, evaluate_rig(r)))
    detected = _mediapipe_points(skimage.data.astronaut())
    for frame in (0, 1):
        for mask, iris in (("left_eyeball", 473), ("right_eyeball", 468)):
            ids = synthetic_model.masks[mask]
            front = ids[np.argsort(synthetic_model.v_template[ids, 2])[-5:]]
            err = np.linalg.norm(px[frame, front].mean(0) - detected[iris])
            assert err < 6.0, f"photo {frame}, {mask}: {err:.1f} px from the detected iris"
    # the crop box of the small photo is in the same (first photo's) pixels
    assert np.abs(r.arrays["crop_boxes"][1] - r.arrays["crop_boxes"][0]).max() < 12.0


def test_a_known_lens_is_held_through_the_crops(fast_settings, tmp_path, astronaut_png, synthetic_model):
    """fit.focal_mm on a fit.sensor_mm sensor: each photo's camera keeps f = focal / sensor x its width,
    through its own crop, and the half-size copy's in the first photo's pixels (so twice its own)."""
    import cv2

    small = tmp_path / "small.png"
    cv2.imwrite(str(small), cv2.resize(cv2.imread(str(astronaut_png)), (256, 256), interpolation=cv2.INTER_AREA))
    res = reconstruct([astronaut_png, small], tmp_path / "lens.headcast.npz",
                      settings=fast_settings(**{"models.model": "synthetic", "fit.steps": 120, "fit.render_size": 192,
                                                "fit.focal_mm": 85.0, "fit.sensor_mm": 24.0}))
    r = load_result(res.path)
    np.testing.assert_allclose(r.arrays["intrinsics"][:, :2], 85.0 / 24.0 * 512, rtol=1e-5)
    # and the head is still where the face is
    px = project_to_pixels(r, model_to_camera(r, evaluate_rig(r)))[0]
    ids = synthetic_model.masks["left_eyeball"]
    front = ids[np.argsort(synthetic_model.v_template[ids, 2])[-5:]]
    assert np.linalg.norm(px[front].mean(0) - _mediapipe_points(cv2.imread(str(astronaut_png))[..., ::-1])[473]) < 8.0


def test_reconstruct_from_flame_format_files(fast_settings, tmp_path, astronaut_png, synthetic_dir):
    """The real FLAME file layout (chumpy pickle + assets beside it) goes through the same path."""
    import shutil

    flame_dir = tmp_path / "FLAME2020"
    shutil.copytree(synthetic_dir, flame_dir)
    res = reconstruct(astronaut_png, tmp_path / "f.headcast.npz",
                      settings=fast_settings(**{"models.model": "flame", "models.flame": str(flame_dir)}))
    r = load_result(res.path)
    assert r.metadata["licence"].startswith("FLAME 2020")
    assert (flame_dir / "generic_model.mediapipe_embedding.npz").is_file() or any(
        "mediapipe" in p.name for p in flame_dir.iterdir()), "the embedding is cached next to the model"


def test_several_photos_share_one_identity(fast_settings, tmp_path, astronaut_png):
    import cv2

    img = cv2.imread(str(astronaut_png))
    second = tmp_path / "mirrored.png"
    cv2.imwrite(str(second), img[:, ::-1])
    res = reconstruct([astronaut_png, second], tmp_path / "multi.headcast.npz",
                      settings=fast_settings(**{"models.model": "synthetic"}))
    r = load_result(res.path)
    assert res.n_frames == 2 and r.arrays["expression"].shape[0] == 2
    # one identity for both (the rig has one neutral), separate poses: the mirrored photo's head turns the other way
    R = r.arrays["head_rotation"]
    assert not np.allclose(R[0], R[1], atol=1e-4)


def test_photo_without_a_face_is_a_clear_error(fast_settings, tmp_path):
    from headcast.synthetic_footage import write_image

    blank = write_image(np.full((300, 400, 3), 120, np.uint8), tmp_path / "wall.png")
    with pytest.raises(NoFaceError, match="no face"):
        reconstruct(blank, tmp_path / "x.headcast.npz", settings=fast_settings(**{"models.model": "synthetic"}))
    assert not (tmp_path / "x.headcast.npz").exists()


def test_track_clip_and_numpy_rig_matches_backend(fast_settings, tmp_path, synthetic_clip_mp4, synthetic_model):
    res = track(synthetic_clip_mp4, tmp_path / "clip.headcast.npz", settings=fast_settings(**{"models.model": "synthetic"}))
    r = load_result(res.path)
    n = r.arrays["expression"].shape[0]
    assert n == 8 and res.valid_frames == 8 and r.metadata["fps"] == pytest.approx(25.0)
    assert tuple(r.metadata["image_size"]) == (640, 480)
    np.testing.assert_allclose(model_to_camera(r, evaluate_rig(r)), rig_vertices_reference(res.path, synthetic_model),
                               atol=1e-5)
    # one static crop box for the clip, a shared focal length
    assert np.ptp(r.arrays["crop_boxes"], axis=0).max() == 0
    assert np.ptp(r.arrays["intrinsics"][:, 0]) < 1e-6
    assert not (tmp_path / "clip.headcast.npz.partial").exists(), "partial frames are removed once the result exists"


def _arrays(path):
    r = load_result(path)
    return {k: r.arrays[k] for k in ("expression", "joint_rotations", "head_rotation", "head_translation", "intrinsics",
                                     "v_template")}


def test_cancel_keeps_finished_frames_and_resume_matches(fast_settings, tmp_path, synthetic_clip_mp4):
    settings = fast_settings(**{"models.model": "synthetic"})
    full = track(synthetic_clip_mp4, tmp_path / "full.headcast.npz", settings=settings)
    out = tmp_path / "resumed.headcast.npz"
    stop = threading.Event()

    def progress(stage, frame, total, step, loss):
        if stage == "online" and frame >= 4:
            stop.set()

    with pytest.raises(Cancelled):
        track(synthetic_clip_mp4, out, settings=settings, progress=progress, cancel=stop)
    partial = out.with_name(out.name + ".partial")
    kept = sorted(partial.glob("0*.npz"))
    assert len(kept) >= 4 and not out.exists()
    seen = []
    track(synthetic_clip_mp4, out, settings=settings, progress=lambda s, f, t, step, loss: seen.append((s, f, loss)))
    refit = [f for s, f, loss in seen if s in ("online", "first_frame") and f >= 0 and loss == loss]
    assert refit and min(refit) >= len(kept), "finished frames are not redone"
    a, b = _arrays(full.path), _arrays(out)
    for key in a:
        np.testing.assert_allclose(b[key], a[key], atol=1e-5, err_msg=key)


def test_killed_process_resumes_to_the_same_result(tmp_path, synthetic_clip_mp4, fast_settings):
    """kill -9 in the middle of the online pass, run again: same result as an uninterrupted run."""
    env = fast_env(tmp_path)
    ref = tmp_path / "ref.headcast.npz"
    subprocess.run(headcast_cmd("track", synthetic_clip_mp4, "-o", ref, "--model", "synthetic"), env=env, check=True,
                   capture_output=True, timeout=600)
    out = tmp_path / "killed.headcast.npz"
    proc = subprocess.Popen(headcast_cmd("track", synthetic_clip_mp4, "-o", out, "--model", "synthetic", "--json"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    partial = out.with_name(out.name + ".partial")
    deadline = time.time() + 300
    while time.time() < deadline and len(list(partial.glob("0*.npz"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    assert len(list(partial.glob("0*.npz"))) >= 3
    done = subprocess.run(headcast_cmd("track", synthetic_clip_mp4, "-o", out, "--model", "synthetic"), env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = _arrays(ref), _arrays(out)
    for key in a:
        np.testing.assert_allclose(b[key], a[key], atol=1e-5, err_msg=key)


def test_resumed_track_reuses_cached_network_maps(fast_settings, tmp_path, synthetic_clip_mp4, tiny_checkpoints,
                                                  monkeypatch):
    """With network weights, a cancelled track keeps its predicted maps (at the fit size, float16) next to
    its finished frames; the resumed run predicts no frame again and ends where an uninterrupted run ends.
    Other weights make the partial folder stale."""
    from headcast.priors import PriorPredictor

    predicted = []
    real_predict = PriorPredictor.predict

    def counting_predict(self, crops):
        predicted.append(len(crops))
        return real_predict(self, crops)

    monkeypatch.setattr(PriorPredictor, "predict", counting_predict)
    settings = fast_settings(**{"models.model": "synthetic", "models.uv_checkpoint": str(tiny_checkpoints / "uv.ckpt"),
                                "models.normals_checkpoint": str(tiny_checkpoints / "normals.ckpt")})
    full = track(synthetic_clip_mp4, tmp_path / "full.headcast.npz", settings=settings)
    assert full.mode == "pixel3dmm" and sum(predicted) == 8

    out = tmp_path / "resumed.headcast.npz"
    stop = threading.Event()
    with pytest.raises(Cancelled):
        track(synthetic_clip_mp4, out, settings=settings, cancel=stop,
              progress=lambda stage, frame, *_: stop.set() if stage == "online" and frame >= 3 else None)
    maps = sorted((out.with_name(out.name + ".partial") / "priors").glob("maps_*.npz"))
    assert len(maps) == 8
    with np.load(maps[0]) as z:
        assert z["uv"].dtype == np.float16 and z["uv"].shape == (128, 128, 2) and z["normals"].shape == (128, 128, 3)
    predicted.clear()
    track(synthetic_clip_mp4, out, settings=settings)
    assert predicted == [], "no frame is predicted again"
    a, b = _arrays(full.path), _arrays(out)
    for key in a:
        np.testing.assert_allclose(b[key], a[key], atol=1e-5, err_msg=key)

    # a partial folder made with other weights is not reused
    with pytest.raises(Cancelled):
        track(synthetic_clip_mp4, out, settings=settings, cancel=stop,
              progress=lambda stage, frame, *_: stop.set() if stage == "online" and frame >= 3 else None)
    other = tmp_path / "other-uv.ckpt"
    other.write_bytes((tiny_checkpoints / "uv.ckpt").read_bytes())
    predicted.clear()
    stop.clear()
    track(synthetic_clip_mp4, out, settings=fast_settings(**{"models.model": "synthetic", "models.uv_checkpoint": str(other),
                                                             "models.normals_checkpoint": str(tiny_checkpoints / "normals.ckpt")}))
    assert sum(predicted) == 8


def test_noise_note_reports_what_the_probe_set():
    """With dense cues the note gives the measured noise in pixels of the fit size, the prior
    scale and the 2-D vertex term's weight."""
    from types import SimpleNamespace

    from headcast.pipeline import _noise_note

    fit = SimpleNamespace(info={"cue_noise": {"normal_deg": 7.14, "uv": 1.4 / 256}, "prior_scale": 1.0,
                                "uv_vertex_scale": 0.25})
    assert _noise_note(fit, 512) == ("cue noise (median residual): normals 7.1 deg, uv correspondences 2.80 px; "
                                     "identity/expression priors x1; uv correspondences weighted x0.25")
    # with the smooth part the prior scale was judged by (results from this version on)
    fit.info["cue_noise"]["normal_smooth_deg"] = 4.26
    assert _noise_note(fit, 512).startswith("cue noise (median residual): normals 7.1 deg (smooth part 4.3 deg), "
                                            "uv correspondences 2.80 px; ")


def test_an_identity_from_photos_is_held_for_a_clip_and_a_photo(fast_settings, tmp_path, astronaut_png,
                                                                synthetic_clip_mp4, synthetic_model):
    """fit.identity names an earlier result of the same person: a track and a reconstruction
    then keep its identity (the same code and the same neutral mesh), and a file that is not
    a result of this model is refused naming the file and what is wrong."""
    from headcast.errors import InputError, MissingFileError
    from headcast.io import HeadcastResult, save_result
    from headcast.io.writer import identity_template

    source = reconstruct(astronaut_png, tmp_path / "photos.headcast.npz",
                         settings=fast_settings(**{"models.model": "synthetic"}))
    ident = load_result(source.path)
    assert np.abs(ident.arrays["shape"]).max() > 0.05  # a solved, non-trivial identity
    held = fast_settings(**{"models.model": "synthetic", "fit.identity": str(source.path)})
    tracked = track(synthetic_clip_mp4, tmp_path / "clip.headcast.npz", settings=held)
    clip = load_result(tracked.path)
    photo = load_result(reconstruct(astronaut_png, tmp_path / "again.headcast.npz", settings=held).path)
    assert f"identity held from {source.path}" in tracked.notes  # said, and recorded in the file
    assert clip.metadata["fit"]["identity_from"] == str(source.path.resolve())
    for r in (clip, photo):
        np.testing.assert_allclose(r.arrays["shape"], ident.arrays["shape"], atol=1e-6)
        np.testing.assert_allclose(r.arrays["v_template"], ident.arrays["v_template"], atol=1e-6)
    # the neutral mesh is the model's template plus the held identity, recomputed independently
    np.testing.assert_allclose(clip.arrays["v_template"], identity_template(synthetic_model, ident.arrays["shape"]),
                               atol=1e-6)

    def altered(name: str, **changes):
        arrays = {k: v for k, v in ident.arrays.items() if k != "metadata"}
        metadata = dict(ident.metadata)
        for key, value in changes.items():
            (metadata if key == "model_name" else arrays)[key] = value
        return save_result(tmp_path / name, HeadcastResult(arrays, metadata), sidecar=False)

    other_model = altered("other.headcast.npz", model_name="FLAME 2020")
    other_file = altered("moved.headcast.npz", v_template=ident.arrays["v_template"] + np.float32(0.002),
                         joints_rest=ident.arrays["joints_rest"] + np.float32(0.002))
    not_npz = tmp_path / "notes.headcast.npz"
    not_npz.write_text("not a result")
    cases = [(other_model, InputError, "made with the head model 'FLAME 2020'"),
             (other_file, InputError, "another file of the head model"),
             (not_npz, InputError, "not a usable Headcast result"),
             (tmp_path / "missing.headcast.npz", MissingFileError, "identity result file not found")]
    for path, error, text in cases:
        with pytest.raises(error, match=text) as info:
            reconstruct(astronaut_png, tmp_path / "bad.headcast.npz",
                        settings=fast_settings(**{"models.model": "synthetic", "fit.identity": str(path)}))
        assert str(path) in str(info.value)
    assert not (tmp_path / "bad.headcast.npz").exists()
