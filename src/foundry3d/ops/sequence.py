"""Point-JEPA's sequencer: order patch centres into a spatially continuous chain.

Greedy nearest-neighbour walk that starts at the centre with the smallest x+y+z and repeatedly
steps to the closest unvisited centre (ties go to the lowest index), so that contiguous index
ranges are contiguous regions of the shape.
"""

from __future__ import annotations

import torch
from torch import Tensor


def nearest_neighbour_order(centres: Tensor) -> Tensor:
    """Permutation (B, G) that orders ``centres`` (B, G, 3) into a nearest-neighbour chain."""
    b, g, _ = centres.shape
    dist = torch.cdist(centres.float(), centres.float())
    batch = torch.arange(b, device=centres.device)
    visited = torch.zeros(b, g, dtype=torch.bool, device=centres.device)
    order = torch.empty(b, g, dtype=torch.long, device=centres.device)
    cur = centres.sum(-1).argmin(-1)
    for i in range(g):
        order[:, i] = cur
        visited[batch, cur] = True
        if i + 1 < g:
            d = dist[batch, cur].masked_fill(visited, float("inf"))
            cur = d.argmin(-1)
    return order
