"""k-nearest neighbours with bounded memory.

The distance matrix between M queries and N points is computed in query chunks so that no
more than ``max_elements`` distances exist at once: 300,000 points with thousands of queries
fit in a few hundred MB instead of tens of GB.
"""

from __future__ import annotations

import torch
from torch import Tensor

from foundry3d.errors import InputError

DEFAULT_MAX_ELEMENTS = 1 << 24  # 16M float32 distances (64 MB) per chunk


def square_distance(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances (B, M, N) between a (B, M, 3) and b (B, N, 3)."""
    d = (a * a).sum(-1, keepdim=True) - 2.0 * a @ b.transpose(1, 2) + (b * b).sum(-1).unsqueeze(1)
    return d.clamp_min_(0.0)


def knn(
    query: Tensor,
    points: Tensor,
    k: int,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Indices (B, M, k) and squared distances of the ``k`` nearest ``points`` to each query.

    Neighbours come back sorted by distance (nearest first).
    """
    if query.dim() != 3 or points.dim() != 3 or query.shape[0] != points.shape[0]:
        raise InputError(
            f"query (B, M, 3) and points (B, N, 3) must share B; got {tuple(query.shape)} and {tuple(points.shape)}"
        )
    b, m, _ = query.shape
    n = points.shape[1]
    if not 1 <= k <= n:
        raise InputError(f"cannot take k={k} neighbours among {n} points")
    chunk = max(1, max_elements // max(1, b * n))
    if chunk >= m:
        d, i = square_distance(query, points).topk(k, dim=-1, largest=False, sorted=True)
        return i, d
    dists, idxs = [], []
    for s in range(0, m, chunk):
        d, i = square_distance(query[:, s : s + chunk], points).topk(k, dim=-1, largest=False, sorted=True)
        dists.append(d)
        idxs.append(i)
    return torch.cat(idxs, 1), torch.cat(dists, 1)
