"""Choose a distillation recipe on validation splits only (fit -> val), never on a test split.

Distils one student per (recipe, s) from the same teacher-target cache, evaluates teacher, floor
and students on the validation splits carved from train, and prints each student's encoder gain
kept (paired bootstrap 95 % CI) per task, plus the token fidelity. Writes ``<out>/ladder.json``.

    python benchmarks/recipe_ladder.py --teacher embedded --s 1 16 --out runs/ladder \
        --recipe base= --recipe no_noise=loss.gumbel_noise=false --recipe "long=engine.steps=1500;data.cache_views=2"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from foundry3d.eval.results import comparison, format_comparison
from foundry3d.eval.suite import evaluate
from foundry3d.quickstart import QUICK

TASKS = ["svm:sh3d16", "svm:kicad33", "svm:oad", "fidelity:kicad33"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="embedded")
    ap.add_argument("--s", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--recipe", action="append", default=[], help="NAME=key=value;key=value (distill overrides)")
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--out", default="runs/ladder")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from foundry3d.train.distill import distill

    out = Path(args.out)
    recipes = {}
    for r in args.recipe or ["base="]:
        name, _, ov = r.partition("=")
        recipes[name] = [o for o in ov.split(";") if o]
    ev = ["splits=val", "progress=false", f"fidelity.teacher={args.teacher}"]
    protocol = {"config": QUICK.eval, "overrides": ev, "out": out / "eval"}
    results = {
        "teacher": evaluate(args.teacher, args.tasks, name="teacher", **protocol),
        "floor": evaluate(f"floor:{args.teacher}", args.tasks, name="floor", **protocol),
    }
    for name, ov in recipes.items():
        for s in args.s:
            run = out / "students" / f"{name}_s{s}"
            overrides = [f"data.cache_dir={out / 'cache'}", "engine.progress=false", *ov]
            distill(
                teacher=args.teacher, supertokens=s, config=QUICK.distill, overrides=overrides, out=run,
                resume=run.exists(),
            )  # fmt: skip
            results[f"{name} s={s}"] = evaluate(str(run / "release"), args.tasks, name=f"{name}_s{s}", **protocol)
    comp = comparison(
        results["teacher"], results["floor"], {k: v for k, v in results.items() if k not in ("teacher", "floor")}
    )
    print(format_comparison(comp))
    (out / "ladder.json").write_text(
        json.dumps({"recipes": recipes, "s": args.s, "comparison": comp}, indent=1, default=float)
    )


if __name__ == "__main__":
    main()
