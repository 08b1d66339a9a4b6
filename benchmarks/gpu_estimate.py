"""What the GPU recipes cost: FLOPs of one training step counted, then the run's total and its time on a GPU.

Counts the floating-point operations of one forward + backward step of ``pretrain/vit_s`` (Point-JEPA ViT-S)
and ``distill/vit_s`` (a Foundry s = 16 student of that teacher, targets from the frozen teacher included) with
``torch.utils.flop_counter`` (matrix products and attention; the per-point MLPs of the tokenizer count as
matrix products), on the CPU, at a small batch, scaled to each recipe's batch and steps. The GPU time then
follows from an assumed sustained share of the GPU's dense bf16 peak (model FLOPs utilisation, MFU): written
down with the numbers, and a range rather than one figure, because no GPU was measured here. When a GPU is
lent, run ``python benchmarks/engine_throughput.py`` there and compare.

    python benchmarks/gpu_estimate.py --out docs/edge/gpu_estimate.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from foundry3d.config import load_config
from foundry3d.files import atomic_write
from foundry3d.models.hub import create_model, create_student
from foundry3d.models.jepa import PointJEPA
from foundry3d.train.distill import DistillConfig, teacher_targets
from foundry3d.train.pretrain import PretrainConfig

THROUGHPUT = Path("docs/edge/engine_throughput.json")  # the CPU's measured samples/s (engine_throughput.py)
PEAK_TFLOPS = {"H100 SXM (bf16 dense)": 989.0, "A100 (bf16 dense)": 312.0}
MFU = (0.2, 0.4)  # assumed sustained share of peak for a small-token ViT-S (a range, not a measurement)


def _count(step: Any) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def pretrain_flops(batch: int) -> tuple[float, dict[str, Any]]:
    cfg = load_config(PretrainConfig, "pretrain/vit_s")
    torch.manual_seed(0)
    model = PointJEPA(create_model(cfg.model.variant), cfg.jepa).train()
    x = torch.randn(batch, cfg.data.num_points, 3)
    x = x / x.norm(dim=-1, keepdim=True).amax(1, keepdim=True)

    def step() -> None:
        loss, _ = model(x, torch.Generator().manual_seed(0))
        loss.backward()

    return _count(step) / batch, {"steps": cfg.engine.steps, "batch": cfg.engine.batch_size}


def distill_flops(batch: int) -> tuple[float, dict[str, Any]]:
    cfg = load_config(DistillConfig, "distill/vit_s")
    torch.manual_seed(0)
    teacher = create_model("vit_s").eval()
    student = create_student(teacher, kind="foundry", supertokens=cfg.student.supertokens).train()
    x = torch.randn(batch, cfg.data.num_points, 3)
    x = x / x.norm(dim=-1, keepdim=True).amax(1, keepdim=True)

    def step() -> None:
        tokens, centres, _ = student.tokenize(x)
        with torch.no_grad():
            target = teacher_targets(teacher, tokens, centres, "final")
        out = student.forward_tokens(tokens, centres)
        torch.nn.functional.smooth_l1_loss(out["tokens"], target).backward()

    return _count(step) / batch, {"steps": cfg.engine.steps, "batch": cfg.engine.batch_size}


def _cpu_rate(name: str) -> dict[str, Any] | None:
    """The fastest measured CPU setting of this recipe in the throughput record, if it measured the recipe."""
    if not THROUGHPUT.exists():
        return None
    want = {"pretrain/vit_s": "pretrain vit_s"}.get(name)
    rows = [r for r in json.loads(THROUGHPUT.read_text())["rows"] if r["recipe"] == want]
    if not rows:
        return None
    best = max(rows, key=lambda r: r["samples_per_s"]["median"])
    return {"setting": best["setting"], "threads": best["threads"], "samples_per_s": best["samples_per_s"]["median"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=4, help="clouds per counted step (FLOPs scale linearly)")
    ap.add_argument("--out", default="docs/edge/gpu_estimate.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, fn in (("pretrain/vit_s", pretrain_flops), ("distill/vit_s", distill_flops)):
        per_sample, recipe = fn(a.batch)
        total = per_sample * recipe["batch"] * recipe["steps"]
        hours = {gpu: [total / (peak * 1e12 * m) / 3600 for m in (MFU[1], MFU[0])] for gpu, peak in PEAK_TFLOPS.items()}
        cpu = _cpu_rate(name)
        if cpu is not None:
            recipe["cpu_days_measured"] = recipe["batch"] * recipe["steps"] / cpu["samples_per_s"] / 86400
            recipe["cpu_rate"] = cpu
        rows.append(
            {
                "recipe": name,
                **recipe,
                "gflop_per_sample": per_sample / 1e9,
                "pflop_total": total / 1e15,
                "gpu_hours": hours,
            }
        )
        print(f"{name}: {per_sample / 1e9:.2f} GFLOP per cloud (forward + backward), {total / 1e15:.1f} PFLOP per run")
    record = {
        "command": "python benchmarks/gpu_estimate.py",
        "counted": "torch.utils.flop_counter, forward + backward of one step, per cloud",
        "mfu_assumed": list(MFU),
        "caveat": "a lower bound on a GPU: farthest point sampling and kNN grouping are not counted (FPS is "
        "sequential over the points) and data loading is assumed to keep up",
        "peak_tflops": PEAK_TFLOPS,
        "rows": rows,
    }
    atomic_write(a.out, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
