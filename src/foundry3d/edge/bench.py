"""``foundry3d bench``: latency, peak memory and FLOPs of a teacher and its students, side by side.

Each (model, cloud size, batch) is measured in a fresh process (:mod:`foundry3d.edge.measure`), so
its peak RSS is its own, optionally under an address-space cap (the paper's 6 GB GPU: a model that
does not fit is reported as OOM). Sizes are interleaved model by model, so ratios between models
come from the same minutes of the same machine. The reference (first) backbone is also measured
with explicit attention (the N x N matrix materialised, as the official Point-JEPA / Point-MAE code
does), next to PyTorch's memory-efficient kernel. Each point count N uses N/16 patches. A row whose
timings spread too much (or a machine whose load is high before starting) is flagged: ratios from
it are not to be trusted.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from foundry3d.edge.flops import CONVENTION
from foundry3d.errors import Foundry3DError
from foundry3d.files import atomic_write, check_folder, holds_record, run_folder, user_path
from foundry3d.models.hub import resolve

NOISY_SPREAD = 0.3  # (p90 - min) / median above this: the machine was not quiet


class BenchError(Foundry3DError, ValueError):
    """Benchmark settings that cannot be measured."""


def cpu_busy(seconds: float = 1.0) -> float:
    """Share of CPU time used by anything over ``seconds`` (Linux /proc/stat; else load average / cores)."""

    def read() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields)

    try:
        i0, t0 = read()
        time.sleep(seconds)
        i1, t1 = read()
        return 1.0 - (i1 - i0) / max(1, t1 - t0)
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] / (os.cpu_count() or 1)


def _run(
    spec: str, n: int, b: int, threads: int | None, budget: float, cap: float | None, explicit: bool, extras: bool
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "foundry3d.edge.measure",
        "--model",
        spec,
        "--points",
        str(n),
        "--batch",
        str(b),
        "--budget",
        str(budget),
    ]
    if threads:
        cmd += ["--threads", str(threads)]
    if cap:
        cmd += ["--cap-gb", str(cap)]
    if explicit:
        cmd.append("--explicit-attention")
    if extras:
        cmd += ["--flops", "--activations"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        killed = res.returncode < 0 or "MemoryError" in res.stderr or "memory" in res.stderr.lower()
        if cap and killed:
            return {"oom": True, "error": res.stderr.strip()[-300:]}
        raise BenchError(f"measuring {spec} at {n} points failed: {res.stderr.strip()[-800:]}")
    return json.loads(lines[-1])


def bench(
    models: list[str] | dict[str, nn.Module],
    points: list[int] | None = None,
    batches: list[int] | None = None,
    out: str | Path | None = "runs/bench",
    threads: int | None = None,
    budget_s: float = 6.0,
    seed: int = 0,
    batch_max_points: int | None = None,
    memory_cap_gb: float | None = None,
    explicit_attention: bool = False,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Parameters, FLOPs, CPU latency and peak memory of a teacher and students, side by side.

    Args:
        models: model specs (release, embedded, random:VARIANT, ...); the first is the reference.
        points: point counts per cloud (default: 1024 2048 8192 32768; the edge study: 1000 8000 32000
            100000 300000).
        batches: batch sizes (default: 1 32).
        out: folder for bench.json and bench.csv.
        threads: torch threads (default: all cores).
        budget_s: seconds of timed runs per setting (at least 3 runs; huge inputs stop after 3).
        seed: unused by the measurement (fixed clouds); kept for the record.
        batch_max_points: measure batches larger than 1 only up to this many points (time).
        memory_cap_gb: run every measurement under this address-space cap (the paper's 6 GB): OOM rows.
        explicit_attention: also measure the reference with explicit q k^T attention (official code).
        names: names for the models in the tables (default: their specs).
    """
    points = list(points or [1024, 2048, 8192, 32768])
    batches = list(batches or [1, 32])
    if any(n < 1 for n in points) or any(b < 1 for b in batches):
        raise BenchError(f"points and batches must be positive integers, got points={points} batches={batches}")
    if threads is not None and threads < 1:
        raise BenchError(f"threads must be >= 1 (or unset for all cores), got {threads}")
    if budget_s <= 0:
        raise BenchError(f"budget_s must be > 0, got {budget_s}")
    if out is not None:  # refuse a user's folder before minutes of measurement
        check_folder(user_path(out), "bench", ("bench.json", "bench.csv"), legacy=holds_record("bench.json", "rows"))
    if isinstance(models, dict):
        raise BenchError("bench measures each model in its own process: pass model specs, not modules")
    if names is not None and len(names) != len(models):
        raise BenchError(f"{len(names)} names for {len(models)} models")
    specs = dict(zip(names or [resolve(m)[1]["model"] for m in models], models))
    if not specs:
        raise BenchError("bench needs at least one model")
    names = list(specs)
    ref = names[0]
    runs: list[tuple[str, str, bool]] = [(n, specs[n], False) for n in names]
    if explicit_attention:
        runs.insert(1, (f"{ref} (explicit attention)", specs[ref], True))
    cores = os.cpu_count() or 1
    load_before = cpu_busy()
    busy = load_before > 0.15
    if busy:
        print(
            f"foundry3d bench: warning: the CPUs are {100 * load_before:.0f} % busy before starting (other processes): "
            "timings and their ratios are not trustworthy",
            file=sys.stderr,
        )
    rows: list[dict[str, Any]] = []
    for n in points:
        for name, spec, explicit in runs:
            row: dict[str, Any] = {"model": name, "points": n}
            for b in batches:
                if b > 1 and batch_max_points is not None and n > batch_max_points:
                    continue
                m = _run(spec, n, b, threads, budget_s, memory_cap_gb, explicit, extras=b == batches[0])
                if m.get("oom"):
                    row[f"b{b}_oom"] = True
                    continue
                for k in ("groups", "params", "flops", "peak_activation_mb"):
                    if k in m:
                        row[k] = m[k]
                row.update({f"b{b}_{k}": m[k] for k in ("median_ms", "p90_ms", "runs", "spread", "peak_rss_mb")})
                row[f"b{b}_noisy"] = m["spread"] > NOISY_SPREAD
            rows.append(row)
            print(_progress_line(row, batches), flush=True)
    _ratios(rows, ref, batches, explicit_attention)
    result = {
        "reference": ref,
        "rows": rows,
        "convention": CONVENTION,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": cores,
            "threads": threads or torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu_busy_before": load_before,
            "busy": busy,
        },
        "memory_cap_gb": memory_cap_gb,
        "notes": "one fresh process per measurement: warm-up (which also counts FLOPs and the peak of tensors alive "
        "at once, one cloud), then at least 3 timed runs within the time budget; median, p90; peak RSS of the "
        "process (model, input and activations); N/16 patches per cloud",
    }
    if out is not None:
        keys = list(dict.fromkeys(k for r in rows for k in r))

        def write_csv(tmp: str) -> None:
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)

        with run_folder(
            out, "bench", ("bench.json", "bench.csv"), overwrite=False, legacy=holds_record("bench.json", "rows")
        ) as folder:
            atomic_write(folder / "bench.json", lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2)))
            atomic_write(folder / "bench.csv", write_csv)
    print(format_bench(result, batches))
    return result


def _progress_line(row: dict[str, Any], batches: list[int]) -> str:
    """One readable line per measured model and size (the table comes at the end)."""
    times = [
        f"batch {b}: " + ("out of memory" if row.get(f"b{b}_oom") else f"{row[f'b{b}_median_ms']:.1f} ms")
        for b in batches
        if f"b{b}_median_ms" in row or row.get(f"b{b}_oom")
    ]
    flops = f", {row['flops'] / 1e9:.3f} GFLOPs" if "flops" in row else ""
    return f"  {row['model']} at {row['points']:,} points{flops}: " + ", ".join(times)


def _ratios(rows: list[dict[str, Any]], ref: str, batches: list[int], explicit: bool) -> None:
    for r in rows:
        base = next((x for x in rows if x["model"] == ref and x["points"] == r["points"]), None)
        if base is None:
            continue
        if "flops" in r and "flops" in base:
            r["flops_ratio"] = r["flops"] / base["flops"]
        for b in batches:
            if f"b{b}_median_ms" in r and f"b{b}_median_ms" in base:
                r[f"b{b}_latency_ratio"] = r[f"b{b}_median_ms"] / base[f"b{b}_median_ms"]
                r[f"b{b}_ratio_trusted"] = not (r[f"b{b}_noisy"] or base[f"b{b}_noisy"])
        ex = next((x for x in rows if x["model"] == f"{ref} (explicit attention)" and x["points"] == r["points"]), None)
        if explicit and ex is not None and "peak_activation_mb" in ex and "peak_activation_mb" in r:
            r["activation_ratio_vs_explicit"] = r["peak_activation_mb"] / ex["peak_activation_mb"]


def format_bench(result: dict[str, Any], batches: list[int] | None = None) -> str:
    """The benchmark result as a plain-text table: cost, memory and latency per model and size, each beside the
    teacher's."""
    batches = batches or [1]
    head = f"{'model':<34} {'points':>8} {'GFLOPs':>9} {'xT':>6} {'act MB':>8}"
    for b in batches:
        head += f" {f'b{b} med ms':>11} {'p90':>9} {'xT':>7} {'RSS MB':>8}"
    lines = [head]
    for r in result["rows"]:
        line = (
            f"{r['model'][:34]:<34} {r['points']:>8} {r.get('flops', 0) / 1e9:>9.3f} "
            f"{r.get('flops_ratio', float('nan')):>6.2f} {r.get('peak_activation_mb', float('nan')):>8.0f}"
        )
        for b in batches:
            if r.get(f"b{b}_oom"):
                line += f" {'OOM':>11} {'-':>9} {'-':>7} {'-':>8}"
            elif f"b{b}_median_ms" not in r:
                line += f" {'-':>11} {'-':>9} {'-':>7} {'-':>8}"
            else:
                ratio = f"{r.get(f'b{b}_latency_ratio', float('nan')):.3f}" + (
                    "" if r.get(f"b{b}_ratio_trusted", True) else "?"
                )
                med, p90, rss = r[f"b{b}_median_ms"], r[f"b{b}_p90_ms"], r[f"b{b}_peak_rss_mb"]
                line += f" {med:>11.1f} {p90:>9.1f} {ratio:>7} {rss:>8.0f}"
        lines.append(line)
    lines.append(f"xT: ratio to {result['reference']}; ? = timings too spread to trust. {result['convention']}.")
    return "\n".join(lines)
