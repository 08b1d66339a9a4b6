"""Linear SVM probe on pooled token features.

Two protocols:
* ``standardized`` (default): features standardised on the training split, C chosen by stratified
  cross-validation on the training split. Trustworthy for any backbone width.
* ``published``: ``SVC(kernel="linear", C=0.012)`` on raw features (Point-JEPA / Point-M2AE), for
  comparison with published numbers only: its fixed C suits 384-wide ViT-S features and can be
  far off for other widths.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from foundry3d.eval.metrics import accuracies

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
