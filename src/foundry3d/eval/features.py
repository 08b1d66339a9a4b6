"""Feature extraction for evaluation: one pass over a dataset, cached by model hash.

Any backbone with ``forward_features(points) -> {"tokens": (B, c, D), ...}`` works: a teacher,
a Foundry student, or a baseline. Pooled features are concat[max, mean] over tokens.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from foundry3d.data.base import PointCloudDataset
from foundry3d.data.transforms import Sampling, collate
from foundry3d.models.backbone import pool_tokens
from foundry3d.models.checkpoint import weights_hash


def model_hash(model: nn.Module) -> str:
    """Stable hash of a model's weights and config (release hash when loaded from a release)."""
    h = getattr(model, "release_hash", None)
    if h:
        return h[:16]
    cfg = model.config_dict() if hasattr(model, "config_dict") else {}
    text = json.dumps(cfg, sort_keys=True, default=str) + weights_hash(model.state_dict())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@torch.no_grad()
def extract(
    model: nn.Module,
    dataset: PointCloudDataset,
    num_points: int = 1024,
    num_groups: int | None = None,
    sampling: Sampling = "first",
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "features",
) -> dict[str, np.ndarray]:
    """Pooled features (S, 2D) and labels (S,) of every cloud, in dataset order."""
    from tqdm.auto import tqdm

    model.eval()
    feats, labels = [], []
    n = len(dataset)
    gen = torch.Generator().manual_seed(0)
    for s in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        batch = collate([dataset[i] for i in range(s, min(n, s + batch_size))], num_points, sampling, gen)
        out = model.forward_features(batch["points"], num_groups=num_groups)
        feats.append(pool_tokens(out["tokens"], out.get("mask")).float().numpy())
        labels.append(batch["labels"].numpy())
    return {"features": np.concatenate(feats), "labels": np.concatenate(labels)}


def cached_extract(
    model: nn.Module,
    dataset: PointCloudDataset,
    cache: str | Path | None,
    **kwargs: Any,
) -> dict[str, np.ndarray]:
    """``extract`` with an on-disk cache keyed by model hash, dataset, split and protocol."""
    if cache is None:
        return extract(model, dataset, **kwargs)
    key = json.dumps(
        {
            "model": model_hash(model),
            "data": dataset.name,
            "split": dataset.split,
            "version": dataset.version,
            "n": len(dataset),
            **{k: v for k, v in kwargs.items() if k not in ("progress", "batch_size", "desc")},
        },
        sort_keys=True,
    )
    name = hashlib.sha256(key.encode()).hexdigest()[:24]
    path = Path(cache) / f"{name}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    out = extract(model, dataset, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out
