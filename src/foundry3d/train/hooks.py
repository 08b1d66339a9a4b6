"""The engine's own hooks, run around every training step: metrics, evaluation, checkpoints and the release.
A task adds its own through :meth:`Task.hooks` (e.g. the SuperToken initialisation from data)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from typing_extensions import override

from foundry3d.config import to_dict
from foundry3d.files import write_text
from foundry3d.models.checkpoint import save_train_state
from foundry3d.train.distributed import DistInfo, all_reduce_mean, barrier
from foundry3d.train.engine import Hook, Loop, Task
from foundry3d.train.runlog import RunLogger, progress_bar


class MetricsHook(Hook):
    """Means of the step metrics over ``log_every`` steps (all ranks) to metrics.jsonl / TensorBoard."""

    @override
    def on_start(self, loop: Loop) -> None:
        self.acc: dict[str, Any] = {}  # float64 tensors on the device, or floats
        self.n, self.t0 = 0, time.time()
        self.bar = progress_bar(loop.cfg.steps, loop.start, loop.cfg.progress, loop.info)

    @override
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

    @override
    def close(self) -> None:
        if getattr(self, "bar", None) is not None:
            self.bar.close()


class EvalHook(Hook):
    """The task's evaluation at step 0 (a curve from the initial weights), every ``eval_every`` steps,
    and at the end (its numbers open the run's summary)."""

    @override
    def on_start(self, loop: Loop) -> None:
        if loop.cfg.eval_every and loop.start == 0:
            _evaluate(loop.task, 0, loop.info, loop.logger)

    @override
    def on_step(self, loop: Loop, done: int, vals: dict[str, Any]) -> None:
        if loop.cfg.eval_every and done % loop.cfg.eval_every == 0 and done != loop.cfg.steps:
            _evaluate(loop.task, done, loop.info, loop.logger)

    @override
    def on_end(self, loop: Loop) -> None:
        if loop.cfg.steps > loop.start or not (loop.run_dir / "release").exists():
            loop.summary = _evaluate(loop.task, loop.cfg.steps, loop.info, loop.logger)


class ReleaseHook(Hook):
    """At the end: the task writes its release and the run its summary (a finished run resumed: read back)."""

    @override
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

    @override
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
