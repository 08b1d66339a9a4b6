"""The one restricted unpickler: reads any pickle, runs nothing that is not on an allow-list.

Used for foreign PyTorch checkpoints (Point-JEPA Lightning / Point-MAE files, which pickle
training objects next to the weights) and for the benchmark files that are pickles (ModelNet
``.dat``, few-shot ``.pkl``).

Policy: a global on the allow-list (tensor and numpy-array rebuilding, plain containers, dtypes)
resolves to the real object; **any other global becomes an inert placeholder class** that records
its name and arguments and never imports a module or calls a function. A malicious ``__reduce__``
therefore builds a harmless placeholder instead of running. Callers check that what they read is
made of tensors / arrays / containers and refuse placeholders where they need data.
"""

from __future__ import annotations

import collections
import importlib
import io
import pickle
import types
import warnings
from typing import Any

import numpy as np
import torch
import torch._utils
from typing_extensions import override

_DTYPE_NAMES = {
    "float16",
    "float32",
    "float64",
    "bfloat16",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "bool",
    "complex64",
    "complex128",
    "half",
    "float",
    "double",
    "long",
    "int",
    "short",
}


def _allowed() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("builtins", "complex"): complex,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    multiarray = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray")
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(mod, "_reconstruct")] = multiarray._reconstruct
        table[(mod, "scalar")] = multiarray.scalar
    for name in _DTYPE_NAMES:
        if isinstance(getattr(torch, name, None), torch.dtype):
            table[("torch", name)] = getattr(torch, name)
    return table


class Placeholder:
    """Stands in for any pickled object whose class or function is not on the allow-list."""

    qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<placeholder {self.qualname}>"


def _placeholder(module: str, name: str) -> type:
    return type(name, (Placeholder,), {"qualname": f"{module}.{name}"})


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only numpy arrays, torch tensors and plain containers; any other global
    becomes an inert placeholder."""

    _table: dict[tuple[str, str], Any] | None = None

    @override
    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._table is None:
            RestrictedUnpickler._table = _allowed()
        if (module, name) in RestrictedUnpickler._table:
            return RestrictedUnpickler._table[(module, name)]
        if module == "torch._tensor" and name == "_rebuild_from_type_v2":
            return _rebuild_from_type_v2
        return _placeholder(module, name)


def _rebuild_from_type_v2(func: Any, new_type: Any, args: tuple, state: Any) -> Any:
    # Tensor subclasses pickled with their type: keep the plain tensor, ignore the type and state.
    return func(*args)


def restricted_load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` through :class:`RestrictedUnpickler`."""
    with warnings.catch_warnings():  # numpy 2 warns when old pickles name numpy.core
        warnings.simplefilter("ignore", DeprecationWarning)
        return RestrictedUnpickler(file, **kwargs).load()


def restricted_loads(data: bytes, **kwargs: Any) -> Any:
    """``restricted_load`` from bytes."""
    return restricted_load(io.BytesIO(data), **kwargs)


# A module object with the pickle API, for torch.load(pickle_module=...): torch's legacy format
# reads its first records with ``pickle_module.load`` and the rest with ``pickle_module.Unpickler``;
# both are the restricted ones here.
pickle_module = types.ModuleType("foundry3d_restricted_pickle")
pickle_module.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
pickle_module.load = restricted_load  # type: ignore[attr-defined]
pickle_module.loads = restricted_loads  # type: ignore[attr-defined]
pickle_module.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]


def contains_placeholder(obj: Any, depth: int = 0) -> bool:
    """Whether a loaded structure holds any placeholder (an object that was not on the allow-list)."""
    if depth > 50:
        return False
    if isinstance(obj, Placeholder) or (isinstance(obj, type) and issubclass(obj, Placeholder)):
        return True
    if isinstance(obj, dict):
        return any(contains_placeholder(k, depth + 1) or contains_placeholder(v, depth + 1) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return any(contains_placeholder(v, depth + 1) for v in obj)
    return False
