# SPDX-License-Identifier: GPL-3.0-or-later
"""The optimisation machinery shared by the image and video solvers: parameter set,
energy, row-wise Adam, stages with learning-rate decay, early stopping, progress."""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import torch

from ..flame import HeadModel
from ..flame.lbs import matrix_to_rotation_6d
from . import losses as L
from .camera_init import place_from_mask, pnp_pose, point_pairs, rest_vertices, set_pose
from .config import FitConfig
from .energy import Energy, EnergyOptions, PreparedFrame
from .head import FitHead
from .params import PER_FRAME, Params, RowAdam, params_from_intrinsics
from .progress import Monitor
from .result import FitResult, FrameFit

FRAME_ONLY = PER_FRAME
EVERYTHING = PER_FRAME + ("shape", "focal", "pp")


def free_groups(cfg: FitConfig, focal_held: bool = False, identity_held: bool = False) -> set[str]:
    """The parameter groups a full-energy stage steps: all of them, less the focal length when it
    is held (known, or ``optimize_focal`` off), the principal point when ``optimize_pp`` is off,
    and the identity when it is held."""
    held = ({"focal"} if focal_held or not cfg.optimize_focal else set()) | (set() if cfg.optimize_pp else {"pp"})
    return set(EVERYTHING) - held - ({"shape"} if identity_held else set())


def _dtype(cfg: FitConfig) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[cfg.dtype]


class Fitter:
    """Parameters, energy and optimiser for ``n_frames`` frames of one person."""

    def __init__(self, model: HeadModel, config: FitConfig, image_size: tuple[int, int], n_frames: int,
                 cam_index: np.ndarray | None = None, shape_prior: np.ndarray | None = None,
                 monitor: Monitor | None = None, head: FitHead | None = None) -> None:
        self.cfg = config
        self.size = (int(image_size[0]), int(image_size[1]))
        self.head = head or FitHead(model, config.n_shape, config.n_expr, _dtype(config), config.uv_vertex_masks,
                                    config.uv_vertex_exclude, config.silhouette_masks, config.eye_masks,
                                    config.eye_margin_m,
                                    config.noisy_eye_masks if config.normal_bias_sigma_px > 0 else ())
        self.params = Params(self.head, n_frames, cam_index, config.init_focal, config.init_distance)
        self.energy = Energy(self.head, config, self.size)
        self._energies = {self.size: self.energy}
        self.shape_prior = None
        if shape_prior is not None:
            sp = np.asarray(shape_prior, dtype=np.float64).ravel()[: self.head.n_shape]
            full = np.zeros(self.head.n_shape)
            full[: len(sp)] = sp
            self.shape_prior = torch.as_tensor(full, dtype=self.head.dtype)
        self.opt = RowAdam(self.params.tensors(), PER_FRAME, self._learning_rates(config.lr))
        self.monitor = monitor or Monitor()
        self.frame_loss = np.zeros(n_frames)
        self.steps_taken = np.zeros(n_frames, dtype=np.int64)
        # noise-adaptive scale of the identity and expression priors (see FitConfig.adaptive_priors)
        self.prior_scale = 1.0
        self.uv_vertex_scale = 1.0  # and of the 2-D vertex term (see FitConfig.uv_noise_full_weight)
        self.cue_noise: dict | None = None  # what the probe measured (None: not probed yet)

    # ---- camera initialisation ---------------------------------------------------------------

    def init_camera(self, row: int, frame: PreparedFrame, stage: str = "camera", total: int = 1,
                    fit_focal: bool = True) -> None:
        """Pose (and, with ``fit_focal``, focal length) of one frame from its point cues by
        PnP, else from the face mask; then a short robust refinement without rendering."""
        cfg = self.cfg
        p = self.params
        w = float(self.size[1])
        verts = rest_vertices(self.head, p)
        p3, p2 = point_pairs(self.head, frame, verts)
        cam = int(p.cam_index[row])
        if len(p3) >= 6:
            f0 = math.exp(float(p.focal[cam].detach())) * w
            # PnP on the mean head cannot tell focal lengths apart (the identity is still unknown):
            # it places the head at the initial focal, and the dolly-zoom focal parameter is
            # left to the full energy.
            cands = [f0 * s for s in cfg.pnp_focal_factors] if fit_focal else [f0]
            best = pnp_pose(p3, p2, self.size, cands, w)
            if best is not None:
                R, t, f = best
                set_pose(p, row, R, t)
                if fit_focal:
                    p.set_focal(cam, math.log(f / w))
        elif frame.face_mask is not None:
            place_from_mask(self.head, p, row, frame.face_mask.numpy(), self.size)
        sparse = len(p3) > 0
        if cfg.camera_steps <= 0:
            return
        # the focal stays: on the mean head it would run off to absorb the identity (measured)
        active = {"R", "t"}
        # point cues: robust sparse terms only (cheap); otherwise the dense terms at this size
        opts = (EnergyOptions(dense=False, robust_init=True, regularize=False) if sparse
                else EnergyOptions(dense=True, uv_vertex=False, landmarks=False, regularize=False))
        steps = cfg.camera_steps if sparse else max(1, cfg.camera_steps // 3)
        self.run(stage, [row], [frame], steps, active, opts, label=row, total=total, lr_scale=2.0)

    def _learning_rates(self, lr: dict) -> dict:
        """RowAdam's table from per-group rates (the joints get a per-joint column)."""
        table = dict(lr)
        table["joints"] = self.params.joint_lr(lr)
        return table

    @contextmanager
    def learning_rates(self, changes: dict):
        """Within the block, the groups named in ``changes`` step at those rates and the others
        at ``config.lr``; the table in force before is restored afterwards."""
        saved = self.opt.base_lr
        self.opt.base_lr = self._learning_rates({**self.cfg.lr, **changes})
        try:
            yield
        finally:
            self.opt.base_lr = saved

    def energy_at(self, size: tuple[int, int]) -> Energy:
        """The energy at another render size (coarse passes); the parameters do not depend on
        the resolution (focal and principal point are relative to the image size)."""
        size = (int(size[0]), int(size[1]))
        if size not in self._energies:
            self._energies[size] = Energy(self.head, self.cfg, size)
        return self._energies[size]

    def solve_sparse(self, row: int, frame: PreparedFrame, iterations: int, with_shape: bool = True,
                     energy: Energy | None = None) -> None:
        """Levenberg-Marquardt on the frame's sparse terms (see :mod:`headcast.fit.sparse_solve`);
        ``energy`` selects the render size the frame was prepared at."""
        if iterations <= 0:
            return
        from .sparse_solve import levenberg_marquardt

        blocks = ["expr", "eyelids", "joints", "R", "t"] + (["shape"] if with_shape else [])
        levenberg_marquardt(self, row, frame, iterations, blocks, energy=energy or self.energy)
        self.monitor.check()

    @torch.no_grad()
    def hold_identity(self, code: np.ndarray | None) -> bool:
        """Set the identity to a known code (the caller then leaves "shape" out of every
        stage's active groups); returns whether there was one."""
        if code is None:
            return False
        self.params.shape.copy_(torch.as_tensor(code, dtype=self.params.shape.dtype))
        return True

    # ---- optimisation stages -----------------------------------------------------------------

    def run(self, stage: str, rows: list[int], frames: list[PreparedFrame], steps: int, active: set[str],
            opts: EnergyOptions | None = None, label: int = -1, total: int = 1, early_stop: bool = False,
            smooth: dict | None = None, lr_scale: float = 1.0, batches=None, decay: bool = True,
            energy: Energy | None = None, schedule: tuple[int, int] | None = None) -> float:
        """Adam over ``active`` parameter groups for ``steps`` steps on the given rows.

        ``batches``: an optional callable step -> (rows, frames) for mini-batch stages;
        ``smooth``: temporal smoothness spec (see :meth:`smoothness`); ``early_stop``: stop
        when the loss stops improving (online tracking); ``energy``: another render size;
        ``schedule = (offset, total)``: these steps are steps offset.. of a longer stage of
        ``total`` steps (learning-rate decay and reported step numbers follow the whole stage).
        Returns the last total loss.
        """
        cfg = self.cfg
        opts = replace(opts or EnergyOptions(), prior_scale=self.prior_scale, uv_vertex_scale=self.uv_vertex_scale)
        if "shape" not in active and opts.identity is None:
            # the identity is frozen in this stage: evaluate its blendshapes once
            with torch.no_grad():
                opts = replace(opts, identity=self.head.identity_offset(self.params.shape))
        history: list[float] = []
        loss_value = float("nan")
        offset, stage_steps = schedule or (0, steps)
        decay_steps = [int(f * stage_steps) for f in cfg.lr_decay_at] if decay else []
        for step in range(offset, offset + steps):
            if batches is not None:
                rows, frames = batches(step)
            self.opt.scale = lr_scale * cfg.lr_decay ** sum(step >= d for d in decay_steps)
            self.opt.zero_grad()
            total_e, per_frame, _ = (energy or self.energy)(self.params, rows, frames, opts, self.shape_prior)
            if smooth is not None:
                total_e = total_e + self.smoothness(rows, smooth)
            total_e.backward()
            rows_t = torch.as_tensor(rows, dtype=torch.long)
            self.opt.step(rows_t, active)
            self.params.renormalize_rotations(rows_t)
            self.params.clamp_bounds()
            loss_value = float(total_e.detach())
            self.frame_loss[rows] = per_frame.numpy()
            self.steps_taken[rows] += 1
            self.monitor.step(stage, label, total, step, loss_value)
            history.append(loss_value)
            if early_stop and len(history) >= cfg.online_min_steps and len(history) > cfg.early_stop_window:
                old = history[-1 - cfg.early_stop_window]
                if old - loss_value < cfg.early_stop_rel * abs(loss_value):
                    break
        return loss_value

    def run_coarse_to_fine(self, stage: str, rows: list[int], cues: list, frames: list[PreparedFrame], steps: int,
                           active: set[str], opts: EnergyOptions | None = None, label: int = -1, total: int = 1,
                           batches=None, normal_bias: bool = True) -> None:
        """A stage whose first ``coarse_fraction`` of steps render at 1/``coarse_downsample`` of
        the size (cheaper steps while the head is still far off), the rest at full size.

        cues: the original :class:`FrameCues` of ``rows`` (to build the coarse frames);
        batches: optional callable (step, frames_by_row) -> (rows, frames) for mini-batches.

        The first such stage of a fit also probes the cue noise at ``noise_probe_at`` of its
        steps and sets the prior scale from it (:meth:`probe_noise`). The blendshape
        coefficients and the jaw step at ``lr_full_fit`` here (these stages solve them from
        the mean head; see the config). After the probe, the normals are de-biased if it found
        them biased (``FitConfig.normal_bias_sigma_px``) and ``normal_bias`` allows it.
        """
        cfg = self.cfg
        k = max(1, int(cfg.coarse_downsample))
        n_coarse = self.coarse_steps(steps)
        levels = []  # (first step, frames by row, energy)
        if n_coarse:
            from .cues import downsample_cues
            from .energy import prepare_frame

            small = (self.size[0] // k, self.size[1] // k)
            coarse = {r: prepare_frame(self.head, downsample_cues(c, k), cfg, small, where=f"frame {r}")
                      for r, c in zip(rows, cues)}
            levels.append((0, coarse, self.energy_at(small)))
        levels.append((n_coarse, dict(zip(rows, frames)), self.energy))
        probe = int(round(cfg.noise_probe_at * steps)) if cfg.adaptive_priors and self.cue_noise is None else -1
        # segments [a, b) of the stage, split at the level change and at the probe
        cuts = sorted({0, steps, n_coarse} | ({probe} if 0 < probe < steps else set()))
        base_beta1 = self.opt.b1
        try:
            with self.learning_rates(cfg.lr_full_fit):
                for a, b in zip(cuts[:-1], cuts[1:]):
                    _, by_row, energy = max((lv for lv in levels if lv[0] <= a), key=lambda lv: lv[0])
                    pick = None if batches is None else (lambda step, f=by_row: batches(step, f))
                    seg_opts = replace(opts or EnergyOptions(), normal_bias=normal_bias and self.normals_biased())
                    self.opt.b1 = cfg.adam_beta1_relaxed if self.priors_relaxed() else base_beta1
                    self.run(stage, rows, [by_row[r] for r in rows], b - a, active, seg_opts, label, total,
                             batches=pick, energy=energy, schedule=(a, steps))
                    if b == probe:
                        self.probe_noise(rows, [by_row[r] for r in rows], energy)
        finally:
            self.opt.b1 = base_beta1

    def coarse_steps(self, steps: int) -> int:
        """How many of a coarse-to-fine stage's ``steps`` render at the coarse size."""
        cfg = self.cfg
        return int(round(cfg.coarse_fraction * steps)) if int(cfg.coarse_downsample) > 1 else 0

    def probe_noise(self, rows: list[int], frames: list[PreparedFrame], energy: Energy | None = None) -> float:
        """Measure the cue noise against the current fit (:meth:`Energy.cue_noise`, on up to
        ``max_images_per_step`` of the rows) and set the prior scale to clip(r^2, prior_scale_min,
        1), r the largest over the cues of noise / reference, both above the probe's own floor
        (:func:`above_floor`); with a uv cue, also the 2-D vertex term's scale (see
        ``FitConfig.uv_noise_full_weight``). Returns the prior scale."""
        cfg = self.cfg
        if len(rows) > cfg.max_images_per_step:
            pick = np.linspace(0, len(rows) - 1, cfg.max_images_per_step).round().astype(int)
            rows, frames = [rows[i] for i in pick], [frames[i] for i in pick]
        noise = (energy or self.energy).cue_noise(self.params, rows, frames)
        ratios = []
        for key, ref, floor in (("normal_smooth_deg", cfg.noise_ref_normal_smooth_deg,
                                 cfg.noise_floor_normal_smooth_deg),
                                ("uv", cfg.noise_ref_uv, cfg.noise_floor_uv)):
            if key in noise:  # the reference was measured by the same probe: it has the floor too
                ratios.append(above_floor(noise[key], floor) / max(above_floor(ref, floor), 1e-12))
        # The noisier cue decides: the priors hold the identity against whatever error the cues
        # carry, and a clean uv map does not make biased normals any safer to follow (see the
        # config). Without a dense cue there is nothing to judge the noise by: the priors stay
        # as tuned.
        ratio = float(np.max(ratios)) if ratios else 1.0
        scale = float(np.clip(ratio ** 2, cfg.prior_scale_min, 1.0))
        self.cue_noise = noise
        self.prior_scale = scale
        if "uv" in noise:
            self.uv_vertex_scale = float(np.clip((cfg.uv_noise_full_weight / max(noise["uv"], 1e-12)) ** 2,
                                                 cfg.uv_vertex_scale_min, 1.0))
        return scale

    def priors_relaxed(self) -> bool:
        """Whether the probe found the cues clean enough to scale the priors down to
        ``FitConfig.relaxed_prior_scale`` or below (False before the probe)."""
        return self.cue_noise is not None and self.prior_scale <= self.cfg.relaxed_prior_scale

    def normals_biased(self) -> bool:
        """Whether the probe found the normals' smooth error large enough for the de-biased mode
        (False before the probe; a resumed fit reads the probe's outcome from its saved state)."""
        cfg = self.cfg
        return (cfg.normal_bias_sigma_px > 0 and self.cue_noise is not None
                and self.cue_noise.get("normal_smooth_deg", 0.0) > cfg.normal_bias_min_smooth_deg)

    def smoothness(self, rows: list[int], spec: dict) -> torch.Tensor:
        """Temporal smoothness of the per-frame parameters of ``rows`` with their neighbours.

        spec: {'n_frames': N, 'scale': s, 'prev_only': bool, 'groups': {group: factor}}
        ('groups' scales single groups' weights, e.g. for a landmark-only clip). A pair (i, i+1)
        is included when either frame is in the batch; a neighbour outside the batch enters
        detached, so the batch frames are pulled toward it without updating it. With
        ``prev_only`` only the pair with the previous frame counts (online tracking).
        """
        cfg = self.cfg
        p = self.params
        n = spec["n_frames"]
        scale = spec.get("scale", 1.0) * cfg.smooth_scale
        factors = spec.get("groups", {})
        in_batch = set(rows)
        pairs = set()
        for i in rows:
            if i - 1 >= 0:
                pairs.add((i - 1, i))
            if i + 1 < n and not spec.get("prev_only", False):
                pairs.add((i, i + 1))
        if not pairs:
            return p.expr.new_zeros(())
        a = torch.tensor([q[0] for q in sorted(pairs)])
        b = torch.tensor([q[1] for q in sorted(pairs)])
        a_in = torch.tensor([q[0] in in_batch for q in sorted(pairs)])
        b_in = torch.tensor([q[1] in in_batch for q in sorted(pairs)])

        def pick(t: torch.Tensor, idx: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
            x = t[idx]
            shape = (-1,) + (1,) * (x.dim() - 1)
            return torch.where(live.view(shape), x, x.detach())

        w = cfg.smooth_weights
        e = p.expr.new_zeros(())
        one = torch.ones(len(a), dtype=p.expr.dtype)
        groups = [("expr", p.expr, None), ("R", p.R, None), ("t", p.t, None)]
        if self.head.has_eyelids:
            groups.append(("eyelids", p.eyelids, None))
        names = list(self.head.model.joint_names[1:])
        for key, jn in (("jaw", ["jaw"]), ("neck", ["neck"]), ("eyes", ["eye_left", "eye_right"])):
            cols = [names.index(j) for j in jn if j in names]
            if cols:
                groups.append((key, p.joints, cols))
        for key, tensor, cols in groups:
            wk = w.get(key, 0.0) * scale * factors.get(key, 1.0)
            if wk <= 0:
                continue
            xa, xb = pick(tensor, a, a_in), pick(tensor, b, b_in)
            if cols is not None:
                xa, xb = xa[:, cols], xb[:, cols]
            numel = xa[0].numel()
            e = e + (wk / numel) * L.smoothness_loss(xb, xa, one).sum()
        return e

    # ---- results -----------------------------------------------------------------------------

    @torch.no_grad()
    def frame_fit(self, i: int, valid: bool) -> FrameFit:
        p = self.params
        row = torch.tensor([i])
        fx, fy, cx, cy = p.intrinsics(row, self.size)
        return FrameFit(index=i, expression=p.expr[i].double().numpy().copy(),
                        eyelids=p.eyelids[i].double().numpy().copy() if self.head.has_eyelids else None,
                        rotations=p.rotations(row)[0].double().numpy(), R_head=p.head_rotation(row)[0].double().numpy(),
                        t_head=p.translation(row)[0].double().numpy(), loss=float(self.frame_loss[i]), valid=valid,
                        shape=p.shape.double().numpy().copy(),
                        intrinsics=torch.stack([fx, fy, cx, cy], 1)[0].double().numpy(),
                        state=self.optimiser_state(i))

    @torch.no_grad()
    def optimiser_state(self, i: int) -> dict:
        """Raw parameters, Adam moments and step counts of frame ``i`` and of the shared tensors."""
        out = {}
        opt = self.opt
        for name, t in opt.tensors.items():
            sel = (lambda a: a[i]) if name in opt.per_frame else (lambda a: a)
            out[f"p_{name}"] = sel(t).detach().clone().numpy()
            out[f"m_{name}"] = sel(opt.m[name]).clone().numpy()
            out[f"v_{name}"] = sel(opt.v[name]).clone().numpy()
            out[f"c_{name}"] = sel(opt.count[name]).clone().numpy()
        # depth is stored relative to this reference focal parameter (see Params.translation)
        out["focal_ref"] = self.params.focal_ref.clone().numpy()
        # the probe's outcome: a resumed fit keeps it and does not probe again
        if self.cue_noise is not None:
            out["prior_scale"] = np.float64(self.prior_scale)
            out["uv_vertex_scale"] = np.float64(self.uv_vertex_scale)
            out.update({f"noise_{k}": np.float64(v) for k, v in self.cue_noise.items()})
        return out

    @torch.no_grad()
    def load_optimiser_state(self, i: int, state: dict, shared: bool) -> None:
        """Restore frame ``i``'s rows (and with ``shared`` the shared tensors) from :meth:`optimiser_state`."""
        opt = self.opt
        if shared and "focal_ref" in state:
            self.params.focal_ref.copy_(torch.as_tensor(np.asarray(state["focal_ref"]), dtype=self.params.focal_ref.dtype))
        if shared and "prior_scale" in state:
            self.prior_scale = float(state["prior_scale"])
            self.uv_vertex_scale = float(state.get("uv_vertex_scale", 1.0))
            self.cue_noise = {k[len("noise_"):]: float(v) for k, v in state.items() if k.startswith("noise_")}
        for name, t in opt.tensors.items():
            if f"p_{name}" not in state or (name not in opt.per_frame and not shared):
                continue
            for prefix, target in (("p", t), ("m", opt.m[name]), ("v", opt.v[name]), ("c", opt.count[name])):
                value = torch.as_tensor(np.asarray(state[f"{prefix}_{name}"]), dtype=target.dtype)
                if name in opt.per_frame:
                    target[i] = value
                else:
                    target.copy_(value)

    @torch.no_grad()
    def load_frame_fit(self, ff: FrameFit) -> None:
        """Set a frame's parameters from a finished :class:`FrameFit` (resuming)."""
        p = self.params
        i = ff.index
        dt = p.expr.dtype
        ke = min(len(ff.expression), p.expr.shape[1])
        p.expr[i].zero_()
        p.expr[i, :ke] = torch.as_tensor(ff.expression[:ke], dtype=dt)
        if self.head.has_eyelids and ff.eyelids is not None:
            p.eyelids[i] = torch.as_tensor(ff.eyelids, dtype=dt)
        p.joints[i] = matrix_to_rotation_6d(torch.as_tensor(ff.rotations[1:], dtype=dt))
        p.R[i] = matrix_to_rotation_6d(torch.as_tensor(ff.R_head, dtype=dt))
        p.set_translation(i, ff.t_head)
        self.frame_loss[i] = ff.loss
        if ff.state:
            self.load_optimiser_state(i, ff.state, shared=False)

    @torch.no_grad()
    def load_shared(self, shape: np.ndarray, intrinsics: np.ndarray, cam: int = 0) -> None:
        p = self.params
        ks = min(len(shape), p.shape.shape[0])
        p.shape.zero_()
        p.shape[:ks] = torch.as_tensor(shape[:ks], dtype=p.shape.dtype)
        focal, pp = params_from_intrinsics(float(intrinsics[0]), float(intrinsics[2]), float(intrinsics[3]), self.size)
        p.set_focal(cam, focal)
        p.pp[cam] = torch.as_tensor(pp, dtype=p.pp.dtype)

    def result(self, valid: np.ndarray, shared_camera: bool, info: dict | None = None) -> FitResult:
        p = self.params
        n = p.n_frames
        with torch.no_grad():
            rows = torch.arange(n)
            rots = p.rotations(rows).double().numpy() if n else np.zeros((0, self.head.n_joints, 3, 3))
            R = p.head_rotation(rows).double().numpy() if n else np.zeros((0, 3, 3))
            fx, fy, cx, cy = p.intrinsics(rows, self.size)
            K = torch.stack([fx, fy, cx, cy], dim=1).double().numpy()
            m = self.head.model
            return FitResult(
                image_size=self.size, shape=p.shape.double().numpy().copy(),
                expression=p.expr.double().numpy().copy(),
                eyelids=p.eyelids.double().numpy().copy() if self.head.has_eyelids else None,
                rotations=rots, R_head=R, t_head=p.translation(rows).double().numpy(), intrinsics=K,
                shared_camera=shared_camera, loss=self.frame_loss.copy(), valid=np.asarray(valid, bool),
                joint_names=tuple(m.joint_names), model_name=m.name, licence=m.licence,
                info={**(info or {}), "prior_scale": self.prior_scale, "uv_vertex_scale": self.uv_vertex_scale,
                      "cue_noise": dict(self.cue_noise or {})})


def above_floor(measured: float, floor: float) -> float:
    """The part of a measured residual that is not the probe's own floor, the two taken as
    independent: sqrt(max(measured^2 - floor^2, 0))."""
    return math.sqrt(max(measured * measured - floor * floor, 0.0))


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0
