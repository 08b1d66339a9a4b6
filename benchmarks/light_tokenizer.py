"""The lighter-tokenizer students, as one record: what each is (architecture, FLOPs per cloud against
the teacher, the resolved training settings of its run), how much of the teacher's encoder gain it
keeps on the validation splits its recipe was chosen on, and on the held-out test splits.

Reads results written by ``foundry3d eval`` (test) and ``benchmarks/recipe_ladder.py`` (val): every
folder holds ``<name>/results.json``, with the teacher and its floor under the names given.

    python benchmarks/light_tokenizer.py --test runs/paper/eval --val runs/ladder_edge/eval \
        --students foundry_s_16 edgeA_s16 edgeB_s16 edgeB3k_s16 edgeB6k_s16 edgeBh6k_s16 \
        --out docs/edge/light_tokenizer.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import yaml

from foundry3d.edge.flops import count_flops
from foundry3d.eval.results import ci, comparison, load_results, primary
from foundry3d.eval.task import metric
from foundry3d.models.checkpoint import atomic_write
from foundry3d.models.hub import describe_model, resolve

TARGET = {"flops_ratio_max": 0.15, "gain_kept_min": 0.85}


def flops(spec: str, points: int) -> float:
    net, _ = resolve(spec)
    x = torch.randn(1, points, 3, generator=torch.Generator().manual_seed(0))
    return float(count_flops(net, x, num_groups=net.groups_for(points))["flops"])


def run_settings(spec: str) -> dict[str, Any] | None:
    """The resolved config of the run that made a student release (``<run>/config.yaml``)."""
    cfg = Path(spec).parent / "config.yaml"
    if not cfg.exists():
        return None
    c = yaml.safe_load(cfg.read_text())
    return {"student": c["student"], "loss": c["loss"], "steps": c["engine"]["steps"], "data": c["data"]["datasets"]}


def summary(table: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """Per task: the student's score with its CI and the gain kept (None where there is no headroom)."""
    out = {}
    for task, row in table.items():
        if name not in row["students"]:
            continue
        proto = task.split(":", 1)[0]
        s, g = row["students"][name], row["students"][name]["gain"]
        out[task] = {
            "metric": metric(proto),
            "teacher": primary(row["teacher"], proto),
            "floor": primary(row["floor"], proto),
            "score": primary(s["result"], proto),
            "ci95": ci(s["result"]),
            "headroom": g["headroom"],
            "gap_ci95": g["gap_ci95"],
            "gain_kept": g["gain"],
            "gain_kept_ci95": g["gain_ci95"],
        }
    return out


def table_for(folder: Path, teacher: str, floor: str, students: list[str]) -> dict[str, dict[str, Any]] | None:
    if not (folder / teacher / "results.json").exists():
        return None
    present = {s: load_results(folder / s) for s in students if (folder / s / "results.json").exists()}
    return comparison(load_results(folder / teacher), load_results(folder / floor), present)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test", required=True, help="folder of test-split results (foundry3d eval --out)")
    ap.add_argument("--val", help="folder of validation-split results (recipe_ladder.py's <out>/eval)")
    ap.add_argument("--teacher", default="teacher")
    ap.add_argument("--floor", default="floor")
    ap.add_argument("--students", nargs="+", required=True, help="result folder names under --test")
    ap.add_argument("--points", type=int, default=1024, help="cloud size for FLOPs")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    test = table_for(Path(a.test), a.teacher, a.floor, a.students)
    if test is None:
        raise SystemExit(f"{a.test}/{a.teacher}/results.json does not exist: evaluate the teacher there first")
    missing = [s for s in a.students if not (Path(a.test) / s / "results.json").exists()]
    if missing:
        raise SystemExit(f"no test results for {missing} under {a.test}: run foundry3d eval --name NAME first")
    val = table_for(Path(a.val), a.teacher, a.floor, a.students) if a.val else None
    teacher_spec = load_results(Path(a.test) / a.teacher)["model"]["model"]
    t_flops = flops(teacher_spec, a.points)
    models = {}
    for name in a.students:
        spec = load_results(Path(a.test) / name)["model"]["model"]
        net, info = resolve(spec)
        f = flops(spec, a.points)
        models[name] = {
            "release": spec,
            "architecture": describe_model(net, info),
            "gflops": f / 1e9,
            "flops_ratio": f / t_flops,
            "run": run_settings(spec),
            "test": summary(test, name),
            "val": summary(val, name) if val else None,
        }
    record = {
        "points": a.points,
        "teacher": {"release": teacher_spec, "gflops": t_flops / 1e9},
        "target": TARGET,
        "models": models,
    }
    atomic_write(Path(a.out), lambda p: Path(p).write_text(json.dumps(record, indent=1, default=float) + "\n"))
    for name, m in models.items():
        kept = {t: v["gain_kept"] for t, v in m["test"].items() if v["headroom"]}
        print(
            f"{name}: {m['flops_ratio']:.3f}x FLOPs; test gain kept "
            + ", ".join(f"{t} {k:.0%}" for t, k in kept.items())
        )


if __name__ == "__main__":
    main()
