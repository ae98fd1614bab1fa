# SPDX-License-Identifier: GPL-3.0-or-later
"""Measurements on the Blender scene, written independently of the add-on's own maths."""
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
EXTENSION_ID = "headcast"
REPO = "user_default"  # the zip is installed like a user would: into the default user repository
MODULE = f"bl_ext.{REPO}.{EXTENSION_ID}"

# Blender (x, y, z) = (x_model, -z_model, y_model): written out here, not imported from the add-on.
MODEL_FROM_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
DATA_COLLECTIONS = ("objects", "meshes", "armatures", "cameras", "actions", "materials", "images",
                    "movieclips", "collections", "shape_keys")


def evaluated_local(bpy, obj) -> np.ndarray:
    """The mesh after shape keys, drivers and the Armature modifier, in the object's own axes."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    matrix = np.array(evaluated.matrix_world, dtype=np.float64)
    evaluated.to_mesh_clear()
    return co.reshape(-1, 3).astype(np.float64), matrix


def model_frame_vertices(bpy, obj) -> np.ndarray:
    """Evaluated vertices back in the model frame (FLAME axes)."""
    local, _ = evaluated_local(bpy, obj)
    return local @ MODEL_FROM_BLENDER.T


def camera_pixels(bpy, scene, camera, world_points: np.ndarray) -> np.ndarray:
    """Pixels (origin top-left) through Blender's own camera: world_to_camera_view scaled to the render size."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    w, h = scene.render.resolution_x, scene.render.resolution_y
    ndc = np.array([world_to_camera_view(scene, camera, Vector(p))[:2] for p in world_points])
    return np.stack([ndc[:, 0] * w, (1.0 - ndc[:, 1]) * h], axis=1)


def frame_errors(bpy, scene, mesh_obj, camera, reference: dict, positions=None, stride: int = 3):
    """Worst vertex error (metres) and projection error (pixels) over the given frame positions."""
    frames = reference["frame_indices"] + 1
    positions = range(len(frames)) if positions is None else positions
    mesh_err, pixel_err = [], []
    for i in positions:
        scene.frame_set(int(frames[i]))
        local, matrix = evaluated_local(bpy, mesh_obj)
        mesh_err.append(np.abs(local @ MODEL_FROM_BLENDER.T - reference["posed"][i]).max())
        world = local[::stride] @ matrix[:3, :3].T + matrix[:3, 3]
        pixels = camera_pixels(bpy, scene, camera, world)
        pixel_err.append(np.abs(pixels - reference["pixels"][i, ::stride]).max())
    return float(max(mesh_err)), float(max(pixel_err))


def data_snapshot(bpy) -> dict:
    """Names of every data-block of the kinds an import creates, plus the scene settings it sets."""
    scene = bpy.context.scene
    render = scene.render
    snap = {kind: sorted(i.name for i in getattr(bpy.data, kind)) for kind in DATA_COLLECTIONS}
    snap["collection_props"] = {c.name: {k: _plain(v) for k, v in c.items()} for c in bpy.data.collections}
    snap["object_state"] = {
        o.name: (o.data.name if o.data else None, o.parent.name if o.parent else None,
                 _action_name(o), _action_name(o.data) if o.data else None,
                 tuple(np.round(np.array(o.matrix_basis), 9).ravel()), tuple(m.name for m in o.modifiers))
        for o in bpy.data.objects}
    snap["scene"] = (scene.frame_start, scene.frame_end, scene.frame_current, scene.camera, scene.active_clip,
                     render.fps, render.fps_base, render.resolution_x, render.resolution_y,
                     render.pixel_aspect_x, render.pixel_aspect_y)
    return snap


def _plain(value):
    return list(value) if hasattr(value, "__len__") and not isinstance(value, str) else value


def _action_name(id_data):
    ad = getattr(id_data, "animation_data", None)
    return ad.action.name if ad is not None and ad.action is not None else None
