# SPDX-License-Identifier: GPL-3.0-or-later
"""Loading FLAME files in every layout users have, and clear errors on broken ones."""
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from headcast.flame import (ModelFileError, load_head_model, load_landmark_embedding, load_masks, load_model_file,
                            load_obj, save_model_npz)
from headcast.flame.synthetic import flame_pickle_dict


def _assert_same_model(a, b):
    for key in ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "j_regressor", "weights", "parents"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)


def test_pickle_with_chumpy_objects_needs_no_chumpy(synthetic_dir, synthetic_model):
    raw = (synthetic_dir / "generic_model.pkl").read_bytes()
    # the file really references chumpy and the old scipy module path, like FLAME 2020
    assert b"chumpy.ch" in raw and b"scipy.sparse.csc" in raw
    assert "chumpy" not in sys.modules
    loaded = load_model_file(synthetic_dir / "generic_model.pkl")
    assert "chumpy" not in sys.modules
    _assert_same_model(loaded, synthetic_model)
    assert loaded.licence.startswith("FLAME 2020")  # named like FLAME's file, tagged like it


def test_pickle_with_plain_arrays_and_modern_sparse(tmp_path, synthetic_model):
    d = flame_pickle_dict(synthetic_model)
    d["J_regressor"] = scipy.sparse.csc_matrix(d["J_regressor"])  # pickles as scipy.sparse._csc
    path = tmp_path / "flame2023.pkl"
    path.write_bytes(pickle.dumps(d, protocol=4))
    loaded = load_model_file(path)
    _assert_same_model(loaded, synthetic_model)
    assert "2023" in loaded.licence


def test_python2_style_latin1_pickle(tmp_path, synthetic_model):
    d = flame_pickle_dict(synthetic_model)
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps(d, protocol=2))
    _assert_same_model(load_model_file(path), synthetic_model)


def test_npz_with_flame_keys(tmp_path, synthetic_model):
    d = flame_pickle_dict(synthetic_model)
    path = tmp_path / "flame.npz"
    np.savez(path, **{k: v for k, v in d.items() if isinstance(v, np.ndarray)})
    _assert_same_model(load_model_file(path), synthetic_model)


def test_headcast_npz_round_trip_keeps_assets(tmp_path, synthetic_model):
    path = save_model_npz(synthetic_model, tmp_path / "head_model.npz")
    loaded = load_model_file(path)
    _assert_same_model(loaded, synthetic_model)
    np.testing.assert_array_equal(loaded.uv, synthetic_model.uv)
    np.testing.assert_array_equal(loaded.eyelids, synthetic_model.eyelids)
    assert loaded.masks.keys() == synthetic_model.masks.keys()
    np.testing.assert_array_equal(loaded.landmarks.dynamic_bary, synthetic_model.landmarks.dynamic_bary)
    assert loaded.licence == synthetic_model.licence


def test_folder_loads_model_with_all_assets(synthetic_dir, synthetic_model):
    model = load_head_model(synthetic_dir)
    _assert_same_model(model, synthetic_model)
    np.testing.assert_allclose(model.uv, synthetic_model.uv, atol=1e-8)
    np.testing.assert_array_equal(model.faces_uv, synthetic_model.faces_uv)
    np.testing.assert_allclose(model.eyelids, synthetic_model.eyelids)
    for name, idx in synthetic_model.masks.items():
        np.testing.assert_array_equal(model.masks[name], idx)
    lm, ref = model.landmarks, synthetic_model.landmarks
    np.testing.assert_array_equal(lm.static_faces, ref.static_faces)
    np.testing.assert_array_equal(lm.dynamic_faces, ref.dynamic_faces)
    np.testing.assert_allclose(lm.dynamic_bary, ref.dynamic_bary, atol=1e-7)  # stored as float32 like DECA's


def test_deca_embedding_with_torch_tensors_matches_torch_itself(synthetic_dir):
    """Our stub parser against torch's own unpickling of the same file."""
    raw = (synthetic_dir / "landmark_embedding.npy").read_bytes()
    assert b"_rebuild_tensor_v2" in raw and b"_load_from_bytes" in raw
    ours = load_landmark_embedding(synthetic_dir / "landmark_embedding.npy")
    theirs = np.load(synthetic_dir / "landmark_embedding.npy", allow_pickle=True, encoding="latin1")[()]
    np.testing.assert_array_equal(ours.dynamic_faces, theirs["dynamic_lmk_faces_idx"].numpy())
    np.testing.assert_array_equal(ours.dynamic_bary, theirs["dynamic_lmk_bary_coords"].numpy())
    np.testing.assert_array_equal(ours.static_faces, theirs["static_lmk_faces_idx"])
    assert ours.full_faces.shape == (68,)


def test_legacy_tensor_views_and_dtypes(tmp_path):
    """Non-contiguous, offset and integer tensors survive the stub parser."""
    base = torch.arange(60, dtype=torch.float64).reshape(6, 10)
    blob = {"static_lmk_faces_idx": np.arange(51), "static_lmk_bary_coords": np.full((51, 3), 1 / 3),
            "dynamic_lmk_faces_idx": torch.arange(79 * 17, dtype=torch.int64).reshape(79, 17),
            "dynamic_lmk_bary_coords": torch.rand(79, 17, 3, generator=torch.Generator().manual_seed(0)),
            "extra_view": base[1:, 2::3].t()}
    np.save(tmp_path / "landmark_embedding.npy", np.array(blob, dtype=object), allow_pickle=True)
    from headcast.flame.pickle_compat import load_npy_object
    raw = load_npy_object((tmp_path / "landmark_embedding.npy").read_bytes())
    np.testing.assert_array_equal(raw["extra_view"], base[1:, 2::3].t().numpy())
    np.testing.assert_array_equal(raw["dynamic_lmk_faces_idx"], blob["dynamic_lmk_faces_idx"].numpy())
    np.testing.assert_array_equal(raw["dynamic_lmk_bary_coords"], blob["dynamic_lmk_bary_coords"].numpy())


def test_ringnet_embedding_pair(synthetic_dir, synthetic_model):
    emb = load_landmark_embedding(synthetic_dir / "flame_static_embedding.pkl", synthetic_dir / "flame_dynamic_embedding.npy")
    np.testing.assert_array_equal(emb.static_faces, synthetic_model.landmarks.static_faces)
    np.testing.assert_array_equal(emb.dynamic_faces, synthetic_model.landmarks.dynamic_faces)


def test_masks_and_obj(synthetic_dir, synthetic_model):
    masks = load_masks(synthetic_dir / "FLAME_masks.pkl", synthetic_model.n_vertices)
    assert set(masks) >= {"face", "left_eyeball", "right_eyeball", "lips", "nose", "neck", "boundary"}
    v, uv, f, ft = load_obj(synthetic_dir / "head_template.obj")
    np.testing.assert_allclose(v, synthetic_model.v_template, atol=1e-8)
    np.testing.assert_array_equal(f, synthetic_model.faces)
    assert uv.shape[0] > v.shape[0]  # seams duplicate texture coordinates, as in FLAME (5118 vt)


def test_obj_polygons_and_negative_indices(tmp_path):
    path = tmp_path / "quad.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nf -4/1 -3/2 -2/3 -1/4\n")
    v, uv, f, ft = load_obj(path)
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3]])
    np.testing.assert_array_equal(ft, [[0, 1, 2], [0, 2, 3]])


# --- broken files ---------------------------------------------------------------------------

def test_truncated_pickle_names_the_file(tmp_path, synthetic_dir):
    raw = (synthetic_dir / "generic_model.pkl").read_bytes()
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ModelFileError, match="generic_model.pkl.*(truncated|readable)"):
        load_model_file(path)


def test_missing_key_is_named(tmp_path, synthetic_model):
    d = flame_pickle_dict(synthetic_model)
    del d["weights"]
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps(d))
    with pytest.raises(ModelFileError, match=r"generic_model.pkl: missing key 'weights'"):
        load_model_file(path)


def test_bad_shape_is_named(tmp_path, synthetic_model):
    d = flame_pickle_dict(synthetic_model)
    d["posedirs"] = d["posedirs"][..., :30]
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps(d))
    with pytest.raises(ModelFileError, match=r"posedirs has shape \(\d+, 3, 30\), expected"):
        load_model_file(path)
    d = flame_pickle_dict(synthetic_model)
    d["shapedirs"] = d["shapedirs"][..., :200]
    path.write_bytes(pickle.dumps(d))
    with pytest.raises(ModelFileError, match="shapedirs has shape"):
        load_model_file(path)


def test_empty_missing_and_wrong_type_files(tmp_path):
    empty = tmp_path / "generic_model.pkl"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        load_model_file(empty)
    with pytest.raises(ModelFileError, match="not found"):
        load_model_file(tmp_path / "nope.pkl")
    listed = tmp_path / "list.pkl"
    listed.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ModelFileError, match="expected a pickled dict"):
        load_model_file(listed)
    bad_npz = tmp_path / "bad.npz"
    bad_npz.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelFileError, match="bad.npz"):
        load_model_file(bad_npz)


def test_pickles_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps({"v_template": Evil()}))
    with pytest.raises(ModelFileError, match="refusing to load builtins.print"):
        load_model_file(path)


def test_embedding_with_wrong_shape(tmp_path):
    blob = {"static_lmk_faces_idx": np.arange(50), "static_lmk_bary_coords": np.zeros((50, 3)),
            "dynamic_lmk_faces_idx": np.zeros((79, 17), dtype=np.int64), "dynamic_lmk_bary_coords": np.zeros((79, 17, 3))}
    path = tmp_path / "landmark_embedding.npy"
    np.save(path, np.array(blob, dtype=object), allow_pickle=True)
    with pytest.raises(ModelFileError, match=r"landmark_embedding.npy: static face indices have shape \(50,\)"):
        load_landmark_embedding(path)


def test_masks_out_of_range(tmp_path):
    path = tmp_path / "FLAME_masks.pkl"
    path.write_bytes(pickle.dumps({"face": np.array([0, 1, 99999])}))
    with pytest.raises(ModelFileError, match="mask 'face' indexes vertices outside"):
        load_masks(path, n_vertices=100)


def test_uv_template_mismatch(tmp_path, synthetic_dir):
    import shutil
    folder = tmp_path / "m"
    shutil.copytree(synthetic_dir, folder)
    (folder / "head_template.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nf 1/1 2/2 3/3\n")
    with pytest.raises(ModelFileError, match="head_template.obj: uv template has 3 vertices"):
        load_head_model(folder)


def test_chumpy_stub_class_like_the_reference_describes(tmp_path, synthetic_model):
    """A class claiming to be chumpy.ch.Ch with state {'x': arr}, built here independently."""
    mod = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x
        def __getstate__(self):
            return {"x": self.x, "_dirty_vars": set()}
    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    mod.Ch = Ch
    top = types.ModuleType("chumpy")
    top.ch = mod
    sys.modules.update({"chumpy": top, "chumpy.ch": mod})
    try:
        d = flame_pickle_dict(synthetic_model)
        d["shapedirs"] = Ch(d["shapedirs"])
        d["v_template"] = Ch(d["v_template"])
        data = pickle.dumps(d, protocol=2)
    finally:
        del sys.modules["chumpy.ch"], sys.modules["chumpy"]
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(data)
    _assert_same_model(load_model_file(path), synthetic_model)
