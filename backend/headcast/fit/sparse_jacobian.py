# SPDX-License-Identifier: GPL-3.0-or-later
"""Closed-form derivatives of linear blend skinning for the Levenberg-Marquardt solver.

``torch.func.jacfwd`` on the sparse residuals pushes every parameter direction through ~150
small tensor operations; on two CPU cores that is bound by per-operation overhead (~100 ms
per Jacobian however few residuals there are). The skinning chain has simple derivatives:

* blendshape coefficients enter linearly, in the rest vertices and in the joint positions;
* a joint's rotation, perturbed in its tangent space (``R_k -> R_k exp([w]x)``), turns every
  vertex part skinned to it or to its descendants about the joint's world position, around the
  world axis ``Rw_k w``, and changes the pose-corrective blendshapes linearly;
* the head rotation and translation act on the posed points directly.

So the Jacobian is a handful of batched products, in the same tangent parameterisation that
:func:`retract` applies (rotations right-multiplied by ``exp``). Tests compare it with
``jacfwd`` through :func:`retract`.
"""
from __future__ import annotations

import torch

from ..flame.lbs import matrix_to_rotation_6d, pose_feature, rotation_6d_to_matrix


def skew(v: torch.Tensor) -> torch.Tensor:
    """``[..., 3] -> [..., 3, 3]`` with ``skew(a) @ b = a x b``."""
    z = torch.zeros_like(v[..., 0])
    return torch.stack([torch.stack([z, -v[..., 2], v[..., 1]], -1),
                        torch.stack([v[..., 2], z, -v[..., 0]], -1),
                        torch.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``exp([w]x)`` of axis-angle vectors ``[..., 3]``."""
    return torch.linalg.matrix_exp(skew(w))


def rotate_6d(d6: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The 6D code of ``R(d6) exp([w]x)`` (the retraction of a rotation parameter)."""
    return matrix_to_rotation_6d(rotation_6d_to_matrix(d6) @ so3_exp(w))


def d6_tangent(rot: torch.Tensor) -> torch.Tensor:
    """``[..., 3, 3] -> [..., 6, 3]``: derivative of the 6D code of ``rot exp([w]x)`` at w = 0
    (column c is the first two rows of ``rot [e_c]x``)."""
    basis = skew(torch.eye(3, dtype=rot.dtype))  # [3 (c), 3, 3]
    d = rot[..., None, :, :] @ basis  # [..., 3 (c), 3, 3]
    return d[..., :2, :].reshape(*rot.shape[:-2], 3, 6).transpose(-1, -2)


def world_transforms(rots: torch.Tensor, joints: torch.Tensor, parents: list[int]):
    """Forward kinematics of one pose, functional (no in-place writes, so ``vmap``/``jacfwd``
    can run through it): world rotations ``[J, 3, 3]``, world joint positions ``[J, 3]`` and
    the offsets ``c_j = t_j - R_j J_j`` of the skinning transforms ``A_j = [R_j | c_j]``."""
    world_r, world_t = [], []
    for j in range(len(parents)):
        if j == 0:
            r, t = rots[0], joints[0]
        else:
            p = parents[j]
            r = world_r[p] @ rots[j]
            t = world_r[p] @ (joints[j] - joints[p]) + world_t[p]
        world_r.append(r)
        world_t.append(t)
    r = torch.stack(world_r)
    t = torch.stack(world_t)
    return r, t, t - (r @ joints[..., None])[..., 0]


def _descendants(parents: list[int]) -> list[list[int]]:
    """For each joint, itself and every joint below it."""
    out = [[j] for j in range(len(parents))]
    for j in range(len(parents)):
        p = parents[j]
        while p >= 0 and p != j:
            out[p].append(j)
            p = parents[p] if p > 0 else -1
    return out


def _path(parents: list[int], j: int) -> list[int]:
    """Joints from the root down to ``j``."""
    out = [j]
    while j > 0:
        j = parents[j]
        out.append(j)
    return out[::-1]


def skin_with_jacobian(rots: torch.Tensor, joints: torch.Tensor, parents: list[int], rest: torch.Tensor,
                       weights: torch.Tensor, rest_coef: torch.Tensor, joint_coef: torch.Tensor,
                       posedirs: torch.Tensor | None, frozen: tuple[int, ...] = ()):
    """Posed points and their derivatives.

    rots [J, 3, 3] local joint rotations (root included; the root's is not a parameter);
    joints [J, 3] rest joint positions; rest [n, 3] rest points *without* pose correctives;
    weights [n, J]; rest_coef [n, 3, C] and joint_coef [J, 3, C]: derivatives of the rest points
    and joints with respect to the C blendshape coefficients; posedirs [(J-1)*9, 3n] or None;
    frozen: joints held at their rotation (their tangent columns are zero).

    Returns x [n, 3], dx/dcoef [n, 3, C] and dx/dw [n, 3, J-1, 3] (tangent of each non-root joint).
    """
    n_j = len(parents)
    n = rest.shape[0]
    dt = rest.dtype
    eye = torch.eye(3, dtype=dt)
    v = rest
    if posedirs is not None:
        v = v + (pose_feature(rots[None]) @ posedirs).reshape(n, 3)
    Rw, Tw, c = world_transforms(rots, joints, parents)
    blend_r = (weights @ Rw.reshape(n_j, 9)).reshape(n, 3, 3)
    x_j = torch.einsum("jab,nb->nja", Rw, v) + c[None]  # [n, J, 3] the point moved by each joint
    x = (weights[..., None] * x_j).sum(1)

    # blendshape coefficients: the rest point, and each joint offset c_j, which is linear in the
    # joint positions: c_j = sum over the path m of (Rw_parent(m) - Rw_m) J_m
    d_coef = blend_r @ rest_coef
    if joint_coef.shape[-1]:
        k = []
        for j in range(n_j):
            acc = joint_coef.new_zeros(joint_coef.shape[1:])
            for m in _path(parents, j):
                rp = eye if m == 0 else Rw[parents[m]]
                acc = acc + (rp - Rw[m]) @ joint_coef[m]
            k.append(acc)
        d_coef = d_coef + torch.einsum("nj,jac->nac", weights, torch.stack(k))

    # joint tangents: turning joint k about the world axis Rw_k e_c around its position moves the
    # parts skinned to k and below by a x (x_j - tw_k); plus the pose correctives' change
    d_w = x.new_zeros(n, 3, n_j - 1, 3)
    desc = _descendants(parents)
    gens = skew(torch.eye(3, dtype=dt))  # [3 (c), 3, 3]
    for kj in range(1, n_j):
        if kj in frozen:
            continue
        sel = desc[kj]
        w_k = weights[:, sel]  # [n, |sel|]
        y = (w_k[..., None] * x_j[:, sel]).sum(1) - w_k.sum(1, keepdim=True) * Tw[kj]
        d = -skew(y) @ Rw[kj]  # [n, 3, 3]
        if posedirs is not None:
            d_rot = (rots[kj] @ gens).reshape(3, 9)  # d R_k / d w_c, row-major
            dv = (d_rot @ posedirs[(kj - 1) * 9: kj * 9]).reshape(3, n, 3).permute(1, 2, 0)  # [n, 3, c]
            d = d + blend_r @ dv
        d_w[:, :, kj - 1] = d
    return x, d_coef, d_w
