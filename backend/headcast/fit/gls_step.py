# SPDX-License-Identifier: GPL-3.0-or-later
"""Part of a Gauss-Newton step after a single-image fit, with the normal cue weighed by the
covariance of its errors (generalised least squares, GLS).

A normal network errs smoothly: several degrees alike over a whole cheek (a bias) on top of
independent pixel noise. The fitting's energy takes each pixel's error as independent of its
neighbours' and de-biases the residual with a filter (``headcast.fit.bias_field``); a
Gaussian model of the errors, C = white^2 I + bias^2 K (K a Gaussian correlation), weighs
them as they are. Minimising the GLS energy alone does not land nearer the truth than the fit
(its own minimum is no better, see BENCHMARKS "Fitting: how exact one photo can be"), but the
two estimators err differently, and moving the fit part of the way toward the GLS solution
gains as a mean of two estimators does.

The step linearises the cues at the fit: the head-frame normals at the face pixels the fit
covers (the eye region left out, the rendering blurred like the predictions), and every
landmark group of the cues. Their derivatives in every parameter come by the chain rule: the
blendshape directions analytically through the skinning, the few pose and camera directions
by central differences, then sparse per-vertex (the normals) and per-pixel (barycentrics,
interpolation, normalisation) derivatives and the blur; a plain evaluation of the cues with
the fit's raster held (which triangle each pixel shows), differentiated in forward mode, is
the slow second path they are tested against. The normals' covariance is the configured
error model (``FitConfig.gls_normal_bias_deg``, ``gls_normal_noise_deg``,
``gls_bias_sigma_px``); each landmark group's noise is its residual's robust spread. With
the identity and expression priors (unit-variance coefficients) and a damping of the pose and
camera, P, the step solves

    (J^T C^-1 J + P) delta = J^T C^-1 r - P (theta - mean)

with C^-1 by Woodbury on a grid of Gaussians, and the fit moves by ``fraction * delta``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..flame import HeadModel
from ..render import interpolate, project_points, rasterize, vertex_normals
from .bias_field import blur_at_pixels
from .config import FitConfig
from .cues import FrameCues
from .energy import prepare_frame
from .head import FACING_CAMERA, FitHead
from .result import FitResult


#: fewer covered face pixels with a normal prediction than this, and :func:`refine` leaves the fit
MIN_NORMAL_PIXELS = 200


# ---- the parameters of a step ------------------------------------------------------------------

@dataclass
class StepLayout:
    """Slices of the step vector: identity, expression, eyelids, joint rotations (a rotation
    vector left-multiplied, every joint but the global one), head rotation (likewise),
    translation, log focal length, principal point (in half image widths)."""

    slices: dict
    dim: int
    joints: list

    @classmethod
    def of(cls, result: FitResult) -> "StepLayout":
        joints = list(range(1, result.rotations.shape[1]))
        sizes = [("shape", len(result.shape)), ("expr", result.expression.shape[1]),
                 ("eyelids", 0 if result.eyelids is None else result.eyelids.shape[1]),
                 ("joints", 3 * len(joints)), ("R", 3), ("t", 3), ("logf", 1), ("pp", 2)]
        slices, k = {}, 0
        for name, n in sizes:
            slices[name] = slice(k, k + n)
            k += n
        return cls(slices, k, joints)


def _rotation(v: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(v).as_matrix()


def moved_result(result: FitResult, layout: StepLayout, d: np.ndarray, frame: int = 0) -> FitResult:
    """``result`` with frame ``frame`` (and the identity) moved by the step vector ``d``."""
    s = layout.slices
    rots = result.rotations.copy()
    for i, j in enumerate(layout.joints):
        rots[frame, j] = _rotation(d[s["joints"]][3 * i: 3 * i + 3]) @ rots[frame, j]
    R = result.R_head.copy()
    R[frame] = _rotation(d[s["R"]]) @ R[frame]
    t = result.t_head.copy()
    t[frame] = t[frame] + d[s["t"]]
    expr = result.expression.copy()
    expr[frame] = expr[frame] + d[s["expr"]]
    eyelids = None if result.eyelids is None else result.eyelids.copy()
    if eyelids is not None:
        eyelids[frame] = eyelids[frame] + d[s["eyelids"]]
    intr = result.intrinsics.copy()
    intr[frame, :2] *= np.exp(d[s["logf"]][0])
    intr[frame, 2:] += d[s["pp"]] * result.image_size[1] / 2
    return replace(result, shape=result.shape + d[s["shape"]], expression=expr, eyelids=eyelids, rotations=rots,
                   R_head=R, t_head=t, intrinsics=intr)


def _skew(v: torch.Tensor) -> torch.Tensor:
    """[..., 3] -> [..., 3, 3] cross-product matrices."""
    z = torch.zeros_like(v[..., 0])
    x, y, w = v.unbind(-1)
    return torch.stack([torch.stack([z, -w, y], -1), torch.stack([w, z, -x], -1), torch.stack([-y, x, z], -1)], -2)


# ---- the cues as functions of the step --------------------------------------------------------

def perspective_barycentrics(screen: torch.Tensor, corners: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Perspective-correct barycentrics [B, N, 3] of pixel centres ``centres`` [N, 2] in the
    triangles with vertex rows ``corners`` [N, 3] of ``screen`` [B, V, 3] (x, y, depth)."""
    q = screen[:, corners]  # [B, N, 3 corners, 3]
    p = centres.to(screen.dtype)[None, :, None, :]
    rel = q[..., :2] - p
    nxt, prv = [1, 2, 0], [2, 0, 1]
    # the signed area of (p, next corner, previous corner): corner i's screen-space weight
    lam = rel[..., nxt, 0] * rel[..., prv, 1] - rel[..., nxt, 1] * rel[..., prv, 0]
    persp = lam / q[..., 2]
    return persp / persp.sum(-1, keepdim=True)


class LinearisedFit:
    """The cues of a one-image fit as a function of the step vector, with the fit's raster
    held: :meth:`evaluate` gives the (blurred, unit) head-frame normals at the chosen pixels and
    the landmark positions for a batch of steps; :meth:`jacobian` their derivatives."""

    def __init__(self, model: HeadModel, result: FitResult, cues: FrameCues, config: FitConfig,
                 head: FitHead | None = None, frame: int = 0) -> None:
        cfg = config
        self.cfg = cfg
        self.result = result
        self.index = int(frame)  # which frame of ``result`` the cues are
        self.layout = StepLayout.of(result)
        self.size = tuple(int(v) for v in result.image_size)
        h, w = self.size
        self.scale = w / 256.0
        dt = torch.float64
        self.head = head or FitHead(model, len(result.shape), result.expression.shape[1], dt, cfg.uv_vertex_masks,
                                    cfg.uv_vertex_exclude, cfg.silhouette_masks, cfg.eye_masks, cfg.eye_margin_m,
                                    cfg.noisy_eye_masks)
        head = self.head
        # every landmark group the cues have, whatever the fit's weights: the step weighs each
        # by its own residual's spread (a group the model's embedding fits badly weighs little)
        every = {t.term: 1.0 for t in cues.landmarks}
        self.frame = prepare_frame(head, cues, cfg.with_(landmark_weights=every, landmark_weights_without_dense=every),
                                   self.size, where="gls step")
        self.base = {k: torch.as_tensor(np.asarray(v), dtype=dt) for k, v in (
            ("shape", result.shape), ("expr", result.expression[frame]), ("rots", result.rotations[frame]),
            ("R", result.R_head[frame]), ("t", result.t_head[frame]), ("intr", result.intrinsics[frame]))}
        if result.eyelids is not None:
            self.base["eyelids"] = torch.as_tensor(result.eyelids[frame], dtype=dt)
        # the fit's raster, held: which triangle each covered pixel shows
        with torch.no_grad():
            self._at_fit = self._posed(torch.zeros(1, self.layout.dim, dtype=dt))  # vcam, noneck, screen
            raster = rasterize(self._at_fit[2], head.faces, self.size, cull_backfaces=True)
        self.pixel_index = raster.pixel_index
        self.pixel_face = raster.pixel_face
        self.corners = head.faces[raster.pixel_face]
        xy = torch.stack([raster.pixel_index % w, raster.pixel_index // w], 1).to(dt) + 0.5
        self.centres = xy
        # the pixels of the normal term: a valid prediction, outside the (wide) eye region
        f = self.frame
        self.normal_rows = torch.zeros(0, dtype=torch.long)
        if f.normals is not None:
            ok = f.normal_mask.reshape(-1)[raster.pixel_index] > 0
            if head.has_eye_mask:
                # the eye region as the fit shows it (the de-biased mode's wide mask), widened by
                # gls_eye_margin_px: its predictions are the least reliable, and a wrong one
                # there pulls the eyes and brows through the bias's long correlation
                from scipy.ndimage import binary_dilation

                eye = interpolate(head.wide_eye_attr[None], raster, head.faces).view(h * w)[raster.pixel_index]
                img = np.zeros(h * w, bool)
                img[raster.pixel_index.numpy()] = eye.numpy() >= 1e-3
                grow = int(round(cfg.gls_eye_margin_px * self.scale))
                if grow > 0:
                    img = binary_dilation(img.reshape(h, w), iterations=grow).reshape(-1)
                ok &= ~torch.as_tensor(img[raster.pixel_index.numpy()])
            self.normal_rows = torch.nonzero(ok).squeeze(1)
        self.landmarks = [pl for pl in f.landmarks if pl.term_weight > 0]
        # FLAME's head rotation, held for the iBUG contour's choice of vertices
        contour = self.base["rots"].clone()[None]
        contour[:, 0] = torch.as_tensor(FACING_CAMERA, dtype=dt) @ self.base["R"]
        self.contour = contour

    # ---- evaluation -------------------------------------------------------------------------

    def _posed(self, d: torch.Tensor):
        """Camera-frame vertices, the head frame's mesh (neck at rest) and screen positions of
        a batch of steps ``d`` [B, D], first order in d (exact derivatives at d = 0)."""
        s, base, head = self.layout.slices, self.base, self.head
        b = d.shape[0]
        eye3 = torch.eye(3, dtype=d.dtype)
        rots = base["rots"].expand(b, -1, -1, -1).clone()
        if self.layout.joints:
            dj = d[:, s["joints"]].reshape(b, -1, 3)
            rots[:, 1:] = (eye3 + _skew(dj)) @ base["rots"][1:]
        eyelids = (base["eyelids"] + d[:, s["eyelids"]]) if "eyelids" in base else None
        verts, noneck = head.forward(base["shape"] + d[:, s["shape"]], base["expr"] + d[:, s["expr"]], eyelids, rots,
                                     want_noneck=True)
        R = (eye3 + _skew(d[:, s["R"]])) @ base["R"]
        vcam = verts @ R.transpose(1, 2) + (base["t"] + d[:, s["t"]])[:, None]
        fx, fy, cx, cy = base["intr"].unbind()
        f_scale = 1.0 + d[:, s["logf"]][:, 0]
        half = self.size[1] / 2
        screen = project_points(vcam, fx * f_scale, fy * f_scale, cx + d[:, s["pp"]][:, 0] * half,
                                cy + d[:, s["pp"]][:, 1] * half)
        return vcam, noneck, screen

    def evaluate(self, d: torch.Tensor):
        """(normals [B, P, 3] at the normal term's pixels, landmarks [B, L, 2]) for steps d [B, D]."""
        head = self.head
        b = d.shape[0]
        vcam, noneck, screen = self._posed(d)
        normals = d.new_zeros(b, 0, 3)
        if len(self.normal_rows):
            vn = vertex_normals(noneck, head.faces, backend="torch")
            bary = perspective_barycentrics(screen, self.corners, self.centres)  # [B, N, 3]
            n = (bary[..., None] * vn[:, self.corners]).sum(-2)
            n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            blur = self.cfg.gls_normal_blur_px * self.scale
            if blur > 0:  # blurred like the predictions (all covered pixels, background zero)
                flat = n.permute(1, 0, 2).reshape(-1, 3 * b)
                flat = blur_at_pixels(flat, self.pixel_index, (1, *self.size), blur)
                n = flat.reshape(-1, b, 3).permute(1, 0, 2)
                n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            normals = n[:, self.normal_rows]
        lms = []
        fx, fy, cx, cy = (v for v in self.base["intr"].unbind())
        f_scale = 1.0 + d[:, self.layout.slices["logf"]][:, 0:1]
        pp = d[:, self.layout.slices["pp"]] * (self.size[1] / 2)
        for pl in self.landmarks:
            p3 = head.landmark_points(pl.kind, pl.data, vcam, self.contour.expand(b, -1, -1, -1))
            lms.append(torch.stack([fx * f_scale * p3[..., 0] / p3[..., 2] + cx + pp[:, 0:1],
                                    fy * f_scale * p3[..., 1] / p3[..., 2] + cy + pp[:, 1:2]], -1))
        landmarks = torch.cat(lms, 1) if lms else d.new_zeros(b, 0, 2)
        return normals, landmarks

    def jacobian(self, columns=None, chunk: int = 48):
        """Values at the fit and derivatives: normals [P, 3], dN [P, 3, D], landmarks [L, 2], dL
        [L, 2, D]; by forward-mode differentiation of :meth:`evaluate`, ``chunk`` parameters
        per batched pass (slow: the reference for :meth:`jacobian_fast`). ``columns``: only
        these parameters (the others' derivatives stay zero)."""
        from torch.func import jvp

        dim = self.layout.dim
        with torch.no_grad():
            n0, l0 = self.evaluate(torch.zeros(1, dim, dtype=torch.float64))
        jn = np.zeros((n0.shape[1], 3, dim))
        jl = np.zeros((l0.shape[1], 2, dim))
        cols = np.arange(dim) if columns is None else np.asarray(columns)
        eye = torch.eye(dim, dtype=torch.float64)
        for a in range(0, len(cols), chunk):
            pick = cols[a: a + chunk]
            tangent = eye[torch.as_tensor(pick)]
            _, (tn, tl) = jvp(self.evaluate, (torch.zeros_like(tangent),), (tangent,))
            jn[:, :, pick] = tn.permute(1, 2, 0).numpy()
            jl[:, :, pick] = tl.permute(1, 2, 0).numpy()
        return n0[0].numpy(), jn, l0[0].numpy(), jl

    def vertex_tangents(self):
        """Derivatives of the camera-frame vertices and of the head frame's mesh [D, V, 3] in
        every step direction. The blendshape directions analytically: a coefficient moves each
        vertex by its basis vector turned by the vertex's blended joint rotation, plus the
        joints' own move (the joint regressor) through the skinning translations. The few pose
        and camera directions by central differences."""
        from ..flame.lbs import rigid_transforms

        lay, head, base = self.layout, self.head, self.base
        s = lay.slices
        dt = torch.float64
        layer = head.layer
        mats = head._basis_matrices()
        n_v = head.model.n_vertices
        ks, ke = s["shape"].stop - s["shape"].start, s["expr"].stop - s["expr"].start
        basis = [mats["shape"][:ks], mats["expr"][:ke]]
        if "eyelids" in base:
            basis.append(mats["eyelids"])
        basis = torch.cat(basis).view(-1, n_v, 3)  # [K, V, 3]
        n_basis = basis.shape[0]
        with torch.no_grad():
            v = head.identity_offset(base["shape"]) + base["expr"][None] @ mats["expr"][:ke]
            if "eyelids" in base:
                v = v + base["eyelids"][None] @ mats["eyelids"]
            joints = layer.j_regressor @ v.view(n_v, 3)
            rots = base["rots"][None]
            poses = [rots]
            neck = head.joint("neck")
            if neck is not None:
                nn = rots.clone()
                nn[:, neck] = torch.eye(3, dtype=dt)
                poses.append(nn)
            d_joints = torch.einsum("jv,kvc->kjc", layer.j_regressor, basis)  # [K, J, 3]
            out = []
            for r in poses:
                transforms = rigid_transforms(r, joints[None], layer.parents)[1][0]  # [J, 4, 4]
                blend_rot = torch.einsum("vj,jab->vab", layer.weights, transforms[:, :3, :3])
                # the skinning translations' derivative in the joint locations (central differences)
                n_j = joints.shape[0]
                bump = 1e-6 * torch.eye(3 * n_j, dtype=dt).view(3 * n_j, n_j, 3)
                rr = r.expand(3 * n_j, -1, -1, -1)
                d_trans = (rigid_transforms(rr, joints + bump, layer.parents)[1][..., :3, 3]
                           - rigid_transforms(rr, joints - bump, layer.parents)[1][..., :3, 3]) / 2e-6
                d_t = torch.einsum("ibja,kib->kja", d_trans.view(n_j, 3, n_j, 3), d_joints)  # [K, J, 3]
                out.append(torch.einsum("vab,kvb->kva", blend_rot, basis) + torch.einsum("vj,kja->kva", layer.weights, d_t))
            d_posed = out[0]
            d_noneck = out[-1]
            d_vcam = d_posed @ base["R"].T
        # the other directions (joint and head rotations, translation; the intrinsics move no vertex)
        first = n_basis
        rest = [k for k in range(first, lay.dim) if not (s["logf"].start <= k < s["pp"].stop)]
        t_vcam = torch.zeros(lay.dim, n_v, 3, dtype=dt)
        t_noneck = torch.zeros(lay.dim, n_v, 3, dtype=dt)
        t_vcam[:first], t_noneck[:first] = d_vcam, d_noneck
        if rest:  # central differences (the step map is smooth; float64)
            eps = 1e-6
            steps = torch.zeros(len(rest), lay.dim, dtype=dt)
            steps[torch.arange(len(rest)), torch.as_tensor(rest)] = eps
            with torch.no_grad():
                hi, hi_nn, _ = self._posed(steps)
                lo, lo_nn, _ = self._posed(-steps)
            t_vcam[rest], t_noneck[rest] = (hi - lo) / (2 * eps), (hi_nn - lo_nn) / (2 * eps)
        return t_vcam, t_noneck

    def jacobian_fast(self):
        """What :meth:`jacobian` gives, by the chain rule through sparse per-vertex and
        per-pixel derivatives (about 20 times faster)."""
        from scipy.sparse import coo_matrix

        lay, head, base = self.layout, self.head, self.base
        s = lay.slices
        dt = torch.float64
        dim = lay.dim
        h, w = self.size
        vcam, noneck, screen = self._at_fit
        t_vcam, t_noneck = self.vertex_tangents()
        n_v = vcam.shape[1]
        # screen positions: the projection's derivative, plus the intrinsics' own directions
        x, y, z = vcam[0].unbind(-1)
        fx, fy, cx, cy = base["intr"].unbind()
        t_screen = torch.stack([fx * (t_vcam[..., 0] / z - x * t_vcam[..., 2] / z ** 2),
                                fy * (t_vcam[..., 1] / z - y * t_vcam[..., 2] / z ** 2), t_vcam[..., 2]], -1)
        kf = s["logf"].start
        t_screen[kf, :, 0], t_screen[kf, :, 1] = fx * x / z, fy * y / z
        t_screen[s["pp"].start, :, 0] = w / 2
        t_screen[s["pp"].start + 1, :, 1] = w / 2
        # landmarks: linear in the camera-frame vertices (the contour's choice held), then projected
        lms, lm_d = [], []
        for pl in self.landmarks:
            p3 = head.landmark_points(pl.kind, pl.data, vcam, self.contour)[0]
            d3 = head.landmark_points(pl.kind, pl.data, t_vcam, self.contour.expand(dim, -1, -1, -1))
            X, Y, Z = p3.unbind(-1)
            u = torch.stack([fx * X / Z + cx, fy * Y / Z + cy], -1)
            du = torch.stack([fx * (d3[..., 0] / Z - X * d3[..., 2] / Z ** 2),
                              fy * (d3[..., 1] / Z - Y * d3[..., 2] / Z ** 2)], -1)
            du[kf] = u - torch.stack([cx, cy])
            du[s["pp"].start, :, 0] += w / 2
            du[s["pp"].start + 1, :, 1] += w / 2
            lms.append(u)
            lm_d.append(du)
        l0 = torch.cat(lms).numpy() if lms else np.zeros((0, 2))
        jl = torch.cat(lm_d, 1).permute(1, 2, 0).numpy() if lms else np.zeros((0, 2, dim))
        if not len(self.normal_rows):
            return np.zeros((0, 3)), np.zeros((0, 3, dim)), l0, jl
        # vertex normals of the head frame's mesh
        faces = head.faces.numpy()
        dn_dv, vn = normals_jacobian(noneck[0].numpy(), faces)
        t_vn = (dn_dv.astype(np.float32) @ t_noneck.permute(1, 2, 0).reshape(3 * n_v, dim).numpy().astype(np.float32)).reshape(n_v, 3, dim)
        # per pixel: the unit normal's derivative in its corners' screen positions and normals,
        # for the pixels of the normal term and those the blur reaches them from
        blur = self.cfg.gls_normal_blur_px * self.scale
        rows_sel = self.normal_rows
        n_all = len(self.corners)
        q = screen[0][self.corners]  # [N, 3, 3]
        m = torch.as_tensor(vn)[self.corners]
        n_px, d_all = pixel_normal_derivatives(q, m, self.centres)
        if blur > 0:
            from scipy.ndimage import binary_dilation

            from .bias_field import gaussian_kernel

            reach = (len(gaussian_kernel(blur)) - 1) // 2
            img = np.zeros(h * w, bool)
            img[self.pixel_index[rows_sel].numpy()] = True
            img = binary_dilation(img.reshape(h, w), np.ones((2 * reach + 1, 2 * reach + 1), bool)).reshape(-1)
            need = torch.nonzero(torch.as_tensor(img[self.pixel_index.numpy()])).squeeze(1)
        else:
            need = rows_sel
        corners = self.corners[need]
        dpx = d_all[need]
        npx = len(corners)
        blocks = dpx.reshape(npx, 3, 18).numpy().astype(np.float32)  # columns: 3 corners x (x, y, depth, normal)
        rows = np.broadcast_to(3 * np.arange(npx)[:, None, None] + np.arange(3)[None, :, None], blocks.shape)
        c = corners.numpy()
        col_q = 3 * c[:, :, None] + np.arange(3)[None, None, :]  # [N, 3, 3] into the screen block
        cols = np.concatenate([col_q, 3 * n_v + col_q], 2).reshape(npx, 1, 18)
        cols = np.broadcast_to(cols, blocks.shape)
        sp = coo_matrix((blocks.ravel(), (rows.ravel(), cols.ravel())), shape=(3 * npx, 6 * n_v)).tocsr()
        # float32 from here: the step's products need no more (a scene's step agrees with
        # float64 to 1e-3 mm)
        tangents = np.concatenate([t_screen.permute(1, 2, 0).reshape(3 * n_v, dim).numpy(),
                                   t_vn.reshape(3 * n_v, dim)], 0).astype(np.float32)
        j_px = torch.as_tensor((sp @ tangents).reshape(npx, 3 * dim))
        if blur > 0:
            pos = torch.full((n_all,), -1, dtype=torch.long)
            pos[need] = torch.arange(npx)
            bn = blur_at_pixels(n_px, self.pixel_index, (1, h, w), blur)[rows_sel]
            j_px = _blur_columns(j_px, self.pixel_index[need], pos[rows_sel], (h, w), blur)
            length = bn.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            n_sel = bn / length
            proj = ((torch.eye(3, dtype=dt) - n_sel[:, :, None] * n_sel[:, None, :]) / length[:, :, None]).float()
            j_sel = proj @ j_px.view(-1, 3, dim)
        else:
            n_sel = n_px[rows_sel]
            j_sel = j_px.view(-1, 3, dim)
        return n_sel.numpy(), j_sel.numpy(), l0, jl


# ---- fast derivatives -------------------------------------------------------------------------

def normals_jacobian(verts: np.ndarray, faces: np.ndarray):
    """The derivative of the unit area-weighted vertex normals of ``verts`` [V, 3] with respect
    to the vertex positions, as a sparse [3V, 3V] matrix (scipy CSR), and the normals [V, 3].

    Each vertex normal is acc / |acc| with acc the sum of its faces' cross(v1 - v0, v2 - v0);
    d cross = -[e2]x de1 + [e1]x de2 (e1 = v1 - v0, e2 = v2 - v0)."""
    from scipy.sparse import coo_matrix

    n_v = len(verts)
    tri = verts[faces]  # [F, 3, 3]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    fn = np.cross(e1, e2)
    acc = np.zeros((n_v, 3))
    np.add.at(acc, faces.reshape(-1), np.repeat(fn, 3, axis=0))
    length = np.maximum(np.linalg.norm(acc, axis=1), 1e-12)
    vn = acc / length[:, None]
    q = (np.eye(3) - vn[:, :, None] * vn[:, None, :]) / length[:, None, None]  # d vn / d acc

    def skew(v):
        z = np.zeros(len(v))
        return np.stack([np.stack([z, -v[:, 2], v[:, 1]], -1), np.stack([v[:, 2], z, -v[:, 0]], -1),
                         np.stack([-v[:, 1], v[:, 0], z], -1)], -2)

    s1, s2 = skew(e1), skew(e2)
    d_fn = np.stack([s2 - s1, -s2, s1], 1)  # [F, 3 (source corner), 3, 3]
    # blocks Q_i dfn/dv_s for every face, receiving corner i and source corner s
    blocks = np.einsum("fiab,fsbc->fisac", q[faces], d_fn)  # [F, 3, 3, 3, 3]
    rows = (3 * faces[:, :, None, None, None] + np.arange(3)[None, None, None, :, None])
    cols = (3 * faces[:, None, :, None, None] + np.arange(3)[None, None, None, None, :])
    rows, cols = np.broadcast_to(rows, blocks.shape), np.broadcast_to(cols, blocks.shape)
    m = coo_matrix((blocks.ravel(), (rows.ravel(), cols.ravel())), shape=(3 * n_v, 3 * n_v)).tocsr()
    return m, vn


def pixel_normal_derivatives(q: torch.Tensor, m: torch.Tensor, centres: torch.Tensor):
    """Unit interpolated normals [N, 3] at pixel centres [N, 2] of triangles with screen
    corners q [N, 3, 3] (x, y, depth) and corner normals m [N, 3, 3], and their derivatives in
    the corners' screen positions and normals, [N, 3 (out), 3 (corner), 6 (x, y, depth, normal)].

    With lambda_j the screen-space weight of corner j (the signed area of the pixel centre and
    the other two corners), pi_j = lambda_j / depth_j, S = sum pi, b_j = pi_j / S and u = sum
    b_j m_j: du = sum_j b_j dm_j + sum_j dpi_j (m_j - u) / S, and the unit normal's derivative
    is (I - n n^T) du / |u|."""
    p = centres.to(q.dtype)[:, None, :]
    rel = q[..., :2] - p  # [N, 3, 2]
    nxt, prv = [1, 2, 0], [2, 0, 1]
    a, c = rel[:, nxt], rel[:, prv]  # the next and the previous corner of each j
    lam = a[..., 0] * c[..., 1] - a[..., 1] * c[..., 0]  # [N, 3]
    depth = q[..., 2]
    pi = lam / depth
    total = pi.sum(-1, keepdim=True)
    bary = pi / total
    u = (bary[..., None] * m).sum(1)  # [N, 3]
    length = u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    n = u / length
    g = (m - u[:, None]) / total[..., None]  # [N, 3 (j), 3]: du per unit dpi_j
    d = q.new_zeros(len(q), 3, 3, 6)  # [N, out, corner, input]
    for j in range(3):
        i1, i2 = nxt[j], prv[j]
        gj = g[:, j] / depth[:, j:j + 1]  # du per unit dlambda_j
        d[:, :, i1, 0] += gj * c[:, j, 1:2]
        d[:, :, i1, 1] -= gj * c[:, j, 0:1]
        d[:, :, i2, 0] -= gj * a[:, j, 1:2]
        d[:, :, i2, 1] += gj * a[:, j, 0:1]
        d[:, :, j, 2] -= g[:, j] * (lam[:, j] / depth[:, j] ** 2)[:, None]
        d[:, :, j, 3:] += bary[:, j, None, None] * torch.eye(3, dtype=q.dtype)
    proj = (torch.eye(3, dtype=q.dtype) - n[:, :, None] * n[:, None, :]) / length[..., None]
    return n, torch.einsum("nab,nbcd->nacd", proj, d)

def _blur_columns(values: torch.Tensor, pixel_index: torch.Tensor, rows: torch.Tensor, size: tuple[int, int],
                  sigma: float) -> torch.Tensor:
    """Many per-pixel columns ``values`` [N, C] at flat pixel indices [N] (zero elsewhere),
    blurred by a Gaussian of ``sigma`` px and read back at ``rows`` of them: [len(rows), C].
    The blur of :func:`headcast.fit.bias_field.gaussian_blur` (unpooled), over the pixels'
    bounding box only, as a depthwise convolution of the pixel-major image seen as channels-last
    (no transposed copy of the columns; several times faster than channels-first here)."""
    import torch.nn.functional as F

    from .bias_field import gaussian_kernel

    h, w = size
    g = gaussian_kernel(sigma, values.dtype)
    rad = (len(g) - 1) // 2
    ys, xs = pixel_index // w, pixel_index % w
    y0, x0 = int(ys.min()), int(xs.min())
    bh, bw = int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1
    c = values.shape[1]
    local = (ys - y0) * bw + (xs - x0)
    img = values.new_zeros(bh * bw, c).index_put((local,), values)
    img = img.view(1, bh, bw, c).permute(0, 3, 1, 2)  # [1, C, bh, bw], channels-last in memory
    img = F.conv2d(img, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, rad), groups=c)
    img = F.conv2d(img, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(rad, 0), groups=c)
    return img.permute(0, 2, 3, 1).reshape(bh * bw, c)[local[rows]]

# ---- the error covariance and the step ----------------------------------------------------------

def gaussian_grid_basis(points: np.ndarray, sigma: float, size: int, spacing: float = 4.0, reach: float = 4.0):
    """Phi [P, G] (sparse) with Phi Phi^T ~ exp(-|p - q|^2 / (4 sigma^2)) for the points [P, 2]:
    the correlation of white noise filtered by a Gaussian of ``sigma``, by a grid of Gaussians
    ``spacing`` apart over a square of ``size`` (plus a margin), each cut off ``reach`` sigmas
    from its centre; only the grid functions that touch a point are kept. The grid's sum of
    the products of two Gaussians ripples by about 2 exp(-pi^2 sigma^2 / spacing^2) (1e-4 at
    a spacing of sigma)."""
    from scipy.sparse import csr_matrix

    margin = 3 * sigma
    n = int(np.floor((size + 2 * margin) / spacing + 1e-9)) + 1  # grid nodes per axis
    # every point against the grid nodes within reach: offsets around its nearest node
    k = int(np.ceil(reach * sigma / spacing)) + 1
    off = np.arange(-k, k + 1)
    ox, oy = [a.ravel() for a in np.meshgrid(off, off)]
    base = np.rint((points + margin) / spacing).astype(np.int64)  # [P, 2] nearest node (x, y)
    gx = base[:, 0:1] + ox[None]
    gy = base[:, 1:2] + oy[None]
    d2 = (points[:, 0:1] - (gx * spacing - margin)) ** 2 + (points[:, 1:2] - (gy * spacing - margin)) ** 2
    ok = (d2 <= (reach * sigma) ** 2) & (gx >= 0) & (gx < n) & (gy >= 0) & (gy < n)
    rows = np.nonzero(ok)[0]
    cols = (gy * n + gx)[ok]
    # a grid of spacing h sums the product of two Gaussians of sigma to pi sigma^2 / h^2 times the kernel
    vals = np.exp(-d2[ok] / (2 * sigma ** 2)) / np.sqrt(np.pi * sigma ** 2 / spacing ** 2)
    used = np.flatnonzero(np.bincount(cols, minlength=n * n))
    remap = np.zeros(n * n, np.int64)
    remap[used] = np.arange(len(used))
    return csr_matrix((vals, (rows, remap[cols])), shape=(len(points), len(used)))


@dataclass
class StepReport:
    """What the step used: normal pixels, landmarks, the landmark groups' median noise (px at
    the fit's size), seconds."""

    pixels: int
    landmarks: int
    landmark_px: float
    seconds: float


def cue_system(lin: LinearisedFit, values=None) -> tuple[np.ndarray, np.ndarray, StepReport]:
    """The cues' part of the GLS normal equations at the fit of ``lin``: J^T C^-1 J [D, D], J^T
    C^-1 r [D] and a report. ``values``: the output of ``lin.jacobian_fast()`` (or
    ``lin.jacobian()``) when it is already at hand."""
    import time

    from scipy.linalg import solve_triangular

    t0 = time.perf_counter()
    cfg, lay, f = lin.cfg, lin.layout, lin.frame
    n0, jn, l0, jl = values if values is not None else lin.jacobian_fast()
    dim = lay.dim
    H = np.zeros((dim, dim))
    b = np.zeros(dim)
    npix = 0
    bias, white = np.radians(cfg.gls_normal_bias_deg), np.radians(cfg.gls_normal_noise_deg)
    if len(lin.normal_rows):
        pix = lin.pixel_index[lin.normal_rows].numpy()
        target = f.normals.reshape(-1, 3)[pix].numpy()
        r = target - n0
        keep = np.linalg.norm(r, axis=1) < cfg.gls_normal_outlier_rad
        r, J, pix = r[keep], jn[keep], pix[keep]
        npix = len(r)
        if npix >= 50 and white > 0:
            w = lin.size[1]
            xy = np.stack([pix % w, pix // w], 1) + 0.5
            # the bias's correlation on a grid of Gaussians one correlation length apart
            phi = gaussian_grid_basis(xy / lin.scale, cfg.gls_bias_sigma_px, int(round(w / lin.scale)),
                                      cfg.gls_bias_sigma_px, 3.5)
            inner = (white / max(bias, 1e-9)) ** 2 * np.eye(phi.shape[1]) + (phi.T @ phi).toarray()
            chol = np.linalg.cholesky(inner)
            # J^T C^-1 J = (J^T J - B^T inner^-1 B) / white^2 with B = Phi^T J (Woodbury), likewise for r
            phi32 = phi.astype(np.float32)
            for c in range(3):
                jc = np.ascontiguousarray(J[:, c], dtype=np.float32)
                rc = r[:, c].astype(np.float32)
                bj = solve_triangular(chol, np.asarray(phi32.T @ jc, dtype=np.float64), lower=True)
                br = solve_triangular(chol, phi.T @ r[:, c], lower=True)
                H += ((jc.T @ jc).astype(np.float64) - bj.T @ bj) / white ** 2
                b += ((jc.T @ rc).astype(np.float64) - bj.T @ br) / white ** 2
    nl, spreads = 0, []
    if lin.landmarks:
        targets = torch.cat([pl.points for pl in lin.landmarks]).numpy()
        weights = torch.cat([pl.weights for pl in lin.landmarks]).numpy()
        group = np.concatenate([np.full(len(pl.points), k) for k, pl in enumerate(lin.landmarks)])
        r = targets - l0
        ok = (weights > 0) & (np.linalg.norm(r, axis=1) < cfg.gls_landmark_outlier_px * lin.scale)
        nl = int(ok.sum())
        for k in range(len(lin.landmarks)):
            sel = ok & (group == k)
            if not sel.any():
                continue
            # each group by the robust spread of its own residuals, with a floor: a group the
            # model's embedding fits badly (a detector's mouth or jaw line) weighs little
            sd = max(1.4826 * float(np.median(np.abs(r[sel]))), cfg.gls_landmark_min_px * lin.scale)
            spreads.append(sd)
            for c in range(2):
                H += jl[sel, c].T @ jl[sel, c] / sd ** 2
                b += jl[sel, c].T @ r[sel, c] / sd ** 2
    report = StepReport(npix, nl, float(np.median(spreads)) if spreads else 0.0, time.perf_counter() - t0)
    return H, b, report


def step_prior(lin: LinearisedFit, with_identity: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The step's prior precision P [D, D] and its pull P (theta - mean) at the fit: the
    identity's (unit-variance coefficients, or the model's own whitening and mean; left out
    with ``with_identity`` False, for the frames of a joint step after the first) and the
    expression's (unit variance); the other parameters get a damping of the step alone
    (``FitConfig.gls_damping``), no pull: the step trusts the fit's pose and camera to about
    that much. Without the focal length's damping the step trades depth for focal length."""
    cfg, lay = lin.cfg, lin.layout
    m = lin.head.model
    dim = lay.dim
    P = np.zeros((dim, dim))
    pull = np.zeros(dim)
    ss, se = lay.slices["shape"], lay.slices["expr"]
    ks = ss.stop - ss.start
    if with_identity:
        if m.shape_whiten is not None:
            W = np.asarray(m.shape_whiten[:ks, :ks], dtype=np.float64)
            P[ss, ss] = W.T @ W
        else:
            P[ss, ss] = np.eye(ks)
        mean = 0.0 if m.shape_mean is None else np.asarray(m.shape_mean[:ks], dtype=np.float64)
        pull[ss] = P[ss, ss] @ (lin.result.shape - mean)
    P[se, se] = np.eye(se.stop - se.start)
    pull[se] = lin.result.expression[lin.index]
    idx = np.arange(dim)
    for name, sd in cfg.gls_damping.items():
        if name in lay.slices and sd > 0:
            P[idx[lay.slices[name]], idx[lay.slices[name]]] += 1.0 / sd ** 2
    P[idx, idx] += 1e-9  # the translation has neither: keep the system regular
    return P, pull


def joint_delta(lins: list, shared=("shape",), held=(), values=None) -> tuple[list, list]:
    """The GLS Gauss-Newton step of several frames of one fit (``lins``, one
    :class:`LinearisedFit` per frame) whose ``shared`` parameter groups are common to all
    (the identity; the camera too when it is shared), leaving the ``held`` groups as they
    are. Returns each frame's step vector (the shared part the same in all) and reports."""
    lay = lins[0].layout
    dim = lay.dim
    shared_idx = np.concatenate([np.arange(dim)[lay.slices[n]] for n in shared]) if shared else np.zeros(0, int)
    own_idx = np.setdiff1d(np.arange(dim), shared_idx)
    n_s, n_o = len(shared_idx), len(own_idx)
    size = n_s + n_o * len(lins)
    H = np.zeros((size, size))
    g = np.zeros(size)
    reports = []
    for k, lin in enumerate(lins):
        hk, bk, rep = cue_system(lin, None if values is None else values[k])
        reports.append(rep)
        P, pull = step_prior(lin, with_identity=k == 0)
        hk, gk = hk + P, bk - pull
        rows = np.concatenate([np.arange(n_s), n_s + k * n_o + np.arange(n_o)])
        order = np.concatenate([shared_idx, own_idx])
        H[np.ix_(rows, rows)] += hk[np.ix_(order, order)]
        g[rows] += gk[order]
    free = np.ones(size, bool)
    for name in held:
        sel = np.zeros(dim, bool)
        sel[lay.slices[name]] = True
        free[:n_s] &= ~sel[shared_idx]
        for k in range(len(lins)):
            free[n_s + k * n_o: n_s + (k + 1) * n_o] &= ~sel[own_idx]
    x = np.zeros(size)
    x[free] = np.linalg.solve(H[np.ix_(free, free)], g[free])
    deltas = []
    for k in range(len(lins)):
        d = np.zeros(dim)
        d[shared_idx] = x[:n_s]
        d[own_idx] = x[n_s + k * n_o: n_s + (k + 1) * n_o]
        deltas.append(d)
    return deltas, reports


def gls_delta(lin: LinearisedFit, values=None, held=()) -> tuple[np.ndarray, StepReport]:
    """The whole GLS Gauss-Newton step from the one-frame fit of ``lin``, and a report;
    ``held``: parameter groups the step leaves as they are (a held identity or focal length)."""
    deltas, reports = joint_delta([lin], held=held, values=None if values is None else [values])
    return deltas[0], reports[0]


def refine(model: HeadModel, result: FitResult, cues, config: FitConfig,
           head: FitHead | None = None, held=()) -> tuple[FitResult, dict]:
    """``result`` moved ``config.gls_step_fraction`` of the way to its GLS Gauss-Newton
    solution, and what the step measured (for ``FitResult.info``). ``cues``: the FrameCues of
    a one-image fit, or one per image of a fit of several photos (None for an image without
    cues), whose identity (and shared camera) the step moves jointly; ``held``: parameter
    groups to leave (a held identity or focal length). Images with fewer than
    MIN_NORMAL_PIXELS normal pixels take no part; without any such image the fit is left."""
    import time

    t0 = time.perf_counter()
    cues = [cues] if isinstance(cues, FrameCues) else list(cues)
    head = head or FitHead(model, len(result.shape), result.expression.shape[1], torch.float64,
                           config.uv_vertex_masks, config.uv_vertex_exclude, config.silhouette_masks,
                           config.eye_masks, config.eye_margin_m, config.noisy_eye_masks)
    lins = [LinearisedFit(model, result, c, config, head, frame=i) for i, c in enumerate(cues) if c is not None]
    lins = [lin for lin in lins if len(lin.normal_rows) >= MIN_NORMAL_PIXELS]
    if not lins:
        # without the normals the step would be the landmarks' and the priors' alone: it would
        # shrink the identity toward the mean on no evidence
        return result, {"fraction": 0.0, "skipped": "too few normal pixels", "seconds": time.perf_counter() - t0}
    shared = ["shape"] + (["logf", "pp"] if result.shared_camera and result.n_frames > 1 else [])
    deltas, reports = joint_delta(lins, shared=shared, held=held)
    layout = lins[0].layout
    moved = result
    frac = config.gls_step_fraction
    for lin, d in zip(lins, deltas):
        own = frac * d
        own[layout.slices["shape"]] = 0.0  # the shared identity moves once, below
        moved = moved_result(moved, layout, own, frame=lin.index)
    moved = replace(moved, shape=moved.shape + frac * deltas[0][layout.slices["shape"]])
    if "logf" in shared:  # one camera: the images without a part in the step follow it too
        moved.intrinsics[:] = moved.intrinsics[lins[0].index]
    info = {"fraction": float(frac), "images": len(lins), "normal_pixels": sum(r.pixels for r in reports),
            "landmarks": sum(r.landmarks for r in reports), "seconds": time.perf_counter() - t0,
            "identity_change": float(np.linalg.norm(moved.shape - result.shape))}
    return moved, info
