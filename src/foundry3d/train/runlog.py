"""A run's log: metrics.jsonl (one JSON row per logged step, the record every curve and table is drawn from),
TensorBoard when asked, and the progress bar; written by rank 0 only."""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from foundry3d.train.distributed import DistInfo


class RunLogger:
    """metrics.jsonl + TensorBoard on rank 0; silent elsewhere."""

    def __init__(self, run_dir: Path, info: DistInfo, tensorboard: bool) -> None:
        self.info = info
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if info.is_main and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:  # tensorboard is a declared dependency; keep training without it
                self.tb = None

    def log(self, step: int, split: str, values: dict[str, float]) -> None:
        """Append one row (step, split, time and the values) to metrics.jsonl and TensorBoard, on the main process
        only."""
        if not self.info.is_main:
            return
        row = {"step": step, "split": split, "time": round(time.time(), 3), **values}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{split}/{k}", v, step)

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint so the curve has no duplicates."""
        if not self.info.is_main or not self.path.exists():
            return
        rows = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
        keep = [ln for ln in rows if json.loads(ln).get("step", 0) <= step]
        self.path.write_text("".join(r + "\n" for r in keep))

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.tb is not None:
            self.tb.close()


def read_metrics(run_dir: str | Path, split: str | None = "train") -> list[dict[str, Any]]:
    """Rows of a run's metrics.jsonl (optionally one split)."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    rows = [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
    return [r for r in rows if split is None or r.get("split") == split]


def training_seconds(run_dir: str | Path) -> float:
    """A run's training time from its own log: the sum of the intervals between logged steps, an interval
    longer than 10x the median (a kill and a resume later) counted as the median, so a resumed run is not
    charged for the time it was stopped; the steps before the first log at the median rate. 0 without a log.

    Why from the log: a study or sweep resumed across sessions skips finished runs, so the wall time of its
    last call says nothing about what the runs cost."""
    rows = read_metrics(run_dir)
    if len(rows) < 2:
        return 0.0
    steps = [(r["step"], r["time"]) for r in rows]
    pairs = [(s1 - s0, (t1 - t0) / (s1 - s0)) for (s0, t0), (s1, t1) in itertools.pairwise(steps) if s1 > s0]
    med = statistics.median(p for _, p in pairs)
    # milliseconds: a run of a few fast steps costs something, and a tenth of a second would round it to nothing
    return round(sum(n * (p if p <= 10 * med else med) for n, p in pairs) + steps[0][0] * med, 3)


def progress_bar(steps: int, start: int, enabled: bool, info: DistInfo) -> Any:
    """A step progress bar on rank 0's stderr (None when disabled or on other ranks)."""
    if not (enabled and info.is_main):
        return None
    return tqdm(total=steps, initial=start, desc="train", unit="step", file=sys.stderr, dynamic_ncols=True)
