# SPDX-License-Identifier: GPL-3.0-or-later
"""The head model as the fitting sees it: the torch forward pass plus the vertex sets,
per-vertex attributes and landmark embeddings the loss terms need.

Every asset is optional: a model without uv has no uv terms, one without masks uses all
vertices, one without an eyeball mask gets no eye masking, and so on.
"""
from __future__ import annotations

import numpy as np
import torch

from ..flame import HeadLayer, HeadModel, SurfacePoints, barycentric_points
from ..flame.lbs import pose_feature, rigid_transforms

#: camera-from-model rotation of a head facing the camera: the model's +z (face) toward the
#: OpenCV camera (which looks along +z), +y up -> image up (-y)
FACING_CAMERA = np.diag([1.0, -1.0, -1.0])


def _union(masks: dict, names) -> np.ndarray | None:
    found = [masks[n] for n in names if n in masks]
    return np.unique(np.concatenate(found)).astype(np.int64) if found else None


def _near(model: HeadModel, ids: np.ndarray | None, margin: float) -> np.ndarray:
    """[V] bool: the vertices ``ids`` and those within ``margin`` of them (rest pose)."""
    near = np.zeros(model.n_vertices, bool)
    if ids is not None:
        from scipy.spatial import cKDTree
        near = cKDTree(model.v_template[ids]).query(model.v_template, k=1)[0] <= margin
        near[ids] = True
    return near


class FitHead:
    """A :class:`HeadLayer` with the fitting's derived data, for one dtype."""

    def __init__(self, model: HeadModel, n_shape: int | None = None, n_expr: int | None = None,
                 dtype: torch.dtype = torch.float32, uv_vertex_masks=("face", "left_ear", "right_ear"),
                 uv_vertex_exclude=("eye_region", "left_eyeball", "right_eyeball"),
                 silhouette_masks=("face", "left_eyeball", "right_eyeball"),
                 eye_masks=("left_eyeball", "right_eyeball"), eye_margin_m: float = 0.003,
                 wide_eye_masks=()) -> None:
        self.model = model
        self.dtype = dtype
        self.layer = HeadLayer(model, n_shape, n_expr, dtype=dtype)
        self.n_shape, self.n_expr = self.layer.n_shape, self.layer.n_expr
        self.n_joints = model.n_joints
        self.faces = self.layer.faces
        names = list(model.joint_names)
        self.joint_index = {n: i for i, n in enumerate(names)}
        self.has_eyelids = model.eyelids is not None
        n_v = model.n_vertices

        # uv: per-texture-coordinate table for rendering, one uv per vertex for correspondences
        self.has_uv = model.uv is not None
        if self.has_uv:
            self.uv = torch.as_tensor(model.uv, dtype=dtype)
            self.faces_uv = torch.as_tensor(model.faces_uv, dtype=torch.long)
            vuv = model.per_vertex_uv()
            ids = _union(model.masks, uv_vertex_masks)
            ids = np.arange(n_v) if ids is None else ids
            excl = _union(model.masks, uv_vertex_exclude)
            if excl is not None:
                ids = np.setdiff1d(ids, excl)
            ids = ids[np.all(np.isfinite(vuv[ids]), axis=1)]
            self.uv_vertex_ids = ids.astype(np.int64)
            self.uv_vertex_uv = vuv[ids]
        else:
            self.uv = self.faces_uv = None
            self.uv_vertex_ids = np.zeros(0, np.int64)
            self.uv_vertex_uv = np.zeros((0, 2))

        # Silhouette region per triangle (majority of its corners in the mask). Rendered as a
        # crisp per-pixel lookup, so the rendered region matches a mask drawn the same way exactly;
        # its gradient comes from antialiasing at the outer contour only (interior region borders,
        # e.g. the hairline, have no reliable counterpart in a segmentation).
        sil = _union(model.masks, silhouette_masks)
        in_sil = np.zeros(n_v, bool)
        in_sil[np.arange(n_v) if sil is None else sil] = True
        self.sil_face = torch.as_tensor(in_sil[model.faces].sum(1) >= 2, dtype=dtype)
        # Eye mask per vertex: eyeballs and the skin within ``eye_margin_m`` of them (rest pose),
        # where predicted normals are unreliable.
        eyes = _union(model.masks, eye_masks)
        self.has_eye_mask = eyes is not None
        self.eye_attr = torch.as_tensor(_near(model, eyes, eye_margin_m)[:, None], dtype=dtype)
        # The wider eye mask of the de-biased normal mode (FitConfig.noisy_eye_masks): the
        # whole eye region, whose predictions are the least reliable.
        wide = _union(model.masks, wide_eye_masks)
        self.wide_eye_attr = (self.eye_attr if wide is None or eyes is None
                              else torch.as_tensor(_near(model, wide, eye_margin_m)[:, None], dtype=dtype))
        self.face_ids = model.masks.get("face", np.arange(n_v))
        self._mirror: dict = {}  # mirror-symmetry priors by (tolerance, with expression), built on demand
        # incident triangles of every vertex, padded with -1: vertex normals of a vertex subset
        f_flat = model.faces.reshape(-1)
        order = np.argsort(f_flat, kind="stable")
        counts = np.bincount(f_flat, minlength=n_v)
        k_max = int(counts.max()) if counts.size else 0
        table = np.full((n_v, max(k_max, 1)), -1, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot = np.arange(len(f_flat)) - np.repeat(starts, counts)
        table[f_flat[order], slot] = order // 3
        self.vertex_faces = torch.as_tensor(table)

        # iris: the front-most vertex of each eyeball in the rest pose (left = subject's left)
        self.iris_ids = None
        if "left_eyeball" in model.masks and "right_eyeball" in model.masks:
            ids = []
            for name in ("left_eyeball", "right_eyeball"):
                m = model.masks[name]
                ids.append(int(m[np.argmax(model.v_template[m, 2])]))
            self.iris_ids = np.asarray(ids, dtype=np.int64)

    # ---- joints --------------------------------------------------------------------------

    def joint(self, name: str) -> int | None:
        return self.joint_index.get(name)

    def mirror_prior(self, tol: float, with_expression: bool):
        """The mirror-symmetry prior of this head (:class:`headcast.fit.symmetry.MirrorPrior`),
        built once per setting; None when under half the template's vertices have a mirror
        partner within ``tol`` (a model whose left-right axis is not x)."""
        key = (float(tol), bool(with_expression))
        if key not in self._mirror:
            from .symmetry import MirrorPrior
            layer = self.layer
            prior = MirrorPrior(layer.v_template.double().numpy(), layer.shapedirs.double().numpy(),
                                layer.exprdirs.double().numpy() if with_expression else None, tol, self.dtype)
            self._mirror[key] = prior if prior.fraction >= 0.5 else None
        return self._mirror[key]

    # ---- forward -------------------------------------------------------------------------

    def identity_offset(self, shape: torch.Tensor) -> torch.Tensor:
        """Template plus identity blendshapes, flat ``[1, V*3]``: pass it as ``identity=`` to
        :meth:`forward` while the identity is frozen, to skip the largest GEMM and its gradient."""
        mats = self._basis_matrices()
        return self._template_flat + shape.reshape(1, -1) @ mats["shape"][: shape.shape[-1]]

    def forward(self, shape: torch.Tensor | None, expression: torch.Tensor, eyelids: torch.Tensor | None,
                rotations: torch.Tensor, want_noneck: bool = False, identity: torch.Tensor | None = None):
        """Posed vertices in the model frame (global joint at identity) ``[B, V, 3]`` and, if
        asked, the same mesh with the neck at rest too (the head frame of the normal cue).

        ``shape`` is ``[Ks]`` (shared by the batch, evaluated once) or ``[B, Ks]``. Same maths
        as :class:`HeadLayer` (tested against it), arranged for speed: the bases are stored
        as ``[K, V*3]`` matrices so blendshapes are single GEMMs, and skinning blends only the
        3x4 part of the joint transforms and applies it elementwise instead of as V tiny matmuls.
        """
        b = rotations.shape[0]
        n_v = self.model.n_vertices
        mats = self._basis_matrices()
        v = self._template_flat if identity is None else identity
        if identity is None and shape is not None and shape.shape[-1]:
            v = v + (shape.reshape(-1, shape.shape[-1]) @ mats["shape"][: shape.shape[-1]])
        if expression is not None and expression.shape[-1]:
            v = v + expression @ mats["expr"][: expression.shape[-1]]
        if eyelids is not None and self.has_eyelids:
            v = v + eyelids @ mats["eyelids"]
        v_shaped = v.expand(b, -1).reshape(b, n_v, 3) if v.shape[0] != b else v.view(b, n_v, 3)
        joints = torch.einsum("jv,bvc->bjc", self.layer.j_regressor, v_shaped)

        def pose(rots, vs, js):
            k = rots.shape[0]
            vp = vs
            if self.layer.posedirs is not None:
                vp = vp + (pose_feature(rots) @ self.layer.posedirs).view(k, -1, 3)
            _, transforms = rigid_transforms(rots, js, self.layer.parents)
            blend = (self.layer.weights @ transforms[:, :, :3, :].reshape(k, -1, 12)).view(k, n_v, 3, 4)
            return (blend[..., :3] * vp[:, :, None, :]).sum(-1) + blend[..., 3]

        neck = self.joint("neck") if want_noneck else None
        if neck is None:
            verts = pose(rotations, v_shaped, joints)
            return verts, (verts if want_noneck else None)
        # both poses in one batch: half the (overhead-bound) tensor operations of two passes
        rots_nn = rotations.clone()
        rots_nn[:, neck] = torch.eye(3, dtype=rotations.dtype)
        both = pose(torch.cat([rotations, rots_nn]), torch.cat([v_shaped, v_shaped]), torch.cat([joints, joints]))
        return both[:b], both[b:]

    def _basis_matrices(self) -> dict:
        if not hasattr(self, "_mats"):
            layer = self.layer
            n_v = self.model.n_vertices
            flat = lambda d: d.permute(2, 0, 1).reshape(d.shape[2], n_v * 3).contiguous()  # noqa: E731
            self._mats = {"shape": flat(layer.shapedirs), "expr": flat(layer.exprdirs)}
            if self.has_eyelids:
                self._mats["eyelids"] = flat(layer.eyelids)
            self._template_flat = layer.v_template.reshape(1, n_v * 3)
        return self._mats

    # ---- landmarks -----------------------------------------------------------------------

    def resolve_landmarks(self, embedding, ids: np.ndarray | None, n_points: int, where: str):
        """Turn a landmark embedding spec into an evaluation plan.

        Returns ``(kind, data, keep)``: ``keep`` [n_points] bool marks the rows the model can
        place; ``kind`` is 'ibug68' (data: iBUG indices), 'surface' (data: (faces, bary)) or
        'vertex' (data: vertex ids). Returns None when the model lacks the embedding.
        """
        from .cues import CueError

        keep = np.ones(n_points, bool)
        if isinstance(embedding, str) and embedding == "ibug68":
            if self.model.landmarks is None:
                return None
            idx = np.arange(68) if ids is None else ids
            if len(idx) != n_points:
                raise CueError(where, f"{n_points} points for {len(idx)} iBUG-68 ids (give ids=)")
            keep &= (idx >= 0) & (idx < 68)
            return "ibug68", np.where(keep, idx, 0), keep
        if isinstance(embedding, str) and embedding == "iris":
            if self.iris_ids is None:
                return None
            idx = np.arange(2) if ids is None else ids
            if len(idx) != n_points:
                raise CueError(where, f"{n_points} iris points, expected 2 (left, right) or ids=")
            keep &= (idx >= 0) & (idx < 2)
            return "vertex", self.iris_ids[np.where(keep, idx, 0)], keep
        if isinstance(embedding, str) and embedding == "mediapipe":
            if self.model.mediapipe is None:
                return None
            embedding = self.model.mediapipe
        if isinstance(embedding, SurfacePoints):
            table = {int(k): r for r, k in enumerate(embedding.landmark_ids)}
            if ids is None:
                if n_points != len(embedding.landmark_ids):
                    raise CueError(where, f"{n_points} points for a {len(embedding.landmark_ids)}-point "
                                          "surface embedding (give ids=)")
                rows = np.arange(n_points)
            else:
                rows = np.array([table.get(int(k), -1) for k in ids], dtype=np.int64)
                keep &= rows >= 0
                rows = np.where(keep, rows, 0)
            return "surface", (embedding.faces[rows], embedding.bary[rows]), keep
        if isinstance(embedding, str):
            raise CueError(where, f"unknown landmark embedding {embedding!r}; expected 'ibug68', "
                                  "'mediapipe', 'iris', a SurfacePoints or vertex ids")
        vid = np.asarray(embedding, dtype=np.int64)
        if vid.shape != (n_points,):
            raise CueError(where, f"vertex-id embedding has shape {vid.shape}, expected ({n_points},)")
        if vid.size and (vid.min() < 0 or vid.max() >= self.model.n_vertices):
            raise CueError(where, "vertex-id embedding indexes vertices outside the model")
        return "vertex", vid, keep

    def landmark_points(self, kind: str, data, verts_cam: torch.Tensor, contour_rot: torch.Tensor) -> torch.Tensor:
        """Landmark positions ``[B, L, 3]`` on camera-frame vertices; ``contour_rot`` [B, J, 3, 3]
        carries the head's rotation in FLAME's convention for the iBUG contour choice."""
        if kind == "ibug68":
            all68 = self.layer.landmarks68(verts_cam, contour_rot)
            return all68[:, torch.as_tensor(data, dtype=torch.long)]
        if kind == "surface":
            faces, bary = data
            return barycentric_points(verts_cam, self.faces, torch.as_tensor(faces, dtype=torch.long),
                                      torch.as_tensor(bary, dtype=verts_cam.dtype))
        return verts_cam[:, torch.as_tensor(data, dtype=torch.long)]


def posed_vertices(model: HeadModel, shape: np.ndarray, expression: np.ndarray, rotations: np.ndarray,
                   eyelids: np.ndarray | None = None, R_head: np.ndarray | None = None,
                   t_head: np.ndarray | None = None, head: FitHead | None = None) -> np.ndarray:
    """Posed vertices ``[N, V, 3]`` (float64) for per-frame parameters; in the camera frame
    (``R_head @ v + t_head``) when a head pose is given, else in the model frame."""
    layer = head.layer if head is not None and head.dtype == torch.float64 else HeadLayer(
        model, len(shape), expression.shape[-1], dtype=torch.float64)
    expression = np.atleast_2d(expression)
    n = expression.shape[0]
    sh = torch.as_tensor(np.broadcast_to(shape, (n, len(shape))).copy(), dtype=torch.float64)
    eye = None
    if eyelids is not None and model.eyelids is not None:
        eye = torch.as_tensor(np.atleast_2d(eyelids), dtype=torch.float64)
    rot = torch.as_tensor(np.asarray(rotations).reshape(n, model.n_joints, 3, 3), dtype=torch.float64)
    out = layer(sh, torch.as_tensor(expression, dtype=torch.float64), rot, None, eye).vertices.numpy()
    if R_head is not None:
        R = np.asarray(R_head).reshape(n, 3, 3)
        out = np.einsum("nij,nvj->nvi", R, out)
        if t_head is not None:
            out = out + np.asarray(t_head).reshape(n, 1, 3)
    return out
