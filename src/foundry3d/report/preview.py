"""``foundry3d data render``: a PNG grid of a few shapes per class of any dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from foundry3d.data.registry import load_dataset
from foundry3d.report.render import label_colors, render_grid

Z_UP = {"kicadboards"}


def render_dataset(
    spec: str,
    out: str | Path | None = None,
    per_class: int = 4,
    root: str | Path | None = None,
    max_classes: int = 40,
    num_points: int = 2048,
) -> Path:
    """Render a PNG grid of a few shapes per class (points coloured by part when labelled).

    Args:
        spec: dataset spec, e.g. sh3d16:train or kicadparts:test.
        out: PNG path (default: runs/renders/<name>.png).
        per_class: shapes per class.
        root: dataset cache folder.
        max_classes: at most this many classes.
        num_points: points drawn per shape.
    """
    ds = load_dataset(spec, root=root)
    labels = ds.labels()
    classes = ds.classes or ["all"]
    rows = []
    for c in range(min(len(classes), max_classes)):
        idx = np.flatnonzero(labels == c)[:per_class] if ds.classes else np.arange(min(per_class, len(ds)))
        rows.append((c, idx))
    clouds: list[Any] = []
    colors: list[Any] = []
    titles: list[str] = []
    semantic_parts = ds.part_spec is not None and ds.name != "sh3d16"
    for c, idx in rows:
        for j in range(per_class):
            if j >= len(idx):
                clouds.append(np.zeros((1, 3)))
                colors.append(np.ones((1, 3)))
                titles.append("")
                continue
            s = ds[int(idx[j])]
            pts = s.points[:num_points]
            if ds.name in Z_UP:  # scenes lying in x-y: turn z up for the y-up renderer
                pts = np.stack([pts[:, 0], pts[:, 2], -pts[:, 1]], 1)
            clouds.append(pts)
            colors.append(label_colors(s.parts[:num_points]) if semantic_parts and s.parts is not None else None)
            titles.append(classes[c] if j == 0 else "")
    name = spec.split("@")[0].replace(":", "_")
    out = Path(out) if out else Path("runs") / "renders" / f"{name}.png"
    legend = ""
    if semantic_parts and ds.part_spec is not None and ds.part_spec.num_parts > 3:
        legend = "points coloured by their label"
    elif semantic_parts and ds.part_spec is not None:
        legend = "parts: " + ", ".join(f"{p}={n}" for p, n in zip(ds.part_spec.parts, ["blue", "orange", "green"]))
    cols = per_class * max(1, 12 // per_class)  # several classes per row keeps big label sets readable
    return render_grid(clouds, out, colors, titles, cols=cols, suptitle=f"{spec} {legend}")
