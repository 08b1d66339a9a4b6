"""Distil a SuperToken student from the packaged teacher, check it against its teacher, deploy it as ONNX.

    python examples/distill_and_deploy.py --steps 600 --data sh3d16:train kicad33:train   # real data (built once
                                                                                         # with `foundry3d data build`)
    python examples/distill_and_deploy.py --steps 20 --data synthetic:train@8             # anywhere, in a minute

Prints the student's token fidelity to the teacher on held-out clouds (R², the distillation objective
where it counts), its size, and the largest difference between the ONNX graph and ``student.embed``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import foundry3d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", default=["synthetic:train@8"], help="training dataset specs")
    ap.add_argument("--test", default="synthetic:test@8", help="held-out clouds for the fidelity check")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--supertokens", type=int, default=16)
    ap.add_argument("--out", default="runs/example_student")
    args = ap.parse_args()

    run = foundry3d.distill(
        teacher="embedded",
        data=args.data,
        supertokens=args.supertokens,
        out=args.out,
        overrides=[f"engine.steps={args.steps}", "engine.batch_size=8", "probe.enabled=false", "engine.progress=false"],
        resume=Path(args.out).exists(),
    )
    teacher, student = foundry3d.load("embedded"), foundry3d.load(f"{args.out}/release")

    from foundry3d.data.registry import load_dataset
    from foundry3d.data.transforms import collate

    test = load_dataset(args.test)
    clouds = collate([test[i] for i in range(min(16, len(test)))], 1024, "first")["points"]
    with torch.no_grad():
        t, s = teacher.forward_features(clouds)["tokens"], student.forward_features(clouds)["tokens"]
    r2 = 1 - ((s - t) ** 2).sum() / ((t - t.mean((0, 1))) ** 2).sum()
    size = sum(p.numel() for p in student.parameters()) / sum(p.numel() for p in teacher.parameters())
    print(f"token fidelity R2 {float(r2):.3f} on {len(clouds)} held-out clouds; parameters {size:.2f}x the teacher's")

    onnx_path = Path(args.out) / "student.onnx"
    foundry3d.export(f"{args.out}/release", onnx_path, num_points=1024, overwrite=onnx_path.exists())
    import onnxruntime as ort

    scan = clouds[0].numpy() * 250 + 40  # raw units: the graph normalises like student.embed
    (emb,) = ort.InferenceSession(str(onnx_path)).run(["global"], {"points": scan[None].astype(np.float32)})
    print(f"ONNX vs student.embed: max abs difference {np.abs(emb[0] - student.embed(scan).numpy()).max():.2e}")
    print(f"run summary keys: {sorted(run)[:5]} ...")


if __name__ == "__main__":
    main()
