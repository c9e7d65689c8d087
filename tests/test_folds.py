"""Fold splits: whole folds, the validation fold, leak and empty-class refusals."""
import numpy as np
import pytest

from esc50ann import folds
from esc50ann.dataset import Dataset
from esc50ann.errors import DatasetError
from esc50ann.metadata import load_metadata


@pytest.fixture(scope="module")
def dataset(synth_folder) -> Dataset:
    return Dataset(synth_folder, load_metadata(synth_folder / "meta" / "esc50.csv"))


def test_splits_never_leak_and_cover_everything(dataset):
    src = dataset.meta["src_file"].to_numpy()
    fold = dataset.meta["fold"].to_numpy()
    for split in folds.splits(dataset):
        parts = [split.train, split.val, split.test]
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(dataset)))
        for a in range(3):
            for b in range(a + 1, 3):
                assert not set(src[parts[a]]) & set(src[parts[b]])
        assert set(fold[split.test]) == {split.test_fold}
        assert set(fold[split.val]) == {split.val_fold}


def test_auto_validation_fold_is_the_next_one_cyclically(dataset):
    assert [(s.test_fold, s.val_fold) for s in folds.splits(dataset)] == [(1, 2), (2, 3), (3, 1)]


def test_explicit_and_no_validation_fold(dataset):
    s = folds.split(dataset, 2, 1)
    assert (s.test_fold, s.val_fold) == (2, 1) and len(s.train) == 8
    s = folds.split(dataset, 2)
    assert s.val_fold is None and len(s.val) == 0 and len(s.train) == 16
    assert [len(s.test) for s in folds.splits(dataset, [3, 1], val_fold=None)] == [8, 8]


@pytest.mark.parametrize("test_fold, val_fold, message", [
    (5, None, r"test fold 5 is not in the metadata \(folds: 1, 2, 3\)"),
    (1, 4, r"validation fold 4 is not in the metadata \(folds: 1, 2, 3\)"),
    (1, 1, "validation fold 1 is also the test fold"),
    (1, "next", "expected a fold number, None or 'auto'"),
])
def test_split_errors(dataset, test_fold, val_fold, message):
    with pytest.raises(DatasetError, match=message):
        folds.split(dataset, test_fold, val_fold)


def test_too_few_folds(dataset):
    one = Dataset(dataset.root, dataset.meta[dataset.meta["fold"] == 1].reset_index(drop=True))
    with pytest.raises(DatasetError, match="at least 2 folds"):
        folds.split(one, 1)
    two = Dataset(dataset.root, dataset.meta[dataset.meta["fold"] < 3].reset_index(drop=True))
    assert len(folds.split(two, 1).train) == 8
    with pytest.raises(DatasetError, match="no fold left for training"):
        folds.split(two, 1, "auto")


def test_split_refuses_a_leaking_source_recording(dataset):
    meta = dataset.meta.copy()
    # A fold-3 dog clip claiming to come from the same recording as a fold-1 dog clip.
    i = meta.index[(meta["fold"] == 3) & (meta["target"] == 0)][0]
    meta.loc[i, "src_file"] = meta["src_file"].iloc[0]
    with pytest.raises(DatasetError, match=r"leaks: src_file \d+ \(target 0\) is in both train and test"):
        folds.split(Dataset(dataset.root, meta), 3, None)


def test_one_freesound_file_in_two_classes_is_allowed(dataset):
    # The official metadata does this (131943: clock_tick fold 2 / clock_alarm fold 3).
    meta = dataset.meta.copy()
    i = meta.index[(meta["fold"] == 3) & (meta["target"] == 36)][0]
    meta.loc[i, "src_file"] = meta["src_file"].iloc[0]  # fold 1, target 0
    assert len(folds.split(Dataset(dataset.root, meta), 1, 2).train) == 8
