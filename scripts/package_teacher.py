"""Package a pretraining run as the embedded teacher: fp16 release + generated model card.

    python scripts/package_teacher.py --run runs/teacher_tiny --eval runs/teacher_eval \
        --random-eval runs/teacher_eval --out src/foundry3d/assets/teacher_tiny

Every number in the card is read from the run's files (metrics, summary, evaluation results).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
from pathlib import Path

import torch
import yaml

from foundry3d.eval.suite import format_score
from foundry3d.models.checkpoint import load, save_release
from foundry3d.report.quickstart_report import LABELS
from foundry3d.train.engine import read_metrics


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--eval", required=True, help="results.json of the teacher (foundry3d eval)")
    ap.add_argument("--random-eval", required=True, help="results.json of the same architecture, random weights")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    run = Path(args.run)
    model = load(run / "release")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    train = read_metrics(run, "train")
    probes = read_metrics(run, "eval")
    commit = subprocess.run(["git", "log", "-1", "--format=%H", "--", "src"], capture_output=True, text=True).stdout
    log = run / "config_changes.jsonl"
    changes = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    # training time: gaps of more than 10 minutes between log rows (the process was down) do not count
    times = sorted(r["time"] for r in train + probes)
    busy = [0.0] + [b - a if b - a < 600 else 0.0 for a, b in itertools.pairwise(times)]
    elapsed = dict(zip(times, itertools.accumulate(busy)))  # training seconds at each log row
    hours = elapsed[times[-1]] / 3600 if times else 0.0
    out = save_release(model, args.out, {**model.release_meta, "packaged_from": str(run)}, dtype=torch.float16)
    ev = json.loads(Path(args.eval).read_text())
    rnd = json.loads(Path(args.random_eval).read_text())
    n_params = sum(p.numel() for p in model.parameters())
    card = [
        "# Model card: foundry3d embedded `tiny` Point-JEPA teacher",
        "",
        f"- Architecture: `tiny` point-patch ViT, {model.cfg.dim} wide, {model.cfg.depth} blocks, "
        f"{model.cfg.num_heads} heads, {model.cfg.num_groups} x {model.cfg.group_size} patches for "
        f"{model.cfg.num_points} points, tokenizer widths {list(model.cfg.tokenizer_widths)}; "
        f"{n_params / 1e6:.2f}M parameters; weights stored in float16 (loaded as float32).",
        "- Training: Point-JEPA self-supervised pretraining (`foundry3d pretrain`), recipe "
        "`src/foundry3d/configs/pretrain/tiny.yaml`.",
        f"- Data: {', '.join(cfg['data']['datasets'])} — train splits and unlabelled pools only, never a test split.",
        "- Command: `foundry3d data build sh3d16 && foundry3d data build kicad && "
        "foundry3d pretrain --config pretrain/tiny --out runs/teacher_tiny`",
        f"- Packaged at code commit `{commit.strip()}` (the pretraining ran on the commits before it).",
        f"- Steps: {cfg['engine']['steps']} at batch {cfg['engine']['batch_size']} "
        f"({cfg['engine']['steps'] * cfg['engine']['batch_size']:,} cloud views); wall time {hours:.1f} h on the "
        f"2-core CPU machine with one thread (torch.set_num_threads(1)), beside other work.",
        *[
            f"- Resumed at step {c['at_step']} with a changed recipe: "
            + ", ".join(f"`{k}` {a} -> {b}" for k, (a, b) in c["changes"].items())
            + " (the learning-rate schedule follows the new step count from there on)."
            for c in changes
        ],
        "",
        "## Evaluation (foundry3d eval, default suite)",
        "",
        f"`foundry3d eval --model {run / 'release'}` and `foundry3d eval --model random:{cfg['model']['variant']}` "
        "(float32 weights, before the float16 conversion; part segmentation with Point-JEPA's three-block "
        "features). Mean ± spread.",
        "",
        "| task | this teacher | same architecture, random weights |",
        "|---|---|---|",
    ]
    for t in ev["tasks"]:
        if t in rnd["tasks"]:
            card.append(
                f"| {LABELS.get(t, t)} | {format_score(ev['tasks'][t], t.split(':')[0])} | "
                f"{format_score(rnd['tasks'][t], t.split(':')[0])} |"
            )
    card += [
        "",
        "## Pretraining curve (linear-SVM probe, fixed C on standardised features, test splits)",
        "",
        "| step | SVM SH3D-16 | SVM KiCad-33 | training minutes |",
        "|---|---|---|---|",
    ]
    card += [
        f"| {p['step']} | {100 * p['svm_sh3d16']:.1f} | {100 * p['svm_kicad33']:.1f} | {elapsed[p['time']] / 60:.0f} |"
        for p in probes
    ]
    losses = [(r["step"], r["loss"]) for r in train]
    keep = [losses[i] for i in range(0, len(losses), max(1, len(losses) // 12))] + losses[-1:]
    card += ["", "## Pretraining loss (SmoothL1, beta 2)", "", "| step | loss |", "|---|---|"]
    card += [f"| {s} | {loss:.4f} |" for s, loss in keep]
    card += [
        "",
        "Licences: trained on point clouds derived from sweethome3d-furniture (CC0 / CC-BY-3.0) and "
        "kicad-packages3d (CC-BY-SA-4.0); see the datasets' ATTRIBUTION.md.",
    ]
    (out / "MODEL_CARD.md").write_text("\n".join(card) + "\n")
    print(f"packaged {out} ({(out / 'model.safetensors').stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
