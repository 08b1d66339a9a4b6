"""Linear-SVM probe logged during training runs, on a validation split carved from train.

For each dataset the SVM trains on ``train_split`` and scores ``test_split`` (default ``fit`` ->
``val``: model selection never reads a test split). With ``floor: true`` the same probe runs on
the model's training-free floor (its own tokenizer + positional MLP, no block), so the curve shows
the encoder gain (model - floor) next to the raw score.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from foundry3d.data.base import DatasetError
from foundry3d.data.registry import dataset_base, load_dataset, with_split
from foundry3d.models.backbone import PointTransformer
from foundry3d.models.base import PointModel
from foundry3d.models.features import extract
from foundry3d.models.floor import Floor


def linear_svm(x: np.ndarray, y: np.ndarray, C: float, seed: int = 0) -> Any:
    """Standardised features + linear SVM with a fixed C (the probe; the suite adds CV over C)."""
    clf = make_pipeline(StandardScaler(), LinearSVC(C=C, dual=False, max_iter=5000, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    return clf


@dataclass
class ProbeSection:
    # None: the run's own training data (each labelled dataset it names with fit/val splits), so a run
    # on folder:/scans probes /scans and never needs a dataset the user did not name
    """The cheap in-training probe: datasets and splits (validation, never test), cloud size and a fixed C."""

    datasets: list[str] | None = None
    train_split: str = "fit"
    test_split: str = "val"
    num_points: int = 1024
    C: float = 0.05  # fixed C on standardised features: a cheap, comparable curve
    floor: bool = True  # also probe the floor (backbones only) and log the gain
    enabled: bool = True


def probe_datasets(cfg: ProbeSection, training: list[str], root: str | None) -> list[str]:
    """The datasets the probe scores: ``cfg.datasets``, or those of the training specs that carry labels
    of at least two classes in both probe splits (a note says which were left out and why)."""
    if cfg.datasets is not None or not cfg.enabled:
        return list(cfg.datasets or [])
    names: list[str] = []
    for spec in training:
        for part in str(spec).split("+"):
            base = dataset_base(part)
            if base in names:
                continue
            try:
                for split in (cfg.train_split, cfg.test_split):
                    ds = load_dataset(with_split(base, split), root=root)
                    labels = ds.labels()
                    if len(set(labels[labels >= 0].tolist())) < (2 if split == cfg.train_split else 1):
                        raise DatasetError(f"fewer than two labelled classes in its {split} split")
            except DatasetError as e:
                print(f"foundry3d: the progress probe leaves out {part}: {str(e).split(': ')[-1]}", flush=True)
                continue
            names.append(base)
    return names


def _labelled(ds: Any) -> Any:
    return ds.labelled() if hasattr(ds, "labelled") else ds


class Probe:
    """A fixed-C linear probe on validation splits during training: a comparable curve, not a score to report."""

    def __init__(self, cfg: ProbeSection, root: str | None) -> None:
        self.cfg = cfg
        self.root = root
        self._sets: dict[str, Any] | None = None

    def sets(self) -> dict[str, Any]:
        """The probe's train and validation sets, loaded once on first use."""
        if self._sets is None:
            c = self.cfg
            self._sets = {
                n: (
                    _labelled(load_dataset(with_split(n, c.train_split), root=self.root)),
                    _labelled(load_dataset(with_split(n, c.test_split), root=self.root)),
                )
                for n in c.datasets or []
            }
        return self._sets

    def _svm(self, model: PointModel, tr: Any, te: Any) -> float:
        a = extract(model, tr, num_points=self.cfg.num_points)
        b = extract(model, te, num_points=self.cfg.num_points)
        clf = linear_svm(a["features"], a["labels"], self.cfg.C)
        return float((clf.predict(b["features"]) == b["labels"]).mean())

    def __call__(self, model: PointModel) -> dict[str, float]:
        """Linear-probe accuracy of ``model``'s features on the validation sets (empty when the probe is off)."""
        if not self.cfg.enabled or not self.cfg.datasets:
            return {}
        was_training = model.training
        out: dict[str, float] = {}
        floor = Floor(model) if self.cfg.floor and isinstance(model, PointTransformer) else None
        for name, (tr, te) in self.sets().items():
            out[f"svm_{name}"] = self._svm(model, tr, te)
            if floor is not None:
                out[f"floor_{name}"] = self._svm(floor, tr, te)
                out[f"gain_{name}"] = out[f"svm_{name}"] - out[f"floor_{name}"]
        model.train(was_training)
        return out
