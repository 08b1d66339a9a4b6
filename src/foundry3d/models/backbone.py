"""The point-patch transformer (Point-JEPA / Point-MAE ViT): tokenizer -> pos-MLP -> blocks.

This is the teacher architecture and the backbone every evaluation protocol consumes. timm-shaped:
``forward_features`` gives the final-normed tokens, ``forward_intermediates`` the pre-norm
outputs of chosen blocks, ``forward_head`` the pooled [max, mean] vector (Point-JEPA's pooling).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from typing_extensions import override

from foundry3d.config import from_dict
from foundry3d.errors import ConfigError
from foundry3d.models.base import PointModel, TokenOutput, check_cloud, pool_tokens, resolve_indices
from foundry3d.models.encoder import TransformerEncoder


@dataclass
class BackboneConfig:
    """Architecture of a point-patch transformer. Stored in every checkpoint."""

    name: str = "custom"
    num_points: int = 1024  # the input size the variant is meant for (protocol default)
    num_groups: int = 64
    group_size: int = 32
    fps_start: int = 0  # fixed FPS start index: identical centres for teacher and student
    tokenizer_widths: tuple[int, int, int] = (128, 256, 512)
    tokenizer_stage_bias: bool = False  # Point-JEPA: False; Point-MAE: True
    # Point-BERT / ACT: the mini-PointNet ends at this width, then a linear map (their reduce_dim) to ``dim``
    tokenizer_channels: int | None = None
    # Point-BERT / ACT: a learned prefix token with its own position vector runs through the blocks with the
    # patch tokens (they attend to it); outputs keep the patch tokens only
    cls_token: bool = False
    pos_hidden: int = 128
    dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    qkv_bias: bool = True  # Point-JEPA: True; Point-MAE: False
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-5
    pos_every_layer: bool = True
    extra: dict = field(default_factory=dict)  # free-form provenance (source checkpoint, ...)

    def validate(self) -> None:
        """Refuse shapes no backbone can be built with (sizes below 1, a width the heads do not divide, depth < 0)."""
        for k in ("num_points", "num_groups", "group_size", "dim", "num_heads"):
            if getattr(self, k) < 1:
                raise ConfigError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.dim % self.num_heads:  # after the >= 1 checks: num_heads=0 is a setting, not a ZeroDivisionError
            raise ConfigError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.depth < 0:
            raise ConfigError(f"depth must be >= 0, got {self.depth}")
        if self.tokenizer_channels is not None and self.tokenizer_channels < 1:
            raise ConfigError(f"tokenizer_channels must be >= 1 (or null), got {self.tokenizer_channels}")
        if self.group_size > self.num_points:
            raise ConfigError(f"group_size={self.group_size} exceeds num_points={self.num_points}")


class PointTransformer(PointModel):
    """Point-JEPA-style ViT backbone. Output: c = num_groups tokens of width ``dim``."""

    kind = "backbone"

    def __init__(self, cfg: BackboneConfig) -> None:
        cfg.validate()
        super().__init__(cfg)
        self.cfg = cfg
        self.encoder = TransformerEncoder(
            cfg.dim,
            cfg.depth,
            cfg.num_heads,
            cfg.mlp_ratio,
            cfg.qkv_bias,
            cfg.drop_rate,
            cfg.attn_drop_rate,
            cfg.drop_path_rate,
            cfg.norm_eps,
            cfg.pos_every_layer,
        )
        if cfg.cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
            self.cls_pos = nn.Parameter(torch.zeros(1, 1, cfg.dim))
            nn.init.trunc_normal_(self.cls_pos, std=0.02)
        self.apply(_init_weights)

    @property
    @override
    def num_blocks(self) -> int:
        return len(self.encoder.blocks)

    def forward_tokens(self, tokens: Tensor, centres: Tensor, indices: list[int] | None = None) -> TokenOutput:
        """Everything after the tokenizer (lets models that share a tokenizer share its work)."""
        pos = self.pos_embed(centres)
        if self.cfg.cls_token:  # the prefix token takes part in attention, then leaves the outputs
            b = tokens.shape[0]
            tokens = torch.cat([self.cls_token.expand(b, -1, -1).to(tokens.dtype), tokens], 1)
            pos = torch.cat([self.cls_pos.expand(b, -1, -1).to(pos.dtype), pos], 1)
        out, hidden = self.encoder(tokens, pos, indices=indices)
        cls = None
        if self.cfg.cls_token:
            cls, out, hidden = out[:, 0], out[:, 1:], [h[:, 1:] for h in hidden]
        res: TokenOutput = {"tokens": out, "centres": centres}
        if cls is not None:
            res["cls"] = cls
        if indices is not None:
            order = {b: i for i, b in enumerate(sorted(set(indices)))}
            res["intermediates"] = [hidden[order[b]] for b in indices]
        return res


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def backbone_from_config(cfg: dict | BackboneConfig) -> PointTransformer:
    """A backbone with random weights from its (stored or given) config."""
    c = cfg if isinstance(cfg, BackboneConfig) else from_dict(BackboneConfig, cfg)
    return PointTransformer(dataclasses.replace(c))


__all__ = [
    "BackboneConfig",
    "PointTransformer",
    "backbone_from_config",
    "check_cloud",
    "pool_tokens",
    "resolve_indices",
]
