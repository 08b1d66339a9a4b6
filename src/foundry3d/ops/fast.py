"""Library paths for FPS (``fpsample``) and kNN (``pykdtree``) on CPU clouds outside autograd and export.

The pure-PyTorch ops stay the reference: they export to ONNX, run on GPUs and carry gradients. On a
CPU, and only outside export/tracing/autograd, these libraries take over (``FOUNDRY3D_LIBRARY_OPS=0``
turns them off):

* clouds under ``FAST_MIN_POINTS`` points: ``fpsample.fps_sampling`` from index 0, which is the same
  farthest point sampling as the PyTorch op (same start, same order up to ties between equally far
  points, e.g. duplicates; tested) without a Python loop
  per centre: at 1,024 points it is what keeps batch-1 latency from being dominated by grouping;
* larger clouds: ``fpsample.bucket_fps_kdline_sampling`` (QuickFPS) is *exact* farthest point
  sampling, but it starts from a point of its own kd-tree order instead of index 0, so its centres
  are an exact FPS of the cloud from another start (the effect on features is measured in
  ``benchmarks/fast_ops.py``). Its start is random unless ``start_idx`` is given, so we always pass
  one: the same cloud gives the same centres in every run (embeddings are reproducible);
* ``pykdtree`` kNN is exact (the same neighbours, up to ties among equal distances).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from foundry3d.errors import InputError

FAST_MIN_POINTS = int(os.environ.get("FOUNDRY3D_FAST_MIN_POINTS", "16384"))  # bucket FPS from here on
LIBRARY_OPS = os.environ.get("FOUNDRY3D_LIBRARY_OPS", "1") != "0"


def available() -> bool:
    """Whether the fast library path for large clouds (fpsample, pykdtree) is installed."""
    try:
        import fpsample  # noqa: F401
        import pykdtree  # noqa: F401
    except ImportError:
        return False
    return True


def use_fast(points: Tensor) -> bool:
    """Whether the library path applies: a CPU cloud, no autograd, no export or tracing."""
    if not LIBRARY_OPS or points.device.type != "cpu" or points.requires_grad:
        return False
    if torch.jit.is_tracing() or torch.compiler.is_exporting() or torch.compiler.is_compiling():
        return False
    return available()


def fps_fast(points: Tensor, k: int) -> Tensor:
    """Exact FPS per cloud -> indices (B, k): plain from index 0 below ``FAST_MIN_POINTS``, QuickFPS above."""
    import fpsample  # imported on use: platforms without its wheel fall back to the PyTorch path

    pts = np.ascontiguousarray(points.detach().float().numpy())
    n = pts.shape[1]
    if not 1 <= k <= n:
        raise InputError(f"cannot sample k={k} farthest points from a cloud of {n} points")
    if n < FAST_MIN_POINTS:  # plain FPS from index 0: identical to the PyTorch reference
        return torch.from_numpy(np.stack([np.asarray(fpsample.fps_sampling(p, k, start_idx=0), np.int64) for p in pts]))
    h = max(3, min(9, int(np.log2(max(2, n // 512)))))  # buckets of about 2^h points
    # start_idx fixes the start (the library otherwise draws it at random, and two runs would differ)
    out = [np.asarray(fpsample.bucket_fps_kdline_sampling(p, k, h=h, start_idx=0), np.int64) for p in pts]
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
