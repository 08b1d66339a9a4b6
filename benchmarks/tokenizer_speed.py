"""The tokenizer on a large cloud: chunk sizes and bf16, on a quiet core and beside a competing process.

The mini-PointNet runs per point (600,000 points in 18,750 patches of 32 at 300,000 input points): small,
memory-bound GEMMs. Measured on the embedded teacher's tokenizer (every student copies it), one thread, in
eval, over chunk sizes (patches embedded at a time: the outputs are bit-identical for every chunk size) and
fp32 / bf16 autocast. "busy" runs the same with a competing process (a one-thread numpy matmul loop) on the
other core, started by this script. A first version also measured BatchNorm folded into the Linear layers
(and the pooled half of stage 2's GEMM taken once per patch): no gain beyond the run-to-run spread at fp32,
so the library does not carry it. Run it with nothing else running:

    python benchmarks/tokenizer_speed.py --out docs/edge/tokenizer_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import foundry3d
from foundry3d.files import atomic_write
from foundry3d.ops.group import group_points

BUSY = "import numpy as np\na = np.random.rand(700, 700)\nwhile True:\n    a = (a @ a) / 700.0\n"


def flops(widths: tuple[int, int, int], dim: int, points: int) -> float:
    c1, c2, c3 = widths
    return 2.0 * points * (3 * c1 + c1 * c2 + 2 * c2 * c3 + c3 * dim)


def measure(emb: torch.nn.Module, flat: torch.Tensor, chunk: int, bf16: bool, repeats: int) -> list[float]:
    ts = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        torch.cat([emb(c) for c in flat[: 4 * chunk].split(chunk)])  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.cat([emb(c) for c in flat.split(chunk)])
            ts.append(time.perf_counter() - t0)
    return ts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=300_000)
    ap.add_argument("--chunks", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default="docs/edge/tokenizer_speed.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = foundry3d.load("embedded").eval()
    emb, emb_chunk = model.tokenizer.embed, model.tokenizer.chunk_groups
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, a.points, 3)).astype(np.float32))
    x = x / x.norm(dim=-1).max()
    with torch.no_grad():
        patches, _, _ = group_points(x, model.groups_for(a.points), model.tcfg.group_size)
    flat = patches.reshape(-1, model.tcfg.group_size, 3)
    work = flops(model.tcfg.tokenizer_widths, model.tcfg.dim, flat.shape[0] * flat.shape[1])
    with torch.no_grad():
        ref = emb(flat[:2048])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            err = float((emb(flat[:2048]).float() - ref).abs().max())
    rows = []
    for load in ("quiet", "busy"):
        other = subprocess.Popen([sys.executable, "-c", BUSY], env={**os.environ, "OMP_NUM_THREADS": "1"}) if (
            load == "busy"
        ) else None  # fmt: skip
        try:
            time.sleep(1.0 if other else 0.0)
            for bf16 in (False, True):
                for chunk in a.chunks:
                    ts = measure(emb, flat, chunk, bf16, a.repeats)
                    med = float(np.median(ts))
                    rows.append({"load": load, "bf16": bf16, "chunk": chunk, "median_s": med,
                                 "q25_s": float(np.quantile(ts, 0.25)), "q75_s": float(np.quantile(ts, 0.75)),
                                 "gflops_per_s": work / med / 1e9})  # fmt: skip
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            if other:
                other.kill()
    record = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, one thread",
        "points": a.points,
        "patches": int(flat.shape[0]),
        "gflop": work / 1e9,
        "bf16_max_abs_diff_of_tokens": err,
        "library_chunk": int(emb_chunk),
        "rows": rows,
        "command": "python benchmarks/tokenizer_speed.py",
    }
    atomic_write(Path(a.out), lambda t: Path(t).write_text(json.dumps(record, indent=1) + "\n"))


if __name__ == "__main__":
    main()
