"""Pre-norm transformer blocks with the positional embedding added before every block.

Key names follow Point-JEPA/Point-MAE (``blocks.i.norm1``, ``attn.qkv``, ``attn.proj``,
``norm2``, ``mlp.fc1``, ``mlp.fc2``, final ``norm``) so official weights map one to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from foundry3d.errors import InputError


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    @override
    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    """The transformer block's feed-forward layer (Linear, GELU, Linear), named as in timm so official weights
    map one to one."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    @override
    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention; ``mask`` (B, N) marks valid tokens (False = padding)."""

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise InputError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # explicit: softmax(q k^T) v with the N x N matrix materialised, as the official Point-JEPA /
        # Point-MAE code does (what runs out of memory on large scenes); default: PyTorch's SDPA kernel.
        self.explicit = False

    @override
    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]
        drop = self.attn_drop if self.training else 0.0
        if self.explicit:
            scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
            if attn_mask is not None:
                scores = (
                    scores.masked_fill(~attn_mask, float("-inf"))
                    if attn_mask.dtype == torch.bool
                    else scores + attn_mask
                )
            x = F.dropout(scores.softmax(-1), drop) @ v
        else:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class Block(nn.Module):
    """A pre-norm ViT block (attention, MLP, layer scale and drop path), the same as the official Point-MAE /
    Point-JEPA block."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path)

    @override
    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TransformerEncoder(nn.Module):
    """Blocks + final LayerNorm. ``pos`` is added to the residual stream before every block."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        eps: float = 1e-5,
        pos_every_layer: bool = True,
    ) -> None:
        super().__init__()
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist() if depth > 0 else []
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, r, eps) for r in rates
        )
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.pos_every_layer = pos_every_layer

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        mask: Tensor | None = None,
        indices: list[int] | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """Returns the final-normed output and the pre-norm outputs of blocks in ``indices``."""
        x, hidden = run_blocks(self.blocks, x, pos, mask, indices, self.pos_every_layer)
        return self.norm(x), hidden


def run_blocks(
    blocks: nn.ModuleList,
    x: Tensor,
    pos: Tensor,
    mask: Tensor | None = None,
    indices: list[int] | None = None,
    pos_every_layer: bool = True,
) -> tuple[Tensor, list[Tensor]]:
    """The one encoder loop (teacher, students, predictor): ``pos`` is added before every block
    (Point-JEPA) or once before the first; returns the last output and those of ``indices``."""
    hidden: list[Tensor] = []
    want = set(indices or [])
    if not pos_every_layer:
        x = x + pos
    for i, blk in enumerate(blocks):
        if pos_every_layer:
            x = x + pos
        x = blk(x, mask)
        if i in want:
            hidden.append(x)
    return x, hidden
