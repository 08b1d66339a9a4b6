"""FLOPs per cloud with PyTorch's own counter (``torch.utils.flop_counter.FlopCounterMode``).

Convention: 2 FLOPs per multiply-add. Counted: every matrix product PyTorch dispatches (linear
layers, the mini-PointNet's per-point layers, attention's QK^T and AV through SDPA, the kNN
distance matmul, DSO/CAU's one-hot merges and un-merges). Not counted: element-wise work
(normalisations, activations, softmax, FPS's distance updates, top-k, gathers).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from foundry3d.models.base import PointModel

CONVENTION = (
    "FLOPs = 2 x multiply-adds of all matrix products (linear/MLP layers, attention QK^T and AV, "
    "kNN distance matmul, one-hot merges); element-wise ops, FPS updates, top-k and gathers not counted"
)


@torch.no_grad()
def count_flops(model: PointModel, points: torch.Tensor, **kwargs: Any) -> dict[str, Any]:
    """FLOPs of ``model.forward_features(points)`` (total and per top-level module), per cloud."""
    model.eval()
    counter = FlopCounterMode(display=False, depth=2)
    with counter:
        model.forward_features(points, **kwargs)
    total = counter.get_total_flops()
    b = points.shape[0]
    per_module = {
        name: int(sum(v.values())) // b
        for name, v in counter.get_flop_counts().items()
        if name.count(".") == 1 and name != "Global"
    }
    return {"flops": int(total) // b, "per_module": per_module, "convention": CONVENTION}


def count_params(model: PointModel) -> int:
    """Number of parameters of a model."""
    return int(sum(p.numel() for p in model.parameters()))
