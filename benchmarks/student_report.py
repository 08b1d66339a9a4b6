"""Issue-4 figures: held-out distillation loss before/after training, SVM accuracy of teacher and
students, FLOPs per cloud, CPU latency at batch 1, SuperToken occupancy (s = 1, 4, 16).

    python benchmarks/student_report.py --teacher src/foundry3d/assets/teacher_tiny \
        --students runs/quickstart/students --out runs/student_report.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from foundry3d.eval.occupancy import occupancy

import foundry3d
from foundry3d.data.registry import load_dataset
from foundry3d.data.transforms import collate
from foundry3d.edge.flops import count_flops
from foundry3d.edge.latency import measure
from foundry3d.eval.results import primary
from foundry3d.eval.suite import evaluate
from foundry3d.models.foundry import FoundryStudent


@torch.no_grad()
def teacher_batches(teacher, datasets) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(points, teacher tokens) of every held-out batch: the teacher runs once for all students."""
    out = []
    for ds in datasets:
        for s in range(0, len(ds), 64):
            b = collate([ds[i] for i in range(s, min(len(ds), s + 64))], 1024, "first")
            out.append((b["points"], teacher.forward_features(b["points"])["tokens"]))
    return out


@torch.no_grad()
def heldout_loss(student, batches, beta: float = 1.0) -> float:
    total, n = 0.0, 0
    for points, y in batches:
        y_hat = student.forward_features(points)["tokens"]
        total += float(F.smooth_l1_loss(y_hat, y, beta=beta, reduction="sum"))
        n += y.numel()
    return total / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--students", required=True, help="folder with s<k>/release subfolders")
    ap.add_argument("--supertokens", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--out", default="runs/student_report.json")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    teacher = foundry3d.load(args.teacher)
    tests = [load_dataset("sh3d16:test"), load_dataset("kicad33:test")]
    tasks = ["svm:sh3d16", "svm:kicad33"]
    held_out = teacher_batches(teacher, tests)
    ev = evaluate(args.teacher, tasks, out="runs/student_report_eval", name="teacher", overrides=["progress=false"])
    x = torch.randn(1, 1024, 3)
    t_flops = count_flops(teacher, x)["flops"]
    t_lat = measure(teacher, x, budget_s=5)["median_ms"]
    res = {
        "teacher": {"svm": {t: ev["tasks"][t] for t in tasks}, "flops": t_flops, "latency_b1_ms": t_lat},
        "students": {},
    }
    for s in args.supertokens:
        path = Path(args.students) / f"s{s}" / "release"
        student = foundry3d.load(path)
        torch.manual_seed(0)
        untrained = FoundryStudent.from_teacher(
            teacher,
            **{k: v for k, v in student.config_dict().items() if k not in ("teacher", "teacher_name", "teacher_hash")},
        ).eval()
        e = evaluate(str(path), tasks, out="runs/student_report_eval", name=f"s{s}", overrides=["progress=false"])
        f = count_flops(student, x)["flops"]
        lat = measure(student, x, budget_s=5)["median_ms"]
        res["students"][s] = {
            "heldout_loss_untrained": heldout_loss(untrained, held_out),
            "heldout_loss_trained": heldout_loss(student, held_out),
            "svm": {t: e["tasks"][t] for t in tasks},
            "retention": {t: primary(e["tasks"][t], "svm") / primary(ev["tasks"][t], "svm") for t in tasks},
            "flops": f,
            "flops_ratio": f / t_flops,
            "latency_b1_ms": lat,
            "latency_ratio": lat / t_lat,
            "occupancy": {ds.name: occupancy(student, ds) for ds in tests},
        }
        print(s, json.dumps({k: v for k, v in res["students"][s].items() if k != "svm"}, default=float), flush=True)
    Path(args.out).write_text(json.dumps(res, indent=2, default=float))


if __name__ == "__main__":
    main()
