"""The point-patch transformer (Point-JEPA / Point-MAE ViT): tokenizer -> pos-MLP -> blocks.

This is the teacher architecture and the backbone every evaluation protocol consumes. timm-shaped:
``forward_features`` gives the final-normed tokens, ``forward_intermediates`` the pre-norm
outputs of chosen blocks, ``forward_head`` the pooled [max, mean] vector (Point-JEPA's pooling).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foundry3d.models.encoder import TransformerEncoder
from foundry3d.models.tokenizer import PointTokenizer, PositionalEmbedding


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
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        for k in ("num_points", "num_groups", "group_size", "dim", "num_heads"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.depth < 0:
            raise ValueError(f"depth must be >= 0, got {self.depth}")
        if self.group_size > self.num_points:
            raise ValueError(f"group_size={self.group_size} exceeds num_points={self.num_points}")


def check_cloud(points: Tensor, min_points: int, name: str = "points") -> Tensor:
    """Validate a batch of clouds (B, N, 3): shape, floating dtype, finiteness, enough points."""
    if not isinstance(points, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, N, 3), got {type(points).__name__}")
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (B, N, 3), got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {points.dtype}")
    if points.shape[1] < min_points:
        raise ValueError(
            f"{name} has {points.shape[1]} points per cloud, fewer than the {min_points} the model needs "
            f"(group size / number of groups)"
        )
    if not (torch.jit.is_tracing() or torch.compiler.is_exporting()) and not bool(torch.isfinite(points).all()):
        bad = (~torch.isfinite(points)).any(-1).any(-1).nonzero().flatten().tolist()
        raise ValueError(f"{name} contains NaN or inf values (clouds {bad[:10]} of the batch)")
    return points


class PointTransformer(nn.Module):
    """Point-JEPA-style ViT backbone. Output: c = num_groups tokens of width ``dim``."""

    kind = "backbone"

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.tokenizer = PointTokenizer(
            cfg.num_groups,
            cfg.group_size,
            cfg.tokenizer_widths,
            cfg.dim,
            cfg.tokenizer_stage_bias,
            cfg.fps_start,
        )
        self.pos_embed = PositionalEmbedding(cfg.dim, cfg.pos_hidden)
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
        self.apply(_init_weights)

    @property
    def dim(self) -> int:
        return self.cfg.dim

    @property
    def num_features(self) -> int:
        return 2 * self.cfg.dim

    @property
    def num_blocks(self) -> int:
        return len(self.encoder.blocks)

    def groups_for(self, num_points: int) -> int:
        """Number of groups for a cloud of ``num_points``: the variant's ratio (64 per 1024)."""
        return max(1, round(num_points * self.cfg.num_groups / self.cfg.num_points))

    def tokenize(
        self,
        points: Tensor,
        num_groups: int | None = None,
        fps_start: int | str | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Tokens (B, G, D) before positional encoding, centres (B, G, 3), patch indices (B, G, K)."""
        g = num_groups or self.cfg.num_groups
        check_cloud(points, max(g, self.cfg.group_size))
        return self.tokenizer(points.to(self.pos_embed[0].weight.dtype), g, fps_start, generator)

    def forward_intermediates(
        self,
        points: Tensor,
        indices: list[int] | int | None = None,
        norm: bool = False,
        num_groups: int | None = None,
    ) -> dict[str, Tensor | list[Tensor]]:
        """Final tokens plus the outputs of blocks ``indices`` (before the final norm).

        ``indices`` may be negative (-1 = last block) or an int n (the last n blocks). With
        ``norm=True`` each intermediate goes through a parameter-free layer_norm, the
        Point-JEPA segmentation convention.
        """
        idx = resolve_indices(indices, len(self.encoder.blocks))
        tokens, centres, _ = self.tokenize(points, num_groups)
        out = self.forward_tokens(tokens, centres, indices=idx)
        if norm:
            out["intermediates"] = [F.layer_norm(h, h.shape[-1:]) for h in out["intermediates"]]
        return out

    def forward_tokens(
        self, tokens: Tensor, centres: Tensor, indices: list[int] | None = None
    ) -> dict[str, Tensor | list[Tensor]]:
        """Everything after the tokenizer (lets models that share a tokenizer share its work)."""
        out, hidden = self.encoder(tokens, self.pos_embed(centres), indices=indices)
        res: dict[str, Tensor | list[Tensor]] = {"tokens": out, "centers": centres}
        if indices is not None:
            order = {b: i for i, b in enumerate(sorted(set(indices)))}
            res["intermediates"] = [hidden[order[b]] for b in indices]
        return res

    def forward_features(self, points: Tensor, num_groups: int | None = None) -> dict[str, Tensor]:
        """Final-normed tokens (B, c, D) and their centres (B, c, 3)."""
        tokens, centres, _ = self.tokenize(points, num_groups)
        return self.forward_tokens(tokens, centres)  # type: ignore[return-value]

    def forward_head(self, features: dict[str, Tensor] | Tensor) -> Tensor:
        """Pooled global feature: concat[max, mean] over tokens (B, 2D)."""
        tokens = features["tokens"] if isinstance(features, dict) else features
        return pool_tokens(tokens)

    def forward(self, points: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(points))

    def config_dict(self) -> dict:
        from foundry3d.config import to_dict

        return to_dict(self.cfg)


def pool_tokens(tokens: Tensor, mask: Tensor | None = None) -> Tensor:
    """concat[max, mean] over the token axis, ignoring tokens where ``mask`` is False."""
    if mask is None:
        return torch.cat([tokens.amax(1), tokens.mean(1)], dim=-1)
    m = mask.unsqueeze(-1).to(tokens.dtype)
    mx = tokens.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
    mean = (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)
    return torch.cat([mx, mean], dim=-1)


def resolve_indices(indices: list[int] | int | None, depth: int) -> list[int]:
    """Block indices as non-negative ints; an int n means the last n blocks, None the last one."""
    if indices is None:
        return [depth - 1]
    if isinstance(indices, int):
        if not 1 <= indices <= depth:
            raise ValueError(f"cannot take the last {indices} blocks of a {depth}-block encoder")
        return list(range(depth - indices, depth))
    out = []
    for i in indices:
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise ValueError(f"block index {i} is out of range for a {depth}-block encoder")
        out.append(j)
    return out


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def backbone_from_config(cfg: dict | BackboneConfig) -> PointTransformer:
    from foundry3d.config import from_dict

    c = cfg if isinstance(cfg, BackboneConfig) else from_dict(BackboneConfig, cfg)
    return PointTransformer(dataclasses.replace(c))
