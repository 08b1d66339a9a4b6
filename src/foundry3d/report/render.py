"""Point-cloud pictures: orthographic, depth-sorted 2-D scatter with the y axis up.

Plain matplotlib (no 3-D axes, which are slow and clip points): rotate, project, draw far
points first. Used for dataset previews and for SuperToken renders in the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from foundry3d.files import atomic_write

PALETTE = np.array(
    [
        [0.12, 0.47, 0.71],
        [1.0, 0.5, 0.05],
        [0.17, 0.63, 0.17],
        [0.84, 0.15, 0.16],
        [0.58, 0.4, 0.74],
        [0.55, 0.34, 0.29],
        [0.89, 0.47, 0.76],
        [0.5, 0.5, 0.5],
        [0.74, 0.74, 0.13],
        [0.09, 0.75, 0.81],
        [0.68, 0.78, 0.91],
        [1.0, 0.73, 0.47],
        [0.6, 0.87, 0.54],
        [1.0, 0.6, 0.59],
        [0.77, 0.69, 0.84],
        [0.77, 0.61, 0.58],
    ]
)


def label_colors(labels: np.ndarray) -> np.ndarray:
    """One distinct colour per integer label (cycles after 16)."""
    return PALETTE[np.asarray(labels) % len(PALETTE)]


def project(points: np.ndarray, azim: float = 35.0, elev: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """Screen coordinates (N, 2) and depth (N,) of y-up points seen from (azim, elev) degrees."""
    a, e = np.radians(azim), np.radians(elev)
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(e), -np.sin(e)], [0, np.sin(e), np.cos(e)]])
    p = points @ (rx @ ry).T
    return p[:, :2], p[:, 2]


def draw_cloud(ax, points: np.ndarray, colors: np.ndarray | None = None, size: float = 2.0, title: str = "") -> None:
    """Draw a cloud on a matplotlib axis: orthographic projection, far points first, coloured by depth unless
    colours are given."""
    xy, depth = project(points)
    order = np.argsort(depth)  # far to near
    if colors is None:
        shade = (depth - depth.min()) / max(1e-9, np.ptp(depth))
        colors = np.stack([0.25 + 0.5 * shade, 0.35 + 0.4 * shade, 0.75 - 0.1 * shade], 1)
    ax.scatter(xy[order, 0], xy[order, 1], c=np.asarray(colors)[order], s=size, linewidths=0)
    ax.set_aspect("equal")
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=7)


def render_grid(
    clouds: Sequence[np.ndarray],
    out: str | Path,
    colors: Sequence[np.ndarray | None] | None = None,
    titles: Sequence[str] | None = None,
    cols: int = 4,
    cell: float = 1.6,
    size: float = 1.5,
    suptitle: str = "",
) -> Path:
    """Save a grid of point clouds as one PNG."""
    import matplotlib  # slow to import: loaded only when a grid is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(clouds)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell, rows * cell), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            draw_cloud(ax, clouds[i], None if colors is None else colors[i], size, "" if titles is None else titles[i])
        else:
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=90, format=out.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return out
