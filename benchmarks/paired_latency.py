"""Batch-1 latency ratios to the teacher, measured side by side: every model on the same cloud in turn.

``foundry3d bench`` runs each model in its own process (clean peak memory), so at 1k points, where a
forward takes a few milliseconds, a ratio mixes two processes' luck. Here one process loads all the
models and runs them in turn on the same real cloud, round after round; each round gives one ratio
per model (its time / the teacher's in that round), and the record keeps the median ratio with its
interquartile range and each model's median and p10-p90 time.

    python benchmarks/paired_latency.py --models embedded:tiny2 floor:embedded:tiny2 runs/q/students/s16/release \
        --names teacher floor s=16 --points 1000 --threads 1 2 --rounds 400 --out docs/edge/paired_1k.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from foundry3d.data.registry import load_dataset
from foundry3d.data.transforms import collate
from foundry3d.models.checkpoint import atomic_write
from foundry3d.models.hub import describe_model, resolve


def paired(models: dict[str, torch.nn.Module], clouds: torch.Tensor, rounds: int, warmup: int = 20) -> dict:
    """Rounds of every model on the same cloud; the first model is the reference."""
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            for i in range(warmup):
                m.forward_features(clouds[i % len(clouds)][None])
        for r in range(rounds):
            x = clouds[r % len(clouds)][None]
            for k, m in models.items():
                t0 = time.perf_counter()
                m.forward_features(x)
                times[k].append(time.perf_counter() - t0)
    ref = np.asarray(times[next(iter(models))])
    rows = {}
    for k, ts in times.items():
        a = np.asarray(ts)
        ratio = a / ref
        rows[k] = {
            "median_ms": 1000 * float(np.median(a)),
            "p10_ms": 1000 * float(np.percentile(a, 10)),
            "p90_ms": 1000 * float(np.percentile(a, 90)),
            "ratio_median": float(np.median(ratio)),
            "ratio_p25": float(np.percentile(ratio, 25)),
            "ratio_p75": float(np.percentile(ratio, 75)),
        }
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", required=True, help="model specs; the first is the reference")
    ap.add_argument("--names", nargs="+", help="names in the record (default: the specs)")
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=400)
    ap.add_argument("--dataset", default="kicad33:test", help="real clouds to run on (50 of them, in turn)")
    ap.add_argument("--out", default="runs/paired_latency.json")
    a = ap.parse_args()
    names = a.names or a.models
    if len(names) != len(a.models):
        ap.error(f"--names has {len(names)} entries for {len(a.models)} --models")
    resolved = {n: resolve(s) for n, s in zip(names, a.models)}
    models = {n: net.eval() for n, (net, _) in resolved.items()}
    ds = load_dataset(a.dataset)
    clouds = collate([ds[i] for i in range(min(50, len(ds)))], a.points, "first")["points"]
    load = os.getloadavg()[0]
    record = {
        "points": a.points,
        "rounds": a.rounds,
        "dataset": a.dataset,
        "models": dict(zip(names, a.models)),
        "architectures": {n: describe_model(net, info) for n, (net, info) in resolved.items()},
        "load_before": load,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
        },
        "by_threads": {},
    }
    for th in a.threads:
        torch.set_num_threads(th)
        record["by_threads"][str(th)] = rows = paired(models, clouds, a.rounds)
        for k, r in rows.items():
            print(
                f"threads {th}  {k:14s} {r['median_ms']:7.2f} ms  (p10-p90 {r['p10_ms']:.2f}-{r['p90_ms']:.2f})  "
                f"ratio {r['ratio_median']:.3f} [IQR {r['ratio_p25']:.3f}, {r['ratio_p75']:.3f}]"
            )
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))


if __name__ == "__main__":
    main()
