"""The pretraining corpus: every shape of the game and asset packages no evaluation holds out."""

from __future__ import annotations

from typing import Any

import numpy as np

from foundry3d.data.catalogue import CORPUS_VERSION, BuiltDataset, register_dataset


def _index(split: str, splits: dict[str, list[int]], labels: np.ndarray) -> np.ndarray:
    return np.arange(len(labels)) if split == "all" else np.array(splits["pretrain"], np.int64)


def _info(path: Any, meta: dict[str, Any]) -> dict[str, Any]:
    return {"shapes": meta["shapes"], "packages": meta["packages"], "dedup": meta["dedup"]}


register_dataset(
    BuiltDataset(
        "corpus", "pretraining corpus", "corpus", "foundry3d.data.corpus:build_corpus", "corpus", CORPUS_VERSION,
        splits=("pretrain", "all"), index=_index, info=_info,
    )
)  # fmt: skip
