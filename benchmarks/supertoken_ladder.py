"""The SuperToken details the paper leaves open, chosen on validation: a ladder of DSO options, several seeds.

Every rung is the quickstart's s = 16 Foundry student (same engine, loss, steps and teacher-target cache) with
one change to today's DSO, or all of them: the Gumbel temperature annealed 1 -> 0.1, the member counts in the
gradient of the bin mean, empty SuperTokens masked out of attention, no Gumbel noise in training (routes as at
inference), random instead of data-based SuperTokens. The ``mlp`` student (no mixing across tokens) is the
reference of the context R^2 = (R^2 - R^2_mlp) / (1 - R^2_mlp): the share of the cross-token part of the
teacher's output a student recovers.

Nothing here sees a test split: the students train on the ``fit`` splits (train minus a validation part) and
the pools, and every score is on the ``val`` splits (``foundry3d eval ... splits=val``). Differences between
a rung and today's DSO are paired over the same validation items and seeds (bootstrap 95 % CI).

    python benchmarks/supertoken_ladder.py --out runs/ladder --record docs/study/ladder.json

A re-run skips the students and evaluations it already has (resume after a kill).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from foundry3d.eval.suite import evaluate
from foundry3d.files import atomic_write
from foundry3d.quickstart import DISTILL_COMMON, QUICK
from foundry3d.train.distill import distill

RUNGS: dict[str, list[str]] = {
    "today": [],
    "anneal": ["loss.tau_start=1.0", "loss.tau_end=0.1"],
    "count_grad": ["student.count_grad=true"],
    "mask_empty": ["student.empty_bins=mask"],
    "no_noise": ["loss.gumbel_noise=false"],
    "random_init": ["student.init=random"],
    "all": ["loss.tau_start=1.0", "loss.tau_end=0.1", "student.count_grad=true", "student.empty_bins=mask"],
    "mlp": ["student.kind=mlp"],
}
TASKS = ["svm:sh3d16", "svm:kicad33", "fewshot:kicad33", "fidelity:kicad33"]
DATA = "data.datasets=[sh3d16:fit, sh3d16:pool, kicad33:fit, kicad33:pool]"  # never a val or test split


def _recipe(steps: int) -> list[str]:
    common = [o for o in DISTILL_COMMON if not o.startswith("data.datasets=")]
    return [
        *common,
        DATA,
        "data.cache_views=1",
        f"engine.steps={steps}",
        "engine.warmup_steps=50",
        "engine.log_every=20",
        "engine.progress=false",
        "student.supertokens=16",
    ]


def _metric(task: dict[str, Any], name: str) -> tuple[float, np.ndarray]:
    """(score, per-item rows) of one task result: accuracy (rows: 0/1 or episode scores), or the token R^2 of
    the fidelity task (rows: each item's squared error and total sum of squares)."""
    if name.startswith("fidelity"):
        items = task["per_item"]
        return float(task["r2"]), np.stack([np.asarray(items["sse"], float), np.asarray(items["sst"], float)], 1)
    return float(task["acc"]), np.asarray(task["per_item"]["score"], dtype=float)


def _stat(rows: np.ndarray) -> float:
    """The task's score of a set of per-item rows: mean accuracy, or R^2 = 1 - sum(sse) / sum(sst)."""
    return float(1.0 - rows[:, 0].sum() / rows[:, 1].sum()) if rows.ndim == 2 else float(rows.mean())


def _paired(a: list[np.ndarray], b: list[np.ndarray], rng: np.random.Generator, n: int = 2000) -> list[float]:
    """Mean over seeds of (score of a - score of b) on the same items (seed k of a with seed k of b), and its
    95 % CI from resampling the items (the same resample for a and b) within each seed."""
    point = float(np.mean([_stat(x) - _stat(y) for x, y in zip(a, b)]))
    boot = np.empty(n)
    for i in range(n):
        d = []
        for x, y in zip(a, b):
            pick = rng.integers(0, len(x), len(x))
            d.append(_stat(x[pick]) - _stat(y[pick]))
        boot[i] = np.mean(d)
    return [point, float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/ladder")
    ap.add_argument("--record", default="docs/study/ladder.json")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--rungs", nargs="+", default=list(RUNGS))
    ap.add_argument("--teacher", default="embedded")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    scores: dict[str, dict[int, dict[str, Any]]] = {r: {} for r in a.rungs}
    seconds: dict[str, float] = {}
    t0 = time.time()
    for seed in a.seeds:  # seed-major: a killed ladder has every rung at the seeds it reached
        for rung in a.rungs:
            name = f"{rung}_seed{seed}"
            run = out / "students" / name
            t1 = time.time()
            ov = [*_recipe(a.steps), f"engine.seed={seed}", f"data.cache_dir={out / 'cache'}", *RUNGS[rung]]
            if not (run / "release" / "model.safetensors").exists():
                distill(teacher=a.teacher, overrides=ov, out=run, resume=run.exists())
            res = evaluate(
                str(run / "release"),
                TASKS,
                overrides=[*QUICK.eval, "splits=val", f"fidelity.teacher={a.teacher}", f"threads={a.threads}"],
                out=out / "eval",
                name=name,
            )
            scores[rung][seed] = res["tasks"]
            seconds[name] = round(time.time() - t1, 1)
            print(f"{name}: " + ", ".join(f"{t} {_metric(v, t)[0]:.4f}" for t, v in res["tasks"].items()), flush=True)
    record = _summarise(scores, a, seconds, time.time() - t0)
    atomic_write(a.record, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))
    print(f"wrote {a.record}")


def _summarise(
    scores: dict[str, dict[int, dict[str, Any]]], a: argparse.Namespace, seconds: dict[str, float], total: float
) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    seeds = sorted(set.intersection(*(set(v) for v in scores.values())))
    mlp_r2 = {s: _metric(scores["mlp"][s]["fidelity:kicad33"], "fidelity")[0] for s in seeds} if "mlp" in scores else {}
    rows: dict[str, Any] = {}
    for rung, per_seed in scores.items():
        row: dict[str, Any] = {"overrides": RUNGS[rung]}
        for task in TASKS:
            vals = [_metric(per_seed[s][task], task)[0] for s in seeds]
            row[task] = {
                "mean": float(np.mean(vals)),
                "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                "seeds": vals,
            }
            if rung != "today" and "today" in scores:
                a_items = [_metric(per_seed[s][task], task)[1] for s in seeds]
                b_items = [_metric(scores["today"][s][task], task)[1] for s in seeds]
                if all(len(x) and len(x) == len(y) for x, y in zip(a_items, b_items)):
                    row[task]["minus_today"] = _paired(a_items, b_items, rng)
        if mlp_r2:
            ctx = [
                (_metric(per_seed[s]["fidelity:kicad33"], "fidelity")[0] - mlp_r2[s]) / (1 - mlp_r2[s]) for s in seeds
            ]
            row["context_r2"] = {
                "mean": float(np.mean(ctx)),
                "sd": float(np.std(ctx, ddof=1)) if len(ctx) > 1 else 0.0,
                "seeds": ctx,
            }
        rows[rung] = row
    return {
        "what": "DSO options on validation (fit -> val), quickstart s=16 student",
        "command": "python benchmarks/supertoken_ladder.py "
        + " ".join([f"--seeds {' '.join(map(str, a.seeds))}", f"--steps {a.steps}", f"--teacher {a.teacher}"]),
        "seeds": seeds,
        "steps": a.steps,
        "tasks": TASKS,
        "splits": "val",
        "rungs": rows,
        "seconds": {**seconds, "total": round(total, 1)},
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": a.threads,
            "torch": torch.__version__,
        },
    }


if __name__ == "__main__":
    main()
