# SPDX-License-Identifier: GPL-3.0-or-later
"""What a fit returns: per-frame parameters and the shared identity and camera, as numpy.

Frames: ``x_cam = R_head @ v + t_head`` where ``v`` are the posed model-frame vertices
(:func:`headcast.fit.head.posed_vertices` with ``rotations``, whose global joint is the
identity); the camera is OpenCV's pinhole at the origin with intrinsics in pixels of the fit
image and pixel centres at +0.5 (so an OpenCV ``K`` has ``cx - 0.5``, ``cy - 0.5``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..flame import HeadModel
from .head import posed_vertices

FORMAT = "headcast-fit-1"


@dataclass
class FrameFit:
    """One finished frame (what the video tracker reports and accepts to resume from)."""

    index: int
    expression: np.ndarray  # (Ke,)
    eyelids: np.ndarray | None  # (2,)
    rotations: np.ndarray  # (J, 3, 3), global = identity
    R_head: np.ndarray  # (3, 3)
    t_head: np.ndarray  # (3,)
    loss: float
    valid: bool  # False when the frame had no usable cue (parameters carried over)
    shape: np.ndarray  # (Ks,) the identity used (shared; repeated for convenience)
    intrinsics: np.ndarray  # (4,) fx, fy, cx, cy
    # The optimiser's exact state after this frame: raw parameter rows, Adam moments and step
    # counts of the frame and of the shared parameters (name -> array). Resuming from it
    # reproduces an uninterrupted run exactly; without it a resume starts from the values above.
    state: dict | None = None


@dataclass
class FitResult:
    image_size: tuple[int, int]  # (H, W) of the fit image
    shape: np.ndarray  # (Ks,)
    expression: np.ndarray  # (N, Ke)
    eyelids: np.ndarray | None  # (N, 2)
    rotations: np.ndarray  # (N, J, 3, 3), joint 0 (global) = identity
    R_head: np.ndarray  # (N, 3, 3)
    t_head: np.ndarray  # (N, 3)
    intrinsics: np.ndarray  # (N, 4): fx, fy, cx, cy per frame
    shared_camera: bool  # one camera for all frames (video) or one per image
    loss: np.ndarray  # (N,) final energy of each frame
    valid: np.ndarray  # (N,) bool: the frame had cues
    joint_names: tuple[str, ...] = ()
    model_name: str = ""
    licence: str = ""
    info: dict = field(default_factory=dict)  # timings, step counts

    @property
    def n_frames(self) -> int:
        return int(self.expression.shape[0])

    def _shared(self, k: int) -> float:
        if not self.shared_camera:
            raise ValueError("the frames have different cameras; read intrinsics[:, k] instead")
        return float(self.intrinsics[0, k])

    @property
    def fx(self) -> float:
        return self._shared(0)

    @property
    def fy(self) -> float:
        return self._shared(1)

    @property
    def cx(self) -> float:
        return self._shared(2)

    @property
    def cy(self) -> float:
        return self._shared(3)

    def K(self, frame: int = 0) -> np.ndarray:
        """OpenCV intrinsic matrix (pixel centres at integers) of a frame."""
        fx, fy, cx, cy = self.intrinsics[frame]
        return np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]])

    def vertices(self, model: HeadModel, frames=None, camera: bool = True) -> np.ndarray:
        """Posed vertices ``[n, V, 3]`` of the selected frames, in the camera frame (default) or
        the model frame (head pose not applied)."""
        sel = np.arange(self.n_frames) if frames is None else np.atleast_1d(frames)
        eyelids = None if self.eyelids is None else self.eyelids[sel]
        return posed_vertices(model, self.shape, self.expression[sel], self.rotations[sel], eyelids,
                              self.R_head[sel] if camera else None, self.t_head[sel] if camera else None)

    def neutral_vertices(self, model: HeadModel) -> np.ndarray:
        """The identity alone: ``[V, 3]`` rest-pose vertices without expression."""
        rot = np.broadcast_to(np.eye(3), (1, model.n_joints, 3, 3)).copy()
        return posed_vertices(model, self.shape, np.zeros((1, self.expression.shape[1])), rot)[0]

    def project(self, points_cam: np.ndarray, frame: int) -> np.ndarray:
        """Pixel coordinates (centres at +0.5) of camera-frame points ``[..., 3]``."""
        fx, fy, cx, cy = self.intrinsics[frame]
        p = np.asarray(points_cam)
        return np.stack([fx * p[..., 0] / p[..., 2] + cx, fy * p[..., 1] / p[..., 2] + cy], axis=-1)

    def frame(self, i: int) -> FrameFit:
        return FrameFit(index=i, expression=self.expression[i].copy(),
                        eyelids=None if self.eyelids is None else self.eyelids[i].copy(),
                        rotations=self.rotations[i].copy(), R_head=self.R_head[i].copy(),
                        t_head=self.t_head[i].copy(), loss=float(self.loss[i]), valid=bool(self.valid[i]),
                        shape=self.shape.copy(), intrinsics=self.intrinsics[i].copy())

    # ---- files ---------------------------------------------------------------------------

    def save_npz(self, path) -> Path:
        path = Path(path)
        arrays = dict(format=np.array(FORMAT), image_size=np.array(self.image_size), shape=self.shape,
                      expression=self.expression, rotations=self.rotations, R_head=self.R_head, t_head=self.t_head,
                      intrinsics=self.intrinsics, shared_camera=np.array(self.shared_camera), loss=self.loss,
                      valid=self.valid, joint_names=np.array(self.joint_names), model_name=np.array(self.model_name),
                      licence=np.array(self.licence))
        if self.eyelids is not None:
            arrays["eyelids"] = self.eyelids
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        return path


def load_fit_npz(path) -> FitResult:
    """Read a :meth:`FitResult.save_npz` file; raises ValueError naming the file when it is not one."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable npz file ({exc})") from exc
    with z:
        if "format" not in z or str(z["format"]) != FORMAT:
            raise ValueError(f"{path}: not a Headcast fit file (format {FORMAT!r} expected)")
        missing = [k for k in ("shape", "expression", "rotations", "R_head", "t_head", "intrinsics") if k not in z]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}")
        n = z["expression"].shape[0]
        for k, want in (("rotations", 4), ("R_head", 3), ("t_head", 2), ("intrinsics", 2)):
            if z[k].ndim != want or z[k].shape[0] != n:
                raise ValueError(f"{path}: {k} has shape {z[k].shape}, expected {n} frames")
        return FitResult(image_size=tuple(int(v) for v in z["image_size"]), shape=z["shape"],
                         expression=z["expression"], eyelids=z["eyelids"] if "eyelids" in z else None,
                         rotations=z["rotations"], R_head=z["R_head"], t_head=z["t_head"],
                         intrinsics=z["intrinsics"], shared_camera=bool(z["shared_camera"]), loss=z["loss"],
                         valid=z["valid"], joint_names=tuple(str(s) for s in z["joint_names"]),
                         model_name=str(z["model_name"]), licence=str(z["licence"]))
