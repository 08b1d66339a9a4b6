"""The quickstart report: teacher, floor and students with the encoder gain kept, costs, figures.

Rendered from the run's stage records (``<out>/stages/*.json``) through the report templates;
nothing in it is typed by hand. ``report.json`` holds the context the two templates saw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from foundry3d.config import partial_settings
from foundry3d.eval.results import ci, comparison, primary
from foundry3d.files import atomic_write
from foundry3d.report.plots import cost_vs_s, latency_vs_points, loss_curves, score_vs_s
from foundry3d.report.tables import Table, comparison_table, headroom_notes, task_label
from foundry3d.report.templates import write_pair


def _band(res: dict[str, Any], task: str) -> tuple[float, float, float]:
    v = primary(res, task.split(":", 1)[0])
    if v is None:
        return float("nan"), float("nan"), float("nan")  # a task without a headline: drawn as a gap
    lo, hi = ci(res) or (v, v)
    return float(v), float(lo), float(hi)


def cost_table(rows: list[dict[str, Any]], students: list[str]) -> Table:
    """Per-cloud cost of the teacher and each student at the smallest benchmarked size (FLOPs, parameters,
    latency, memory), with ratios to the teacher."""
    by = {(r["model"], r["points"]): r for r in rows}
    n = min(r["points"] for r in rows)
    t = Table(
        f"Cost per cloud at {n:,} points (ratio to the teacher)", ["", "teacher", *(f"s = {s}" for s in students)]
    )
    for key, label, fmt in (
        ("flops", "GFLOPs", lambda v: f"{v / 1e9:.3f}"),
        ("b1_median_ms", "CPU latency, batch 1 (ms)", lambda v: f"{v:.1f}"),
        ("b32_median_ms", "CPU latency, batch 32 (ms)", lambda v: f"{v:.1f}"),
    ):
        ref = by.get(("teacher", n))
        if ref is None or key not in ref:
            continue
        cells = [label, fmt(ref[key])]
        for s in students:
            r = by[(f"s={s}", n)]
            cells.append(f"{fmt(r[key])} ({r[key] / ref[key]:.2f}x)")
        t.rows.append(cells)
    return t


def build_report(out: Path, recipe: Any, finger: dict[str, Any], stages: dict[str, Any]) -> tuple[str, dict]:
    """The quickstart's tables and figures from its stage records: report.json, quickstart.md and a self-
    contained HTML."""
    fig = out / "figures"
    fig.mkdir(parents=True, exist_ok=True)
    evals = stages["eval"]["results"]
    tasks = stages["eval"]["tasks"]
    students = [str(s) for s in recipe.supertokens]
    names = [f"s={s}" for s in students]
    comp = comparison(evals["teacher"], evals["floor"], {n: evals[n] for n in names})
    rows = stages["bench"]["rows"]
    main = comparison_table("Teacher, floor and students (held-out test splits)", comp, tasks, names)
    main.notes = headroom_notes(comp, tasks)
    costs = cost_table(rows, students)
    score_vs_s(
        tasks,
        {t: _band(evals["teacher"]["tasks"][t], t) for t in tasks},
        {t: _band(evals["floor"]["tasks"][t], t) for t in tasks},
        {int(s): {t: _band(evals[f"s={s}"]["tasks"][t], t) for t in tasks} for s in students},
        {t: task_label(t) for t in tasks},
        fig / "score_vs_s.png",
    )
    cost_vs_s(rows, min(r["points"] for r in rows), fig / "cost_vs_s.png")
    latency_vs_points(rows, fig / "latency_vs_points.png")
    curves = {}
    for s in students:
        p = out / "students" / f"s{s}" / "metrics.jsonl"
        rows_s = [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []
        curves[f"s = {s}"] = [(r["step"], r["distill_loss"]) for r in rows_s if r.get("split") == "train"]
    loss_curves(curves, fig / "distill_loss.png")
    figures = {
        "score_vs_s": "figures/score_vs_s.png",
        "cost_vs_s": "figures/cost_vs_s.png",
        "latency_vs_points": "figures/latency_vs_points.png",
        "distill_loss": "figures/distill_loss.png",
    }
    for p in sorted(fig.glob("supertokens_s*.png")):
        figures[p.stem] = f"figures/{p.name}"
    occ = stages.get("occupancy", {})
    occ_table = Table("SuperToken occupancy on the test splits", ["student", "mean non-empty per cloud", "never used"])
    occ_table.rows = [[f"s = {s}", f"{o['mean_per_cloud']:.2f} of {s}", str(o["never_used"])] for s, o in occ.items()]
    bench = Table(
        "Benchmark",
        [
            "model",
            "points",
            "GFLOPs",
            "b1 median / p90 (ms)",
            "b32 median (ms)",
            "peak activations (MB)",
            "peak RSS (MB)",
        ],
    )
    for r in rows:
        b32 = f"{r['b32_median_ms']:.1f}" if "b32_median_ms" in r else "-"
        bench.rows.append(
            [
                r["model"],
                str(r["points"]),
                f"{r['flops'] / 1e9:.3f}",
                f"{r['b1_median_ms']:.1f} / {r['b1_p90_ms']:.1f}",
                b32,
                f"{r.get('peak_activation_mb', float('nan')):.1f}",
                f"{r.get('b1_peak_rss_mb', float('nan')):.0f}",
            ]
        )
    timings = {k: v.get("seconds") for k, v in stages.items() if isinstance(v, dict) and "seconds" in v}
    partseg = next((evals["teacher"]["tasks"][t] for t in tasks if t.startswith("partseg")), None)
    context = {
        "title": "foundry3d quickstart report",
        "finger": finger,
        "teacher": evals["teacher"]["model"],
        "students": students,
        "tasks": tasks,
        "tables": {"main": main, "costs": costs, "occupancy": occ_table, "bench": bench},
        "partseg": partseg,
        "recipe": {
            "distill": partial_settings(recipe.distill),  # the partial configs, as the settings they make
            "eval": partial_settings(recipe.eval),
            "bench_points": recipe.bench_points,
            "bench_batches": recipe.bench_batches,
            "bench_budget_s": recipe.bench_budget_s,
            "bench_batch32_max_points": recipe.bench_batch32_max_points,
        },
        "bench": {k: stages["bench"][k] for k in ("convention", "notes", "machine")},
        "timings": timings,
        "data": stages["data"]["paths"],
        "figures": figures,
    }
    md, html = write_pair(out, "report", "quickstart", **context)
    atomic_write(out / "report.json", lambda tmp: Path(tmp).write_text(json.dumps(context, indent=1, default=vars)))
    text = _plain_table(main)
    return text, {"report_md": str(md), "report_html": str(html)}


def _plain_table(t: Table) -> str:
    rows = [[c.replace("\n", " ") for c in r] for r in t.rows]
    widths = [max(len(str(x)) for x in col) for col in zip(t.columns, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(t.columns), *map(line, rows), *t.notes])
