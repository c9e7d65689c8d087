"""Fold stage: whole-fold splits of a ``Dataset`` and the rules that keep them leak-free.

For every test fold the metadata lists (5 on ESC-50, 3 on the development copy -- never
assumed), the other folds train; optionally one of them is held out whole for validation.
A split is refused when:

* fragments of one source recording of one class (``src_file``, ``target``) fall on two sides
  (the official folds keep them together; a reshuffled CSV might not);
* a class has no training clip (the model could never predict it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from esc50ann.dataset import Dataset
from esc50ann.errors import DatasetError


@dataclass(frozen=True)
class Split:
    """Row positions (into ``Dataset.meta``) of one cross-validation split.

    ``train``, ``val`` and ``test`` are int arrays of shape (n,), disjoint, drawn from whole folds.
    """

    test_fold: int | None  # None: the final model's split, no test rows
    val_fold: int | None
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split(dataset: Dataset, test_fold: int, val_fold: int | None | str = None) -> Split:
    """Hold out whole folds: ``test_fold`` for testing, optionally ``val_fold`` for validation.

    Parameters
    ----------
    dataset : Dataset
    test_fold : int
        A fold listed in the metadata.
    val_fold : int, "auto", "none" or None
        A different listed fold; ``"auto"`` for the next listed fold after ``test_fold``
        (cyclically); ``"none"`` or None for no validation set. (``"auto"``/``"none"`` are the
        pipelines' ``[evaluation] validation`` values.)

    Returns
    -------
    Split
        Row positions; training gets every other fold.

    Raises
    ------
    DatasetError
        Unknown fold, fewer than 2 folds, no fold left for training, a source recording on two
        sides of the split, or a class without training clips.
    """
    folds = dataset.folds
    if len(folds) < 2:
        raise DatasetError(f"cannot split {dataset.root}: need at least 2 folds, the metadata lists {_listing(folds)}")
    test_fold = _known_fold(test_fold, folds, "test")
    val_fold = _pick_val_fold(val_fold, test_fold, folds)
    train_folds = [f for f in folds if f not in (test_fold, val_fold)]
    if not train_folds:
        raise DatasetError(f"no fold left for training with test fold {test_fold} and validation "
                           f"fold {val_fold} (folds: {_listing(folds)})")
    fold = dataset.meta["fold"].to_numpy()
    result = Split(
        test_fold=test_fold,
        val_fold=val_fold,
        train=np.flatnonzero(np.isin(fold, train_folds)),
        val=np.flatnonzero(fold == val_fold) if val_fold is not None else np.array([], dtype=np.int64),
        test=np.flatnonzero(fold == test_fold),
    )
    _check_no_leak(dataset.meta, result)
    _check_every_class_trains(dataset, result)
    return result


def splits(dataset: Dataset, folds=None, val_fold: int | None | str = "auto") -> list[Split]:
    """One checked ``split`` per test fold: every listed fold by default, or those in ``folds``."""
    return [split(dataset, f, val_fold) for f in (dataset.folds if folds is None else folds)]


def final_split(dataset: Dataset, val_fold: int | None | str = None) -> Split:
    """Every fold for training a final model (no test rows), optionally ``val_fold`` held out
    for early stopping (``"auto"``: the last listed fold; ``"none"`` or None: no validation)."""
    folds = dataset.folds
    val_fold = None if val_fold == "none" else val_fold
    if val_fold == "auto":
        val_fold = folds[-1]
    elif val_fold is not None:
        val_fold = _known_fold(val_fold, folds, "validation")
    if val_fold is not None and len(folds) < 2:
        raise DatasetError(f"cannot hold out a validation fold: the metadata lists {_listing(folds)}")
    fold = dataset.meta["fold"].to_numpy()
    return Split(test_fold=None, val_fold=val_fold, train=np.flatnonzero(fold != val_fold),
                 val=np.flatnonzero(fold == val_fold), test=np.array([], dtype=np.int64))


def _listing(folds) -> str:
    return ", ".join(str(f) for f in folds) or "none"


def _known_fold(fold, folds: list[int], role: str) -> int:
    """``fold`` as an int, checked to be one of ``folds``."""
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or int(fold) not in folds:
        raise DatasetError(f"{role} fold {fold!r} is not in the metadata (folds: {_listing(folds)})")
    return int(fold)


def _pick_val_fold(val_fold, test_fold: int, folds: list[int]) -> int | None:
    """Resolve None / "none" / "auto" / an explicit validation fold."""
    if val_fold is None or val_fold == "none":
        return None
    if isinstance(val_fold, str):
        if val_fold != "auto":
            raise DatasetError(f"validation fold {val_fold!r}: expected a fold number, None or 'auto' (or 'none')")
        return folds[(folds.index(test_fold) + 1) % len(folds)]
    val_fold = _known_fold(val_fold, folds, "validation")
    if val_fold == test_fold:
        raise DatasetError(f"validation fold {val_fold} is also the test fold: choose another")
    return val_fold


def _check_no_leak(meta: pd.DataFrame, split: Split) -> None:
    """Fragments of one source recording (same ``src_file`` and class) must stay on one side.

    A ``src_file`` shared by two *classes* is allowed: the official metadata does that
    across folds (freesound 131943: clock_tick in fold 2, clock_alarm in fold 3; 134049:
    hen / rooster), and refusing it would make the official folds unusable.
    """
    recording = list(zip(meta["src_file"].to_numpy().tolist(), meta["target"].to_numpy().tolist()))
    rows = {"train": split.train, "val": split.val, "test": split.test}
    parts = {name: {recording[i] for i in index} for name, index in rows.items()}
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = parts[a] & parts[b]
            if shared:
                src, target = min(shared)
                # Name a clip on each side: src_file is a number other layouts make up for a group.
                clip = {side: next(meta["filename"].iloc[r] for r in rows[side] if recording[r] == (src, target))
                        for side in (a, b)}
                raise DatasetError(f"split with test fold {split.test_fold} leaks: src_file {src} "
                                   f"(target {target}) is in both {a} and {b} ({len(shared)} shared; "
                                   f"{clip[a]} in {a}, {clip[b]} in {b})")


def _check_every_class_trains(dataset: Dataset, split: Split) -> None:
    """Refuse a split whose training folds lack a class (the model could never predict it)."""
    trained = set(dataset.targets[split.train].tolist())
    names = dataset.names_by_target
    missing = [t for t in names if t not in trained]
    if missing:
        listed = ", ".join(f"{names[t]!r}" for t in missing[:5])
        raise DatasetError(f"test fold {split.test_fold}: no training clips for class {listed}; "
                           "every class needs clips in the training folds")
