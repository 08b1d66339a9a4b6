"""The quickstart report: results table with retention ratios, plots, renders, recipe, timings.

Every number comes from the stage result files of the run (nothing is typed by hand).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from foundry3d.eval.suite import PRIMARY, primary, spread
from foundry3d.report.html import write_report
from foundry3d.report.plots import accuracy_vs_s, cost_vs_s, latency_vs_points, loss_curves

LABELS = {
    "svm:sh3d16": "SH3D-16 linear SVM (acc)",
    "svm:kicad33": "KiCad-33 linear SVM (acc)",
    "fewshot:kicad33": "KiCad-33 5-way 10-shot (acc)",
    "partseg:kicadparts": "KiCad-Parts part seg. (class mIoU)",
}


def score(res: dict[str, Any], task: str) -> tuple[float, float | None]:
    """(headline score, spread) of one task's result, as the evaluation suite defines them."""
    proto = task.split(":", 1)[0]
    value = primary(res, proto)
    if value is None:
        raise KeyError(f"{task}: the result holds no {PRIMARY[proto]}")
    return float(value), spread(res, proto)


def _cell(m: float, sd: float | None) -> str:
    return f"{100 * m:.1f}" + (f" ± {100 * sd:.1f}" if sd is not None else " (1 seed)")


def results_table(tasks: list[str], evals: dict[str, Any], bench_rows: list[dict], students: list[str]) -> str:
    head = "| | teacher | " + " | ".join(f"student s = {s}" for s in students) + " |"
    lines = [head, "|---|---|" + "---|" * len(students)]
    for t in tasks:
        tm, ts = score(evals["teacher"]["tasks"][t], t)
        cells = [_cell(tm, ts)]
        for s in students:
            m, sd = score(evals[f"s={s}"]["tasks"][t], t)
            cells.append(f"{_cell(m, sd)} (**{m / tm:.3f}**)")
        lines.append(f"| {LABELS.get(t, t)} | " + " | ".join(cells) + " |")
    by = {(r["model"], r["points"]): r for r in bench_rows}
    n = min(r["points"] for r in bench_rows)  # the protocol's cloud size (1,024 in the quickstart)
    for key, label in (
        ("flops", f"GFLOPs per cloud, {n:,} points"),
        ("b1_median_ms", "CPU latency, batch 1 (ms)"),
        ("b32_median_ms", "CPU latency, batch 32 (ms)"),
    ):
        t = by.get(("teacher", n))
        if t is None or key not in t:
            continue
        scale = 1e9 if key == "flops" else 1.0
        cells = [f"{t[key] / scale:.3f}" if key == "flops" else f"{t[key]:.1f}"]
        for s in students:
            r = by[(f"s={s}", n)]
            v = f"{r[key] / scale:.3f}" if key == "flops" else f"{r[key]:.1f}"
            cells.append(f"{v} (**{r[key] / t[key]:.2f}x**)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_report(out: Path, recipe: Any, finger: dict[str, Any], stages: dict[str, Any]) -> tuple[str, dict]:
    fig = out / "figures"
    fig.mkdir(parents=True, exist_ok=True)
    evals = stages["eval"]["results"]
    tasks = stages["eval"]["tasks"]
    students = [str(s) for s in recipe.supertokens]
    rows = stages["bench"]["rows"]
    teacher = {t: score(evals["teacher"]["tasks"][t], t) for t in tasks}
    per_s = {int(s): {t: score(evals[f"s={s}"]["tasks"][t], t) for t in tasks} for s in students}
    accuracy_vs_s(tasks, teacher, per_s, LABELS, fig / "accuracy_vs_s.png")
    cost_vs_s(rows, min(r["points"] for r in rows), fig / "cost_vs_s.png")
    latency_vs_points(rows, fig / "latency_vs_points.png")
    curves = {}
    for s in students:
        p = out / "students" / f"s{s}" / "metrics.jsonl"
        rows_s = [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []
        curves[f"s = {s}"] = [(r["step"], r["distill_loss"]) for r in rows_s if r.get("split") == "train"]
    loss_curves(curves, fig / "distill_loss.png")
    table = results_table(tasks, evals, rows, students)
    timings = {k: v.get("seconds") for k, v in stages.items() if isinstance(v, dict) and "seconds" in v}
    t_card = evals["teacher"]["model"]
    occ = stages.get("occupancy", {})
    md = [
        "# foundry3d quickstart report",
        "",
        f"A {t_card['width']}-wide Point-JEPA teacher ({t_card['params'] / 1e6:.2f}M parameters, "
        f"`{finger['teacher']}`, hash `{finger['teacher_hash']}`) distilled into Foundry SuperToken students "
        f"(s = {', '.join(students)}) on real shapes, then measured with the same protocols. "
        f"Recipe: **{finger['mode']}**.",
        "",
        "## Results",
        "",
        "Scores in %, mean ± spread (SVM on SH3D-16: repeated stratified splits; KiCad-33 SVM: bootstrap over "
        "test shapes; few-shot: 10 folds; part segmentation: head seeds). Bold: retention (student / teacher) "
        "and cost ratios. A difference inside the spread is not a difference. "
        + (
            "Part segmentation reads the output tokens (Y for the teacher, Y-hat for the students: the "
            "representation the student is trained to reproduce); Point-JEPA's three-block average is "
            "`partseg.features=blocks`."
            if "partseg.features=output" in recipe.eval
            else "Part segmentation reads the average of three blocks (Point-JEPA's protocol)."
        ),
        "",
        table,
        "",
        "![Accuracy against the number of SuperTokens (teacher: line and spread band)](figures/accuracy_vs_s.png)",
        "",
        "![Cost of the students relative to the teacher](figures/cost_vs_s.png)",
        "",
        "![Latency and FLOPs against the number of points](figures/latency_vs_points.png)",
        "",
        "![Distillation loss during training](figures/distill_loss.png)",
        "",
    ]
    renders = sorted(fig.glob("supertokens_s*.png"))
    if renders:
        md += [
            "## What the SuperTokens look like",
            "",
            "Points coloured by the SuperToken their patch was assigned to (test shapes never seen in training).",
            "",
        ]
        md += [f"![SuperTokens of the s = {p.stem.split('_s')[-1]} student](figures/{p.name})" for p in renders]
        md.append("")
    if occ:
        md += [
            "## SuperToken occupancy (test splits)",
            "",
            "| student | mean non-empty per cloud | never used |",
            "|---|---|---|",
        ]
        md += [f"| s = {s} | {o['mean_per_cloud']:.2f} of {s} | {o['never_used']} |" for s, o in occ.items()]
        md.append("")
    md += [
        "## Benchmark",
        "",
        "| model | points | GFLOPs | b1 median / p90 (ms) | b32 median (ms) | peak activations b1 (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        b32 = f"{r['b32_median_ms']:.1f}" if "b32_median_ms" in r else "-"
        md.append(
            f"| {r['model']} | {r['points']} | {r['flops'] / 1e9:.3f} | {r['b1_median_ms']:.1f} / "
            f"{r['b1_p90_ms']:.1f} | {b32} | {r['b1_peak_mem_mb']:.1f} |"
        )
    md += [
        "",
        f"FLOPs: {stages['bench']['convention']}. {stages['bench']['notes']}. Groups = points / 16. "
        f"Threads: {stages['bench']['machine']['threads']}.",
        "",
    ]
    md += [
        "## Recipe",
        "",
        f"- distillation overrides: `{' '.join(recipe.distill)}`",
        f"- evaluation overrides: `{' '.join(recipe.eval) or '(defaults)'}`",
        f"- benchmark: points {recipe.bench_points}, batches {recipe.bench_batches} (batch > 1 up to "
        f"{recipe.bench_batch32_max_points} points), time budget {recipe.bench_budget_s} s per setting",
        "- one teacher pass over the distillation data is cached and feeds every student; students copy and "
        "freeze the teacher's tokenizer, so feature extraction tokenizes each cloud once for all models",
        "",
        "## Stage wall times",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    md += [f"| {k} | {v} |" for k, v in timings.items()]
    md += ["", "Data: " + ", ".join(f"{k}: `{v}`" for k, v in stages["data"]["paths"].items()), ""]
    paths = write_report("\n".join(md), out, "foundry3d quickstart report")
    return table, {"report_md": str(paths[0]), "report_html": str(paths[1])}
