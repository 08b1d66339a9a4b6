"""The one training loop: pretraining, distillation, heads and baselines are recipes on it.

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

import contextlib
import importlib
import json
import math
import random
import re
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from foundry3d.config import read_yaml, save_yaml, to_dict
from foundry3d.data.registry import parse_spec
from foundry3d.errors import ConfigError, Foundry3DError, InputError
from foundry3d.files import (
    LOCK,
    MARKER,
    drop_inherited_locks,
    folder_lock,
    read_marker,
    refuse_protected,
    remove_entries,
    user_entries,
    user_path,
    write_marker,
    write_text,
)
from foundry3d.models.checkpoint import CheckpointError, load_train_state, save_train_state
from foundry3d.train.distributed import (
    DistInfo,
    all_finite,
    all_reduce_mean,
    barrier,
    cleanup,
    init_distributed,
    resolve_device,
)
from foundry3d.train.sync_batchnorm import convert_sync_batchnorm


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


class RunDirError(Foundry3DError, RuntimeError):
    """The run directory holds another run, or cannot be resumed."""


class Task:
    """Base recipe. Subclasses set ``module`` and implement ``num_samples`` and ``batch``."""

    module: nn.Module
    find_unused_parameters: bool = False

    def num_samples(self) -> int:
        raise NotImplementedError

    def batch(self, indices: np.ndarray, generator: torch.Generator, device: torch.device) -> dict[str, Any]:
        """The *global* batch for ``indices`` (a dict of tensors with the batch on dim 0)."""
        raise NotImplementedError

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups; no weight decay on biases, norms and learned tokens / queries (a
        SuperToken basis decayed towards 0 would drift away from the data it must match)."""
        decay, no_decay = [], []
        for name, p in self.module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or name.rsplit(".", 1)[-1] in NO_DECAY else decay).append(p)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def before_step(self, step: int) -> None:
        """Called before the batch of ``step`` is built (schedules that depend on the step)."""

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        return {}

    def evaluate(self, step: int) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
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


def _shard(value: Any, rank: int, world: int) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        n = value.shape[0]
        if n % world:
            raise InputError(f"global batch {n} is not divisible by the {world} processes")
        per = n // world
        return value[rank * per : (rank + 1) * per]
    return value


class RunLogger:
    """metrics.jsonl + TensorBoard on rank 0; silent elsewhere."""

    def __init__(self, run_dir: Path, info: DistInfo, tensorboard: bool) -> None:
        self.info = info
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if info.is_main and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:  # tensorboard is a declared dependency; keep training without it
                self.tb = None

    def log(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.info.is_main:
            return
        row = {"step": step, "split": split, "time": round(time.time(), 3), **values}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{split}/{k}", v, step)

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint so the curve has no duplicates."""
        if not self.info.is_main or not self.path.exists():
            return
        rows = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
        keep = [ln for ln in rows if json.loads(ln).get("step", 0) <= step]
        self.path.write_text("".join(r + "\n" for r in keep))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(run_dir: str | Path, split: str | None = "train") -> list[dict[str, Any]]:
    """Rows of a run's metrics.jsonl (optionally one split)."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    rows = [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
    return [r for r in rows if split is None or r.get("split") == split]


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return {k.rstrip("."): v for k, v in out.items()}


def record_config_changes(run_dir: Path, config: dict[str, Any], step: int) -> dict[str, list[Any]]:
    """A run resumed with a changed recipe (e.g. fewer steps) keeps an honest record: ``config.yaml``
    becomes the new resolved config and ``config_changes.jsonl`` gets the diff and the step it starts at."""
    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    old, new = _flat(read_yaml(path)), _flat(json.loads(json.dumps(config, default=str)))
    changes = {k: [old.get(k), new.get(k)] for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}
    if changes:
        with open(run_dir / "config_changes.jsonl", "a") as f:
            f.write(json.dumps({"time": time.time(), "at_step": step, "changes": changes}) + "\n")
        save_yaml(config, path)
    return changes


RUN_MARKER = MARKER
# Everything a run writes into its folder; --overwrite and an abandoned start remove these and nothing else.
RUN_FILES = (
    "config.yaml",
    "config_changes.jsonl",
    "metrics.jsonl",
    "summary.json",
    "checkpoints",
    "release",
    "tb",
    "cache",
    "snapshots",
)


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Raise unless ``run_dir`` is new, empty, a marked run, or (to resume) an older run; changes nothing."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--out {run_dir} is an existing file: expected a folder for the run")
    refuse_protected(run_dir)
    if not run_dir.is_dir() or read_marker(run_dir) is not None:
        return
    if not any(p.name != LOCK for p in run_dir.iterdir()):
        return
    legacy = resume and (run_dir / "checkpoints" / "last.pt").is_file() and not user_entries(run_dir, RUN_FILES)
    if not legacy:
        raise RunDirError(
            f"{run_dir} is not empty and holds no foundry3d run (no {RUN_MARKER} marker): refusing to write "
            f"into it; choose another --out"
        )


def prepare_run_dir(
    run_dir: Path, config: dict[str, Any], resume: bool, overwrite: bool, info: DistInfo
) -> Path | None:
    """Create or validate the run directory; returns the checkpoint to resume from, if any.

    Only a folder that provably holds a foundry3d run (its marker file, written when the run was
    created) is ever cleared, and then only the files a run writes: a user's folder is never
    touched, whatever the flags. A run folder from before markers existed (only a run's files in it)
    is resumed, and marked only once its checkpoint has loaded (see :func:`fit`)."""
    check_run_dir(run_dir, resume)
    ckpt = run_dir / "checkpoints" / "last.pt"
    exists = run_dir.is_dir() and any(p.name != LOCK for p in run_dir.iterdir())
    is_run = read_marker(run_dir) is not None if run_dir.is_dir() else False
    released = (run_dir / "release" / "model.safetensors").is_file()
    if resume and ckpt.exists():  # its training state is checked when loaded; nothing is deleted
        return ckpt
    if resume and released:
        raise RunDirError(
            f"cannot resume {run_dir}: the run finished (its release exists) but its checkpoints are gone; its "
            f"release is kept. Pass --overwrite to train it again from scratch"
        )
    abandoned = is_run and not ckpt.exists() and not released  # killed or failed before its first checkpoint
    if resume and not exists and info.is_main:
        print(f"foundry3d: nothing to resume in {run_dir}: starting a new run there", file=sys.stderr)
    if exists and not (overwrite or abandoned):
        raise RunDirError(
            f"run directory {run_dir} already holds a run; pass resume=True (--resume) to continue it "
            f"or overwrite=True (--overwrite) to start again"
        )
    if exists and info.is_main:
        remove_entries(run_dir, RUN_FILES)
    barrier(info)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not is_run:
            write_marker(run_dir, "run")
        save_yaml(config, run_dir / "config.yaml")
    barrier(info)
    return None


def fit(
    task: Task,
    cfg: EngineConfig,
    run_dir: str | Path,
    config: dict[str, Any],
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train ``task`` for ``cfg.steps`` steps in ``run_dir``; returns the final summary."""
    cfg.validate()
    run_dir = user_path(run_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    info = init_distributed(device)
    if info.enabled and device.type == "cuda":
        device = resolve_device("cuda", info.local_rank)
    created = not run_dir.exists()
    try:
        check_run_dir(run_dir, resume)  # before the lock writes anything into the folder
        with folder_lock(run_dir) if info.is_main else contextlib.nullcontext():
            return _fit(task, cfg, run_dir, config, resume, overwrite, info, device)
    except Foundry3DError:
        if created and info.is_main and run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {LOCK}:
            shutil.rmtree(run_dir)  # a refused start leaves no empty folder behind
        raise
    finally:
        cleanup(info)


def _fit(
    task: Task,
    cfg: EngineConfig,
    run_dir: Path,
    config: dict[str, Any],
    resume: bool,
    overwrite: bool,
    info: DistInfo,
    device: torch.device,
) -> dict[str, Any]:
    if cfg.batch_size % (info.world_size * cfg.accumulate):
        raise EngineError(
            f"engine.batch_size={cfg.batch_size} is not divisible by {info.world_size} process(es) x "
            f"engine.accumulate={cfg.accumulate} micro-batches"
        )
    amp = autocast_dtype(cfg.precision, device)  # before the run folder is touched: a setting we cannot run
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    ckpt_path = prepare_run_dir(run_dir, to_dict(config), resume, overwrite, info)
    task.module.to(device)
    optim = torch.optim.AdamW(task.param_groups(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    start = 0
    if ckpt_path is not None:
        state = load_train_state(ckpt_path)
        if int(state["step"]) > cfg.steps:
            raise RunDirError(f"{ckpt_path} is at step {state['step']}, beyond steps={cfg.steps}")
        try:
            task.load_state_dict(state["task"])
            optim.load_state_dict(state["optimizer"])
            if scaler.is_enabled() and "scaler" in state:  # fp16: the loss scale goes on where it was
                scaler.load_state_dict(state["scaler"])
        except Foundry3DError:
            raise
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{ckpt_path} does not fit this recipe: {e}") from e
        start = int(state["step"])
        if info.is_main:
            if read_marker(run_dir) is None:  # a run from before markers existed, now proven to be one
                write_marker(run_dir, "run")
            record_config_changes(run_dir, to_dict(config), start)
    model: nn.Module = task.module
    if info.enabled:
        if cfg.sync_batchnorm:
            convert_sync_batchnorm(task.module, device)
        model = DistributedDataParallel(
            task.module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=task.find_unused_parameters,
        )
    if cfg.compile:
        model = _compiled(model)
    logger = RunLogger(run_dir, info, cfg.tensorboard)
    logger.truncate_after(start)
    loop = Loop(task, cfg, info, run_dir, config, optim, logger, start, ckpt_path, scaler)
    hooks: list[Hook] = [MetricsHook(), *task.hooks(), EvalHook(), CheckpointHook(), ReleaseHook()]
    n = task.num_samples()
    try:
        for h in hooks:
            h.on_start(loop)
        batches = StepBatches(task, cfg, n, info, device).iterate(start)
        for step in range(start, cfg.steps):
            lr = lr_at(step, cfg)
            for g in optim.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            torch.manual_seed(step_seed(cfg.seed, step, 1 + info.rank))  # dropout, drop path
            task.before_step(step)
            batch, gen = next(batches)
            model.train()
            optim.zero_grad(set_to_none=True)
            loss, metrics = _accumulate(model, batch, gen, cfg.accumulate, amp, device, scaler, info, loop, step)
            if cfg.grad_clip:
                scaler.unscale_(optim)
                metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(task.module.parameters(), cfg.grad_clip)
            scaler.step(optim)
            scaler.update()
            extra = task.after_step(step + 1, cfg.steps)
            vals = {"loss": loss, "lr": lr, **metrics, **extra}  # tensors stay on the device until logged
            for h in hooks:
                h.on_step(loop, step + 1, vals)
        for h in hooks:
            h.on_end(loop)
        barrier(info)
    finally:
        for h in hooks:
            h.close()
        logger.close()
    return loop.summary


class StepBatches(torch.utils.data.Dataset):
    """The batch of each step, as a dataset indexed by step: built in the training process (``workers=0``) or
    ahead of time in worker processes by a DataLoader. Either way a step's batch and the state of the generator
    the step goes on with are functions of (seed, step) alone, so ``--resume`` and ``workers`` change nothing."""

    def __init__(self, task: Task, cfg: EngineConfig, n: int, info: DistInfo, device: torch.device) -> None:
        self.task, self.cfg, self.n, self.info, self.device = task, cfg, n, info, device

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> tuple[dict[str, Any], torch.Tensor]:
        """(this process's share of the batch, on the CPU; the generator's state after building it)."""
        gen = torch.Generator().manual_seed(step_seed(self.cfg.seed, step, 0))  # shared by all ranks
        self.task.before_step(step)
        batch = self.task.batch(batch_indices(self.n, self.cfg.batch_size, self.cfg.seed, step), gen, _CPU)
        batch = {k: _shard(v, self.info.rank, self.info.world_size) for k, v in batch.items()}
        return batch, gen.get_state()

    def iterate(self, start: int) -> Iterator[tuple[dict[str, Any], torch.Generator]]:
        """(batch on the device, generator) of every step from ``start``."""
        if self.cfg.workers == 0:
            items: Any = (self[step] for step in range(start, self.cfg.steps))
        else:
            self.task.prepare_batches()  # what workers must share rather than build each (e.g. cached views)
            items = torch.utils.data.DataLoader(
                self,
                sampler=range(start, self.cfg.steps),
                batch_size=None,
                num_workers=self.cfg.workers,
                prefetch_factor=2,
                multiprocessing_context="fork",
                timeout=900,  # a worker that hangs stops the run instead of the run waiting for ever
                worker_init_fn=_worker_init,
            )
        for batch, state in items:
            gen = torch.Generator()
            gen.set_state(state)
            yield {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in batch.items()}, gen


_CPU = torch.device("cpu")


def _worker_init(worker_id: int) -> None:
    drop_inherited_locks()  # a killed run's folder is free at once for --resume


def _compiled(model: nn.Module) -> nn.Module:
    """``torch.compile(model)``, or one line saying why this platform cannot (checked before any step)."""
    if not hasattr(torch, "compile"):
        raise EngineError("engine.compile=true needs torch >= 2.0 (torch.compile)")
    try:
        importlib.import_module("torch._inductor.config")  # the default backend
    except ImportError as e:
        raise EngineError(f"engine.compile=true: the inductor backend is unavailable here ({e}); set it false") from e
    if shutil.which("cc") is None and shutil.which("gcc") is None and not torch.cuda.is_available():
        raise EngineError("engine.compile=true on a CPU needs a C++ compiler (cc/gcc) on PATH; set it false")
    return torch.compile(model)


def _accumulate(
    model: nn.Module,
    batch: dict[str, Any],
    gen: torch.Generator,
    parts: int,
    amp: torch.dtype | None,
    device: torch.device,
    scaler: torch.amp.GradScaler,
    info: DistInfo,
    loop: Loop,
    step: int,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Forward and backward over ``parts`` micro-batches of this process's batch; the mean loss and metrics.
    Gradients are synchronised across processes once, on the last micro-batch."""
    total: Tensor | None = None
    sums: dict[str, Tensor] = {}
    for part in range(parts):
        micro = {k: _shard(v, part, parts) for k, v in batch.items()}
        last = part == parts - 1
        sync = contextlib.nullcontext() if last or not isinstance(model, DistributedDataParallel) else model.no_sync()
        with sync:
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss, metrics = model(**micro, generator=gen)
            loss = loss.float()
            if not all_finite(loss, info):  # every rank stops together when any rank diverges
                where = f"{loop.last_good}" if loop.last_good is not None else "none (no checkpoint written yet)"
                raise TrainingDiverged(
                    f"loss became {loss.item()} at step {step}; stopping. Last good checkpoint: {where}"
                )
            scaler.scale(loss / parts).backward()
        total = loss.detach() / parts if total is None else total + loss.detach() / parts
        for k, v in metrics.items():
            v = torch.as_tensor(v).detach().float() / parts
            sums[k] = v if k not in sums else sums[k] + v
    assert total is not None
    return total, sums


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

    def on_start(self, loop: Loop) -> None: ...

    def on_step(self, loop: Loop, done: int, vals: dict[str, Any]) -> None: ...

    def on_end(self, loop: Loop) -> None: ...

    def close(self) -> None: ...


class MetricsHook(Hook):
    """Means of the step metrics over ``log_every`` steps (all ranks) to metrics.jsonl / TensorBoard."""

    def on_start(self, loop: Loop) -> None:
        self.acc: dict[str, float] = {}
        self.n, self.t0 = 0, time.time()
        self.bar = _progress(loop.cfg, loop.info, loop.start)

    def on_step(self, loop: Loop, done: int, vals: dict[str, Any]) -> None:
        for k, v in vals.items():  # summed in float64 where they are: no host sync until a row is logged
            v = v.detach().double() if isinstance(v, Tensor) else v
            self.acc[k] = self.acc.get(k, 0.0) + v
        self.n += 1
        if done % loop.cfg.log_every == 0 or done == loop.cfg.steps:
            keys = sorted(self.acc)
            means = [float(self.acc[k]) / self.n for k in keys]
            mean = all_reduce_mean(torch.tensor(means, dtype=torch.float64), loop.info)
            row = dict(zip(keys, mean.tolist()))
            row["samples_per_s"] = self.n * loop.cfg.batch_size / max(1e-9, time.time() - self.t0)
            loop.logger.log(done, "train", row)
            self.acc, self.n, self.t0 = {}, 0, time.time()
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if getattr(self, "bar", None) is not None:
            self.bar.close()


class EvalHook(Hook):
    """The task's evaluation at step 0 (a curve from the initial weights), every ``eval_every`` steps,
    and at the end (its numbers open the run's summary)."""

    def on_start(self, loop: Loop) -> None:
        if loop.cfg.eval_every and loop.start == 0:
            _evaluate(loop.task, 0, loop.info, loop.logger)

    def on_step(self, loop: Loop, done: int, vals: dict[str, Any]) -> None:
        if loop.cfg.eval_every and done % loop.cfg.eval_every == 0 and done != loop.cfg.steps:
            _evaluate(loop.task, done, loop.info, loop.logger)

    def on_end(self, loop: Loop) -> None:
        if loop.cfg.steps > loop.start or not (loop.run_dir / "release").exists():
            loop.summary = _evaluate(loop.task, loop.cfg.steps, loop.info, loop.logger)


class ReleaseHook(Hook):
    """At the end: the task writes its release and the run its summary (a finished run resumed: read back)."""

    def on_end(self, loop: Loop) -> None:
        run_dir = loop.run_dir
        if loop.cfg.steps > loop.start or not (run_dir / "release").exists():
            if loop.info.is_main:
                loop.summary.update(loop.task.finalize(run_dir))
                write_text(run_dir / "summary.json", json.dumps(to_dict(loop.summary), indent=2) + "\n")
        elif (run_dir / "summary.json").exists():
            loop.summary = json.loads((run_dir / "summary.json").read_text())


class CheckpointHook(Hook):
    """The training state every ``ckpt_every`` steps and at the last step (atomic writes)."""

    def on_step(self, loop: Loop, done: int, vals: dict[str, Any]) -> None:
        if done % loop.cfg.ckpt_every == 0 or done == loop.cfg.steps:
            loop.last_good = _checkpoint(loop.task, loop.optim, done, loop.config, loop.run_dir, loop.info, loop.scaler)


def _evaluate(task: Task, step: int, info: DistInfo, logger: RunLogger) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if info.is_main:
        out = task.evaluate(step) or {}
        if out:
            logger.log(step, "eval", {k: float(v) for k, v in out.items() if isinstance(v, (int, float))})
    barrier(info)
    return out


def _checkpoint(
    task: Task,
    optim: torch.optim.Optimizer,
    step: int,
    config: dict,
    run_dir: Path,
    info: DistInfo,
    scaler: torch.amp.GradScaler | None = None,
) -> Path:
    path = run_dir / "checkpoints" / "last.pt"
    if info.is_main:
        save_train_state(
            {
                "step": step,
                "task": task.state_dict(),
                "optimizer": optim.state_dict(),
                **({"scaler": scaler.state_dict()} if scaler is not None and scaler.is_enabled() else {}),
                "config": to_dict(config),
            },
            path,
        )
    barrier(info)
    return path


def _progress(cfg: EngineConfig, info: DistInfo, start: int) -> Any:
    if not (cfg.progress and info.is_main):
        return None
    return tqdm(total=cfg.steps, initial=start, desc="train", unit="step", file=sys.stderr, dynamic_ncols=True)
