# SPDX-License-Identifier: GPL-3.0-or-later
"""The command line as a user runs it: a separate process, real files, exit codes."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, check=True, **env_extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "backend"), **env_extra)
    proc = subprocess.run([sys.executable, "-m", "headcast.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_synth_model_then_pose_mesh(tmp_path, synthetic_model):
    run_cli("synth-model", tmp_path / "m", "--npz")
    for name in ("generic_model.pkl", "FLAME_masks.pkl", "landmark_embedding.npy", "flame_static_embedding.pkl",
                 "flame_dynamic_embedding.npy", "head_template.obj", "l_eyelid.npy", "r_eyelid.npy", "head_model.npz"):
        assert (tmp_path / "m" / name).is_file(), name
    run_cli("pose-mesh", tmp_path / "m", "--out", tmp_path / "jaw.obj", "--jaw", "0.3")
    from headcast.flame import HeadLayer, axis_angle_to_matrix, load_obj
    v, uv, f, ft = load_obj(tmp_path / "jaw.obj")
    aa = torch.zeros(1, 5, 3, dtype=torch.float64)
    aa[0, 2, 0] = 0.3
    ref = HeadLayer(synthetic_model, dtype=torch.float64)(None, torch.zeros(1, 1, dtype=torch.float64), axis_angle_to_matrix(aa))
    np.testing.assert_allclose(v, ref.vertices[0].numpy(), atol=1e-7)
    np.testing.assert_array_equal(f, synthetic_model.faces)


def test_bad_model_path_exits_2_and_names_the_file(tmp_path):
    broken = tmp_path / "generic_model.pkl"
    broken.write_bytes(b"\x80\x02}q\x00(X")
    proc = run_cli("pose-mesh", broken, "--out", tmp_path / "x.obj", check=False)
    assert proc.returncode == 2
    assert "generic_model.pkl" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.obj").exists()


def test_version():
    assert "headcast" in run_cli("--version").stdout


def test_a_bad_lens_exits_2_and_names_the_setting(tmp_path):
    proc = run_cli("reconstruct", tmp_path / "photo.png", "--focal-mm", "-5", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "fit.focal_mm: -5.0 is not a focal length in mm" in proc.stderr


def test_a_missing_identity_file_exits_naming_it(tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"not decoded: the identity is checked before the photo is read")
    missing = tmp_path / "person.headcast.npz"
    proc = run_cli("reconstruct", photo, "--model", "synthetic", "--identity", missing, check=False,
                   HEADCAST_CONFIG=str(tmp_path / "none.toml"), HEADCAST_CACHE=str(tmp_path / "cache"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"identity result file not found: {missing}" in proc.stderr
    assert not (tmp_path / "photo.headcast.npz").exists()


def test_the_command_gives_openmp_a_short_spin_unless_told_otherwise():
    """The headcast process sets GOMP_SPINCOUNT before torch loads (headcast.openmp); a wait
    policy or spin count the user set is left alone."""
    code = ("import os, headcast.cli, torch; "
            "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))")
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}

    def child(**extra):
        env = dict(base, PYTHONPATH=str(ROOT / "backend"), **extra)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert child() == ["1000", "None"]
    assert child(OMP_WAIT_POLICY="PASSIVE") == ["None", "PASSIVE"]
    assert child(GOMP_SPINCOUNT="50") == ["50", "None"]
