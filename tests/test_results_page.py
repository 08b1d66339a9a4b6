"""scripts/readme_results.py: the teacher section's pieces computed from a record folder written in the real formats
(results.json files of foundry3d eval, a metrics.jsonl and config.yaml of a pretraining run)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "readme_results.py"


@pytest.fixture(scope="module")
def page():
    spec = importlib.util.spec_from_file_location("readme_results", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _results(path: Path, model: str, kind: str, hits: np.ndarray) -> dict:
    res = {
        "model": {"model": model, "kind": kind, "hash": model},
        "tasks": {"svm:kicad33": {"acc": float(hits.mean()), "ci95": [0.0, 1.0], "per_item": {"score": hits.tolist()}}},
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(res))
    return res


def test_the_stall_analysis_extrapolates_the_validation_gain_against_log_steps(tmp_path, page):
    rec = tmp_path / "teacher_new_run"
    n = 1000
    floor = np.zeros(n)
    floor[:500] = 1  # 50 %
    for step, gain in ((1000, 2), (2000, 4), (4000, 6)):  # +2 points per doubling of steps
        _results(rec / "val" / f"floor_step_{step:06d}", "floor:x", "floor", floor)
        t = floor.copy()
        t[500 : 500 + 10 * gain] = 1
        _results(rec / "val" / f"step_{step:06d}", "x", "backbone", t)
    (rec / "config.yaml").write_text(yaml.safe_dump({"engine": {"batch_size": 100, "threads": 1}}))
    (rec / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "split": "train", "time": s, "samples_per_s": 50.0}) for s in (20, 40, 60))
    )
    st = page.stall_analysis(rec, target=8.0)
    (row,) = st["rows"]
    assert (
        row["per_doubling"] == pytest.approx(2.0)
        and row["best_step"] == 4000
        and row["last3"] == pytest.approx([2, 4, 6])
    )
    assert row["steps_for_target"] == pytest.approx(8000)  # one more doubling
    assert row["hours_for_target"] == pytest.approx(8000 * 100 / 50.0 / 3600)
    from foundry3d.report.teacher_run import val_curve_table

    curve = val_curve_table(rec / "val", "new")  # the same snapshots as the card's and the page's table
    assert [r[0] for r in curve.rows] == ["1,000", "2,000", "4,000"] and curve.rows[-1][1].startswith(
        "56.0 / 50.0 (+6.0"
    )


def test_the_teacher_choice_pairs_the_new_teacher_with_the_old_one_on_the_same_items(tmp_path, page):
    rec = tmp_path / "teacher_new_run"
    rng = np.random.default_rng(0)
    old_floor = (rng.random(500) < 0.6).astype(float)
    old = np.maximum(old_floor, rng.random(500) < 0.2)
    new = np.maximum(old, rng.random(500) < 0.3)  # right wherever the old one is, and more
    _results(rec / "test" / "old", "embedded:old", "backbone", old)
    _results(rec / "test" / "floor_old", "floor:embedded:old", "floor", old_floor)
    _results(rec / "test" / "step_000100", "snap", "backbone", old)  # the run's own snapshot: not another teacher
    _results(rec / "test" / "floor_step_000100", "floor:snap", "floor", old_floor)
    teacher = _results(tmp_path / "t", "embedded:new", "backbone", new)
    floor = _results(tmp_path / "f", "floor:embedded:new", "floor", old_floor)
    table = page.teacher_choice(rec, teacher, floor)
    assert table.columns[1:3] == ["new", "old"]
    (row,) = table.rows
    diff = row[3]
    point, lo = (float(x) for x in diff.replace("[", "").replace(",", "").split()[:2])
    assert point == pytest.approx(100 * (new.mean() - old.mean()), abs=0.051) and lo > 0


def test_the_sweep_comes_from_the_study_record_when_it_holds_one_with_the_command_that_reproduces_it(tmp_path, page):
    from dataclasses import asdict

    from foundry3d.study import StudyConfig

    shipped = Path(__file__).resolve().parents[1] / "docs" / "study" / "sweep.json"  # a real sweep record
    sweep = json.loads(shipped.read_text())
    study_dir = tmp_path / "docs" / "study"
    study_dir.mkdir(parents=True)
    assert page.sweep_context(study_dir / "sweep.json") is None  # neither record: no section
    (study_dir / "sweep.json").write_text(json.dumps({**sweep, "command": "python benchmarks/supertoken_sweep.py"}))
    assert page.sweep_context(study_dir / "sweep.json")["record"]["command"].startswith("python benchmarks")
    cfg = asdict(StudyConfig())
    cfg["teacher"] = "embedded:tiny3"
    cfg["token_sweep"]["sizes"] = [1024, 4096, 16384]
    (study_dir / "study.json").write_text(json.dumps({"config": cfg, "token_sweep": sweep}))
    ctx = page.sweep_context(study_dir / "sweep.json")
    assert ctx["record"]["part_of_study"]
    assert ctx["record"]["command"] == (
        "foundry3d study paper teacher=embedded:tiny3 'token_sweep.sizes=[1024, 4096, 16384]'"
    )
    assert ctx["table"].rows and (study_dir / "figures" / "token_sweep.png").exists()


def test_the_ladder_sentence_names_the_chosen_rung_with_its_paired_difference_or_says_the_defaults_stay(tmp_path, page):
    assert page.ladder_line(tmp_path / "ladder.json") is None  # no record: no sentence
    fid = {"mean": 0.96, "sd": 0.001, "seeds": [0.96], "minus_today": [0.0013, 0.0012, 0.0014]}
    rec = {
        "chosen": "all",
        "seeds": [1, 2, 3],
        "tasks": ["svm:kicad33", "fidelity:kicad33"],
        "teacher_model": None,
        "rungs": {
            "today": {"overrides": [], "context_r2": {"mean": 0.490}},
            "all": {"overrides": ["loss.tau_end=0.1"], "fidelity:kicad33": fid, "context_r2": {"mean": 0.507}},
        },
    }
    (tmp_path / "ladder.json").write_text(json.dumps(rec))
    line = page.ladder_line(tmp_path / "ladder.json")
    assert "`all` (loss.tau_end=0.1)" in line and "token R² +0.001 [+0.001, +0.001]" in line
    assert "0.507 against 0.490" in line and "3 seeds" in line
    (tmp_path / "ladder.json").write_text(json.dumps({**rec, "chosen": "today"}))
    assert "the defaults stay" in page.ladder_line(tmp_path / "ladder.json")


def test_the_scene_sentence_says_whether_the_teacher_has_headroom_on_whole_boards(page):
    from foundry3d.eval.results import format_signed, gain_kept

    def row(right: list[int]) -> dict:  # four scenes, two classes; ``right`` points of 100 per class correct
        conf = [[[r, 100 - r], [100 - r, r]] for r in right]
        return {"miou": 0.0, "ci95": [0.0, 1.0], "per_item": {"confusion": conf},
                "num_points": 100_000, "tokens_per_scene": 6_250}  # fmt: skip

    assert page.scene_line(None) is None and page.scene_line({"edge": {}}) is None
    floor = row([50, 55, 60, 52])
    for teacher, headroom in ((row([80, 85, 90, 82]), True), (floor, False)):
        g = gain_kept("sceneseg", teacher, floor, teacher)
        assert g["headroom"] is headroom
        edge = {
            "edge": {"sceneseg": {"teacher": teacher, "floor": floor}},
            "scene_gap": {"text": format_signed("sceneseg", [g["gap"], *g["gap_ci95"]]), "headroom": headroom},
        }
        line = page.scene_line(edge)
        assert "100,000 points, 6,250 tokens: 391 per SuperToken" in line
        assert ("no headroom" in line) is not headroom


def test_the_headroom_line_of_each_size_gives_teacher_minus_floor_and_says_where_there_is_none():
    """Every compared task at every size, its CI, and '(none)' exactly where the CI holds 0."""
    from foundry3d.report.tables import headroom_lines

    rec = {
        "sizes": {
            "1024": {"points": 1024, "tasks": {
                "svm:kicad33": {"teacher": 0.92, "floor": 0.87, "headroom": [0.03, 0.07]},
                "svm:sh3d16": {"teacher": 0.84, "floor": 0.84, "headroom": [-0.07, 0.07]},
            }},
            "4096": {"points": 4096, "tasks": {"fidelity:kicad33": {"teacher": 1.0, "floor": -2.0, "headroom": None}}},
        }
    }  # fmt: skip
    lines = headroom_lines(rec)
    assert len(lines) == 1 and lines[0].startswith("Headroom at 1,024 points")  # no CI at 4,096: no line
    assert "KiCad-33 SVM +5.0 [+3.0, +7.0]," in lines[0] and "SH3D-16 SVM +0.0 [-7.0, +7.0] (none)" in lines[0]
