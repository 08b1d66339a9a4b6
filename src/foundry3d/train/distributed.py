"""torchrun-aware process-group helpers (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from foundry3d.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a multi-process run (rank, world size, local rank); one process when not
    launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes logs, checkpoints and releases (rank 0)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process trains (gradients are then averaged across them)."""
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group that torchrun describes in RANK/WORLD_SIZE; single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local)


def resolve_device(name: str, info_local_rank: int = 0) -> torch.device:
    """The device a run uses (``auto``: CUDA when present); asking for CUDA where there is none is a one-line
    error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("engine.device=cuda: no CUDA device is available here (expected auto or cpu)")
        torch.cuda.set_device(info_local_rank)
        return torch.device("cuda", info_local_rank)
    return torch.device(name)


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of ``values`` over every process (itself in a single-process run)."""
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= info.world_size
    return values


def all_finite(loss: torch.Tensor, info: DistInfo) -> bool:
    """Whether the loss is finite on *every* rank (a NaN on one rank must stop all of them, or the
    others would wait forever in the next collective)."""
    ok = torch.tensor([1.0 if bool(torch.isfinite(loss.detach()).all()) else 0.0], device=loss.device)
    if info.enabled:
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item() > 0.5)


def barrier(info: DistInfo) -> None:
    """Wait for every process (nothing in a single-process run)."""
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    """Leave the process group if this run joined one."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
