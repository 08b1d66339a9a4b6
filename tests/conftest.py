import os

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
