# SPDX-License-Identifier: GPL-3.0-or-later
"""The differentiable FLAME forward pass in torch, batched, float32 or float64."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .headmodel import HeadModel
from .lbs import blend_shapes, pose_feature, rigid_transforms, skin_vertices

N_YAW_BINS = 79  # dynamic contour rows: yaw -39..39 degrees


@dataclass
class HeadOutput:
    vertices: torch.Tensor  # [B, V, 3] posed, translated
    joints: torch.Tensor  # [B, J, 3] posed joint locations, translated
    v_shaped: torch.Tensor  # [B, V, 3] identity + expression (+ eyelids), rest pose
    transforms: torch.Tensor  # [B, J, 4, 4] skinning transforms (before translation)


class HeadLayer(torch.nn.Module):
    """FLAME's forward: blendshapes, pose correctives from (R - I), LBS, then translation.

    ``forward`` takes per-joint rotation matrices ``[B, J, 3, 3]`` in the model's joint order
    (FLAME: global, neck, jaw, left eye, right eye); see :mod:`headcast.flame.lbs` for
    axis-angle and 6D helpers.
    """

    def __init__(self, model: HeadModel, n_shape: int | None = None, n_expr: int | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.model = model
        self.n_shape = model.shapedirs.shape[2] if n_shape is None else min(n_shape, model.shapedirs.shape[2])
        self.n_expr = model.exprdirs.shape[2] if n_expr is None else min(n_expr, model.exprdirs.shape[2])
        as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)  # noqa: E731
        self.register_buffer("v_template", as_t(model.v_template))
        self.register_buffer("shapedirs", as_t(model.shapedirs[..., :self.n_shape]))
        self.register_buffer("exprdirs", as_t(model.exprdirs[..., :self.n_expr]))
        n_v = model.n_vertices
        if model.posedirs is not None:
            # (V, 3, P) -> (P, V*3) so the pose feature multiplies it directly.
            self.register_buffer("posedirs", as_t(model.posedirs.reshape(n_v * 3, -1).T))
        else:
            self.register_buffer("posedirs", None)
        self.register_buffer("j_regressor", as_t(model.j_regressor))
        self.register_buffer("weights", as_t(model.weights))
        self.register_buffer("faces", torch.as_tensor(model.faces, dtype=torch.long, device=device))
        self.register_buffer("eyelids", None if model.eyelids is None else as_t(model.eyelids))
        self.parents = [int(p) for p in model.parents]
        lm = model.landmarks
        if lm is not None:
            self.register_buffer("lmk_static_faces", torch.as_tensor(lm.static_faces, dtype=torch.long, device=device))
            self.register_buffer("lmk_static_bary", as_t(lm.static_bary))
            self.register_buffer("lmk_dynamic_faces", torch.as_tensor(lm.dynamic_faces, dtype=torch.long, device=device))
            self.register_buffer("lmk_dynamic_bary", as_t(lm.dynamic_bary))

    @property
    def n_joints(self) -> int:
        return len(self.parents)

    def shaped(self, shape: torch.Tensor | None, expression: torch.Tensor | None,
               eyelids: torch.Tensor | None = None, batch: int | None = None) -> torch.Tensor:
        """Rest-pose vertices with identity, expression and eyelid blendshapes applied."""
        b = batch or next(t.shape[0] for t in (shape, expression, eyelids) if t is not None)
        v = self.v_template.expand(b, -1, -1)
        if shape is not None and shape.shape[1]:
            v = v + blend_shapes(shape, self.shapedirs[..., :shape.shape[1]])
        if expression is not None and expression.shape[1]:
            v = v + blend_shapes(expression, self.exprdirs[..., :expression.shape[1]])
        if eyelids is not None and self.eyelids is not None:
            v = v + blend_shapes(eyelids, self.eyelids)
        return v

    def forward(self, shape: torch.Tensor | None, expression: torch.Tensor | None, rotations: torch.Tensor,
                translation: torch.Tensor | None = None, eyelids: torch.Tensor | None = None) -> HeadOutput:
        batch = rotations.shape[0]
        if rotations.shape[1:] != (self.n_joints, 3, 3):
            raise ValueError(f"rotations must be [B, {self.n_joints}, 3, 3], got {list(rotations.shape)}")
        v_shaped = self.shaped(shape, expression, eyelids, batch)
        joints = torch.einsum("jv,bvc->bjc", self.j_regressor, v_shaped)
        v_posed = v_shaped
        if self.posedirs is not None:
            v_posed = v_shaped + (pose_feature(rotations) @ self.posedirs).view(batch, -1, 3)
        posed_joints, transforms = rigid_transforms(rotations, joints, self.parents)
        vertices = skin_vertices(v_posed, self.weights, transforms)
        if translation is not None:
            vertices = vertices + translation[:, None]
            posed_joints = posed_joints + translation[:, None]
        return HeadOutput(vertices=vertices, joints=posed_joints, v_shaped=v_shaped, transforms=transforms)

    # --- landmarks ---------------------------------------------------------------------------

    def neck_chain_rotation(self, rotations: torch.Tensor, chain: tuple[int, ...] = (1, 0)) -> torch.Tensor:
        """Product of the rotations along the neck chain, as DECA uses for contour selection."""
        rel = torch.eye(3, dtype=rotations.dtype, device=rotations.device).expand(rotations.shape[0], 3, 3)
        for j in chain:
            rel = rotations[:, j] @ rel
        return rel

    def contour_rows(self, rotations: torch.Tensor, chain: tuple[int, ...] = (1, 0)) -> torch.Tensor:
        """Row of the dynamic contour table for each batch item, chosen from the head's yaw."""
        rel = self.neck_chain_rotation(rotations, chain)
        yaw = torch.atan2(-rel[:, 2, 0], torch.sqrt(rel[:, 0, 0] ** 2 + rel[:, 1, 0] ** 2))
        a = torch.round(torch.clamp(-yaw * 180.0 / math.pi, max=39.0)).long()
        return torch.where(a >= 0, a, torch.where(a < -39, torch.full_like(a, 78), 39 - a))

    def landmarks68(self, vertices: torch.Tensor, rotations: torch.Tensor, chain: tuple[int, ...] = (1, 0)) -> torch.Tensor:
        """iBUG-68 landmarks ``[B, 68, 3]``: 17 yaw-dependent contour points, then the 51 static."""
        if self.model.landmarks is None:
            raise ValueError(f"model {self.model.name!r} has no landmark embedding")
        rows = self.contour_rows(rotations, chain)
        dyn = barycentric_points(vertices, self.faces, self.lmk_dynamic_faces[rows], self.lmk_dynamic_bary[rows])
        static_faces = self.lmk_static_faces.expand(vertices.shape[0], -1)
        static_bary = self.lmk_static_bary.expand(vertices.shape[0], -1, -1)
        static = barycentric_points(vertices, self.faces, static_faces, static_bary)
        return torch.cat([dyn, static], dim=1)


def barycentric_points(vertices: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """Points ``sum_k b_k V[f[i, k]]`` for ``face_idx [B, L]`` (or ``[L]``) and ``bary [B, L, 3]``."""
    batch = vertices.shape[0]
    if face_idx.dim() == 1:
        face_idx = face_idx.expand(batch, -1)
    if bary.dim() == 2:
        bary = bary.expand(batch, -1, -1)
    corner_ids = faces[face_idx]  # [B, L, 3]
    corners = torch.gather(vertices, 1, corner_ids.reshape(batch, -1, 1).expand(-1, -1, 3)).view(batch, -1, 3, 3)
    return (corners * bary[..., None]).sum(dim=2)
