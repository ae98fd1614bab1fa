# SPDX-License-Identifier: GPL-3.0-or-later
"""The full-energy stages step the blendshape coefficients and the jaw at ``lr_full_fit``;
every other stage keeps ``lr``."""
import numpy as np
import torch

from headcast.fit import FitConfig
from headcast.fit.energy import EnergyOptions, prepare_frame
from headcast.fit.solver import EVERYTHING, Fitter


def test_full_fit_stage_steps_at_its_own_rates_and_restores_them(synthetic_model, scene128):
    truth, frame = scene128
    # one step, no decay: the step is the rate
    cfg = FitConfig(lr_full_fit={"shape": 0.2, "expr": 0.15, "jaw": 0.05}, adaptive_priors=False, lr_decay=1.0)
    f = Fitter(synthetic_model, cfg, truth.image_size, 1)
    prepared = prepare_frame(f.head, frame.cues, cfg, truth.image_size)
    jaw = list(synthetic_model.joint_names[1:]).index("jaw")
    seen = []
    run = f.run

    def spy(*args, **kwargs):
        seen.append({k: (v.clone() if torch.is_tensor(v) else v) for k, v in f.opt.base_lr.items()})
        return run(*args, **kwargs)

    f.run = spy
    before = {k: t.detach().clone() for k, t in f.params.tensors().items()}
    f.run_coarse_to_fine("fit", [0], [frame.cues], [prepared], 1, set(EVERYTHING), EnergyOptions())

    lr = seen[0]
    assert lr["shape"] == 0.2 and lr["expr"] == 0.15
    joints = lr["joints"][:, 0].numpy()
    expected = f.params.joint_lr(cfg.lr)[:, 0].numpy()
    expected[jaw] = 0.05
    np.testing.assert_allclose(joints, expected)
    assert lr["R"] == cfg.lr["R"] and lr["focal"] == cfg.lr["focal"]
    # Adam's first step moves a coordinate by its rate times sign(gradient)
    d_shape = (f.params.shape.detach() - before["shape"]).abs()
    moved = d_shape > 1e-6
    assert moved.sum() > 10
    np.testing.assert_allclose(d_shape[moved].numpy(), 0.2, rtol=1e-3)
    d_expr = (f.params.expr.detach() - before["expr"]).abs()
    np.testing.assert_allclose(d_expr[d_expr > 1e-6].numpy(), 0.15, rtol=1e-3)

    # outside the stage the tracking rates are back
    assert f.opt.base_lr["shape"] == cfg.lr["shape"] and f.opt.base_lr["expr"] == cfg.lr["expr"]
    np.testing.assert_allclose(f.opt.base_lr["joints"][:, 0].numpy(), f.params.joint_lr(cfg.lr)[:, 0].numpy())
