"""Where things live under a data root: the dataset, the feature cache, the runs.

    <data root>/             --data-dir, else $ESC50ANN_DATA_DIR, else the checkout's data/ when
                             running from a source checkout, else the per-user data directory
                             (platformdirs: ~/.local/share/esc50ann on Linux)
      dataset.json           what the dataset stage verified (esc50ann.record)
      .dataset.lock          serialises dataset preparations on one data root
      downloads/             downloaded archives, named by their URL (download_path)
      ESC-50-master/         the extracted dataset (esc50ann.archive)
      folds/<name>-<hash>.csv  the folds assigned to a dataset that has none (esc50ann.layouts)
      cache/features/        feature cache entries (esc50ann.cache)
      runs/<name>-<stamp>/   one folder per cross-validation run (esc50ann.report)

The default never depends on the working directory: every directory a user stands in shares one
copy of the 600 MB dataset.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlparse

import platformdirs

from esc50ann.errors import Esc50Error

DATA_DIR_ENV = "ESC50ANN_DATA_DIR"
APP_NAME = "esc50ann"
RECORD = "dataset.json"
DATASET_LOCK = ".dataset.lock"
DATASET_FOLDER = "ESC-50-master"


def data_dir(path: str | Path | None = None) -> Path:
    """The data root: ``path``, else ``$ESC50ANN_DATA_DIR``, else :func:`default_data_dir`.

    Raises
    ------
    Esc50Error
        The path, or a folder it lies in, is a file.
    """
    if path in (None, ""):
        path = os.environ.get(DATA_DIR_ENV) or default_data_dir()
    path = Path(path).expanduser()
    for folder in (path, *path.parents):  # refused here, not as an errno text at the first write
        if folder.exists():
            if not folder.is_dir():
                what = "the data root is a file" if folder == path else f"it lies in {folder}, a file"
                raise Esc50Error(f"{path}: {what}, not a folder; choose another with --data-dir or "
                                 f"${DATA_DIR_ENV}")
            break
    return path


def default_data_dir() -> Path:
    """The checkout's ``data/`` when the package runs from a source checkout, else the per-user
    data directory (``platformdirs.user_data_dir("esc50ann")``)."""
    checkout = source_checkout()
    return checkout / "data" if checkout is not None else Path(platformdirs.user_data_dir(APP_NAME))


def source_checkout() -> Path | None:
    """The repository this package is imported from, or None when it is installed (a wheel).

    A checkout is recognised by its ``pyproject.toml`` naming this project beside the package.
    """
    root = Path(__file__).resolve().parent.parent
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return root if 'name = "esc50ann"' in text else None


def feature_cache_dir(root: str | Path) -> Path:
    """Where the feature stage keeps its cache entries under the data root ``root``."""
    return Path(root) / "cache" / "features"


def runs_dir(root: str | Path) -> Path:
    """Where run folders go under the data root ``root``."""
    return Path(root) / "runs"


def record_path(root: str | Path) -> Path:
    """The dataset record (``dataset.json``) under the data root ``root``."""
    return Path(root) / RECORD


def dataset_lock(root: str | Path) -> Path:
    """The lock file serialising dataset preparations on the data root ``root``."""
    return Path(root) / DATASET_LOCK


def extracted_dataset(root: str | Path) -> Path:
    """Where an archive's dataset folder is extracted under the data root ``root``."""
    return Path(root) / DATASET_FOLDER


def download_path(url: str, root: str | Path) -> Path:
    """Where the download of ``url`` is kept under the data root ``root``: named by the URL, not
    just its file name, so two sources that share a name (two mirrors' ``master.zip``) never stand
    in for each other."""
    name = Path(urlparse(url).path).name or "esc50"
    name = name if name.endswith(".zip") else name + ".zip"
    return Path(root) / "downloads" / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"


def folds_csv(root: str | Path, dataset_root: str | Path, settings: str = "") -> Path:
    """Where the fold split of the dataset folder ``dataset_root`` (made with ``settings``: the
    number of folds, the grouping, ...) is kept under the data root ``root``: named by the folder's
    absolute path and the settings, so two trees, or two ways to split one, never share a split."""
    folder = Path(dataset_root).resolve()
    digest = hashlib.sha256(f"{folder}\n{settings}".encode()).hexdigest()[:12]
    return Path(root) / "folds" / f"{folder.name}-{digest}.csv"
