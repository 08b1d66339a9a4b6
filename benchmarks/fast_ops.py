"""FPS + kNN at 1k-1M points: the pure-PyTorch path against the library path, and what the library
path changes in a model's features.

    python benchmarks/fast_ops.py --threads 2 --out runs/fast_ops.json

Times are medians over ``--repeats`` runs in this one process (run it on a quiet machine). The
feature check runs a teacher on real KiCad-33 validation clouds resampled to 32k points through
both paths and reports the cosine similarity of the pooled features.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from foundry3d.ops import fast
from foundry3d.ops.fps import farthest_point_sample
from foundry3d.ops.group import gather_points
from foundry3d.ops.knn import knn


def _time(fn, repeats: int) -> tuple[float, float]:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), max(ts) - min(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, nargs="+", default=[1000, 10_000, 100_000, 300_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--torch-max", type=int, default=300_000, help="largest cloud timed on the PyTorch path")
    ap.add_argument("--teacher", default="embedded")
    ap.add_argument("--out", default="runs/fast_ops.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    rng = np.random.default_rng(0)
    for n in args.points:
        g = max(1, n // 16)
        pts = torch.from_numpy(rng.standard_normal((1, n, 3)).astype(np.float32))
        row: dict = {"points": n, "centres": g}
        fi = fast.fps_fast(pts, g)
        cen = gather_points(pts, fi)
        row["fast_fps_s"], row["fast_fps_spread_s"] = _time(lambda p=pts, k=g: fast.fps_fast(p, k), args.repeats)
        row["fast_knn_s"], row["fast_knn_spread_s"] = _time(lambda c=cen, p=pts: fast.knn_fast(c, p, 32), args.repeats)
        if n <= args.torch_max:
            reps = 1 if n > 100_000 else args.repeats
            row["torch_fps_s"], _ = _time(lambda p=pts, k=g: farthest_point_sample(p, k), reps)
            row["torch_knn_s"], _ = _time(lambda c=cen, p=pts: knn(c, p, 32), reps)
            ti = farthest_point_sample(pts, g, start=int(fi[0, 0]))
            row["fps_same_set_from_same_start"] = bool(set(ti[0].tolist()) == set(fi[0].tolist()))
            a, _ = knn(cen, pts, 32)
            b, _ = fast.knn_fast(cen, pts, 32)
            row["knn_same_neighbours"] = float((a.sort(-1).values == b.sort(-1).values).all(-1).float().mean())
        print(json.dumps(row))
        rows.append(row)
    out = {"rows": rows, "threads": args.threads, "features": feature_effect(args.teacher)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out["features"], indent=1))


@torch.no_grad()
def feature_effect(teacher: str, n: int = 32_768, clouds: int = 16) -> dict:
    """Pooled teacher features of real clouds (resampled to n points) through both paths."""
    from foundry3d.data.registry import load_dataset
    from foundry3d.models.hub import load_teacher

    model = load_teacher(teacher)
    ds = load_dataset("kicad33:val")
    gen = torch.Generator().manual_seed(0)
    cos = []
    for i in range(clouds):
        p = torch.from_numpy(np.asarray(ds[i * 50].points, np.float32))
        p = p[torch.randint(len(p), (n,), generator=gen)] + 0.002 * torch.randn(n, 3, generator=gen)
        x = p[None]
        fast_out = model.forward_head(model.forward_features(x, num_groups=n // 16))
        saved = fast.FAST_MIN_POINTS
        fast.FAST_MIN_POINTS = 10**9
        try:
            ref = model.forward_head(model.forward_features(x, num_groups=n // 16))
        finally:
            fast.FAST_MIN_POINTS = saved
        cos.append(float(torch.nn.functional.cosine_similarity(fast_out, ref).item()))
    return {"points": n, "clouds": clouds, "pooled_feature_cosine_mean": float(np.mean(cos)), "min": float(np.min(cos))}


if __name__ == "__main__":
    main()
