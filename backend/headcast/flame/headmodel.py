# SPDX-License-Identifier: GPL-3.0-or-later
"""The in-memory head model every part of Headcast works with.

FLAME 2020/2023, the synthetic stand-in and the open MakeHuman head all become a
:class:`HeadModel`: numpy arrays in metres with FLAME's axes (+y up, +z toward the face,
+x toward the subject's left), a kinematic tree, blendshape bases and the companion assets
(uv layout, vertex masks, landmark embeddings).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelFileError

FLAME_JOINT_NAMES = ("global", "neck", "jaw", "eye_left", "eye_right")


@dataclass
class LandmarkEmbedding:
    """Points on the surface as (triangle index, barycentric coordinates).

    ``static_*`` hold the 51 iBUG-68 points 17..67; ``dynamic_*`` the 17 jaw-contour points
    for each of 79 yaw bins (-39..39 degrees); ``full_*`` optionally all 68 points.
    """

    static_faces: np.ndarray  # (51,) int64
    static_bary: np.ndarray  # (51, 3)
    dynamic_faces: np.ndarray  # (79, 17) int64
    dynamic_bary: np.ndarray  # (79, 17, 3)
    full_faces: np.ndarray | None = None  # (68,)
    full_bary: np.ndarray | None = None  # (68, 3)


@dataclass
class SurfacePoints:
    """Named landmarks embedded on the surface, e.g. MediaPipe's 478 face-mesh points.

    ``landmark_ids[i]`` is the detector's index of point i (points the model cannot place are
    simply absent), ``faces[i]`` its triangle and ``bary[i]`` its barycentric coordinates.
    """

    landmark_ids: np.ndarray  # (L,) int64
    faces: np.ndarray  # (L,) int64
    bary: np.ndarray  # (L, 3)


@dataclass
class HeadModel:
    """A FLAME-like morphable head: template, bases, skeleton, skinning and assets."""

    name: str
    v_template: np.ndarray  # (V, 3) float64, metres
    faces: np.ndarray  # (F, 3) int64
    shapedirs: np.ndarray  # (V, 3, Ks) identity basis
    exprdirs: np.ndarray  # (V, 3, Ke) expression basis
    posedirs: np.ndarray | None  # (V, 3, 9 (J-1)) pose correctives, or None
    j_regressor: np.ndarray  # (J, V) dense
    weights: np.ndarray  # (V, J) skinning weights
    parents: np.ndarray  # (J,) int64, parents[0] == -1
    joint_names: tuple[str, ...] = FLAME_JOINT_NAMES
    expr_names: tuple[str, ...] | None = None
    eyelids: np.ndarray | None = None  # (V, 3, 2): left, right
    uv: np.ndarray | None = None  # (T, 2) texture coordinates
    faces_uv: np.ndarray | None = None  # (F, 3) indices into uv
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    landmarks: LandmarkEmbedding | None = None
    mediapipe: SurfacePoints | None = None  # MediaPipe-478 embedding (render-and-detect)
    # Coefficient priors. FLAME's bases are scaled so that coefficients ~ N(0, 1): all None.
    # Other models state theirs: the prior energy is |shape_whiten @ (beta - shape_mean)|^2 and
    # coefficients are kept inside the bounds (rows (low, high); +-inf where unbounded).
    shape_mean: np.ndarray | None = None  # (Ks,)
    shape_whiten: np.ndarray | None = None  # (Ks, Ks)
    shape_bounds: np.ndarray | None = None  # (Ks, 2)
    expr_bounds: np.ndarray | None = None  # (Ke, 2), e.g. [0, 1] for ARKit weights
    licence: str = "unknown"
    source: str = ""

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def n_joints(self) -> int:
        return int(self.parents.shape[0])

    def validate(self, path="<model>") -> "HeadModel":
        """Check every array's shape against the others; raise :class:`ModelFileError`."""
        v = self.v_template
        if v.ndim != 2 or v.shape[1] != 3:
            raise ModelFileError(path, f"v_template has shape {v.shape}, expected (V, 3)")
        n_v, n_j = v.shape[0], self.parents.shape[0]
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ModelFileError(path, f"faces have shape {self.faces.shape}, expected (F, 3)")
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= n_v):
            raise ModelFileError(path, f"faces index vertices outside 0..{n_v - 1}")
        for key, arr in (("shapedirs", self.shapedirs), ("exprdirs", self.exprdirs)):
            if arr.ndim != 3 or arr.shape[:2] != (n_v, 3):
                raise ModelFileError(path, f"{key} has shape {arr.shape}, expected ({n_v}, 3, K)")
        if self.posedirs is not None and self.posedirs.shape != (n_v, 3, 9 * (n_j - 1)):
            raise ModelFileError(path, f"posedirs has shape {self.posedirs.shape}, expected ({n_v}, 3, {9 * (n_j - 1)})")
        if self.j_regressor.shape != (n_j, n_v):
            raise ModelFileError(path, f"J_regressor has shape {self.j_regressor.shape}, expected ({n_j}, {n_v})")
        if self.weights.shape != (n_v, n_j):
            raise ModelFileError(path, f"weights have shape {self.weights.shape}, expected ({n_v}, {n_j})")
        if self.parents[0] != -1 or any(not 0 <= p < j for j, p in enumerate(self.parents[1:], start=1)):
            raise ModelFileError(path, f"kinematic tree {self.parents.tolist()} is not parent-before-child with root -1")
        if len(self.joint_names) != n_j:
            raise ModelFileError(path, f"{len(self.joint_names)} joint names for {n_j} joints")
        if self.expr_names is not None and len(self.expr_names) != self.exprdirs.shape[2]:
            raise ModelFileError(path, f"{len(self.expr_names)} expression names for {self.exprdirs.shape[2]} expression shapes")
        if self.eyelids is not None and self.eyelids.shape != (n_v, 3, 2):
            raise ModelFileError(path, f"eyelid blendshapes have shape {self.eyelids.shape}, expected ({n_v}, 3, 2)")
        if (self.uv is None) != (self.faces_uv is None):
            raise ModelFileError(path, "uv coordinates and uv faces must come together")
        if self.uv is not None:
            if self.faces_uv.shape != self.faces.shape:
                raise ModelFileError(path, f"uv faces have shape {self.faces_uv.shape}, expected {self.faces.shape}")
            if self.faces_uv.min() < 0 or self.faces_uv.max() >= self.uv.shape[0]:
                raise ModelFileError(path, "uv faces index outside the uv coordinates")
        for name, idx in self.masks.items():
            if idx.size and (idx.min() < 0 or idx.max() >= n_v):
                raise ModelFileError(path, f"mask {name!r} indexes vertices outside 0..{n_v - 1}")
        if self.landmarks is not None:
            lm = self.landmarks
            n_f = self.faces.shape[0]
            for key, faces_idx, bary in (("static", lm.static_faces, lm.static_bary),
                                         ("dynamic", lm.dynamic_faces, lm.dynamic_bary)):
                if bary.shape != faces_idx.shape + (3,):
                    raise ModelFileError(path, f"{key} landmark barycentrics {bary.shape} do not match faces {faces_idx.shape}")
                if faces_idx.size and (faces_idx.min() < 0 or faces_idx.max() >= n_f):
                    raise ModelFileError(path, f"{key} landmarks index triangles outside 0..{n_f - 1}")
        n_s, n_e = self.shapedirs.shape[2], self.exprdirs.shape[2]
        for key, want in (("shape_mean", (n_s,)), ("shape_whiten", (n_s, n_s)), ("shape_bounds", (n_s, 2)),
                          ("expr_bounds", (n_e, 2))):
            arr = getattr(self, key)
            if arr is not None and arr.shape != want:
                raise ModelFileError(path, f"{key} has shape {arr.shape}, expected {want}")
        if self.mediapipe is not None:
            mp = self.mediapipe
            n_l = mp.landmark_ids.shape[0]
            if mp.faces.shape != (n_l,) or mp.bary.shape != (n_l, 3):
                raise ModelFileError(path, f"MediaPipe embedding shapes {mp.faces.shape}/{mp.bary.shape} do not match {n_l} ids")
            if n_l and (mp.faces.min() < 0 or mp.faces.max() >= self.faces.shape[0]):
                raise ModelFileError(path, "MediaPipe embedding indexes triangles outside the mesh")
        return self

    def per_vertex_uv(self) -> np.ndarray:
        """One uv coordinate per vertex (the first of its texture coordinates)."""
        if self.uv is None:
            raise ValueError(f"model {self.name!r} has no uv layout")
        out = np.full((self.n_vertices, 2), np.nan)
        # assign in reverse so the first occurrence wins
        out[self.faces[::-1].ravel()] = self.uv[self.faces_uv[::-1].ravel()]
        return out
