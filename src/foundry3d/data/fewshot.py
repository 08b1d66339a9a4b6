"""N-way K-shot episodes on any labelled dataset, following the Point-BERT fold generator.

Each fold draws ``way`` classes, then ``shot`` support shapes per class from the support pool
(the train split) and ``query`` shapes per class from the query pool (the test split); classes
are relabelled 0..way-1 in the order drawn. Folds are fixed by (seed, fold), so every backbone
is scored on the same episodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from foundry3d.data.base import DatasetError


@dataclass
class Episode:
    """One few-shot fold: the classes drawn, the support and query items (indices into their pools) and their episode
    labels."""

    fold: int
    classes: list[int]  # original class ids, episode label i = classes[i]
    support: np.ndarray  # indices into the support pool
    support_labels: np.ndarray
    query: np.ndarray  # indices into the query pool
    query_labels: np.ndarray


def eligible_classes(support_labels: np.ndarray, query_labels: np.ndarray, shot: int, query: int) -> list[int]:
    """The classes with at least ``shot`` support and ``query`` query items: the only ones an episode can draw."""
    classes = sorted(set(np.unique(support_labels[support_labels >= 0]).tolist()))
    return [c for c in classes if (support_labels == c).sum() >= shot and (query_labels == c).sum() >= query]


def sample_episode(
    support_labels: np.ndarray,
    query_labels: np.ndarray,
    way: int,
    shot: int,
    query: int = 20,
    fold: int = 0,
    seed: int = 0,
) -> Episode:
    """One fold; raises DatasetError with the counts when it cannot be sampled."""
    support_labels = np.asarray(support_labels)
    query_labels = np.asarray(query_labels)
    ok = eligible_classes(support_labels, query_labels, shot, query)
    if len(ok) < way:
        counts = {
            int(c): (int((support_labels == c).sum()), int((query_labels == c).sum()))
            for c in np.unique(support_labels[support_labels >= 0])
        }
        raise DatasetError(
            f"cannot sample a {way}-way {shot}-shot episode with {query} queries per class: only {len(ok)} "
            f"classes have >= {shot} support and >= {query} query shapes "
            f"(class: (support, query) counts = {counts})"
        )
    rng = np.random.default_rng([seed, fold])
    classes = [int(c) for c in rng.choice(ok, size=way, replace=False)]
    s_idx, s_lab, q_idx, q_lab = [], [], [], []
    for i, c in enumerate(classes):
        s = rng.choice(np.flatnonzero(support_labels == c), size=shot, replace=False)
        q = rng.choice(np.flatnonzero(query_labels == c), size=query, replace=False)
        s_idx += s.tolist()
        q_idx += q.tolist()
        s_lab += [i] * shot
        q_lab += [i] * query
    ps, pq = rng.permutation(len(s_idx)), rng.permutation(len(q_idx))
    return Episode(fold, classes, np.array(s_idx)[ps], np.array(s_lab)[ps], np.array(q_idx)[pq], np.array(q_lab)[pq])


def sample_folds(
    support_labels: np.ndarray,
    query_labels: np.ndarray,
    way: int,
    shot: int,
    query: int = 20,
    folds: int = 10,
    seed: int = 0,
) -> list[Episode]:
    """``folds`` seeded N-way K-shot episodes from a support pool (train) and a query pool (test), so every model is
    scored on the same folds."""
    return [sample_episode(support_labels, query_labels, way, shot, query, f, seed) for f in range(folds)]
