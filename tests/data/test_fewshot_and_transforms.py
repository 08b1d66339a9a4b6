import numpy as np
import pytest
import torch

from foundry3d.data.base import DatasetError
from foundry3d.data.fewshot import sample_episode, sample_folds
from foundry3d.data.registry import load_dataset
from foundry3d.data.transforms import AugmentConfig, augment, collate, normalize, rotate_up


def test_folds_are_reproducible_and_well_formed():
    sup = np.repeat(np.arange(8), 15)
    qry = np.repeat(np.arange(8), 25)
    a = sample_folds(sup, qry, way=5, shot=10, query=20, folds=10, seed=3)
    b = sample_folds(sup, qry, way=5, shot=10, query=20, folds=10, seed=3)
    for x, y in zip(a, b):
        assert x.classes == y.classes and np.array_equal(x.support, y.support) and np.array_equal(x.query, y.query)
    e = a[0]
    assert len(e.support) == 50 and len(e.query) == 100 and len(set(e.support.tolist())) == 50
    for i, c in enumerate(e.classes):
        assert (sup[e.support[e.support_labels == i]] == c).all() and (qry[e.query[e.query_labels == i]] == c).all()
    assert len({tuple(f.classes) for f in a}) > 1  # folds differ


def test_impossible_episode_names_the_counts():
    with pytest.raises(DatasetError, match=r"only 2 classes.*\(support, query\)"):
        sample_episode(np.repeat(np.arange(3), [20, 20, 3]), np.repeat(np.arange(3), 30), way=5, shot=10)


def test_transforms():
    g = torch.Generator().manual_seed(0)
    ds = load_dataset("synthetic:train@2")
    b = collate([ds[i] for i in range(4)], 256, "random", g)
    assert b["points"].shape == (4, 256, 3) and b["parts"].shape == (4, 256)
    fps = collate([ds[0]], 64, "fps")
    assert fps["points"].shape == (1, 64, 3)
    few = collate([ds[0]], 5000, "first")  # fewer points than asked: resampled with replacement
    assert few["points"].shape == (1, 5000, 3)
    p = normalize(b["points"] * 3 + 1)
    assert torch.allclose(p.norm(dim=-1).amax(1), torch.ones(4), atol=1e-5)
    r = rotate_up(p, g)
    assert torch.allclose(r[..., 1], p[..., 1], atol=1e-6) and torch.allclose(r.norm(dim=-1), p.norm(dim=-1), atol=1e-5)
    out = augment(p, AugmentConfig(translate=0.1, jitter=0.01), torch.Generator().manual_seed(1))
    out2 = augment(p, AugmentConfig(translate=0.1, jitter=0.01), torch.Generator().manual_seed(1))
    assert torch.equal(out, out2) and not torch.equal(out, p)
