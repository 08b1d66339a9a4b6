"""Fine-tuned classification: backbone + Point-JEPA's MLP head on pooled [max, mean] features.

Cross-entropy with label smoothing, AdamW + warm-up + cosine (the shared engine), an optional
frozen-backbone phase, and optional voting: the logits of ``votes`` augmented passes are
averaged once (an honest mean; never the best of repeated vote rounds).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from foundry3d.data.base import PointCloudDataset
from foundry3d.data.transforms import AugmentConfig, augment, collate, normalize
from foundry3d.eval.context import Context, data_ids
from foundry3d.eval.metrics import accuracies
from foundry3d.eval.task import EvalTask, register_task
from foundry3d.models.base import PointModel
from foundry3d.models.heads import Classifier
from foundry3d.train.engine import EngineConfig, Task, seed_all
from foundry3d.train.loop import fit


@dataclass
class FinetuneConfig:
    """Fine-tuning settings: the published protocol's augmentation, label smoothing, head warm-up, votes and
    the engine's schedule."""

    num_points: int = 1024
    label_smoothing: float = 0.2
    frozen_steps: int = 0  # backbone frozen for the first steps (head warm-up)
    votes: int = 0  # 0: single pass; n: average the logits of n augmented passes
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(scale=(0.8, 1.2), rotate_up=False))
    engine: EngineConfig = field(
        default_factory=lambda: EngineConfig(
            steps=1500,
            batch_size=32,
            lr=5e-4,
            warmup_steps=100,
            grad_clip=10.0,
            log_every=50,
            ckpt_every=500,
            progress=False,
        )
    )


class _Loss(nn.Module):
    model: Classifier

    def __init__(self, model: Classifier, smoothing: float) -> None:
        super().__init__()
        self.model = model
        self.smoothing = smoothing

    def forward(self, points: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        out = self.model.logits(points)
        loss = F.cross_entropy(out, labels, label_smoothing=self.smoothing)
        return loss, {"acc": (out.argmax(-1) == labels).float().mean()}


class FinetuneTask(Task):
    """The engine task of fine-tuning: a copy of the model with a classification head, trained end to end on
    augmented clouds."""

    module: _Loss

    def __init__(self, backbone: PointModel, train: PointCloudDataset, cfg: FinetuneConfig) -> None:
        self.module = _Loss(Classifier(copy.deepcopy(backbone).train(), train.num_classes), cfg.label_smoothing)
        self.train_set = train
        self.cfg = cfg

    @override
    def num_samples(self) -> int:
        return len(self.train_set)

    @override
    def before_step(self, step: int) -> None:
        frozen = step < self.cfg.frozen_steps
        self.module.model.backbone.requires_grad_(not frozen)

    @override
    def batch(self, indices: np.ndarray, generator: torch.Generator, device: torch.device) -> dict[str, Any]:
        b = collate([self.train_set[int(i)] for i in indices], self.cfg.num_points, "random", generator)
        return {
            "points": augment(b["points"], self.cfg.augment, generator).to(device),
            "labels": b["labels"].to(device),
        }


@torch.no_grad()
def predict(model: Classifier, data: PointCloudDataset, cfg: FinetuneConfig, batch_size: int = 64) -> np.ndarray:
    """Predicted classes of every item of ``data`` (averaging the logits of augmented passes when votes are
    asked for)."""
    model.eval()
    gen = torch.Generator().manual_seed(0)
    preds = []
    for s in range(0, len(data), batch_size):
        b = collate([data[i] for i in range(s, min(len(data), s + batch_size))], cfg.num_points, "first")
        pts = normalize(b["points"])
        logits = model.logits(pts)
        for _ in range(cfg.votes):
            logits = logits + model.logits(augment(pts, cfg.augment, gen))
        preds.append(logits.argmax(-1).numpy())
    return np.concatenate(preds)


def finetune_protocol(
    backbone: PointModel,
    train: PointCloudDataset,
    test: PointCloudDataset,
    cfg: FinetuneConfig,
    run_dir: Path,
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune a copy of ``backbone`` on ``train`` and score ``test``: accuracy and the hits per test item."""
    seed_all(seed)
    task = FinetuneTask(backbone, train, cfg)
    fit(task, cfg.engine, run_dir, {"finetune": "classification", "seed": seed}, overwrite=True)
    pred = predict(task.module.model, test, cfg)
    return {**accuracies(test.labels(), pred), "steps": cfg.engine.steps, "votes": cfg.votes, "seed": seed}


@register_task
class Finetune(EvalTask):
    """End-to-end fine-tuning: the model and a classification head trained on the train split (the published
    protocol's augmentation and schedule), accuracy on the test shapes."""

    name, Config, metric, metric_label, label = "finetune", FinetuneConfig, "acc", "acc", "fine-tuned"

    @override
    def run(self, ctx: Context, cfg: FinetuneConfig, dataset: str, root: str | None) -> dict[str, Any]:
        tr, te = ctx.data(dataset, "train", root), ctx.data(dataset, "test", root)
        res = finetune_protocol(ctx.model, tr, te, cfg, ctx.folder / f"finetune-{dataset}")
        return {**res, **data_ids(te)}
