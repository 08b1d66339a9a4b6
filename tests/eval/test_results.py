"""Intervals, the encoder gain kept and token fidelity on cases with known answers."""

import numpy as np
import pytest
import torch

from foundry3d.eval.results import ResultsError, bootstrap_ci, gain_kept, over_seeds, paired_over_seeds, statistic
from foundry3d.eval.tasks.fidelity import fidelity_arrays
from foundry3d.eval.tasks.sceneseg import confusion, miou


def _res(hits):
    return {"per_item": {"score": list(hits)}, "dataset_fingerprint": "x"}


def test_bootstrap_ci_of_a_known_proportion():
    rng = np.random.default_rng(0)
    hits = (rng.random(2000) < 0.8).astype(int)
    lo, hi = bootstrap_ci("svm", {"score": hits})
    p = hits.mean()
    half = 1.96 * np.sqrt(p * (1 - p) / len(hits))  # normal approximation of the same interval
    assert lo < p < hi
    assert lo == pytest.approx(p - half, abs=0.006) and hi == pytest.approx(p + half, abs=0.006)


def test_gain_kept_exact_and_paired():
    n = 400
    teacher = np.ones(n, int)
    floor = np.r_[np.ones(n // 2, int), np.zeros(n // 2, int)]
    student = np.r_[np.ones(3 * n // 4, int), np.zeros(n // 4, int)]  # keeps half of the teacher's gain
    g = gain_kept("svm", _res(teacher), _res(floor), _res(student))
    assert g["headroom"] and g["gain"] == pytest.approx(0.5)
    lo, hi = g["gain_ci95"]
    assert lo < 0.5 < hi and hi - lo < 0.2  # paired: the shared easy half cancels out
    assert g["ratio"] == pytest.approx(0.75)


def test_no_headroom_gives_no_ratio():
    rng = np.random.default_rng(1)
    a = (rng.random(300) < 0.7).astype(int)
    b = a.copy()
    b[:3] = 1 - b[:3]  # teacher and floor differ on 3 of 300 items: inside the noise
    g = gain_kept("svm", _res(a), _res(b), _res(a))
    assert not g["headroom"] and g["gain"] is None and g["gap_ci95"][0] <= 0 <= g["gap_ci95"][1]


def test_gain_kept_refuses_results_on_other_data():
    a = _res(np.ones(10, int))
    b = {**_res(np.ones(10, int)), "dataset_fingerprint": "y"}
    with pytest.raises(ValueError, match="different data"):
        gain_kept("svm", a, b, a)


def test_fidelity_r2_is_one_for_the_target_and_zero_for_its_mean():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(20, 16, 8, generator=g)
    mean = y.mean((0, 1), keepdim=True)
    same = fidelity_arrays(y, y, mean)
    const = fidelity_arrays(mean.expand_as(y), y, mean)
    r2 = statistic("fidelity")
    assert r2({k: np.asarray(v) for k, v in same.items()}, np.arange(20)) == pytest.approx(1.0)
    assert r2({k: np.asarray(v) for k, v in const.items()}, np.arange(20)) == pytest.approx(0.0, abs=1e-6)
    assert np.allclose(same["cos"], 1.0)


def test_scene_miou_on_a_known_confusion():
    gt = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 1, 2, 0])
    conf = confusion(pred, gt, 4)
    # IoU: class 0: 3 / (4 + 4 - 3) = 0.6; class 1: 2 / (2 + 3 - 2) = 2/3; class 2: 1 / 2; class 3 absent
    assert miou(conf) == pytest.approx((0.6 + 2 / 3 + 0.5) / 3)
    stat = statistic("sceneseg")
    assert stat({"confusion": np.stack([conf, conf])}, np.array([0, 1])) == pytest.approx(miou(conf))


def test_seeds_are_paired_and_their_spread_is_reported():
    rng = np.random.default_rng(3)
    base = [(rng.random(500) < 0.7).astype(int) for _ in range(3)]  # three seeds of one kind
    better = [np.maximum(b, (rng.random(500) < 0.2).astype(int)) for b in base]  # fixes some of its errors
    a = [{**_res(x), "acc": x.mean()} for x in better]
    b = [{**_res(x), "acc": x.mean()} for x in base]
    spread = over_seeds("svm", a)
    assert spread["mean"] == pytest.approx(np.mean([x.mean() for x in better]))
    assert spread["sd"] == pytest.approx(np.std([x.mean() for x in better], ddof=1))
    d, lo, hi = paired_over_seeds("svm", a, b)
    assert d == pytest.approx(np.mean([x.mean() - y.mean() for x, y in zip(better, base)]))
    assert 0 < lo < d < hi  # paired: the items both get right cancel, so the gain is resolved
    assert paired_over_seeds("svm", b, b) == [0.0, 0.0, 0.0]
    # the same in exact arithmetic is the same: (0.7 - 0.4) + (0.1 - 0.4) is -5.6e-17 in floats, not a difference
    folds = [[{"per_item": {"score": [v] * 10}} for v in vals] for vals in ([0.7, 0.1], [0.4, 0.4])]
    assert paired_over_seeds("fewshot", *folds) == [0.0, 0.0, 0.0]
    with pytest.raises(ResultsError, match="same non-zero number"):
        paired_over_seeds("svm", a, b[:2])
