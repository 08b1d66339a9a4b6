"""Linear SVM probe on pooled token features.

Two protocols:
* ``standardized`` (default): features standardised on the training split, C chosen by stratified
  cross-validation on the training split. Trustworthy for any backbone width.
* ``published``: ``SVC(kernel="linear", C=0.012)`` on raw features (Point-JEPA / Point-M2AE), for
  comparison with published numbers only: its fixed C suits 384-wide ViT-S features and can be
  far off for other widths.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from typing_extensions import override

from foundry3d.data.transforms import Sampling
from foundry3d.errors import ConfigError
from foundry3d.eval.context import Context, data_ids, hits
from foundry3d.eval.metrics import accuracies
from foundry3d.eval.task import EvalError, EvalTask, register_task

Protocol = Literal["standardized", "published"]
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
PUBLISHED_C = 0.012


def fit_svm(
    x: np.ndarray,
    y: np.ndarray,
    protocol: Protocol = "standardized",
    C: float | None = None,
    seed: int = 0,
    grid: tuple[float, ...] = C_GRID,
    cv_max_samples: int | None = 2000,
) -> tuple[Any, dict[str, Any]]:
    """Fit a linear SVM; returns the classifier and the settings actually used."""
    if protocol == "published":
        clf = SVC(kernel="linear", C=PUBLISHED_C if C is None else C)
        clf.fit(x, y)
        return clf, {"protocol": "published", "C": PUBLISHED_C if C is None else C, "standardize": False}
    pipe = make_pipeline(StandardScaler(), LinearSVC(dual=False, max_iter=5000, random_state=seed))
    if C is not None:
        pipe.set_params(linearsvc__C=C)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipe.fit(x, y)
        return pipe, {"protocol": "standardized", "C": C, "standardize": True, "cv": None}
    cx, cy = x, y
    if cv_max_samples is not None and len(y) > cv_max_samples:  # choose C on a stratified subset, fit on all
        idx, _ = train_test_split(np.arange(len(y)), train_size=cv_max_samples, stratify=y, random_state=seed)
        cx, cy = x[idx], y[idx]
    counts = np.bincount(cy)
    folds = int(max(2, min(3, counts[counts > 0].min())))
    search = GridSearchCV(
        pipe,
        {"linearsvc__C": list(grid)},
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
        n_jobs=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # classes with fewer members than folds
        search.fit(cx, cy)
    best = float(search.best_params_["linearsvc__C"])
    pipe.set_params(linearsvc__C=best)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(x, y)  # refit on the whole training split
    return pipe, {"protocol": "standardized", "C": best, "standardize": True, "cv_folds": folds, "cv_samples": len(cy)}


def svm_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    protocol: Protocol = "standardized",
    C: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train on one split, score on the other."""
    clf, used = fit_svm(train_x, train_y, protocol, C, seed)
    return {**accuracies(test_y, clf.predict(test_x)), **used}


@dataclass
class SVMConfig:
    """SVM settings: the clouds the features come from, the C grid searched by cross-validation on train, and
    the published fixed-C probe."""

    num_points: int = 1024
    sampling: Sampling = "first"
    grid: list[float] = field(default_factory=lambda: list(C_GRID))
    published: bool = True  # also report SVC(C=0.012) on raw features, for comparison with papers
    cv_max_samples: int | None = 2000  # choose C by CV on at most this many training shapes (stratified)
    seed: int = 0

    def validate(self) -> None:
        """Refuse a cloud size below one patch, a C grid that is empty or not finite and positive, or a CV size
        below 10."""
        if self.num_points < 32:
            raise ConfigError(f"svm.num_points must be >= 32 (at least one patch), got {self.num_points}")
        if not self.grid or not all(math.isfinite(c) and c > 0 for c in self.grid):
            raise ConfigError(f"svm.grid must be a non-empty list of finite C values > 0, got {self.grid}")
        if self.cv_max_samples is not None and self.cv_max_samples < 10:
            raise ConfigError(f"svm.cv_max_samples must be >= 10 (or null), got {self.cv_max_samples}")


@register_task
class SVM(EvalTask):
    """Linear SVM on the frozen model's pooled features: features standardised on the train split, C chosen by
    stratified cross-validation on train, accuracy on the test shapes (and the published fixed-C SVC beside it)."""

    name, Config, metric, metric_label, label, labelled = "svm", SVMConfig, "acc", "acc", "SVM", True

    @override
    def run(self, ctx: Context, cfg: SVMConfig, dataset: str, root: str | None) -> dict[str, Any]:
        tr, te = ctx.labelled(dataset, "train", root), ctx.labelled(dataset, "test", root)
        have = sorted({int(v) for v in tr.labels()})
        if len(have) < 2:
            names = [tr.classes[i] for i in have] if tr.classes else have
            raise EvalError(
                f"svm:{tr.name}: its {tr.split} split holds labelled shapes of {len(have)} class(es) {names}; "
                "a classifier needs at least 2 classes with shapes in train (a class of one file may sit wholly "
                "in test)"
            )
        a, b = ctx.features(tr, cfg.num_points, cfg.sampling), ctx.features(te, cfg.num_points, cfg.sampling)
        clf, used = fit_svm(
            a["features"],
            a["labels"],
            "standardized",
            seed=cfg.seed,
            grid=tuple(cfg.grid),
            cv_max_samples=cfg.cv_max_samples,
        )
        pred = clf.predict(b["features"])
        out: dict[str, Any] = {**accuracies(b["labels"], pred), **used, "per_item": hits(b["labels"], pred)}
        if cfg.published:
            out["acc_published"] = svm_probe(a["features"], a["labels"], b["features"], b["labels"], "published")["acc"]
        out.update(train_shapes=len(tr), test_shapes=len(te), num_points=cfg.num_points, sampling=cfg.sampling)
        return {**out, **data_ids(te)}
