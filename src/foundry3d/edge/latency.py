"""CPU latency (warm-up, then median and p90) and peak activation memory of one forward pass."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from foundry3d.edge.memory import peak_activation_bytes
from foundry3d.models.base import PointModel


@torch.inference_mode()
def measure(
    model: PointModel,
    points: torch.Tensor,
    warmup: int = 2,
    min_runs: int = 5,
    max_runs: int = 30,
    budget_s: float = 8.0,
    **kwargs: Any,
) -> dict[str, float]:
    """Median / p90 / mean latency (ms) over as many runs as fit in ``budget_s`` (within bounds)."""
    model.eval()
    for _ in range(warmup):
        model.forward_features(points, **kwargs)
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        model.forward_features(points, **kwargs)
        times.append((time.perf_counter() - t0) * 1000)
    peak = peak_activation_bytes(model, points, **kwargs)
    t = np.asarray(times)
    return {
        "median_ms": float(np.median(t)),
        "p90_ms": float(np.percentile(t, 90)),
        "mean_ms": float(t.mean()),
        "runs": len(t),
        "peak_mem_mb": peak / 2**20,
    }
