"""The batch of every training step, a function of (seed, step) alone: built in the training process or ahead
of time by DataLoader workers, so ``--resume`` and ``engine.workers`` never change what a step sees."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from foundry3d.errors import InputError
from foundry3d.files import drop_inherited_locks
from foundry3d.train.distributed import DistInfo
from foundry3d.train.engine import EngineConfig, Task, batch_indices, step_seed


def shard(value: Any, rank: int, world: int) -> Any:
    """This process's share of a global batch (a batch that does not divide among the processes is an error)."""
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        n = value.shape[0]
        if n % world:
            raise InputError(f"global batch {n} is not divisible by the {world} processes")
        per = n // world
        return value[rank * per : (rank + 1) * per]
    return value


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
        batch = {k: shard(v, self.info.rank, self.info.world_size) for k, v in batch.items()}
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
                worker_init_fn=worker_init,
            )
        for batch, state in items:
            gen = torch.Generator()
            gen.set_state(state)
            yield {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in batch.items()}, gen


_CPU = torch.device("cpu")


def worker_init(worker_id: int) -> None:
    """DataLoader worker start: drop the run-folder lock inherited from the parent, so a killed run can be
    resumed at once."""
    drop_inherited_locks()  # a killed run's folder is free at once for --resume
