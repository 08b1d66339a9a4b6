"""Metrics with the exact definitions of the point-cloud benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value), as few-shot folds are reported."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def accuracies(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Overall accuracy and class-mean accuracy (mean per-class recall over the classes present)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    oa = float((y_true == y_pred).mean()) if len(y_true) else float("nan")
    per = [float((y_pred[y_true == c] == c).mean()) for c in np.unique(y_true)]
    return {"acc": oa, "class_acc": float(np.mean(per)) if per else float("nan")}


def shape_iou(pred: np.ndarray, gt: np.ndarray, parts: Sequence[int]) -> float:
    """Mean IoU over the category's parts; a part absent from both prediction and truth scores 1."""
    ious = []
    for p in parts:
        inter = np.sum((pred == p) & (gt == p))
        union = np.sum((pred == p) | (gt == p))
        ious.append(1.0 if union == 0 else inter / union)
    return float(np.mean(ious))


def part_mious(shape_ious: Sequence[float], categories: Sequence[int]) -> dict[str, Any]:
    """Instance mIoU (mean over shapes) and class mIoU (mean over categories of per-category means)."""
    si, cats = np.asarray(shape_ious, np.float64), np.asarray(categories)
    per_cat = {int(c): float(si[cats == c].mean()) for c in np.unique(cats)}
    return {
        "instance_miou": float(si.mean()),
        "class_miou": float(np.mean(list(per_cat.values()))),
        "per_category_miou": per_cat,
    }
