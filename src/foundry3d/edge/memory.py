"""Peak activation memory of a forward pass, counted tensor by tensor.

A ``TorchDispatchMode`` sees every tensor an operator returns; new storages are added to a live
total and removed when their last tracked tensor dies. The peak of that total is the activation
memory a device would need on top of the weights and the input. It is exact for what PyTorch
allocates and independent of the allocator, the OS and other processes.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from foundry3d.models.base import PointModel


class PeakTensorMemory(TorchDispatchMode):
    """The peak bytes of live tensor storage during a forward pass, counted by dispatch (allocator and platform
    independent)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage ptr -> [bytes, tracked tensors]
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key == 0:
                continue
            if key in self.live:
                self.live[key][1] += 1
            else:
                self.live[key] = [storage.nbytes(), 1]
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            weakref.finalize(t, self._release, key)
        return out


@torch.inference_mode()
def peak_activation_bytes(model: PointModel, points: torch.Tensor, **kwargs: Any) -> int:
    """Peak bytes of tensors alive at once during ``model.forward_features(points)``."""
    model.eval()
    with PeakTensorMemory() as mode:
        model.forward_features(points, **kwargs)
    return mode.peak
