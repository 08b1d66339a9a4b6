"""Metric code against cases computed by hand."""

import numpy as np
import pytest

from foundry3d.eval.metrics import accuracies, mean_std, part_mious, shape_iou


def test_shape_iou_with_absent_parts():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 1])
    # part 0: inter 1, union 2 -> 0.5; part 1: inter 2, union 3 -> 2/3; part 2 absent in both -> 1
    assert shape_iou(pred, gt, [0, 1, 2]) == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    # a part predicted but absent from the truth scores 0, not 1
    assert shape_iou(np.array([2, 2]), np.array([0, 0]), [0, 2]) == 0.0


def test_class_vs_instance_miou_on_an_unbalanced_set():
    # category 0 has three shapes (IoU 1, 1, 1); category 1 has one shape (IoU 0)
    r = part_mious([1.0, 1.0, 1.0, 0.0], [0, 0, 0, 1])
    assert r["instance_miou"] == pytest.approx(0.75)  # mean over shapes
    assert r["class_miou"] == pytest.approx(0.5)  # mean over categories
    assert r["per_category_miou"] == {0: 1.0, 1: 0.0}


def test_accuracies():
    r = accuracies(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]))
    assert r["acc"] == 0.75 and r["class_acc"] == 0.5
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2)))
    assert mean_std([5.0]) == (5.0, 0.0)
