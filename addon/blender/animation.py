# SPDX-License-Identifier: GPL-3.0-or-later
"""Actions and keyframes written in bulk, on both Blender 4.5 (legacy + slotted) and 5.x (slotted only).

Blender 5.0 removed ``Action.fcurves``; F-curves live in a channelbag per action slot, on a
keyframe strip of a layer. 4.4+ has the same structure, so this module always uses it.
Keys go in through ``keyframe_points.add(n)`` and ``foreach_set`` (one call per curve instead of
one ``keyframe_insert`` per key), with linear interpolation so values between frames are
straight blends of the solved neighbours.
"""
from __future__ import annotations

import bpy
import numpy as np

# Enum values foreach_set needs as ints: 'LINEAR' in BezTriple.ipo (BEZT_IPO_LIN) and the
# keyframe types 'KEYFRAME' / 'BREAKDOWN' (BEZT_KEYTYPE_KEYFRAME / _BREAKDOWN).
_LINEAR = 1
KEY_KEYFRAME, KEY_BREAKDOWN = 0, 2


class ActionBuilder:
    """A new action with one slot for one kind of ID, filled channel by channel.

    Channels that change get keys; channels constant over the clip get no F-curve and are
    set as plain values by :meth:`apply`, so a still result leaves the rig free to pose.
    """

    def __init__(self, name: str, id_type: str, slot_name: str, key_types: np.ndarray | None = None) -> None:
        """``key_types`` (int per frame, e.g. BREAKDOWN for frames without a face) marks the keys."""
        self.key_types = None if key_types is None else np.asarray(key_types, dtype=np.int32)
        self.action = bpy.data.actions.new(name)
        self.slot = self.action.slots.new(id_type=id_type, name=slot_name)
        strip = self.action.layers.new("Layer").strips.new(type="KEYFRAME")
        self.channelbag = strip.channelbag(self.slot, ensure=True)
        self.static: list[tuple[str, object]] = []
        self._groups: dict[str, object] = {}

    def _fcurve(self, data_path: str, index: int, group: str | None):
        fc = self.channelbag.fcurves.new(data_path, index=index)
        if group:
            grp = self._groups.get(group)
            if grp is None:
                grp = self._groups[group] = self.channelbag.groups.new(group)
            fc.group = grp
        return fc

    def channel(self, data_path: str, frames: np.ndarray, values: np.ndarray, group: str | None = None,
                tol: float = 0.0) -> bool:
        """Key ``values`` ``[n]`` or ``[n, k]`` (array index = column) at ``frames``; True if keyed."""
        values = np.asarray(values, dtype=np.float64)
        if is_constant(values, tol).all():
            first = values[0]
            self.static.append((data_path, float(first) if first.ndim == 0 else tuple(first.tolist())))
            return False
        columns = values[:, None] if values.ndim == 1 else values
        for index in range(columns.shape[1]):
            key_linear(self._fcurve(data_path, index, group), frames, columns[:, index], self.key_types)
        return True

    @property
    def n_fcurves(self) -> int:
        return len(self.channelbag.fcurves)

    def apply(self, id_data) -> None:
        """Set the constant channels on ``id_data`` and make the action its animation (or none if empty)."""
        for data_path, value in self.static:
            set_path(id_data, data_path, value)
        ad = id_data.animation_data
        if self.n_fcurves == 0:
            if ad is not None:
                ad.action = None
            return
        ad = ad or id_data.animation_data_create()
        ad.action = self.action
        ad.action_slot = self.slot


def key_linear(fcurve, frames: np.ndarray, values: np.ndarray, key_types: np.ndarray | None = None) -> None:
    """Append linear keys ``values`` at ``frames`` to an F-curve in bulk (``foreach_set``)."""
    n = len(frames)
    points = fcurve.keyframe_points
    points.add(n)
    points.foreach_set("co", np.column_stack([frames, values]).astype(np.float32).ravel())
    points.foreach_set("interpolation", np.full(n, _LINEAR, dtype=np.int32))
    if key_types is not None:
        points.foreach_set("type", key_types)
    fcurve.update()


def channelbag_of(id_data, create_action: str | None = None):
    """The channel bag of ``id_data``'s action for its slot, or None. With ``create_action``
    (a name), whatever is missing (animation data, action, slot, layer, strip) is created."""
    ad = id_data.animation_data
    if create_action is None:
        if ad is None or ad.action is None or ad.action_slot is None:
            return None
        for layer in ad.action.layers:
            for strip in layer.strips:
                bag = strip.channelbag(ad.action_slot)
                if bag is not None:
                    return bag
        return None
    ad = ad or id_data.animation_data_create()
    if ad.action is None:
        ad.action = bpy.data.actions.new(create_action)
    if ad.action_slot is None:
        ad.action_slot = ad.action.slots.new(id_type=id_data.id_type, name=id_data.name)
    layers = ad.action.layers
    layer = layers[0] if len(layers) else layers.new("Layer")
    strip = layer.strips[0] if len(layer.strips) else layer.strips.new(type="KEYFRAME")
    return strip.channelbag(ad.action_slot, ensure=True)


def new_driver(id_data, data_path: str):
    """A fresh driver F-curve on ``id_data.<data_path>`` (an earlier one is removed; no modifiers)."""
    id_data.driver_remove(data_path)
    fc = id_data.driver_add(data_path)
    while fc.modifiers:  # driver_add puts an identity generator on the curve; not needed
        fc.modifiers.remove(fc.modifiers[0])
    return fc


def shape_key_path(name: str) -> str:
    """The RNA path of a shape key's value on its Key, e.g. ``key_blocks["jawOpen"].value``."""
    return f'key_blocks["{bpy.utils.escape_identifier(name)}"].value'


def set_path(id_data, data_path: str, value) -> None:
    """``id_data.<data_path> = value`` for RNA paths such as ``pose.bones["jaw"].location``."""
    owner_path, _, attr = data_path.rpartition(".")
    owner = id_data.path_resolve(owner_path) if owner_path else id_data
    setattr(owner, attr, value)


def is_constant(values: np.ndarray, tol: float = 0.0) -> np.ndarray:
    """Per column of ``values`` ``[n, ...]``: True if every frame equals the first (within ``tol``)."""
    values = np.asarray(values)
    return (np.abs(values - values[:1]) <= tol).all(axis=0)
