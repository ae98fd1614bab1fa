# SPDX-License-Identifier: GPL-3.0-or-later
"""The retargeting's matching rules (plain Python; the add-on module is loaded from its file)."""
import importlib.util
import json
import sys

import pytest

from blender_checks import ROOT

_spec = importlib.util.spec_from_file_location("headcast_retarget_map", ROOT / "addon" / "retarget_map.py")
rm = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = rm  # dataclasses look their module up there
_spec.loader.exec_module(rm)


@pytest.mark.parametrize("spellings", [
    ("jawOpen", "JawOpen", "jaw_open", "blendShape1.jawOpen", "Face:jawOpen", "JAW_OPEN"),
    ("eyeBlinkLeft", "eyeBlink_L", "eyeBlinkL", "blendShape1.eyeBlink_L", "EyeBlink_Left", "eyeBlink-l"),
    ("eye.L", "eye_L", "EyeLeft", "eye_left"),
])
def test_spellings_of_one_channel_normalise_alike(spellings):
    assert len({rm.normalise_name(s) for s in spellings}) == 1, [rm.normalise_name(s) for s in spellings]


@pytest.mark.parametrize("a,b", [("eyeBlinkLeft", "eyeBlinkRight"), ("mouthFunnel", "mouthFunnelLeft"),
                                 ("HEAD_CTRL", "HEAD_CTLeft"), ("mouthRollUpper", "mouthRollUppeRight")])
def test_different_channels_stay_apart(a, b):
    assert rm.normalise_name(a) != rm.normalise_name(b)


def test_matching_by_name_with_overrides_scale_and_drops():
    source = ["jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "tongueOut", "cheekPuff"]
    target = ["Basis_copy", "JawOpen", "blendShape1.eyeBlink_L", "eyeBlink_R", "Smile_L", "tongue_out"]
    m = rm.match_shape_keys(source, target, {"mouthSmileLeft": ["Smile_L", 0.5], "tongueOut": None})
    assert [(p.source, p.target, p.scale) for p in m.shape_keys] == [
        ("jawOpen", "JawOpen", 1.0), ("eyeBlinkLeft", "blendShape1.eyeBlink_L", 1.0),
        ("eyeBlinkRight", "eyeBlink_R", 1.0), ("mouthSmileLeft", "Smile_L", 0.5)]
    assert m.unmatched_source == ["cheekPuff"]  # tongueOut was dropped on purpose, not unmatched
    assert m.unused_target == ["Basis_copy", "tongue_out"]
    with pytest.raises(rm.MappingFileError, match="no shape key 'Nope'"):
        rm.match_shape_keys(source, target, {"jawOpen": "Nope"})


def test_a_target_key_is_driven_once():
    m = rm.match_shape_keys(["jawOpen", "jaw_open"], ["JawOpen"])
    assert [p.source for p in m.shape_keys] == ["jawOpen"] and m.unmatched_source == ["jaw_open"]


@pytest.mark.parametrize("bones,expected", [
    (["root", "spine", "neck", "head", "jaw", "eye.L", "eye.R", "DEF-head"],
     {"head": "head", "jaw": "jaw", "eye_left": "eye.L", "eye_right": "eye.R"}),
    (["mixamorig:Hips", "mixamorig:Neck", "mixamorig:Head", "mixamorig:LeftEye", "mixamorig:RightEye"],
     {"head": "mixamorig:Head", "eye_left": "mixamorig:LeftEye", "eye_right": "mixamorig:RightEye"}),
    (["Bip01 Spine", "Bip01 Head"], {"head": "Bip01 Head"}),
])
def test_bone_guesses(bones, expected):
    assert rm.guess_bones(bones) == expected


def test_mapping_file_errors_name_the_file_and_entry(tmp_path):
    good = tmp_path / "map.json"
    good.write_text(json.dumps({"shape_keys": {"jawOpen": ["Mouth_Open", 2]}, "bones": {"head": "Skull"}}))
    parsed = rm.read_mapping_file(good)
    assert rm.guess_bones(["Skull", "head"], parsed["bones"]) == {"head": "Skull"}
    cases = {"bad.json": ("{", "not valid JSON"),
             "shape.json": (json.dumps({"shape_keys": {"jawOpen": 3}}), "shape_keys['jawOpen']"),
             "role.json": (json.dumps({"bones": {"tail": "Tail"}}), "unknown role"),
             "top.json": (json.dumps({"keys": {}}), "expected an object")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(rm.MappingFileError) as info:
            rm.read_mapping_file(tmp_path / name)
        assert name in str(info.value) and message in str(info.value)
    with pytest.raises(rm.MappingFileError, match="missing.json"):
        rm.read_mapping_file(tmp_path / "missing.json")
    with pytest.raises(rm.MappingFileError, match="no such bone"):
        rm.guess_bones(["head"], {"jaw": "Jaw"})
