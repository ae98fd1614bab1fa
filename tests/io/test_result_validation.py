# SPDX-License-Identifier: GPL-3.0-or-later
"""Round trips, and precise errors for every way a result file can be wrong."""
import copy
import json
import zipfile

import numpy as np
import pytest

from headcast.io import (ARRAY_SPECS, FORMAT_VERSION, HeadcastResult, ResultFileError, load_result, save_result,
                         sidecar_path, write_result)
from headcast.io.synthetic import synthetic_frames


def test_round_trip_keeps_every_array_and_the_metadata(tmp_path, result64):
    path = save_result(tmp_path / "clip.headcast.npz", result64)
    back = load_result(path)
    assert set(back.arrays) == set(result64.arrays)
    for key, arr in result64.arrays.items():
        assert back[key].dtype == arr.dtype, key
        np.testing.assert_array_equal(back[key], arr, err_msg=key)
    assert back.metadata == result64.metadata
    # plain numpy, no pickle, reads every key
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == set(result64.arrays)
        assert json.loads(str(npz["metadata"]))["rig_name"] == "talking_head"


def test_metadata_and_sidecar_describe_the_clip(result_path, synthetic_model):
    result = load_result(result_path)
    meta = result.metadata
    assert meta["format_version"] == FORMAT_VERSION == int(result["format_version"])
    assert meta["licence"] == synthetic_model.licence and meta["model_name"] == synthetic_model.name
    assert meta["source_path"] == "/footage/talking_head.mp4" and meta["source_kind"] == "video"
    assert result.image_size == (640, 480) and result.fps == 25.0
    assert meta["network_weights"] == {"uv": "uv.ckpt", "normals": "normals.ckpt"}
    assert meta["headcast_version"]
    side = json.loads(sidecar_path(result_path).read_text())
    assert sidecar_path(result_path).name == "talking_head.headcast.json"
    assert side["licence"] == meta["licence"] and side["n_frames"] == 30
    assert side["n_valid_frames"] == 30 - 4  # frames 7, 14, 21, 28 are flagged
    assert side["frame_range"] == [5, 34]
    assert side["arrays"]["expr_basis"] == f"float32 {(synthetic_model.n_vertices, 3, 100)}"
    assert result.expr_names[:2] == ["exp_000", "exp_001"] and result.joint_names[2] == "jaw"


def test_posed_vertices_can_be_skipped_but_are_still_checked(tmp_path, result64):
    lazy = load_result(save_result(tmp_path / "a.headcast.npz", result64, sidecar=False), posed_vertices=False)
    assert "posed_vertices" not in lazy and lazy.n_frames == 30
    arrays = dict(result64.arrays, posed_vertices=result64["posed_vertices"][:, :100])
    bad = tmp_path / "b.headcast.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ResultFileError, match=r"posed_vertices has shape \(30, 100, 3\), expected \(N, V, 3\)"):
        load_result(bad, posed_vertices=False)


def _rot_x(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _with(arrays, key, fn):
    out = dict(arrays)
    out[key] = fn(np.array(out[key]))
    return out


def _set(arr, index, value):
    arr[index] = value
    return arr


# (case id, change to the arrays, expected words in the message)
ARRAY_CASES = [
    ("missing key", lambda a: {k: v for k, v in a.items() if k != "weights"}, "missing required array 'weights'"),
    ("missing pair", lambda a: {k: v for k, v in a.items() if k != "faces_uv"}, "uv is present but faces_uv is missing"),
    ("eyelids without basis", lambda a: {k: v for k, v in a.items() if k != "eyelid_basis"},
     "eyelids is present but eyelid_basis is missing"),
    ("unknown key", lambda a: dict(a, expresion=a["expression"]), "unknown keys ['expresion']"),
    ("wrong dtype", lambda a: _with(a, "faces", lambda x: x.astype(np.float32)), "faces has dtype float32, expected integer"),
    ("wrong rank", lambda a: _with(a, "intrinsics", lambda x: x[:, :, None]), "intrinsics has shape (30, 4, 1), expected 2 dimensions (N, 4)"),
    ("Ke mismatch", lambda a: _with(a, "expression", lambda x: x[:, :50]),
     "expression has shape (30, 50), expected (N, Ke) = (30, 100); Ke = 100 comes from expr_basis"),
    ("V mismatch", lambda a: _with(a, "weights", lambda x: x[:-1]), "weights has shape"),
    ("pose basis size", lambda a: _with(a, "pose_basis", lambda x: x[..., :27]),
     "pose_basis has shape (5117, 3, 27), expected (V, 3, P) = (5117, 3, 36)"),
    ("N mismatch", lambda a: _with(a, "valid", lambda x: x[:-2]), "valid has shape (28,), expected (N,) = (30,)"),
    ("NaN", lambda a: _with(a, "expression", lambda x: _set(x, (4, 7), np.nan)), "expression has a non-finite value at index [4, 7]"),
    ("face index", lambda a: _with(a, "faces", lambda x: _set(x, (0, 0), 99999)), "faces index vertices outside 0..5116"),
    ("uv index", lambda a: _with(a, "faces_uv", lambda x: _set(x, (0, 0), -1)), "faces_uv index uv coordinates outside"),
    ("parents order", lambda a: _with(a, "parents", lambda x: _set(x, 1, 3)), "must start with -1 and list every parent before its child"),
    ("duplicate names", lambda a: _with(a, "joint_names", lambda x: _set(x, 4, "jaw")), "joint_names repeats ['jaw']"),
    ("not a rotation", lambda a: _with(a, "joint_rotations", lambda x: _set(x, (12, 2), 1.1 * np.eye(3))),
     "joint_rotations of frame 12 is not a rotation"),
    ("reflection", lambda a: _with(a, "head_rotation", lambda x: _set(x, 3, np.diag([1.0, 1.0, -1.0]))),
     "head_rotation of frame 3 is not a rotation"),
    ("focal", lambda a: _with(a, "intrinsics", lambda x: _set(x, (9, 1), 0.0)), "intrinsics of frame 9 have fx or fy <= 0"),
    ("frame order", lambda a: _with(a, "frame_indices", lambda x: _set(x, 3, 2)), "frame_indices must be non-negative and strictly increasing"),
    ("weights", lambda a: _with(a, "weights", lambda x: _set(x, (10, 0), x[10, 0] + 0.5)), "weights of vertex 10 sum to"),
    ("rest joints", lambda a: _with(a, "joints_rest", lambda x: x + 0.001), "joints_rest differs from joint_regressor @ v_template"),
    ("crop box", lambda a: _with(a, "crop_boxes", lambda x: x[:, [2, 1, 0, 3]]), "crop_boxes must be (x_min, y_min, x_max, y_max)"),
    ("no frames", lambda a: {k: (np.asarray(v)[:0] if ARRAY_BY_KEY[k].group == "frame" else v) for k, v in a.items()},
     "the result holds no frames"),
]
ARRAY_BY_KEY = {s.key: s for s in ARRAY_SPECS}


@pytest.mark.parametrize("change, words", [c[1:] for c in ARRAY_CASES], ids=[c[0] for c in ARRAY_CASES])
def test_bad_arrays_are_reported_precisely(tmp_path, result64, change, words):
    arrays = change({k: v for k, v in result64.arrays.items() if k != "metadata"})
    path = tmp_path / "bad.headcast.npz"
    np.savez(path, metadata=np.array(json.dumps(result64.metadata)), **arrays)
    with pytest.raises(ResultFileError) as err:
        load_result(path)
    assert str(err.value).startswith(str(path) + ": ")
    assert words in str(err.value)


def _meta(change):
    def apply(meta):
        meta = copy.deepcopy(meta)
        change(meta)
        return meta
    return apply


META_CASES = [
    ("missing fps", _meta(lambda m: m.pop("fps")), "metadata lacks the field 'fps'"),
    ("image size", _meta(lambda m: m.update(image_size=[640])), "metadata image_size is [640]"),
    ("image size type", _meta(lambda m: m.update(image_size=[640.0, 480])), "expected [width, height] positive integers"),
    ("fps sign", _meta(lambda m: m.update(fps=-25)), "metadata fps is -25"),
    ("licence type", _meta(lambda m: m.update(licence=None)), "metadata field 'licence' is None, expected str"),
    ("version", _meta(lambda m: m.update(format_version=2)), "metadata format_version 2 differs"),
    ("frame sources", _meta(lambda m: m.update(frame_sources=["a.png", 3])), "frame_sources must be a list of paths"),
]


@pytest.mark.parametrize("change, words", [c[1:] for c in META_CASES], ids=[c[0] for c in META_CASES])
def test_bad_metadata_is_reported_precisely(tmp_path, result64, change, words):
    arrays = {k: v for k, v in result64.arrays.items() if k != "metadata"}
    path = tmp_path / "bad.headcast.npz"
    np.savez(path, metadata=np.array(json.dumps(change(result64.metadata))), **arrays)
    with pytest.raises(ResultFileError, match="^" + str(path).replace(".", r"\.")) as err:
        load_result(path)
    assert words in str(err.value)


def test_unreadable_files_are_reported(tmp_path, result64):
    with pytest.raises(ResultFileError, match="no such file"):
        load_result(tmp_path / "missing.headcast.npz")
    text = tmp_path / "text.headcast.npz"
    text.write_text("hello")
    with pytest.raises(ResultFileError, match="not a readable NumPy .npz archive"):
        load_result(text)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ResultFileError, match="single .npy array"):
        load_result(single)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ResultFileError, match="missing required array 'format_version'"):
        load_result(other)
    arrays = {k: v for k, v in result64.arrays.items()}
    newer = tmp_path / "newer.headcast.npz"
    np.savez(newer, **dict(arrays, format_version=np.array(FORMAT_VERSION + 1)))
    with pytest.raises(ResultFileError, match="format version 2 by a newer Headcast"):
        load_result(newer)
    pickled = tmp_path / "pickled.headcast.npz"
    np.savez(pickled, **dict(arrays, expr_names=np.array([{"a": 1}] * 100, dtype=object)))
    with pytest.raises(ResultFileError, match="'expr_names' cannot be read without pickle"):
        load_result(pickled)
    good = save_result(tmp_path / "good.headcast.npz", result64, compress=False)
    data = good.read_bytes()
    cut = tmp_path / "cut.headcast.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ResultFileError, match="cut.headcast.npz"):
        load_result(cut)
    bad_json = tmp_path / "json.headcast.npz"
    np.savez(bad_json, **dict(arrays, metadata=np.array("{not json")))
    with pytest.raises(ResultFileError, match="metadata is not valid JSON"):
        load_result(bad_json)


def test_writer_refuses_inconsistent_parameters_naming_the_target(tmp_path, synthetic_model, clip_params):
    shape, frames, clip = clip_params
    short = synthetic_frames(synthetic_model, 30, seed=2)
    short.head_translation = short.head_translation[:20]
    target = tmp_path / "out.headcast.npz"
    with pytest.raises(ResultFileError, match=r"out\.headcast\.npz: head_translation has shape \(20, 3\)"):
        write_result(target, synthetic_model, shape, short, clip)
    assert not target.exists() and not list(tmp_path.iterdir())


def test_a_failed_save_leaves_no_partial_file(tmp_path, result64, monkeypatch):
    target = tmp_path / "out.headcast.npz"

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", broken)
    with pytest.raises(OSError, match="disk full"):
        save_result(target, result64)
    assert not list(tmp_path.iterdir())


def test_extension_keys_are_allowed(tmp_path, result64):
    arrays = dict(result64.arrays, x_pipeline_debug=np.arange(3))
    result = HeadcastResult({k: v for k, v in arrays.items() if k != "metadata"}, result64.metadata)
    back = load_result(save_result(tmp_path / "x.headcast.npz", result))
    np.testing.assert_array_equal(back["x_pipeline_debug"], np.arange(3))
    assert zipfile.is_zipfile(tmp_path / "x.headcast.npz")


def test_docs_describe_every_key_with_its_shape():
    import re
    from pathlib import Path

    from headcast.io.result_file import METADATA_FIELDS, _pretty_shape

    doc = (Path(__file__).resolve().parents[2] / "docs" / "result-format.md").read_text()
    arrays_part, meta_part = doc.split("\n## Arrays\n")[1].split("\n## Metadata\n")

    def table_rows(text):
        return {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", text, flags=re.MULTILINE)}

    rows = table_rows(arrays_part)
    for spec in ARRAY_SPECS:
        assert spec.key in rows, f"docs/result-format.md lacks {spec.key}"
        cells = [c.strip() for c in rows[spec.key].strip("|").split("|")]
        assert cells[2] == _pretty_shape(spec.shape), (spec.key, cells[2])
        assert ("*optional*" in rows[spec.key]) == (not spec.required), spec.key
    rows = table_rows(meta_part.split("\n## ")[0])
    for name, (_types, required, _doc) in METADATA_FIELDS.items():
        assert name in rows, f"docs/result-format.md lacks metadata field {name}"
        assert rows[name].split("|")[3].strip() == ("yes" if required else "no"), name
