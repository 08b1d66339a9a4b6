"""``foundry3d expert``: the paper's *expert* baseline, standard task-specific logit distillation.

Two runs on the shared engine, in ``<out>/finetune`` and ``<out>/kd``:

1. fine-tune the teacher with a task head (classification ``cls:DATASET`` or part segmentation
   ``seg:DATASET``): head only for ``finetune.frozen_steps``, then everything (Point-JEPA's staged
   unfreezing);
2. train a student of the same architecture as the universal one (default: Foundry, s = 16) with
   its own head on the same task, loss ``alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * CE``.

The expert's student backbone is released (``<out>/kd/release``) like any student, so the
evaluation suite can measure it on every task: what task-specific distillation keeps of the
teacher's universality.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from foundry3d.config import load_config, parse_override, to_dict
from foundry3d.data.base import DatasetError
from foundry3d.data.registry import load_dataset, parse_spec
from foundry3d.data.transforms import AugmentConfig, augment, collate
from foundry3d.errors import ConfigError
from foundry3d.models.base import PointModel
from foundry3d.models.checkpoint import save_release
from foundry3d.models.heads import Classifier, Segmenter
from foundry3d.models.hub import create_student, load_teacher
from foundry3d.models.student import StudentArch
from foundry3d.train.engine import EngineConfig, Task, seed_all
from foundry3d.train.loop import fit


@dataclass
class FinetuneSection:
    """The expert's fine-tuning stage: head-only warm-up steps, label smoothing, schedule."""

    frozen_steps: int = 300  # head only, then the whole teacher
    label_smoothing: float = 0.1
    engine: EngineConfig = field(
        default_factory=lambda: EngineConfig(
            steps=1500, batch_size=32, lr=5e-4, warmup_steps=100, grad_clip=10.0, log_every=50, ckpt_every=500
        )
    )


@dataclass
class KDSection:
    """The expert's distillation stage: temperature and weight of the logit KD, schedule."""

    temperature: float = 4.0
    alpha: float = 0.5  # weight of the KL term (1 - alpha on cross-entropy)
    engine: EngineConfig = field(
        default_factory=lambda: EngineConfig(
            steps=1500, batch_size=32, lr=5e-4, warmup_steps=100, grad_clip=10.0, log_every=50, ckpt_every=500
        )
    )


@dataclass
class ExpertConfig:
    """The expert baseline's recipe: one task, the teacher, the student's architecture, the fine-tuning and the
    KD stages."""

    task: str = "cls:sh3d16"  # cls:DATASET (classification) or seg:DATASET (part segmentation)
    teacher: str = "embedded"
    root: str | None = None
    num_points: int | None = None  # None: 1024 for cls, 2048 for seg
    student: StudentArch = field(default_factory=StudentArch)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    kd: KDSection = field(default_factory=KDSection)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(scale=(0.8, 1.2), rotate_up=False))

    def validate(self) -> None:
        """Refuse a task that is not cls:DATASET or seg:DATASET and KD settings out of range."""
        kind, sep, name = self.task.partition(":")
        if kind not in ("cls", "seg") or not sep or not name:
            raise ConfigError(f"expert task must be cls:DATASET or seg:DATASET, got {self.task!r}")
        if not 0.0 <= self.kd.alpha <= 1.0 or self.kd.temperature <= 0:
            raise ConfigError("kd.alpha must be in [0, 1] and kd.temperature > 0")

    @property
    def kind(self) -> Literal["cls", "seg"]:
        """cls or seg: which head and loss the expert trains."""
        return self.task.split(":")[0]  # type: ignore[return-value]

    @property
    def points(self) -> int:
        """The cloud size the expert trains and is scored at (1,024 for classification, 2,048 for segmentation
        unless set)."""
        return self.num_points or (1024 if self.kind == "cls" else 2048)


def _task_model(backbone: PointModel, cfg: ExpertConfig, train: Any) -> Classifier | Segmenter:
    if cfg.kind == "cls":
        return Classifier(backbone, train.num_classes)
    spec = train.part_spec
    if spec is None:
        raise DatasetError(f"{cfg.task}: the dataset has no part labels")
    return Segmenter(backbone, len(spec.categories), spec.num_parts)


def _logits(model: Classifier | Segmenter, batch: dict[str, Tensor], kind: str) -> Tensor:
    if kind == "cls":
        assert isinstance(model, Classifier)
        return model.logits(batch["points"])
    assert isinstance(model, Segmenter)
    out = model.logits(batch["points"], batch["category"])
    return out.reshape(-1, out.shape[-1])


def _targets(batch: dict[str, Tensor], kind: str) -> Tensor:
    return batch["labels"] if kind == "cls" else batch["parts"].reshape(-1)


class _Stage(nn.Module):
    """Fine-tuning (teacher is None) or KD (a frozen fine-tuned teacher) loss for the engine."""

    model: Classifier | Segmenter
    teacher: Classifier | Segmenter | None

    def __init__(
        self, model: Classifier | Segmenter, cfg: ExpertConfig, teacher: Classifier | Segmenter | None = None
    ) -> None:
        super().__init__()
        self.model, self.cfg, self.teacher = model, cfg, teacher

    def train(self, mode: bool = True) -> _Stage:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, generator: torch.Generator, **batch: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        kind = self.cfg.kind
        logits = _logits(self.model, batch, kind)
        y = _targets(batch, kind)
        if self.teacher is None:
            loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.finetune.label_smoothing)
            return loss, {"acc": (logits.argmax(-1) == y).float().mean()}
        with torch.no_grad():
            t_logits = _logits(self.teacher, batch, kind)
        temp, alpha = self.cfg.kd.temperature, self.cfg.kd.alpha
        kl = F.kl_div(
            F.log_softmax(logits / temp, -1), F.log_softmax(t_logits / temp, -1), reduction="batchmean", log_target=True
        )
        ce = F.cross_entropy(logits, y)
        loss = alpha * temp * temp * kl + (1.0 - alpha) * ce
        return loss, {"kl": kl.detach(), "ce": ce.detach(), "acc": (logits.argmax(-1) == y).float().mean()}


class ExpertTask(Task):
    """The engine task of one expert stage (fine-tuning or KD), with the head-only warm-up."""

    module: _Stage

    def __init__(self, module: _Stage, train: Any, cfg: ExpertConfig, frozen_steps: int = 0) -> None:
        self.module, self.train_set, self.cfg, self.frozen_steps = module, train, cfg, frozen_steps

    @override
    def num_samples(self) -> int:
        return len(self.train_set)

    @override
    def before_step(self, step: int) -> None:
        if self.frozen_steps:
            self.module.model.backbone.requires_grad_(step >= self.frozen_steps)

    @override
    def batch(self, indices: np.ndarray, generator: torch.Generator, device: torch.device) -> dict[str, Any]:
        b = collate([self.train_set[int(i)] for i in indices], self.cfg.points, "random", generator)
        pts = augment(b["points"], self.cfg.augment, generator) if self.cfg.kind == "cls" else b["points"]
        out = {"points": pts.to(device), "labels": b["labels"].to(device), "category": b["categories"].to(device)}
        if "parts" in b:
            out["parts"] = b["parts"].to(device)
        return out


def expert(
    task: str = "cls:sh3d16",
    teacher: str = "embedded",
    out: str | Path = "runs/expert",
    config: str | Path | dict | None = None,
    overrides: list[str] | dict | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """The expert baseline: fine-tune the teacher on one task, then distil a student with logit KD.

    Args:
        task: cls:DATASET (classification) or seg:DATASET (part segmentation).
        teacher: teacher release or embedded[:NAME].
        out: run folder (finetune/ and kd/ runs inside; the expert is kd/release).
        config: recipe YAML with ExpertConfig fields.
        overrides: dotted KEY=VALUE changes, e.g. kd.temperature=2.
        resume: continue both runs from their last checkpoints.
        overwrite: start both runs again.
    """
    cfg = load_config(ExpertConfig, config, {**_as_dict(overrides), "task": task, "teacher": teacher})
    out = Path(out)
    name, _, at = parse_spec(cfg.task.split(":", 1)[1])
    train = load_dataset(f"{name}:train" + (f"@{at}" if at else ""), root=cfg.root)
    base = load_teacher(cfg.teacher)
    # 1. the fine-tuned teacher (staged unfreezing)
    seed_all(cfg.finetune.engine.seed)
    ft_model = _task_model(copy.deepcopy(base).requires_grad_(True), cfg, train)
    ft = ExpertTask(_Stage(ft_model, cfg), train, cfg, cfg.finetune.frozen_steps)
    fit(ft, cfg.finetune.engine, out / "finetune", to_dict(cfg), resume=resume, overwrite=overwrite)
    ft_model.eval().requires_grad_(False)
    # 2. the expert student, from the *pretrained* teacher's weights (like the universal student)
    seed_all(cfg.kd.engine.seed)
    arch = {f.name: getattr(cfg.student, f.name) for f in dataclasses.fields(StudentArch)}
    student = create_student(base, **arch)
    student.tokenizer.requires_grad_(True)
    kd_model = _task_model(student, cfg, train)
    kd = ExpertTask(_Stage(kd_model, cfg, ft_model), train, cfg)
    summary = fit(kd, cfg.kd.engine, out / "kd", to_dict(cfg), resume=resume, overwrite=overwrite)
    release = out / "kd" / "release"
    meta = {"recipe": f"expert logit KD on {cfg.task}", "teacher": cfg.teacher, "config": to_dict(cfg)}
    save_release(student, release, meta, overwrite=True)
    return {**summary, "release": str(release), "task": cfg.task}


def _as_dict(overrides: list[str] | dict | None) -> dict[str, Any]:
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    return dict(parse_override(o) for o in overrides)
