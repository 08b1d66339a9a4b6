"""Read foreign PyTorch checkpoints without executing pickled code.

Official Point-JEPA (Lightning) and Point-MAE files are ``torch.save``d dicts that also pickle
training objects (hyper-parameters, metric classes, callbacks). ``weights_only=True`` refuses
such files; ``weights_only=False`` would run whatever the pickle names. This loader uses
torch's storage handling with an unpickler whose ``find_class`` resolves only tensor-rebuild
functions and plain containers; every other class or function becomes an inert placeholder,
so a malicious ``__reduce__`` can never call anything.
"""

from __future__ import annotations

import collections
import pickle
import types
from pathlib import Path
from typing import Any

import torch
import torch._utils

from foundry3d.models.checkpoint import CheckpointError

_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
}
_DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}


class Placeholder:
    """Stands in for any pickled object whose class is not on the allow-list."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> Placeholder:
        return Placeholder(*args)

    def __repr__(self) -> str:
        return f"<placeholder {getattr(self, 'qualname', '?')}>"


def _placeholder_class(module: str, name: str) -> type:
    return type(name, (Placeholder,), {"qualname": f"{module}.{name}"})


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _DTYPES:
            return getattr(torch, name)
        if module == "torch._tensor" and name == "_rebuild_from_type_v2":
            return _rebuild_from_type_v2
        return _placeholder_class(module, name)


def _rebuild_from_type_v2(func: Any, new_type: Any, args: tuple, state: Any) -> Any:
    # Tensor subclasses (e.g. Parameter) pickled with their type: keep the plain tensor.
    return func(*args)


_pickle_module = types.ModuleType("foundry3d_safe_pickle")
_pickle_module.Unpickler = _Unpickler  # type: ignore[attr-defined]
_pickle_module.load = pickle.load  # type: ignore[attr-defined]
_pickle_module.__name__ = "foundry3d_safe_pickle"


def safe_torch_load(path: str | Path) -> Any:
    """Load a ``torch.save`` file; tensors come back, unknown objects become placeholders."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    try:
        return torch.load(p, map_location="cpu", weights_only=False, pickle_module=_pickle_module)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f"{p} is not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from e
