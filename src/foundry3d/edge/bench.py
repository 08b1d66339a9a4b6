"""``foundry3d bench``: parameters, FLOPs, CPU latency and peak memory of a teacher and students.

All models are measured in the same process and interleaved per input size, so ratios between
them hold on a noisy machine. Each point count N uses N/16 groups (64 per 1,024 points, the
models' native ratio), so the teacher attends over N/16 tokens while a student's encoder sees s.
"""

from __future__ import annotations

import csv
import json
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from foundry3d.edge.flops import CONVENTION, count_flops, count_params
from foundry3d.edge.latency import measure
from foundry3d.errors import Foundry3DError
from foundry3d.models.hub import resolve


class BenchError(Foundry3DError, ValueError):
    """Benchmark settings that cannot be measured."""


def _load(spec: str) -> tuple[str, nn.Module]:
    model, info = resolve(spec)
    return info["model"], model


def bench(
    models: list[str] | dict[str, nn.Module],
    points: list[int] | None = None,
    batches: list[int] | None = None,
    out: str | Path | None = "runs/bench",
    threads: int | None = None,
    budget_s: float = 6.0,
    seed: int = 0,
    batch_max_points: int | None = None,
) -> dict[str, Any]:
    """Parameters, FLOPs, CPU latency and peak memory of a teacher and students, side by side.

    Args:
        models: model specs (release, embedded, random:VARIANT, ...); the first is the reference.
        points: point counts per cloud (default: 1024 2048 8192 32768).
        batches: batch sizes (default: 1 32).
        out: folder for bench.json and bench.csv.
        threads: torch threads (default: all cores).
        budget_s: seconds of timed runs per setting.
        seed: seed of the random clouds.
        batch_max_points: measure batches larger than 1 only up to this many points (time).
    """
    points = list(points or [1024, 2048, 8192, 32768])
    batches = list(batches or [1, 32])
    if any(n < 1 for n in points) or any(b < 1 for b in batches):
        raise BenchError(f"points and batches must be positive integers, got points={points} batches={batches}")
    if threads is not None and threads < 1:
        raise BenchError(f"threads must be >= 1 (or unset for all cores), got {threads}")
    if budget_s <= 0:
        raise BenchError(f"budget_s must be > 0, got {budget_s}")
    if threads:
        torch.set_num_threads(threads)
    named = dict(models) if isinstance(models, dict) else dict(_load(m) for m in models)
    if not named:
        raise ValueError("bench needs at least one model")
    rows: list[dict[str, Any]] = []
    gen = torch.Generator().manual_seed(seed)
    for n in points:
        for name, model in named.items():
            groups = model.groups_for(n)
            one = torch.randn(1, n, 3, generator=gen)
            f = count_flops(model, one, num_groups=groups)
            row: dict[str, Any] = {
                "model": name,
                "points": n,
                "groups": groups,
                "params": count_params(model),
                "flops": f["flops"],
                "flops_per_module": f["per_module"],
            }
            for b in batches:
                if b > 1 and batch_max_points is not None and n > batch_max_points:
                    continue
                x = torch.randn(b, n, 3, generator=gen)
                m = measure(model, x, budget_s=budget_s, num_groups=groups)
                row.update(
                    {
                        f"b{b}_median_ms": m["median_ms"],
                        f"b{b}_p90_ms": m["p90_ms"],
                        f"b{b}_runs": m["runs"],
                        f"b{b}_peak_mem_mb": m["peak_mem_mb"],
                    }
                )
            rows.append(row)
    ref = next(iter(named))
    for r in rows:
        base = next(x for x in rows if x["model"] == ref and x["points"] == r["points"])
        r["flops_ratio"] = r["flops"] / base["flops"]
        for b in batches:
            if f"b{b}_median_ms" in r:
                r[f"b{b}_latency_ratio"] = r[f"b{b}_median_ms"] / base[f"b{b}_median_ms"]
    result = {
        "reference": ref,
        "rows": rows,
        "convention": CONVENTION,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "notes": "latency: warm-up 2 runs, then median and p90 over up to 30 runs (at least 5) within the time "
        "budget per setting; peak memory: peak bytes of tensors alive at once during one forward pass "
        "(activations; weights and input excluded), counted per tensor",
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(result, indent=2))
        keys = list(dict.fromkeys(k for r in rows for k in r if k != "flops_per_module"))
        with open(out / "bench.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    print(format_bench(result, batches))
    return result


def format_bench(result: dict[str, Any], batches: list[int] | None = None) -> str:
    batches = batches or [1, 32]
    head = f"{'model':<28} {'points':>7} {'params':>9} {'GFLOPs':>8} {'xT':>6}"
    for b in batches:
        head += f" {f'b{b} med ms':>11} {f'b{b} p90':>9} {'xT':>6} {f'b{b} MB':>8}"
    lines = [head]
    for r in result["rows"]:
        line = (
            f"{r['model'][:28]:<28} {r['points']:>7} {r['params'] / 1e6:>8.2f}M {r['flops'] / 1e9:>8.3f} "
            f"{r['flops_ratio']:>6.2f}"
        )
        for b in batches:
            if f"b{b}_median_ms" not in r:
                line += f" {'-':>11} {'-':>9} {'-':>6} {'-':>8}"
                continue
            line += (
                f" {r[f'b{b}_median_ms']:>11.1f} {r[f'b{b}_p90_ms']:>9.1f} {r[f'b{b}_latency_ratio']:>6.2f} "
                f"{r[f'b{b}_peak_mem_mb']:>8.0f}"
            )
        lines.append(line)
    lines.append(f"xT: ratio to {result['reference']}. {result['convention']}.")
    return "\n".join(lines)
