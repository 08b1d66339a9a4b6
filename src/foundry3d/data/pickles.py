"""Restricted unpickling for the benchmark files that are pickles (ModelNet .dat, few-shot .pkl).

Only numpy array reconstruction and plain containers are resolved; any other global in the file
raises an error instead of being imported. Even so, only open such files from a trusted source.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

from foundry3d.data.base import DatasetError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}


class _NumpyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a benchmark pickle")
        with warnings.catch_warnings():  # numpy 2 warns when old pickles name numpy.core
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def load_numpy_pickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return _NumpyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, OSError, AttributeError, ImportError) as e:
        raise DatasetError(f"{path} is not a readable benchmark pickle (corrupt, truncated or untrusted): {e}") from e
