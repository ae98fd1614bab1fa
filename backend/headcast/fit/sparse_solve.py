# SPDX-License-Identifier: GPL-3.0-or-later
"""Levenberg-Marquardt on the sparse part of the energy (ours, not in Pixel3DMM).

The nearest-uv correspondences and the landmarks make a least-squares problem in the
identity, expression, eyelid, joint and head-pose parameters with a few thousand residuals
and a few hundred unknowns. Adam moves every coordinate by at most its learning rate per
step, so reaching identity coefficients of size ~2 takes hundreds of steps; a damped
Gauss-Newton step solves the (locally linearised) problem at once. The video tracker runs two LM
iterations on every tracked frame (warm-started from its predecessor) before Adam refines it
on the full energy (dense uv, normals, silhouette); after the camera initialisation of a
single image it is optional (``FitConfig.lm_iterations``). The synthetic benchmark measures
both (see the comments in :mod:`headcast.fit.config`).

Only the vertices the residuals touch are posed (correspondence vertices, landmark
triangles, and the joint regressor's support), and the Jacobian is computed in closed form
(:mod:`.sparse_jacobian`; ``jacfwd`` took ~100 ms per iteration on two cores, bound by
per-operation overhead). Rotations step in their tangent space (:meth:`SparseProblem.retract`). The residuals use the same weights and normalisation as :mod:`headcast.fit.energy` (the
vertex-normal term with ``lm_vertex_normal``), so LM minimises the sparse terms plus the priors
of the full energy.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..flame.lbs import pose_feature, rotation_6d_to_matrix
from ..render import rasterize, vertex_visibility
from .energy import PreparedFrame
from .head import FACING_CAMERA
from .sparse_jacobian import d6_tangent, rotate_6d, skew, skin_with_jacobian, world_transforms

_FLAME_FROM_CAMERA = torch.as_tensor(FACING_CAMERA)


class SparseProblem:
    """The sparse residuals of one frame as a function of a flat parameter vector."""

    def __init__(self, fitter, row: int, frame: PreparedFrame, blocks: list[str], shape_scale: float = 1.0,
                 energy=None) -> None:
        self.f = fitter
        self.row = row
        self.frame = frame
        self.blocks = blocks
        # the noise-adaptive prior scale applies to the identity and expression priors here too
        self.shape_scale = shape_scale * fitter.prior_scale
        self.w_expr = fitter.cfg.w_expr * fitter.prior_scale
        head = fitter.head
        p = fitter.params
        self.dt = head.dtype
        cfg = fitter.cfg
        energy = energy or fitter.energy
        size = energy.size
        self.width = float(size[1])
        rows = torch.tensor([row])
        with torch.no_grad():
            self.fx, self.fy, self.cx, self.cy = (v[0] for v in p.intrinsics(rows, size))
            cam = p.cam_index[row]
            self.zoom = torch.exp(p.focal[cam] - p.focal_ref[cam]).detach()

        # ---- which residuals: visible correspondences inside the pixel cut, landmarks ----
        with torch.no_grad():
            screen = energy.project_vertices(p, [row])
        self.corr_ids = torch.zeros(0, dtype=torch.long)
        self.corr_target = torch.zeros(0, 2, dtype=self.dt)
        self.vn_ids = torch.zeros(0, dtype=torch.long)
        self.vn_target = torch.zeros(0, 3, dtype=self.dt)
        if frame.corr_ids is not None and len(frame.corr_ids) and cfg.w_uv_vertex > 0:
            raster = rasterize(screen, head.faces, size, cull_backfaces=True)
            ids, target = frame.corr_ids, frame.corr_target
            vis = vertex_visibility(screen, raster, tol=cfg.visibility_tol, radius=1, ids=ids[None])[0]
            near = (screen[0, ids, :2] - target).abs().sum(-1) < energy.dist_px
            keep = vis & near
            self.corr_ids, self.corr_target = ids[keep], target[keep]
            if frame.corr_normal is not None and cfg.lm_vertex_normal > 0:
                ok = frame.corr_normal_valid[keep] > 0
                self.vn_ids = self.corr_ids[ok]
                self.vn_target = frame.corr_normal[keep][ok]
        self.corr_scale = (math.sqrt(cfg.w_uv_vertex * fitter.uv_vertex_scale / (2.0 * max(len(self.corr_ids), 1)))
                           / self.width)
        self.vn_scale = math.sqrt(cfg.lm_vertex_normal / (3.0 * max(len(self.vn_ids), 1)))

        contour = p.rotations(rows).detach().clone()
        contour[:, 0] = _FLAME_FROM_CAMERA.to(self.dt) @ p.head_rotation(rows).detach()
        self.landmarks = []  # (faces [L,3] vertex ids, bary [L,3], target [L,2], sqrt weights [L], lid pairs)
        for pl in frame.landmarks:
            faces, bary = self._embedding(pl, contour)
            w = pl.weights
            present = float((w > 0).sum().clamp_min(1.0))
            lm_w = torch.sqrt(pl.term_weight * w / (2.0 * present)) / self.width if pl.term_weight > 0 else None
            lid = None
            if pl.lid_pairs is not None:
                pw = torch.minimum(w[pl.lid_pairs[:, 0]], w[pl.lid_pairs[:, 1]])
                n_pairs = float((pw > 0).sum().clamp_min(1.0))
                lid = (pl.lid_pairs, torch.sqrt(cfg.w_lid * pw / (2.0 * n_pairs)) / self.width)
            self.landmarks.append((faces, bary, pl.points, lm_w, lid))

        # ---- the vertex subset to pose ----
        parts = [self.corr_ids] + [fc.reshape(-1) for fc, *_ in self.landmarks]
        if len(self.vn_ids):  # vertex normals need every triangle around their vertex
            vf = head.vertex_faces[self.vn_ids]
            self.vn_faces = torch.unique(vf[vf >= 0])
            parts.append(head.faces[self.vn_faces].reshape(-1))
        sub = torch.unique(torch.cat(parts)) if parts else torch.zeros(0, dtype=torch.long)
        self.sub = sub
        lookup = torch.full((head.model.n_vertices,), -1, dtype=torch.long)
        lookup[sub] = torch.arange(len(sub))
        self.corr_local = lookup[self.corr_ids]
        self.landmarks = [(lookup[fc], b, t, lw, lid) for fc, b, t, lw, lid in self.landmarks]
        if len(self.vn_ids):
            self.vn_face_verts = lookup[head.faces[self.vn_faces]]  # [Fs, 3] local vertex ids
            face_lookup = torch.full((head.faces.shape[0] + 1,), len(self.vn_faces), dtype=torch.long)
            face_lookup[self.vn_faces] = torch.arange(len(self.vn_faces))
            vf = head.vertex_faces[self.vn_ids]
            vf = vf[:, : int((vf >= 0).sum(1).max())]  # the table is padded to the largest valence
            self.vn_incident = face_lookup[torch.where(vf >= 0, vf, head.faces.shape[0])]  # [M, K], pad -> Fs
            neck = head.joint("neck")
            self.neck_index = neck
        mats = head._basis_matrices()
        cols = (sub[:, None] * 3 + torch.arange(3)).reshape(-1)
        support = torch.nonzero(head.layer.j_regressor.abs().sum(0) > 0).squeeze(1)
        scols = (support[:, None] * 3 + torch.arange(3)).reshape(-1)
        if "shape" in blocks:
            base = head._template_flat[0]
            self.S_sub, self.S_sup = mats["shape"][:, cols], mats["shape"][:, scols]
        else:  # a frozen identity joins the template (gathering 300 basis columns costs more)
            base = head.identity_offset(p.shape.detach())[0]
            self.S_sub = self.S_sup = None
        self.T_sub, self.T_sup = base[cols], base[scols]
        self.E_sub, self.E_sup = mats["expr"][:, cols], mats["expr"][:, scols]
        self.L_sub = mats["eyelids"][:, cols] if head.has_eyelids else None
        self.L_sup = mats["eyelids"][:, scols] if head.has_eyelids else None
        # blendshape block -> its basis at the vertex subset and at the regressor's support (None: folded in T)
        self._bases = {"shape": (self.S_sub, self.S_sup), "expr": (self.E_sub, self.E_sup),
                       "eyelids": (self.L_sub, self.L_sup)}
        layer = head.layer
        self.P_sub = None if layer.posedirs is None else layer.posedirs[:, cols]
        self.W_sub = layer.weights[sub]
        self.Jreg = layer.j_regressor[:, support]
        self.parents = layer.parents

        # ---- priors (same weights as Energy) ----
        e = fitter.energy
        self.prior_shape_mean = e.shape_mean
        self.prior_whiten = e.shape_whiten
        self.shape_prior = fitter.shape_prior
        self.jaw, self.neck, self.eyes = e.jaw, e.neck, e.eyes

        # ---- parameter layout ----
        self.sizes = {"shape": head.n_shape, "expr": head.n_expr, "eyelids": 2 if head.has_eyelids else 0,
                      "joints": (head.n_joints - 1) * 6, "R": 6, "t": 3}
        self.blocks = [b for b in blocks if self.sizes[b] > 0]
        # the step's layout: rotations move in their tangent space (3 per rotation, see retract)
        self.step_sizes = dict(self.sizes, joints=(head.n_joints - 1) * 3, R=3)

    def _embedding(self, pl, contour):
        head = self.f.head
        if pl.kind == "vertex":
            vid = torch.as_tensor(np.asarray(pl.data), dtype=torch.long)
            return vid[:, None].expand(-1, 3).contiguous(), torch.tensor([[1.0, 0.0, 0.0]], dtype=self.dt).expand(len(vid), 3)
        if pl.kind == "surface":
            faces, bary = pl.data
            return head.faces[torch.as_tensor(faces, dtype=torch.long)], torch.as_tensor(bary, dtype=self.dt)
        lm = head.layer
        row = lm.contour_rows(contour)[0]
        all_faces = torch.cat([lm.lmk_dynamic_faces[row], lm.lmk_static_faces])
        all_bary = torch.cat([lm.lmk_dynamic_bary[row], lm.lmk_static_bary])
        idx = torch.as_tensor(np.asarray(pl.data), dtype=torch.long)
        return head.faces[all_faces[idx]], all_bary[idx].to(self.dt)

    # ---- parameter vector ----------------------------------------------------------------

    def pack(self) -> torch.Tensor:
        p = self.f.params
        i = self.row
        vals = {"shape": p.shape, "expr": p.expr[i], "eyelids": p.eyelids[i], "joints": p.joints[i].reshape(-1),
                "R": p.R[i], "t": p.t[i]}
        return torch.cat([vals[b].detach().reshape(-1) for b in self.blocks])

    def unpack(self, z: torch.Tensor) -> dict:
        p = self.f.params
        i = self.row
        out = {"shape": p.shape.detach(), "expr": p.expr[i].detach(), "eyelids": p.eyelids[i].detach(),
               "joints": p.joints[i].detach().reshape(-1), "R": p.R[i].detach(), "t": p.t[i].detach()}
        k = 0
        for b in self.blocks:
            n = self.sizes[b]
            out[b] = z[k:k + n]
            k += n
        return out

    @torch.no_grad()
    def store(self, z: torch.Tensor) -> None:
        p = self.f.params
        i = self.row
        v = self.unpack(z)
        if "shape" in self.blocks:
            p.shape.copy_(v["shape"])
        if "expr" in self.blocks:
            p.expr[i] = v["expr"]
        if "eyelids" in self.blocks:
            p.eyelids[i] = v["eyelids"]
        if "joints" in self.blocks:
            p.joints[i] = v["joints"].reshape(-1, 6)
        if "R" in self.blocks:
            p.R[i] = v["R"]
        if "t" in self.blocks:
            p.t[i] = v["t"]

    # ---- residuals and their closed-form Jacobian -----------------------------------------

    def residuals(self, z: torch.Tensor) -> torch.Tensor:
        """The residual vector at ``z``: the same assembly as :meth:`linearize` with Jacobians of
        zero columns, so no derivative work; functional, so ``jacfwd`` can check :meth:`linearize`."""
        v = self.unpack(z)
        flat, joints, rots = self._rest_pose(v)
        x = self._skin(rots, joints, flat)
        x_nn = None
        if len(self.vn_ids):  # head-frame normals: the same mesh posed with the neck at rest
            x_nn = x if self.neck_index is None else self._skin(self._neck_at_rest(rots), joints, flat)
        none = x.new_zeros(len(self.sub), 3, 0)
        return self._assemble(v, self._to_camera(v, x), x_nn, none, none)[0]

    def linearize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Residuals at ``z`` (equal to :meth:`residuals`) and their Jacobian with respect to a
        step of :meth:`retract` at zero, in closed form (see :mod:`.sparse_jacobian`)."""
        v = self.unpack(z)
        flat, joints, rots = self._rest_pose(v)
        live = [b for b in ("shape", "expr", "eyelids") if b in self.blocks and self._bases[b][0] is not None]
        n_sub = len(self.sub)
        if live:
            rest_coef = torch.cat([self._bases[b][0].reshape(-1, n_sub, 3) for b in live], 0).permute(1, 2, 0)
            joint_coef = torch.cat([self.Jreg @ self._bases[b][1].reshape(self.sizes[b], -1, 3) for b in live],
                                   0).permute(1, 2, 0)
        else:
            rest_coef, joint_coef = flat.new_zeros(n_sub, 3, 0), joints.new_zeros(len(self.parents), 3, 0)
        x, dx_coef, dx_w = skin_with_jacobian(rots, joints, self.parents, flat, self.W_sub, rest_coef, joint_coef,
                                              self.P_sub)
        R = rotation_6d_to_matrix(v["R"])
        one = torch.ones((), dtype=self.dt)
        jx = self._step_columns(live, R @ dx_coef, R @ dx_w.reshape(n_sub, 3, -1), -R @ skew(x),
                                torch.diag(torch.stack([one, one, self.zoom]))[None].expand(n_sub, 3, 3))
        x_nn = jnn = None
        if len(self.vn_ids):
            if self.neck_index is None:
                x_nn, dc, dw = x, dx_coef, dx_w
            else:
                x_nn, dc, dw = skin_with_jacobian(self._neck_at_rest(rots), joints, self.parents, flat, self.W_sub,
                                                  rest_coef, joint_coef, self.P_sub, frozen=(self.neck_index,))
            no_pose = x_nn.new_zeros(n_sub, 3, 3)  # head-frame normals do not see the camera pose
            jnn = self._step_columns(live, dc, dw.reshape(n_sub, 3, -1), no_pose, no_pose)
        r, J = self._assemble(v, self._to_camera(v, x), x_nn, jx, jnn)
        return r, torch.cat([J, self._prior_jacobian(rots, len(r) - len(J))], 0)

    def retract(self, z: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """The parameter vector moved by ``step`` (layout :attr:`step_sizes`): coefficients and
        translation add, rotations turn by ``R exp([w]x)``."""
        v = self.unpack(z)
        out, k = [], 0
        for b in self.blocks:
            n = self.step_sizes[b]
            d = step[k:k + n]
            k += n
            if b == "joints":
                out.append(rotate_6d(v[b].reshape(-1, 6), d.reshape(-1, 3)).reshape(-1))
            elif b == "R":
                out.append(rotate_6d(v[b], d))
            else:
                out.append(v[b] + d)
        return torch.cat(out)

    # ---- pieces shared by residuals and linearize -------------------------------------------

    def _rest_pose(self, v: dict):
        """Rest points of the vertex subset [n_sub, 3] (no pose correctives), joints [J, 3] and
        local joint rotations [J, 3, 3] (the root's is the identity: the head pose is R, t)."""
        flat, sup = self.T_sub, self.T_sup
        for b, (m_sub, m_sup) in self._bases.items():
            if m_sub is not None:
                flat = flat + v[b] @ m_sub
                sup = sup + v[b] @ m_sup
        eye = torch.eye(3, dtype=self.dt)[None]
        rots = torch.cat([eye, rotation_6d_to_matrix(v["joints"].reshape(-1, 6))], dim=0)
        return flat.reshape(len(self.sub), 3), self.Jreg @ sup.reshape(-1, 3), rots

    def _skin(self, rots: torch.Tensor, joints: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
        """Posed points [n_sub, 3]: pose correctives, then linear blend skinning."""
        n_sub = rest.shape[0]
        if self.P_sub is not None:
            rest = rest + (pose_feature(rots[None]) @ self.P_sub).reshape(n_sub, 3)
        r, _, c = world_transforms(rots, joints, self.parents)
        blend = (self.W_sub @ torch.cat([r, c[..., None]], -1).reshape(len(self.parents), 12)).reshape(n_sub, 3, 4)
        return (blend[..., :3] * rest[:, None, :]).sum(-1) + blend[..., 3]

    def _neck_at_rest(self, rots: torch.Tensor) -> torch.Tensor:
        k = self.neck_index
        return torch.cat([rots[:k], torch.eye(3, dtype=self.dt)[None], rots[k + 1:]], dim=0)

    def _to_camera(self, v: dict, x: torch.Tensor) -> torch.Tensor:
        t = torch.cat([v["t"][:2], v["t"][2:] * self.zoom])
        return x @ rotation_6d_to_matrix(v["R"]).T + t

    def _step_columns(self, live, d_coef, d_joints, d_rot, d_t) -> torch.Tensor:
        """Point derivatives [n_sub, 3, P] in the step layout, from those with respect to the
        ``live`` coefficient blocks (in order), the joints, the head rotation and translation."""
        cols, k = {"joints": d_joints, "R": d_rot, "t": d_t}, 0
        for b in live:
            cols[b] = d_coef[..., k:k + self.sizes[b]]
            k += self.sizes[b]
        return torch.cat([cols[b] for b in self.blocks], dim=-1)

    def _assemble(self, v: dict, xc: torch.Tensor, x_nn: torch.Tensor | None, jx: torch.Tensor,
                  jnn: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual vector and the Jacobian rows of its data part, from the posed points in
        the camera frame ``xc`` and the head frame ``x_nn`` and their derivatives ``jx``, ``jnn``
        [n_sub, 3, P]: the one place that fixes the residual order."""
        res, rows = [], []
        n_par = jx.shape[-1]

        def add(r: torch.Tensor, d: torch.Tensor) -> None:
            res.append(r.reshape(-1))
            rows.append(d.reshape(res[-1].shape[0], n_par))

        if len(self.corr_local):
            uv, d = self._project_linear(xc[self.corr_local], jx[self.corr_local])
            add((uv - self.corr_target) * self.corr_scale, d * self.corr_scale)
        for faces, bary, target, lm_w, lid in self.landmarks:
            pts, d = self._project_linear((xc[faces] * bary[..., None]).sum(1),
                                          (jx[faces] * bary[..., None, None]).sum(1))
            if lm_w is not None:
                add((pts - target) * lm_w[:, None], d * lm_w[:, None, None])
            if lid is not None:
                pairs, lw = lid
                a, b = pairs[:, 0], pairs[:, 1]
                add(((pts[a] - pts[b]) - (target[a] - target[b])) * lw[:, None], (d[a] - d[b]) * lw[:, None, None])
        if x_nn is not None:
            n, dn = self._vertex_normals(x_nn, jnn)
            add((n - self.vn_target) * self.vn_scale, dn * self.vn_scale)
        rows = torch.cat(rows, 0) if rows else xc.new_zeros(0, n_par)
        return torch.cat(res + self._prior_residuals(v)), rows

    def _project(self, xc: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.fx * xc[:, 0] / xc[:, 2] + self.cx, self.fy * xc[:, 1] / xc[:, 2] + self.cy], dim=-1)

    def _project_linear(self, xc: torch.Tensor, jx: torch.Tensor):
        """Projections [m, 2] of camera points and their Jacobians [m, 2, P] from the points' [m, 3, P]."""
        X, Y, Z = xc.unbind(-1)
        zero = torch.zeros_like(Z)
        dp = torch.stack([torch.stack([self.fx / Z, zero, -self.fx * X / Z ** 2], -1),
                          torch.stack([zero, self.fy / Z, -self.fy * Y / Z ** 2], -1)], -2)  # [m, 2, 3]
        return self._project(xc), dp @ jx

    def _vertex_normals(self, x: torch.Tensor, jx: torch.Tensor):
        """Normals [M, 3] of the vertex-normal vertices (sum of the incident faces' area vectors,
        normalised) from the points ``x``, and their derivatives [M, 3, P] from ``jx``."""
        tri, jt = x[self.vn_face_verts], jx[self.vn_face_verts]  # [Fs, 3, 3], [Fs, 3, 3, P]
        e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        d1, d2 = jt[:, 1] - jt[:, 0], jt[:, 2] - jt[:, 0]
        fn = torch.cross(e1, e2, dim=-1)
        dfn = torch.cross(d1, e2[..., None].expand_as(d1), dim=1) + torch.cross(e1[..., None].expand_as(d2), d2, dim=1)
        fn = torch.cat([fn, fn.new_zeros(1, 3)], dim=0)  # padding row
        dfn = torch.cat([dfn, dfn.new_zeros(1, *dfn.shape[1:])], dim=0)
        n_raw, dn_raw = fn[self.vn_incident].sum(1), dfn[self.vn_incident].sum(1)
        length = n_raw.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        n = n_raw / length
        return n, (dn_raw - n[..., None] * (n[..., None] * dn_raw).sum(1, keepdim=True)) / length[..., None]

    def _prior_jacobian(self, rots: torch.Tensor, n_rows: int) -> torch.Tensor:
        """Rows of :meth:`_prior_residuals`, in the same order."""
        cfg = self.f.cfg
        offs, k = {}, 0
        for b in self.blocks:
            offs[b] = k
            k += self.step_sizes[b]
        out = torch.zeros(n_rows, k, dtype=self.dt)
        r = 0

        def put(block, value, col=0):  # at the current row r
            c0 = offs[block] + col
            out[r:r + value.shape[0], c0:c0 + value.shape[1]] += value

        if "shape" in self.blocks:
            ns = self.sizes["shape"]
            w = self.prior_whiten if self.prior_whiten is not None else torch.eye(ns, dtype=self.dt)
            put("shape", math.sqrt(cfg.w_shape * self.shape_scale) * w)
            r += ns
            if self.shape_prior is not None:
                put("shape", math.sqrt(cfg.w_shape_prior * self.shape_scale) * torch.eye(ns, dtype=self.dt))
                r += ns
        for b, w in (("expr", self.w_expr), ("eyelids", cfg.w_eyelids)):
            if b in self.blocks:
                put(b, math.sqrt(w) * torch.eye(self.sizes[b], dtype=self.dt))
                r += self.sizes[b]
        if "joints" in self.blocks:
            tang = d6_tangent(rots[1:])  # [J-1, 6, 3]
            for idx, w in ((self.jaw, cfg.w_jaw), (self.neck, cfg.w_neck)):
                if idx is not None:
                    put("joints", math.sqrt(w) * tang[idx], 3 * idx)
                    r += 6
            for e in self.eyes:
                put("joints", math.sqrt(cfg.w_eyes) * tang[e], 3 * e)
                r += 6
            if len(self.eyes) == 2:
                s = math.sqrt(cfg.w_eye_symmetry)
                put("joints", s * tang[self.eyes[0]], 3 * self.eyes[0])
                put("joints", -s * tang[self.eyes[1]], 3 * self.eyes[1])
                r += 6
        assert r == n_rows, (r, n_rows)
        return out

    def _prior_residuals(self, v) -> list:
        cfg = self.f.cfg
        out = []
        eye6 = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=self.dt)
        if "shape" in self.blocks:
            beta = v["shape"]
            c = beta if self.prior_shape_mean is None else beta - self.prior_shape_mean
            if self.prior_whiten is not None:
                c = self.prior_whiten @ c
            out.append(math.sqrt(cfg.w_shape * self.shape_scale) * c)
            if self.shape_prior is not None:
                out.append(math.sqrt(cfg.w_shape_prior * self.shape_scale) * (beta - self.shape_prior))
        if "expr" in self.blocks:
            out.append(math.sqrt(self.w_expr) * v["expr"])
        if "eyelids" in self.blocks:
            out.append(math.sqrt(cfg.w_eyelids) * v["eyelids"])
        if "joints" in self.blocks:
            j = v["joints"].reshape(-1, 6)
            for idx, w in ((self.jaw, cfg.w_jaw), (self.neck, cfg.w_neck)):
                if idx is not None:
                    out.append(math.sqrt(w) * (j[idx] - eye6))
            for e in self.eyes:
                out.append(math.sqrt(cfg.w_eyes) * (j[e] - eye6))
            if len(self.eyes) == 2:
                out.append(math.sqrt(cfg.w_eye_symmetry) * (j[self.eyes[0]] - j[self.eyes[1]]))
        return out


def levenberg_marquardt(fitter, row: int, frame: PreparedFrame, iterations: int,
                        blocks=("shape", "expr", "eyelids", "joints", "R", "t"), shape_scale: float = 1.0,
                        energy=None) -> float | None:
    """A few LM iterations on the sparse terms of one frame; updates ``fitter.params`` in place.
    Returns the final sparse cost, or None when the frame has no sparse cue."""
    if frame.corr_ids is None and not frame.landmarks:
        return None
    lam = 1e-3
    cost = None
    # The residual set (visible correspondences, contour landmarks) is chosen once per call, so
    # the iterations minimise one fixed cost.
    prob = SparseProblem(fitter, row, frame, list(blocks), shape_scale, energy)
    n_obs = len(prob.corr_ids) * 2 + sum(len(t) * 2 for _, _, t, _, _ in prob.landmarks)
    if n_obs < 12:
        return cost
    for _ in range(iterations):
        z0 = prob.pack()
        with torch.no_grad():
            r0, J = prob.linearize(z0)
        JtJ = J.T @ J
        g = J.T @ r0
        cost0 = float(r0 @ r0)
        diag = torch.diagonal(JtJ).clamp_min(1e-12)
        accepted = False
        for _ in range(4):
            A = JtJ + lam * torch.diag(diag) + 1e-9 * diag.max() * torch.eye(len(g), dtype=g.dtype)
            try:
                delta = torch.linalg.solve(A, -g)
            except RuntimeError:
                lam *= 10.0
                continue
            z1 = prob.retract(z0, delta)
            with torch.no_grad():
                r1 = prob.residuals(z1)
            cost1 = float(r1 @ r1)
            if math.isfinite(cost1) and cost1 < cost0:
                prob.store(z1)
                fitter.params.renormalize_rotations(torch.tensor([row]))
                fitter.params.clamp_bounds()
                lam = max(lam / 3.0, 1e-7)
                cost = cost1
                accepted = True
                break
            lam *= 10.0
        if not accepted or (cost is not None and cost0 - cost < 1e-4 * cost0):
            break
    return cost
