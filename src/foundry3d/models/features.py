"""Features of whole datasets: patch tokens computed once per tokenizer, pooled features per model.

Any model with ``tokenize`` + ``forward_tokens`` works: a teacher, any student kind, the floor,
a merged teacher. Pooled features are concat[max, mean] over tokens. Used by the training probe,
the evaluation suite and the occupancy measurement alike.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from foundry3d.data.base import PointCloudDataset
from foundry3d.data.transforms import Sampling, collate
from foundry3d.files import atomic_write
from foundry3d.models.base import PointModel, pool_tokens
from foundry3d.models.checkpoint import weights_hash

_TOKENS: OrderedDict[str, dict[str, Tensor]] = OrderedDict()
TOKEN_CACHE_BYTES = 2 * 2**30


def _tokenizer_key(model: PointModel, dataset: PointCloudDataset, num_points: int, groups: int, sampling: str) -> str:
    tok = model.tokenizer
    parts = [
        weights_hash(tok.state_dict()),
        str(tok.group_size),
        str(tok.fps_start),
        dataset.fingerprint(),
        str(num_points),
        str(groups),
        sampling,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


@torch.no_grad()
def tokenized(
    model: PointModel,
    dataset: PointCloudDataset,
    num_points: int,
    num_groups: int | None,
    sampling: Sampling,
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "tokens",
    cache: Path | None = None,
) -> dict[str, Tensor]:
    """Patch tokens, centres, points and labels of every cloud, computed once per tokenizer.

    Models whose tokenizers hold identical weights (a teacher and the students that copied and
    froze its tokenizer) share the work; everything after the tokenizer runs per model. In memory that
    sharing lasts while the result fits ``TOKEN_CACHE_BYTES``; with ``cache`` (a folder) the result is also
    kept there as safetensors and read back by later calls and other processes. Why: at 16,384 points a
    student's evaluation spends about half its time re-tokenizing the same clouds with the same frozen
    tokenizer, and one split's tokens (3.7 GB for KiCad-33's train split) no longer fit in memory between
    students. The file holds the values the tokenizer computes, so results are the same to the bit.
    """
    groups = num_groups or model.groups_for(num_points)
    key = _tokenizer_key(model, dataset, num_points, groups, sampling)
    if key in _TOKENS:
        _TOKENS.move_to_end(key)
        return _TOKENS[key]
    path = cache / f"tokens-{key[:24]}.safetensors" if cache else None
    res = _read_tokens(path, len(dataset)) if path is not None and path.exists() else None
    if res is None:
        res = _tokenize_all(model, dataset, num_points, groups, sampling, batch_size, progress, desc)
        if path is not None:
            atomic_write(path, lambda tmp: save_file(res, tmp))
    _TOKENS[key] = res
    while sum(t.numel() * t.element_size() for r in _TOKENS.values() for t in r.values()) > TOKEN_CACHE_BYTES:
        _TOKENS.popitem(last=False)
        if len(_TOKENS) <= 1:
            break
    return res


def _read_tokens(path: Path, n: int) -> dict[str, Tensor] | None:
    """A cached ``tokenized`` result, or None when the file is truncated, corrupt or not one (recomputed)."""
    try:
        res = load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        return None
    ok = {"tokens", "centres", "points"} <= res.keys() and all(len(t) == n for t in res.values())
    return res if ok else None


def _tokenize_all(
    model: PointModel,
    dataset: PointCloudDataset,
    num_points: int,
    groups: int,
    sampling: Sampling,
    batch_size: int,
    progress: bool,
    desc: str,
) -> dict[str, Tensor]:
    model.eval()
    gen = torch.Generator().manual_seed(0)
    out: dict[str, list[Tensor]] = {k: [] for k in ("tokens", "centres", "points", "labels", "categories", "parts")}
    n = len(dataset)
    for s in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        b = collate([dataset[i] for i in range(s, min(n, s + batch_size))], num_points, sampling, gen)
        tokens, centres, _ = model.tokenize(b["points"], groups)
        out["tokens"].append(tokens)
        out["centres"].append(centres)
        for k in ("points", "labels", "categories", "parts"):
            if k in b:
                out[k].append(b[k])
    return {k: torch.cat(v) for k, v in out.items() if v}


@torch.no_grad()
def extract(
    model: PointModel,
    dataset: PointCloudDataset,
    num_points: int = 1024,
    num_groups: int | None = None,
    sampling: Sampling = "first",
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "features",
    token_cache: Path | None = None,
) -> dict[str, np.ndarray]:
    """Pooled features (S, 2D) and labels (S,) of every cloud, in dataset order (``token_cache``: see
    ``tokenized``)."""
    model.eval()
    data = tokenized(model, dataset, num_points, num_groups, sampling, batch_size, progress, desc, token_cache)
    feats = []
    for s in range(0, len(data["tokens"]), batch_size):
        out = model.forward_tokens(data["tokens"][s : s + batch_size], data["centres"][s : s + batch_size])
        feats.append(pool_tokens(out["tokens"]).float().numpy())
    return {"features": np.concatenate(feats), "labels": data["labels"].numpy()}
