"""Where things live under a data root: the dataset, the feature cache, the runs.

    data/                    the root (``--data-dir``, else ``$ESC50ANN_DATA_DIR``, else ./data)
      dataset.json           what the dataset stage verified (esc50ann.dataset)
      downloads/             downloaded archives
      ESC-50-master/         the extracted dataset
      cache/features/        feature cache entries (esc50ann.cache)
      runs/<name>-<stamp>/   one folder per cross-validation run (esc50ann.report)
"""
from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "ESC50ANN_DATA_DIR"
DEFAULT_DATA_DIR = "data"


def data_dir(path: str | Path | None = None) -> Path:
    """The data root: ``path``, else ``$ESC50ANN_DATA_DIR``, else ``./data``."""
    if path in (None, ""):
        path = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(path).expanduser()


def feature_cache_dir(root: str | Path) -> Path:
    """Where the feature stage keeps its cache entries under the data root ``root``."""
    return Path(root) / "cache" / "features"


def runs_dir(root: str | Path) -> Path:
    """Where run folders go under the data root ``root``."""
    return Path(root) / "runs"
