"""Training throughput of the one engine: pretraining (tiny, vit_s) and distillation (s = 16), fp32 against
bf16 autocast against bf16 + torch.compile, on 1 and 2 threads, side by side in one run; and the loss curves
of fp32 and bf16 over the same steps next to the run-to-run spread of fp32 (two seeds).

Each setting runs as its own ``foundry3d`` process (fresh thread pool and compile cache) on generated shapes
(``synthetic``: no dataset build needed); samples/s are read from the run's own metrics (one row per
step) after the warm-up steps (compilation included in those). Run it on a quiet machine:

    python benchmarks/engine_throughput.py --out docs/edge/engine_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from foundry3d.files import atomic_write

COMMON = ["engine.progress=false", "engine.tensorboard=false", "engine.log_every=1", "engine.ckpt_every=1000",
          "engine.warmup_steps=2", "probe.enabled=false"]  # fmt: skip
DATA = "data.datasets=[synthetic:train@20]"
RECIPES = {
    "pretrain tiny": (["pretrain"], ["model.variant=tiny", DATA, "engine.batch_size=32"]),
    "pretrain vit_s": (["pretrain"], ["model.variant=vit_s", DATA, "engine.batch_size=8"]),
    "distill s=16": (
        ["distill", "--teacher", "embedded", "--supertokens", "16"],
        [DATA, "engine.batch_size=32"],
    ),
}  # fmt: skip
SETTINGS = {"fp32": ["engine.precision=fp32"], "bf16": ["engine.precision=bf16"],
            "bf16 + compile": ["engine.precision=bf16", "engine.compile=true"]}  # fmt: skip
# torch.compile recompiles a pretraining step whenever the JEPA masks change the token counts (every step):
# measured for tiny on 2 threads to show it, not for vit_s, whose compilations alone take tens of minutes here
SKIP = {
    ("pretrain vit_s", "bf16 + compile", 1),
    ("pretrain vit_s", "bf16 + compile", 2),
    ("pretrain tiny", "bf16 + compile", 1),
}


def run(verb: list[str], overrides: list[str], steps: int, threads: int, out: Path) -> tuple[list[dict], float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "foundry3d.cli", *verb, "--out", str(out), *COMMON, *overrides,
           f"engine.steps={steps}", f"engine.threads={threads}"]  # fmt: skip
    t0 = time.time()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("split") == "train"], time.time() - t0


def throughput(steps: int, warm: int, compile_warm: int, threads: list[int], work: Path) -> list[dict]:
    out = []
    for name, (verb, ov) in RECIPES.items():
        for setting, extra in SETTINGS.items():
            for t in threads:
                if (name, setting, t) in SKIP:
                    continue
                skip = compile_warm if "compile" in setting else warm
                rows, wall = run(verb, [*ov, *extra], steps + skip, t, work / f"{len(out)}")
                sps = np.array([r["samples_per_s"] for r in rows[skip:]])
                batch = int(next(x.split("=")[1] for x in ov if x.startswith("engine.batch_size")))
                out.append({"recipe": name, "setting": setting, "threads": t, "batch": batch,
                            "samples_per_s": {"median": float(np.median(sps)), "q25": float(np.quantile(sps, 0.25)),
                                              "q75": float(np.quantile(sps, 0.75))},
                            "steps_per_s": float(np.median(sps)) / batch, "measured_steps": len(sps),
                            "warmup_steps": skip, "wall_s": round(wall, 1)})  # fmt: skip
                print(json.dumps(out[-1]), flush=True)
    return out


def curves(steps: int, threads: int, work: Path) -> dict:
    """distill s=16: fp32 (seeds 1 and 2) and bf16 (seed 1) over the same steps."""
    verb, ov = RECIPES["distill s=16"]
    got = {}
    for tag, extra in (("fp32 seed 1", ["engine.seed=1"]), ("fp32 seed 2", ["engine.seed=2"]),
                       ("bf16 seed 1", ["engine.seed=1", "engine.precision=bf16"])):  # fmt: skip
        rows, _ = run(verb, [*ov, *extra, "engine.log_every=10"], steps, threads, work / tag.replace(" ", "_"))
        got[tag] = {"step": [r["step"] for r in rows], "distill_loss": [r["distill_loss"] for r in rows]}
    a, b, c = (np.array(got[k]["distill_loss"]) for k in ("fp32 seed 1", "fp32 seed 2", "bf16 seed 1"))
    return {
        "runs": got,
        "mean_abs_diff_bf16_vs_fp32": float(np.abs(c - a).mean()),
        "mean_abs_diff_seed2_vs_seed1": float(np.abs(b - a).mean()),
        "final": {"fp32 seed 1": float(a[-1]), "fp32 seed 2": float(b[-1]), "bf16 seed 1": float(c[-1])},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="measured steps per setting")
    ap.add_argument("--warm", type=int, default=2)
    ap.add_argument("--compile-warm", type=int, default=4)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--curve-steps", type=int, default=150)
    ap.add_argument("--out", default="docs/edge/engine_throughput.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = throughput(a.steps, a.warm, a.compile_warm, a.threads, Path(tmp))
        curve = curves(a.curve_steps, max(a.threads), Path(tmp)) if a.curve_steps else None
    record = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}",
        "rows": rows,
        "curves": curve,
        "command": "python benchmarks/engine_throughput.py",
    }
    atomic_write(Path(a.out), lambda t: Path(t).write_text(json.dumps(record, indent=1) + "\n"))


if __name__ == "__main__":
    main()
