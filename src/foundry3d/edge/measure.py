"""One benchmark measurement in a fresh process: latency, peak RSS, peak activation memory, FLOPs.

``python -m foundry3d.edge.measure --model SPEC --points N --batch B ...`` prints one JSON line.
A fresh process per (model, size) makes peak RSS that measurement's own; ``--cap-gb`` limits the
process's address space (RLIMIT_AS, set once the model and input are loaded) for the forward passes:
a model that needs more memory fails to allocate and is reported as OOM.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from foundry3d.edge.memory import PeakTensorMemory
from foundry3d.models.encoder import Attention
from foundry3d.models.hub import resolve

MB = 2**20


def main(argv: list[str] | None = None) -> None:
    """One timing in a fresh process (the bench runs each model and size here so no run warms another's caches)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--points", type=int, required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--budget", type=float, default=6.0)
    ap.add_argument("--min-runs", type=int, default=3)
    ap.add_argument("--cap-gb", type=float, default=None)
    ap.add_argument("--explicit-attention", action="store_true")
    ap.add_argument("--flops", action="store_true")
    ap.add_argument("--activations", action="store_true")
    a = ap.parse_args(argv)
    row: dict = {"points": a.points, "batch": a.batch}
    try:
        row.update(_measure(a))
    except (MemoryError, RuntimeError) as e:  # allocation failures under the cap
        if not a.cap_gb or not (isinstance(e, MemoryError) or "alloc" in str(e).lower() or "memory" in str(e).lower()):
            raise
        row.update(oom=True, error=str(e)[:200])
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(row), flush=True)


def _measure(a: argparse.Namespace) -> dict:
    if a.threads:
        torch.set_num_threads(a.threads)
    model, _ = resolve(a.model)
    if a.explicit_attention:
        for m in model.modules():
            if isinstance(m, Attention):
                m.explicit = True
    groups = model.groups_for(a.points)
    x = torch.randn(a.batch, a.points, 3, generator=torch.Generator().manual_seed(0))
    if a.cap_gb:  # the cap applies from here: the process with its libraries, model and input already mapped
        _ = torch.ones(512, 512) @ torch.ones(512, 512)  # start the thread pool (thread stacks need address space)
        cap = int(a.cap_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    out: dict = {"groups": groups, "params": sum(p.numel() for p in model.parameters())}
    t0 = time.perf_counter()
    if a.flops or a.activations:  # the warm-up pass also counts FLOPs and peak activations (one cloud)
        counter, peak = FlopCounterMode(display=False), PeakTensorMemory()
        with torch.no_grad(), counter, peak:  # (the counter's module tracker needs no_grad, not inference_mode)
            model.forward_features(x[:1], num_groups=groups)
        if a.flops:
            out["flops"] = int(counter.get_total_flops())
        if a.activations:
            out["peak_activation_mb"] = peak.peak / MB
    else:
        with torch.inference_mode():
            model.forward_features(x, num_groups=groups)
    first = time.perf_counter() - t0
    with torch.inference_mode():
        times: list[float] = []
        end = time.perf_counter() + a.budget
        while len(times) < a.min_runs or (time.perf_counter() < end and len(times) < 30):
            t0 = time.perf_counter()
            model.forward_features(x, num_groups=groups)
            times.append(time.perf_counter() - t0)
            if first > a.budget and len(times) >= a.min_runs:
                break
    t = np.asarray(times) * 1000
    out.update(
        median_ms=float(np.median(t)),
        p90_ms=float(np.percentile(t, 90)),
        min_ms=float(t.min()),
        runs=len(t),
        spread=float((np.percentile(t, 90) - t.min()) / max(1e-9, np.median(t))),
    )
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
