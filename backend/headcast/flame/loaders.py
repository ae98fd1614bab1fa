# SPDX-License-Identifier: GPL-3.0-or-later
"""Readers for the files FLAME users download, and for Headcast's own npz model format.

* model: ``generic_model.pkl`` (FLAME 2020), ``flame2023.pkl`` / ``flame2023_no_jaw.pkl`` /
  ``flame2023_Open.pkl``, or an ``.npz`` holding the same keys (optionally with Headcast's
  extra keys, see :func:`save_model_npz`);
* ``FLAME_masks.pkl`` (vertex-index arrays per region);
* landmark embeddings: DECA/MICA ``landmark_embedding.npy`` or RingNet
  ``flame_static_embedding.pkl`` + ``flame_dynamic_embedding.npy``;
* ``head_template.obj`` with texture coordinates;
* eyelid blendshapes ``l_eyelid.npy`` / ``r_eyelid.npy``.

Every reader names the file and the missing key or bad shape when something is wrong.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from .headmodel import FLAME_JOINT_NAMES, HeadModel, LandmarkEmbedding, ModelFileError, SurfacePoints
from .pickle_compat import PickleFormatError, load_npy_object, load_pickle

FLAME_SHAPE_COLUMNS = 300  # shapedirs columns 0:300 are identity, 300:400 expression
MODEL_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise ModelFileError(path, "file not found")
    return path.read_bytes()


def _unpickle(path: Path):
    data = _read_bytes(path)
    if not data:
        raise ModelFileError(path, "file is empty")
    try:
        return load_pickle(data)
    except PickleFormatError as exc:
        raise ModelFileError(path, str(exc)) from exc
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise ModelFileError(path, f"not a readable pickle, or truncated ({type(exc).__name__}: {exc})") from exc


def _read_npz(path: Path) -> dict:
    data = _read_bytes(path)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ModelFileError(path, f"not a readable npz, or truncated ({exc})") from exc


def _array(raw: dict, key: str, path: Path, ndim: int | None = None, dtype=np.float64) -> np.ndarray:
    if key not in raw:
        raise ModelFileError(path, f"missing key {key!r} (found: {', '.join(sorted(map(str, raw)))})")
    try:
        arr = np.asarray(raw[key], dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(path, f"key {key!r} is not a numeric array ({exc})") from exc
    if ndim is not None and arr.ndim != ndim:
        raise ModelFileError(path, f"key {key!r} has shape {arr.shape}, expected {ndim} dimensions")
    return arr


def _parents_from_kintree(kintree: np.ndarray, path: Path) -> np.ndarray:
    if kintree.ndim != 2 or kintree.shape[0] != 2:
        raise ModelFileError(path, f"kintree_table has shape {kintree.shape}, expected (2, J)")
    ids = kintree[1].astype(np.int64)
    parent_ids = kintree[0].astype(np.int64)
    # The root's parent is stored as uint32 -1 (4294967295).
    parent_ids[(parent_ids >= 2**31) | (parent_ids < 0)] = -1
    order = {int(joint): pos for pos, joint in enumerate(ids)}
    parents = np.array([-1 if p == -1 else order.get(int(p), -2) for p in parent_ids], dtype=np.int64)
    if (parents == -2).any():
        raise ModelFileError(path, "kintree_table names a parent that is not a joint")
    return parents


def model_from_dict(raw: dict, path: Path, name: str | None = None) -> HeadModel:
    """Build a :class:`HeadModel` from the FLAME key layout (plus Headcast's optional keys)."""
    v_template = _array(raw, "v_template", path, 2)
    faces = _array(raw, "f", path, 2, dtype=np.int64)
    shapedirs_all = _array(raw, "shapedirs", path, 3)
    weights = _array(raw, "weights", path, 2)
    j_regressor = _array(raw, "J_regressor", path, 2)
    parents = _parents_from_kintree(_array(raw, "kintree_table", path, 2, dtype=np.int64), path)
    posedirs = _array(raw, "posedirs", path, 3) if "posedirs" in raw or "exprdirs" not in raw else None
    if "exprdirs" in raw:  # Headcast's own format keeps the two bases apart
        shapedirs, exprdirs = shapedirs_all, _array(raw, "exprdirs", path, 3)
    else:
        if shapedirs_all.shape[2] <= FLAME_SHAPE_COLUMNS:
            raise ModelFileError(path, f"shapedirs has shape {shapedirs_all.shape}; FLAME files hold "
                                       f"{FLAME_SHAPE_COLUMNS} identity + expression columns (400)")
        shapedirs = shapedirs_all[..., :FLAME_SHAPE_COLUMNS]
        exprdirs = shapedirs_all[..., FLAME_SHAPE_COLUMNS:]
    text = lambda k: [str(s) for s in np.asarray(raw[k]).tolist()] if k in raw else None  # noqa: E731
    joint_names = tuple(text("joint_names") or (FLAME_JOINT_NAMES if len(parents) == 5 else
                                               [f"joint{i}" for i in range(len(parents))]))
    expr_names = text("expr_names")
    model = HeadModel(
        name=name or str(np.asarray(raw.get("model_name", path.stem))),
        v_template=v_template, faces=faces, shapedirs=shapedirs, exprdirs=exprdirs,
        posedirs=posedirs, j_regressor=j_regressor, weights=weights, parents=parents,
        joint_names=joint_names, expr_names=tuple(expr_names) if expr_names else None,
        eyelids=_array(raw, "eyelids", path, 3) if "eyelids" in raw else None,
        licence=str(np.asarray(raw["licence"])) if "licence" in raw else licence_for(path.name),
        source=str(path),
    )
    if "uv" in raw:
        model.uv = _array(raw, "uv", path, 2)
        model.faces_uv = _array(raw, "faces_uv", path, 2, dtype=np.int64)
    model.masks = {str(k[5:]): np.asarray(v, dtype=np.int64) for k, v in raw.items() if str(k).startswith("mask_")}
    if "lmk_static_faces" in raw:
        model.landmarks = LandmarkEmbedding(
            static_faces=_array(raw, "lmk_static_faces", path, 1, np.int64),
            static_bary=_array(raw, "lmk_static_bary", path, 2),
            dynamic_faces=_array(raw, "lmk_dynamic_faces", path, 2, np.int64),
            dynamic_bary=_array(raw, "lmk_dynamic_bary", path, 3))
    for key in ("shape_mean", "shape_whiten", "shape_bounds", "expr_bounds"):
        if key in raw:
            setattr(model, key, _array(raw, key, path))
    if "mp_ids" in raw:
        model.mediapipe = SurfacePoints(landmark_ids=_array(raw, "mp_ids", path, 1, np.int64),
                                        faces=_array(raw, "mp_faces", path, 1, np.int64),
                                        bary=_array(raw, "mp_bary", path, 2))
    return model.validate(path)


def licence_for(filename: str) -> str:
    """The licence tag results carry, from the model file's name."""
    low = filename.lower()
    if "open" in low and "2023" in low:
        return "FLAME 2023 Open (CC-BY-4.0)"
    if "2023" in low:
        return "FLAME 2023 (MPI non-commercial)"
    if "synthetic" in low:
        return "Headcast synthetic model (CC0)"
    return "FLAME 2020 (MPI non-commercial)"


def load_model_file(path: str | Path) -> HeadModel:
    """Read a FLAME pickle (chumpy objects allowed, chumpy not needed) or an npz model."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        raw = _read_npz(path)
    else:
        raw = _unpickle(path)
        if not isinstance(raw, dict):
            raise ModelFileError(path, f"expected a pickled dict, found {type(raw).__name__}")
    return model_from_dict(raw, path)


def save_model_npz(model: HeadModel, path: str | Path) -> Path:
    """Write Headcast's plain model format: FLAME keys plus optional extras, no pickles."""
    path = Path(path)
    kintree = np.stack([np.where(model.parents < 0, 2**32 - 1, model.parents), np.arange(model.n_joints)]).astype(np.int64)
    out = {
        "v_template": model.v_template, "f": model.faces, "shapedirs": model.shapedirs,
        "exprdirs": model.exprdirs, "J_regressor": model.j_regressor, "weights": model.weights,
        "kintree_table": kintree, "joint_names": np.array(model.joint_names), "model_name": np.array(model.name),
        "licence": np.array(model.licence),
    }
    if model.posedirs is not None:
        out["posedirs"] = model.posedirs
    if model.expr_names is not None:
        out["expr_names"] = np.array(model.expr_names)
    if model.eyelids is not None:
        out["eyelids"] = model.eyelids
    if model.uv is not None:
        out["uv"], out["faces_uv"] = model.uv, model.faces_uv
    for name, idx in model.masks.items():
        out[f"mask_{name}"] = idx
    if model.landmarks is not None:
        lm = model.landmarks
        out.update(lmk_static_faces=lm.static_faces, lmk_static_bary=lm.static_bary,
                   lmk_dynamic_faces=lm.dynamic_faces, lmk_dynamic_bary=lm.dynamic_bary)
    for key in ("shape_mean", "shape_whiten", "shape_bounds", "expr_bounds"):
        if getattr(model, key) is not None:
            out[key] = getattr(model, key)
    if model.mediapipe is not None:
        mp = model.mediapipe
        out.update(mp_ids=mp.landmark_ids, mp_faces=mp.faces, mp_bary=mp.bary)
    np.savez_compressed(path, **out)
    return path


def load_masks(path: str | Path, n_vertices: int | None = None) -> dict[str, np.ndarray]:
    """``FLAME_masks.pkl``: a dict of vertex-index arrays per region."""
    path = Path(path)
    raw = _unpickle(path)
    if not isinstance(raw, dict) or not raw:
        raise ModelFileError(path, "expected a non-empty dict of vertex-index arrays")
    masks = {}
    for name, idx in raw.items():
        arr = np.asarray(idx)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ModelFileError(path, f"mask {name!r} is not a 1-D integer array (shape {arr.shape}, {arr.dtype})")
        if n_vertices is not None and arr.size and (arr.min() < 0 or arr.max() >= n_vertices):
            raise ModelFileError(path, f"mask {name!r} indexes vertices outside 0..{n_vertices - 1}")
        masks[str(name)] = arr.astype(np.int64)
    return masks


def _embedding_shapes(path: Path, emb: LandmarkEmbedding) -> LandmarkEmbedding:
    checks = [("static face indices", emb.static_faces.shape, (51,)),
              ("static barycentrics", emb.static_bary.shape, (51, 3)),
              ("dynamic face indices", emb.dynamic_faces.shape, (79, 17)),
              ("dynamic barycentrics", emb.dynamic_bary.shape, (79, 17, 3))]
    for what, got, want in checks:
        if got != want:
            raise ModelFileError(path, f"{what} have shape {got}, expected {want}")
    return emb


def _dict_or_fail(path: Path, obj) -> dict:
    if not isinstance(obj, dict):
        raise ModelFileError(path, f"expected a pickled dict, found {type(obj).__name__}")
    return obj


def load_landmark_embedding(path: str | Path, dynamic_path: str | Path | None = None) -> LandmarkEmbedding:
    """Read DECA/MICA ``landmark_embedding.npy`` or RingNet's static pkl + dynamic npy pair."""
    path = Path(path)
    if path.suffix.lower() == ".npy" and dynamic_path is None:
        try:
            raw = _dict_or_fail(path, load_npy_object(_read_bytes(path)))
        except (PickleFormatError, ValueError, EOFError, pickle.UnpicklingError) as exc:
            if isinstance(exc, ModelFileError):
                raise
            raise ModelFileError(path, f"not a readable landmark embedding ({exc})") from exc
        emb = LandmarkEmbedding(
            static_faces=_array(raw, "static_lmk_faces_idx", path, dtype=np.int64).reshape(-1),
            static_bary=_array(raw, "static_lmk_bary_coords", path),
            dynamic_faces=_array(raw, "dynamic_lmk_faces_idx", path, dtype=np.int64),
            dynamic_bary=_array(raw, "dynamic_lmk_bary_coords", path))
        if "full_lmk_faces_idx" in raw:
            emb.full_faces = _array(raw, "full_lmk_faces_idx", path, dtype=np.int64).reshape(-1)
            emb.full_bary = _array(raw, "full_lmk_bary_coords", path).reshape(-1, 3)
        return _embedding_shapes(path, emb)
    static = _dict_or_fail(path, _unpickle(path))
    if dynamic_path is None:
        raise ModelFileError(path, "a RingNet static embedding needs its flame_dynamic_embedding.npy")
    dynamic_path = Path(dynamic_path)
    try:
        dynamic = _dict_or_fail(dynamic_path, load_npy_object(_read_bytes(dynamic_path)))
    except (PickleFormatError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(dynamic_path, f"not a readable dynamic embedding ({exc})") from exc
    emb = LandmarkEmbedding(
        static_faces=_array(static, "lmk_face_idx", path, dtype=np.int64).reshape(-1),
        static_bary=_array(static, "lmk_b_coords", path),
        dynamic_faces=_array(dynamic, "lmk_face_idx", dynamic_path, dtype=np.int64),
        dynamic_bary=_array(dynamic, "lmk_b_coords", dynamic_path))
    return _embedding_shapes(path, emb)


def load_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Vertices, texture coordinates, triangles and uv triangles of an OBJ (polygons fanned)."""
    path = Path(path)
    verts, uvs, faces, faces_uv = [], [], [], []
    try:
        text = _read_bytes(path).decode("utf-8", errors="replace")
    except ModelFileError:
        raise
    for line_no, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            if parts[0] == "v":
                verts.append([float(x) for x in parts[1:4]])
            elif parts[0] == "vt":
                uvs.append([float(x) for x in parts[1:3]])
            elif parts[0] == "f":
                corners = [p.split("/") for p in parts[1:]]
                vi = [int(c[0]) for c in corners]
                ti = [int(c[1]) if len(c) > 1 and c[1] else 0 for c in corners]
                for k in range(1, len(corners) - 1):
                    faces.append([vi[0], vi[k], vi[k + 1]])
                    faces_uv.append([ti[0], ti[k], ti[k + 1]])
        except (ValueError, IndexError) as exc:
            raise ModelFileError(path, f"line {line_no} is malformed: {line.strip()!r}") from exc
    if not verts or not faces:
        raise ModelFileError(path, "no vertices or faces found")
    v = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    f = np.where(f < 0, f + len(verts), f - 1)  # OBJ is 1-based; negative indices are relative
    ft = np.asarray(faces_uv, dtype=np.int64)
    if uvs and (ft > 0).all():
        ft = ft - 1
        return v, np.asarray(uvs, dtype=np.float64), f, ft
    return v, None, f, None


def load_eyelids(left: str | Path, right: str | Path, n_vertices: int) -> np.ndarray:
    """Two additive eyelid blendshapes (each (V, 3)) stacked to (V, 3, 2)."""
    out = []
    for p in (Path(left), Path(right)):
        try:
            arr = np.load(io.BytesIO(_read_bytes(p)), allow_pickle=False)
        except ValueError as exc:
            raise ModelFileError(p, f"not a plain numeric .npy ({exc})") from exc
        if arr.shape != (n_vertices, 3):
            raise ModelFileError(p, f"eyelid blendshape has shape {arr.shape}, expected ({n_vertices}, 3)")
        out.append(arr.astype(np.float64))
    return np.stack(out, axis=-1)


MODEL_FILE_NAMES = ("generic_model.pkl", "flame2023.pkl", "flame2023_Open.pkl", "flame2023_no_jaw.pkl",
                    "FLAME2020/generic_model.pkl", "FLAME2023/flame2023.pkl", "head_model.npz")


def find_model_file(directory: Path) -> Path:
    for name in MODEL_FILE_NAMES:
        if (directory / name).is_file():
            return directory / name
    candidates = sorted(directory.glob("*.pkl")) + sorted(directory.glob("*.npz"))
    candidates = [c for c in candidates if "mask" not in c.name.lower() and "embedding" not in c.name.lower()]
    if not candidates:
        raise ModelFileError(directory, f"no model file found (looked for {', '.join(MODEL_FILE_NAMES[:4])} or an .npz)")
    return candidates[0]


def load_head_model(path: str | Path, masks: str | Path | None = None, landmarks: str | Path | None = None,
                    uv_template: str | Path | None = None) -> HeadModel:
    """Load a model file (or a folder holding one) together with whatever assets sit beside it.

    Assets are looked for next to the model under their usual names unless given explicitly:
    ``FLAME_masks.pkl``, ``landmark_embedding.npy`` (or the RingNet pair), ``head_template.obj``,
    ``l_eyelid.npy`` + ``r_eyelid.npy``.
    """
    path = Path(path)
    model_path = find_model_file(path) if path.is_dir() else path
    model = load_model_file(model_path)
    folder = model_path.parent

    def pick(explicit, *names):
        if explicit is not None:
            return Path(explicit)
        for name in names:
            for base in (folder, folder.parent):
                if (base / name).is_file():
                    return base / name
        return None

    mask_file = pick(masks, "FLAME_masks.pkl", "FLAME_masks/FLAME_masks.pkl")
    if mask_file is not None:
        model.masks = {**model.masks, **load_masks(mask_file, model.n_vertices)}
    lmk_file = pick(landmarks, "landmark_embedding.npy")
    if lmk_file is not None:
        model.landmarks = load_landmark_embedding(lmk_file)
    else:
        static, dynamic = pick(None, "flame_static_embedding.pkl"), pick(None, "flame_dynamic_embedding.npy")
        if static is not None and dynamic is not None:
            model.landmarks = load_landmark_embedding(static, dynamic)
    obj_file = pick(uv_template, "head_template.obj")
    if obj_file is not None:
        v, uv, f, ft = load_obj(obj_file)
        if v.shape[0] != model.n_vertices or f.shape != model.faces.shape:
            raise ModelFileError(obj_file, f"uv template has {v.shape[0]} vertices / {f.shape[0]} faces, "
                                           f"the model {model.n_vertices} / {model.faces.shape[0]}")
        if uv is None:
            raise ModelFileError(obj_file, "uv template has no texture coordinates (vt)")
        if not np.array_equal(f, model.faces):
            raise ModelFileError(obj_file, "uv template faces do not match the model's faces")
        model.uv, model.faces_uv = uv, ft
    left, right = pick(None, "l_eyelid.npy"), pick(None, "r_eyelid.npy")
    if left is not None and right is not None and model.eyelids is None:
        model.eyelids = load_eyelids(left, right, model.n_vertices)
    return model.validate(model_path)
