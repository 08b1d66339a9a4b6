"""Gathering and neighbourhood grouping: FPS centres, kNN patches, centred coordinates."""

from __future__ import annotations

import torch
from torch import Tensor

from foundry3d.ops import fast
from foundry3d.ops.fps import farthest_point_sample
from foundry3d.ops.knn import DEFAULT_MAX_ELEMENTS, knn


def gather_points(values: Tensor, idx: Tensor) -> Tensor:
    """Pick rows of ``values`` (B, N, C) at ``idx`` (B, ...) -> (B, ..., C) with a plain gather."""
    b, _, c = values.shape
    flat = idx.reshape(b, -1)
    out = torch.gather(values, 1, flat.unsqueeze(-1).expand(-1, -1, c))
    return out.reshape(*idx.shape, c)


def group_points(
    points: Tensor,
    num_groups: int,
    group_size: int,
    fps_start: int | str | Tensor = 0,
    generator: torch.Generator | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    centres: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Split a cloud into ``num_groups`` kNN patches around FPS centres.

    Returns the centred neighbourhoods (B, G, K, 3), the centres (B, G, 3) and the neighbour
    indices (B, G, K) into ``points``. Each patch contains its own centre (distance 0). With ``centres``
    (B, G, 3) given, the patches are the kNN around those instead (a foreign teacher's patch centres). CPU clouds
    outside autograd and export use the library path (:mod:`foundry3d.ops.fast`): the same centres
    and neighbours below ``fast.FAST_MIN_POINTS`` points, an exact FPS from another start above.
    """
    if centres is not None:  # given centres (another model's patches): kNN around each, in their order
        idx, _ = knn(centres.to(points.dtype), points, group_size, max_elements=max_elements)
        return gather_points(points, idx) - centres.to(points.dtype).unsqueeze(2), centres.to(points.dtype), idx
    if isinstance(fps_start, int) and fps_start == 0 and fast.use_fast(points):
        centre_idx = fast.fps_fast(points, num_groups)
        centres = gather_points(points, centre_idx)
        idx, _ = fast.knn_fast(centres, points, group_size)
    else:
        centre_idx = farthest_point_sample(points, num_groups, start=fps_start, generator=generator)
        centres = gather_points(points, centre_idx)
        idx, _ = knn(centres, points, group_size, max_elements=max_elements)
    neighbourhoods = gather_points(points, idx) - centres.unsqueeze(2)
    return neighbourhoods, centres, idx
