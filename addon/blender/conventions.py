# SPDX-License-Identifier: GPL-3.0-or-later
"""Coordinate and camera conventions between a Headcast result and Blender (numpy only).

Frames involved:

* model frame (FLAME): metres, +y up, +z toward the face, +x toward the subject's left;
* OpenCV camera frame: x right, y down, z forward; ``x_cam = R_head @ v + t_head``;
* Blender world: Z up, the neutral face looking down -Y. ``AXIS_MAP`` takes model coordinates
  to Blender's: (x, y, z) -> (x, -z, y), a +90 degree rotation about X (det +1);
* Blender camera frame: looks down its local -Z with +Y up, so OpenCV camera coordinates map
  to it by ``CV_TO_BLENDER_CAMERA = diag(1, -1, -1)``.

With these, a frontal head (``R_head = diag(1, -1, -1)``) seen by the fixed camera has an
identity rotation in Blender, and the two world placements below give the same image.
"""
from __future__ import annotations

import numpy as np

AXIS_MAP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
CV_TO_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0])
SENSOR_WIDTH_MM = 36.0


def to_blender(points: np.ndarray) -> np.ndarray:
    """Model-frame points ``[..., 3]`` in Blender's axes."""
    return np.asarray(points, dtype=np.float64) @ AXIS_MAP.T


def matrix_to_quaternion(mats: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` to unit quaternions ``[..., 4]`` (w, x, y, z), Blender's order.

    Shepperd's method: pick the largest of w, x, y, z to divide by, so it is stable for every
    rotation, including 180 degree turns.
    """
    m = np.asarray(mats, dtype=np.float64)
    flat = m.reshape(-1, 3, 3)
    tr = flat[:, 0, 0] + flat[:, 1, 1] + flat[:, 2, 2]
    cand = np.stack([tr, flat[:, 0, 0], flat[:, 1, 1], flat[:, 2, 2]], axis=1)
    pick = np.argmax(cand, axis=1)
    q = np.empty((flat.shape[0], 4))
    for case in range(4):
        sel = pick == case
        if not sel.any():
            continue
        r = flat[sel]
        if case == 0:
            s = np.sqrt(1.0 + tr[sel]) * 2.0
            q[sel] = np.stack([0.25 * s, (r[:, 2, 1] - r[:, 1, 2]) / s, (r[:, 0, 2] - r[:, 2, 0]) / s,
                               (r[:, 1, 0] - r[:, 0, 1]) / s], axis=1)
        elif case == 1:
            s = np.sqrt(1.0 + r[:, 0, 0] - r[:, 1, 1] - r[:, 2, 2]) * 2.0
            q[sel] = np.stack([(r[:, 2, 1] - r[:, 1, 2]) / s, 0.25 * s, (r[:, 0, 1] + r[:, 1, 0]) / s,
                               (r[:, 0, 2] + r[:, 2, 0]) / s], axis=1)
        elif case == 2:
            s = np.sqrt(1.0 + r[:, 1, 1] - r[:, 0, 0] - r[:, 2, 2]) * 2.0
            q[sel] = np.stack([(r[:, 0, 2] - r[:, 2, 0]) / s, (r[:, 0, 1] + r[:, 1, 0]) / s, 0.25 * s,
                               (r[:, 1, 2] + r[:, 2, 1]) / s], axis=1)
        else:
            s = np.sqrt(1.0 + r[:, 2, 2] - r[:, 0, 0] - r[:, 1, 1]) * 2.0
            q[sel] = np.stack([(r[:, 1, 0] - r[:, 0, 1]) / s, (r[:, 0, 2] + r[:, 2, 0]) / s,
                               (r[:, 1, 2] + r[:, 2, 1]) / s, 0.25 * s], axis=1)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.reshape(m.shape[:-2] + (4,))


def continuous_quaternions(q: np.ndarray) -> np.ndarray:
    """Flip signs along the first (frame) axis so neighbours lie in the same hemisphere.

    q and -q are the same rotation, but keys interpolate component-wise: a sign flip between
    two frames would swing through a wrong pose in between.
    """
    q = np.array(q, dtype=np.float64, copy=True)
    for i in range(1, q.shape[0]):
        flip = np.sum(q[i] * q[i - 1], axis=-1) < 0
        q[i][flip] *= -1.0
    return q


def bone_pose_channels(rotations: np.ndarray, joints: np.ndarray, joints_rest: np.ndarray,
                       bone_rest_rotations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pose-bone quaternions ``[n, J, 4]`` and locations ``[n, J, 3]`` that reproduce FLAME's skinning.

    FLAME skins with ``A_j = G_j T(-J_j)`` where the rest joints ``J_j`` change every frame with
    expression, while Blender's bones rest at the fixed neutral joints ``Jbar_j``. With ``B`` the
    bone's rest rotation expressed in the model frame, the pose-bone local matrix that makes
    Blender's deform matrix equal ``A_j`` is, for every bone (root included),

        L_j = [B^T R_j B | B^T (I - R_j) d_j],    d_j = J_j - Jbar_j,

    because ``T(d) R T(-d) = [R | d - R d]`` conjugated into the bone's frame. ``rotations``
    ``[n, J, 3, 3]`` are the local joint rotations (model frame), ``joints`` the per-frame rest
    joints ``[n, J, 3]``, ``joints_rest`` ``[J, 3]``, ``bone_rest_rotations`` ``[J, 3, 3]`` the
    bones' rest rotations in Blender's armature space (``bone.matrix_local``).
    """
    basis = np.einsum("ab,jbc->jac", AXIS_MAP.T, bone_rest_rotations)  # B_j in the model frame
    local_rot = np.einsum("jba,njbc,jcd->njad", basis, rotations, basis)
    d = joints - joints_rest[None]
    moved = d - np.einsum("njab,njb->nja", rotations, d)
    local_loc = np.einsum("jba,njb->nja", basis, moved)
    quats = continuous_quaternions(matrix_to_quaternion(local_rot))
    return quats, local_loc


def head_object_transforms(head_rotation: np.ndarray, head_translation: np.ndarray,
                           reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World rotation ``[n, 3, 3]`` and location ``[n, 3]`` of the rig when the camera stays fixed.

    Blender world = ``AXIS_MAP D (x_cam - reference)`` with D = diag(1, -1, -1): the fixed camera
    sits at ``-AXIS_MAP D reference`` with rotation ``AXIS_MAP`` and the head, whose mesh is
    stored as ``AXIS_MAP v``, gets ``Q = AXIS_MAP D R AXIS_MAP^T`` and ``s = AXIS_MAP D (t - reference)``.
    """
    md = AXIS_MAP @ CV_TO_BLENDER_CAMERA
    rot = np.einsum("ab,nbc,cd->nad", md, head_rotation, AXIS_MAP.T)
    loc = (head_translation - reference[None]) @ md.T
    return rot, loc


def fixed_camera_transform(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World rotation and location of the camera that stays fixed while the head moves."""
    return AXIS_MAP.copy(), -(AXIS_MAP @ CV_TO_BLENDER_CAMERA @ reference)


def moving_camera_transforms(head_rotation: np.ndarray, head_translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera world rotation ``[n, 3, 3]`` and location ``[n, 3]`` when the head stays at the origin.

    The head's mesh is ``AXIS_MAP v`` in the world; since ``v = R^T (x_cam - t)``, the camera has
    rotation ``AXIS_MAP R^T D`` and location ``-AXIS_MAP R^T t``.
    """
    rt = np.swapaxes(head_rotation, 1, 2)
    rot = np.einsum("ab,nbc,cd->nad", AXIS_MAP, rt, CV_TO_BLENDER_CAMERA)
    loc = -np.einsum("ab,nbc,nc->na", AXIS_MAP, rt, head_translation)
    return rot, loc


def camera_settings(intrinsics: np.ndarray, image_size: tuple[int, int],
                    sensor_width: float = SENSOR_WIDTH_MM) -> dict[str, np.ndarray | float]:
    """Blender camera and render settings reproducing pinhole intrinsics ``[n, 4]`` (fx, fy, cx, cy).

    With ``sensor_fit = 'HORIZONTAL'`` Blender's focal length in pixels is ``lens * W / sensor``
    horizontally and ``that / ycor`` vertically, with ``ycor = pixel_aspect_y / pixel_aspect_x``;
    lens shift is in units of the image width and moves the view window, so the principal
    point lands at ``cx = W/2 - shift_x W`` and ``cy = H/2 + shift_y W / ycor`` (pixels from
    the top-left corner). Returns per-frame ``lens``, ``shift_x``, ``shift_y`` and one pixel
    aspect for the clip (Blender cannot animate it): ``ycor = median(fx / fy)``;
    ``aspect_error`` is the largest relative deviation of a frame's fx/fy from it.
    """
    w, h = image_size
    fx, fy, cx, cy = (intrinsics[:, k].astype(np.float64) for k in range(4))
    ratio = fx / fy
    ycor = float(np.median(ratio))
    # Blender's pixel aspect values must both be >= 1.
    aspect_x, aspect_y = (1.0, ycor) if ycor >= 1.0 else (1.0 / ycor, 1.0)
    return {
        "lens": fx * sensor_width / w,
        "shift_x": -(cx - w / 2.0) / w,
        "shift_y": (cy - h / 2.0) * ycor / w,
        "sensor_width": float(sensor_width),
        "pixel_aspect_x": aspect_x,
        "pixel_aspect_y": aspect_y,
        "aspect_error": float(np.abs(ratio / ycor - 1.0).max()),
    }


def signed_permutation(mat: np.ndarray, tol: float = 1e-5) -> tuple[np.ndarray, np.ndarray] | None:
    """``(perm, sign)`` with ``mat[r, perm[r]] = sign[r]`` if ``mat`` is a signed permutation, else None."""
    mat = np.asarray(mat, dtype=np.float64)
    perm = np.argmax(np.abs(mat), axis=1)
    sign = np.sign(mat[np.arange(3), perm])
    rebuilt = np.zeros((3, 3))
    rebuilt[np.arange(3), perm] = sign
    if np.abs(rebuilt - mat).max() > tol or len(set(perm.tolist())) != 3:
        return None
    return perm, sign


# Entries of the rotation matrix of the quaternion (w, x, y, z) divided by its squared norm n,
# as Blender driver expressions (simple expressions: no Python needed, safe with auto-run off).
_QUAT_MATRIX = {
    (0, 0): "1-2*(y*y+z*z)/{n}", (0, 1): "2*(x*y-w*z)/{n}", (0, 2): "2*(x*z+w*y)/{n}",
    (1, 0): "2*(x*y+w*z)/{n}", (1, 1): "1-2*(x*x+z*z)/{n}", (1, 2): "2*(y*z-w*x)/{n}",
    (2, 0): "2*(x*z-w*y)/{n}", (2, 1): "2*(y*z+w*x)/{n}", (2, 2): "1-2*(x*x+y*y)/{n}",
}
_QUAT_MATRIX_MINUS_ONE = {(0, 0): "-2*(y*y+z*z)/{n}", (1, 1): "-2*(x*x+z*z)/{n}", (2, 2): "-2*(x*x+y*y)/{n}"}
# Dividing by the squared norm keeps the entries exact between keys, where linearly
# interpolated quaternions are not unit length.
_NORM = "(w*w+x*x+y*y+z*z)"


def corrective_driver_expression(bone_rest_rotation: np.ndarray, row: int, col: int) -> str:
    """Driver expression for FLAME's pose feature ``R[row, col] - (row == col)`` of one joint.

    ``R`` is the joint's local rotation in the model frame, ``R = B L B^T`` with ``L`` the pose
    bone's rotation and ``B`` the bone's rest rotation in the model frame. The importer lays
    bones out along the axes, so ``B`` is a signed permutation and every entry of ``R`` is one
    signed entry of ``L``, written in terms of the bone's quaternion variables w, x, y, z.
    """
    basis = AXIS_MAP.T @ np.asarray(bone_rest_rotation, dtype=np.float64)
    found = signed_permutation(basis)
    if found is None:
        raise ValueError(f"bone rest rotation is not axis-aligned:\n{bone_rest_rotation}")
    perm, sign = found
    a, b = int(perm[row]), int(perm[col])
    s = sign[row] * sign[col]
    if row == col:  # then a == b and s == 1
        body = _QUAT_MATRIX_MINUS_ONE[(a, a)]
    else:
        body = ("" if s > 0 else "-") + "(" + _QUAT_MATRIX[(a, b)] + ")"
    return body.format(n=_NORM)
