"""Scene segmentation at full scale (``sceneseg:kicadboards``): which component class is every point?

The frozen backbone sees each whole board (``num_points`` points, N / 16 patches); its layer-normed
output tokens are propagated to every point (3 nearest patch centres, inverse-distance weights);
a light per-point head (point feature + xyz -> MLP) is trained on the training boards' points and
scored on the held-out boards: mIoU over the classes present in the test boards (each IoU from the
points of all test boards pooled) and point accuracy. The per-board confusion matrices are kept,
so the interval is a bootstrap over test boards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from foundry3d.data.base import DatasetError, PointCloudDataset
from foundry3d.eval.context import Context, data_ids
from foundry3d.eval.task import EvalTask, Items, register_task
from foundry3d.models.base import PointModel
from foundry3d.models.features import tokenized
from foundry3d.models.heads import interpolate, three_nn
from foundry3d.train.engine import EngineConfig, Task, seed_all
from foundry3d.train.loop import fit


@dataclass
class SceneSegConfig:
    """Scene-segmentation settings: points per scene the model sees, the point head and its schedule."""

    num_points: int = 100_000  # points per board the backbone sees (the stored boards hold more)
    hidden: int = 128
    points_per_step: int = 4096
    seed: int = 0
    engine: EngineConfig = field(
        default_factory=lambda: EngineConfig(
            steps=800, batch_size=2, lr=2e-3, min_lr=1e-5, warmup_steps=20, log_every=50, ckpt_every=400, progress=False
        )
    )


@torch.no_grad()
def point_features(model: PointModel, ds: PointCloudDataset, cfg: SceneSegConfig) -> dict[str, np.ndarray]:
    """Per-point features (S, N, D) float16, xyz and labels of every board."""
    if ds.part_spec is None:
        raise DatasetError(f"{ds.name}: no per-point labels: scene segmentation needs a labelled scene set")
    model.eval()
    data = tokenized(model, ds, cfg.num_points, None, "first", batch_size=1)
    feats = []
    for i in range(len(data["tokens"])):
        out = model.forward_tokens(data["tokens"][i : i + 1], data["centres"][i : i + 1])
        tokens = F.layer_norm(out["tokens"], out["tokens"].shape[-1:])
        idx, w = three_nn(data["points"][i : i + 1], data["centres"][i : i + 1])
        feats.append(interpolate(tokens, idx, w)[0].half().numpy())
    return {"features": np.stack(feats), "xyz": data["points"].half().numpy(), "labels": data["parts"].numpy()}


class _PointHead(nn.Module):
    def __init__(self, dim: int, classes: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim + 3, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, feats: Tensor, xyz: Tensor) -> Tensor:
        return self.mlp(torch.cat([feats, xyz], -1))


class _Loss(nn.Module):
    head: _PointHead
    weight: Tensor

    def __init__(self, head: _PointHead, weight: Tensor) -> None:
        super().__init__()
        self.head = head
        self.register_buffer("weight", weight)

    def forward(self, feats: Tensor, xyz: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, dict]:
        logits = self.head(feats, xyz)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), weight=self.weight)
        return loss, {"point_acc": (logits.argmax(-1) == labels).float().mean()}


class SceneSegTask(Task):
    """The engine task of the scene head: random points of each training scene, class-weighted cross-entropy."""

    module: _Loss

    def __init__(self, data: dict[str, np.ndarray], classes: int, cfg: SceneSegConfig) -> None:
        self.data, self.cfg = data, cfg
        # the board covers most points: weight classes by 1/sqrt(frequency) so small parts are learned too
        freq = np.bincount(data["labels"].reshape(-1).astype(np.int64), minlength=classes).astype(np.float64)
        weight = np.where(freq > 0, 1.0 / np.sqrt(np.maximum(freq, 1.0) / freq.sum()), 0.0)
        scale = torch.tensor(weight / weight[freq > 0].mean(), dtype=torch.float32)
        self.module = _Loss(_PointHead(data["features"].shape[-1], classes, cfg.hidden), scale)

    @override
    def num_samples(self) -> int:
        return len(self.data["features"])

    @override
    def batch(self, indices: np.ndarray, generator: torch.Generator, device: torch.device) -> dict[str, Any]:
        n = self.data["features"].shape[1]
        pick = torch.randint(n, (len(indices), self.cfg.points_per_step), generator=generator).numpy()
        sel = np.asarray(indices)[:, None]
        return {
            "feats": torch.from_numpy(self.data["features"][sel, pick]).float().to(device),
            "xyz": torch.from_numpy(self.data["xyz"][sel, pick]).float().to(device),
            "labels": torch.from_numpy(self.data["labels"][sel, pick]).long().to(device),
        }


def confusion(pred: np.ndarray, gt: np.ndarray, classes: int) -> np.ndarray:
    """The classes x classes confusion matrix of one scene (rows: truth)."""
    return np.bincount(gt.astype(np.int64) * classes + pred, minlength=classes * classes).reshape(classes, classes)


def miou(conf: np.ndarray) -> float:
    """Mean IoU over the classes present in the ground truth of ``conf`` (rows: truth)."""
    present = conf.sum(1) > 0
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    return float(np.mean(inter[present] / np.maximum(union[present], 1)))


def sceneseg_protocol(
    model: PointModel, train: PointCloudDataset, test: PointCloudDataset, cfg: SceneSegConfig, run_dir: Path
) -> dict[str, Any]:
    """Train a point head on ``train`` scenes' token features and score ``test``: pooled mIoU and each scene's
    confusion matrix."""
    spec = train.part_spec
    assert spec is not None
    c = spec.num_parts
    tr, te = point_features(model, train, cfg), point_features(model, test, cfg)
    seed_all(cfg.seed)
    task = SceneSegTask(tr, c, cfg)
    engine = EngineConfig(**{**cfg.engine.__dict__, "seed": cfg.seed, "tensorboard": False})
    if engine.batch_size > len(tr["features"]):
        engine.batch_size = len(tr["features"])
    fit(task, engine, run_dir, {"sceneseg": "head", "seed": cfg.seed}, overwrite=True)
    head = task.module.head.eval()
    confs = []
    with torch.no_grad():
        for i in range(len(te["features"])):
            logits = head(torch.from_numpy(te["features"][i]).float(), torch.from_numpy(te["xyz"][i]).float())
            confs.append(confusion(logits.argmax(-1).numpy(), te["labels"][i], c))
    total = np.sum(confs, 0)
    per_class = {
        spec.parts[k]: float(total[k, k] / max(1, total[k].sum() + total[:, k].sum() - total[k, k]))
        for k in range(c)
        if total[k].sum()
    }
    return {
        "miou": miou(total),
        "point_acc": float(np.trace(total) / total.sum()),
        "per_class_iou": per_class,
        "per_item": {"confusion": [m.tolist() for m in confs]},
        "train_scenes": len(tr["features"]),
        "test_scenes": len(te["features"]),
        "num_points": cfg.num_points,
        "tokens_per_scene": int(model.groups_for(cfg.num_points)),
    }


@register_task
class SceneSeg(EvalTask):
    """Semantic segmentation of scenes: a point head on the frozen model's token features trained on the train
    scenes; mIoU pooled over the test scenes' points (each scene one item of the bootstrap)."""

    name, Config, metric, metric_label, label = "sceneseg", SceneSegConfig, "miou", "mIoU", "scene seg."

    @override
    def run(self, ctx: Context, cfg: SceneSegConfig, dataset: str, root: str | None) -> dict[str, Any]:
        tr, te = ctx.data(dataset, "train", root), ctx.data(dataset, "test", root)
        res = sceneseg_protocol(ctx.model, tr, te, cfg, ctx.folder / f"sceneseg-{dataset}")
        return {**res, **data_ids(te)}

    @staticmethod
    @override
    def statistic(items: Items, idx: np.ndarray) -> float:
        conf = items["confusion"][idx].sum(0)
        present = conf.sum(1) > 0
        inter = np.diag(conf)
        union = conf.sum(0) + conf.sum(1) - inter
        return float(np.mean(inter[present] / np.maximum(union[present], 1)))
