"""A teacher run's validation curve: its release snapshots and their floors scored by ``foundry3d eval ...
splits=val`` (folders ``step_N/`` and ``floor_step_N/``), read in one place for the model card, the results page and
the stall analysis."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry3d.eval.results import format_signed, gain_kept, primary
from foundry3d.eval.task import scale_digits
from foundry3d.report.tables import Table, task_label


@dataclass
class Snapshot:
    """One snapshot on the validation splits: its results and its floor's per task, and teacher - floor per task as
    [difference, low, high] (paired 95 % CI over the validation items, in the task's raw units)."""

    step: int
    model: dict[str, Any]
    floor: dict[str, Any]
    gaps: dict[str, list[float]]


def snapshots(folder: str | Path) -> list[Snapshot]:
    """Every snapshot in ``folder`` that has both its results and its floor's, in step order."""
    folder = Path(folder)
    out = []
    for d in sorted(folder.glob("step_*")):
        fl = folder / f"floor_{d.name}" / "results.json"
        if not (d / "results.json").exists() or not fl.exists():
            continue
        model, floor = json.loads((d / "results.json").read_text())["tasks"], json.loads(fl.read_text())["tasks"]
        gaps = {}
        for task in model:
            if task in floor:
                g = gain_kept(task.split(":")[0], model[task], floor[task], model[task])
                gaps[task] = [g["gap"], *g["gap_ci95"]]
        out.append(Snapshot(int(d.name.split("_")[1]), model, floor, gaps))
    return out


def val_curve_table(folder: str | Path, name: str) -> Table | None:
    """The curve as a table: per snapshot and task, teacher / floor (teacher - floor with its paired CI)."""
    snaps = snapshots(folder)
    if not snaps:
        return None
    tasks = list(snaps[0].gaps)
    rows = []
    for s in snaps:
        cells = []
        for t in tasks:
            if t not in s.gaps:
                cells.append("-")
                continue
            proto = t.split(":")[0]
            k, d = scale_digits(proto)
            a, f = (k * (primary(r[t], proto) or 0.0) for r in (s.model, s.floor))
            cells.append(f"{a:.{d}f} / {f:.{d}f} ({format_signed(proto, s.gaps[t])})")
        rows.append([f"{s.step:,}", *cells])
    return Table(
        f"The `{name}` teacher's validation curve: each release snapshot / its floor (teacher − floor, paired 95 % "
        "CI), `foundry3d eval ... splits=val` (fit -> val, carved from train; C by cross-validation as on test)",
        ["step", *(task_label(t) for t in tasks)],
        rows,
    )
