"""SuperToken occupancy: how much of its budget a Foundry student really uses.

A student with s SuperTokens that routes every cloud into 4 of them compresses 4x more than
asked. Reported: mean (and min/max) non-empty SuperTokens per cloud, SuperTokens never used on
the whole split ("dead"), and the usage share of each SuperToken.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from foundry3d.data.base import PointCloudDataset
from foundry3d.models.base import PointModel
from foundry3d.models.features import tokenized


@torch.no_grad()
def occupancy(
    student: PointModel, dataset: PointCloudDataset, num_points: int = 1024, batch_size: int = 64, **kw: Any
) -> dict[str, Any]:
    """``kw`` (e.g. ``r=0.7``) goes to ``forward_tokens``. The clouds are tokenized through the shared
    token cache, so a probe or an evaluation of the same split does not tokenize them again."""
    was = student.training
    student.eval()
    data = tokenized(student, dataset, num_points, None, "first", batch_size)
    per_cloud, usage = [], None
    for s in range(0, len(data["tokens"]), batch_size):
        sl = slice(s, s + batch_size)
        out = student.forward_tokens(data["tokens"][sl], data["centres"][sl], **kw)
        per_cloud.append(out["occupancy"].numpy())
        c = out["counts"].sum(0).numpy()
        usage = c if usage is None else usage + c
    student.train(was)
    occ = np.concatenate(per_cloud)
    assert usage is not None
    return {
        "supertokens": len(usage),
        "mean_per_cloud": float(occ.mean()),
        "min_per_cloud": int(occ.min()),
        "max_per_cloud": int(occ.max()),
        "never_used": int((usage == 0).sum()),
        "usage_share": (usage / max(1.0, usage.sum())).round(4).tolist(),
    }
