"""Token merging inside transformer blocks: ToMe (Bolya et al., ICLR 2023) and PiToMe (Tran et al.,
NeurIPS 2024), written from the papers' descriptions, with source tracking so that merged tokens
can be un-merged to every original token position (dense outputs, Foundry's c-token target).

A merge step sees the block's tokens after attention and before the MLP, the attention keys
(averaged over heads) as similarity metric, the size of each token (how many originals it holds)
and its source rows (B, N, c0) marking the originals. Merges are matrix products with a 0/1 merge
matrix (B, N - r, N): size-weighted averages, no scatter, so the graph exports.

* ToMe: alternate tokens into sets A and B; each A token finds its most similar B token; the r
  A tokens with the best matches merge into their partners, the rest of A stays.
* PiToMe: an energy score (mean over tokens of ELU(cos - margin)) marks redundant tokens; only
  the 2r most redundant may merge (the others are protected), split alternately into A and B in
  energy order; every A token merges into its most similar B token. The margin shrinks with depth.

Attention is proportional: log(size) is added to the keys' logits, so a merged token counts as
the tokens it holds.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foundry3d.models.encoder import Block


def attention_with_keys(blk: Block, x: Tensor, log_size: Tensor | None) -> tuple[Tensor, Tensor]:
    """The block's attention on ``x`` (already normed) with proportional attention; also returns
    the keys averaged over heads (B, N, head_dim), ToMe's similarity metric."""
    attn = blk.attn
    b, n, c = x.shape
    h = attn.num_heads
    q, k, v = attn.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    bias = None if log_size is None else log_size[:, None, None, :].to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    out = attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(b, n, c)))
    return out, k.mean(1)


def _rows(idx: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    return F.one_hot(idx, n).to(dtype)


def merge_matrix_tome(metric: Tensor, r: int) -> Tensor:
    """ToMe bipartite soft matching: (B, N - r, N) 0/1 matrix, rows = output tokens."""
    b, n, _ = metric.shape
    m = F.normalize(metric.float(), dim=-1)
    a_idx = torch.arange(0, n, 2, device=metric.device)
    b_idx = torch.arange(1, n, 2, device=metric.device)
    scores = m[:, a_idx] @ m[:, b_idx].transpose(1, 2)  # (B, Na, Nb)
    best, partner = scores.max(-1)
    order = best.argsort(-1, descending=True)
    src, keep = order[:, :r], order[:, r:]
    dst = partner.gather(1, src)  # B index of each merged A token
    dtype = metric.dtype
    keep_rows = _rows(a_idx[keep], n, dtype)  # (B, Na - r, N)
    b_rows = _rows(b_idx, n, dtype).expand(b, -1, -1)  # (B, Nb, N)
    merged_in = _rows(dst, len(b_idx), dtype).transpose(1, 2) @ _rows(a_idx[src], n, dtype)  # (B, Nb, N)
    return torch.cat([keep_rows, b_rows + merged_in], 1)


def merge_matrix_pitome(metric: Tensor, r: int, margin: float) -> Tensor:
    """PiToMe: protect informative (low-energy) tokens, merge r of the 2r most redundant ones."""
    n = metric.shape[1]
    m = F.normalize(metric.float(), dim=-1)
    sim = m @ m.transpose(1, 2)
    energy = F.elu(sim - margin).mean(-1)
    order = energy.argsort(-1, descending=True)
    mergeable, protected = order[:, : 2 * r], order[:, 2 * r :]
    a, bb = mergeable[:, 0::2], mergeable[:, 1::2]  # alternate in energy order
    ma, mb = (
        torch.gather(m, 1, a[..., None].expand(-1, -1, m.shape[-1])),
        torch.gather(m, 1, bb[..., None].expand(-1, -1, m.shape[-1])),
    )
    partner = (ma @ mb.transpose(1, 2)).argmax(-1)  # (B, r): every A token merges
    dtype = metric.dtype
    prot_rows = _rows(protected, n, dtype)
    b_rows = _rows(bb, n, dtype)  # (B, r, N)
    merged_in = _rows(partner, bb.shape[1], dtype).transpose(1, 2) @ _rows(a, n, dtype)
    return torch.cat([prot_rows, b_rows + merged_in], 1)


def apply_merge(mat: Tensor, size: Tensor, *values: Tensor) -> tuple[Tensor, ...]:
    """Size-weighted averages of ``values`` under merge matrix ``mat``; returns (size, *values)."""
    new_size = mat @ size
    out = [mat @ (v * size) / new_size for v in values]
    return (new_size, *out)


def merged_blocks(
    blocks: nn.ModuleList,
    x: Tensor,
    pos: Tensor,
    r: list[int],
    method: str = "tome",
    pos_every_layer: bool = True,
) -> tuple[Tensor, Tensor]:
    """Run ``blocks`` with ``r[l]`` merges in block l. Returns the merged tokens (B, N', D) and the
    source matrix (B, N', N) (1 where an output token holds an input token)."""
    b, n, _ = x.shape
    size = x.new_ones(b, n, 1)
    source = torch.eye(n, dtype=x.dtype, device=x.device).expand(b, n, n)
    if not pos_every_layer:
        x = x + pos
    depth = len(blocks)
    for layer, (module, rl) in enumerate(zip(blocks, r)):
        blk = cast(Block, module)
        if pos_every_layer:
            x = x + pos
        att, keys = attention_with_keys(blk, blk.norm1(x), size[..., 0].log())
        x = x + blk.drop_path(att)
        rl = min(rl, x.shape[1] // 2)
        if rl > 0:
            if method == "tome":
                mat = merge_matrix_tome(keys, rl)
            else:
                mat = merge_matrix_pitome(keys, rl, margin=0.9 - 0.9 * layer / max(1, depth))
            mat = mat.to(x.dtype)
            size, x, pos = apply_merge(mat, size, x, pos)
            source = mat @ source
        x = x + blk.drop_path(blk.mlp(blk.norm2(x)))
    return x, source


def schedule(num_tokens: int, depth: int, r: int | None) -> list[int]:
    """Merges per block: ``r`` each (capped at half the tokens left), or None: halve every block."""
    out, n = [], num_tokens
    for _ in range(depth):
        k = n // 2 if r is None else min(r, n // 2)
        out.append(k)
        n -= k
    return out


def flops_matched_r(num_tokens: int, depth: int, target_tokens_per_block: float) -> int:
    """The constant r whose schedule's mean tokens per block is closest to the target."""
    best, best_err = 0, math.inf
    for r in range(0, num_tokens // 2 + 1):
        n, tot = num_tokens, 0.0
        for k in schedule(num_tokens, depth, r):
            tot += n - k / 2  # attention on n tokens, MLP on n - k: about their mean
            n -= k
        err = abs(tot / max(1, depth) - target_tokens_per_block)
        if err < best_err:
            best, best_err = r, err
    return best
