"""``zorder``: DSO's bins cut from a space-filling curve, the serialisation pooling of Point Transformer V3.

The patch centres of each cloud are scaled into its bounding box, quantised to 2^10 cells per axis and
ordered along the Z-order (Morton) curve; the ordered tokens are cut into s runs of equal length, so
each SuperToken holds ~c/s tokens that are neighbours along the curve. Like FPS it reads only where a
token sits, but every bin has the same size (no SuperToken stands for one outlier patch). Pure PyTorch
integer ops and a sort: it exports.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from foundry3d.models.assign import register_assignment
from foundry3d.models.foundry import FoundryStudent
from foundry3d.models.student import register_student

BITS = 10  # cells per axis: 2^10, a 30-bit code


def morton(centres: Tensor, bits: int = BITS) -> Tensor:
    """The Z-order code (B, c) of each centre (B, c, 3) in its cloud's bounding box."""
    lo, hi = centres.amin(1, keepdim=True), centres.amax(1, keepdim=True)
    cells = ((centres - lo) / (hi - lo).clamp_min(1e-9) * (2**bits - 1)).round().long()
    code = torch.zeros(centres.shape[:2], dtype=torch.long, device=centres.device)
    for b in range(bits):  # interleave the bits: x, y, z, x, y, z, ...
        for axis in range(3):
            code |= ((cells[..., axis] >> b) & 1) << (3 * b + axis)
    return code


@register_assignment("zorder", centres=True)
@torch.no_grad()
def zorder_assign(tokens: Tensor, centres: Tensor, s: int, weight: Tensor, iters: int) -> tuple[Tensor, Any]:
    """Bin of each token (B, c): its rank along the Z-order curve, cut into s runs of equal length."""
    c = centres.shape[1]
    rank = morton(centres.float()).argsort(1).argsort(1)
    return torch.div(rank * s, c, rounding_mode="floor"), None


register_student(
    "zorder", FoundryStudent, supertokens=True, note="DSO with bins cut from the Z-order curve of the patch centres"
)
