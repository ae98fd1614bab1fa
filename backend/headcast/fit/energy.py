# SPDX-License-Identifier: GPL-3.0-or-later
"""The fitting energy of a batch of frames: model forward, camera, rendering, loss terms.

Only what the active terms need is computed: no rasterization without a dense cue (or a uv
correspondence that needs the visibility test), no head-frame mesh without normals, no uv
interpolation without a uv cue.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..render import antialias, interpolate, project_points, rasterize, vertex_normals, vertex_visibility
from . import losses as L
from .bias_field import blur_at_pixels, iterated_smooth_field, smooth_field
from .config import FitConfig
from .correspondence import uv_correspondences
from .cues import FrameCues, validate_cues
from .head import FACING_CAMERA, FitHead
from .params import Params


@dataclass
class PreparedLandmarks:
    kind: str
    data: object
    points: torch.Tensor  # [L, 2]
    weights: torch.Tensor  # [L]
    term_weight: float
    lid_pairs: torch.Tensor | None


@dataclass
class PreparedFrame:
    """One frame's cues as tensors, plus its cached uv correspondences."""

    uv: torch.Tensor | None = None
    uv_mask: torch.Tensor | None = None
    normals: torch.Tensor | None = None
    normal_mask: torch.Tensor | None = None
    face_mask: torch.Tensor | None = None
    sil_valid: torch.Tensor | None = None
    corr_ids: torch.Tensor | None = None  # [M]
    corr_target: torch.Tensor | None = None  # [M, 2]
    corr_normal: torch.Tensor | None = None  # [M, 3] normal cue at each correspondence's pixel
    corr_normal_valid: torch.Tensor | None = None  # [M] float
    # per-pixel cues packed as [H*W, 7] = normals (3), normal mask, uv (2), uv mask, so that the
    # covered pixels are gathered once per step
    pixel_table: torch.Tensor | None = None
    landmarks: list = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return (self.uv is None and self.normals is None and self.face_mask is None and not self.landmarks
                and (self.corr_ids is None or len(self.corr_ids) == 0))


def prepare_frame(head: FitHead, cues: FrameCues | None, config: FitConfig, size: tuple[int, int],
                  where: str = "frame", corr: tuple | None = None) -> PreparedFrame:
    """Validate a frame's cues and turn them into tensors; compute its uv correspondences
    (or reuse ``corr`` = (ids, targets) cached from an earlier preparation).
    ``None`` (a dropped frame) gives an empty frame."""
    if cues is None:
        return PreparedFrame()
    c = validate_cues(cues, size, where)
    dt = head.dtype
    as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dt)  # noqa: E731
    p = PreparedFrame()
    if c.uv is not None and head.has_uv:
        p.uv, p.uv_mask = as_t(c.uv), as_t(c.uv_mask)
        if corr is None:
            found = uv_correspondences(c.uv, c.uv_mask, head.uv_vertex_ids, head.uv_vertex_uv, config.uv_delta,
                                       config.uv_subpixel)
            corr = (torch.as_tensor(found.vertex_ids, dtype=torch.long), as_t(found.target_px))
        p.corr_ids, p.corr_target = corr
    if c.normals is not None:
        p.normals, p.normal_mask = as_t(c.normals), as_t(c.normal_mask)
        if p.corr_ids is not None and len(p.corr_ids):
            # the predicted normal where each vertex should land (bilinear at the sub-pixel
            # target, valid where all four pixels are): a per-vertex normal target
            n_img, ok = _bilinear(c.normals, c.normal_mask, p.corr_target.double().numpy())
            n_img /= np.maximum(np.linalg.norm(n_img, axis=-1, keepdims=True), 1e-9)
            p.corr_normal = as_t(n_img)
            p.corr_normal_valid = as_t(ok)
    if c.face_mask is not None:
        p.face_mask = as_t(c.face_mask)
        p.sil_valid = None if c.silhouette_valid is None else as_t(c.silhouette_valid)
    dense = c.uv is not None or c.normals is not None
    if p.uv is not None or p.normals is not None:
        table = torch.zeros(size[0] * size[1], 7, dtype=dt)
        if p.normals is not None:
            table[:, :3], table[:, 3] = p.normals.reshape(-1, 3), p.normal_mask.reshape(-1)
        if p.uv is not None:
            table[:, 4:6], table[:, 6] = p.uv.reshape(-1, 2), p.uv_mask.reshape(-1)
        p.pixel_table = table
    for k, t in enumerate(c.landmarks):
        w_term = config.landmark_weight(t.term, dense)
        lid = t.lid_pairs if (t.lid_pairs is not None and len(t.lid_pairs) and config.w_lid > 0) else None
        if w_term <= 0 and lid is None:
            continue
        plan = head.resolve_landmarks(t.embedding, t.ids, len(t.points), f"{where} landmarks[{k}]")
        if plan is None:  # the model has no such embedding: the term switches off
            continue
        kind, data, keep = plan
        w = np.where(keep, t.weights, 0.0)
        if not np.any(w > 0):
            continue
        p.landmarks.append(PreparedLandmarks(kind, data, as_t(t.points), as_t(w), w_term,
                                             None if lid is None else torch.as_tensor(lid, dtype=torch.long)))
    return p


def _bilinear(img: np.ndarray, mask: np.ndarray, px: np.ndarray):
    """Bilinear samples of ``img`` [H, W, C] at pixel positions ``px`` [M, 2] (centres at +0.5)
    and whether all four neighbours are inside ``mask``."""
    h, w = mask.shape
    x = px[:, 0] - 0.5
    y = px[:, 1] - 0.5
    x0 = np.clip(np.floor(x).astype(int), 0, w - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, h - 2)
    fx = np.clip(x - x0, 0.0, 1.0)[:, None]
    fy = np.clip(y - y0, 0.0, 1.0)[:, None]
    out = ((1 - fx) * (1 - fy) * img[y0, x0] + fx * (1 - fy) * img[y0, x0 + 1]
           + (1 - fx) * fy * img[y0 + 1, x0] + fx * fy * img[y0 + 1, x0 + 1])
    ok = mask[y0, x0] & mask[y0, x0 + 1] & mask[y0 + 1, x0] & mask[y0 + 1, x0 + 1]
    return out, ok


_FLAME_FROM_CAMERA = torch.as_tensor(FACING_CAMERA)  # OpenCV camera -> FLAME's "facing +z" frame


@dataclass
class EnergyOptions:
    dense: bool = True  # rendered terms (normals, dense uv, silhouette)
    uv_vertex: bool = True
    landmarks: bool = True
    regularize: bool = True
    robust_init: bool = False  # Cauchy vertex loss, no pixel cut, no visibility (camera init)
    shape_scale: float = 1.0  # weight of the shared-parameter priors (batch / frames)
    prior_scale: float = 1.0  # noise-adaptive scale of the identity and expression priors
    uv_vertex_scale: float = 1.0  # noise-adaptive scale of the 2-D vertex term
    identity: torch.Tensor | None = None  # precomputed identity offset while the shape is frozen
    # the de-biased mode (FitConfig.normal_bias_sigma_px): the normal residual less its smooth
    # part, the wider eye mask on the normal and dense-uv terms
    normal_bias: bool = False


class Energy:
    """Evaluates the weighted terms for rows of :class:`Params` against prepared frames."""

    def __init__(self, head: FitHead, config: FitConfig, size: tuple[int, int]) -> None:
        self.head = head
        self.cfg = config
        self.size = (int(size[0]), int(size[1]))
        self.width = float(size[1])
        self.dist_px = config.uv_dist_px * self.width / 256.0
        m = head.model
        dt = head.dtype
        self.expr_bounds = None if m.expr_bounds is None else torch.as_tensor(m.expr_bounds[:head.n_expr], dtype=dt)
        self.shape_bounds = None if m.shape_bounds is None else torch.as_tensor(m.shape_bounds[:head.n_shape], dtype=dt)
        self.shape_mean = None if m.shape_mean is None else torch.as_tensor(m.shape_mean[:head.n_shape], dtype=dt)
        self.shape_whiten = (None if m.shape_whiten is None
                             else torch.as_tensor(m.shape_whiten[:head.n_shape, :head.n_shape], dtype=dt))
        names = list(m.joint_names[1:])
        self.jaw = names.index("jaw") if "jaw" in names else None
        self.neck = names.index("neck") if "neck" in names else None
        self.eyes = [names.index(n) for n in ("eye_left", "eye_right") if n in names]
        self.mirror = head.mirror_prior(config.mirror_tol, config.mirror_expression) if config.w_mirror > 0 else None

    # ------------------------------------------------------------------------------------

    def __call__(self, params: Params, rows: list[int], frames: list[PreparedFrame],
                 opts: EnergyOptions | None = None, shape_prior: torch.Tensor | None = None):
        """Returns (total scalar, per-frame totals [B] detached, dict of per-frame terms)."""
        opts = opts or EnergyOptions()
        cfg, head = self.cfg, self.head
        rows_t = torch.as_tensor(rows, dtype=torch.long)
        b = len(rows)
        dt = head.dtype
        h, w = self.size
        terms: dict[str, torch.Tensor] = {}

        has_normals = opts.dense and cfg.w_normal > 0 and any(f.normals is not None for f in frames)
        has_uv = opts.dense and cfg.w_uv_dense > 0 and head.has_uv and any(f.uv is not None for f in frames)
        has_sil = opts.dense and cfg.w_silhouette > 0 and any(f.face_mask is not None for f in frames)
        has_corr = (opts.uv_vertex and cfg.w_uv_vertex > 0
                    and any(f.corr_ids is not None and len(f.corr_ids) for f in frames))
        has_lmk = opts.landmarks and any(f.landmarks for f in frames)
        has_vn = (has_corr and cfg.w_vertex_normal > 0 and not opts.robust_init
                  and any(f.corr_normal is not None for f in frames))
        need_raster = has_normals or has_uv or has_sil or (has_corr and not opts.robust_init)

        rots, R, vcam, v_normals, (fx, fy, cx, cy), screen = self._posed(params, rows_t, has_normals or has_vn,
                                                                         opts.identity)

        raster = None
        if need_raster:
            raster = rasterize(screen, head.faces, (h, w), cull_backfaces=True)
            pix_batch = raster.pixel_batch
            cue_px = self._gather_pixels(frames, raster) if (has_normals or has_uv) else None

        eye_ok = None  # pixels outside the eye mask in use, once rendered (the normal and dense-uv terms)
        if has_normals:
            n_px, target, mask, eye_ok = self._pixel_normals(v_normals, raster, cue_px, opts.normal_bias)
            w_n, huber = cfg.w_normal, 0.0
            if opts.normal_bias and cfg.normal_bias_sigma_px > 0:
                if cfg.normal_render_blur_px > 0:
                    n_px = self._blurred_normals(n_px, raster, b)
                target = target - self._normal_bias(n_px, target, mask, raster, b)
                w_n, huber = cfg.w_normal_debiased, cfg.normal_huber_debiased
            terms["normal"] = w_n * L.normal_loss(n_px, target, mask, cfg.normal_delta, pix_batch, b, h * w, huber)

        if has_sil:
            region = head.sil_face[raster.pixel_face]
            dense = region.new_zeros(b * h * w).index_put((raster.pixel_index,), region).view(b, h, w, 1)
            cov = antialias(dense, raster, screen, head.faces)[..., 0]
            target, _ = self._stack(frames, "face_mask", None, (h, w))
            valid = self._valid_sil(frames, (h, w))
            terms["silhouette"] = cfg.w_silhouette * L.silhouette_loss(cov, target, valid)

        if has_uv:
            uv_img = interpolate(head.uv, raster, head.faces_uv)
            uv_px = uv_img.view(b * h * w, 2)[raster.pixel_index]
            target, mask = cue_px[:, 4:6], cue_px[:, 6]
            if opts.normal_bias and head.has_eye_mask:
                if eye_ok is None:  # no normal term rendered it
                    eye = interpolate(head.wide_eye_attr.expand(b, -1, -1), raster, head.faces)
                    eye_ok = self._outside_eyes(eye.view(b * h * w)[raster.pixel_index], mask.dtype)
                mask = mask * eye_ok
            terms["uv_dense"] = cfg.w_uv_dense * L.uv_dense_loss(uv_px, target, mask, pix_batch, b, h * w,
                                                                 cfg.uv_dense_delta)

        if has_corr:
            proj, target, valid, ids = self._gather_corr(frames, screen)
            w_corr = cfg.w_uv_vertex * opts.uv_vertex_scale
            if opts.robust_init:
                terms["uv_vertex"] = w_corr * L.robust_vertex_loss(proj, target, valid, self.width,
                                                                   scale_px=0.05 * self.width)
            else:
                vis = vertex_visibility(screen, raster, tol=cfg.visibility_tol, radius=1, ids=ids)
                valid = valid * vis.to(dt)
                terms["uv_vertex"] = w_corr * L.uv_vertex_loss(proj, target, valid, self.width, self.dist_px)
                if has_vn:
                    n_t, n_ok = self._gather_corr_normals(frames, ids.shape[1])
                    inlier = valid * n_ok * ((proj - target).detach().abs().sum(-1) < self.dist_px).to(dt)
                    n_v = torch.gather(v_normals, 1, ids[..., None].expand(-1, -1, 3))
                    terms["vertex_normal"] = cfg.w_vertex_normal * L.vertex_normal_loss(n_v, n_t, inlier)

        if has_lmk:
            lm, lid = self._landmark_terms(frames, vcam, rots, R, fx, fy, cx, cy)
            terms["landmarks"] = lm
            if lid is not None:
                terms["lid"] = lid

        if opts.regularize:
            self._frame_priors(params, rows_t, terms, opts.prior_scale)

        per_frame = sum(terms.values()) if terms else torch.zeros(b, dtype=dt)
        total = per_frame.sum()
        if opts.regularize:
            total = total + opts.shape_scale * self.shared_prior(params, shape_prior, opts.prior_scale)
        return total, per_frame.detach(), {k: v.detach() for k, v in terms.items()}

    # ---- priors ----------------------------------------------------------------------------

    def _frame_priors(self, params: Params, rows: torch.Tensor, terms: dict, prior_scale: float = 1.0) -> None:
        cfg = self.cfg
        expr = params.expr[rows]
        reg = cfg.w_expr * prior_scale * L.squared_norm(expr)
        if self.expr_bounds is not None:
            reg = reg + cfg.w_bounds * L.bound_violation(expr, self.expr_bounds)
        joints = params.joints[rows]
        if self.jaw is not None:
            reg = reg + cfg.w_jaw * L.rotation_to_identity(joints[:, self.jaw])
        if self.neck is not None:
            reg = reg + cfg.w_neck * L.rotation_to_identity(joints[:, self.neck])
        for e in self.eyes:
            reg = reg + cfg.w_eyes * L.rotation_to_identity(joints[:, e])
        if len(self.eyes) == 2:
            reg = reg + cfg.w_eye_symmetry * L.squared_norm(joints[:, self.eyes[0]] - joints[:, self.eyes[1]])
        if self.head.has_eyelids:
            reg = reg + cfg.w_eyelids * L.squared_norm(params.eyelids[rows])
        if self.mirror is not None:
            reg = reg + cfg.w_mirror * self.mirror.energy(params.shape, expr if cfg.mirror_expression else None)
        terms["prior"] = reg

    def shared_prior(self, params: Params, shape_prior: torch.Tensor | None, prior_scale: float = 1.0) -> torch.Tensor:
        """Identity priors (toward zero or the model's mean, whitened if it says so; toward an
        optional prior code; both times ``prior_scale``) and the principal-point prior."""
        cfg = self.cfg
        beta = params.shape
        centred = beta if self.shape_mean is None else beta - self.shape_mean
        if self.shape_whiten is not None:
            centred = self.shape_whiten @ centred
        e = cfg.w_shape * prior_scale * centred.pow(2).sum()
        if shape_prior is not None:
            e = e + cfg.w_shape_prior * prior_scale * (beta - shape_prior).pow(2).sum()
        if self.shape_bounds is not None:
            e = e + cfg.w_bounds * L.bound_violation(beta[None], self.shape_bounds).sum()
        return e + cfg.w_principal_point * params.pp.pow(2).sum()

    # ---- cue noise -------------------------------------------------------------------------

    @torch.no_grad()
    def cue_noise(self, params: Params, rows: list[int], frames: list[PreparedFrame]) -> dict:
        """How far the cues are from the current head: the median angle in degrees between the
        rendered and the predicted normals over the valid normal pixels (``normal_deg``), split
        into its smooth part and the rest (``normal_smooth_deg``, ``normal_white_deg``: the
        median size of the residual's normalised convolution at ``probe_smooth_sigma_px``, and of
        what that leaves), and the median distance between the visible corresponded vertices and
        their targets as a fraction of the image width (``uv``). A cue that is absent or has too
        few samples is left out.

        Medians, so that outlier blobs and a wrong eye region (which the losses cut off anyway)
        do not count: this measures the noise the inliers carry. The split, because the two
        parts matter very differently: pixel noise averages out over the thousands of pixels of
        a face, a smooth error alike over a whole cheek does not (see FitConfig.adaptive_priors)."""
        cfg, head = self.cfg, self.head
        rows_t = torch.as_tensor(rows, dtype=torch.long)
        h, w = self.size
        has_normals = cfg.w_normal > 0 and any(f.normals is not None for f in frames)
        has_corr = cfg.w_uv_vertex > 0 and any(f.corr_ids is not None and len(f.corr_ids) for f in frames)
        out: dict = {}
        if not (has_normals or has_corr):
            return out
        _, _, _, v_normals, _, screen = self._posed(params, rows_t, has_normals, None)
        raster = rasterize(screen, head.faces, (h, w), cull_backfaces=True)
        if has_normals:
            n_px, target, mask, _ = self._pixel_normals(v_normals, raster, self._gather_pixels(frames, raster))
            ok = mask > 0
            if int(ok.sum()) >= 50:
                tgt = target[ok] / target[ok].norm(dim=-1, keepdim=True).clamp_min(1e-8)
                cos = (n_px[ok] * tgt).sum(-1).clamp(-1.0, 1.0)
                out["normal_deg"] = float(torch.rad2deg(torch.arccos(cos)).median())
                r, inlier = self._normal_residual(n_px, target, mask)
                smooth = smooth_field(r, inlier, raster.pixel_index, (len(rows), h, w),
                                      cfg.probe_smooth_sigma_px * self.width / 256.0, cfg.normal_bias_lambda)
                # residual vectors of unit normals: their length is the angle (radians) to first order
                out["normal_smooth_deg"] = float(torch.rad2deg(smooth[ok].norm(dim=-1)).median())
                out["normal_white_deg"] = float(torch.rad2deg((r - smooth)[ok].norm(dim=-1)).median())
        if has_corr:
            proj, target, valid, ids = self._gather_corr(frames, screen)
            vis = vertex_visibility(screen, raster, tol=cfg.visibility_tol, radius=1, ids=ids)
            d = (proj - target).norm(dim=-1)[(valid > 0) & vis]
            if len(d) >= 20:
                out["uv"] = float(d.median()) / self.width
        return out

    # ---- helpers ---------------------------------------------------------------------------

    def _posed(self, params: Params, rows_t: torch.Tensor, want_normals: bool, identity: torch.Tensor | None):
        """Joint rotations, head rotations, camera-frame vertices, head-frame vertex normals
        (None unless ``want_normals``), intrinsics and screen positions of ``rows_t``."""
        head = self.head
        rots = params.rotations(rows_t)
        eyelids = params.eyelids[rows_t] if head.has_eyelids else None
        verts, noneck = head.forward(params.shape, params.expr[rows_t], eyelids, rots, want_noneck=want_normals,
                                     identity=identity)
        v_normals = vertex_normals(noneck, head.faces) if want_normals else None
        R = params.head_rotation(rows_t)
        vcam = verts @ R.transpose(1, 2) + params.translation(rows_t)[:, None]
        intr = params.intrinsics(rows_t, self.size)
        return rots, R, vcam, v_normals, intr, project_points(vcam, *intr)

    def _pixel_normals(self, v_normals: torch.Tensor, raster, cue_px: torch.Tensor, wide: bool = False):
        """Rendered unit normals at the covered pixels [N, 3], the predicted ones, their
        validity (the cue's mask, minus the model's eye mask: with ``wide``, the de-biased mode's
        whole eye region) and that eye mask's own validity [N] (None without an eye mask)."""
        head = self.head
        b, (h, w) = v_normals.shape[0], self.size
        attrs = [v_normals]
        if head.has_eye_mask:
            attrs.append((head.wide_eye_attr if wide else head.eye_attr).expand(b, -1, -1))
        img = interpolate(torch.cat(attrs, dim=-1), raster, head.faces)
        px = img.view(b * h * w, -1)[raster.pixel_index]  # [N, C] covered pixels only
        n_px = px[:, :3] / px[:, :3].norm(dim=-1, keepdim=True).clamp_min(1e-8)
        target, mask = cue_px[:, :3], cue_px[:, 3]
        eye_ok = self._outside_eyes(px[:, 3].detach(), v_normals.dtype) if head.has_eye_mask else None
        if eye_ok is not None:
            mask = mask * eye_ok
        return n_px, target, mask, eye_ok

    @staticmethod
    def _outside_eyes(eye_attr_px: torch.Tensor, dtype) -> torch.Tensor:
        """1 where a pixel's interpolated eye attribute is zero (its triangle has no eye vertex)."""
        return (eye_attr_px < 1e-3).to(dtype)

    def _normal_residual(self, n_px, target, mask):
        """The normal residual at the covered pixels (zero where the cue is not valid), detached,
        and which pixels are inliers of the normal term (valid and within its outlier cut)."""
        r = (target - n_px).detach() * mask[:, None]
        return r, mask * (r.abs().mean(-1) < self.cfg.normal_delta).to(r.dtype)

    def _blurred_normals(self, n_px, raster, b):
        """The rendered normals at the covered pixels blurred like the predictions
        (``normal_render_blur_px`` at 256 px width; background zero), renormalised."""
        sigma = self.cfg.normal_render_blur_px * self.width / 256.0
        out = blur_at_pixels(n_px, raster.pixel_index, (b, *self.size), sigma)
        return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    def _normal_bias(self, n_px, target, mask, raster, b):
        """The smooth bias of the normal cue at the covered pixels [N, 3]: the residuals of the
        valid pixels within the outlier cut, smoothed by a normalised convolution at
        ``normal_bias_sigma_px`` (:func:`headcast.fit.bias_field.smooth_field`), by default twice
        ("twicing": the second pass smooths what the first left, so the residual keeps (1 - G)^2
        of the residual's spectrum, a sharper cut between the bias's low frequencies and the
        face's detail than one Gaussian's 1 - G; ``normal_bias_passes`` rounds in all)."""
        cfg = self.cfg
        r, inlier = self._normal_residual(n_px, target, mask)
        sigma = cfg.normal_bias_sigma_px * self.width / 256.0
        shape = (b, *self.size)
        return iterated_smooth_field(r, inlier, raster.pixel_index, shape, sigma, cfg.normal_bias_lambda,
                                     cfg.normal_bias_passes)

    def _stack(self, frames, name: str, mask_name: str | None, shape):
        dt = self.head.dtype
        vals, masks = [], []
        for f in frames:
            v = getattr(f, name)
            if v is None:
                vals.append(torch.zeros(shape, dtype=dt))
                masks.append(torch.zeros(shape[:2], dtype=dt))
            else:
                vals.append(v)
                masks.append(getattr(f, mask_name) if mask_name else torch.ones(shape[:2], dtype=dt))
        return torch.stack(vals), torch.stack(masks)

    def _gather_pixels(self, frames, raster) -> torch.Tensor:
        """The packed per-pixel cues [N, 7] at the raster's covered pixels (zero for frames
        without them)."""
        h, w = self.size
        # covered pixels of each frame, as indices into that frame's flattened cue maps
        counts = torch.bincount(raster.pixel_batch, minlength=len(frames)).tolist()
        local = (raster.pixel_index - raster.pixel_batch * (h * w)).split(counts)
        parts = []
        for f, idx in zip(frames, local):
            if f.pixel_table is None:
                parts.append(torch.zeros(len(idx), 7, dtype=self.head.dtype))
            else:
                parts.append(f.pixel_table.index_select(0, idx))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _valid_sil(self, frames, hw):
        dt = self.head.dtype
        if all(f.sil_valid is None and f.face_mask is not None for f in frames):
            return None
        out = []
        for f in frames:
            if f.face_mask is None:
                out.append(torch.zeros(hw, dtype=dt))
            elif f.sil_valid is None:
                out.append(torch.ones(hw, dtype=dt))
            else:
                out.append(f.sil_valid)
        return torch.stack(out)

    def _gather_corr(self, frames, screen):
        """Padded [B, M, 2] projections and targets and [B, M] validity of the correspondences."""
        b = len(frames)
        m = max((len(f.corr_ids) if f.corr_ids is not None else 0) for f in frames)
        dt = screen.dtype
        ids = torch.zeros(b, m, dtype=torch.long)
        target = torch.zeros(b, m, 2, dtype=dt)
        valid = torch.zeros(b, m, dtype=dt)
        for i, f in enumerate(frames):
            if f.corr_ids is None or not len(f.corr_ids):
                continue
            k = len(f.corr_ids)
            ids[i, :k], target[i, :k], valid[i, :k] = f.corr_ids, f.corr_target, 1.0
        proj = torch.gather(screen[..., :2], 1, ids[..., None].expand(-1, -1, 2))
        return proj, target, valid, ids

    def _gather_corr_normals(self, frames, m: int):
        dt = self.head.dtype
        n_t = torch.zeros(len(frames), m, 3, dtype=dt)
        ok = torch.zeros(len(frames), m, dtype=dt)
        for i, f in enumerate(frames):
            if f.corr_normal is not None:
                k = len(f.corr_ids)
                n_t[i, :k], ok[i, :k] = f.corr_normal, f.corr_normal_valid
        return n_t, ok

    def _landmark_terms(self, frames, vcam, rots, R, fx, fy, cx, cy):
        cfg = self.cfg
        dt = vcam.dtype
        contour = rots.clone()
        contour[:, 0] = _FLAME_FROM_CAMERA.to(dt) @ R  # head rotation in FLAME's convention
        lm, lid = [], []
        for i, f in enumerate(frames):
            lm_i = vcam.new_zeros(())
            lid_i = vcam.new_zeros(())
            for pl in f.landmarks:
                pts3 = self.head.landmark_points(pl.kind, pl.data, vcam[i:i + 1], contour[i:i + 1])
                px = project_points(pts3, fx[i], fy[i], cx[i], cy[i])[..., :2]
                if pl.term_weight > 0:
                    lm_i = lm_i + pl.term_weight * L.landmark_loss(px, pl.points[None], pl.weights[None],
                                                                  self.width)[0]
                if pl.lid_pairs is not None:
                    lid_i = lid_i + cfg.w_lid * L.lid_loss(px, pl.points[None], pl.weights[None],
                                                           pl.lid_pairs, self.width)[0]
            lm.append(lm_i)
            lid.append(lid_i)
        lm = torch.stack(lm)
        lid = torch.stack(lid) if any(pl.lid_pairs is not None for f in frames for pl in f.landmarks) else None
        return lm, lid

    # ---- visibility-free projections for evaluation ----------------------------------------

    @torch.no_grad()
    def project_vertices(self, params: Params, rows: list[int]) -> torch.Tensor:
        rows_t = torch.as_tensor(rows, dtype=torch.long)
        verts, _ = self.head.forward(params.shape, params.expr[rows_t],
                                     params.eyelids[rows_t] if self.head.has_eyelids else None,
                                     params.rotations(rows_t))
        R = params.head_rotation(rows_t)
        vcam = verts @ R.transpose(1, 2) + params.translation(rows_t)[:, None]
        return project_points(vcam, *params.intrinsics(rows_t, self.size))
