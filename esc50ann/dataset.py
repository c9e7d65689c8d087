"""Dataset stage: the ESC-50 metadata, its audio files and its fold splits.

``Dataset`` is what the stage returns and what every later stage takes as input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from esc50ann.errors import DatasetError

# The official clips: 5 s, 44.1 kHz, mono.
SAMPLE_RATE = 44100
CHANNELS = 1
N_SAMPLES = 5 * SAMPLE_RATE
COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]


@dataclass(frozen=True)
class Split:
    """Row positions (into ``Dataset.meta``) of one cross-validation split.

    ``train``, ``val`` and ``test`` are int arrays of shape (n,), disjoint, drawn from whole folds.
    """

    test_fold: int
    val_fold: int | None
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class Dataset:
    """ESC-50 (or a subset of it) as the pipeline sees it.

    Attributes
    ----------
    root : Path
        Folder holding ``meta/esc50.csv`` and ``audio/``.
    meta : pandas.DataFrame
        Validated metadata, one row per clip, columns ``COLUMNS``, index 0..n-1.
    manifest : dict[str, str] or None
        filename -> SHA-256 of the audio file, recorded at verification; None if never verified.
    """

    root: Path
    meta: pd.DataFrame
    manifest: dict[str, str] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def audio_paths(self) -> list[Path]:
        """Path of each clip's WAV, in ``meta`` row order."""
        audio = self.root / "audio"
        return [audio / name for name in self.meta["filename"]]

    @property
    def folds(self) -> list[int]:
        """The folds the metadata lists, sorted (5 for ESC-50, 3 for the development copy)."""
        return sorted(int(f) for f in self.meta["fold"].unique())

    @property
    def targets(self) -> np.ndarray:
        """Class id of each clip, shape (n_clips,), int64."""
        return self.meta["target"].to_numpy(dtype=np.int64)

    @property
    def class_names(self) -> dict[int, str]:
        """Class id -> category name, sorted by id."""
        pairs = self.meta[["target", "category"]].drop_duplicates().sort_values("target")
        return {int(t): str(c) for t, c in zip(pairs["target"], pairs["category"])}

    def subset(self, name: str) -> "Dataset":
        """``"esc50"``: all clips; ``"esc10"``: the clips whose ``esc10`` column is true."""
        if name == "esc50":
            return self
        if name == "esc10":
            meta = self.meta[self.meta["esc10"]].reset_index(drop=True)
            return Dataset(self.root, meta, self.manifest)
        raise DatasetError(f"unknown subset {name!r}: expected 'esc50' or 'esc10'")
