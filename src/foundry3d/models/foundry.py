"""Foundry student (Foundation Model Distillation, arXiv 2511.20721), read top to bottom.

    points ──tokenizer──> T (B, c, d), centres ──pos-MLP──> P
      │  gate (optional): pi = sigmoid(MLP(T)); tokens with pi > r are compressed, the rest bypass
      ▼
    DSO   logits = sim(q(S), k(T)) (B, c, s) on tokens *before* positional encoding;
          CAM = one-hot argmax over the s SuperTokens (straight-through Gumbel-softmax in training)
          S_in = CAM^T v(T) / count      (an empty SuperToken falls back to its learnable vector, or is
                                          masked out of attention with empty_bins=mask)
          P_s  = CAM^T P / count         (SuperToken position = mean of its members' embeddings)
      ▼
    encoder: L blocks copied from the teacher, run on [S_in ; bypass tokens] only
      ▼
    CAU   routed = CAM S_out (+ the encoder output of each bypass token)
          Y_hat = routed + MLP(LN(routed + T + P))   -> (B, c, d_teacher)

The student keeps its own (copied) tokenizer and positional MLP: it runs without the teacher.
Merges are one-hot matmuls and un-merges gathers-by-matmul (no scatter_reduce), so the model
exports to ONNX. The paper's two ablations are the same model with another assignment:
``kind="kmeans"`` (k-means on each cloud's tokens), ``kind="kmeans_xyz"`` (k-means on each cloud's patch
centres), ``kind="kmeans_static"`` (the nearest of s codewords fitted once on training tokens: the paper's
"static" KMeans), ``kind="fps"`` (nearest of s FPS centres) and ``kind="fps_presample"`` (only the s
FPS-picked tokens reach the encoder; every token reads back its nearest kept one);
neither has learnable SuperTokens, q or k.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from foundry3d.errors import InputError
from foundry3d.models.assign import ASSIGNMENTS, needs_centres
from foundry3d.models.base import TokenOutput
from foundry3d.models.student import CAU, FoundryConfig, Student, register_student
from foundry3d.ops.group import gather_points
from foundry3d.ops.knn import square_distance

__all__ = ["CAU", "DSO", "FoundryConfig", "FoundryStudent", "Gate"]


class DSO(nn.Module):
    """Dynamic SuperToken Optimization: hard-assign c tokens to s SuperTokens, average each bin.

    ``mode="learned"`` is Foundry's DSO (learnable SuperTokens S, q/k similarity, straight-through
    Gumbel-softmax); ``"kmeans"`` and ``"fps"`` replace the assignment by a non-learned one."""

    supertokens: nn.Parameter  # learned mode only, like q, k and logit_scale
    q: nn.Linear
    k: nn.Linear
    logit_scale: nn.Parameter
    codebook: Tensor  # kmeans_static only

    def __init__(
        self,
        dim: int,
        supertokens: int,
        similarity: str,
        centre_keys: bool,
        mode: str = "learned",
        count_grad: bool = False,
    ) -> None:
        super().__init__()
        self.mode = mode
        self.count_grad = count_grad
        self.s = supertokens
        self.v = nn.Linear(dim, dim)
        nn.init.eye_(self.v.weight)
        nn.init.zeros_(self.v.bias)
        if mode == "learned":
            self.supertokens = nn.Parameter(torch.randn(supertokens, dim) * 0.02)  # the learnable basis S
            self.q = nn.Linear(dim, dim, bias=False)
            self.k = nn.Linear(dim, dim, bias=False)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))  # learned temperature (cosine)
            nn.init.eye_(self.q.weight)
            nn.init.eye_(self.k.weight)
        if mode == "kmeans_static":  # one codebook of s token centres, fitted once on training tokens (no gradient)
            self.register_buffer("codebook", torch.zeros(supertokens, dim))
        self.similarity = similarity
        self.centre_keys = centre_keys
        self.kmeans_iters = 10

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

    def route(
        self, tokens: Tensor, centres: Tensor, weight: Tensor, tau: float, noise: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """CAM (B, c, s), index (B, c), soft assignment (B, c, s) of the chosen mode, and (fps_presample) the
        kept tokens (B, s)."""
        pick = None
        if self.mode == "learned":
            return (*self.assign(self.logits(tokens, weight), tau, noise), None)
        if self.mode == "kmeans_static":  # the nearest codeword of one codebook fitted on training tokens
            index = square_distance(tokens.float(), self.codebook.float().unsqueeze(0).expand(len(tokens), -1, -1))
            index = index.argmin(-1)
        else:  # a registered per-cloud assignment (k-means, FPS, ...)
            index, pick = ASSIGNMENTS.get(self.mode)(tokens, centres, self.s, weight, self.kmeans_iters)
        cam = F.one_hot(index, self.s).to(tokens.dtype)
        return cam, index, cam, pick

    def forward(
        self,
        tokens: Tensor,
        pos: Tensor,
        weight: Tensor,
        tau: float = 1.0,
        noise: bool = True,
        centres: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Merge: SuperTokens (B, s, d), their positions (B, s, d), CAM (B, c, s), index (B, c),
        member counts (B, s) and soft assignment (B, c, s). ``weight`` (B, c) is 1 for tokens that
        are compressed (0 for gate bypass; straight-through in training)."""
        if needs_centres(self.mode) and centres is None:
            raise InputError(f"the {self.mode} assignment needs the patch centres")
        cam, index, soft, pick = self.route(tokens, centres, weight, tau, noise)  # type: ignore[arg-type]
        cam = cam * weight.unsqueeze(-1)
        count = cam.detach().sum(1)  # exact member counts (forward value of the one-hot)
        # the mean's divisor: detached (a member's gradient v / n) or through the one-hot ((v - mean) / n)
        denom = (cam.sum(1) if self.count_grad else count).clamp_min(1.0).unsqueeze(-1)
        if pick is not None:  # fps_presample: keep the s picked tokens, drop the others before the encoder
            merged, pos_s = self.v(gather_points(tokens, pick)), gather_points(pos, pick)
        else:
            merged = cam.transpose(1, 2) @ self.v(tokens) / denom
            pos_s = cam.transpose(1, 2) @ pos / denom
        empty = (count == 0).unsqueeze(-1)
        fallback = self.supertokens.unsqueeze(0).expand_as(merged) if self.mode == "learned" else 0.0 * merged
        merged = torch.where(empty, fallback, merged)
        return merged, pos_s, cam, index, count, soft


class Gate(nn.Module):
    """2-layer MLP scoring each token: pi_i = P(token i should be compressed)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        last = cast(nn.Linear, self.mlp[2])
        nn.init.zeros_(last.weight)
        nn.init.constant_(last.bias, 2.0)  # start by compressing most tokens (pi ~ 0.88)

    @override
    def forward(self, tokens: Tensor) -> Tensor:
        return torch.sigmoid(self.mlp(tokens).squeeze(-1))


@register_student("foundry", learned=True, supertokens=True)
class FoundryStudent(Student):
    """Tokenizer + DSO + light encoder + CAU (+ gate): the teacher's tokens without the teacher."""

    student_kind = "foundry"

    def __init__(self, cfg: FoundryConfig) -> None:
        super().__init__(cfg)
        d = self.tcfg.dim
        self.gate = Gate(d, cfg.gate_hidden) if cfg.gate else None
        mode = "learned" if cfg.kind == "foundry" else cfg.kind  # every other kind names its assignment
        self.dso = DSO(d, cfg.supertokens, cfg.similarity, cfg.centre_keys, mode, cfg.count_grad)
        self.dso.kmeans_iters = cfg.kmeans_iters

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
    ) -> TokenOutput:
        """Everything after the tokenizer. ``r``: gate threshold (tokens with pi > r are compressed);
        ``keep``: instead of a threshold, let the ``keep`` lowest-scoring tokens bypass (compact)."""
        b, c, _ = tokens.shape
        s = self.cfg.supertokens
        if s > c:
            raise InputError(f"supertokens={s} exceeds the {c} tokens of the input (use more groups or fewer s)")
        if (r is not None or keep is not None) and self.gate is None:
            raise InputError("r/keep only apply to students distilled with a gate (student.gate=true)")
        pos = self.pos_embed(centres)

        # 1. gate: which tokens are compressed (weight 1) and which bypass DSO (weight 0)
        pi = self.gate(tokens) if self.gate is not None else None
        bypass_idx = None
        if pi is None:
            weight = tokens.new_ones(b, c)
        elif keep is not None:
            if not 0 <= keep <= c:
                raise InputError(f"keep must be in [0, {c}], got {keep}")
            bypass_idx = (-pi).topk(keep, dim=1).indices if keep else None  # the lowest-pi tokens bypass
            weight = torch.ones_like(pi)
            if bypass_idx is not None:
                weight = weight - _one_hot_rows(bypass_idx, c, pi.dtype).sum(1)
        else:
            r = self.cfg.gate_threshold if r is None else r
            if not 0.0 <= r <= 1.0:
                raise InputError(f"gate threshold r must be in [0, 1], got {r}")
            hard = (pi > r).to(tokens.dtype)
            weight = hard - pi.detach() + pi if self.training else hard

        # 2. DSO: compress the weighted tokens into s SuperTokens
        merged, pos_s, cam, index, count, soft = self.dso(tokens, pos, weight, tau, noise, centres)
        if self.cfg.supertoken_pos == "pe_of_mean":  # position = embedding of the members' mean centre
            mean_centre = cam.transpose(1, 2) @ centres / count.clamp_min(1.0).unsqueeze(-1)
            pos_s = torch.where((count > 0).unsqueeze(-1), self.pos_embed(mean_centre), torch.zeros_like(pos_s))

        # 3. encoder on the SuperTokens (plus bypass tokens when gated); empty_bins=mask: empty bins are not keys
        filled = count > 0 if self.cfg.empty_bins == "mask" else torch.ones_like(count, dtype=torch.bool)
        x, xpos, mask = merged, pos_s, None if self.cfg.empty_bins == "fallback" else filled
        if pi is not None and bypass_idx is not None:  # compact top-k bypass
            x = torch.cat([merged, _gather(tokens, bypass_idx)], 1)
            xpos = torch.cat([pos_s, _gather(pos, bypass_idx)], 1)
            if mask is not None:
                mask = torch.cat([filled, torch.ones_like(bypass_idx, dtype=torch.bool)], 1)
        elif pi is not None:  # fixed-size: every token has a bypass slot, masked when compressed
            x, xpos = torch.cat([merged, tokens], 1), torch.cat([pos_s, pos], 1)
            mask = torch.cat([filled, weight.detach() < 0.5], 1)
        x, hidden = self.encode(x, xpos, mask, indices)

        # 4. CAU: route back to the c token positions, add the token residual, map to the teacher width
        def route(z: Tensor) -> Tensor:
            out = cam @ z[:, :s]
            if pi is not None and bypass_idx is not None:
                out = out + _one_hot_rows(bypass_idx, c, z.dtype).transpose(1, 2) @ z[:, s:]
            elif pi is not None:
                out = out + (1.0 - weight).unsqueeze(-1) * z[:, s:]
            return out

        y = self.cau(route(x), tokens, pos)
        assignment = torch.where(weight.detach() > 0.5, index, torch.full_like(index, -1))
        out: TokenOutput = {
            "tokens": y,
            "centres": centres,
            "assignment": assignment,  # SuperToken of each token, -1 where the gate bypassed it
            "occupancy": (count > 0).sum(1),  # non-empty SuperTokens per cloud
            "counts": count,
            "soft_assignment": soft,
            "compressed": weight.detach() > 0.5,
        }
        if pi is not None:
            out["gate_scores"] = pi
        if indices is not None:
            order = {blk: i for i, blk in enumerate(sorted(set(indices)))}
            out["intermediates"] = [route(hidden[order[i]]) + tokens + pos for i in indices]
        return out


def _one_hot_rows(idx: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """(B, k) indices -> (B, k, n) one-hot rows (merge/unmerge by matmul, exportable)."""
    return F.one_hot(idx, n).to(dtype)


def _gather(x: Tensor, idx: Tensor) -> Tensor:
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


# The paper's ablations and their likely baselines: the same student with a non-learned assignment
for _kind, _note in (
    ("kmeans", "DSO with k-means assignment"),
    ("fps", "DSO with nearest-FPS-centre assignment"),
    ("kmeans_xyz", "DSO with k-means of the patch centres (xyz)"),
    ("kmeans_static", "DSO with one codebook fitted once on training tokens"),
    ("fps_presample", "only the s FPS-picked tokens reach the encoder"),
):
    register_student(_kind, FoundryStudent, supertokens=True, note=_note)
