# SPDX-License-Identifier: GPL-3.0-or-later
"""Read the pickles that FLAME and its companion assets ship in, without their original libraries.

Three foreign object kinds appear in those files:

* ``chumpy`` arrays (``generic_model.pkl``, ``flame2023*.pkl``): chumpy no longer imports on
  current numpy, but its pickled state is a plain dict that keeps the array under ``'x'``.
* ``scipy.sparse`` matrices stored under old module paths (``scipy.sparse.csc``): rebuilt here
  from their state (``data``, ``indices``, ``indptr``, ``_shape``) as dense arrays, so the
  loader does not depend on scipy keeping those shims.
* torch tensors pickled in the legacy (pre-zip) storage format (``landmark_embedding.npy``):
  parsed from the raw bytes so that numpy alone can read the file.

Everything else that is not numpy or a builtin container is refused, so a malicious or
unexpected pickle fails loudly instead of running code.
"""
from __future__ import annotations

import io
import pickle
import struct
from typing import Any

import numpy as np


class PickleFormatError(ValueError):
    """A pickle holds something this reader does not understand."""


class ChumpyStub:
    """Stands in for any chumpy class; keeps the pickled state dict."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"state": state}

    def to_array(self) -> np.ndarray:
        state = self.state
        if "x" in state:
            return _as_array(state["x"])
        # chumpy.reordering.Select (seen in MANO files): a.ravel()[idxs].reshape(preferred_shape)
        if "a" in state and "idxs" in state:
            base = _as_array(state["a"]).ravel()
            out = base[np.asarray(state["idxs"]).ravel()]
            shape = state.get("preferred_shape")
            return out.reshape(shape) if shape is not None else out
        raise PickleFormatError(f"chumpy object without an array (state keys: {sorted(state)})")


class SparseStub:
    """Stands in for a scipy.sparse matrix class; rebuilt densely from its state."""

    fmt = "csc"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}

    def to_array(self) -> np.ndarray:
        s = self.state
        shape = s.get("_shape", s.get("shape"))
        if shape is None or not {"data", "indices", "indptr"} <= set(s):
            raise PickleFormatError(f"sparse matrix state lacks data/indices/indptr/_shape (keys {sorted(s)})")
        data = np.asarray(s["data"], dtype=np.float64)
        indices = np.asarray(s["indices"], dtype=np.int64)
        indptr = np.asarray(s["indptr"], dtype=np.int64)
        dense = np.zeros(tuple(int(n) for n in shape), dtype=np.float64)
        if self.fmt == "csr":
            for row in range(dense.shape[0]):
                sl = slice(indptr[row], indptr[row + 1])
                np.add.at(dense[row], indices[sl], data[sl])
        else:  # csc: indptr runs over columns
            for col in range(dense.shape[1]):
                sl = slice(indptr[col], indptr[col + 1])
                np.add.at(dense[:, col], indices[sl], data[sl])
        return dense


class CsrStub(SparseStub):
    fmt = "csr"


def _sparse_class(name: str) -> type:
    if name.startswith("csr"):
        return CsrStub
    if name.startswith("csc"):
        return SparseStub
    raise PickleFormatError(f"unsupported scipy.sparse class {name!r}")


# --- legacy torch tensors -------------------------------------------------------------------

_TORCH_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str) -> None:
        if name not in _TORCH_STORAGE_DTYPES:
            raise PickleFormatError(f"unsupported torch storage type {name!r}")
        self.dtype = np.dtype(_TORCH_STORAGE_DTYPES[name])


class _TorchDtype:
    """torch.float32 etc. as pickled by newer legacy saves (persistent id carries a dtype)."""

    _NAMES = {"float32": np.float32, "float": np.float32, "float64": np.float64, "double": np.float64,
              "float16": np.float16, "half": np.float16, "int64": np.int64, "long": np.int64,
              "int32": np.int32, "int": np.int32, "int16": np.int16, "int8": np.int8,
              "uint8": np.uint8, "bool": np.bool_}

    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(self._NAMES[name])


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *unused: Any) -> np.ndarray:
    if len(size) == 0:
        return storage[offset].copy()
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride))
    return np.array(view)


def _load_legacy_torch_bytes(data: bytes) -> np.ndarray:
    """Parse ``torch.save(storage, f, _use_new_zipfile_serialization=False)`` output.

    Layout: pickle(magic), pickle(protocol), pickle(sys_info), main pickle whose persistent ids
    name storages, pickle(sorted storage keys), then per key an int64 element count and the raw
    little-endian element bytes.
    """
    f = io.BytesIO(data)
    for _ in range(3):  # magic number, protocol version, system info
        pickle.load(f)
    storages: dict[str, tuple[np.dtype, int]] = {}

    class _Main(_RestrictedUnpickler):
        def persistent_load(self, pid: Any) -> Any:
            if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
                raise PickleFormatError(f"unexpected persistent id {pid!r}")
            storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
            storages[key] = (storage_type.dtype, numel)
            return ("__storage__", key)

    main = _Main(f).load()
    keys = pickle.load(f)
    arrays: dict[str, np.ndarray] = {}
    for key in keys:
        (count,) = struct.unpack("<q", f.read(8))
        dtype, _numel = storages[str(key)]
        raw = f.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            raise PickleFormatError("legacy torch storage is truncated")
        arrays[str(key)] = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    if isinstance(main, tuple) and main and main[0] == "__storage__":
        return arrays[main[1]]
    raise PickleFormatError("legacy torch bytes did not hold a single storage")


# --- the unpickler -----------------------------------------------------------------------------

_ALLOWED_NUMPY = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}
_ALLOWED_BUILTINS = {("builtins", n) for n in ("set", "frozenset", "slice", "complex", "bytearray")} | {
    ("__builtin__", n) for n in ("set", "frozenset", "slice", "complex", "bytearray")} | {
    ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"), ("__builtin__", "object"),
    ("builtins", "object"), ("collections", "OrderedDict"), ("_codecs", "encode")}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("chumpy"):
            return ChumpyStub
        if module.startswith("scipy.sparse"):
            return _sparse_class(name)
        if (module, name) in _ALLOWED_NUMPY or (module, name) in _ALLOWED_BUILTINS:
            return super().find_class(module, name)
        if module == "numpy" and name.endswith("dtype") or module.startswith("numpy.dtypes"):
            return super().find_class(module, name)
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch.storage" and name == "_load_from_bytes":
            return _load_legacy_torch_bytes
        if module == "torch" and name in _TORCH_STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name in _TorchDtype._NAMES:
            return _TorchDtype(name)
        if module == "collections" and name == "OrderedDict":
            return dict
        raise PickleFormatError(f"refusing to load {module}.{name} from a pickle")


def _as_array(value: Any) -> Any:
    if isinstance(value, (ChumpyStub, SparseStub)):
        return value.to_array()
    return value


def resolve_foreign(value: Any) -> Any:
    """Turn stubs anywhere inside dicts/lists/tuples into numpy arrays."""
    if isinstance(value, (ChumpyStub, SparseStub)):
        return value.to_array()
    if isinstance(value, dict):
        return {k: resolve_foreign(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_foreign(v) for v in value]
    if isinstance(value, tuple):
        return tuple(resolve_foreign(v) for v in value)
    if isinstance(value, np.ndarray) and value.dtype == object:
        if value.ndim == 0:
            return resolve_foreign(value.item())
        return np.array([resolve_foreign(v) for v in value.ravel()], dtype=object).reshape(value.shape)
    return value


def load_pickle(data: bytes) -> Any:
    """Unpickle Python-2 or Python-3 pickles (latin1 strings) with foreign objects resolved."""
    return resolve_foreign(_RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load())


def load_npy_object(data: bytes) -> Any:
    """Read an ``.npy`` file that holds a pickled object (0-d object array) without numpy's pickle.

    ``np.load(allow_pickle=True)`` would import torch and chumpy by name; here the pickle goes
    through the same restricted unpickler as the model files.
    """
    f = io.BytesIO(data)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f)
    if dtype != object:
        f.seek(0)
        return np.load(f, allow_pickle=False)
    obj = _RestrictedUnpickler(f, encoding="latin1").load()
    obj = resolve_foreign(obj)
    if isinstance(obj, np.ndarray) and obj.shape == () and obj.dtype == object:
        obj = obj.item()
    return obj
