"""SuperToken occupancy study: which changes make a Foundry student use the budget it is given.

Distils one teacher at s = 4 and 16 with a ladder of DSO variants (each adds one change to the
previous), then measures on the test splits: mean non-empty SuperTokens per cloud, SuperTokens
never used, distillation loss, and linear-SVM retention (student / teacher accuracy) on SH3D-16
and KiCad-33. All runs share one cache of teacher targets.

    python benchmarks/occupancy_study.py --teacher runs/teacher_tiny/release --out runs/occupancy
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from foundry3d.eval.occupancy import occupancy

import foundry3d
from foundry3d.train.distill import distill
from foundry3d.train.probe import Probe, ProbeSection
from foundry3d.train.runlog import read_metrics

BEST = ["student.similarity=cosine", "student.centre_keys=true", "student.init=data"]
RECIPE = [  # what else moves retention at a fixed occupancy fix (s = 16)
    ("best occupancy fix (cosine, centred keys, data init)", BEST),
    ("+ no Gumbel noise (straight-through softmax)", [*BEST, "loss.gumbel_noise=false"]),
    ("+ CAU hidden ratio 4", [*BEST, "student.cau_hidden_ratio=4"]),
    ("+ target: layer-normed last block", [*BEST, "loss.target=layer"]),
    ("+ 2 cached views (augmentation)", [*BEST, "data.cache_views=2"]),
    ("+ 2x steps", [*BEST, "engine.steps=3000"]),
    ("+ all 6 teacher blocks", [*BEST, "student.blocks=[0, 1, 2, 3, 4, 5]"]),
]
LADDER = [
    ("paper: dot-product, random init", ["student.similarity=dot", "student.centre_keys=false", "student.init=random"]),
    (
        "+ cosine q,k with learned temperature",
        ["student.similarity=cosine", "student.centre_keys=false", "student.init=random"],
    ),
    ("+ keys centred per cloud", ["student.similarity=cosine", "student.centre_keys=true", "student.init=random"]),
    (
        "+ SuperTokens initialised from data",
        ["student.similarity=cosine", "student.centre_keys=true", "student.init=data"],
    ),
    ("+ usage balancing (0.05)", ["student.init=data", "loss.balance=0.05"]),
    ("+ Gumbel tau 1 -> 0.3", ["student.init=data", "loss.balance=0.05", "loss.tau_end=0.3"]),
    ("+ SuperToken lr x10", ["student.init=data", "loss.balance=0.05", "loss.tau_end=0.3", "loss.dso_lr_scale=10"]),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--out", default="runs/occupancy")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--supertokens", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--variants", type=int, nargs="*", help="indices into the ladder (default: all)")
    ap.add_argument("--ladder", choices=["occupancy", "recipe"], default="occupancy")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    svm = Probe(ProbeSection(datasets=["sh3d16", "kicad33"]), None)  # the training runs' probe (C = 0.05)
    sets = svm.sets()
    teacher = foundry3d.load(args.teacher)
    t_acc = {k.removeprefix("svm_"): v for k, v in svm(teacher).items()}
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"teacher": t_acc, "runs": []}
    done = {(r["variant"], r["supertokens"]) for r in results["runs"]}
    base = [
        "data.datasets=[sh3d16:train, sh3d16:pool, kicad33:train, kicad33:pool]",
        "data.cache_views=1",
        f"data.cache_dir={out / 'cache'}",
        "probe.enabled=false",
        f"engine.steps={args.steps}",
        "engine.log_every=50",
        "engine.tensorboard=false",
        "engine.progress=false",
    ]
    ladder = LADDER if args.ladder == "occupancy" else RECIPE
    for vi, (name, overrides) in enumerate(ladder):
        if args.variants and vi not in args.variants:
            continue
        for s in args.supertokens:
            if (name, s) in done:
                continue
            run = out / f"v{vi}_s{s}"
            t0 = time.time()
            distill(teacher=args.teacher, supertokens=s, overrides=base + overrides, out=run, overwrite=True)
            student = foundry3d.load(run / "release")
            acc = {k.removeprefix("svm_"): v for k, v in svm(student).items()}
            occ = {n: occupancy(student, te) for n, (_, te) in sets.items()}
            rows = read_metrics(run)
            tail = rows[-4:]
            rec = {
                "variant": name,
                "supertokens": s,
                "minutes": round((time.time() - t0) / 60, 1),
                "distill_loss": sum(r["distill_loss"] for r in tail) / len(tail),
                "grad_rms_supertokens": sum(r["grad_rms_supertokens"] for r in tail) / len(tail),
                "grad_rms_encoder": sum(r["grad_rms_encoder"] for r in tail) / len(tail),
                "svm": acc,
                "retention": {n: acc[n] / t_acc[n] for n in acc},
                "occupancy": {n: o["mean_per_cloud"] for n, o in occ.items()},
                "never_used": {n: o["never_used"] for n, o in occ.items()},
            }
            results["runs"].append(rec)
            results_path.write_text(json.dumps(results, indent=2))
            print(json.dumps(rec), flush=True)
    lines = [
        "| variant | s | occupancy SH3D / KiCad | never used | distill loss | grad RMS S / enc | "
        "SVM SH3D (ret.) | SVM KiCad (ret.) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['variant']} | {r['supertokens']} | {r['occupancy']['sh3d16']:.1f} / {r['occupancy']['kicad33']:.1f}"
            f" | {r['never_used']['sh3d16']} / {r['never_used']['kicad33']} | {r['distill_loss']:.4f} | "
            f"{r['grad_rms_supertokens']:.2e} / {r['grad_rms_encoder']:.2e} | "
            f"{100 * r['svm']['sh3d16']:.1f} ({r['retention']['sh3d16']:.3f}) | "
            f"{100 * r['svm']['kicad33']:.1f} ({r['retention']['kicad33']:.3f}) |"
        )
    t = results["teacher"]
    lines.append(f"\nTeacher SVM: SH3D-16 {100 * t['sh3d16']:.1f}, KiCad-33 {100 * t['kicad33']:.1f}.")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
