# SPDX-License-Identifier: GPL-3.0-or-later
"""Read PyTorch Lightning checkpoints without Lightning, OmegaConf or arbitrary code.

A Lightning ``.ckpt`` is a ``torch.save`` archive whose pickle references classes of the
training environment (OmegaConf's ``DictConfig``/``ListConfig``/``AnyNode`` in
``hyper_parameters``, callback and loop state, ...). ``torch.load(weights_only=True)`` refuses
them, and a plain unpickler would import (and run) whatever they name. This unpickler:

* resolves the globals a tensor archive needs (torch's tensor/parameter rebuild functions,
  dtypes, ``torch.Size``, ``collections.OrderedDict``, a few harmless builtins and numpy
  reconstructors);
* replaces every other class or function with an inert stub that only records the arguments
  and state it is given, so nothing in the file can execute code;
* :func:`plain_config` turns OmegaConf stubs back into dicts and lists: a pickled
  ``DictConfig``/``ListConfig`` keeps its children under ``_content`` and a value node keeps
  its value under ``_val`` (OmegaConf 2.x ``__getstate__``).
"""
from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
import types
from typing import Any

import torch

_STUB_CACHE: dict[tuple[str, str], type] = {}


class PickleStub(dict):
    """An inert stand-in for a class the pickle names but we do not import.

    It accepts any construction arguments, dict items (SETITEMS), list items (APPENDS) and
    state (BUILD), and remembers them. Subclassing dict lets pickles of dict subclasses load.
    """

    stub_module = "?"
    stub_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "PickleStub":
        obj = dict.__new__(cls)
        obj.stub_args = args
        obj.stub_state = None
        obj.stub_items = []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # never run the real constructor
        dict.__init__(self)

    def __setstate__(self, state: Any) -> None:
        self.stub_state = state

    def append(self, item: Any) -> None:
        self.stub_items.append(item)

    def extend(self, items: Any) -> None:
        self.stub_items.extend(items)

    def __reduce__(self):  # stubs are never written back
        raise pickle.PicklingError(f"cannot pickle a stub of {self.stub_module}.{self.stub_name}")

    def __repr__(self) -> str:
        return f"<stub {self.stub_module}.{self.stub_name}>"


def stub_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STUB_CACHE:
        _STUB_CACHE[key] = type(f"Stub_{name}", (PickleStub,), {"stub_module": module, "stub_name": name})
    return _STUB_CACHE[key]


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """copyreg._reconstructor for protocol 0/1 pickles, restricted to stubs and builtins."""
    if isinstance(cls, type) and issubclass(cls, PickleStub):
        obj = cls()
        if state is not None:
            obj.stub_args = (state,)
        return obj
    if cls in (dict, list, set, tuple, object):
        return cls() if state is None else cls(state)
    raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r}")


_TORCH_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch._utils", "_rebuild_qtensor"),
    ("torch._utils", "_rebuild_sparse_tensor"), ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage"), ("torch._utils", "_rebuild_wrapper_subclass"),
    ("torch._tensor", "_rebuild_from_type_v2"), ("torch._tensor", "_rebuild_from_type"),
    ("torch.nn.parameter", "Parameter"), ("torch", "Size"), ("torch", "Tensor"),
    ("torch", "device"), ("torch.serialization", "_get_layout"),
}
_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str",
             "bytes", "bytearray", "slice", "range", "object", "NoneType"}
_NUMPY = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
          ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
          ("numpy", "ndarray"), ("numpy", "dtype")}


class StubUnpickler(pickle.Unpickler):
    """Unpickler for checkpoints: torch tensors load, everything foreign becomes a stub."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names, which protocol-2 pickles (torch.save's default) carry
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if (module, name) in _TORCH_FUNCTIONS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.layout,
                                                                         torch.memory_format)):
            return getattr(torch, name)
        if module == "builtins" and name in _BUILTINS:
            return super().find_class(module, name)
        if (module, name) in (("collections", "OrderedDict"), ("collections", "defaultdict")):
            return getattr(collections, name)
        if (module, name) in (("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor")):
            return _safe_reconstructor
        if (module, name) in _NUMPY or (module.startswith("numpy") and name.endswith("DType")):
            return super().find_class(module, name)
        return stub_class(module, name)


# torch.load(pickle_module=...) needs a module-like object with Unpickler and load
stub_pickle_module = types.SimpleNamespace(
    __name__="headcast_stub_pickle",
    Unpickler=StubUnpickler,
    load=lambda f, **kw: StubUnpickler(f, **kw).load(),
    loads=lambda data, **kw: StubUnpickler(io.BytesIO(data), **kw).load(),
)


def plain_config(value: Any, _depth: int = 0) -> Any:
    """Stubs of OmegaConf containers/nodes (and plain containers) -> dicts, lists and values.

    Other stubs become None: they carry no configuration we could use.
    """
    if _depth > 64:
        raise ValueError("configuration nested too deeply")
    if isinstance(value, PickleStub):
        state = value.stub_state
        if isinstance(state, dict) and "_content" in state:
            content = state["_content"]
            if isinstance(content, str) and content in ("???", "${}"):  # missing / interpolation
                return None
            return plain_config(content, _depth + 1)
        if isinstance(state, dict) and "_val" in state:
            if isinstance(state["_val"], str) and state["_val"] == "???":  # OmegaConf's MISSING
                return None
            return plain_config(state["_val"], _depth + 1)
        if len(value):  # dict subclass pickled by items (e.g. Lightning's AttributeDict)
            return {str(k): plain_config(v, _depth + 1) for k, v in dict.items(value)}
        return None
    if isinstance(value, dict):
        return {str(k): plain_config(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_config(v, _depth + 1) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return None
