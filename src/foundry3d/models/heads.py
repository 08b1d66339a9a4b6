"""Task heads on top of any backbone's token features (teacher, student or baseline)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from typing_extensions import override

from foundry3d.models.base import PointModel
from foundry3d.ops import fast
from foundry3d.ops.knn import knn


class ClassificationHead(nn.Module):
    """Point-JEPA's head: pooled [max, mean] (2D) -> 256 -> 256 -> classes, BN + ReLU + dropout."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 256, dropout: float = 0.5) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    @override
    def forward(self, pooled: Tensor) -> Tensor:
        return self.mlp(pooled)


def interpolate(features: Tensor, idx: Tensor, weight: Tensor) -> Tensor:
    """3-NN inverse-distance interpolation: token features (B, G, D) at points given by (B, N, 3)
    neighbour indices and normalised weights -> (B, N, D) (PointNet++ feature propagation)."""
    b, n, k = idx.shape
    d = features.shape[-1]
    picked = torch.gather(features, 1, idx.reshape(b, n * k, 1).expand(-1, -1, d)).reshape(b, n, k, d)
    return (picked * weight.unsqueeze(-1)).sum(2)


def three_nn(points: Tensor, centres: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Indices (B, N, 3) of each point's 3 nearest centres and weights 1/(d^2+eps), normalised."""
    big = max(points.shape[1], centres.shape[1]) >= fast.FAST_MIN_POINTS
    idx, d2 = fast.knn_fast(points, centres, 3) if big and fast.use_fast(points) else knn(points, centres, 3)
    w = 1.0 / (d2 + eps)
    return idx, w / w.sum(-1, keepdim=True)


class PartSegHead(nn.Module):
    """Per-point part logits from token features propagated to the points.

    Point features: 3-NN interpolated token features + xyz -> MLP. Global context: [max, mean] of
    the tokens and a category embedding, added to every point. Output: logits over all parts (the
    protocol restricts the argmax to the shape's category parts).
    """

    def __init__(self, dim: int, num_categories: int, num_parts: int, hidden: int = 128, cat_dim: int = 32) -> None:
        super().__init__()
        self.cat_embed = nn.Sequential(
            nn.Linear(num_categories, cat_dim, bias=False), nn.BatchNorm1d(cat_dim), nn.LeakyReLU(0.2)
        )
        self.global_proj = nn.Linear(2 * dim + cat_dim, hidden)
        self.point_proj = nn.Linear(dim + 3, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(
            nn.GELU(), nn.Dropout(0.2), nn.Linear(hidden, hidden // 2), nn.GELU(), nn.Linear(hidden // 2, num_parts)
        )
        self.num_categories = num_categories

    @override
    def forward(self, tokens: Tensor, idx: Tensor, weight: Tensor, xyz: Tensor, category: Tensor) -> Tensor:
        onehot = nn.functional.one_hot(category, self.num_categories).to(tokens.dtype)
        glob = self.global_proj(torch.cat([tokens.amax(1), tokens.mean(1), self.cat_embed(onehot)], -1))
        point = self.point_proj(torch.cat([interpolate(tokens, idx, weight), xyz], -1))
        return self.mlp(self.norm(point + glob.unsqueeze(1)))


class Classifier(nn.Module):
    """Backbone + :class:`ClassificationHead` on its pooled tokens (fine-tuning, expert teachers)."""

    def __init__(self, backbone: PointModel, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = ClassificationHead(backbone.num_features, num_classes)

    def logits(self, points: Tensor) -> Tensor:
        """Class scores of clouds (B, N, 3) -> (B, classes)."""
        return self.head(self.backbone.forward_head(self.backbone.forward_features(points)))


class Segmenter(nn.Module):
    """Backbone + :class:`PartSegHead` on its layer-normed output tokens (fine-tuned segmentation)."""

    def __init__(self, backbone: PointModel, num_categories: int, num_parts: int, hidden: int = 128) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = PartSegHead(backbone.num_features // 2, num_categories, num_parts, hidden)

    def logits(self, points: Tensor, category: Tensor, num_groups: int | None = None) -> Tensor:
        """Per-point part scores of clouds (B, N, 3) -> (B, N, parts), tokens propagated to every point."""
        out = self.backbone.forward_features(points, num_groups or self.backbone.groups_for(points.shape[1]))
        tokens = nn.functional.layer_norm(out["tokens"], out["tokens"].shape[-1:])
        idx, w = three_nn(points, out["centres"])
        return self.head(tokens, idx, w, points, category)
