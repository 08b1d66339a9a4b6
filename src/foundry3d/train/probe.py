"""Linear-SVM probe logged during training runs, on a validation split carved from train.

For each dataset the SVM trains on ``train_split`` and scores ``test_split`` (default ``fit`` ->
``val``: model selection never reads a test split). With ``floor: true`` the same probe runs on
the model's training-free floor (its own tokenizer + positional MLP, no block), so the curve shows
the encoder gain (model - floor) next to the raw score.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from torch import nn

from foundry3d.data.registry import load_dataset
from foundry3d.models.features import extract
from foundry3d.models.floor import Floor


def linear_svm(x: np.ndarray, y: np.ndarray, C: float, seed: int = 0) -> object:
    """Standardised features + linear SVM with a fixed C (the probe; the suite adds CV over C)."""
    clf = make_pipeline(StandardScaler(), LinearSVC(C=C, dual=False, max_iter=5000, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    return clf


@dataclass
class ProbeSection:
    datasets: list[str] = field(default_factory=lambda: ["sh3d16", "kicad33"])
    train_split: str = "fit"
    test_split: str = "val"
    num_points: int = 1024
    C: float = 0.05  # fixed C on standardised features: a cheap, comparable curve
    floor: bool = True  # also probe the floor (backbones only) and log the gain
    enabled: bool = True


class Probe:
    def __init__(self, cfg: ProbeSection, root: str | None) -> None:
        self.cfg = cfg
        self.root = root
        self._sets: dict[str, Any] | None = None

    def sets(self) -> dict[str, Any]:
        if self._sets is None:
            c = self.cfg
            self._sets = {
                n: (
                    load_dataset(f"{n}:{c.train_split}", root=self.root),
                    load_dataset(f"{n}:{c.test_split}", root=self.root),
                )
                for n in c.datasets
            }
        return self._sets

    def _svm(self, model: nn.Module, tr: Any, te: Any) -> float:
        a = extract(model, tr, num_points=self.cfg.num_points)
        b = extract(model, te, num_points=self.cfg.num_points)
        clf = linear_svm(a["features"], a["labels"], self.cfg.C)
        return float((clf.predict(b["features"]) == b["labels"]).mean())

    def __call__(self, model: nn.Module) -> dict[str, float]:
        if not self.cfg.enabled or not self.cfg.datasets:
            return {}
        was_training = model.training
        out: dict[str, float] = {}
        floor = Floor(model) if self.cfg.floor and getattr(model, "kind", "") == "backbone" else None
        for name, (tr, te) in self.sets().items():
            out[f"svm_{name}"] = self._svm(model, tr, te)
            if floor is not None:
                out[f"floor_{name}"] = self._svm(floor, tr, te)
                out[f"gain_{name}"] = out[f"svm_{name}"] - out[f"floor_{name}"]
        model.train(was_training)
        return out
