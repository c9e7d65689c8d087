"""The metadata schema: types, order, and errors that name row and column."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import synth
from esc50ann.metadata import COLUMNS, load_metadata
from esc50ann.errors import DatasetError


def write_csv(tmp_path: Path, edit) -> Path:
    """meta/esc50.csv of the synthetic layout, as strings, after ``edit(df)``."""
    df = synth.metadata().astype(str)
    df = edit(df) if edit else df
    path = tmp_path / "esc50.csv"
    df.to_csv(path, index=False)
    return path


def test_load_metadata_types_and_order(synth_folder):
    meta = load_metadata(synth_folder / "meta" / "esc50.csv")
    assert list(meta.columns) == COLUMNS
    assert list(meta.index) == list(range(24))
    for col in ("fold", "target", "src_file"):
        assert meta[col].dtype == np.int64
    assert meta["esc10"].dtype == bool and meta["esc10"].sum() == 12
    assert sorted(meta["fold"].unique()) == [1, 2, 3]


def test_missing_column(tmp_path):
    path = write_csv(tmp_path, lambda df: df.drop(columns="take"))
    with pytest.raises(DatasetError, match=re.escape(str(path)) + ".*missing column 'take'"):
        load_metadata(path)


def test_non_integer_fold_names_the_row(tmp_path):
    def edit(df):
        df.loc[2, "fold"] = "three"
        return df
    path = write_csv(tmp_path, edit)
    with pytest.raises(DatasetError, match=r"esc50.csv: row 3 \(line 4\), column 'fold'.*'three'") as e:
        load_metadata(path)
    assert "\n" not in str(e.value)


def test_filename_disagreeing_with_target(tmp_path):
    def edit(df):
        df.loc[4, "target"] = "36"  # row 5 is a chirping_birds (14) clip
        df.loc[4, "category"] = "vacuum_cleaner"
        return df
    with pytest.raises(DatasetError, match=r"row 5 \(line 6\), column 'target'.*disagrees with filename"):
        load_metadata(write_csv(tmp_path, edit))


@pytest.mark.parametrize("column, value, message", [
    ("esc10", "maybe", r"row 1 \(line 2\), column 'esc10': expected True or False, got 'maybe'"),
    ("filename", "dog.wav", r"row 1 \(line 2\), column 'filename'.*not <fold>"),
    ("src_file", "1.5", r"row 1 \(line 2\), column 'src_file': expected an integer"),
    ("target", "-1", r"row 1 \(line 2\), column 'target': expected an integer >= 0"),
])
def test_bad_values(tmp_path, column, value, message):
    def edit(df):
        df.loc[0, column] = value
        return df
    with pytest.raises(DatasetError, match=message):
        load_metadata(write_csv(tmp_path, edit))


def test_two_categories_for_one_target(tmp_path):
    def edit(df):
        df.loc[1, "category"] = "cat"  # row 1 (line 2) still says dog for target 0
        return df
    with pytest.raises(DatasetError, match=r"row 2 \(line 3\), column 'category': target 0 has "
                                           r"category 'cat' here but 'dog' earlier"):
        load_metadata(write_csv(tmp_path, edit))


def test_duplicate_filename(tmp_path):
    path = write_csv(tmp_path, lambda df: pd.concat([df, df.iloc[[3]]], ignore_index=True))
    with pytest.raises(DatasetError, match=r"row 25 \(line 26\).*duplicates row 4 \(line 5\)"):
        load_metadata(path)


def test_unreadable_or_absent_csv(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_metadata(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DatasetError, match="empty.csv: not a readable CSV"):
        load_metadata(tmp_path / "empty.csv")


