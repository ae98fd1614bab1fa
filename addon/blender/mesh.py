# SPDX-License-Identifier: GPL-3.0-or-later
"""The head mesh: FLAME topology, uv map, smooth shading, skinning groups, shape keys and material."""
from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np

from .. import result_file as rf
from .conventions import to_blender

# Blender clamps shape-key values, animated ones included, to [slider_min, slider_max], and
# those limits cannot leave [-10, 10]. Keys whose values go further are stored scaled.
SLIDER_LIMIT = 10.0
EXPRESSION_RANGE = (-3.0, 3.0)  # FLAME coefficients are ~N(0, 1)
EYELID_RANGE = (-1.0, 2.0)
CORRECTIVE_RANGE = (-2.0, 2.0)  # entries of R - I


@dataclass
class ShapeKeySpec:
    """One shape key: its name, displacement (model frame, per unit value) and per-frame values."""

    name: str
    kind: str  # 'expression', 'eyelid' or 'corrective'
    offsets: np.ndarray  # (V, 3) model frame
    values: np.ndarray  # (N,) the value the key must take on each frame
    default_range: tuple[float, float]
    scale: float = 1.0  # displacement stored times scale, values divided by it
    joint: int = -1  # correctives: joint index and matrix entry
    entry: tuple[int, int] = (0, 0)

    @property
    def keyed_values(self) -> np.ndarray:
        """The values the key takes (divided by the storage scale)."""
        return self.values / self.scale

    def slider_range(self) -> tuple[float, float]:
        lo = min(self.default_range[0], float(self.values.min()) / self.scale)
        hi = max(self.default_range[1], float(self.values.max()) / self.scale)
        return max(lo, -SLIDER_LIMIT), min(hi, SLIDER_LIMIT)


def shape_key_specs(result: rf.HeadcastResult) -> list[ShapeKeySpec]:
    """Expression, eyelid and pose-corrective keys in that order, with the values of every frame."""
    specs = []
    basis = result["expr_basis"]
    bounds = result.get("expr_bounds")
    expression = result["expression"].astype(np.float64)
    for k, name in enumerate(result.expr_names):
        default = EXPRESSION_RANGE
        if bounds is not None and np.isfinite(bounds[k]).all():
            default = (float(bounds[k, 0]), float(bounds[k, 1]))
        specs.append(ShapeKeySpec(name, "expression", basis[:, :, k], expression[:, k], default))
    if "eyelid_basis" in result:
        for k, side in enumerate(("left", "right")):
            specs.append(ShapeKeySpec(f"eyelid_{side}", "eyelid", result["eyelid_basis"][:, :, k],
                                      result["eyelids"][:, k].astype(np.float64), EYELID_RANGE))
    if "pose_basis" in result:
        feature = rf.pose_feature(result["joint_rotations"].astype(np.float64))
        names = result.joint_names
        for p in range(feature.shape[1]):
            joint, r, c = 1 + p // 9, (p % 9) // 3, p % 3
            specs.append(ShapeKeySpec(f"pose_{names[joint]}_{r}{c}", "corrective", result["pose_basis"][:, :, p],
                                      feature[:, p], CORRECTIVE_RANGE, joint=joint, entry=(r, c)))
    for spec in specs:
        peak = float(np.abs(spec.values).max())
        if peak > SLIDER_LIMIT:
            spec.scale = float(np.ceil(peak / SLIDER_LIMIT * 1.001))
    seen = set()
    for spec in specs:
        if spec.name in seen:
            raise rf.ResultFileError(result.path, f"two shape keys would be called {spec.name!r}")
        seen.add(spec.name)
    return specs


def build_mesh(name: str, result: rf.HeadcastResult) -> bpy.types.Mesh:
    """Mesh data in Blender's axes: the neutral head with identity, uv map, smooth shading."""
    verts = to_blender(result["v_template"]).astype(np.float32)
    faces = result["faces"].astype(np.int32)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(verts.shape[0])
    mesh.vertices.foreach_set("co", verts.ravel())
    mesh.loops.add(faces.size)
    mesh.loops.foreach_set("vertex_index", faces.ravel())
    mesh.polygons.add(faces.shape[0])
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    if "uv" in result:
        layer = mesh.uv_layers.new(name="UVMap")
        layer.data.foreach_set("uv", result["uv"][result["faces_uv"]].astype(np.float32).ravel())
    mesh.update(calc_edges=True)
    if hasattr(mesh, "shade_smooth"):  # 4.1+
        mesh.shade_smooth()
    else:
        mesh.polygons.foreach_set("use_smooth", np.ones(faces.shape[0], dtype=bool))
    return mesh


def add_vertex_groups(obj: bpy.types.Object, result: rf.HeadcastResult) -> None:
    """One group per joint with FLAME's skinning weights (bone names = joint names)."""
    weights = result["weights"].astype(np.float64)
    for j, joint in enumerate(result.joint_names):
        group = obj.vertex_groups.new(name=joint)
        column = weights[:, j]
        ids = np.nonzero(column > 0.0)[0]
        # vertex_groups.add takes one weight per call: batch the vertices sharing a weight.
        values, inverse = np.unique(column[ids], return_inverse=True)
        for k, value in enumerate(values):
            group.add(ids[inverse == k].tolist(), float(value), "REPLACE")


def add_shape_keys(obj: bpy.types.Object, result: rf.HeadcastResult, specs: list[ShapeKeySpec]) -> None:
    """Basis (the neutral head) and one relative key per spec, with slider ranges covering the data."""
    base = result["v_template"].astype(np.float64)
    basis_key = obj.shape_key_add(name="Basis", from_mix=False)
    basis_key.interpolation = "KEY_LINEAR"
    obj.data.shape_keys.use_relative = True
    for spec in specs:
        key = obj.shape_key_add(name=spec.name, from_mix=False)
        co = to_blender(base + spec.scale * spec.offsets.astype(np.float64)).astype(np.float32)
        key.data.foreach_set("co", co.ravel())
        lo, hi = spec.slider_range()
        key.slider_min, key.slider_max = lo, hi
        key.value = float(np.clip(0.0, lo, hi))


def build_material(name: str, footage_image=None, frame_count: int = 1) -> bpy.types.Material:
    """A skin-coloured material; with ``footage_image``, the footage projected from the camera.

    The projection uses the Window texture coordinate, i.e. the render frame of the active
    camera, which shows the footage exactly where it was filmed when rendering from the solved
    camera (the render size equals the footage size).
    """
    mat = bpy.data.materials.new(name)
    mat.diffuse_color = (0.8, 0.62, 0.52, 1.0)
    if bpy.app.version < (5, 0, 0):
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Base Color"].default_value = (0.8, 0.62, 0.52, 1.0)
    if footage_image is not None:
        coords = nodes.new("ShaderNodeTexCoord")
        tex = nodes.new("ShaderNodeTexImage")
        tex.name = tex.label = "Footage"
        tex.image = footage_image
        tex.extension = "CLIP"
        if footage_image.source in {"MOVIE", "SEQUENCE"}:
            tex.image_user.frame_duration = frame_count
            tex.image_user.frame_start = 1
            tex.image_user.frame_offset = 0
            tex.image_user.use_auto_refresh = True
        links.new(coords.outputs["Window"], tex.inputs["Vector"])
        links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
        coords.location, tex.location = (-700, 300), (-400, 300)
    return mat
