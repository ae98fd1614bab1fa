# SPDX-License-Identifier: GPL-3.0-or-later
"""The Headcast result file (``*.headcast.npz``, format version 1): read, validate, write, evaluate.

This module is the single definition of the format. It imports only numpy and the standard
library so that the Blender extension ships this very file (``scripts/build_extension.py``
copies it into the extension as ``result_file.py``); there is no second copy to maintain.
``docs/result-format.md`` describes every key; :data:`ARRAY_SPECS` below is the same table in
code and drives validation.

Conventions (all of them documented in ``docs/result-format.md``):

* model frame: FLAME's axes, metres, +y up, +z toward the face, +x toward the subject's left;
* per frame, posed model vertices ``v`` are placed in the OpenCV camera frame
  (x right, y down, z forward) by ``x_cam = head_rotation @ v + head_translation``;
* pixels of the ORIGINAL footage: ``u = fx * x / z + cx``, ``v = fy * y / z + cy`` with the
  origin at the top-left image corner and pixel centres at +0.5.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
RESULT_SUFFIX = ".headcast.npz"
SIDECAR_SUFFIX = ".headcast.json"

# Tolerances of the validator. Rotations are stored as matrices; a matrix further than this from
# orthonormal (max |R^T R - I|) is reported, because Blender would turn it into a different rotation.
ROTATION_TOLERANCE = 1e-4
# Blender's Armature modifier normalises skinning weights per vertex; numpy LBS does not. Weights
# whose rows do not sum to one would make the two disagree, so they are rejected.
WEIGHT_SUM_TOLERANCE = 1e-4


class ResultFileError(ValueError):
    """A result file is missing, unreadable, or breaks the format; the message says what and where."""

    def __init__(self, path, message: str) -> None:
        self.path = str(path)
        self.problem = message
        super().__init__(f"{self.path}: {message}")


@dataclass(frozen=True)
class ArraySpec:
    """One key of the npz: dtype kind, symbolic shape, whether it must be present, and its meaning."""

    key: str
    kind: str  # 'f' floating, 'i' integer, 'b' bool, 'U' unicode
    shape: tuple  # ints or symbols: V F T Ke Ks J P(=9(J-1)) N
    required: bool
    group: str  # 'file', 'rig' or 'frame'
    doc: str


ARRAY_SPECS: tuple[ArraySpec, ...] = (
    ArraySpec("format_version", "i", (), True, "file", "format version of the file, 1"),
    ArraySpec("metadata", "U", (), True, "file", "clip and provenance metadata as a JSON object (see METADATA_FIELDS)"),
    # --- rig: everything needed to pose the head without the model file -------------------------
    ArraySpec("v_template", "f", ("V", 3), True, "rig", "neutral vertices with the identity applied, model frame, metres"),
    ArraySpec("faces", "i", ("F", 3), True, "rig", "triangles, counter-clockwise seen from outside"),
    ArraySpec("uv", "f", ("T", 2), False, "rig", "texture coordinates, origin bottom-left, [0, 1]"),
    ArraySpec("faces_uv", "i", ("F", 3), False, "rig", "per triangle corner, index into uv"),
    ArraySpec("expr_basis", "f", ("V", 3, "Ke"), True, "rig", "expression blendshapes, metres per unit coefficient"),
    ArraySpec("expr_names", "U", ("Ke",), True, "rig", "expression names (ARKit names for the open head, else exp_000...)"),
    ArraySpec("expr_bounds", "f", ("Ke", 2), False, "rig", "(low, high) of each expression coefficient, +-inf if unbounded"),
    ArraySpec("eyelid_basis", "f", ("V", 3, 2), False, "rig", "eyelid blendshapes (left, right), metres per unit"),
    ArraySpec("parents", "i", ("J",), True, "rig", "parent joint of each joint, -1 for the root; parents come first"),
    ArraySpec("joint_names", "U", ("J",), True, "rig", "joint names (FLAME: global, neck, jaw, eye_left, eye_right)"),
    ArraySpec("joint_regressor", "f", ("J", "V"), True, "rig", "rest joints = joint_regressor @ shaped vertices"),
    ArraySpec("joints_rest", "f", ("J", 3), True, "rig", "neutral rest joints = joint_regressor @ v_template, metres"),
    ArraySpec("weights", "f", ("V", "J"), True, "rig", "linear-blend skinning weights, rows sum to 1"),
    ArraySpec("pose_basis", "f", ("V", 3, "P"), False, "rig", "pose correctives driven by (R_j - I), j = 1..J-1, row-major"),
    ArraySpec("shape", "f", ("Ks",), True, "rig", "identity coefficients already baked into v_template (reference only)"),
    # --- per frame -------------------------------------------------------------------------------
    ArraySpec("frame_indices", "i", ("N",), True, "frame", "0-based index of each frame in the source footage, increasing"),
    ArraySpec("expression", "f", ("N", "Ke"), True, "frame", "expression coefficients"),
    ArraySpec("eyelids", "f", ("N", 2), False, "frame", "eyelid coefficients (left, right); present iff eyelid_basis is"),
    ArraySpec("joint_rotations", "f", ("N", "J", 3, 3), True, "frame", "local joint rotations, global joint normally identity"),
    ArraySpec("head_rotation", "f", ("N", 3, 3), True, "frame", "rotation from the model frame to the OpenCV camera frame"),
    ArraySpec("head_translation", "f", ("N", 3), True, "frame", "translation to the OpenCV camera frame, metres"),
    ArraySpec("intrinsics", "f", ("N", 4), True, "frame", "fx, fy, cx, cy in pixels of the original footage"),
    ArraySpec("crop_boxes", "f", ("N", 4), True, "frame", "x_min, y_min, x_max, y_max of the network crop, original pixels"),
    ArraySpec("losses", "f", ("N",), True, "frame", "final fitting loss per frame (NaN where not fitted)"),
    ArraySpec("valid", "b", ("N",), True, "frame", "False for frames without a usable face (parameters carried over)"),
    ArraySpec("posed_vertices", "f", ("N", "V", 3), False, "frame", "posed vertices, model frame (no head transform)"),
)
SPECS_BY_KEY = {spec.key: spec for spec in ARRAY_SPECS}
# Keys that must come together: one without the other is an error.
KEY_PAIRS = (("uv", "faces_uv"), ("eyelid_basis", "eyelids"))
_KIND_NAMES = {"f": "floating point", "i": "integer", "b": "bool", "U": "unicode string"}
_SYMBOL_SOURCE = {"V": "v_template", "F": "faces", "T": "uv", "Ke": "expr_basis", "J": "parents",
                  "Ks": "shape", "N": "frame_indices", "P": "parents (9 (J - 1))"}

# Metadata fields: name -> (python types, required, meaning).
METADATA_FIELDS = {
    "format_version": ((int,), True, "same as the format_version array"),
    "headcast_version": ((str,), True, "version of Headcast that wrote the file"),
    "rig_name": ((str,), True, "name of the rig; re-importing a result with the same name updates it in place"),
    "source_path": ((str,), True, "path of the footage (video file, image file or image folder), '' if unknown"),
    "image_size": ((list,), True, "[width, height] of the original footage in pixels"),
    "fps": ((int, float), True, "frames per second of the footage (1.0 for a still image)"),
    "model_name": ((str,), True, "head model the rig was made with, e.g. 'FLAME 2020'"),
    "licence": ((str,), True, "licence tag of that model, e.g. 'FLAME 2020 (MPI non-commercial)'"),
    "network_weights": ((dict,), True, "network weights used, name -> file or tag (empty if none)"),
    "created": ((str,), False, "UTC time of writing, ISO 8601"),
    "source_kind": ((str,), False, "'video', 'image', 'images' or 'unknown'"),
    "fit": ((dict,), False, "free-form fitting settings and statistics"),
    "frame_sources": ((list,), False, "several photos: per frame, the photo it was fitted to (path as source_path)"),
}


def sidecar_path(path) -> Path:
    """The JSON sidecar beside a result file: ``clip.headcast.npz`` -> ``clip.headcast.json``."""
    path = Path(path)
    name = path.name
    if name.endswith(RESULT_SUFFIX):
        return path.with_name(name[: -len(RESULT_SUFFIX)] + SIDECAR_SUFFIX)
    return path.with_suffix(".json")


# --- validation -------------------------------------------------------------------------------------

def _resolve_shape(spec: ArraySpec, sizes: dict[str, int]) -> tuple:
    """The expected shape with known symbols replaced by numbers (unknown ones stay symbols)."""
    out = []
    for dim in spec.shape:
        if dim == "P" and "J" in sizes:
            out.append(9 * (sizes["J"] - 1))
        elif isinstance(dim, str) and dim in sizes:
            out.append(sizes[dim])
        else:
            out.append(dim)
    return tuple(out)


def _pretty_shape(shape: tuple) -> str:
    """A symbolic shape written like a Python tuple: ``(N,)``, ``(V, 3, Ke)``."""
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


_ALLOWED_KINDS = {"f": "f", "i": "iu", "b": "b", "U": "U"}


def _check_shape(path, spec: ArraySpec, shape: tuple, dtype: np.dtype, sizes: dict[str, int]) -> None:
    """Check dtype kind, ndim and every dimension; bind symbols seen for the first time."""
    if np.dtype(dtype).kind not in _ALLOWED_KINDS[spec.kind]:
        raise ResultFileError(path, f"{spec.key} has dtype {dtype}, expected {_KIND_NAMES[spec.kind]}")
    pretty = _pretty_shape(spec.shape)
    if len(shape) != len(spec.shape):
        raise ResultFileError(path, f"{spec.key} has shape {tuple(shape)}, expected {len(spec.shape)} dimensions {pretty}")
    expected = _resolve_shape(spec, sizes)
    for want, sym, got in zip(expected, spec.shape, shape):
        if isinstance(want, str):
            sizes[want] = int(got)  # the first key with this symbol defines it
        elif want != got:
            origin = f"; {sym} = {want} comes from {_SYMBOL_SOURCE[sym]}" if isinstance(sym, str) else ""
            raise ResultFileError(path, f"{spec.key} has shape {tuple(shape)}, expected {pretty} = {expected}{origin}")


def _max_rotation_error(mats: np.ndarray) -> tuple[float, int]:
    """Worst orthonormality error (and its flat index) of a stack of 3x3 matrices; det < 0 counts as 2."""
    flat = mats.reshape(-1, 3, 3).astype(np.float64)
    if flat.shape[0] == 0:
        return 0.0, 0
    err = np.abs(np.einsum("nji,njk->nik", flat, flat) - np.eye(3)).max(axis=(1, 2))
    err = np.where(np.linalg.det(flat) < 0, 2.0, err)
    worst = int(np.argmax(err))
    return float(err[worst]), worst


def validate_metadata(path, metadata) -> dict:
    """Check the metadata object's fields and types; return it."""
    if not isinstance(metadata, dict):
        raise ResultFileError(path, f"metadata must be a JSON object, got {type(metadata).__name__}")
    for name, (types, required, _doc) in METADATA_FIELDS.items():
        if name not in metadata:
            if required:
                raise ResultFileError(path, f"metadata lacks the field {name!r}")
            continue
        value = metadata[name]
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join(t.__name__ for t in types)
            raise ResultFileError(path, f"metadata field {name!r} is {value!r}, expected {want}")
    size = metadata["image_size"]
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ResultFileError(path, f"metadata image_size is {size!r}, expected [width, height] positive integers")
    if not np.isfinite(metadata["fps"]) or metadata["fps"] <= 0:
        raise ResultFileError(path, f"metadata fps is {metadata['fps']!r}, expected a positive number")
    if not metadata["rig_name"].strip():
        raise ResultFileError(path, "metadata rig_name is empty")
    sources = metadata.get("frame_sources")
    if sources is not None and not all(isinstance(x, str) for x in sources):
        raise ResultFileError(path, "metadata frame_sources must be a list of paths (strings)")
    return metadata


def validate_arrays(path, arrays: dict, shapes_only: dict | None = None) -> dict[str, int]:
    """Validate a dict of arrays against the format; return the sizes (V, F, J, N, ...).

    ``shapes_only`` maps keys that were not loaded (e.g. a large ``posed_vertices``) to
    ``(shape, dtype)`` read from the npz header, so their shape is still checked.
    Raises :class:`ResultFileError` naming the key and what is wrong.
    """
    shapes_only = shapes_only or {}
    # Unknown keys are refused so that a misspelt optional key does not silently vanish; writers
    # that need to carry extra data use the "x_" prefix, which readers ignore.
    unknown = sorted(k for k in set(arrays) | set(shapes_only) if k not in SPECS_BY_KEY and not k.startswith("x_"))
    if unknown:
        raise ResultFileError(path, f"unknown keys {unknown} (format version {FORMAT_VERSION} defines "
                                    f"{sorted(SPECS_BY_KEY)}; extra data must use the 'x_' prefix)")
    for a, b in KEY_PAIRS:
        have_a, have_b = a in arrays or a in shapes_only, b in arrays or b in shapes_only
        if have_a != have_b:
            present, missing = (a, b) if have_a else (b, a)
            raise ResultFileError(path, f"{present} is present but {missing} is missing; they come together")
    sizes: dict[str, int] = {}
    for spec in ARRAY_SPECS:
        if spec.key in shapes_only:
            shape, dtype = shapes_only[spec.key]
            _check_shape(path, spec, tuple(shape), np.dtype(dtype), sizes)
            continue
        if spec.key not in arrays:
            if spec.required:
                raise ResultFileError(path, f"missing required array {spec.key!r} ({spec.doc})")
            continue
        arr = np.asarray(arrays[spec.key])
        _check_shape(path, spec, arr.shape, arr.dtype, sizes)
        if arr.dtype.kind == "f" and spec.key != "losses" and spec.key != "expr_bounds" and not np.isfinite(arr).all():
            bad = np.argwhere(~np.isfinite(arr))[0].tolist()
            raise ResultFileError(path, f"{spec.key} has a non-finite value at index {bad}")

    version = int(arrays["format_version"])
    if version != FORMAT_VERSION:
        raise ResultFileError(path, f"format version {version} is not supported (this reader reads version {FORMAT_VERSION})")
    _check_rig_values(path, arrays, sizes)
    _check_frame_values(path, arrays, sizes)
    return sizes


def _check_rig_values(path, arrays: dict, sizes: dict[str, int]) -> None:
    """Indices in range, a valid kinematic tree, unique names, consistent joints, normalised weights."""
    n_v, n_j = sizes["V"], sizes["J"]
    _check_index_range(path, "faces", arrays["faces"], n_v, "vertices")
    if "faces_uv" in arrays:
        _check_index_range(path, "faces_uv", arrays["faces_uv"], sizes["T"], "uv coordinates")
    parents = np.asarray(arrays["parents"])
    if n_j == 0 or parents[0] != -1 or any(not 0 <= p < j for j, p in enumerate(parents[1:].tolist(), start=1)):
        raise ResultFileError(path, f"parents {parents.tolist()} must start with -1 and list every parent before its child")
    for key in ("joint_names", "expr_names"):
        names = [str(n) for n in np.asarray(arrays[key]).tolist()]
        if any(not n.strip() for n in names):
            raise ResultFileError(path, f"{key} contains an empty name")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ResultFileError(path, f"{key} repeats {dup}")
    if "expr_bounds" in arrays:
        bounds = np.asarray(arrays["expr_bounds"], dtype=np.float64)
        if np.isnan(bounds).any() or (bounds[:, 0] > bounds[:, 1]).any():
            raise ResultFileError(path, "expr_bounds must hold (low, high) pairs with low <= high and no NaN")
    regressed = np.asarray(arrays["joint_regressor"], dtype=np.float64) @ np.asarray(arrays["v_template"], dtype=np.float64)
    joint_err = np.abs(regressed - np.asarray(arrays["joints_rest"], dtype=np.float64)).max()
    if joint_err > 1e-5:
        raise ResultFileError(path, f"joints_rest differs from joint_regressor @ v_template by {joint_err:.3g} m")
    weights = np.asarray(arrays["weights"], dtype=np.float64)
    if (weights < -1e-6).any():
        raise ResultFileError(path, f"weights has negative entries (min {weights.min():.3g})")
    row_err = np.abs(weights.sum(axis=1) - 1.0)
    if row_err.size and row_err.max() > WEIGHT_SUM_TOLERANCE:
        worst = int(row_err.argmax())
        raise ResultFileError(path, f"weights of vertex {worst} sum to {weights[worst].sum():.6f}, expected 1")


def _check_frame_values(path, arrays: dict, sizes: dict[str, int]) -> None:
    """At least one frame, increasing frame indices, proper rotations, positive focal lengths, sane boxes."""
    frames = np.asarray(arrays["frame_indices"])
    if sizes["N"] == 0:
        raise ResultFileError(path, "the result holds no frames")
    if frames.min() < 0 or (np.diff(frames) <= 0).any():
        raise ResultFileError(path, "frame_indices must be non-negative and strictly increasing")
    for key in ("joint_rotations", "head_rotation"):
        err, worst = _max_rotation_error(np.asarray(arrays[key]))
        if err > ROTATION_TOLERANCE:
            per_frame = int(np.prod(arrays[key].shape[1:-2], dtype=np.int64))
            raise ResultFileError(path, f"{key} of frame {worst // per_frame} is not a rotation "
                                        f"(|R^T R - I| = {err:.3g}, or det < 0)")
    intr = np.asarray(arrays["intrinsics"])
    if (intr[:, :2] <= 0).any():
        raise ResultFileError(path, f"intrinsics of frame {int(np.argwhere(intr[:, :2] <= 0)[0, 0])} have fx or fy <= 0")
    boxes = np.asarray(arrays["crop_boxes"])
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ResultFileError(path, "crop_boxes must be (x_min, y_min, x_max, y_max) with max >= min")


def _check_index_range(path, key: str, idx: np.ndarray, limit: int, what: str) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= limit):
        raise ResultFileError(path, f"{key} index {what} outside 0..{limit - 1} (found {int(idx.min())}..{int(idx.max())})")


# --- the result object --------------------------------------------------------------------------------

class HeadcastResult:
    """A validated result: ``arrays`` (key -> numpy array) and ``metadata`` (dict).

    Arrays are read with ``result["key"]`` / ``result.get("key")``; the sizes and the common
    metadata fields are properties.
    """

    def __init__(self, arrays: dict, metadata: dict, path=None, validate: bool = True,
                 shapes_only: dict | None = None) -> None:
        self.path = str(path) if path is not None else "<result>"
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        arrays.setdefault("format_version", np.array(FORMAT_VERSION, dtype=np.int32))
        arrays["metadata"] = np.array(json.dumps(metadata, sort_keys=True))
        self.arrays = arrays
        self.metadata = metadata
        self.sizes = {}
        if validate:
            validate_metadata(self.path, metadata)
            self.sizes = validate_arrays(self.path, arrays, shapes_only)
            if metadata["format_version"] != int(arrays["format_version"]):
                raise ResultFileError(self.path, f"metadata format_version {metadata['format_version']} differs from "
                                                 f"the format_version array {int(arrays['format_version'])}")

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    def get(self, key: str, default=None):
        return self.arrays.get(key, default)

    @property
    def n_frames(self) -> int:
        return int(self.arrays["frame_indices"].shape[0])

    @property
    def n_vertices(self) -> int:
        return int(self.arrays["v_template"].shape[0])

    @property
    def n_joints(self) -> int:
        return int(self.arrays["parents"].shape[0])

    @property
    def n_expr(self) -> int:
        return int(self.arrays["expr_basis"].shape[2])

    @property
    def expr_names(self) -> list[str]:
        return [str(n) for n in self.arrays["expr_names"].tolist()]

    @property
    def joint_names(self) -> list[str]:
        return [str(n) for n in self.arrays["joint_names"].tolist()]

    @property
    def image_size(self) -> tuple[int, int]:
        w, h = self.metadata["image_size"]
        return int(w), int(h)

    @property
    def fps(self) -> float:
        return float(self.metadata["fps"])

    @property
    def rig_name(self) -> str:
        return str(self.metadata["rig_name"])


# --- reading and writing -----------------------------------------------------------------------------

def _npz_member_header(zf: zipfile.ZipFile, key: str) -> tuple[tuple, np.dtype]:
    """Shape and dtype of one npz member from its .npy header, without reading the data."""
    with zf.open(key + ".npy") as fh:
        version = np.lib.format.read_magic(fh)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f".npy format version {version} of {key!r} is not supported")
        shape, _fortran, dtype = reader(fh)
    return shape, dtype


def load_result(path, posed_vertices: bool = True) -> HeadcastResult:
    """Read and validate a result file; raise :class:`ResultFileError` saying what is wrong.

    ``posed_vertices=False`` skips reading the (optional, large) per-frame vertices; their
    shape is still checked from the file header.
    """
    path = Path(path)
    if not path.is_file():
        raise ResultFileError(path, "no such file")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ResultFileError(path, f"not a readable NumPy .npz archive ({exc})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ResultFileError(path, "holds a single .npy array, not a .npz archive of named arrays")
    arrays, shapes_only = {}, {}
    with npz:
        if "format_version" not in npz.files:
            raise ResultFileError(path, "missing required array 'format_version' (is this a Headcast result file?)")
        for key in npz.files:
            try:
                if key == "posed_vertices" and not posed_vertices:
                    shapes_only[key] = _npz_member_header(npz.zip, key)
                    continue
                arrays[key] = npz[key]
            except ValueError as exc:  # object arrays refuse to load with allow_pickle=False
                raise ResultFileError(path, f"array {key!r} cannot be read without pickle ({exc})") from None
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                raise ResultFileError(path, f"array {key!r} is truncated or corrupt ({exc})") from None
    version = arrays["format_version"]
    if version.shape != () or version.dtype.kind not in "iu":
        raise ResultFileError(path, f"format_version must be an integer scalar, got {version.dtype} {version.shape}")
    if int(version) > FORMAT_VERSION:
        raise ResultFileError(path, f"written in format version {int(version)} by a newer Headcast; "
                                    f"this reader supports version {FORMAT_VERSION}")
    if "metadata" not in arrays:
        raise ResultFileError(path, "missing required array 'metadata' (JSON clip metadata)")
    meta = arrays.pop("metadata")
    if meta.shape != () or meta.dtype.kind != "U":
        raise ResultFileError(path, f"metadata must be a unicode scalar holding JSON, got {meta.dtype} {meta.shape}")
    try:
        metadata = json.loads(str(meta))
    except json.JSONDecodeError as exc:
        raise ResultFileError(path, f"metadata is not valid JSON ({exc})") from None
    return HeadcastResult(arrays, metadata, path=path, shapes_only=shapes_only)


def sidecar_dict(result: HeadcastResult) -> dict:
    """The human-readable summary written beside the npz: metadata plus each array's shape and dtype."""
    summary = {k: f"{np.asarray(v).dtype} {tuple(np.shape(v))}" for k, v in sorted(result.arrays.items())
               if k != "metadata"}
    valid = np.asarray(result["valid"], dtype=bool)
    return {
        **result.metadata,
        "n_frames": result.n_frames,
        "n_valid_frames": int(valid.sum()),
        "frame_range": [int(result["frame_indices"][0]), int(result["frame_indices"][-1])],
        "n_vertices": result.n_vertices,
        "n_expressions": result.n_expr,
        "joint_names": result.joint_names,
        "arrays": summary,
    }


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_result(path, result: HeadcastResult, sidecar: bool = True, compress: bool = True) -> Path:
    """Write a validated result atomically (temp file + rename) and, by default, its JSON sidecar."""
    path = Path(path)
    if not result.sizes:  # built with validate=False: never write an unchecked file
        HeadcastResult(result.arrays, result.metadata, path=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            (np.savez_compressed if compress else np.savez)(fh, **result.arrays)
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if sidecar:
        side = sidecar_path(path)
        side.write_text(json.dumps(sidecar_dict(result), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


# --- evaluating the rig with numpy --------------------------------------------------------------------

def _frame_index(result: HeadcastResult, frames) -> np.ndarray:
    """Positions (0..N-1) of the requested frames: None = all, an int, a slice or a sequence."""
    n = result.n_frames
    if frames is None:
        return np.arange(n)
    if isinstance(frames, slice):
        return np.arange(n)[frames]
    return np.atleast_1d(np.asarray(frames, dtype=np.int64))


def shaped_vertices(result: HeadcastResult, frames=None) -> np.ndarray:
    """Rest-pose vertices with expression and eyelids applied, ``[n, V, 3]`` float64."""
    idx = _frame_index(result, frames)
    v = result["v_template"].astype(np.float64)
    basis = result["expr_basis"].astype(np.float64)
    out = v[None] + np.einsum("nk,vck->nvc", result["expression"][idx].astype(np.float64), basis)
    if "eyelid_basis" in result:
        out += np.einsum("nk,vck->nvc", result["eyelids"][idx].astype(np.float64),
                         result["eyelid_basis"].astype(np.float64))
    return out


def rest_joints(result: HeadcastResult, frames=None) -> np.ndarray:
    """Per-frame rest joints ``joint_regressor @ shaped vertices``, ``[n, J, 3]`` float64.

    FLAME regresses its joints from the shaped mesh, so they move slightly with expression and
    eyelids. The regressor is applied to the bases once (``[J, 3, K]``) instead of to every
    frame's mesh, which makes this cheap for long clips.
    """
    idx = _frame_index(result, frames)
    reg = result["joint_regressor"].astype(np.float64)
    joints = reg @ result["v_template"].astype(np.float64)  # == joints_rest (checked by the validator)
    expr_j = np.einsum("jv,vck->jck", reg, result["expr_basis"].astype(np.float64))
    out = joints[None] + np.einsum("nk,jck->njc", result["expression"][idx].astype(np.float64), expr_j)
    if "eyelid_basis" in result:
        lid_j = np.einsum("jv,vck->jck", reg, result["eyelid_basis"].astype(np.float64))
        out += np.einsum("nk,jck->njc", result["eyelids"][idx].astype(np.float64), lid_j)
    return out


def pose_feature(rotations: np.ndarray) -> np.ndarray:
    """FLAME's pose map: ``(R_j - I)`` of joints 1..J-1, row-major, concatenated -> ``[n, 9 (J-1)]``."""
    return (rotations[:, 1:] - np.eye(3)).reshape(rotations.shape[0], -1)


def skinning_transforms(rotations: np.ndarray, joints: np.ndarray, parents) -> np.ndarray:
    """Forward kinematics to skinning matrices ``A_j = G_j T(-J_j)``, ``[n, J, 4, 4]``.

    ``G_j = G_parent [R_j | J_j - J_parent]`` with ``G_root = [R_root | J_root]``; ``A_j`` moves
    a rest-pose point rigidly attached to joint j to its posed place.
    """
    n, n_j = rotations.shape[:2]
    world = np.zeros((n, n_j, 4, 4))
    for j in range(n_j):
        local = np.zeros((n, 4, 4))
        local[:, :3, :3] = rotations[:, j]
        p = int(parents[j])
        local[:, :3, 3] = joints[:, j] - (joints[:, p] if p >= 0 else 0.0)
        local[:, 3, 3] = 1.0
        world[:, j] = local if p < 0 else world[:, p] @ local
    skin = world.copy()
    skin[..., :3, 3] -= np.einsum("njab,njb->nja", world[..., :3, :3], joints)
    return skin


def evaluate_rig(result: HeadcastResult, frames=None, chunk: int = 128) -> np.ndarray:
    """Posed vertices in the model frame ``[n, V, 3]`` float64: FLAME's forward pass in numpy.

    Blendshapes (expression, eyelids), pose correctives from ``(R_j - I)``, rest joints from the
    regressor, then linear blend skinning with the stored local joint rotations. The head
    transform is not applied (see :func:`model_to_camera`).
    """
    idx = _frame_index(result, frames)
    parents = result["parents"]
    weights = result["weights"].astype(np.float64)
    pose_basis = result.get("pose_basis")
    if pose_basis is not None:
        pose_basis = pose_basis.astype(np.float64).reshape(result.n_vertices * 3, -1)
    out = np.empty((idx.shape[0], result.n_vertices, 3))
    for start in range(0, idx.shape[0], chunk):
        sel = idx[start:start + chunk]
        rot = result["joint_rotations"][sel].astype(np.float64)
        v = shaped_vertices(result, sel)
        joints = rest_joints(result, sel)
        if pose_basis is not None:
            v = v + (pose_feature(rot) @ pose_basis.T).reshape(v.shape)
        skin = np.einsum("vj,njab->nvab", weights, skinning_transforms(rot, joints, parents))
        out[start:start + sel.shape[0]] = np.einsum("nvab,nvb->nva", skin[..., :3, :3], v) + skin[..., :3, 3]
    return out


def model_to_camera(result: HeadcastResult, points: np.ndarray, frames=None) -> np.ndarray:
    """Model-frame points ``[n, P, 3]`` to the OpenCV camera frame: ``R_head @ p + t_head``."""
    idx = _frame_index(result, frames)
    rot = result["head_rotation"][idx].astype(np.float64)
    trans = result["head_translation"][idx].astype(np.float64)
    return np.einsum("nab,npb->npa", rot, points) + trans[:, None]


def project_to_pixels(result: HeadcastResult, points_cam: np.ndarray, frames=None) -> np.ndarray:
    """Pinhole projection of camera-frame points ``[n, P, 3]`` to original-footage pixels ``[n, P, 2]``."""
    idx = _frame_index(result, frames)
    fx, fy, cx, cy = (result["intrinsics"][idx, k].astype(np.float64)[:, None] for k in range(4))
    z = points_cam[..., 2]
    return np.stack([fx * points_cam[..., 0] / z + cx, fy * points_cam[..., 1] / z + cy], axis=-1)
