"""``eval --compare`` with two teachers: each with its own floor (matched by the recorded spec), the encoder gain
paired over the test items, and the second teacher's paired difference to the first."""

import json
import re

import numpy as np
import pytest

from foundry3d.eval.results import ResultsError, compare


def _write(path, spec, kind, scores):
    scores = np.asarray(scores, float)
    res = {
        "model": {"model": spec, "kind": kind, "hash": spec},
        "tasks": {
            "svm:kicad33": {"acc": float(scores.mean()), "ci95": [0.0, 1.0], "per_item": {"score": scores.tolist()}}
        },
    }
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(res))
    return path


def _two_teachers(tmp_path, second_floor: str) -> list:
    """Teachers runs/a and runs/b, all right on 10 items, with runs/a's floor and the floor ``second_floor``."""
    s = np.ones(10)
    return [
        _write(tmp_path / "a", "runs/a", "backbone", s),
        _write(tmp_path / "fa", "floor:runs/a", "floor", s),
        _write(tmp_path / "b", "runs/b", "backbone", s),
        _write(tmp_path / "fb", second_floor, "floor", s),
    ]


def test_two_teachers_with_their_floors_are_compared_paired(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    floor_a = rng.random(n) < 0.70
    a = floor_a | (rng.random(n) < 0.5)  # a is right wherever its floor is, and more often: gain > 0
    b = a & (rng.random(n) < 0.8)  # b is right only where a is: b - a < 0 on the same items
    floor_b = b.copy()  # b's encoder adds nothing over its floor
    paths = [
        _write(tmp_path / "a", "runs/a", "backbone", a),
        _write(tmp_path / "fa", "floor:runs/a", "floor", floor_a),
        _write(tmp_path / "fb", "floor:embedded:b", "floor", floor_b),  # given before its teacher: matched by spec
        _write(tmp_path / "b", "embedded:b", "backbone", b),
    ]
    text = compare(paths)
    gains = re.findall(r"encoder gain ([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]", text)
    assert len(gains) == 2
    (ga, lo_a, _), (gb, lo_b, hi_b) = ((float(x) for x in g) for g in gains)
    assert ga == pytest.approx(100 * (a.mean() - floor_a.mean()), abs=0.051) and lo_a > 0
    assert gb == 0 and lo_b == 0 and hi_b == 0
    diff = re.search(r"minus the first teacher ([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]", text)
    assert diff and float(diff.group(1)) == pytest.approx(100 * (b.mean() - a.mean()), abs=0.051)
    assert float(diff.group(3)) < 0  # paired over the same items: b is behind beyond the CI
    assert "floor of b" in text


def test_a_floor_whose_teacher_is_missing_is_one_line(tmp_path):
    paths = _two_teachers(tmp_path, "floor:runs/c")
    with pytest.raises(ResultsError, match="floor of 'runs/c', which is not among the teachers"):
        compare(paths)
    with pytest.raises(ResultsError, match="needs a teacher and its floor"):
        compare(paths[:1])


def test_a_teacher_and_its_floor_alone_show_the_encoder_gain(tmp_path):
    s = np.r_[np.ones(50), np.zeros(50)]
    text = compare([_write(tmp_path / "a", "runs/a", "backbone", s), _write(tmp_path / "fa", "x", "floor", s)])
    assert "encoder gain +0.0" in text and "gain kept" not in text


def test_two_teachers_scored_on_different_data_are_refused(tmp_path):
    paths = _two_teachers(tmp_path, "floor:runs/b")
    res = json.loads((paths[2] / "results.json").read_text())
    res["tasks"]["svm:kicad33"]["dataset_fingerprint"] = "another build"
    (paths[2] / "results.json").write_text(json.dumps(res))
    with pytest.raises(ResultsError, match="different data"):
        compare(paths)
