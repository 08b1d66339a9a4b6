"""A NaN on one rank stops every rank (the others would otherwise wait forever in the next collective)."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from foundry3d.train.distributed import DistInfo, all_finite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        loss = torch.tensor(float("nan") if rank == 1 else 0.5)
        ok = all_finite(loss, DistInfo(rank=rank, world_size=2, local_rank=rank))
        fine = all_finite(torch.tensor(0.5), DistInfo(rank=rank, world_size=2, local_rank=rank))
        with open(f"{out}.{rank}", "w") as f:
            f.write(f"{ok} {fine}")
    finally:
        dist.destroy_process_group()


def test_a_nan_on_one_rank_is_seen_by_all(tmp_path):
    out = str(tmp_path / "r")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=2, join=True)
    from pathlib import Path

    assert Path(f"{out}.0").read_text() == "False True" and Path(f"{out}.1").read_text() == "False True"
