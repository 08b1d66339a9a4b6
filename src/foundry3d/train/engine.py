"""The training engine's contract: its settings (:class:`EngineConfig`), the :class:`Task` a recipe implements,
the :class:`Hook` and :class:`Loop` hooks see, and the pure schedules (learning rate, seeds, batch order).
The loop itself is :func:`foundry3d.train.loop.fit`.

A recipe is a :class:`Task`: it owns the trainable module (whose ``forward`` returns
``(loss, metrics)``), says how to build a batch from dataset indices, and optionally updates
extra state after each step, evaluates, and exports a release at the end.

Reproducibility by construction: the sample order is a pure function of (seed, epoch) and every
step reseeds its random streams from (seed, step), so a run killed at any point and resumed from
its last checkpoint ends with the same weights as an uninterrupted run. Under torchrun every
rank builds the same global batch and keeps its own slice, so the data seen per step does not
depend on the number of processes.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from foundry3d.data.registry import parse_spec
from foundry3d.errors import ConfigError, Foundry3DError, InputError
from foundry3d.train.distributed import DistInfo
from foundry3d.train.runlog import RunLogger


@dataclass
class EngineConfig:
    """Optimisation and bookkeeping shared by every recipe."""

    steps: int = 1000
    batch_size: int = 32  # global batch (all processes together)
    # micro-batches per step: each process's share of the batch runs forward/backward in this many parts and
    # their gradients add up (the memory of batch_size / accumulate, the optimisation of batch_size)
    accumulate: int = 1
    lr: float = 1e-3
    min_lr: float = 1e-6
    warmup_steps: int = 100
    warmup_start_lr: float = 1e-6
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = None
    seed: int = 1
    log_every: int = 10
    ckpt_every: int = 200
    eval_every: int = 0  # 0: evaluate only at the end (if the task evaluates at all)
    threads: int | None = None
    device: str = "auto"
    progress: bool = True
    tensorboard: bool = True
    sync_batchnorm: bool = True  # under torchrun: BatchNorm statistics over all processes
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast of the forward pass (fp16: CUDA, with a scaler)
    compile: bool = False  # torch.compile the training module (inductor; a C++ compiler on CPUs, Triton on GPUs)
    # processes that build batches ahead of the step (reading, sampling, augmenting); 0: in the training
    # process. Each step's batch is a function of (seed, step) wherever it is built: runs are identical either way
    workers: int = 0

    def validate(self) -> None:
        """Refuse schedules the loop cannot run (steps, batch, accumulation, warm-up, intervals), one line each."""
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.accumulate < 1 or self.batch_size % self.accumulate:
            raise ConfigError(
                f"accumulate={self.accumulate} must be >= 1 and divide batch_size={self.batch_size} "
                "(each micro-batch gets an equal share)"
            )
        if self.warmup_steps < 0 or self.log_every < 1 or self.ckpt_every < 1:
            raise ConfigError("warmup_steps must be >= 0; log_every and ckpt_every >= 1")
        if self.lr <= 0 or self.min_lr < 0:
            raise ConfigError("lr must be > 0 and min_lr >= 0")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")


def check_training_data(datasets: list[str], num_points: int, cache_views: int = 0) -> None:
    """A training recipe's data: never a test split (held-out numbers stay held out), enough points."""
    for spec in datasets:
        for part in str(spec).split("+"):
            base, star, times = part.rpartition("*")
            split = parse_spec(base if star and times.isdigit() else part)[1]
            if split == "test":
                raise InputError(
                    f"data.datasets: {part} is a test split; training never reads one (use train, pool, fit or val)"
                )
    if num_points < 32:
        raise InputError(f"data.num_points must be >= 32 (at least one patch), got {num_points}")
    if cache_views < 0:
        raise InputError(f"data.cache_views must be >= 0, got {cache_views}")


NO_DECAY = {"mask_token", "supertokens", "queries", "cls_token"}  # learned tokens, never weight-decayed


class EngineError(Foundry3DError, ValueError):
    """An engine setting this machine cannot run."""


class TrainingDiverged(Foundry3DError, RuntimeError):
    """The loss became NaN/inf; the message names the step and the last good checkpoint."""


class Task:
    """Base recipe. Subclasses set ``module`` and implement ``num_samples`` and ``batch``."""

    module: nn.Module
    find_unused_parameters: bool = False

    def num_samples(self) -> int:
        """How many training items one pass holds (what the sampler draws from)."""
        raise NotImplementedError

    def batch(self, indices: np.ndarray, generator: torch.Generator, device: torch.device) -> dict[str, Any]:
        """The *global* batch for ``indices`` (a dict of tensors with the batch on dim 0)."""
        raise NotImplementedError

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups; no weight decay on biases, norms and learned tokens / queries (a
        SuperToken basis decayed towards 0 would drift away from the data it must match)."""
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or name.rsplit(".", 1)[-1] in NO_DECAY else decay).append(p)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def before_step(self, step: int) -> None:
        """Called before the batch of ``step`` is built (schedules that depend on the step)."""

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Work after an optimiser step (e.g. an EMA update); returns extra values to log."""
        return {}

    def evaluate(self, step: int) -> dict[str, float]:
        """Validation values to log at ``eval_every`` (none by default)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold for ``--resume`` to continue bit-identically (the module by default)."""
        return {"module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved."""
        self.module.load_state_dict(state["module"])

    def finalize(self, run_dir: Path) -> dict[str, Any]:
        """Write release artefacts at the end of training; returns a summary."""
        return {}

    def prepare_batches(self) -> None:
        """Build, in the training process, what every batch reads (called before worker processes start)."""

    def hooks(self) -> list[Hook]:
        """The task's own hooks (e.g. an initialisation from data before the first step), run after the
        engine's metrics, evaluation and checkpoint hooks and before the release is written."""
        return []


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None: fp32). bf16 on a CPU without bf16
    instructions would be emulated and slower than fp32: refused with one line instead."""
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise EngineError("engine.precision=fp16 needs a CUDA GPU; on a CPU use bf16 (or fp32)")
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise EngineError("engine.precision=bf16: this GPU has no bf16; use fp16 (with a loss scaler) or fp32")
    if device.type == "cpu" and not _cpu_bf16():
        raise EngineError("engine.precision=bf16: this CPU has no bf16 instructions (AVX512-BF16 / AMX); use fp32")
    return torch.bfloat16


def _cpu_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def lr_at(step: int, cfg: EngineConfig) -> float:
    """Linear warm-up from warmup_start_lr, then cosine from lr to min_lr at the last step."""
    if step < cfg.warmup_steps:
        return cfg.warmup_start_lr + (cfg.lr - cfg.warmup_start_lr) * step / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * t))


def seed_all(seed: int) -> None:
    """Seed torch, numpy and random before a recipe builds its modules (identical initial weights)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A well-mixed 63-bit seed for (seed, step, stream)."""
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


def batch_indices(num_samples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices of the global batch at ``step``: epoch-wise permutations, last partial batch dropped."""
    per_epoch = num_samples // batch_size
    if per_epoch < 1:
        raise InputError(f"batch_size={batch_size} exceeds the {num_samples} samples of the dataset")
    epoch, pos = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(num_samples)
    return perm[pos * batch_size : (pos + 1) * batch_size]


@dataclass
class Loop:
    """What the hooks of one training run share."""

    task: Task
    cfg: EngineConfig
    info: DistInfo
    run_dir: Path
    config: dict[str, Any]
    optim: torch.optim.Optimizer
    logger: RunLogger
    start: int
    last_good: Path | None
    scaler: torch.amp.GradScaler | None = None
    summary: dict[str, Any] = field(default_factory=dict)


class Hook:
    """Called by the loop: once at the start, after every step (``done`` steps so far; ``vals`` the step's loss
    and metrics, tensors still on the device, and its learning rate), at the end."""

    def on_start(self, loop: Loop) -> None:
        """Called once before the first step (after a resume: before the first step still to run)."""

    def on_step(self, loop: Loop, done: int, vals: dict[str, Any]) -> None:
        """Called after every optimiser step with the step count and the values logged at it."""

    def on_end(self, loop: Loop) -> None:
        """Called once after the last step."""

    def close(self) -> None:
        """Release what the hook holds (files, writers), also when the run fails."""
