"""The paper's comparison models, each the Foundry student with one piece swapped.

Every kind keeps the student's copied tokenizer, positional MLP, copied blocks, final norm and
CAU output map (``Y_hat = routed + MLP(LN(routed + T + P))``); only what happens between the
tokens and ``routed`` differs:

* ``mlp``          no SuperTokens and no blocks: ``routed = 0``, a per-token MLP on T + P.
* ``mimic``        no compression: the blocks run on all c tokens (feature mimicry).
* ``patchmerger``  s learned queries; softmax over the tokens gives s merged tokens; the blocks run on
                   them; each token reads them back through the transposed weights, renormalised.
* ``tome``         ToMe merging inside the copied blocks (after attention, before the MLP), un-merged
                   to the c tokens through the source matrix.
* ``tome_dso``     Foundry's DSO first (s SuperTokens), then ToMe inside the blocks on those.

:class:`MergedBackbone` is the training-free reference: ToMe or PiToMe applied to a teacher's own
blocks, un-merged to c tokens.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from foundry3d.errors import InputError
from foundry3d.models.backbone import PointTransformer
from foundry3d.models.base import PointModel, TokenOutput
from foundry3d.models.foundry import DSO
from foundry3d.models.merging import merged_blocks, schedule
from foundry3d.models.student import FoundryConfig, Student, register_student


def _intermediates(indices: list[int], value: Tensor) -> list[Tensor]:
    """The same tensor at every requested block (a kind whose blocks are not separable per token)."""
    return [value for _ in indices]


@register_student("mlp")
class MLPStudent(Student):
    """The cheapest learned baseline: a per-token MLP on T + P (no SuperTokens, no blocks)."""

    student_kind = "mlp"

    def forward_tokens(
        self, tokens: Tensor, centres: Tensor, indices: list[int] | None = None, **_: Any
    ) -> TokenOutput:
        """The teacher's tokens with no mixing across tokens: CAU's residual MLP on each token alone."""
        pos = self.pos_embed(centres)
        y = self.cau(torch.zeros_like(tokens), tokens, pos)
        out: TokenOutput = {"tokens": y, "centres": centres}
        if indices is not None:
            out["intermediates"] = _intermediates(indices, tokens + pos)
        return out


@register_student("mimic")
class MimicStudent(Student):
    """Feature mimicry: the copied blocks on all c tokens, no compression (the expensive reference)."""

    student_kind = "mimic"

    def forward_tokens(
        self, tokens: Tensor, centres: Tensor, indices: list[int] | None = None, **_: Any
    ) -> TokenOutput:
        """The light encoder on every token (no compression), mapped to the teacher's width."""
        pos = self.pos_embed(centres)
        x, hidden = self.encode(tokens, pos, None, indices)
        out: TokenOutput = {"tokens": self.cau(x, tokens, pos), "centres": centres}
        if indices is not None:
            order = {b: i for i, b in enumerate(sorted(set(indices)))}
            out["intermediates"] = [hidden[order[i]] + tokens + pos for i in indices]
        return out


@register_student("patchmerger")
class PatchMergerStudent(Student):
    """PatchMerger (Renggli et al., 2022) as the bottleneck: s learned queries, soft merge and un-merge."""

    student_kind = "patchmerger"

    def __init__(self, cfg: FoundryConfig) -> None:
        super().__init__(cfg)
        d = self.tcfg.dim
        self.queries = nn.Parameter(torch.randn(cfg.supertokens, d) * 0.02)
        self.merge_norm = nn.LayerNorm(d)

    def forward_tokens(
        self, tokens: Tensor, centres: Tensor, indices: list[int] | None = None, **_: Any
    ) -> TokenOutput:
        """Soft-merge the tokens into s learned queries, encode them, route them back through the same weights."""
        pos = self.pos_embed(centres)
        xn = self.merge_norm(tokens)
        weights = F.softmax(xn @ self.queries.T / math.sqrt(xn.shape[-1]), dim=1)  # (B, c, s): over tokens
        merged = weights.transpose(1, 2) @ xn
        pos_s = weights.transpose(1, 2) @ pos
        x, hidden = self.encode(merged, pos_s, None, indices)
        back = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)  # each token over the s outputs
        out: TokenOutput = {
            "tokens": self.cau(back @ x, tokens, pos),
            "centres": centres,
            "assignment": weights.argmax(-1),
            "soft_assignment": weights,
        }
        if indices is not None:
            order = {b: i for i, b in enumerate(sorted(set(indices)))}
            out["intermediates"] = [back @ hidden[order[i]] + tokens + pos for i in indices]
        return out


@register_student("tome")
class ToMeStudent(Student):
    """ToMe merging inside the copied blocks (``tome``), optionally after DSO (``tome_dso``)."""

    student_kind = "tome"

    def __init__(self, cfg: FoundryConfig) -> None:
        super().__init__(cfg)
        d = self.tcfg.dim
        self.dso = (
            DSO(d, cfg.supertokens, cfg.similarity, cfg.centre_keys, count_grad=cfg.count_grad)
            if cfg.kind == "tome_dso"
            else None
        )

    def forward_tokens(
        self,
        tokens: Tensor,
        centres: Tensor,
        tau: float = 1.0,
        noise: bool = True,
        indices: list[int] | None = None,
        **_options: Any,
    ) -> TokenOutput:
        """Merge the most similar tokens block by block (ToMe), then unmerge to every token for the loss."""
        b, c, _ = tokens.shape
        pos = self.pos_embed(centres)
        x, xpos = tokens, pos
        cam = None
        out: TokenOutput = {"centres": centres}
        if self.dso is not None:
            if self.cfg.supertokens > c:
                raise InputError(f"supertokens={self.cfg.supertokens} exceeds the {c} tokens of the input")
            x, xpos, cam, index, count, soft = self.dso(tokens, pos, tokens.new_ones(b, c), tau, noise, centres)
            out.update({"assignment": index, "counts": count, "occupancy": (count > 0).sum(1), "soft_assignment": soft})
        r = schedule(x.shape[1], len(self.blocks), self.cfg.tome_r)
        z, source = merged_blocks(self.blocks, x, xpos, r, "tome", self.tcfg.pos_every_layer)
        z = self.norm(z) if self.norm is not None else z
        routed = source.transpose(1, 2) @ z  # un-merge to the tokens entering the blocks
        if cam is not None:
            routed = cam @ routed  # and from SuperTokens to the c tokens
        out["tokens"] = self.cau(routed, tokens, pos)
        out["merged_tokens"] = torch.full((b,), z.shape[1], dtype=torch.long)
        if indices is not None:
            out["intermediates"] = _intermediates(indices, routed + tokens + pos)
        return out


class MergedBackbone(PointModel):
    """Training-free ToMe / PiToMe on a teacher: its own blocks with ``r`` merges per block, the
    merged tokens un-merged to all c positions and final-normed. Shares the teacher's weights."""

    kind = "merged_backbone"

    def __init__(self, backbone: PointTransformer, method: str = "tome", r: int | None = None) -> None:
        if method not in ("tome", "pitome"):
            raise InputError(f"merging method must be 'tome' or 'pitome', got {method!r}")
        nn.Module.__init__(self)
        self.backbone = backbone
        self.tcfg = backbone.cfg
        self.cfg = backbone.cfg
        self.tokenizer = backbone.tokenizer
        self.pos_embed = backbone.pos_embed
        self.method = method
        self.r = r

    @property
    @override
    def num_blocks(self) -> int:
        return self.backbone.num_blocks

    @override
    @override
    def config_dict(self) -> dict:
        return {"merged": self.method, "r": self.r, "backbone": self.backbone.config_dict()}

    def forward_tokens(
        self, tokens: Tensor, centres: Tensor, indices: list[int] | None = None, **_: Any
    ) -> TokenOutput:
        """The backbone with training-free token merging between its blocks, unmerged to every token."""
        enc = self.backbone.encoder
        r = schedule(tokens.shape[1], len(enc.blocks), self.r)
        z, source = merged_blocks(enc.blocks, tokens, self.pos_embed(centres), r, self.method, enc.pos_every_layer)
        y = source.transpose(1, 2) @ enc.norm(z)
        out: TokenOutput = {"tokens": y, "centres": centres}
        if indices is not None:
            out["intermediates"] = _intermediates(indices, y)
        return out


register_student("tome_dso", ToMeStudent, learned=True, note="DSO, then ToMe inside the blocks")
