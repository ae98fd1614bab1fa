# SPDX-License-Identifier: GPL-3.0-or-later
"""An independent float64 numpy FLAME forward pass, written from the published formulas.

Deliberately different in structure from headcast.flame: per-sample loops, explicit 4x4
homogeneous matrices, Rodrigues in its outer-product form, no shared helpers.
"""
import numpy as np


def rodrigues(r):
    """R = cos(t) I + sin(t) [k]x + (1 - cos(t)) k k^T (the outer-product form)."""
    r = np.asarray(r, dtype=np.float64)
    theta = np.linalg.norm(r + 1e-8)
    k = r / theta
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.cos(theta) * np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * np.outer(k, k)


def homogeneous(rot, trans):
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = trans
    return m


def flame_forward(model, shape, expr, rotations, translation=None, eyelids=None):
    """One sample: shape (Ks,), expr (Ke,), rotations (J, 3, 3) -> posed vertices (V, 3)."""
    n_v = model.v_template.shape[0]
    v = model.v_template.astype(np.float64).copy()
    for k, coeff in enumerate(shape):
        v = v + coeff * model.shapedirs[:, :, k]
    for k, coeff in enumerate(expr):
        v = v + coeff * model.exprdirs[:, :, k]
    if eyelids is not None:
        for k, coeff in enumerate(eyelids):
            v = v + coeff * model.eyelids[:, :, k]
    joints = model.j_regressor @ v
    n_j = len(model.parents)
    feature = []
    for j in range(1, n_j):
        feature.extend((rotations[j] - np.eye(3)).ravel().tolist())
    feature = np.array(feature)
    if model.posedirs is not None:
        v = v + np.tensordot(model.posedirs, feature, axes=([2], [0]))
    world = []
    for j in range(n_j):
        p = model.parents[j]
        offset = joints[j] if p < 0 else joints[j] - joints[p]
        local = homogeneous(rotations[j], offset)
        world.append(local if p < 0 else world[p] @ local)
    skin = []
    for j in range(n_j):
        rest = np.eye(4)
        rest[:3, 3] = -joints[j]
        skin.append(world[j] @ rest)  # undo the rest position, then move along the chain
    out = np.zeros((n_v, 3))
    for j in range(n_j):
        homog = np.concatenate([v, np.ones((n_v, 1))], axis=1)
        out += model.weights[:, j:j + 1] * (homog @ skin[j].T)[:, :3]
    if translation is not None:
        out = out + translation
    posed_joints = np.array([w[:3, 3] for w in world]) + (0 if translation is None else translation)
    return out, posed_joints
