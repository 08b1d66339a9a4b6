"""Point-JEPA self-supervised pretraining (Saito et al., WACV 2025), rebuilt in plain PyTorch.

One step: tokenize the cloud (FPS with a random start), order the patch centres into a
nearest-neighbour chain, let an EMA *target* encoder embed all tokens (targets = parameter-free
layer_norm of its last block), encode a contiguous *context* block with the online encoder, and
predict M contiguous *target* blocks from the context with a narrow transformer predictor.
Loss: SmoothL1 between predictions and targets. The online backbone is what ships.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from foundry3d.errors import ConfigError
from foundry3d.models.backbone import PointTransformer
from foundry3d.models.encoder import TransformerEncoder
from foundry3d.models.tokenizer import PositionalEmbedding
from foundry3d.ops.group import gather_points
from foundry3d.ops.sequence import nearest_neighbour_order


@dataclass
class JEPAConfig:
    """Point-JEPA recipe knobs (defaults: the official ShapeNet pretraining config)."""

    predictor_dim: int = 192
    predictor_depth: int = 6
    predictor_heads: int = 6
    predictor_pos_hidden: int = 128
    num_targets: int = 4
    target_ratio: tuple[float, float] = (0.15, 0.2)
    context_ratio: tuple[float, float] = (0.4, 0.75)
    ema_start: float = 0.9995
    ema_end: float = 0.99999
    loss_beta: float = 2.0
    sequencer: Literal["nearest_min_start", "none"] = "nearest_min_start"
    random_fps_start: bool = True

    def validate(self) -> None:
        """Refuse mask ratios outside (0, 1] or in the wrong order, an EMA schedule outside [0, 1], no targets."""
        for name in ("target_ratio", "context_ratio"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= 1.0:
                raise ConfigError(f"{name} must satisfy 0 < low <= high <= 1, got {(lo, hi)}")
        if not 0.0 <= self.ema_start <= self.ema_end <= 1.0:
            raise ConfigError(f"need 0 <= ema_start <= ema_end <= 1, got {self.ema_start}, {self.ema_end}")
        if self.num_targets < 1:
            raise ConfigError("num_targets must be >= 1")


class Predictor(nn.Module):
    """Narrow transformer that predicts target-block embeddings from the encoded context."""

    def __init__(self, dim: int, cfg: JEPAConfig) -> None:
        super().__init__()
        p = cfg.predictor_dim
        self.embed = nn.Linear(dim, p)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, p))
        self.pos_embed = PositionalEmbedding(p, cfg.predictor_pos_hidden)
        self.encoder = TransformerEncoder(p, cfg.predictor_depth, cfg.predictor_heads, pos_every_layer=False)
        self.proj = nn.Linear(p, dim)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    @override
    def forward(self, context: Tensor, context_centres: Tensor, target_centres: Tensor) -> Tensor:
        b, n, _ = context.shape
        k = target_centres.shape[1]
        x = torch.cat([self.embed(context), context.new_zeros(b, k, self.mask_token.shape[-1])], dim=1)
        pos = torch.cat([self.pos_embed(context_centres), self.pos_embed(target_centres) + self.mask_token], dim=1)
        out, _ = self.encoder(x, pos)
        return self.proj(out[:, n:])


def sample_blocks(num_tokens: int, cfg: JEPAConfig, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Target blocks (M, k) and one context block (n,) of contiguous indices, shared by the batch.

    The context is a contiguous run of the indices left over once the targets are removed.
    """

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    k = max(1, int(num_tokens * uniform(*cfg.target_ratio)))
    starts = torch.randint(0, num_tokens - k + 1, (cfg.num_targets,), generator=generator)
    targets = starts[:, None] + torch.arange(k)[None]
    covered = torch.zeros(num_tokens, dtype=torch.bool)
    covered[targets.flatten()] = True
    valid = (~covered).nonzero().flatten()
    if valid.numel() == 0:  # tiny token counts: fall back to everything outside the first block
        valid = (~torch.isin(torch.arange(num_tokens), targets[0])).nonzero().flatten()
    n = max(1, int(valid.numel() * uniform(*cfg.context_ratio)))
    s = int(torch.randint(0, valid.numel() - n + 1, (1,), generator=generator))
    return targets, valid[s : s + n]


class PointJEPA(nn.Module):
    """Online backbone + EMA target encoder + predictor. ``forward`` returns (loss, metrics)."""

    def __init__(self, backbone: PointTransformer, cfg: JEPAConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.backbone = backbone
        self.target_encoder = copy.deepcopy(backbone.encoder).requires_grad_(False)
        self.predictor = Predictor(backbone.dim, cfg)

    @torch.no_grad()
    def update_target(self, step: int, total_steps: int) -> float:
        """EMA step with momentum rising linearly from ema_start to ema_end over training."""
        frac = min(1.0, step / max(1, total_steps))
        tau = self.cfg.ema_start + (self.cfg.ema_end - self.cfg.ema_start) * frac
        online = list(self.backbone.encoder.parameters())
        target = list(self.target_encoder.parameters())
        torch._foreach_lerp_(target, online, 1.0 - tau)  # type: ignore[arg-type]  # Parameters are Tensors
        return tau

    @override
    def forward(
        self, points: Tensor, generator: torch.Generator, fps_start: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        bb = self.backbone
        start = fps_start if fps_start is not None else ("random" if self.cfg.random_fps_start else None)
        tokens, centres, _ = bb.tokenize(points, fps_start=start, generator=generator)
        if self.cfg.sequencer == "nearest_min_start":
            order = nearest_neighbour_order(centres)
            tokens, centres = gather_points(tokens, order), gather_points(centres, order)
        pos = bb.pos_embed(centres)
        with torch.no_grad():
            self.target_encoder.eval()
            depth = len(self.target_encoder.blocks)
            _, hidden = self.target_encoder(tokens, pos, indices=[depth - 1])
            target_all = F.layer_norm(hidden[-1], hidden[-1].shape[-1:])

        tgt_idx, ctx_idx = sample_blocks(tokens.shape[1], self.cfg, generator)
        ctx, _ = bb.encoder(tokens[:, ctx_idx], pos[:, ctx_idx])
        m, k = tgt_idx.shape
        b = tokens.shape[0]
        # All M target blocks in one predictor call: stack them along the batch axis.
        pred = self.predictor(
            ctx.repeat(m, 1, 1),
            centres[:, ctx_idx].repeat(m, 1, 1),
            centres[:, tgt_idx].transpose(0, 1).reshape(m * b, k, 3),
        )
        target = target_all[:, tgt_idx].transpose(0, 1).reshape(m * b, k, -1)
        loss = F.smooth_l1_loss(pred, target, beta=self.cfg.loss_beta)
        metrics = {
            "pred_std": pred.detach().std(dim=1).mean(),
            "target_std": target.std(dim=1).mean(),
            "context_tokens": torch.tensor(float(ctx_idx.numel())),
        }
        return loss, metrics
