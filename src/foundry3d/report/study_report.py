"""The study report (``foundry3d study paper``): tables and figures from ``study.json`` only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from foundry3d.report.plots import gain_vs_flops, gain_vs_s, sweep_differences
from foundry3d.report.tables import Table, comparison_table, headroom_notes, seed_table, sweep_table
from foundry3d.report.templates import write_pair


def study_tables(record: dict[str, Any]) -> list[Table]:
    """The study's tables (universal vs experts, ablation, s, gate, merging, seeds, token-count sweep) from its
    record only."""
    cfg, comp, tasks, models = record["config"], record["comparison"], record["tasks"], record["models"]
    flops = {k: v["flops"] for k, v in models.items() if "flops" in v}
    s = cfg["supertokens"]
    have = set(models)
    pick = lambda names: [n for n in names if n in have]  # noqa: E731
    universal = f"foundry s={s}"
    experts = sorted(n for n in have if n.startswith("expert "))
    tables = [
        comparison_table(
            "1. Universal student vs task experts (logit KD)", comp, tasks, pick([universal, *experts]), flops
        ),
        comparison_table(
            f"2. SuperToken ablation at s = {s}",
            comp,
            tasks,
            pick(
                [
                    f"{k} s={s}"
                    for k in (
                        "foundry",
                        "kmeans",
                        "kmeans_xyz",
                        "kmeans_static",
                        "fps",
                        "fps_presample",
                        "mlp",
                        "mimic",
                    )
                ]
            ),
            flops,
        ),
        comparison_table(
            "3. Number of SuperTokens s (Foundry)", comp, tasks, pick([f"foundry s={k}" for k in cfg["sweep"]]), flops
        ),
        comparison_table(
            f"4. The gate at deployment (one gated student, s = {s}): threshold r and top-k bypass",
            comp,
            tasks,
            sorted((n for n in have if "gate" in n), key=_gate_order),
            flops,
        ),
        comparison_table(
            "5. Token merging: training-free on the teacher at matched FLOPs, and as FMD students",
            comp,
            tasks,
            pick(
                [
                    *(n for n in sorted(have) if "training-free" in n),
                    f"patchmerger s={s}",
                    f"tome s={s}",
                    f"tome_dso s={s}",
                    universal,
                ]
            ),
            flops,
        ),
    ]
    if record.get("seeds"):
        tables.insert(2, seed_table(f"2b. SuperToken ablation at s = {s} over seeds (training noise)", record["seeds"]))
    tables[0].notes = headroom_notes(comp, tasks)
    tables = [t for t in tables if len(t.rows) > 2]  # a part the study's config left out has no table
    if record.get("token_sweep"):
        tables.append(sweep_table("6. Token-count sweep: DSO against clustering as SuperTokens stand for more tokens",
                                  record["token_sweep"]))  # fmt: skip
    return tables


def _gate_order(name: str) -> tuple[int, float]:
    _, _, opt = name.rpartition(" ")
    key, _, val = opt.partition("=")
    return (0 if key == "r" else 1, float(val) if val else 0.0)


def write_study_report(out: Path, record: dict[str, Any]) -> dict[str, str]:
    """Draw the study's figures and write study.md and a self-contained study.html from its record."""
    fig = out / "figures"
    fig.mkdir(parents=True, exist_ok=True)
    comp, tasks, cfg = record["comparison"], record["tasks"], record["config"]
    figures = {
        "gain_vs_s": gain_vs_s(comp, tasks, cfg["sweep"], fig / "gain_vs_s.png").relative_to(out),
        "gain_vs_flops": gain_vs_flops(comp, tasks, record["models"], fig / "gain_vs_flops.png").relative_to(out),
    }
    if record.get("token_sweep"):
        figures["token_sweep"] = sweep_differences(record["token_sweep"], fig / "token_sweep.png").relative_to(out)
    md, html = write_pair(
        out,
        "study",
        "study",
        title="foundry3d study: the paper's comparisons",
        record=record,
        tables=study_tables(record),
        figures={k: str(v) for k, v in figures.items()},
    )
    return {"study_md": str(md), "study_html": str(html)}
