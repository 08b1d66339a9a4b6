"""The benchmark files that are pickles (ModelNet ``.dat``, few-shot ``.pkl``), read safely.

They go through :mod:`foundry3d.safe_pickle`'s restricted unpickler (nothing outside numpy array
rebuilding and plain containers is imported or called); a file that holds anything else is refused.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from foundry3d.data.base import DatasetError


def load_numpy_pickle(path: Path) -> Any:
    """The numpy arrays and containers a benchmark pickle holds (anything else is refused)."""
    from foundry3d.safe_pickle import contains_placeholder, restricted_load  # imports torch: only when read

    try:
        with open(path, "rb") as f:
            obj = restricted_load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, OSError, AttributeError, TypeError, IndexError) as e:
        raise DatasetError(f"{path} is not a readable benchmark pickle (corrupt or truncated): {e}") from e
    if contains_placeholder(obj):
        raise DatasetError(f"{path} holds objects other than numpy arrays and containers: refusing it")
    return obj
