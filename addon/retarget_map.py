# SPDX-License-Identifier: GPL-3.0-or-later
"""Which of a Headcast rig's channels drive which of a character's: names, mapping files, bone guesses.

Plain Python (no ``bpy``), so the matching rules are testable on their own. Shape keys match
by name after normalisation, which absorbs the usual ways the same ARKit unit is spelt by
different exporters: ``jawOpen``, ``JawOpen``, ``jaw_open``, ``blendShape1.jawOpen``,
``Face:jawOpen``, ``eyeBlink_L`` / ``eyeBlinkLeft``. A mapping file (JSON) overrides or extends
the automatic matches::

    {"shape_keys": {"jawOpen": "Mouth_Open", "mouthSmileLeft": ["Smile_L", 0.8], "tongueOut": null},
     "bones": {"head": "DEF-head", "jaw": "DEF-jaw"}}

A target of ``null`` drops that source channel; a number after the name scales the value.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

#: Rig roles a character's bones can take, and the Headcast bones behind each.
#: ``head`` receives the whole head's motion relative to the camera (root, neck and the head
#: transform), the others their own bone's rotation.
BONE_ROLES = ("head", "jaw", "eye_left", "eye_right")

# Common bone names per role (Rigify, Mixamo, Auto-Rig Pro, generic), compared after
# normalisation. The first one present in the target wins.
_BONE_GUESSES = {
    "head": ("head", "DEF-head", "ORG-head", "c_head.x", "head.x", "Bip01 Head", "head_01"),
    "jaw": ("jaw", "DEF-jaw", "jaw_master", "ORG-jaw", "c_jawbone.x", "jaw.x", "jaw_01", "lower_jaw"),
    "eye_left": ("eye.L", "DEF-eye.L", "ORG-eye.L", "LeftEye", "c_eye.l", "eye_master.L", "eye_01_l"),
    "eye_right": ("eye.R", "DEF-eye.R", "ORG-eye.R", "RightEye", "c_eye.r", "eye_master.R", "eye_01_r"),
}

_SEPARATORS = re.compile(r"[.:|]")


def normalise_name(name: str) -> str:
    """A spelling-independent key: no namespace, lower case, alphanumerics only, sides spelt out.

    ``blendShape1.eyeBlink_L`` -> ``eyeblinkleft``; ``Face:jawOpen`` -> ``jawopen``;
    ``DEF-eye.L`` -> ``defeyeleft``; ``mixamorig:LeftEye`` -> ``lefteye``.
    """
    parts = _SEPARATORS.split(name)
    base = parts[-1]
    if len(parts) > 1 and len(base) == 1:  # "eye.L", "head.x": the suffix belongs to the name
        base = parts[-2] + "_" + base
    # a side suffix: "_L", "-r", " L", or a capital after a lower-case letter ("eyeBlinkL")
    m = re.search(r"(?:[_\- ]([lLrR])|(?<=[a-z0-9])([LR]))$", base)
    if m and len(base) > 2:
        side = (m.group(1) or m.group(2)).lower()
        base = base[: m.start()] + ("left" if side == "l" else "right")
    return re.sub(r"[^0-9a-z]", "", base.lower())


@dataclass(frozen=True)
class ShapeKeyPair:
    source: str
    target: str
    scale: float = 1.0


@dataclass
class RetargetMap:
    shape_keys: list[ShapeKeyPair]
    unmatched_source: list[str]  # source channels with no target (neither by name nor by the file)
    unused_target: list[str]  # target keys nothing drives


class MappingFileError(ValueError):
    pass


def read_mapping_file(path: str | Path) -> dict:
    """The mapping file's ``shape_keys`` and ``bones`` tables; errors name the file and the entry."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingFileError(f"{path}: cannot read the mapping file ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise MappingFileError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    if not isinstance(data, dict) or not set(data) <= {"shape_keys", "bones"}:
        raise MappingFileError(f"{path}: expected an object with 'shape_keys' and/or 'bones'")
    keys = data.get("shape_keys", {})
    bones = data.get("bones", {})
    if not isinstance(keys, dict) or not isinstance(bones, dict):
        raise MappingFileError(f"{path}: 'shape_keys' and 'bones' must be objects (name -> name)")
    for src, dst in keys.items():
        ok = dst is None or isinstance(dst, str) or (
            isinstance(dst, list) and len(dst) == 2 and isinstance(dst[0], str) and isinstance(dst[1], (int, float)))
        if not ok:
            raise MappingFileError(f"{path}: shape_keys[{src!r}] must be a name, [name, scale] or null, got {dst!r}")
    for role, dst in bones.items():
        if role not in BONE_ROLES:
            raise MappingFileError(f"{path}: bones[{role!r}]: unknown role (use {', '.join(BONE_ROLES)})")
        if dst is not None and not isinstance(dst, str):
            raise MappingFileError(f"{path}: bones[{role!r}] must be a bone name or null")
    return {"shape_keys": keys, "bones": bones}


def match_shape_keys(source: list[str], target: list[str], overrides: dict | None = None) -> RetargetMap:
    """Pair source channels with target shape keys: explicit ``overrides`` first, then by normalised name.

    A target key is driven by at most one source; ``Basis``-like reference keys are never targets
    (the caller passes only the non-reference keys).
    """
    overrides = overrides or {}
    target_set = set(target)
    by_norm: dict[str, str] = {}
    for name in target:
        by_norm.setdefault(normalise_name(name), name)
    pairs, unmatched, used = [], [], set()
    for name in source:
        if name in overrides:
            dst = overrides[name]
            if dst is None:
                continue
            dst, scale = (dst, 1.0) if isinstance(dst, str) else (dst[0], float(dst[1]))
            if dst not in target_set:
                raise MappingFileError(f"mapping: {name!r} -> {dst!r}, but the target has no shape key {dst!r}")
        else:
            dst, scale = by_norm.get(normalise_name(name)), 1.0
        if dst is None or dst in used:
            unmatched.append(name)
            continue
        used.add(dst)
        pairs.append(ShapeKeyPair(name, dst, scale))
    return RetargetMap(pairs, unmatched, [t for t in target if t not in used])


def guess_bones(target_bones: list[str], overrides: dict | None = None) -> dict[str, str]:
    """Role -> target bone: the mapping file's choice, else the first common name the target has."""
    overrides = overrides or {}
    by_norm: dict[str, str] = {}
    for name in target_bones:
        by_norm.setdefault(normalise_name(name), name)
    found = {}
    for role in BONE_ROLES:
        if role in overrides:
            if overrides[role] is not None:
                if overrides[role] not in target_bones:
                    raise MappingFileError(f"mapping: bone role {role!r} -> {overrides[role]!r}, "
                                           "but the target armature has no such bone")
                found[role] = overrides[role]
            continue
        for guess in _BONE_GUESSES[role]:
            hit = by_norm.get(normalise_name(guess))
            if hit is not None and hit not in found.values():
                found[role] = hit
                break
    return found
