"""The one training loop (:func:`fit`): pretraining, distillation, heads and baselines are tasks on it.

Per step: the learning rate of the schedule, the step's batch (:mod:`.batches`), forward and backward over
``engine.accumulate`` micro-batches under autocast, clipping, the optimiser step, then the hooks (metrics,
evaluation, checkpoint, the task's own, release: :mod:`.hooks`). The run folder is :mod:`.rundir`'s, the log
:mod:`.runlog`'s."""

from __future__ import annotations

import contextlib
import importlib
import shutil
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from foundry3d.config import to_dict
from foundry3d.errors import Foundry3DError
from foundry3d.files import LOCK, folder_lock, read_marker, user_path, write_marker
from foundry3d.models.checkpoint import CheckpointError, load_train_state
from foundry3d.train.batches import StepBatches, shard
from foundry3d.train.distributed import DistInfo, all_finite, barrier, cleanup, init_distributed, resolve_device
from foundry3d.train.engine import (
    EngineConfig,
    EngineError,
    Hook,
    Loop,
    Task,
    TrainingDiverged,
    autocast_dtype,
    lr_at,
    step_seed,
)
from foundry3d.train.hooks import CheckpointHook, EvalHook, MetricsHook, ReleaseHook
from foundry3d.train.rundir import RunDirError, check_run_dir, prepare_run_dir, record_config_changes
from foundry3d.train.runlog import RunLogger
from foundry3d.train.sync_batchnorm import convert_sync_batchnorm


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
    return cast(nn.Module, torch.compile(model))


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
        micro = {k: shard(v, part, parts) for k, v in batch.items()}
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
