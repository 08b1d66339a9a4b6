"""Part segmentation on frozen backbone features.

Token features (``features``): ``blocks`` (default, Point-JEPA's protocol) averages the layer-normed
outputs of three blocks spread over the depth (blocks 3/7/11 of a 12-block ViT-S; the same thirds of
any other depth; a Foundry student gives its SuperToken blocks' outputs routed back to every token,
which no loss ever asked to match the teacher's). ``output`` uses the layer-normed output tokens
instead: Y for a backbone, Y_hat for a student, i.e. exactly what distillation makes the student
reproduce, so teacher and student are compared on the same representation. They are propagated to every
point by 3-nearest-centre inverse-distance interpolation; a light head adds xyz, global
[max, mean] features and a category embedding. The argmax is restricted to the parts of the
shape's category. Metrics: class mIoU (mean over categories of per-category mean shape IoU) and
instance mIoU (mean over shapes), a part absent from prediction and truth counting as IoU 1.

The backbone stays frozen (features extracted once and cached); only the head trains, on the
shared engine. This makes the protocol affordable on a CPU and measures what the representation
holds rather than what 300 epochs of fine-tuning can add.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from foundry3d.data.base import ArrayDataset, DatasetError, PartSpec, PointCloudDataset
from foundry3d.eval.context import Context, data_ids
from foundry3d.eval.metrics import mean_std, part_mious, shape_iou
from foundry3d.eval.task import EvalError, EvalTask, Items, register_task
from foundry3d.models.base import PointModel
from foundry3d.models.features import tokenized
from foundry3d.models.heads import PartSegHead, three_nn
from foundry3d.train.engine import EngineConfig, Task, seed_all
from foundry3d.train.loop import fit


@dataclass
class PartSegConfig:
    """Part-segmentation settings: which token features, the cloud and patch sizes, the head and its training
    schedule, the seeds."""

    num_points: int = 2048
    num_groups: int | None = None  # None: the backbone's ratio (128 for 2048 points)
    features: Literal["blocks", "output"] = "blocks"  # see the module docstring
    blocks: list[int] | None = None  # features=blocks: None = thirds of the depth (3/7/11 for 12 blocks)
    max_train_shapes: int | None = 2000  # subsample the training split for speed (None: all)
    points_per_step: int = 512  # random points per shape per training step
    hidden: int = 128
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    engine: EngineConfig = field(
        default_factory=lambda: EngineConfig(
            steps=600,
            batch_size=32,
            lr=2e-3,
            min_lr=1e-5,
            warmup_steps=30,
            weight_decay=0.05,
            log_every=50,
            ckpt_every=600,
            progress=False,
        )
    )


def thirds(depth: int) -> list[int]:
    """Three blocks spread over the depth (the last of each third): 3/7/11 of a 12-block ViT, as Point-JEPA
    reads them."""
    return sorted({max(0, round(depth * k / 3) - 1) for k in (1, 2, 3)})


@torch.no_grad()
def extract_partseg(
    model: PointModel,
    dataset: PointCloudDataset,
    cfg: PartSegConfig,
    batch_size: int = 32,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = False,
    cache: Path | None = None,
) -> dict[str, np.ndarray]:
    """Averaged block features per token plus everything needed to propagate them to points (``cache``: the
    folder where the tokenizer's output is kept, see ``tokenized``)."""
    if dataset.part_spec is None:
        raise DatasetError(f"{dataset.name} has no part labels: part segmentation needs a part dataset")
    if limit is not None and len(dataset) > limit:
        pick = np.sort(np.random.default_rng(seed).choice(len(dataset), size=limit, replace=False))
        if not isinstance(dataset, ArrayDataset):
            raise DatasetError("max_train_shapes needs an in-memory dataset; set partseg.max_train_shapes=null")
        dataset = dataset.subset(pick)
    model.eval()
    blocks = cfg.blocks or thirds(model.num_blocks)
    data = tokenized(
        model, dataset, cfg.num_points, cfg.num_groups, "first", batch_size, progress, "part tokens", cache
    )  # fmt: skip
    if "parts" not in data:
        raise DatasetError(f"{dataset.name}: some shapes have no per-point part labels")
    out: dict[str, list[np.ndarray]] = {"tokens": [], "idx": [], "w": []}
    for s in range(0, len(data["tokens"]), batch_size):
        sl = slice(s, s + batch_size)
        if cfg.features == "output":
            h = model.forward_tokens(data["tokens"][sl], data["centres"][sl])["tokens"]
            tokens = F.layer_norm(h, h.shape[-1:])
        else:
            res = model.forward_tokens(data["tokens"][sl], data["centres"][sl], indices=blocks)
            tokens = torch.stack([F.layer_norm(h, h.shape[-1:]) for h in res["intermediates"]]).mean(0)
        idx, w = three_nn(data["points"][sl], data["centres"][sl])
        out["tokens"].append(tokens.half().numpy())
        out["idx"].append(idx.to(torch.int16).numpy())
        out["w"].append(w.half().numpy())
    res_np = {k: np.concatenate(v) for k, v in out.items()}
    res_np["xyz"] = data["points"].half().numpy()
    res_np["parts"] = data["parts"].to(torch.int16).numpy()
    res_np["category"] = data["categories"].numpy()
    return res_np


class _SegLoss(nn.Module):
    head: PartSegHead

    def __init__(self, head: PartSegHead) -> None:
        super().__init__()
        self.head = head

    def forward(
        self,
        tokens: Tensor,
        idx: Tensor,
        w: Tensor,
        xyz: Tensor,
        category: Tensor,
        parts: Tensor,
        generator: torch.Generator,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.head(tokens, idx, w, xyz, category)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), parts.reshape(-1))
        return loss, {"point_acc": (logits.argmax(-1) == parts).float().mean()}


class PartSegTask(Task):
    """The engine task of the part head: random points of each training shape, cross-entropy over its
    category's parts."""

    module: _SegLoss

    def __init__(self, data: dict[str, np.ndarray], spec: PartSpec, cfg: PartSegConfig) -> None:
        self.data = data
        self.cfg = cfg
        self.module = _SegLoss(PartSegHead(data["tokens"].shape[-1], len(spec.categories), spec.num_parts, cfg.hidden))

    @override
    def num_samples(self) -> int:
        return len(self.data["tokens"])

    @override
    def batch(self, indices: np.ndarray, generator: torch.Generator, device: torch.device) -> dict[str, Any]:
        d = self.data
        n = d["xyz"].shape[1]
        pick = torch.randperm(n, generator=generator)[: self.cfg.points_per_step].numpy()
        sel = np.asarray(indices)
        return {
            "tokens": torch.from_numpy(d["tokens"][sel]).float().to(device),
            "idx": torch.from_numpy(d["idx"][sel][:, pick]).long().to(device),
            "w": torch.from_numpy(d["w"][sel][:, pick]).float().to(device),
            "xyz": torch.from_numpy(d["xyz"][sel][:, pick]).float().to(device),
            "category": torch.from_numpy(d["category"][sel]).long().to(device),
            "parts": torch.from_numpy(d["parts"][sel][:, pick]).long().to(device),
        }


@torch.no_grad()
def score(head: PartSegHead, data: dict[str, np.ndarray], spec: PartSpec, batch_size: int = 32) -> dict[str, Any]:
    """Per test shape its IoU over the parts of its category (argmax restricted to them), and the category."""
    head.eval()
    ious, cats = [], []
    allowed = torch.full((len(spec.categories), spec.num_parts), float("-inf"))
    for c, parts in spec.category_parts.items():
        allowed[c, parts] = 0.0
    for s in range(0, len(data["tokens"]), batch_size):
        sl = slice(s, s + batch_size)
        cat = torch.from_numpy(data["category"][sl]).long()
        logits = head(
            torch.from_numpy(data["tokens"][sl]).float(),
            torch.from_numpy(data["idx"][sl]).long(),
            torch.from_numpy(data["w"][sl]).float(),
            torch.from_numpy(data["xyz"][sl]).float(),
            cat,
        )
        pred = (logits + allowed[cat].unsqueeze(1)).argmax(-1).numpy()
        gt = data["parts"][sl]
        for i in range(len(pred)):
            c = int(cat[i])
            ious.append(shape_iou(pred[i], gt[i], spec.category_parts[c]))
            cats.append(c)
    return {**part_mious(ious, cats), "shape_ious": ious, "categories": cats}


def partseg_protocol(
    model: PointModel,
    train: PointCloudDataset,
    test: PointCloudDataset,
    cfg: PartSegConfig,
    run_dir: Path,
    progress: bool = False,
    cache: Path | None = None,
) -> dict[str, Any]:
    """Extract frozen features, train the head for each seed on the engine, score the test split."""
    spec = train.part_spec
    assert spec is not None
    tr = extract_partseg(model, train, cfg, limit=cfg.max_train_shapes, progress=progress, cache=cache)
    te = extract_partseg(model, test, cfg, progress=progress, cache=cache)
    results = []
    for seed in cfg.seeds:
        seed_all(seed)
        task = PartSegTask(tr, spec, cfg)
        engine = EngineConfig(**{**cfg.engine.__dict__, "seed": seed, "tensorboard": False})
        fit(task, engine, run_dir / f"seed{seed}", {"partseg": "head", "seed": seed}, overwrite=True)
        results.append(score(task.module.head, te, spec))
    cm, class_sd = mean_std([r["class_miou"] for r in results])
    im, instance_sd = mean_std([r["instance_miou"] for r in results])
    cs: float | None = class_sd if len(results) > 1 else None  # a single head seed has no spread to report
    is_: float | None = instance_sd if len(results) > 1 else None
    shape_iou_mean = np.mean([r["shape_ious"] for r in results], axis=0)  # per test shape, over head seeds
    return {
        "per_item": {"iou": shape_iou_mean.tolist(), "category": list(results[0]["categories"])},
        "class_miou": cm,
        "class_miou_std": cs,
        "instance_miou": im,
        "instance_miou_std": is_,
        "seeds": list(cfg.seeds),
        "train_shapes": len(tr["tokens"]),
        "test_shapes": len(te["tokens"]),
        "features": cfg.features,
        "blocks": (cfg.blocks or thirds(model.num_blocks)) if cfg.features == "blocks" else None,
        "num_points": cfg.num_points,
        "num_groups": cfg.num_groups or model.groups_for(cfg.num_points),
        "per_category_miou": {spec.categories[k]: v for k, v in results[0]["per_category_miou"].items()},
    }


@register_task
class PartSeg(EvalTask):
    """Part segmentation with a light head trained on the frozen model's token features (propagated to every
    point) on the train split; class mIoU (mean over categories of the mean shape IoU) on the test shapes."""

    name, Config, metric, metric_label, label = "partseg", PartSegConfig, "class_miou", "class mIoU", "seg."

    @override
    def run(self, ctx: Context, cfg: PartSegConfig, dataset: str, root: str | None) -> dict[str, Any]:
        if not hasattr(ctx.model, "forward_intermediates") and cfg.features == "blocks":
            raise EvalError(f"{ctx.info['model']} has no forward_intermediates: use partseg.features=output")
        train, test = ctx.data(dataset, "train", root), ctx.data(dataset, "test", root)
        res = partseg_protocol(
            ctx.model, train, test, cfg, ctx.folder / f"partseg-{dataset}", progress=ctx.cfg.progress, cache=ctx.cache
        )
        return {**res, "head_steps": cfg.engine.steps, **data_ids(test)}

    @staticmethod
    @override
    def statistic(items: Items, idx: np.ndarray) -> float:
        iou, cat = items["iou"][idx], items["category"][idx]
        return float(np.mean([iou[cat == c].mean() for c in np.unique(cat)]))
