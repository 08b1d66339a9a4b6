"""The collection index ``embed`` writes beside its per-file outputs, and ``search`` reads.

``embeddings.npy`` (R, D) float32 holds the global embedding of every file embedded, in the order of
``index.csv``'s ``row`` column; ``index.csv`` has one line per input file: ``file, points, status,
reason, sha256, output, row`` (``status`` is ``ok`` or ``failed``; ``reason`` says why a file failed;
``output`` is its ``.npz`` relative to the index folder). ``embed.json`` names the model and its hash.

Rows are only ever appended, and ``embeddings.npy`` is written before ``index.csv`` (each atomically), so an
index read at any moment is consistent: every ``row`` it lists exists.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from foundry3d.errors import Foundry3DError
from foundry3d.files import atomic_write

INDEX_FILES = (
    "embeddings.npy",
    "index.csv",
    "hnsw.faiss",
    "hnsw.json",
    "unit.npy",
    "unit.json",
)  # what an index folder holds
COLUMNS = ("file", "points", "status", "reason", "sha256", "output", "row")


class IndexFolderError(Foundry3DError, ValueError):
    """A folder that is not a readable embedding index."""


@dataclass
class Index:
    """One collection: its rows (every file, ``ok`` or ``failed``) and the embeddings of the ``ok`` ones."""

    folder: Path
    rows: list[dict[str, str]]
    embeddings: np.ndarray
    model: str = ""
    model_hash: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def ok(self) -> list[dict[str, str]]:
        """The rows that were embedded (files that failed to read are kept in ``rows`` with their reason)."""
        return [r for r in self.rows if r["status"] == "ok"]


def read_index(folder: str | Path, missing_ok: bool = False) -> Index | None:
    """The index in ``folder`` (``None`` when it has none and ``missing_ok``)."""
    folder = Path(folder).expanduser()
    if not (folder / "index.csv").is_file() or not (folder / "embeddings.npy").is_file():
        if missing_ok:
            return None
        raise IndexFolderError(
            f"{folder}: not an embedding index (expected index.csv and embeddings.npy, written by "
            "`foundry3d embed FILES --out FOLDER`)"
        )
    try:
        with open(folder / "index.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        emb = np.load(folder / "embeddings.npy", mmap_mode="r", allow_pickle=False)
        meta = json.loads((folder / "embed.json").read_text()) if (folder / "embed.json").is_file() else {}
    except (OSError, ValueError, csv.Error) as e:
        raise IndexFolderError(f"{folder}: its index is unreadable ({e}); re-run embed with --overwrite") from e
    if rows and set(COLUMNS) - set(rows[0]):
        raise IndexFolderError(f"{folder}/index.csv: columns {list(rows[0])}, expected {list(COLUMNS)}")
    ok = [int(r["row"]) for r in rows if r["status"] == "ok"]
    if emb.ndim != 2 or (ok and max(ok) >= len(emb)):
        raise IndexFolderError(f"{folder}: index.csv names rows that embeddings.npy {emb.shape} does not hold")
    return Index(folder, rows, emb, meta.get("model", ""), meta.get("model_hash", ""), meta)


def write_index(folder: Path, rows: list[dict[str, Any]], embeddings: np.ndarray) -> None:
    """``embeddings.npy`` then ``index.csv``, each moved into place whole."""
    emb = np.ascontiguousarray(embeddings, np.float32)

    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to a name without it
            np.save(f, emb, allow_pickle=False)

    atomic_write(folder / "embeddings.npy", save)
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in COLUMNS})
    atomic_write(folder / "index.csv", lambda tmp: Path(tmp).write_text(text.getvalue()))
