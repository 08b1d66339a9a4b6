"""Issue-2 figures: parameters and FLOPs per cloud of each variant, FPS/kNN times, tiny's training rate.

python benchmarks/foundation_costs.py [--threads 2] [--out runs/foundation_costs.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import foundry3d
from foundry3d.edge.flops import CONVENTION, count_flops, count_params
from foundry3d.models.jepa import JEPAConfig, PointJEPA
from foundry3d.ops import farthest_point_sample, knn


def timed(fn, reps: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/foundation_costs.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res: dict = {"threads": args.threads, "convention": CONVENTION, "variants": {}, "ops": [], "training": {}}
    for name in ("vit_s", "tiny", "test"):
        m = foundry3d.create_model(name).eval()
        x = torch.randn(1, m.cfg.num_points, 3)
        f = count_flops(m, x)
        res["variants"][name] = {
            "params": count_params(m),
            "points": m.cfg.num_points,
            "groups": m.cfg.num_groups,
            "gflops": f["flops"] / 1e9,
            "per_module_gflops": {k: v / 1e9 for k, v in f["per_module"].items()},
        }
        print(name, res["variants"][name], flush=True)
    for n, k in [(1024, 64), (10_000, 625), (300_000, 1024), (300_000, 4096), (300_000, 18_750)]:
        x = torch.rand(1, n, 3)
        reps = 5 if n < 100_000 else 1
        row = {
            "points": n,
            "centres": k,
            "fps_s": timed(lambda x=x, k=k: farthest_point_sample(x, k), reps),
            "knn32_s": timed(lambda x=x, k=k: knn(x[:, :k], x, 32), reps),
        }
        res["ops"].append(row)
        print(row, flush=True)
    # tiny's Point-JEPA training step (batch 128, the recipe's predictor) on random clouds
    jepa = PointJEPA(
        foundry3d.create_model("tiny", drop_path_rate=0.1),
        JEPAConfig(predictor_dim=96, predictor_depth=4, predictor_heads=3, predictor_pos_hidden=64),
    )
    opt = torch.optim.AdamW(jepa.parameters(), lr=1e-4)
    x = torch.randn(128, 1024, 3)
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        loss, _ = jepa(x, g)
        opt.zero_grad()
        loss.backward()
        opt.step()

    dt = timed(step, 3)
    res["training"] = {"variant": "tiny", "batch": 128, "seconds_per_step": dt, "clouds_per_s": 128 / dt}
    print(res["training"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
