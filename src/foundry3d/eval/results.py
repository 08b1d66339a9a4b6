"""Evaluation results: headline scores, confidence intervals, the encoder gain kept, tables.

Every task stores, next to its headline score, the per-item outcomes it was computed from (hits
per test shape, accuracy per few-shot fold, IoU per test shape, reconstruction error per cloud).
That makes every interval a bootstrap over test items, and every comparison *paired*: teacher,
floor and student are resampled on the same items, so shared difficulty cancels out.

The headline comparison is the **encoder gain kept**: (student - floor) / (teacher - floor), the
share of what the teacher's transformer adds over its own tokenizer that the student keeps. Where
the teacher - floor gap's 95 % interval contains 0 there is no headroom and no ratio is shown.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from foundry3d.errors import Foundry3DError
from foundry3d.eval.task import metric, scale_digits
from foundry3d.eval.task import statistic as task_statistic

BOOTSTRAP = 2000
LEVEL = 0.95


class ResultsError(Foundry3DError, ValueError):
    """A results file that is missing, corrupt, or not comparable with another."""


def primary(res: dict[str, Any], proto: str) -> float | None:
    """The headline number of a task result (None when the task has none)."""
    v = res.get(metric(proto))
    return None if v is None else float(v)


def ci(res: dict[str, Any]) -> tuple[float, float] | None:
    """The 95 % interval of a task result, or None when it has no per-item outcomes."""
    c = res.get("ci95")
    return None if c is None else (float(c[0]), float(c[1]))


def format_score(res: dict[str, Any], proto: str) -> str:
    """``84.6 [81.0, 88.1]`` (95 % CI; in the task's own scale, e.g. points for accuracy), ``-`` when the task has
    no result."""
    v = primary(res, proto)
    if v is None:
        return "-"
    c = ci(res)
    s, digits = scale_digits(proto)
    text = f"{s * v:.{digits}f}"
    return text + (f" [{s * c[0]:.{digits}f}, {s * c[1]:.{digits}f}]" if c is not None else "")


# ------------------------------------------------------------------------------------ statistics
def statistic(proto: str) -> Callable[[dict[str, np.ndarray], np.ndarray], float]:
    """f(per_item arrays, item indices) -> the task's headline on those items (the task defines it)."""
    try:
        return task_statistic(proto)
    except ValueError as e:
        raise ResultsError(f"no statistic for protocol {proto!r}: {e}") from e


def per_item(res: dict[str, Any]) -> dict[str, np.ndarray]:
    """A result's per-item outcomes as arrays (what every interval and paired comparison resamples)."""
    items = res.get("per_item")
    if not items:
        raise ResultsError("result has no per-item outcomes (computed by an older foundry3d?): re-run it")
    return {k: np.asarray(v) for k, v in items.items()}


def _n_items(d: dict[str, np.ndarray]) -> int:
    return len(next(iter(d.values())))


def _exact(x: Any) -> Any:
    """Values rounded to 12 decimals. Two models that score the same items alike differ by float residue (a
    fold accuracy of 0.7 - 0.4 against 0.1 - 0.4 sums to -5.6e-17, not 0); left alone, a CI bound of 1e-16
    would read as "above 0" and a zero difference be called a win. No headline has anything at 1e-12."""
    return np.round(x, 12)


def bootstrap_ci(proto: str, items: dict[str, np.ndarray], seed: int = 0, n: int = BOOTSTRAP) -> list[float]:
    """Percentile 95 % interval of the task's headline over resampled test items."""
    f = statistic(proto)
    m = _n_items(items)
    rng = np.random.default_rng(seed)
    vals = [f(items, rng.integers(0, m, m)) for _ in range(n)]
    lo, hi = np.percentile(vals, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return [float(lo), float(hi)]


def gain_kept(
    proto: str, teacher: dict[str, Any], floor: dict[str, Any], student: dict[str, Any], seed: int = 0
) -> dict[str, Any]:
    """(student - floor) / (teacher - floor) with a paired bootstrap 95 % interval.

    ``headroom`` is False when the 95 % interval of teacher - floor contains 0 (then ``gain`` is
    None). Also the plain student / teacher ratio and the student - floor difference with CIs."""
    f = statistic(proto)
    t, fl, s = per_item(teacher), per_item(floor), per_item(student)
    m = _n_items(t)
    if _n_items(fl) != m or _n_items(s) != m:
        raise ResultsError(f"{proto}: teacher, floor and student were scored on different test items ({m} ...)")
    for key in ("dataset_fingerprint", "dataset_version"):
        vals = {r.get(key) for r in (teacher, floor, student)}
        if len(vals) > 1:
            raise ResultsError(f"{proto}: results were computed on different data ({key} differ)")
    rng = np.random.default_rng(seed)
    full = np.arange(m)
    T, F, S = f(t, full), f(fl, full), f(s, full)
    gaps, gains, diffs, ratios = [], [], [], []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, m, m)
        tt, ff, ss = f(t, i), f(fl, i), f(s, i)
        gap = _exact(tt - ff)
        gaps.append(gap)
        diffs.append(_exact(ss - ff))
        ratios.append(ss / tt if tt else np.nan)
        gains.append((ss - ff) / (tt - ff) if gap else np.nan)
    q = [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2]
    gap_ci = np.nanpercentile(gaps, q).tolist()
    headroom = bool(gap_ci[0] > 0)
    out: dict[str, Any] = {
        "teacher": T,
        "floor": F,
        "student": S,
        "gap": T - F,
        "gap_ci95": gap_ci,
        "headroom": headroom,
        "gain": (S - F) / (T - F) if headroom else None,
        "gain_ci95": np.nanpercentile(gains, q).tolist() if headroom else None,
        "student_minus_floor": S - F,
        "student_minus_floor_ci95": np.nanpercentile(diffs, q).tolist(),
        "ratio": S / T if T else None,
        "ratio_ci95": np.nanpercentile(ratios, q).tolist(),
    }
    return out


def over_seeds(proto: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline of one model kind trained with several seeds: mean, sample standard deviation (the
    training noise the test-item CIs do not cover) and each seed's value."""
    vals = [primary(r, proto) for r in runs]
    if any(v is None for v in vals):
        raise ResultsError(f"{proto}: a seed's result has no {metric(proto)}")
    arr = np.asarray(vals, dtype=float)
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "seeds": arr.tolist()}


def context_r2(r2: list[float], mlp_r2: list[float]) -> dict[str, Any]:
    """(R^2 - R^2_mlp) / (1 - R^2_mlp) per seed (seed k against the mlp student of seed k): the share of the
    cross-token part of the teacher's output a student recovers (mlp mixes nothing across tokens); with its
    mean and spread over seeds."""
    ctx = np.asarray([(r - m) / (1 - m) for r, m in zip(r2, mlp_r2)], dtype=float)
    return {"mean": float(ctx.mean()), "sd": float(ctx.std(ddof=1)) if len(ctx) > 1 else 0.0, "seeds": ctx.tolist()}


def paired_over_seeds(
    proto: str, a: list[dict[str, Any]], b: list[dict[str, Any]], seed: int = 0, n: int = BOOTSTRAP
) -> list[float]:
    """[mean over seeds of (a - b), 95 % CI]: ``a[k]`` and ``b[k]`` are two kinds trained with the k-th seed and
    scored on the same items; the interval resamples the items within each seed, the same resample for a and
    b, so it covers the test items while the seeds are paired (training noise shows in the spread)."""
    if len(a) != len(b) or not a:
        raise ResultsError(f"{proto}: paired seeds need the same non-zero number of runs, got {len(a)} and {len(b)}")
    f = statistic(proto)
    pairs = [(per_item(x), per_item(y)) for x, y in zip(a, b)]
    for x, y in pairs:
        if _n_items(x) != _n_items(y):
            raise ResultsError(f"{proto}: paired runs were scored on different items")
    point = float(_exact(np.mean([f(x, np.arange(_n_items(x))) - f(y, np.arange(_n_items(y))) for x, y in pairs])))
    rng = np.random.default_rng(seed)
    boot = np.empty(n)
    for j in range(n):
        d = []
        for x, y in pairs:
            i = rng.integers(0, _n_items(x), _n_items(x))
            d.append(f(x, i) - f(y, i))
        boot[j] = np.mean(d)
    lo, hi = np.percentile(_exact(boot), [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return [point, float(lo), float(hi)]


def kinds_over_seeds(
    proto: str, runs: dict[str, list[dict[str, Any]]], ref: str, diff_key: str, ref_minus_kind: bool
) -> dict[str, dict[str, Any]]:
    """Each model kind trained with several seeds (``runs[kind][k]``: its result with the k-th seed) on one task:
    :func:`over_seeds`, its paired difference to kind ``ref`` under ``diff_key`` (ref - kind when
    ``ref_minus_kind``, else kind - ref), and for token fidelity the context R^2 against the ``mlp`` kind."""
    rows: dict[str, dict[str, Any]] = {}
    for kind, rs in runs.items():
        rows[kind] = over_seeds(proto, rs)
        if kind != ref and ref in runs:
            a, b = (runs[ref], rs) if ref_minus_kind else (rs, runs[ref])
            rows[kind][diff_key] = paired_over_seeds(proto, a, b)
    if proto == "fidelity" and "mlp" in rows:
        mlp = rows["mlp"]["seeds"]
        for row in rows.values():
            row["context_r2"] = context_r2(row["seeds"], mlp)
    return rows


def format_signed(proto: str, d: Sequence[float]) -> str:
    """``+3.5 [+1.7, +5.1]``: a difference [point, low, high] in the task's own scale, signed. A CI that
    excludes 0 gets up to three more digits until its bound nearest 0 shows, so a real difference never prints
    as ``+0.000 [+0.000, +0.001]`` (token R² differences are that small)."""
    s, digits = scale_digits(proto)
    point, lo, hi = (s * v for v in d[:3])
    top = digits + 3
    while (lo > 0 or hi < 0) and digits < top and round(min(abs(lo), abs(hi)), digits) == 0:
        digits += 1
    return f"{point:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def format_gain(g: dict[str, Any]) -> str:
    """``84 % [71, 97]``: the encoder gain kept with its CI, or ``no headroom`` where the teacher does not beat
    its floor."""
    if not g["headroom"]:
        return "no headroom"
    lo, hi = g["gain_ci95"]
    return f"{100 * g['gain']:.0f} % [{100 * lo:.0f}, {100 * hi:.0f}]"


# ------------------------------------------------------------------------------------- files
def load_results(path: str | Path) -> dict[str, Any]:
    """A ``results.json`` written by ``foundry3d eval`` (or its folder), checked to be one: missing and corrupt
    files are one-line errors."""
    p = Path(path)
    p = p / "results.json" if p.is_dir() else p
    if not p.exists():
        raise ResultsError(f"{p} does not exist: pass a results.json written by foundry3d eval (or its folder)")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsError(f"{p} is not a readable results file (corrupt JSON: {e}); re-run the evaluation") from e
    if not isinstance(data, dict) or "tasks" not in data or "model" not in data:
        raise ResultsError(f"{p} is not a foundry3d results file (no 'model' and 'tasks')")
    return data


def role(results: dict[str, Any]) -> str:
    """teacher / floor / student / other, from the model kind recorded in a results file."""
    kind = str(results.get("model", {}).get("kind", ""))
    if kind == "backbone":
        return "teacher"
    if kind == "floor":
        return "floor"
    if kind.startswith("student") or kind == "foundry_student":
        return "student"
    return "other"


def format_table(runs: dict[str, dict[str, Any]], tasks: list[str] | None = None) -> str:
    """Plain-text table: one column per model, one row per task (headline [95 % CI])."""
    tasks = tasks or sorted({t for r in runs.values() for t in r.get("tasks", {})})
    names = list(runs)
    w = max(26, *(len(t) + 12 for t in tasks)) if tasks else 26
    lines = [f"{'task':<{w}} " + " ".join(f"{n[:24]:>24}" for n in names)]
    for t in tasks:
        proto = t.split(":", 1)[0]
        cells = [format_score(runs[n].get("tasks", {}).get(t, {}), proto) for n in names]
        lines.append(f"{t + ' (' + metric(proto) + ')':<{w}} " + " ".join(f"{c:>24}" for c in cells))
    return "\n".join(lines)


def comparison(
    teacher: dict[str, Any], floor: dict[str, Any], students: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per shared task: teacher, floor and each student's score with CI and its encoder gain kept."""
    out: dict[str, dict[str, Any]] = {}
    for task in teacher["tasks"]:
        if task not in floor["tasks"]:
            continue
        proto = task.split(":", 1)[0]
        row: dict[str, Any] = {"teacher": teacher["tasks"][task], "floor": floor["tasks"][task], "students": {}}
        for name, res in students.items():
            if task in res["tasks"]:
                g = gain_kept(proto, teacher["tasks"][task], floor["tasks"][task], res["tasks"][task])
                row["students"][name] = {"result": res["tasks"][task], "gain": g}
        out[task] = row
    return out


def _fit(name: str, width: int) -> str:
    """A long name's end, which is where paths and run names differ."""
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def format_comparison(table: dict[str, dict[str, Any]]) -> str:
    """:func:`compare`'s table (:func:`comparison` with each row's ``teachers``) as plain text: per task the
    teacher, the floor with the teacher's encoder gain over it, each further teacher with its own floor and its
    paired difference to the first, and each student with its gain kept and ratio to the (first) teacher."""
    lines = []
    for task, row in table.items():
        proto = task.split(":", 1)[0]
        lines.append(f"{task} ({metric(proto)}, 95 % CI)")
        for k, t in enumerate(row["teachers"]):
            name = t["name"] if k else f"teacher {t['name']}"
            extra = f"   minus the first teacher {format_signed(proto, t['minus_first'])}" if "minus_first" in t else ""
            lines.append(f"  {_fit(name, 28):<28} {format_score(t['result'], proto):>22}{extra}")
            if t["floor"] is not None:
                label = "floor (no block, untrained)" if not k else f"floor of {t['name']}"
                gap = f"   encoder gain {format_signed(proto, t['gap'])}" if "gap" in t else ""
                lines.append(f"  {_fit(label, 28):<28} {format_score(t['floor'], proto):>22}{gap}")
        for name, st in row["students"].items():
            g = st["gain"]
            lines.append(
                f"  {_fit(name, 28):<28} {format_score(st['result'], proto):>22}   gain kept {format_gain(g):>18}"
                f"   /teacher {g['ratio']:.3f}"
            )
    return "\n".join(lines)


def _label(path: str | Path, res: dict[str, Any]) -> str:
    """A model's name in a comparison: its results folder (eval --name), which tells apart runs of one spec."""
    p = Path(path)
    if p.suffix == ".json" and p.name != "results.json":
        return p.stem  # a results file kept under its own name (e.g. eval_teacher.json in a record)
    folder = p.parent if p.suffix == ".json" else p
    return folder.name or str(res["model"]["model"])


def compare(paths: Sequence[str | Path]) -> str:
    """``eval --compare``: teachers, floors and students from their results files (roles from their recorded
    kinds). The first teacher is the reference: its floor gives each task's encoder gain (teacher - floor,
    paired over the test items) and each student's gain kept; a further teacher is shown with its own floor
    (matched by the recorded spec ``floor:<teacher>``) and its paired difference to the first, which is how
    two teachers are compared on the same items."""
    runs = [load_results(p) for p in paths]
    roles = [role(r) for r in runs]
    t_idx = [i for i, k in enumerate(roles) if k == "teacher"]
    f_idx = [i for i, k in enumerate(roles) if k == "floor"]
    if not t_idx or not f_idx:
        raise ResultsError(
            "eval --compare needs a teacher and its floor results file (e.g. --model embedded and "
            f"--model floor:embedded), then further teachers with their floors, or students; got roles {roles}"
        )
    floors: dict[int, int] = {}  # teacher index -> its floor's index
    if len(t_idx) == 1 and len(f_idx) == 1:
        floors[t_idx[0]] = f_idx[0]  # one of each: paired whatever their paths (results may have moved)
    else:
        for f in f_idx:
            spec = str(runs[f]["model"]["model"])
            match = [t for t in t_idx if "floor:" + str(runs[t]["model"]["model"]) == spec]
            if not match:
                raise ResultsError(
                    f"eval --compare: {paths[f]} is the floor of {spec.removeprefix('floor:')!r}, which is not among "
                    "the teachers given; pass its teacher's results too"
                )
            floors[match[0]] = f
        if t_idx[0] not in floors:
            raise ResultsError(f"eval --compare: the first teacher {paths[t_idx[0]]} needs its floor's results file")
    names: dict[int, str] = {}
    for i in range(len(runs)):
        label = _label(paths[i], runs[i])
        while label in names.values():
            label += "'"
        names[i] = label
    ref, ref_floor = runs[t_idx[0]], runs[floors[t_idx[0]]]
    students = {names[i]: r for i, (r, k) in enumerate(zip(runs, roles)) if k not in ("teacher", "floor")}
    table = comparison(ref, ref_floor, students)
    for task, row in table.items():
        proto = task.split(":", 1)[0]
        teachers = []
        for t in t_idx:
            res = runs[t]["tasks"].get(task)
            if res is None:
                continue
            fl = runs[floors[t]]["tasks"].get(task) if t in floors else None
            entry: dict[str, Any] = {"name": names[t], "result": res, "floor": fl}
            if fl is not None:
                g = gain_kept(proto, res, fl, res)
                entry["gap"] = [g["gap"], *g["gap_ci95"]]
            if t != t_idx[0]:
                for key in ("dataset_fingerprint", "dataset_version"):
                    if res.get(key) != row["teacher"].get(key):
                        raise ResultsError(
                            f"{task}: {paths[t]} and {paths[t_idx[0]]} were computed on different data ({key} differ)"
                        )
                entry["minus_first"] = paired_over_seeds(proto, [res], [row["teacher"]])
            teachers.append(entry)
        row["teachers"] = teachers
    return format_comparison(table)


def eval_seconds(result: dict[str, Any]) -> float:
    """An evaluation's own time (feature extraction included), summed over its tasks as each was measured (a
    task reused from an earlier call keeps the time it took then)."""
    return round(sum(float(t.get("seconds", 0.0)) for t in result["tasks"].values()), 1)
