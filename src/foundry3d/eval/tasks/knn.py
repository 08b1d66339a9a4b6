"""k-NN retrieval: does a shape's nearest neighbour in embedding space share its class?

What users of ``foundry3d embed`` + ``search`` get: every test shape queries the train shapes by cosine
similarity of the frozen model's pooled features (standardised with the train statistics, as the SVM
does), no training at all. The headline is top-1 retrieval accuracy (the nearest train shape's class is
the query's); precision@k (the share of the k nearest with the query's class) and the majority vote of
the k nearest are reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler
from typing_extensions import override

from foundry3d.data.transforms import Sampling
from foundry3d.errors import ConfigError
from foundry3d.eval.context import Context, data_ids
from foundry3d.eval.task import EvalError, EvalTask, register_task


@dataclass
class KNNConfig:
    """k-NN retrieval settings: the clouds the features come from and k for precision@k and the vote."""

    num_points: int = 1024
    sampling: Sampling = "first"
    k: int = 10  # neighbours for precision@k and the vote

    def validate(self) -> None:
        """Refuse a cloud size below one patch or a neighbour count below one."""
        if self.num_points < 32:
            raise ConfigError(f"knn.num_points must be >= 32 (at least one patch), got {self.num_points}")
        if self.k < 1:
            raise ConfigError(f"knn.k must be >= 1, got {self.k}")


def retrieve(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray, k: int) -> dict[str, Any]:
    """Per test item: hit@1, precision@k and the k-vote's hit, from cosine neighbours among ``train``."""
    if len(train) < k:
        raise EvalError(f"knn: k={k} but the train split holds {len(train)} shapes; lower knn.k")
    scaler = StandardScaler().fit(train)
    index = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(scaler.transform(train))
    _, nn = index.kneighbors(scaler.transform(test))
    same = train_y[nn] == test_y[:, None]  # (queries, k)
    votes = np.array([np.bincount(row).argmax() for row in train_y[nn]])
    return {
        "score": same[:, 0].astype(np.int8),
        "precision": same.mean(1),
        "vote": (votes == test_y).astype(np.int8),
    }


@register_task
class KNN(EvalTask):
    """k-NN retrieval: each test shape queries the train shapes by cosine similarity of the frozen model's
    standardised pooled features; top-1 retrieval accuracy (the nearest shape's class is the query's), with
    precision@k beside it. No training."""

    name, Config, metric, metric_label, label, labelled = "knn", KNNConfig, "acc", "top-1", "k-NN", True

    @override
    def run(self, ctx: Context, cfg: KNNConfig, dataset: str, root: str | None) -> dict[str, Any]:
        tr, te = ctx.labelled(dataset, "train", root), ctx.labelled(dataset, "test", root)
        a, b = ctx.features(tr, cfg.num_points, cfg.sampling), ctx.features(te, cfg.num_points, cfg.sampling)
        items = retrieve(a["features"], a["labels"], b["features"], b["labels"], cfg.k)
        return {
            "acc": float(items["score"].mean()),
            f"precision_at_{cfg.k}": float(items["precision"].mean()),
            f"vote_{cfg.k}_acc": float(items["vote"].mean()),
            "per_item": {"score": items["score"].tolist()},
            "k": cfg.k,
            "train_shapes": len(tr),
            "test_shapes": len(te),
            **data_ids(te),
        }
