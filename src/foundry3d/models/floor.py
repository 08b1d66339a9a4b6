"""The floor: a backbone's own tokenizer and positional MLP, layer-normed, with no block and no training.

Every fidelity number needs this reference. Teacher and student share the frozen tokenizer, so a
task on which the floor already scores like the teacher cannot tell a good student from one that
does nothing; what a student must keep is the teacher's *encoder gain*, teacher minus floor.

``Floor(backbone)`` shares (does not copy) the backbone's tokenizer and positional MLP and exposes
the same interface as a backbone: ``forward_features`` gives c tokens ``layer_norm(T + P)`` (no
learned affine), ``forward_head`` pools them like the teacher's tokens.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from foundry3d.models.backbone import PointTransformer
from foundry3d.models.base import PointModel, TokenOutput


class Floor(PointModel):
    """Training-free reference model built from a backbone (weights shared, nothing trained)."""

    kind = "floor"

    def __init__(self, backbone: PointTransformer) -> None:
        nn.Module.__init__(self)  # shares the backbone's tokenizer and positions instead of building new ones
        self.backbone = backbone
        self.tcfg = backbone.cfg
        self.cfg = backbone.cfg
        self.tokenizer = backbone.tokenizer
        self.pos_embed = backbone.pos_embed

    @override
    def config_dict(self) -> dict:
        return {"floor_of": self.backbone.config_dict()}

    def forward_tokens(
        self, tokens: Tensor, centres: Tensor, indices: list[int] | None = None, **_: object
    ) -> TokenOutput:
        """The tokenizer's tokens plus their positional embedding, layer-normed: no block, no training."""
        x = tokens + self.pos_embed(centres)
        out: TokenOutput = {"tokens": F.layer_norm(x, x.shape[-1:]), "centres": centres}
        if indices is not None:
            out["intermediates"] = [x for _ in indices]
        return out
