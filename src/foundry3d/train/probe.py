"""Linear-SVM probe logged during training runs (train split -> test split of each dataset)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from foundry3d.data.registry import load_dataset
from foundry3d.eval.features import extract
from foundry3d.eval.svm import svm_probe


@dataclass
class ProbeSection:
    datasets: list[str] = field(default_factory=lambda: ["sh3d16", "kicad33"])
    num_points: int = 1024
    C: float = 0.05  # fixed C on standardised features: a cheap, comparable curve
    enabled: bool = True


class Probe:
    def __init__(self, cfg: ProbeSection, root: str | None) -> None:
        self.cfg = cfg
        self.root = root
        self._sets: dict[str, Any] | None = None

    def sets(self) -> dict[str, Any]:
        if self._sets is None:
            self._sets = {
                n: (load_dataset(f"{n}:train", root=self.root), load_dataset(f"{n}:test", root=self.root))
                for n in self.cfg.datasets
            }
        return self._sets

    def __call__(self, model: nn.Module) -> dict[str, float]:
        if not self.cfg.enabled or not self.cfg.datasets:
            return {}
        was_training = model.training
        out: dict[str, float] = {}
        for name, (tr, te) in self.sets().items():
            a = extract(model, tr, num_points=self.cfg.num_points)
            b = extract(model, te, num_points=self.cfg.num_points)
            out[f"svm_{name}"] = svm_probe(a["features"], a["labels"], b["features"], b["labels"], C=self.cfg.C)["acc"]
        model.train(was_training)
        return out
