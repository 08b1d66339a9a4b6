"""Report figures from result dicts (no model code here): PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from foundry3d.eval.task import scale_digits
from foundry3d.files import atomic_write
from foundry3d.report.render import label_colors
from foundry3d.report.tables import sweep_tasks


def _plt():
    import matplotlib  # slow to import: loaded only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, out: Path) -> Path:
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format=out.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return out


def score_vs_s(
    tasks: list[str],
    teacher: dict[str, tuple[float, float, float]],
    floor: dict[str, tuple[float, float, float]],
    students: dict[int, dict[str, tuple[float, float, float]]],
    labels: dict[str, str],
    out: Path,
) -> Path:
    """One panel per task: student score [95 % CI] against s; teacher and floor as bands."""
    plt = _plt()
    ss = sorted(students)
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 2.9), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        scale = scale_digits(t.split(":", 1)[0])[0]
        for ref, colour, name in ((teacher, "0.3", "teacher"), (floor, "C3", "floor")):
            m, lo, hi = ref[t]
            ax.axhspan(scale * lo, scale * hi, color=colour, alpha=0.15)
            ax.axhline(scale * m, color=colour, lw=1.5, label=name)
        ys = [scale * students[s][t][0] for s in ss]
        err = [
            [scale * (students[s][t][0] - students[s][t][1]) for s in ss],
            [scale * (students[s][t][2] - students[s][t][0]) for s in ss],
        ]
        ax.errorbar(ss, ys, yerr=err, marker="o", color="C0", capsize=3, label="student")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ss)
        ax.set_xticklabels([str(s) for s in ss])
        ax.set_xlabel("SuperTokens s")
        ax.set_title(labels.get(t, t), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("score (%; R² for fidelity)")
    axes[0][0].legend(fontsize=7, loc="lower right")
    return _save(plt, fig, out)


def cost_vs_s(rows: list[dict[str, Any]], points: int, out: Path) -> Path:
    """FLOPs and batch-1 / batch-32 latency ratios (student / teacher) against s."""
    plt = _plt()
    sel = [r for r in rows if r["points"] == points and r["model"].startswith("s=")]
    ss = [int(r["model"][2:]) for r in sel]
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    ax.plot(ss, [r["flops_ratio"] for r in sel], "o-", label="FLOPs")
    for key, lab in (("b1_latency_ratio", "latency, batch 1"), ("b32_latency_ratio", "latency, batch 32")):
        if sel and key in sel[0]:
            ax.plot(ss, [r[key] for r in sel], "s--", label=lab)
    ax.axhline(1.0, color="0.4", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ss)
    ax.set_xticklabels([str(s) for s in ss])
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("SuperTokens s")
    ax.set_ylabel("student / teacher")
    ax.set_title(f"cost at {points} points", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(plt, fig, out)


def latency_vs_points(rows: list[dict[str, Any]], out: Path, batch: int = 1) -> Path:
    """Latency and FLOPs per cloud against the number of points, one line per model (log-log)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.0))
    for name in dict.fromkeys(r["model"] for r in rows):
        sel = sorted((r for r in rows if r["model"] == name), key=lambda r: r["points"])
        pts = [r["points"] for r in sel]
        axes[0].plot(pts, [r[f"b{batch}_median_ms"] for r in sel], "o-", label=name)
        axes[1].plot(pts, [r["flops"] / 1e9 for r in sel], "o-", label=name)
    for ax, lab in zip(axes, (f"median latency, batch {batch} (ms)", "GFLOPs per cloud")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("points per cloud")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    return _save(plt, fig, out)


def loss_curves(curves: dict[str, list[tuple[int, float]]], out: Path) -> Path:
    """The distillation loss of each student against its steps."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.4, 3.0))
    for name, pts in curves.items():
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("SmoothL1 distillation loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(plt, fig, out)


def supertoken_colors(points: np.ndarray, centres: np.ndarray, assignment: np.ndarray) -> np.ndarray:
    """Colour each point by the SuperToken of its nearest patch centre (-1 = bypassed: grey)."""
    d = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    owner = assignment[d.argmin(1)]
    colors = label_colors(np.maximum(owner, 0))
    colors[owner < 0] = 0.6
    return colors


def _gain_points(comp: dict[str, Any], task: str, names: list[str]) -> list[tuple[str, float, float, float]]:
    row = comp.get(task, {}).get("students", {})
    out = []
    for n in names:
        g = row.get(n, {}).get("gain")
        if g and g["headroom"]:
            out.append((n, g["gain"], g["gain_ci95"][0], g["gain_ci95"][1]))
    return out


def gain_vs_s(comp: dict[str, Any], tasks: list[str], sweep: list[int], out: Path) -> Path:
    """Encoder gain kept (with 95 % CI) against the number of SuperTokens, one line per task."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for t in tasks:
        pts = _gain_points(comp, t, [f"foundry s={s}" for s in sweep])
        if not pts:
            continue
        xs = [int(n.split("=")[1]) for n, *_ in pts]
        ax.errorbar(
            xs,
            [100 * g for _, g, _, _ in pts],
            yerr=[[100 * (g - lo) for _, g, lo, _ in pts], [100 * (hi - g) for _, g, _, hi in pts]],
            marker="o",
            capsize=3,
            label=t,
        )
    ax.axhline(100, color="k", lw=0.8, ls="--")
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("SuperTokens s")
    ax.set_ylabel("encoder gain kept (%)")
    ax.legend(fontsize=7)
    return _save(plt, fig, out)


def gain_vs_flops(comp: dict[str, Any], tasks: list[str], models: dict[str, Any], out: Path) -> Path:
    """Mean encoder gain kept over the tasks with headroom against FLOPs, one point per model."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, m in models.items():
        if name in ("teacher", "floor") or "flops" not in m or m.get("group") == "seed":
            continue
        gains = [p[1] for t in tasks for p in _gain_points(comp, t, [name])]
        if not gains:
            continue
        ax.scatter(m["flops"] / 1e9, 100 * float(np.mean(gains)), s=18)
        ax.annotate(name, (m["flops"] / 1e9, 100 * float(np.mean(gains))), fontsize=6)
    if "teacher" in models and "flops" in models["teacher"]:
        ax.axvline(models["teacher"]["flops"] / 1e9, color="k", lw=0.8, ls="--", label="teacher FLOPs")
    ax.axhline(100, color="k", lw=0.8, ls=":")
    ax.set_xlabel("GFLOPs per cloud")
    ax.set_ylabel("mean encoder gain kept (%)")
    ax.legend(fontsize=7)
    return _save(plt, fig, out)


def _tokens_axis(ax: Any, x: list[float]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{v:g}" for v in x])
    ax.set_xlabel("tokens per SuperToken")
    ax.grid(alpha=0.3)


def sweep_differences(sweep: dict[str, Any], out: Path) -> Path:
    """The token-count sweep: DSO - kind (paired, mean over seeds, 95 % CI over the items) against tokens per
    SuperToken, one panel per task, and the context R² (mean ± sd over seeds) in the last panel."""
    plt = _plt()
    sizes = sorted(sweep["sizes"].values(), key=lambda r: r["tokens_per_supertoken"])
    tasks = sweep_tasks(sweep)
    kinds = [k for k in sizes[0]["tasks"][tasks[0]]["kinds"] if k != sizes[0]["dso"]]
    x = [r["tokens_per_supertoken"] for r in sizes]
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(3.1 * (len(tasks) + 1), 3.0), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        scale = scale_digits(task.split(":", 1)[0])[0]
        at = [r for r in sizes if task in r["tasks"]]  # a large-size task has points only where it was measured
        xt = np.array([r["tokens_per_supertoken"] for r in at])
        for i, kind in enumerate(kinds):
            d = np.array([r["tasks"][task]["kinds"][kind]["dso_minus"] for r in at]) * scale
            ax.errorbar(
                xt * (1 + 0.03 * (i - len(kinds) / 2)), d[:, 0], yerr=[d[:, 0] - d[:, 1], d[:, 2] - d[:, 0]],
                marker="o", ms=3, capsize=2, color=f"C{i}", label=kind,
            )  # fmt: skip
        ax.axhline(0, color="0.3", lw=1)
        ax.set_title(f"DSO - kind: {task}", fontsize=8)
        _tokens_axis(ax, x)
    ax = axes[0][-1]
    fid = next((t for t in tasks if "context_r2" in sizes[0]["tasks"][t]["kinds"][sizes[0]["dso"]]), None)
    if fid is not None:
        for i, kind in enumerate([sizes[0]["dso"], *kinds]):
            c = np.array([[r["tasks"][fid]["kinds"][kind]["context_r2"][k] for k in ("mean", "sd")] for r in sizes])
            ax.errorbar(x, c[:, 0], yerr=c[:, 1], marker="o", ms=3, capsize=2, color="k" if i == 0 else f"C{i - 1}")
        ax.set_title(f"context R² ({fid})", fontsize=8)
        _tokens_axis(ax, x)
    axes[0][0].legend(fontsize=6)
    return _save(plt, fig, out)
