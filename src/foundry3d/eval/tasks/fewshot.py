"""Few-shot classification (N-way K-shot, 10 fixed folds, mean +- std).

Default method ``linear``: a logistic-regression classifier on the frozen backbone's pooled
features of the K support shapes per class (standardised with the support statistics), scored
on the fold's queries. On ModelNet40 the official Point-BERT folds are used; on any other
labelled dataset the folds come from :mod:`foundry3d.data.fewshot` (support from the train
split, queries from the test split).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from typing_extensions import override

from foundry3d.data.fewshot import Episode, sample_folds
from foundry3d.data.registry import fixed_folds
from foundry3d.errors import ConfigError
from foundry3d.eval.context import Context, data_ids
from foundry3d.eval.metrics import mean_std
from foundry3d.eval.task import EvalTask, register_task


@dataclass
class FewShotConfig:
    """Few-shot settings: the episode shape (way, shot, query), how many folds, their seed and the classifier's
    C."""

    way: int = 5
    shot: int = 10
    query: int = 20
    folds: int = 10
    seed: int = 0
    C: float = 1.0
    method: Literal["linear"] = "linear"

    def validate(self) -> None:
        """Refuse episode shapes that cannot be sampled, one line naming the field."""
        if self.way < 2 or self.shot < 1 or self.query < 1 or self.folds < 1:
            raise ConfigError(
                f"fewshot needs way >= 2, shot >= 1, query >= 1 and folds >= 1, got way={self.way} "
                f"shot={self.shot} query={self.query} folds={self.folds}"
            )
        if not (math.isfinite(self.C) and self.C > 0):
            raise ConfigError(f"fewshot.C must be a finite number > 0, got {self.C}")


def classify_fold(xs: np.ndarray, ys: np.ndarray, xq: np.ndarray, yq: np.ndarray, C: float) -> float:
    """Accuracy of a logistic regression fitted on one fold's support features (standardised by the support
    statistics) on its queries."""
    scaler = StandardScaler().fit(xs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=C, max_iter=2000).fit(scaler.transform(xs), ys)
    return float((clf.predict(scaler.transform(xq)) == yq).mean())


def fewshot_from_features(
    support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray, query_y: np.ndarray, cfg: FewShotConfig
) -> dict:
    """Sample the folds on the two pools and score each; returns mean, std and per-fold accuracy."""
    episodes: list[Episode] = sample_folds(support_y, query_y, cfg.way, cfg.shot, cfg.query, cfg.folds, cfg.seed)
    accs = [
        classify_fold(support_x[e.support], e.support_labels, query_x[e.query], e.query_labels, cfg.C) for e in episodes
    ]
    m, s = mean_std(accs)
    return {"acc": m, "acc_std": s, "folds": accs, "classes_per_fold": [e.classes for e in episodes]}


def fewshot_from_folds(folds: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], cfg: FewShotConfig) -> dict:
    """Official folds given as (support x, support y, query x, query y) feature arrays."""
    accs = [classify_fold(xs, ys, xq, yq, cfg.C) for xs, ys, xq, yq in folds]
    m, s = mean_std(accs)
    return {"acc": m, "acc_std": s, "folds": accs}


@register_task
class FewShot(EvalTask):
    """N-way K-shot classification over fixed folds: a logistic regression on the pooled features of the K
    support shapes per class (from train), scored on the fold's queries (from test); the score of each fold is
    one item. A benchmark with official folds (ModelNet40 few-shot) is scored on those."""

    name, Config, metric, metric_label, labelled = "fewshot", FewShotConfig, "acc", "acc", True
    label = f"{FewShotConfig.way}-way {FewShotConfig.shot}-shot"
    reads = ("svm",)  # the SVM's clouds, so both protocols share one feature extraction

    @override
    def run(self, ctx: Context, cfg: FewShotConfig, dataset: str, root: str | None) -> dict[str, Any]:
        official = fixed_folds(dataset)
        if official is not None:
            folds = []
            for f in range(cfg.folds):
                s, q = official(Path(root or ctx.root or "."), cfg.way, cfg.shot, f)
                fs, fq = ctx.features(s, 1024), ctx.features(q, 1024)
                folds.append((fs["features"], fs["labels"], fq["features"], fq["labels"]))
            res = fewshot_from_folds(folds, cfg)
            ids: dict[str, Any] = {"dataset_version": f"{dataset} {cfg.way}way_{cfg.shot}shot"}
        else:
            tr, te = ctx.labelled(dataset, "train", root), ctx.labelled(dataset, "test", root)
            sv = ctx.cfg.svm
            a, b = ctx.features(tr, sv.num_points, sv.sampling), ctx.features(te, sv.num_points, sv.sampling)
            res = fewshot_from_features(a["features"], a["labels"], b["features"], b["labels"], cfg)
            ids = data_ids(te)
        res["per_item"] = {"score": res["folds"]}
        return {
            **res,
            "way": cfg.way,
            "shot": cfg.shot,
            "query": cfg.query,
            "fold_seed": cfg.seed,
            "method": cfg.method,
            **ids,
        }

    @override
    def same_data(self, old: dict[str, Any], ctx: Context, dataset: str, root: str | None) -> bool:
        if fixed_folds(dataset) is not None:  # fixed files, named by their version
            return "dataset_version" in old
        return super().same_data(old, ctx, dataset, root)
