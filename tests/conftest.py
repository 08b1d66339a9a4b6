import os
import subprocess
import sys

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def cloud() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 256, 3, generator=g)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty dataset cache folder for the test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("FOUNDRY3D_CACHE", str(root))
    return root


@pytest.fixture
def torchrun():
    """Run ``foundry3d <args>`` as 2 CPU processes under torchrun (one thread each)."""

    def run(port: int, *args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.run(
            [*cmd, "-m", "foundry3d.cli", *args], env=env, capture_output=True, text=True, timeout=600
        )

    return run
