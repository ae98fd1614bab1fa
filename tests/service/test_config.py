# SPDX-License-Identifier: GPL-3.0-or-later
"""Settings layering: defaults < config file < environment < arguments."""
import pytest

from headcast.config import ConfigError, load_settings


def test_layers_override_in_order(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[models]\nflame = "/models/flame"\n[fit]\nsteps = 300\nrender_size = 128\nuse_uv = false\n')
    s = load_settings(cfg, env={})
    assert (s.models.flame, s.fit.steps, s.fit.render_size, s.fit.use_uv) == ("/models/flame", 300, 128, False)
    s = load_settings(cfg, env={"HEADCAST_FIT_STEPS": "250", "HEADCAST_FIT_USE_UV": "yes", "OTHER": "x"})
    assert (s.fit.steps, s.fit.use_uv, s.fit.render_size) == (250, True, 128)
    s = load_settings(cfg, env={"HEADCAST_FIT_STEPS": "250"}, overrides={"fit.steps": 100, "fit.render_size": None})
    assert (s.fit.steps, s.fit.render_size) == (100, 128)
    assert s.sources == [str(cfg), "HEADCAST_FIT_STEPS"]


def test_defaults_without_file(tmp_path):
    s = load_settings(tmp_path / "missing.toml", env={})
    assert s.fit.steps == 500 and s.fit.render_size == 256 and s.models.model == "auto" and s.sources == []


@pytest.mark.parametrize("text, message", [
    ("[fit]\nsteps = 'many'\n", r"config.toml: fit.steps: expected a int, got 'many'"),
    ("[fit]\nspeed = 3\n", r"unknown key fit.speed"),
    ("[gpu]\nx = 1\n", r"unknown section \[gpu\]"),
    ("[fit\n", r"config.toml: not valid TOML"),
    ("[fit]\nfocal_mm = -35.0\n", r"config.toml: fit.focal_mm: -35.0 is not a focal length in mm"),
    ("[fit]\nsensor_mm = 0.0\n", r"config.toml: fit.sensor_mm: 0.0 is not a sensor width in mm"),
])
def test_bad_config_file_names_file_and_key(tmp_path, text, message):
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg, env={})


def test_bad_environment_variable_is_named(tmp_path):
    with pytest.raises(ConfigError, match="HEADCAST_FIT_USE_NORMALS: expected true/false"):
        load_settings(tmp_path / "none.toml", env={"HEADCAST_FIT_USE_NORMALS": "maybe"})


def test_fit_settings_reach_the_fit_config(tmp_path):
    from headcast.pipeline import fit_config

    cfg = tmp_path / "config.toml"
    cfg.write_text("[fit]\nsteps = 321\nmirror_symmetry = 5000.0\nsmooth_neck = 7.0\nrefine = 0.0\n")
    fc = fit_config(load_settings(cfg, env={}))
    assert (fc.steps, fc.w_mirror, fc.smooth_weights["neck"], fc.gls_step_fraction) == (321, 5000.0, 7.0, 0.0)
    default = fit_config(load_settings(tmp_path / "missing.toml", env={}))
    assert default.w_mirror == 0.0
    # the user-facing defaults are the fitting's own (two tables that must not drift apart)
    from headcast.fit import FitConfig
    assert default.smooth_weights == FitConfig().smooth_weights
    assert default.global_epochs == FitConfig().global_epochs
    assert default.gls_step_fraction == FitConfig().gls_step_fraction
    for name in ("steps", "camera_steps", "first_frame_steps", "online_steps"):
        assert getattr(default, name) == getattr(FitConfig(), name), name
