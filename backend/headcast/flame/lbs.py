# SPDX-License-Identifier: GPL-3.0-or-later
"""Batched rotation conversions and linear blend skinning, written from the FLAME formulas.

Conventions: rotation matrices act on column vectors; a batch of joint rotations is
``[B, J, 3, 3]``; joints are ordered so that every parent comes before its children.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, ``[..., 3] -> [..., 3, 3]``.

    The angle is ``|r + 1e-8|`` as in FLAME's reference code, which keeps the zero rotation
    differentiable.
    """
    angle = torch.linalg.norm(axis_angle + 1e-8, dim=-1, keepdim=True)
    axis = axis_angle / angle
    cos, sin = torch.cos(angle)[..., None], torch.sin(angle)[..., None]
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(skew)
    return eye + sin * skew + (1.0 - cos) * (skew @ skew)


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`axis_angle_to_matrix` for angles in [0, pi)."""
    trace = matrix[..., 0, 0] + matrix[..., 1, 1] + matrix[..., 2, 2]
    cos = ((trace - 1.0) / 2.0).clamp(-1.0, 1.0)
    angle = torch.acos(cos)
    vee = torch.stack([matrix[..., 2, 1] - matrix[..., 1, 2],
                       matrix[..., 0, 2] - matrix[..., 2, 0],
                       matrix[..., 1, 0] - matrix[..., 0, 1]], dim=-1)
    sin = torch.sin(angle)
    # angle/(2 sin angle) -> 1/2 as the angle goes to zero
    scale = torch.where(sin.abs() > 1e-6, angle / (2.0 * sin.clamp_min(1e-12)), torch.full_like(sin, 0.5))
    return vee * scale[..., None]


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """Zhou et al. continuous 6D representation, ``[..., 6] -> [..., 3, 3]``.

    The two 3-vectors are the first two ROWS of the matrix (Gram-Schmidt), the convention
    Pixel3DMM inherits from pytorch3d, so stored 6D codes interoperate.
    """
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """First two rows of each rotation matrix, ``[..., 3, 3] -> [..., 6]``."""
    return matrix[..., :2, :].reshape(*matrix.shape[:-2], 6)


def identity_6d(*batch: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """The 6D code of the identity rotation, broadcast to ``[*batch, 6]``."""
    eye = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=dtype, device=device)
    return eye.expand(*batch, 6).clone()


def blend_shapes(coeffs: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """``coeffs [B, K]`` times ``dirs [V, 3, K]`` -> offsets ``[B, V, 3]``."""
    return torch.einsum("bk,vck->bvc", coeffs, dirs)


def pose_feature(rotations: torch.Tensor) -> torch.Tensor:
    """FLAME's 'lrotmin' pose map: ``(R_j - I)`` of every non-root joint, row-major, concatenated."""
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    return (rotations[:, 1:] - eye).reshape(rotations.shape[0], -1)


def rigid_transforms(rotations: torch.Tensor, joints: torch.Tensor, parents: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward kinematics.

    Returns the posed joint locations ``[B, J, 3]`` and the skinning transforms ``[B, J, 4, 4]``
    that map a rest-pose point rigidly attached to joint j to its posed location
    (``A_j = G_j - G_j [J_j; 0]``).
    """
    batch, n_joints = rotations.shape[:2]
    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints[:, parents[1:]]
    local = torch.zeros(batch, n_joints, 4, 4, dtype=rotations.dtype, device=rotations.device)
    local[..., :3, :3] = rotations
    local[..., :3, 3] = rel
    local[..., 3, 3] = 1.0
    chain = [local[:, 0]]
    for j in range(1, n_joints):
        chain.append(chain[parents[j]] @ local[:, j])
    world = torch.stack(chain, dim=1)
    posed_joints = world[..., :3, 3]
    # Subtract the transformed rest joint so that A_j moves rest-pose vertices, not offsets.
    rest_moved = (world[..., :3, :3] @ joints[..., None])[..., 0]
    skinning = world.clone()
    skinning[..., :3, 3] = world[..., :3, 3] - rest_moved
    return posed_joints, skinning


def skin_vertices(vertices: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning of ``vertices [B, V, 3]`` with ``weights [V, J]`` and ``[B, J, 4, 4]``."""
    blended = torch.einsum("vj,bjmn->bvmn", weights, transforms)
    return (blended[..., :3, :3] @ vertices[..., None])[..., 0] + blended[..., :3, 3]


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals ``[B, V, 3]`` (counter-clockwise faces point outward)."""
    v0, v1, v2 = (vertices[:, faces[:, k]] for k in range(3))
    face_n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals.index_add_(1, faces[:, k], face_n)
    return F.normalize(normals, dim=-1, eps=1e-12)
