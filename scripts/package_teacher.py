"""Package a pretraining run as an embedded teacher: fp16 release, model card and a copy of the run record.

    python scripts/package_teacher.py --run runs/teacher_tiny_corpus --eval runs/teacher_eval \
        --out src/foundry3d/assets/teacher_tiny2 --record docs/teacher_tiny2_run

``--eval`` is a ``foundry3d eval --out`` folder holding the teacher's and its floor's results
(``teacher/results.json`` and ``floor/results.json``, held-out test splits). Every number in the card
is read from the run's files and those results.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

import torch
import yaml

from foundry3d.edge.flops import count_flops
from foundry3d.eval.results import comparison, format_score, load_results
from foundry3d.eval.task import scale_digits
from foundry3d.models.checkpoint import save_release
from foundry3d.models.hub import load
from foundry3d.report.tables import task_label
from foundry3d.report.teacher_run import val_curve_table
from foundry3d.train.runlog import read_metrics


def training_hours(rows: list[dict]) -> float:
    """Training time from the log rows; gaps over 10 minutes (process stopped or paused) do not count."""
    times = sorted(r["time"] for r in rows)
    return sum(b - a for a, b in itertools.pairwise(times) if b - a < 600) / 3600


def val_curve(folder: Path, name: str) -> list[str]:
    """The snapshots' validation curve (eval protocol, paired CIs) as the card's Markdown section."""
    table = val_curve_table(folder, name)
    if table is None:
        return []
    return [
        "",
        "## Validation curve with the evaluation's protocol",
        "",
        table.title + ".",
        "",
        "| " + " | ".join(table.columns) + " |",
        "|---|" + "---|" * (len(table.columns) - 1),
        *("| " + " | ".join(row) + " |" for row in table.rows),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--eval", required=True, help="eval folder with teacher/ and floor/ results")
    ap.add_argument("--out", required=True)
    ap.add_argument("--record", required=True, help="docs folder for the run record (metrics, config, changes)")
    ap.add_argument("--name", default="tiny2")
    ap.add_argument("--recipe", default="pretrain/tiny_corpus", help="the built-in recipe the run was started from")
    ap.add_argument(
        "--val",
        help="eval folder with step_N/ and floor_step_N/ results of the run's snapshots on the validation splits "
        "(foundry3d eval ... splits=val): rendered as the validation curve with the evaluation's own protocol",
    )
    ap.add_argument("--card-only", action="store_true", help="rewrite MODEL_CARD.md and the record only")
    args = ap.parse_args()
    run = Path(args.run)
    model = load(run / "release")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    train, probes = read_metrics(run, "train"), read_metrics(run, "eval")
    commit = subprocess.run(["git", "log", "-1", "--format=%H", "--", "src"], capture_output=True, text=True).stdout
    old_card = Path(args.out) / "MODEL_CARD.md"
    if args.card_only and old_card.exists():  # the weights were packaged earlier: keep the commit they came from
        found = re.search(r"Packaged at code commit `([0-9a-f]+)`", old_card.read_text())
        commit = found.group(1) if found else commit
    log = run / "config_changes.jsonl"
    changes = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    teacher, floor = load_results(Path(args.eval) / "teacher"), load_results(Path(args.eval) / "floor")
    comp = comparison(teacher, floor, {"teacher": teacher})
    if args.card_only:  # the release is already packaged: rewrite its card only (weights and hash unchanged)
        out = Path(args.out)
    else:
        out = save_release(
            model, args.out, {**model.release_meta, "packaged_from": str(run)}, dtype=torch.float16, overwrite=True
        )
    flops = count_flops(model, torch.randn(1, model.cfg.num_points, 3))["flops"]
    n_params = sum(p.numel() for p in model.parameters())
    datasets = cfg["probe"]["datasets"]
    card = [
        f"# Model card: foundry3d embedded `{args.name}` Point-JEPA teacher",
        "",
        f"- Architecture: `{cfg['model']['variant']}` point-patch ViT, {model.cfg.dim} wide, {model.cfg.depth} blocks, "
        f"{model.cfg.num_heads} heads, {model.cfg.num_groups} x {model.cfg.group_size} patches for "
        f"{model.cfg.num_points} points, tokenizer widths {list(model.cfg.tokenizer_widths)}; "
        f"{n_params / 1e6:.2f}M parameters, {flops / 1e9:.3f} GFLOPs per {model.cfg.num_points}-point cloud; "
        "weights stored in float16 (loaded as float32).",
        "- Training: Point-JEPA self-supervised pretraining (`foundry3d pretrain --config "
        f"{args.recipe}`), recipe `src/foundry3d/configs/{args.recipe}.yaml`"
        + (", bf16 autocast." if cfg["engine"].get("precision") == "bf16" else "."),
        f"- Data: {', '.join(cfg['data']['datasets'])}: the corpus built from seven Debian game / test-model "
        "packages (`foundry3d data build corpus`, without the oad validation and test shapes), the SH3D-16 and "
        "KiCad-33 train splits and unlabelled pools; never a test split.",
        f"- Packaged at code commit `{commit.strip()}` (the pretraining ran on the commits before it).",
        f"- Steps: {cfg['engine']['steps']} at batch {cfg['engine']['batch_size']} "
        f"({cfg['engine']['steps'] * cfg['engine']['batch_size']:,} cloud views); "
        f"{training_hours(train + probes):.1f} h of training on the 2-core CPU development machine with one thread, "
        "beside other work (no GPU was lent).",
        *[
            f"- Resumed at step {c['at_step']} with a changed recipe: "
            + ", ".join(f"`{k}` {a} -> {b}" for k, (a, b) in c["changes"].items())
            + (
                "."
                if "engine.steps" not in c["changes"]
                else " (superseded: the run went on from the same checkpoint with the next change)."
                if any(d["at_step"] == c["at_step"] and "engine.steps" in d["changes"] for d in changes[i + 1 :])
                else " (the learning-rate schedule follows the new step count from there on)."
            )
            for i, c in enumerate(changes)
        ],
        "",
        "## Held-out scores next to the floor",
        "",
        "`foundry3d eval` on the test splits; the floor is this teacher's own tokenizer + positional MLP, "
        "layer-normed, with no block (`floor:embedded`). 95 % bootstrap CIs over test items; the gap's CI is paired.",
        "",
        "| task | teacher | floor | teacher - floor |",
        "|---|---|---|---|",
    ]
    for task, row in comp.items():
        proto = task.split(":")[0]
        g = row["students"]["teacher"]["gain"]
        s = scale_digits(proto)[0]
        card.append(
            f"| {task_label(task)} | {format_score(row['teacher'], proto)} | {format_score(row['floor'], proto)} | "
            f"{s * g['gap']:.1f} [{s * g['gap_ci95'][0]:.1f}, {s * g['gap_ci95'][1]:.1f}] |"
        )
    if args.val:
        card += val_curve(Path(args.val), args.name)
    card += [
        "",
        "## Pretraining curve (validation splits carved from train: fit -> val, linear SVM, fixed C)",
        "",
        "| step | " + " | ".join(f"{d} teacher / floor / gain" for d in datasets) + " |",
        "|---|" + "---|" * len(datasets),
    ]
    for p in probes:
        cells = [
            f"{100 * p[f'svm_{d}']:.1f} / {100 * p[f'floor_{d}']:.1f} / {100 * p[f'gain_{d}']:+.1f}"
            for d in datasets
            if f"svm_{d}" in p
        ]
        card.append(f"| {p['step']} | " + " | ".join(cells) + " |")
    losses = [(r["step"], r["loss"]) for r in train]
    keep = [losses[i] for i in range(0, len(losses), max(1, len(losses) // 12))] + losses[-1:]
    card += ["", "## Pretraining loss (SmoothL1, beta 2)", "", "| step | loss |", "|---|---|"]
    card += [f"| {s} | {loss:.4f} |" for s, loss in keep]
    card += [
        "",
        "Licences: trained on point clouds derived from sweethome3d-furniture (CC0 / CC-BY-3.0), kicad-packages3d "
        "(CC-BY-SA-4.0) and the corpus packages (0ad-data CC-BY-SA 3.0, megaglest-data CC-BY-SA 3.0, "
        "warzone2100-data GPL-2+, trigger-rally-data, assimp-testmodels); see the datasets' ATTRIBUTION.md.",
    ]
    (out / "MODEL_CARD.md").write_text("\n".join(card) + "\n")
    record = Path(args.record)
    record.mkdir(parents=True, exist_ok=True)
    for f in ("metrics.jsonl", "config.yaml", "config_changes.jsonl", "summary.json"):
        if (run / f).exists():
            shutil.copyfile(run / f, record / f)
    for name in ("teacher", "floor"):
        shutil.copyfile(Path(args.eval) / name / "results.json", record / f"eval_{name}.json")
    print(f"packaged {out} ({(out / 'model.safetensors').stat().st_size / 1e6:.1f} MB); record in {record}")


if __name__ == "__main__":
    main()
