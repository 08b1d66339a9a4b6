"""Point-patch tokenizer: FPS + kNN patches embedded by a mini-PointNet, and the positional MLP.

The structure is Point-JEPA's ``PointNetSmall`` (Point-MAE's ``Encoder`` differs only in the
bias of the first layer of each stage): per-point MLP 3 -> c1 -> c2, max-pool, concatenate the
pooled vector back onto every point, MLP 2*c2 -> c3 -> dim, max-pool. The official code uses
Conv1d with kernel 1; Linear layers on channels-last tensors compute the same thing as one GEMM
(converters squeeze the kernel dimension). Layer indices 0/1/3 match the official Sequential.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from typing_extensions import override

from foundry3d.ops.group import group_points


class MiniPointNet(nn.Module):
    """Embed each patch (M, K, 3) of centred points into one token (M, dim)."""

    def __init__(self, widths: tuple[int, int, int], dim: int, stage_bias: bool = False) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.stage1 = nn.Sequential(
            nn.Linear(3, c1, bias=stage_bias), nn.BatchNorm1d(c1), nn.ReLU(inplace=True), nn.Linear(c1, c2)
        )
        self.stage2 = nn.Sequential(
            nn.Linear(2 * c2, c3, bias=stage_bias),
            nn.BatchNorm1d(c3),
            nn.ReLU(inplace=True),
            nn.Linear(c3, dim),
        )

    @staticmethod
    def _mlp(seq: nn.Sequential, x: Tensor) -> Tensor:
        # BatchNorm1d wants (N, C): flatten patches and points, normalise over both.
        m, k, _ = x.shape
        x = seq[0](x)
        x = seq[1](x.reshape(m * k, -1)).reshape(m, k, -1)
        return seq[3](seq[2](x))

    @override
    def forward(self, patches: Tensor) -> Tensor:
        # amax, not max(dim).values: the same values without the argmax indices, ~20x faster on a CPU
        # for (62, 32, 192) patches, which was a third of a small student's batch-1 latency at 1k points
        f = self._mlp(self.stage1, patches)  # (M, K, c2)
        g = f.amax(dim=1, keepdim=True).expand_as(f)
        f = self._mlp(self.stage2, torch.cat([g, f], dim=-1))  # global first, as in the official code
        return f.amax(dim=1)


class PositionalEmbedding(nn.Sequential):
    """MLP 3 -> hidden -> GELU -> dim on patch centres (added before every block)."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__(nn.Linear(3, hidden), nn.GELU(), nn.Linear(hidden, dim))


class PointTokenizer(nn.Module):
    """Cloud (B, N, 3) -> tokens (B, G, dim), centres (B, G, 3), patch indices (B, G, K)."""

    def __init__(
        self,
        num_groups: int,
        group_size: int,
        widths: tuple[int, int, int],
        dim: int,
        stage_bias: bool = False,
        fps_start: int | str = 0,
        channels: int | None = None,
    ) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.group_size = group_size
        self.fps_start = fps_start
        self.embed = MiniPointNet(widths, channels or dim, stage_bias)
        # Point-BERT / ACT: a linear map after the pooling (their reduce_dim); not foldable into the last layer,
        # which comes before the max
        self.proj = nn.Linear(channels, dim) if channels else None
        # in eval, patches are embedded this many at a time (bounded memory; outputs bit-identical for any size):
        # 256 keeps the per-point activations in cache: the fastest on fp32 and bf16 (benchmarks/tokenizer_speed.py)
        self.chunk_groups = 256

    @override
    def forward(
        self,
        points: Tensor,
        num_groups: int | None = None,
        fps_start: int | str | Tensor | None = None,
        generator: torch.Generator | None = None,
        centres: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        g = num_groups or self.num_groups if centres is None else centres.shape[1]
        patches, centres, idx = group_points(
            points,
            g,
            self.group_size,
            fps_start=self.fps_start if fps_start is None else fps_start,
            generator=generator,
            centres=centres,
        )
        b = points.shape[0]
        flat = patches.reshape(b * g, self.group_size, 3)
        if (
            self.training or torch.compiler.is_exporting() or flat.shape[0] <= self.chunk_groups
        ):  # no shape guard in export
            tokens = self.embed(flat)
        else:  # bounded memory: no per-point activation exists for all groups at once (eval BatchNorm)
            tokens = torch.cat([self.embed(c) for c in flat.split(self.chunk_groups)])
        if self.proj is not None:
            tokens = self.proj(tokens)
        return tokens.reshape(b, g, -1), centres, idx
