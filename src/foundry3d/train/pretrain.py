"""``foundry3d pretrain``: Point-JEPA self-supervised pretraining on the shared engine.

The recipe trains on any datasets that yield point clouds (labels are ignored), optionally
probes the backbone with a linear SVM every ``engine.eval_every`` steps to record the curve,
and writes the online backbone as a release (``<out>/release``) that ``foundry3d.load`` reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from typing_extensions import override

from foundry3d.config import load_config, parse_override, to_dict
from foundry3d.data.registry import load_dataset
from foundry3d.data.transforms import AugmentConfig, Sampling, augment, collate
from foundry3d.errors import ConfigError
from foundry3d.files import user_path
from foundry3d.models.checkpoint import save_release
from foundry3d.models.hub import create_model
from foundry3d.models.jepa import JEPAConfig, PointJEPA
from foundry3d.train.engine import EngineConfig, Task, check_training_data, seed_all
from foundry3d.train.loop import fit
from foundry3d.train.probe import Probe, ProbeSection, probe_datasets


@dataclass
class ModelSection:
    """The backbone to pretrain: a registered variant and its config overrides."""

    variant: str = "tiny"
    options: dict = field(default_factory=dict)  # BackboneConfig overrides, e.g. {drop_path_rate: 0.1}


@dataclass
class DataSection:
    """The pretraining data (Debian-built corpora or your folders, never a test split), cloud size, sampling
    and augmentation."""

    datasets: list[str] = field(
        default_factory=lambda: ["sh3d16:train", "sh3d16:pool", "kicad33:train", "kicad33:pool"]
    )
    root: str | None = None  # dataset cache folder (default: ~/.cache/foundry3d)
    num_points: int = 1024
    sampling: Sampling = "random"
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> None:
        """Refuse pretraining data that cannot be read at this cloud size (checked before any work)."""
        check_training_data(self.datasets, self.num_points)


@dataclass
class PretrainConfig:
    """A pretraining recipe: backbone, Point-JEPA objective, data, probe, engine and snapshots (strict; saved
    resolved with the run)."""

    model: ModelSection = field(default_factory=ModelSection)
    jepa: JEPAConfig = field(default_factory=JEPAConfig)
    data: DataSection = field(default_factory=DataSection)
    probe: ProbeSection = field(default_factory=ProbeSection)
    engine: EngineConfig = field(default_factory=EngineConfig)
    # releases of the online backbone every N steps in <out>/snapshots/step_N: the curve can then be scored
    # with `foundry3d eval ... splits=val` (C chosen by cross-validation), not only by the fixed-C probe
    snapshot_every: int = 0

    def validate(self) -> None:
        """Refuse a negative snapshot interval (0: none)."""
        if self.snapshot_every < 0:
            raise ConfigError(f"snapshot_every must be >= 0 (0: none), got {self.snapshot_every}")


class PretrainTask(Task):
    """The engine task of Point-JEPA pretraining, with the probe and snapshot hooks."""

    module: PointJEPA

    def __init__(self, cfg: PretrainConfig, run_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.module = PointJEPA(create_model(cfg.model.variant, **cfg.model.options), cfg.jepa)
        self.dataset = load_dataset("+".join(cfg.data.datasets), root=cfg.data.root)
        cfg.probe.datasets = probe_datasets(cfg.probe, cfg.data.datasets, cfg.data.root)  # recorded as resolved
        self.probe = Probe(cfg.probe, cfg.data.root)
        self._t0 = time.time()

    @override
    def num_samples(self) -> int:
        return len(self.dataset)

    @override
    def batch(self, indices: np.ndarray, generator: torch.Generator, device: torch.device) -> dict[str, Any]:
        d = self.cfg.data
        b = collate([self.dataset[int(i)] for i in indices], d.num_points, d.sampling, generator)
        pts = augment(b["points"], d.augment, generator)
        start = torch.randint(d.num_points, (len(indices),), generator=generator)
        return {"points": pts.to(device), "fps_start": start.to(device)}

    @override
    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        tau = self.module.update_target(step, total_steps)
        every = self.cfg.snapshot_every
        if every and self.run_dir is not None and step % every == 0:
            snap = self.run_dir / "snapshots" / f"step_{step:06d}"
            meta = {"recipe": "point-jepa pretraining (snapshot)", "steps": step, "config": to_dict(self.cfg)}
            save_release(self.module.backbone, snap, meta, overwrite=True)
        return {"ema_tau": tau}

    @override
    def evaluate(self, step: int) -> dict[str, float]:
        out = self.probe(self.module.backbone)
        if out:
            out["wall_minutes"] = (time.time() - self._t0) / 60
        return out

    @override
    def finalize(self, run_dir: Path) -> dict[str, Any]:
        meta = {
            "recipe": "point-jepa pretraining (foundry3d pretrain)",
            "variant": self.cfg.model.variant,
            "steps": self.cfg.engine.steps,
            "batch_size": self.cfg.engine.batch_size,
            "datasets": self.cfg.data.datasets,
            "config": to_dict(self.cfg),
        }
        path = save_release(self.module.backbone, run_dir / "release", meta, overwrite=True)
        return {"release": str(path)}


def pretrain(
    config: str | Path | dict | None = None,
    overrides: list[str] | dict | None = None,
    out: str | Path = "runs/pretrain",
    resume: bool = False,
    overwrite: bool = False,
    data: list[str] | str | None = None,
) -> dict[str, Any]:
    """Point-JEPA self-supervised pretraining of a point-cloud backbone (a teacher).

    Args:
        config: recipe YAML file or built-in name (e.g. pretrain/tiny); see foundry3d/configs.
        overrides: dotted KEY=VALUE changes to the recipe, e.g. engine.steps=500.
        out: run directory.
        resume: continue the run in ``out`` from its last checkpoint.
        overwrite: replace the run in ``out`` (only a foundry3d run folder is ever cleared).
        data: dataset specs to pretrain on instead of the recipe's, e.g. folder:/scans (labels are not used;
            never a test split).
    """
    if data is not None:
        ov = dict(overrides) if isinstance(overrides, dict) else dict(map(parse_override, overrides or []))
        overrides = {**ov, "data.datasets": [data] if isinstance(data, str) else list(data)}
    cfg = load_config(PretrainConfig, config, overrides)
    seed_all(cfg.engine.seed)
    task = PretrainTask(cfg, user_path(out))
    return fit(task, cfg.engine, out, to_dict(cfg), resume=resume, overwrite=overwrite)
