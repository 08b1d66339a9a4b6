"""0 A.D.-14: the labelled 0 A.D. models inside the corpus build, 14 classes, with their own fixed val split."""

from __future__ import annotations

import numpy as np

from foundry3d.data.catalogue import CORPUS_VERSION, BuiltDataset, register_dataset

PARTS_OF = {
    "train": ["oad_train", "oad_val"],
    "fit": ["oad_train"],
    "val": ["oad_val"],
    "test": ["oad_test"],
    "labelled": ["oad_train", "oad_val", "oad_test"],
}


def _index(split: str, splits: dict[str, list[int]], labels: np.ndarray) -> np.ndarray:
    return np.array(sorted(i for k in PARTS_OF[split] for i in splits[k]), np.int64)


register_dataset(
    BuiltDataset(
        "oad", "0 A.D.-14", "corpus", "foundry3d.data.corpus:build_corpus", "corpus", CORPUS_VERSION,
        splits=("train", "test", "val", "fit", "labelled"), index=_index,
    )
)  # fmt: skip
