"""Render the README's results section from the committed run records in docs/ (no number typed by hand).

    python scripts/readme_results.py                      # re-render from docs/
    python scripts/readme_results.py --copy-quickstart RUN --wall S --machine "..."   # record a new run

``--wall`` is the measured wall time of the README's main command from a fresh clone (e.g. from
``/usr/bin/time -v``); it and ``--machine`` are stored in ``docs/quickstart/run.json`` with the run.
Reads (whatever exists): docs/quickstart/ (a quickstart run's stages/ and report.json, copied by
``--copy-quickstart RUN``), docs/teacher_tiny2_run/ (the embedded teacher's record), docs/study/
(``foundry3d study paper``), docs/edge/ (bench.json, fast_ops.json, edge.json, search_scale.json),
docs/e2e_cgal/ (a user's folder end to end). Writes the block between
the README's RESULTS markers through ``scripts/readme_results.md.j2``.
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import shutil
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import yaml

from foundry3d.config import partial_settings, to_dict
from foundry3d.eval.results import (
    comparison,
    format_gain,
    format_score,
    format_signed,
    gain_kept,
    paired_over_seeds,
)
from foundry3d.eval.task import scale_digits
from foundry3d.models.hub import DEFAULT_TEACHER, EMBEDDED, resolve
from foundry3d.report.plots import sweep_differences
from foundry3d.report.study_report import study_tables
from foundry3d.report.tables import (
    Table,
    headroom_lines,
    no_headroom_lines,
    paper_claim_lines,
    seed_cell,
    sweep_table,
    sweep_verdict,
    task_label,
)
from foundry3d.report.teacher_run import snapshots, val_curve_table
from foundry3d.study import StudyConfig
from foundry3d.train.runlog import read_metrics

START, END = "<!-- SUMMARY -->", "<!-- /SUMMARY -->"
SUMMARY = """
{% if quick %}
## Results in one table

`foundry3d quickstart` on {{ machine }}{% if wall %}, {{ "%.0f" | format(wall) }} s for the whole command{% endif %}:
held-out test splits, 95 % CIs; "kept" is the share of the teacher's encoder gain over its floor (the teacher's
tokenizer alone) that a student keeps. Every table, with how it was made: [docs/results.md](docs/results.md).

| {% for c in quick.main.columns %}{{ c | md_cell }} | {% endfor %}

|{% for c in quick.main.columns %}---|{% endfor %}

{% for row in quick.main.rows %}
| {% for c in row %}{{ c | md_cell }} | {% endfor %}

{% endfor %}
{% endif %}
{% if sweep %}

## The SuperToken question

Does a learned assignment (DSO) beat clustering the tokens, as the paper reports? Distilled from the
teacher {{ sweep.teacher }} with s = 16 SuperTokens at every cloud size, {{ sweep.seeds }} seeds per kind,
paired over the same held-out test items and seeds (95 % CIs; a CI holding 0 is no difference):

{% for line in sweep.claims %}
- **{{ line }}**
{% endfor %}
{% for line in sweep.verdict %}
- {{ line }}
{% endfor %}
{% for line in sweep.headroom %}
- {{ line }}
{% endfor %}
{% for line in sweep.no_headroom %}
- {{ line }}
{% endfor %}
{% if scene %}
- {{ scene }}
{% endif %}
{% if ladder %}
- {{ ladder }}
{% endif %}

Table, figure and commands: [docs/results.md](docs/results.md#the-supertoken-question-the-token-count-sweep).
{% endif %}
"""
ORDER = ["data", "distill", "eval", "bench", "report"]


def _table(d: dict[str, Any]) -> Table:
    return Table(d["title"], d["columns"], d["rows"], d.get("notes", []))


def quickstart_context(docs: Path) -> dict[str, Any] | None:
    q = docs / "quickstart"
    if not (q / "report.json").exists():
        return None
    ctx = json.loads((q / "report.json").read_text())
    stages = {p.stem: json.loads(p.read_text())["seconds"] for p in (q / "stages").glob("*.json")}
    return {
        "main": _table(ctx["tables"]["main"]),
        "costs": _table(ctx["tables"]["costs"]),
        "stages": {k: stages[k] for k in ORDER if k in stages},
        "recipe": ctx["recipe"],
        "teacher": teacher_label(ctx.get("teacher"), ctx["finger"]["teacher"]),
        "figures": sorted(p.name for p in (q / "figures").glob("*.png")),
    }


@functools.cache
def _embedded_hashes() -> dict[str, str]:
    """The weights' hash of each shipped teacher: how a record that says only ``embedded`` is named."""
    return {resolve(f"embedded:{n}")[1]["hash"]: n for n in EMBEDDED.names()}


def teacher_label(model: dict[str, Any] | None, spec: str = "embedded") -> str:
    """``embedded:tiny2`` for a record whose teacher resolved to the shipped tiny2 (by its hash), whatever the
    default is now; the recorded spec where the hash names no shipped teacher or is not recorded."""
    if model and model.get("hash") in _embedded_hashes():
        return f"`embedded:{_embedded_hashes()[model['hash']]}`"
    return f"`{spec}`" + (" (its weights' hash was not recorded)" if spec.startswith("embedded") and not model else "")


def teacher_choice(rec: Path, teacher: dict[str, Any], floor: dict[str, Any]) -> Table | None:
    """The shipped teacher against the one it replaced (test/<old>/ and test/floor_<old>/ in its record), paired over
    the same test items: both scores, their difference, and each one's encoder gain over its own floor."""
    olds = [  # test/ also holds the run's own snapshots (step_N): another teacher is any other name with a floor
        p.name
        for p in sorted((rec / "test").glob("*"))
        if not p.name.startswith(("step_", "floor_")) and (rec / "test" / f"floor_{p.name}").is_dir()
    ]
    if not olds:
        return None
    old = olds[0]
    ot = json.loads((rec / "test" / old / "results.json").read_text())
    of = json.loads((rec / "test" / f"floor_{old}" / "results.json").read_text())
    new = rec.name.removeprefix("teacher_").removesuffix("_run")
    t = Table(
        f"Which teacher ships: {new} against {old} on the held-out test splits (95 % CIs; the difference is paired "
        "over the same test items, the gains over each teacher's own floor)",
        ["task", new, old, f"{new} − {old}", f"{new} − its floor", f"{old} − its floor"],
    )
    for task in teacher["tasks"]:
        if task not in ot["tasks"] or task not in floor["tasks"] or task not in of["tasks"]:
            continue
        proto = task.split(":")[0]
        a, b = teacher["tasks"][task], ot["tasks"][task]
        ga = gain_kept(proto, a, floor["tasks"][task], a)
        gb = gain_kept(proto, b, of["tasks"][task], b)
        t.rows.append(
            [
                task_label(task),
                format_score(a, proto),
                format_score(b, proto),
                format_signed(proto, paired_over_seeds(proto, [a], [b])),
                format_signed(proto, [ga["gap"], *ga["gap_ci95"]]),
                format_signed(proto, [gb["gap"], *gb["gap_ci95"]]),
            ]
        )
    return t


def stall_analysis(rec: Path, target: float = 8.0) -> dict[str, Any] | None:
    """Where the validation gain stalls and what +``target`` points would take: per task a least-squares line of
    teacher - floor (points) against log2(step) over the snapshots (eval protocol, splits=val), the steps at which
    it would reach the target, and those steps' hours at the run's own median training rate (one thread). An
    extrapolation, not a measurement."""
    snaps = snapshots(rec / "val")
    if len(snaps) < 3:
        return None
    steps = [sn.step for sn in snaps]
    gains: dict[str, list[float]] = {}
    for sn in snaps:
        for task, gap in sn.gaps.items():
            gains.setdefault(task, []).append(scale_digits(task.split(":")[0])[0] * gap[0])
    rows = read_metrics(rec, "train")
    rate = float(np.median([r["samples_per_s"] for r in rows if "samples_per_s" in r]))
    cfg = yaml.safe_load((rec / "config.yaml").read_text())
    batch = int(cfg["engine"]["batch_size"])
    x = np.log2(np.asarray(steps, float))
    out = []
    for task, g in gains.items():
        slope, icpt = np.polyfit(x, np.asarray(g), 1)
        tail = g[-3:]
        need = float(2 ** ((target - icpt) / slope)) if slope > 0 else None
        out.append(
            {
                "task": task_label(task),
                "best_step": steps[int(np.argmax(g))],
                "best": max(g),
                "last3": tail,
                "per_doubling": float(slope),
                "steps_for_target": need,
                "hours_for_target": need * batch / rate / 3600 if need else None,
            }
        )
    return {
        "steps": steps,
        "rows": out,
        "rate": rate,
        "batch": batch,
        "target": target,
        "threads": cfg["engine"]["threads"],
    }


def teacher_context(docs: Path, name: str) -> dict[str, Any] | None:
    rec = docs / f"teacher_{name}_run"
    if not (rec / "eval_teacher.json").exists():
        return None
    teacher = json.loads((rec / "eval_teacher.json").read_text())
    floor = json.loads((rec / "eval_floor.json").read_text())
    comp = comparison(teacher, floor, {"t": teacher})
    held = Table("Held-out: the embedded teacher against its floor (95 % CIs)", ["task", "teacher", "floor", "gap"])
    for task, row in comp.items():
        proto = task.split(":")[0]
        g = row["students"]["t"]["gain"]
        s, d = scale_digits(proto)
        held.rows.append(
            [
                task_label(task),
                format_score(row["teacher"], proto),
                format_score(row["floor"], proto),
                f"{s * g['gap']:+.{d}f} [{s * g['gap_ci95'][0]:.{d}f}, {s * g['gap_ci95'][1]:.{d}f}]",
            ]
        )
    probes = read_metrics(rec, "eval")
    sets = [k[4:] for k in probes[-1] if k.startswith("svm_")] if probes else []
    curve = Table(
        "Pretraining curve on the validation splits (teacher / floor / gain, linear SVM, fixed C)",
        ["step", *sets],
    )
    for p in probes:
        curve.rows.append(
            [
                str(p["step"]),
                *(
                    f"{100 * p[f'svm_{d}']:.1f} / {100 * p[f'floor_{d}']:.1f} / {100 * p[f'gain_{d}']:+.1f}"
                    for d in sets
                ),
            ]
        )
    return {
        "name": name,
        "held": held,
        "curve": curve,
        "val": val_curve_table(rec / "val", name),
        "choice": teacher_choice(rec, teacher, floor),
        "stall": stall_analysis(rec),
        "card": f"src/foundry3d/assets/teacher_{name}/MODEL_CARD.md",
    }


def edge_context(docs: Path) -> dict[str, Any] | None:
    e = docs / "edge"
    if not (e / "bench.json").exists():
        return None
    bench = json.loads((e / "bench.json").read_text())
    t = Table(
        "Batch-1 latency, memory and FLOPs from 1k to 300k points (each model in its own process, 6 GB cap)",
        ["model", "points", "GFLOPs", "median / p90 (ms)", "x teacher", "peak RSS (MB)", "peak activations (MB)"],
    )
    for r in bench["rows"]:
        if r.get("b1_oom"):
            t.rows.append([r["model"], f"{r['points']:,}", "-", "OOM under the cap", "-", "-", "-"])
            continue
        ratio = f"{r.get('b1_latency_ratio', float('nan')):.3f}" + (
            "" if r.get("b1_ratio_trusted", True) else " (noisy)"
        )
        t.rows.append(
            [
                r["model"],
                f"{r['points']:,}",
                f"{r['flops'] / 1e9:.2f}",
                f"{r['b1_median_ms']:.1f} / {r['b1_p90_ms']:.1f}",
                ratio,
                f"{r['b1_peak_rss_mb']:.0f}",
                f"{r['peak_activation_mb']:.0f}",
            ]
        )
    out: dict[str, Any] = {"bench": t, "machine": bench["machine"], "fast": None}
    if (e / "fast_ops.json").exists():
        f = json.loads((e / "fast_ops.json").read_text())
        ft = Table(
            "FPS (N -> N/16 centres) and kNN (k = 32) on one cloud, milliseconds (median)",
            ["points", "FPS PyTorch", "FPS fpsample", "kNN PyTorch", "kNN pykdtree"],
        )

        def ms(v: float | None) -> str:
            return "not run" if v is None else f"{1000 * v:,.1f}"

        for r in f["rows"]:
            ft.rows.append(
                [
                    f"{r['points']:,}",
                    ms(r.get("torch_fps_s")),
                    ms(r["fast_fps_s"]),
                    ms(r.get("torch_knn_s")),
                    ms(r["fast_knn_s"]),
                ]
            )
        out["fast"] = ft
        out["fast_features"] = f["features"]
        out["fast_threads"] = f["threads"]
    out["edge"] = json.loads((e / "edge.json").read_text()) if (e / "edge.json").exists() else {}
    scene = out["edge"].get("sceneseg", {})
    if "teacher" in scene and "floor" in scene:  # the teacher's encoder gain on whole boards, paired over scenes
        g = gain_kept("sceneseg", scene["teacher"], scene["floor"], scene["teacher"])
        out["scene_gap"] = {"text": format_signed("sceneseg", [g["gap"], *g["gap_ci95"]]), "headroom": g["headroom"]}
    out["paired"] = None
    if (e / "paired_1k.json").exists():  # benchmarks/paired_latency.py: models in turn, one process
        pr = json.loads((e / "paired_1k.json").read_text())
        threads = list(pr["by_threads"])
        pt = Table(
            f"Batch-1 latency at {pr['points']:,} points side by side (all models in one process, in turn on the "
            f"same real cloud, {pr['rounds']} rounds): median ms and the median of the per-round ratios to the "
            "teacher [interquartile range]",
            ["model", *(f"{t} thread{'s' if t != '1' else ''}" for t in threads)],
        )
        for name in pr["models"]:
            cells = []
            for t in threads:
                r = pr["by_threads"][t][name]
                cells.append(
                    f"{r['median_ms']:.2f} ms, {r['ratio_median']:.3f}x [{r['ratio_p25']:.3f}, {r['ratio_p75']:.3f}]"
                )
            pt.rows.append([name, *cells])
        out["paired"] = pt
        out["paired_arch"] = pr.get("architectures", {})
    out["light"] = light_tokenizer_table(e / "light_tokenizer.json")
    return out


def _kept_cell(v: dict[str, Any]) -> str:
    scale = 1.0 if v["metric"] == "r2" else 100.0
    fmt = "{:.3f}" if v["metric"] == "r2" else "{:.1f}"
    score = fmt.format(scale * v["score"])
    if v["ci95"]:
        score += " [" + ", ".join(fmt.format(scale * x) for x in v["ci95"]) + "]"
    if not v["headroom"]:
        return score + "<br>no headroom"
    lo, hi = v["gain_kept_ci95"]
    return score + f"<br>kept {100 * v['gain_kept']:.0f} % [{100 * lo:.0f}, {100 * hi:.0f}]"


def light_tokenizer_table(path: Path) -> Table | None:
    """benchmarks/light_tokenizer.py's record: gain kept on the test splits, with FLOPs and recipe."""
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    first = next(iter(rec["models"].values()))["test"]
    tasks = list(first)
    t = Table(
        f"Lighter tokenizer: encoder gain kept on the held-out test splits (GFLOPs at {rec['points']:,} points, "
        f"x teacher; target <= {rec['target']['flops_ratio_max']}x keeping >= "
        f"{100 * rec['target']['gain_kept_min']:.0f} % where the teacher has headroom; last column: the gain kept "
        "on the validation splits the recipes were compared on)",
        ["model", "GFLOPs (x teacher)", "steps, token hint", *(task_label(x) for x in tasks), "validation: kept"],
    )

    def score(v: float, metric: str) -> str:
        return f"{v:.3f}" if metric == "r2" else f"{100 * v:.1f}"

    for role in ("teacher", "floor"):
        gf = f"{rec['teacher']['gflops']:.3f} (1.000x)" if role == "teacher" else ""
        t.rows.append([role, gf, "", *(score(first[x][role], first[x]["metric"]) for x in tasks), ""])
    for name, m in rec["models"].items():
        run = m["run"] or {}
        train = f"{run.get('steps', '?')}, {run.get('loss', {}).get('tokenizer_hint', 0.0)}"
        val = ", ".join(
            f"{task_label(x).split(' (')[0]} {100 * v['gain_kept']:.0f} %"
            for x, v in (m["val"] or {}).items()
            if v["headroom"]
        )
        t.rows.append(
            [
                name,
                f"{m['gflops']:.3f} ({m['flops_ratio']:.3f}x)",
                train,
                *(_kept_cell(m["test"][x]) for x in tasks),
                val or "not evaluated",
            ]
        )
    t.notes = [f"{name}: {m['architecture']}" for name, m in rec["models"].items()]
    return t


def throughput_table(path: Path) -> tuple[Table, dict[str, Any]] | None:
    """benchmarks/engine_throughput.py's record: samples/s per recipe, precision, compile and threads."""
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    t = Table(
        f"Training throughput ({rec['machine']}; `{rec['command']}`; samples/s, median [q25, q75] over the measured "
        "steps, warm-up and compilation excluded)",
        ["recipe", "setting", "threads", "batch", "samples/s", "steps/s"],
    )
    for r in rec["rows"]:
        s = r["samples_per_s"]
        t.rows.append([r["recipe"], r["setting"], r["threads"], r["batch"],
                       f"{s['median']:.1f} [{s['q25']:.1f}, {s['q75']:.1f}]", f"{r['steps_per_s']:.2f}"])  # fmt: skip
    return t, rec


def ladder_context(path: Path) -> dict[str, Any] | None:
    """benchmarks/supertoken_ladder.py's record: each DSO option over seeds on validation, its paired difference
    to today's DSO, the context R^2, and the rung the record's rule chose."""
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    tasks = rec["tasks"]
    t = Table(
        f"The DSO details the paper leaves open, on validation ({rec['splits']} splits, students trained on fit; "
        f"{len(rec['seeds'])} seeds, {rec['steps']} steps; teacher {teacher_label(rec.get('teacher_model'))}; "
        f"`{rec['command']}`): mean ± sd over seeds, and the "
        "paired difference to today's DSO with its 95 % CI (a CI holding 0 is no difference)",
        ["rung", "changes", *(task_label(x) for x in tasks), "context R²"],
    )
    for rung, row in rec["rungs"].items():
        cells = [rung, ", ".join(row["overrides"]) or "(today's defaults)"]
        cells += [seed_cell(row[x], x, "minus_today", "Δ") for x in tasks]
        ctx = row.get("context_r2")
        cells.append("-" if ctx is None else f"{ctx['mean']:.3f} ± {ctx['sd']:.3f}")
        t.rows.append(cells)
    return {"table": t, "record": rec}


def ladder_line(path: Path) -> str | None:
    """The README's sentence on the DSO details the paper leaves open: the rung the validation ladder chose, with
    its paired token-fidelity difference to the old DSO and the context R^2 of both (from the ladder record)."""
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    chosen, today = rec["rungs"][rec["chosen"]], rec["rungs"]["today"]
    where = f"on validation splits ({len(rec['seeds'])} seeds, teacher {teacher_label(rec.get('teacher_model'))})"
    if rec["chosen"] == "today":
        return f"The DSO details the paper leaves open were tried {where}: none passed the rule, the defaults stay."
    fid = next((t for t in rec["tasks"] if t.startswith("fidelity:")), None)
    diff = f"token R² {format_signed('fidelity', chosen[fid]['minus_today'])} over the old DSO, " if fid else ""
    ctx = (
        f"context R² {chosen['context_r2']['mean']:.3f} against {today['context_r2']['mean']:.3f}, "
        if chosen.get("context_r2") and today.get("context_r2")
        else ""
    )
    return (
        f"The DSO details the paper leaves open were chosen {where}: `{rec['chosen']}` "
        f"({', '.join(chosen['overrides'])}) is the default, {diff}{ctx}no validation task worse."
    )


def scene_line(edge: dict[str, Any] | None) -> str | None:
    """The README's sentence on the largest regime measured, whole-board scenes: the teacher's encoder gain there
    decides whether SuperToken kinds can be compared on it at all."""
    if not edge or "scene_gap" not in edge:
        return None
    r = edge["edge"]["sceneseg"]["teacher"]
    per = r["tokens_per_scene"] / 16
    verdict = (
        "its CI holds 0, so there is no headroom and no kind was compared there"
        if not edge["scene_gap"]["headroom"]
        else "headroom a kind can compete for"
    )
    return (
        f"Scene segmentation of whole boards ({r['num_points']:,} points, {r['tokens_per_scene']:,} tokens: "
        f"{per:,.0f} per SuperToken at s = 16): the teacher's encoder gain over its floor is "
        f"{edge['scene_gap']['text']}; {verdict}."
    )


def study_command(record: dict[str, Any]) -> str:
    """The ``foundry3d study paper`` line that reproduces a study record: its settings that differ from the
    defaults, as KEY=VALUE."""
    defaults = set(partial_settings(to_dict(StudyConfig())))
    changed = [x for x in partial_settings(record["config"]) if x not in defaults]
    return " ".join(["foundry3d study paper", *(shlex.quote(x) for x in changed)])


def sweep_context(path: Path) -> dict[str, Any] | None:
    """The token-count sweep: part 6 of the study record (``study.json`` beside ``path``) where it has one, else
    benchmarks/supertoken_sweep.py's record at ``path``: the table (with its verdict notes), the figure drawn
    from it, the verdict sentences and the wall times."""
    study = path.parent / "study.json"
    part = json.loads(study.read_text()) if study.exists() else None
    if part and part.get("token_sweep"):
        rec = {**part["token_sweep"], "command": study_command(part), "part_of_study": True}
    elif path.exists():
        rec = json.loads(path.read_text())
    else:
        return None
    figure = sweep_differences(rec, path.parent / "figures" / "token_sweep.png")
    return {
        "table": sweep_table("Token-count sweep: each kind against DSO as one SuperToken stands for more tokens", rec),
        "figure": str(figure.relative_to(path.parent.parent.parent)),
        "verdict": sweep_verdict(rec),
        "headroom": headroom_lines(rec),
        "no_headroom": no_headroom_lines(rec),
        "claims": paper_claim_lines(rec),
        "seeds": len(rec["config"]["seeds"]),
        "teacher": teacher_label(rec.get("teacher_model"), rec["teacher"]),
        "record": rec,
    }


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def yourdata_context(docs: Path) -> dict[str, Any] | None:
    """benchmarks/e2e_folder.py's record (a user's folder end to end) and benchmarks/search_scale.py's."""
    e2e, scale = docs / "e2e_cgal" / "record.json", docs / "edge" / "search_scale.json"
    if not e2e.exists() and not scale.exists():
        return None
    rec = json.loads(e2e.read_text()) if e2e.exists() else None
    return {
        "e2e": rec,
        "e2e_teacher": teacher_label(rec.get("teacher_model"), rec["distill"]["teacher"]) if rec else None,
        "scale": json.loads(scale.read_text()) if scale.exists() else None,
    }


def study_context(docs: Path) -> dict[str, Any] | None:
    s = docs / "study" / "study.json"
    if not s.exists():
        return None
    record = json.loads(s.read_text())
    return {"tables": study_tables(record), "record": record}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--machine", help="where and how the quickstart run was made (stored with --copy-quickstart)")
    ap.add_argument("--wall", type=float, help="seconds of the whole main command (set-up included), measured")
    ap.add_argument("--copy-quickstart", type=Path, help="copy this quickstart run's record into docs/quickstart")
    ap.add_argument("--teacher", default=DEFAULT_TEACHER, help="the embedded teacher whose record is shown")
    ap.add_argument("--readme", type=Path, default=Path("README.md"))
    args = ap.parse_args()
    docs = args.readme.parent / "docs"
    if args.copy_quickstart:
        q = docs / "quickstart"
        shutil.rmtree(q, ignore_errors=True)
        (q / "figures").mkdir(parents=True)
        shutil.copytree(args.copy_quickstart / "stages", q / "stages")
        shutil.copyfile(args.copy_quickstart / "report.json", q / "report.json")
        for f in ("score_vs_s.png", "supertokens_s16.png"):
            if (args.copy_quickstart / "figures" / f).exists():
                shutil.copyfile(args.copy_quickstart / "figures" / f, q / "figures" / f)
    run_file = docs / "quickstart" / "run.json"  # how the copied run was made: kept with its record
    if args.copy_quickstart or args.machine or args.wall:
        if not args.machine:
            raise SystemExit("--machine is required when recording a quickstart run")
        run = {
            "machine": args.machine,
            "wall_s": args.wall,
            "command": "bash scripts/setup.sh && .venv/bin/foundry3d quickstart",
        }
        run_file.write_text(json.dumps(run, indent=1) + "\n")
    run = json.loads(run_file.read_text()) if run_file.exists() else {"machine": "", "wall_s": None}
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["md_cell"] = lambda t: str(t).replace("|", "\\|").replace("\n", "<br>")
    edge = edge_context(docs)  # read once: the results page and the README's scene sentence share it
    block = env.get_template("readme_results.md.j2").render(
        machine=run["machine"],
        wall=run["wall_s"],
        quick=quickstart_context(docs),
        teacher=teacher_context(docs, args.teacher),
        study=study_context(docs),
        edge=edge,
        yourdata=yourdata_context(docs),
        throughput=throughput_table(docs / "edge" / "engine_throughput.json"),
        gpu=_json(docs / "edge" / "gpu_estimate.json"),
        ladder=ladder_context(docs / "study" / "ladder.json"),
        sweep=sweep_context(docs / "study" / "sweep.json"),
        tokenizer=_json(docs / "edge" / "tokenizer_speed.json"),
        format_gain=format_gain,
    )
    results = docs / "results.md"  # every table, relative to docs/
    page = block.strip().replace("](docs/", "](").replace("`docs/study/study.md`", "[study/study.md](study/study.md)")
    results.write_text(
        "# Results\n\nGenerated by `python scripts/readme_results.py` from the committed run records under `docs/`;\n"
        "how they are measured: [measurement.md](measurement.md).\n\n" + page + "\n"
    )
    summary = env.from_string(SUMMARY).render(
        machine=run["machine"],
        wall=run["wall_s"],
        quick=quickstart_context(docs),
        sweep=sweep_context(docs / "study" / "sweep.json"),
        scene=scene_line(edge),
        ladder=ladder_line(docs / "study" / "ladder.json"),
    )
    text = args.readme.read_text()
    if START not in text:
        raise SystemExit(f"{args.readme} has no {START} marker")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1] if END in rest else rest
    args.readme.write_text(head + START + "\n" + summary.strip() + "\n" + END + tail)
    print(f"updated {args.readme} and {results}")


if __name__ == "__main__":
    main()
