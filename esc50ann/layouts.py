"""Dataset layouts other than ESC-50's, read into ESC-50's metadata columns.

    esc50         ROOT/meta/esc50.csv, ROOT/audio/*.wav (or ROOT/ESC-50-master/...)
    urbansound8k  ROOT/metadata/UrbanSound8K.csv (slice_file_name, fold, classID, class[, fsID]),
                  ROOT/audio/fold<k>/*.wav (or ROOT/UrbanSound8K/...)
    folders       ROOT/<label>/**/*.wav|flac|ogg: folds assigned by a seeded stratified split,
                  written to a CSV in the data root (``paths.folds_csv``) and reused on reruns

``detect`` names the layout of an extracted folder; ``read`` gives its metadata frame (columns
``esc50ann.metadata.COLUMNS``, filenames relative to ``Layout.audio_dir``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from esc50ann import paths
from esc50ann.errors import DatasetError
from esc50ann.fileio import write_text
from esc50ann.metadata import load_metadata, load_table

ESC50, URBANSOUND8K, FOLDERS = "esc50", "urbansound8k", "folders"
NAMES = {ESC50: "ESC-50", URBANSOUND8K: "UrbanSound8K", FOLDERS: "class-per-folder"}  # as messages say them
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
N_FOLDS = 5  # of a class-per-folder split, fewer when a class has fewer clips
SPLIT_SEED = 0  # the split's random state: the same tree always splits the same way
MIN_CLIPS = 2  # per class, to put it in at least two folds
_US8K_CSV = "metadata/UrbanSound8K.csv"


@dataclass(frozen=True)
class Layout:
    """Where a dataset's metadata and audio are.

    Attributes
    ----------
    kind : str
        ``ESC50``, ``URBANSOUND8K`` or ``FOLDERS``.
    root : Path
        The dataset folder.
    audio_dir : Path
        The folder the metadata's filenames are relative to.
    metadata : Path
        The metadata CSV (for ``FOLDERS``, the fold assignment in the data root).
    """

    kind: str
    root: Path
    audio_dir: Path
    metadata: Path


def esc50(root: Path) -> Layout:
    root = Path(root)
    return Layout(ESC50, root, root / "audio", root / "meta" / "esc50.csv")


def detect(folder: Path, data_dir: Path) -> Layout | None:
    """The layout of the extracted folder ``folder`` (or of its ``ESC-50-master/`` or
    ``UrbanSound8K/``), or None when it holds no metadata and no class folders of audio."""
    folder = Path(folder)
    for candidate in (folder, folder / "ESC-50-master"):
        if (candidate / "meta" / "esc50.csv").is_file() and (candidate / "audio").is_dir():
            return esc50(candidate)
    for candidate in (folder, folder / "UrbanSound8K"):
        if (candidate / _US8K_CSV).is_file() and (candidate / "audio").is_dir():
            return Layout(URBANSOUND8K, candidate, candidate / "audio", candidate / _US8K_CSV)
    if _audio_files(folder):
        return Layout(FOLDERS, folder, folder, paths.folds_csv(data_dir, folder))
    return None


def read(layout: Layout) -> pd.DataFrame:
    """The validated metadata of ``layout`` (see ``esc50ann.metadata.load_metadata``); for
    ``FOLDERS``, the recorded split if it lists exactly the files the tree holds, else a new one."""
    if layout.kind == ESC50:
        return load_metadata(layout.metadata)
    if layout.kind == URBANSOUND8K:
        return load_table(layout.metadata, file="slice_file_name", fold="fold", label="class", target="classID",
                          group="fsID" if "fsID" in _header(layout.metadata) else None,
                          prefix=lambda k: f"fold{k}")
    if layout.kind == FOLDERS:
        return _folder_split(layout)
    raise DatasetError(f"unknown dataset layout {layout.kind!r}")


def _header(csv_path: Path) -> list[str]:
    with open(csv_path, encoding="utf-8", errors="replace") as f:
        return [c.strip() for c in f.readline().split(",")]


def _audio_files(root: Path) -> list[str]:
    """Audio files below a label folder of ``root``, as sorted POSIX paths relative to it
    (hidden files and folders skipped; files directly in ``root`` have no label)."""
    found = []
    for path in Path(root).rglob("*"):
        rel = path.relative_to(root)
        if (len(rel.parts) >= 2 and path.suffix.lower() in AUDIO_EXTENSIONS
                and not any(p.startswith(".") for p in rel.parts) and path.is_file()):
            found.append(rel.as_posix())
    return sorted(found)


def _folder_split(layout: Layout) -> pd.DataFrame:
    files = _audio_files(layout.root)
    if not files:
        raise DatasetError(f"{layout.root}: no audio files (*{', *'.join(AUDIO_EXTENSIONS)}) in class folders")
    if layout.metadata.is_file():
        meta = load_table(layout.metadata, file="filename", fold="fold", label="category")
        if sorted(meta["filename"]) == files:
            return meta
        warnings.warn(f"{layout.root} holds other files than {layout.metadata} lists: splitting it anew")
    labels = [f.split("/", 1)[0] for f in files]
    split = pd.DataFrame({"filename": files, "fold": _stratified_folds(labels, layout.root), "category": labels})
    write_text(layout.metadata, split.to_csv(index=False))  # atomic
    return load_table(layout.metadata, file="filename", fold="fold", label="category")


def _stratified_folds(labels: list[str], root: Path) -> np.ndarray:
    """Fold 1..k of each clip, k = min(N_FOLDS, smallest class), every class in every fold."""
    from sklearn.model_selection import StratifiedKFold

    counts = pd.Series(labels).value_counts()
    small = counts[counts < MIN_CLIPS]
    if len(small):
        label = sorted(small.index)[0]
        raise DatasetError(f"{root / label}: class {label!r} has {int(counts[label])} clip(s); "
                           f"a class needs at least {MIN_CLIPS} to split into folds")
    k = int(min(N_FOLDS, counts.min()))
    fold = np.zeros(len(labels), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=SPLIT_SEED)
    for i, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold[test] = i + 1
    return fold
