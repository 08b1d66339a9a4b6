"""The token-count sweep: where should a learned assignment (DSO) beat clustering? s = 16 SuperTokens fixed,
clouds of more points and patch tokens, so that one SuperToken stands for 4, 16 (, 64) tokens.

For each cloud size (points: patch tokens at the teacher's ratio, 64 per 1,024 points) every kind is distilled
with the same recipe (the quickstart's engine and steps, the teacher's targets cached once per size: the
students' tokenizer is the frozen copy, so a step costs DSO + encoder + CAU only) and several seeds, then
scored on the held-out test splits at that size next to the teacher and the floor (95 % CIs). Each kind's
difference to DSO is paired over the same test items and seeds. Sizes beyond the points a dataset stores are
refused with the stored count (no resampling with replacement pretends to be a bigger cloud).

    python benchmarks/supertoken_sweep.py --out runs/sweep --record docs/study/sweep.json

A re-run skips the students and evaluations it already has (resume after a kill).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from foundry3d.data.registry import dataset_info
from foundry3d.eval.results import comparison, over_seeds, paired_over_seeds, primary
from foundry3d.eval.suite import evaluate
from foundry3d.files import atomic_write
from foundry3d.quickstart import DISTILL_COMMON, QUICK
from foundry3d.train.distill import distill

sys.path.insert(0, str(Path(__file__).parent))
from supertoken_ladder import RUNGS  # the ladder's DSO options, by name (today: the DSO before the ladder)

KINDS = ["foundry", "kmeans", "kmeans_static", "kmeans_xyz", "fps", "fps_presample", "mlp", "mimic"]
TASKS = ["svm:sh3d16", "svm:kicad33", "fewshot:kicad33", "fidelity:kicad33"]
DATASETS = {"sh3d16": "sh3d16", "kicad33": "kicad33"}  # every dataset a size must fit, by its info name


def stored_points(names: list[str]) -> dict[str, int]:
    """Points per shape each dataset stores (its metadata)."""
    return {n: int(dataset_info(n)["points_per_shape"]) for n in names}


def check_sizes(sizes: list[int], stored: dict[str, int]) -> None:
    for n in sizes:
        short = {k: v for k, v in stored.items() if v < n}
        if short:
            shown = ", ".join(f"{k} stores {v}" for k, v in short.items())
            raise SystemExit(
                f"--sizes {n}: larger than the points a dataset stores ({shown}); expected <= {min(stored.values())}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/sweep")
    ap.add_argument("--record", default="docs/study/sweep.json")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--kinds", nargs="+", default=KINDS)
    ap.add_argument("--before", action="store_true", help="also the DSO before the ladder's choice (foundry_before)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--teacher", default="embedded")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    check_sizes(a.sizes, stored_points(list(DATASETS.values())))
    torch.set_num_threads(a.threads)
    kinds: dict[str, list[str]] = {k: [f"student.kind={k}"] for k in a.kinds}
    if a.before:
        kinds = {**kinds, "foundry_before": ["student.kind=foundry", *RUNGS["today"]]}
    out, t0 = Path(a.out), time.time()
    sizes: dict[str, Any] = {}
    for n in a.sizes:
        ts = time.time()
        groups = round(n * 64 / 1024)
        ev = [
            *QUICK.eval,
            f"svm.num_points={n}",
            f"fidelity.num_points={n}",
            f"fidelity.teacher={a.teacher}",
            f"threads={a.threads}",
            "progress=false",
        ]
        folder = out / f"points{n}"
        refs = {
            name: evaluate(spec, TASKS, overrides=ev, out=folder / "eval", name=name)
            for name, spec in (("teacher", a.teacher), ("floor", f"floor:{a.teacher}"))
        }
        runs: dict[str, dict[int, dict[str, Any]]] = {k: {} for k in kinds}
        seconds: dict[str, float] = {}
        for seed in a.seeds:
            for kind, ov in kinds.items():
                name = f"{kind}_seed{seed}"
                run, t1 = folder / "students" / name, time.time()
                recipe = [
                    *DISTILL_COMMON,
                    "data.cache_views=1",
                    f"engine.steps={a.steps}",
                    "engine.warmup_steps=50",
                    "engine.progress=false",
                    "student.supertokens=16",
                    f"data.num_points={n}",
                    f"data.num_groups={groups}",
                    f"engine.seed={seed}",
                    f"data.cache_dir={folder / 'cache'}",
                    *ov,
                ]
                if not (run / "release" / "model.safetensors").exists():
                    distill(teacher=a.teacher, overrides=recipe, out=run, resume=run.exists())
                res = evaluate(str(run / "release"), TASKS, overrides=ev, out=folder / "eval", name=name)
                runs[kind][seed] = res
                seconds[name] = round(time.time() - t1, 1)
                print(
                    f"{n} points {name}: "
                    + ", ".join(f"{t} {primary(v, t.split(':')[0]):.4f}" for t, v in res["tasks"].items()),
                    flush=True,
                )
        sizes[str(n)] = _size_summary(n, groups, refs, runs, a.seeds, seconds, time.time() - ts)
    record = {
        "what": "token-count sweep at s = 16: each kind's difference to DSO against tokens per SuperToken",
        "command": "python benchmarks/supertoken_sweep.py "
        + " ".join(
            [
                f"--sizes {' '.join(map(str, a.sizes))}",
                f"--seeds {' '.join(map(str, a.seeds))}",
                f"--kinds {' '.join(a.kinds)}",
                f"--steps {a.steps}",
            ]
            + (["--before"] if a.before else [])
        ),
        "supertokens": 16,
        "sizes": sizes,
        "seconds_total": round(time.time() - t0, 1),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": a.threads,
            "torch": torch.__version__,
        },
    }
    atomic_write(a.record, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))
    print(f"wrote {a.record}")


def _size_summary(
    n: int,
    groups: int,
    refs: dict[str, dict[str, Any]],
    runs: dict[str, dict[int, dict[str, Any]]],
    seeds: list[int],
    seconds: dict[str, float],
    wall: float,
) -> dict[str, Any]:
    """Teacher and floor (with the headroom: teacher - floor and its CI), then every kind over seeds with its
    paired difference to DSO (the foundry kind, with the defaults the ladder chose)."""
    dso = "foundry"
    first = {k: v[seeds[0]] for k, v in runs.items()}
    comp = comparison(refs["teacher"], refs["floor"], first)
    tasks: dict[str, Any] = {}
    for task in TASKS:
        proto = task.split(":", 1)[0]
        row: dict[str, Any] = {
            "teacher": primary(refs["teacher"]["tasks"][task], proto),
            "floor": primary(refs["floor"]["tasks"][task], proto),
            "headroom": next(iter(comp[task]["students"].values()))["gain"]["gap_ci95"] if task in comp else None,
            "kinds": {},
        }
        for kind, per_seed in runs.items():
            rs = [per_seed[s]["tasks"][task] for s in seeds]
            cell = over_seeds(proto, rs)
            if kind != dso:
                cell["dso_minus"] = paired_over_seeds(proto, [runs[dso][s]["tasks"][task] for s in seeds], rs)
            row["kinds"][kind] = cell
        tasks[task] = row
    return {
        "points": n,
        "tokens": groups,
        "tokens_per_supertoken": groups / 16,
        "dso": dso,
        "tasks": tasks,
        "seconds": {**seconds, "total": round(wall, 1)},
    }


if __name__ == "__main__":
    main()
