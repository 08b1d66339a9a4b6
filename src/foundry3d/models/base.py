"""What every point-patch model shares: a tokenizer, a positional MLP and the timm-shaped API.

A teacher backbone, each student kind and the floor differ only in ``forward_tokens`` (what
happens after the tokenizer). Everything else lives here once: input checks, grouping ratio,
``forward_features`` / ``forward_head`` / ``forward``, pooled width and the stored config.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from foundry3d.config import to_dict
from foundry3d.errors import InputError
from foundry3d.models.tokenizer import PointTokenizer, PositionalEmbedding


class TokenOutput(TypedDict, total=False):
    """What ``forward_tokens`` / ``forward_features`` of every model and student kind return: one spelling
    for every key (the ONNX outputs, ``embed`` files and caches use the same names)."""

    tokens: Tensor  # (B, c, D) output tokens
    centres: Tensor  # (B, c, 3) patch centres, in the model's normalised units
    assignment: Tensor  # (B, c) SuperToken of each token (-1: bypassed by the gate)
    occupancy: Tensor  # (B,) non-empty SuperTokens per cloud
    counts: Tensor  # (B, s) members of each SuperToken
    soft_assignment: Tensor  # (B, c, s) the assignment's softmax (its training gradient)
    compressed: Tensor  # (B, c) whether a token went through a SuperToken
    gate_scores: Tensor  # (B, c) the gate's pi (gated students)
    merged_tokens: Tensor  # (B,) tokens left after merging (ToMe kinds)
    cls: Tensor  # (B, D) the prefix (class) token's output, for backbones that have one (Point-BERT, ACT)
    intermediates: list[Tensor]  # one (B, c, D) per requested block


def check_cloud(points: Tensor, min_points: int, name: str = "points") -> Tensor:
    """Validate a batch of clouds (B, N, 3): shape, floating dtype, finiteness, enough points."""
    if not isinstance(points, Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape (B, N, 3), got {type(points).__name__}")
    if points.dim() != 3 or points.shape[-1] != 3:
        raise InputError(f"{name} must have shape (B, N, 3), got {tuple(points.shape)}")
    if points.shape[0] < 1:
        raise InputError(f"{name} is an empty batch (0 clouds)")
    if not points.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got dtype {points.dtype}")
    if points.shape[1] < min_points:
        raise InputError(
            f"{name} has {points.shape[1]} points per cloud, fewer than the {min_points} the model needs "
            f"(group size / number of groups)"
        )
    if not (torch.jit.is_tracing() or torch.compiler.is_exporting()):
        if not bool(torch.isfinite(points).all()):
            bad = (~torch.isfinite(points)).any(-1).any(-1).nonzero().flatten().tolist()
            raise InputError(f"{name} contains NaN or inf values (clouds {bad[:10]} of the batch)")
        big = float(points.detach().abs().amax()) if points.numel() else 0.0
        if big > 1e15:  # squared distances in FPS/kNN would overflow float32
            raise InputError(
                f"{name} has coordinates up to {big:.3g}: beyond 1e15 squared distances overflow; "
                f"centre and rescale the cloud first"
            )
        if big > UNNORMALIZED:
            warnings.warn(
                f"{name} has coordinates up to {big:.3g}, but the model expects clouds centred and scaled into "
                "the unit sphere: use model.embed(points) (which normalises) or normalize_cloud() first",
                UnnormalizedInputWarning,
                stacklevel=4,
            )
    return points


class UnnormalizedInputWarning(UserWarning):
    """Points far outside the unit sphere reached a model that expects normalised clouds."""


def normalize_cloud(points: np.ndarray, chunk: int = 1_000_000) -> tuple[np.ndarray, np.ndarray, float]:
    """``points`` (N, 3) centred on their mean and scaled into the unit sphere (float32), with the centre
    and scale: the one normalisation of ``model.embed``, ``foundry3d embed`` and (in float32 arithmetic)
    the ONNX graph exported with ``normalize=True``. Sums run in float64 (georeferenced or huge
    coordinates overflow float32) chunk by chunk, so memory stays a small multiple of the input."""
    centre = points.mean(0, dtype=np.float64)
    scale = 0.0
    for s in range(0, len(points), chunk):
        d = points[s : s + chunk].astype(np.float64) - centre
        scale = max(scale, float(np.sqrt((d * d).sum(1).max())))
    scale = scale or 1.0
    x = np.empty(points.shape, np.float32)
    for s in range(0, len(points), chunk):
        x[s : s + chunk] = (points[s : s + chunk].astype(np.float64) - centre) / scale
    return x, centre, scale


UNNORMALIZED = 3.0  # a coordinate beyond this (unit-sphere clouds, augmented up to ~1.5) means raw units


def pool_tokens(tokens: Tensor) -> Tensor:
    """concat[max, mean] over the token axis (every model's outputs hold one token per patch, none padding)."""
    return torch.cat([tokens.amax(1), tokens.mean(1)], dim=-1)


def resolve_indices(indices: list[int] | int | None, depth: int) -> list[int]:
    """Block indices as non-negative ints, as timm reads them: an int n means the last n blocks, None every
    block, negative indices count from the end."""
    if indices is None:
        return list(range(depth))
    if isinstance(indices, int):
        if not 1 <= indices <= depth:
            raise InputError(f"cannot take the last {indices} blocks of a {depth}-block encoder")
        return list(range(depth - indices, depth))
    out = []
    for i in indices:
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise InputError(f"block index {i} is out of range for a {depth}-block encoder")
        out.append(j)
    return out


class PointModel(nn.Module):
    """Tokenizer + positional MLP of a backbone config ``tcfg``; subclasses add ``forward_tokens``."""

    kind = "point_model"

    def __init__(self, tcfg: Any) -> None:
        super().__init__()
        self.tcfg = tcfg
        self.tokenizer = PointTokenizer(
            tcfg.num_groups,
            tcfg.group_size,
            tcfg.tokenizer_widths,
            tcfg.dim,
            tcfg.tokenizer_stage_bias,
            tcfg.fps_start,
            getattr(tcfg, "tokenizer_channels", None),
        )
        self.pos_embed = PositionalEmbedding(tcfg.dim, tcfg.pos_hidden)

    @property
    def dim(self) -> int:
        """Token width (what a head or a student that matches this model must take)."""
        return self.tcfg.dim

    @property
    def num_features(self) -> int:
        """Width of the pooled features ``forward_head(pre_logits=True)`` returns ([max, mean] of the tokens)."""
        return 2 * self.tcfg.dim

    def groups_for(self, num_points: int) -> int:
        """Groups for a cloud of ``num_points`` at the variant's ratio (64 per 1,024 points), at least 3 (the
        per-point features interpolate from the 3 nearest patch centres): the one patch rule of the API,
        ``embed`` and the ONNX export."""
        return max(min(3, num_points), round(num_points * self.tcfg.num_groups / self.tcfg.num_points))

    def tokenize(
        self,
        points: Tensor,
        num_groups: int | None = None,
        fps_start: int | str | Tensor | None = None,
        generator: torch.Generator | None = None,
        centres: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Tokens (B, c, D) before positional encoding, centres (B, c, 3), patch indices (B, c, K); with
        ``centres`` given (another model's, B x c x 3), the patches are grouped around those, in their order."""
        g = num_groups or self.tcfg.num_groups if centres is None else centres.shape[1]
        check_cloud(points, max(g, self.tcfg.group_size))
        dtype = next(self.pos_embed.parameters()).dtype
        return self.tokenizer(points.to(dtype), g, fps_start, generator, centres)

    # everything after the tokenizer: each model defines it with its own keyword options (r, keep, tau, indices ...)
    forward_tokens: Callable[..., TokenOutput]

    def forward_features(self, points: Tensor, num_groups: int | None = None, **kwargs: Any) -> TokenOutput:
        """Output tokens (B, c, D) and centres (B, c, 3) (plus what the model adds)."""
        tokens, centres, _ = self.tokenize(points, num_groups)
        return self.forward_tokens(tokens, centres, **kwargs)

    @property
    def num_blocks(self) -> int:
        """How many blocks ``forward_intermediates`` can return (1 for a model without blocks)."""
        return 1

    def forward_intermediates(
        self,
        points: Tensor,
        indices: list[int] | int | None = None,
        norm: bool = False,
        num_groups: int | None = None,
        **kwargs: Any,
    ) -> TokenOutput:
        """Final tokens plus the outputs of blocks ``indices`` at every token position (a backbone's
        blocks before its final norm; a student's blocks routed back to the c tokens + residual).

        ``indices`` may be negative (-1 = last block) or an int n (the last n blocks). With
        ``norm=True`` each intermediate goes through a parameter-free layer_norm, the Point-JEPA
        segmentation convention.
        """
        idx = resolve_indices(indices, self.num_blocks)
        tokens, centres, _ = self.tokenize(points, num_groups)
        out = self.forward_tokens(tokens, centres, indices=idx, **kwargs)
        if norm:
            out["intermediates"] = [F.layer_norm(h, h.shape[-1:]) for h in out["intermediates"]]
        return out

    num_classes = 0  # timm: no classifier; forward_head returns the pooled features

    def forward_head(self, features: TokenOutput | dict[str, Tensor] | Tensor, pre_logits: bool = False) -> Tensor:
        """Pooled global feature: concat[max, mean] over tokens (B, 2D) (Point-JEPA's pooling). As in timm for a
        model without a classifier (``num_classes == 0``), the head is the identity, so ``pre_logits`` changes
        nothing; task heads (:mod:`foundry3d.models.heads`) put a classifier on top."""
        tokens = features["tokens"] if isinstance(features, dict) else features
        return pool_tokens(tokens)

    @override
    def forward(self, points: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(points))

    @torch.no_grad()
    def embed(self, points: np.ndarray | Tensor, groups: int | None = None) -> Tensor:
        """Global embedding of a cloud in any units: (N, 3) -> (2D,), or a batch (B, N, 3) -> (B, 2D).

        Each cloud is centred and scaled into the unit sphere (:func:`normalize_cloud`) and split into
        ``groups_for(N)`` patches (or ``groups``): the same rule as ``foundry3d embed`` and the ONNX graph
        exported for N points, so the three give the same embedding. Runs in eval mode.
        """
        arr = points.detach().cpu().numpy() if isinstance(points, Tensor) else np.asarray(points)
        if arr.dtype.kind not in "fiu" or arr.ndim not in (2, 3) or arr.shape[-1] != 3:
            raise InputError(f"points must be real (N, 3) or (B, N, 3) coordinates, got {arr.dtype} {arr.shape}")
        batch = arr if arr.ndim == 3 else arr[None]
        x = torch.from_numpy(np.stack([normalize_cloud(c)[0] for c in batch]))
        was = self.training
        self.eval()
        try:
            out = self.forward_head(self.forward_features(x, num_groups=groups or self.groups_for(x.shape[1])))
        finally:
            self.train(was)
        return out if arr.ndim == 3 else out[0]

    def config_dict(self) -> dict:
        """The model's resolved config as plain data (saved with every checkpoint and release)."""
        return to_dict(self.cfg)
