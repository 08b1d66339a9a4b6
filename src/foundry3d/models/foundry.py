"""Foundry student (Foundation Model Distillation, arXiv 2511.20721), read top to bottom.

    points ──tokenizer──> T (B, c, d), centres ──pos-MLP──> P
      │  gate (optional): pi = sigmoid(MLP(T)); tokens with pi > r are compressed, the rest bypass
      ▼
    DSO   logits = sim(q(S), k(T)) (B, c, s) on tokens *before* positional encoding;
          CAM = one-hot argmax over the s SuperTokens (straight-through Gumbel-softmax in training)
          S_in = CAM^T v(T) / count      (an empty SuperToken falls back to its learnable vector)
          P_s  = CAM^T P / count         (SuperToken position = mean of its members' embeddings)
      ▼
    encoder: L blocks copied from the teacher, run on [S_in ; bypass tokens] only
      ▼
    CAU   routed = CAM S_out (+ the encoder output of each bypass token)
          Y_hat = routed + MLP(LN(routed + T + P))   -> (B, c, d_teacher)

The student keeps its own (copied) tokenizer and positional MLP: it runs without the teacher.
Merges are one-hot matmuls and un-merges gathers-by-matmul (no scatter_reduce), so the model
exports to ONNX.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foundry3d.models.backbone import BackboneConfig, PointTransformer, check_cloud, resolve_indices
from foundry3d.models.checkpoint import register_kind
from foundry3d.models.encoder import Block
from foundry3d.models.tokenizer import PointTokenizer, PositionalEmbedding


@dataclass
class FoundryConfig:
    """Architecture of a Foundry student. Stored in every student checkpoint."""

    teacher: dict = field(default_factory=dict)  # the teacher's BackboneConfig (tokenizer + blocks are copied)
    teacher_name: str = ""
    teacher_hash: str = ""
    supertokens: int = 16
    blocks: list[int] | None = None  # teacher blocks copied into the encoder (None: every other block)
    similarity: Literal["cosine", "dot"] = "cosine"  # cosine: normalised q, k with a learned temperature
    centre_keys: bool = True  # keys from tokens minus their cloud's mean token: assign by within-cloud content
    # SuperToken position: mean of the members' positional embeddings (default: the same linear
    # average as the SuperToken itself, so the encoder sees the average of its members' inputs), or
    # the embedding of the members' mean centre. Empty SuperTokens get position 0.
    supertoken_pos: Literal["mean_pe", "pe_of_mean"] = "mean_pe"
    cau_hidden_ratio: float = 2.0
    cau_skip: bool = True  # Y_hat = routed + MLP(...); False: Y_hat = MLP(...) as in the paper's formula
    gate: bool = False
    gate_hidden: int = 64
    gate_threshold: float = 0.5  # default r; change it at run time without retraining

    def validate(self) -> None:
        if not self.teacher:
            raise ValueError("FoundryConfig.teacher must hold the teacher's backbone config")
        if self.supertokens < 1:
            raise ValueError(f"supertokens must be >= 1, got {self.supertokens}")
        if not 0.0 <= self.gate_threshold <= 1.0:
            raise ValueError(f"gate threshold r must be in [0, 1], got {self.gate_threshold}")

    @property
    def teacher_config(self) -> BackboneConfig:
        from foundry3d.config import from_dict

        return from_dict(BackboneConfig, self.teacher)

    def student_blocks(self) -> list[int]:
        depth = self.teacher_config.depth
        blocks = list(range(0, depth, 2)) if self.blocks is None else list(self.blocks)
        bad = [b for b in blocks if not 0 <= b < depth]
        if bad:
            raise ValueError(f"student blocks {bad} do not exist in the {depth}-block teacher")
        return blocks


class DSO(nn.Module):
    """Dynamic SuperToken Optimization: hard-assign c tokens to s learnable SuperTokens, average each bin."""

    def __init__(self, dim: int, supertokens: int, similarity: str, centre_keys: bool) -> None:
        super().__init__()
        self.supertokens = nn.Parameter(torch.randn(supertokens, dim) * 0.02)  # the learnable basis S
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))  # learned temperature (cosine)
        self.similarity = similarity
        self.centre_keys = centre_keys
        nn.init.eye_(self.q.weight)
        nn.init.eye_(self.k.weight)
        nn.init.eye_(self.v.weight)
        nn.init.zeros_(self.v.bias)

    def logits(self, tokens: Tensor, weight: Tensor) -> Tensor:
        """Token-to-SuperToken scores (B, c, s) from tokens without positional encoding."""
        if self.centre_keys:  # mean over the tokens that take part in compression
            w = weight.unsqueeze(-1)
            tokens = tokens - (tokens * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1e-6)
        q, k = self.q(self.supertokens), self.k(tokens)
        if self.similarity == "cosine":
            return F.normalize(k, dim=-1) @ F.normalize(q, dim=-1).T * self.logit_scale.exp().clamp(max=100.0)
        return k @ q.T / math.sqrt(q.shape[-1])

    def assign(self, logits: Tensor, tau: float, noise: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """(CAM, index, soft): CAM is exactly one-hot in the forward pass; in training its gradient is
        the Gumbel-softmax's (straight-through), so S, q and k learn. ``noise=False`` keeps the
        straight-through softmax gradient but routes exactly as at inference (argmax)."""
        s = logits.shape[-1]
        if self.training:
            g = -torch.log(-torch.log(torch.rand_like(logits).clamp_(1e-9, 1.0 - 1e-9))) if noise else 0.0
            soft = F.softmax((logits + g) / tau, dim=-1)
            index = soft.argmax(-1)
            hard = F.one_hot(index, s).to(logits.dtype)
            return hard - soft.detach() + soft, index, soft
        index = logits.argmax(-1)
        return F.one_hot(index, s).to(logits.dtype), index, F.softmax(logits, dim=-1)

    def forward(
        self, tokens: Tensor, pos: Tensor, weight: Tensor, tau: float = 1.0, noise: bool = True
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Merge: SuperTokens (B, s, d), their positions (B, s, d), CAM (B, c, s), index (B, c),
        member counts (B, s) and soft assignment (B, c, s). ``weight`` (B, c) is 1 for tokens that
        are compressed (0 for gate bypass; straight-through in training)."""
        cam, index, soft = self.assign(self.logits(tokens, weight), tau, noise)
        cam = cam * weight.unsqueeze(-1)
        count = cam.detach().sum(1)  # exact member counts (forward value of the one-hot)
        denom = count.clamp_min(1.0).unsqueeze(-1)
        merged = cam.transpose(1, 2) @ self.v(tokens) / denom
        pos_s = cam.transpose(1, 2) @ pos / denom
        empty = (count == 0).unsqueeze(-1)
        merged = torch.where(empty, self.supertokens.unsqueeze(0).expand_as(merged), merged)
        return merged, pos_s, cam, index, count, soft


class Gate(nn.Module):
    """2-layer MLP scoring each token: pi_i = P(token i should be compressed)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.constant_(self.mlp[2].bias, 2.0)  # start by compressing most tokens (pi ~ 0.88)

    def forward(self, tokens: Tensor) -> Tensor:
        return torch.sigmoid(self.mlp(tokens).squeeze(-1))


class CAU(nn.Module):
    """Cross-Attention Upsampling: route SuperTokens back to their members through the DSO
    assignment (no new attention), add the original token + position, map to the teacher width."""

    def __init__(self, dim: int, out_dim: int, hidden_ratio: float, skip: bool) -> None:
        super().__init__()
        hidden = int(dim * hidden_ratio)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.skip = skip and dim == out_dim

    def forward(self, routed: Tensor, tokens: Tensor, pos: Tensor) -> Tensor:
        out = self.mlp(self.norm(routed + tokens + pos))
        return routed + out if self.skip else out


class FoundryStudent(nn.Module):
    """Tokenizer + DSO + light encoder + CAU (+ gate): the teacher's tokens without the teacher."""

    kind = "foundry_student"

    def __init__(self, cfg: FoundryConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        t = cfg.teacher_config
        self.tcfg = t
        self.tokenizer = PointTokenizer(
            t.num_groups, t.group_size, t.tokenizer_widths, t.dim, t.tokenizer_stage_bias, t.fps_start
        )
        self.pos_embed = PositionalEmbedding(t.dim, t.pos_hidden)
        self.gate = Gate(t.dim, cfg.gate_hidden) if cfg.gate else None
        self.dso = DSO(t.dim, cfg.supertokens, cfg.similarity, cfg.centre_keys)
        self.blocks = nn.ModuleList(
            Block(t.dim, t.num_heads, t.mlp_ratio, t.qkv_bias, eps=t.norm_eps) for _ in cfg.student_blocks()
        )
        self.norm = nn.LayerNorm(t.dim, eps=t.norm_eps)
        self.cau = CAU(t.dim, t.dim, cfg.cau_hidden_ratio, cfg.cau_skip)

    # ------------------------------------------------------------------ construction from a teacher
    @classmethod
    def from_teacher(cls, teacher: PointTransformer, **options) -> FoundryStudent:
        """A student whose tokenizer, positional MLP, blocks and final norm are copies of the teacher's."""
        from foundry3d.models.checkpoint import weights_hash

        cfg = FoundryConfig(
            teacher=teacher.config_dict(),
            teacher_name=teacher.cfg.name,
            teacher_hash=getattr(teacher, "release_hash", None) or weights_hash(teacher.state_dict()),
            **options,
        )
        student = cls(cfg)
        student.tokenizer.load_state_dict(teacher.tokenizer.state_dict())
        student.pos_embed.load_state_dict(teacher.pos_embed.state_dict())
        for mine, b in zip(student.blocks, cfg.student_blocks()):
            mine.load_state_dict(teacher.encoder.blocks[b].state_dict())
        student.norm.load_state_dict(teacher.encoder.norm.state_dict())
        return student

    @property
    def dim(self) -> int:
        return self.tcfg.dim

    @property
    def num_features(self) -> int:
        return 2 * self.tcfg.dim

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def groups_for(self, num_points: int) -> int:
        """Groups for a cloud of ``num_points``, at the teacher's ratio (64 per 1024)."""
        return max(1, round(num_points * self.tcfg.num_groups / self.tcfg.num_points))

    def config_dict(self) -> dict:
        from foundry3d.config import to_dict

        return to_dict(self.cfg)

    def tokenize(self, points: Tensor, num_groups: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Tokens (B, c, d) before positional encoding, centres (B, c, 3), patch indices (B, c, k)."""
        g = num_groups or self.tcfg.num_groups
        check_cloud(points, max(g, self.tcfg.group_size))
        return self.tokenizer(points.to(self.pos_embed[0].weight.dtype), g)

    # ---------------------------------------------------------------------------------- the forward
    def forward_tokens(
        self,
        tokens: Tensor,
        centres: Tensor,
        r: float | None = None,
        keep: int | None = None,
        tau: float = 1.0,
        indices: list[int] | None = None,
        noise: bool = True,
    ) -> dict[str, Tensor | list[Tensor]]:
        """Everything after the tokenizer. ``r``: gate threshold (tokens with pi > r are compressed);
        ``keep``: instead of a threshold, let the ``keep`` lowest-scoring tokens bypass (compact)."""
        b, c, _ = tokens.shape
        s = self.cfg.supertokens
        if r is None and keep is None and self.runtime:
            r, keep = self.runtime.get("r"), self.runtime.get("keep")
        if s > c:
            raise ValueError(f"supertokens={s} exceeds the {c} tokens of the input (use more groups or fewer s)")
        pos = self.pos_embed(centres)

        # 1. gate: which tokens are compressed (weight 1) and which bypass DSO (weight 0)
        pi = self.gate(tokens) if self.gate is not None else None
        bypass_idx = None
        if pi is None:
            weight = tokens.new_ones(b, c)
        elif keep is not None:
            if not 0 <= keep <= c:
                raise ValueError(f"keep must be in [0, {c}], got {keep}")
            bypass_idx = (-pi).topk(keep, dim=1).indices if keep else None  # the lowest-pi tokens bypass
            weight = torch.ones_like(pi)
            if bypass_idx is not None:
                weight = weight - _one_hot_rows(bypass_idx, c).sum(1)
        else:
            r = self.cfg.gate_threshold if r is None else r
            if not 0.0 <= r <= 1.0:
                raise ValueError(f"gate threshold r must be in [0, 1], got {r}")
            hard = (pi > r).to(tokens.dtype)
            weight = hard - pi.detach() + pi if self.training else hard

        # 2. DSO: compress the weighted tokens into s SuperTokens
        merged, pos_s, cam, index, count, soft = self.dso(tokens, pos, weight, tau, noise)
        if self.cfg.supertoken_pos == "pe_of_mean":  # position = embedding of the members' mean centre
            mean_centre = cam.transpose(1, 2) @ centres / count.clamp_min(1.0).unsqueeze(-1)
            pos_s = torch.where((count > 0).unsqueeze(-1), self.pos_embed(mean_centre), torch.zeros_like(pos_s))

        # 3. encoder on the SuperTokens (plus bypass tokens when gated)
        x, xpos, mask = merged, pos_s, None
        if pi is not None and bypass_idx is not None:  # compact top-k bypass
            x = torch.cat([merged, _gather(tokens, bypass_idx)], 1)
            xpos = torch.cat([pos_s, _gather(pos, bypass_idx)], 1)
        elif pi is not None:  # fixed-size: every token has a bypass slot, masked when compressed
            x, xpos = torch.cat([merged, tokens], 1), torch.cat([pos_s, pos], 1)
            mask = torch.cat([torch.ones_like(count, dtype=torch.bool), weight.detach() < 0.5], 1)
        hidden = []
        want = set(indices or [])
        for i, blk in enumerate(self.blocks):
            x = blk(x + xpos, mask)
            if i in want:
                hidden.append(x)
        x = self.norm(x)

        # 4. CAU: route back to the c token positions, add the token residual, map to the teacher width
        def route(z: Tensor) -> Tensor:
            out = cam @ z[:, :s]
            if pi is not None and bypass_idx is not None:
                out = out + _one_hot_rows(bypass_idx, c).transpose(1, 2) @ z[:, s:]
            elif pi is not None:
                out = out + (1.0 - weight).unsqueeze(-1) * z[:, s:]
            return out

        routed = route(x)
        y = self.cau(routed, tokens, pos)
        assignment = torch.where(weight.detach() > 0.5, index, torch.full_like(index, -1))
        out: dict[str, Tensor | list[Tensor]] = {
            "tokens": y,
            "centers": centres,
            "assignment": assignment,  # SuperToken of each token, -1 where the gate bypassed it
            "occupancy": (count > 0).sum(1),  # non-empty SuperTokens per cloud
            "counts": count,
            "soft_assignment": soft,
            "compressed": weight.detach() > 0.5,
        }
        if pi is not None:
            out["gate_scores"] = pi
        if indices is not None:
            order = {blk: i for i, blk in enumerate(sorted(want))}
            out["intermediates"] = [route(hidden[order[i]]) + tokens + pos for i in indices]
        return out

    def forward_features(
        self, points: Tensor, num_groups: int | None = None, r: float | None = None, keep: int | None = None
    ) -> dict[str, Tensor]:
        """Y_hat (B, c, d_teacher), centres (B, c, 3), the assignment (B, c) and SuperToken occupancy."""
        tokens, centres, _ = self.tokenize(points, num_groups)
        return self.forward_tokens(tokens, centres, r=r, keep=keep)  # type: ignore[return-value]

    runtime: dict | None = None  # default gate setting {"r": ...} or {"keep": ...} (e.g. from a model spec)

    def forward_intermediates(
        self,
        points: Tensor,
        indices: list[int] | int | None = None,
        norm: bool = False,
        num_groups: int | None = None,
        r: float | None = None,
    ) -> dict[str, Tensor | list[Tensor]]:
        """Per-block encoder outputs routed back to the c tokens (+ token residual), for dense heads."""
        idx = resolve_indices(indices, len(self.blocks))
        tokens, centres, _ = self.tokenize(points, num_groups)
        out = self.forward_tokens(tokens, centres, r=r, indices=idx)
        if norm:
            out["intermediates"] = [F.layer_norm(h, h.shape[-1:]) for h in out["intermediates"]]
        return out

    def forward_head(self, features: dict[str, Tensor] | Tensor) -> Tensor:
        from foundry3d.models.backbone import pool_tokens

        return pool_tokens(features["tokens"] if isinstance(features, dict) else features)

    def forward(self, points: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(points))


def _one_hot_rows(idx: Tensor, n: int) -> Tensor:
    """(B, k) indices -> (B, k, n) one-hot rows (merge/unmerge by matmul, exportable)."""
    return F.one_hot(idx, n).to(torch.get_default_dtype())


def _gather(x: Tensor, idx: Tensor) -> Tensor:
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def student_from_config(cfg: dict | FoundryConfig) -> FoundryStudent:
    from foundry3d.config import from_dict

    c = cfg if isinstance(cfg, FoundryConfig) else from_dict(FoundryConfig, cfg)
    return FoundryStudent(copy.deepcopy(c))


register_kind("foundry_student", student_from_config)
