"""Library paths for large clouds: bucket FPS (``fpsample``) and kd-tree kNN (``pykdtree``).

The pure-PyTorch ops stay the reference (they export to ONNX and are used for every cloud up to
``FAST_MIN_POINTS``); above it, and only outside export/tracing, these libraries take over:

* ``fpsample.bucket_fps_kdline_sampling`` (QuickFPS) is *exact* farthest point sampling, but it
  starts from a point of its own kd-tree order instead of index 0, so its centres are an exact FPS
  of the cloud from another start (the effect on features is measured in ``benchmarks/fast_ops.py``);
* ``pykdtree`` kNN is exact (the same neighbours, up to ties among equal distances).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

FAST_MIN_POINTS = int(os.environ.get("FOUNDRY3D_FAST_MIN_POINTS", "16384"))


def available() -> bool:
    try:
        import fpsample  # noqa: F401
        import pykdtree  # noqa: F401
    except ImportError:
        return False
    return True


def use_fast(points: Tensor) -> bool:
    """Whether the library path applies: a large CPU cloud, no autograd, no export or tracing."""
    if points.shape[1] < FAST_MIN_POINTS or points.device.type != "cpu" or points.requires_grad:
        return False
    if torch.jit.is_tracing() or torch.compiler.is_exporting() or torch.compiler.is_compiling():
        return False
    return available()


def fps_fast(points: Tensor, k: int) -> Tensor:
    """Exact FPS (QuickFPS) per cloud -> indices (B, k)."""
    import fpsample  # imported on use: platforms without its wheel fall back to the PyTorch path

    pts = points.detach().float().numpy()
    n = pts.shape[1]
    h = max(3, min(9, int(np.log2(max(2, n // 512)))))  # buckets of about 2^h points
    out = [np.asarray(fpsample.bucket_fps_kdline_sampling(p, k, h=h), np.int64) for p in pts]
    return torch.from_numpy(np.stack(out))


def knn_fast(query: Tensor, points: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact kNN with a kd-tree per cloud -> indices (B, M, k), squared distances (B, M, k)."""
    from pykdtree.kdtree import KDTree  # imported on use, like fpsample above

    q = query.detach().float().numpy()
    p = points.detach().float().numpy()
    idx, dist = [], []
    for qi, pi in zip(q, p):
        d, i = KDTree(pi).query(qi, k=k)
        d, i = np.asarray(d, np.float32).reshape(len(qi), k), np.asarray(i, np.int64).reshape(len(qi), k)
        idx.append(i)
        dist.append(d * d)
    return torch.from_numpy(np.stack(idx)), torch.from_numpy(np.stack(dist))
