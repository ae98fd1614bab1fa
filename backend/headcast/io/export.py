# SPDX-License-Identifier: GPL-3.0-or-later
"""Mesh exports for people without Blender: OBJ/PLY per frame and a GLB of the neutral head.

Coordinates: ``space="model"`` writes the model frame (metres, +y up, +z toward the face,
which is also glTF's convention); ``space="camera"`` applies each frame's head transform and
writes the OpenCV camera frame (x right, y down, z forward) so meshes overlay the footage.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .result_file import HeadcastResult, evaluate_rig, model_to_camera

SPACES = ("model", "camera")


def frame_vertices(result: HeadcastResult, frames=None, space: str = "model") -> np.ndarray:
    """Posed vertices ``[n, V, 3]`` of the requested frame positions, in ``space``."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    verts = evaluate_rig(result, frames)
    return model_to_camera(result, verts, frames) if space == "camera" else verts


def write_obj(path: str | Path, vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray | None = None,
              faces_uv: np.ndarray | None = None, header: str = "") -> Path:
    """Wavefront OBJ with optional texture coordinates (``f v/vt``), 1-based indices."""
    path = Path(path)
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"v {x:.7g} {y:.7g} {z:.7g}" for x, y, z in np.asarray(vertices, dtype=np.float64)]
    if uv is not None:
        lines += [f"vt {s:.7g} {t:.7g}" for s, t in np.asarray(uv, dtype=np.float64)]
        lines += [f"f {a}/{ta} {b}/{tb} {c}/{tc}" for (a, b, c), (ta, tb, tc) in zip(faces + 1, faces_uv + 1)]
    else:
        lines += [f"f {a} {b} {c}" for a, b, c in faces + 1]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def _header(result: HeadcastResult, frame_index: int, space: str) -> str:
    meta = result.metadata
    return (f"Headcast {meta['headcast_version']} rig {meta['rig_name']!r}, source frame {frame_index}, "
            f"{space} frame, metres\nmodel: {meta['model_name']} (licence: {meta['licence']})")


def export_frames(result: HeadcastResult, outdir: str | Path, fmt: str = "obj", frames=None,
                  space: str = "model", chunk: int = 64) -> list[Path]:
    """One mesh per frame, ``<rig_name>_<source frame:06d>.<fmt>`` (``fmt`` 'obj' or 'ply')."""
    if fmt not in ("obj", "ply"):
        raise ValueError(f"fmt must be 'obj' or 'ply', got {fmt!r}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    positions = np.arange(result.n_frames) if frames is None else np.atleast_1d(np.asarray(frames))
    faces = result["faces"].astype(np.int64)
    paths = []
    for start in range(0, positions.shape[0], chunk):
        sel = positions[start:start + chunk]
        verts = frame_vertices(result, sel, space)
        for pos, v in zip(sel, verts):
            index = int(result["frame_indices"][pos])
            path = outdir / f"{result.rig_name}_{index:06d}.{fmt}"
            if fmt == "obj":
                write_obj(path, v, faces, result.get("uv"), result.get("faces_uv"), _header(result, index, space))
            else:
                _write_ply(path, v, faces, _header(result, index, space))
            paths.append(path)
    return paths


def _write_ply(path: Path, vertices: np.ndarray, faces: np.ndarray, header: str) -> Path:
    import trimesh

    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    data = trimesh.exchange.ply.export_ply(mesh, encoding="binary", vertex_normal=False,
                                           include_attributes=False)
    # trimesh writes no comments; add ours after the magic line so the file names its licence.
    comment = "".join(f"comment {line}\n" for line in header.splitlines()).encode("ascii")
    first = data.index(b"\n") + 1
    path.write_bytes(data[:first] + comment + data[first:])
    return path


def split_uv_seams(faces: np.ndarray, faces_uv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-vertex uv for formats without separate uv indices (glTF).

    Returns ``(vertex_ids, uv_ids, new_faces)``: every distinct (vertex, uv) corner pair
    becomes one output vertex, so seams are split and nothing else is.
    """
    pairs = np.stack([faces.ravel(), faces_uv.ravel()], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return unique[:, 0], unique[:, 1], inverse.reshape(faces.shape)


def export_glb_neutral(result: HeadcastResult, path: str | Path) -> Path:
    """The neutral head (identity applied, no expression) as binary glTF with its uv layout."""
    import trimesh

    path = Path(path)
    verts = result["v_template"].astype(np.float64)
    faces = result["faces"].astype(np.int64)
    if "uv" in result:
        vid, tid, new_faces = split_uv_seams(faces, result["faces_uv"].astype(np.int64))
        visual = trimesh.visual.TextureVisuals(uv=result["uv"][tid].astype(np.float64),
                                               material=trimesh.visual.material.PBRMaterial(
                                                   name="headcast_skin", baseColorFactor=[200, 170, 150, 255]))
        mesh = trimesh.Trimesh(vertices=verts[vid], faces=new_faces, visual=visual, process=False)
    else:
        mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    scene = trimesh.Scene()
    scene.add_geometry(mesh, node_name=result.rig_name, geom_name=result.rig_name)
    scene.metadata["extras"] = {"headcast_version": result.metadata["headcast_version"],
                                "model_name": result.metadata["model_name"], "licence": result.metadata["licence"]}
    path.write_bytes(scene.export(file_type="glb"))
    return path
