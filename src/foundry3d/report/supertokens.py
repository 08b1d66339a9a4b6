"""SuperToken occupancy on test splits, and renders of test shapes coloured by SuperToken."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from foundry3d.data.registry import load_dataset
from foundry3d.data.transforms import collate
from foundry3d.models.hub import load
from foundry3d.models.occupancy import occupancy
from foundry3d.report.plots import supertoken_colors
from foundry3d.report.render import render_grid


def supertoken_figures(
    out: Path, students: dict[str, str], showcase: list[str], root: str | None, per_set: int = 4
) -> dict[str, Any]:
    """Occupancy of each student (s -> release) on the ``showcase`` splits; renders for s >= 4."""
    sets = {n: load_dataset(n, root=root) for n in showcase}
    occ: dict[str, Any] = {}
    for s, path in students.items():
        student = load(path)
        per = {n: occupancy(student, ds) for n, ds in sets.items()}
        total = sum(len(ds) for ds in sets.values())
        occ[s] = {
            "mean_per_cloud": sum(per[n]["mean_per_cloud"] * len(sets[n]) for n in sets) / total,
            "never_used": max(per[n]["never_used"] for n in sets),
            "per_dataset": per,
        }
        if int(s) < 4:
            continue
        clouds, colors, titles = [], [], []
        for ds in sets.values():
            labels = ds.labels()
            picks = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)[:per_set]]
            b = collate([ds[i] for i in picks], 1024, "first")
            with torch.no_grad():
                f = student.forward_features(b["points"])
            for j, i in enumerate(picks):
                pts = b["points"][j].numpy()
                clouds.append(pts)
                colors.append(supertoken_colors(pts, f["centres"][j].numpy(), f["assignment"][j].numpy()))
                titles.append(f"{ds.classes[int(labels[i])]} ({int(f['occupancy'][j])}/{s} used)")
        render_grid(
            clouds,
            out / "figures" / f"supertokens_s{s}.png",
            colors,
            titles,
            cols=per_set,
            cell=2.6,
            size=4.0,
            suptitle=f"SuperTokens of the s = {s} student; rows: {', '.join(showcase)}",
        )
    return occ
