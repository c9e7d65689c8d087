"""The metadata schema: ``meta/esc50.csv`` read and validated, every error naming row and column.

Columns: ``filename,fold,target,category,esc10,src_file,take`` (the official file's, in order);
filenames spell out ``{fold}-{src_file}-{take}-{target}.wav``. ``load_table`` reads the CSV of
another layout (``esc50ann.layouts``) into the same columns.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from esc50ann.errors import DatasetError, one_line

COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]

_FILENAME = re.compile(r"^(\d+)-(\d+)-([A-Za-z0-9]+)-(\d+)\.wav$")
_INT = re.compile(r"^[+-]?\d+$")
_BOOL = {"true": True, "false": False}


def load_metadata(csv_path: Path) -> pd.DataFrame:
    """Read and validate ``meta/esc50.csv``.

    Rows are named as "row i (line j)": i counts data rows from 1, j is the CSV line
    (the header is line 1).

    Parameters
    ----------
    csv_path : Path
        The metadata file.

    Returns
    -------
    pandas.DataFrame
        Columns ``COLUMNS`` in that order, index 0..n-1; ``fold``, ``target``, ``src_file``
        int64, ``esc10`` bool, the rest strings.

    Raises
    ------
    DatasetError
        Unreadable file, missing column, bad value, one target with two categories,
        duplicate filename, or a filename disagreeing with its columns.
    """
    csv_path = Path(csv_path)
    values = _cells(csv_path, COLUMNS)
    meta = pd.DataFrame({
        "filename": values["filename"],
        "fold": _ints(values["fold"], "fold", csv_path),
        "target": _ints(values["target"], "target", csv_path, minimum=0),
        "category": _nonempty(values["category"], "category", csv_path),
        "esc10": _bools(values["esc10"], "esc10", csv_path),
        "src_file": _ints(values["src_file"], "src_file", csv_path),
        "take": _nonempty(values["take"], "take", csv_path),
    }, columns=COLUMNS)
    _check_filenames(meta, csv_path)
    _check_categories(meta, csv_path)
    return meta


def row_name(i: int) -> str:
    """Name data row ``i`` (0-based) of a CSV both ways, so nobody has to guess the convention."""
    return f"row {i + 1} (line {i + 2})"


def _cells(csv_path: Path, columns) -> dict[str, list[str]]:
    """The stripped text of each of ``columns`` of the CSV file, row by row; a missing column or
    no rows at all is a ``DatasetError`` naming the file."""
    raw = _read_csv(csv_path)
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise DatasetError(f"{csv_path}: missing column {missing[0]!r} (has: {', '.join(map(str, raw.columns))})")
    if raw.empty:
        raise DatasetError(f"{csv_path}: no data rows")
    return {c: [v.strip() for v in raw[c].tolist()] for c in columns}


def _read_csv(csv_path: Path) -> pd.DataFrame:
    """All cells as stripped-later strings; empty cells stay '' instead of NaN."""
    try:
        return pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise DatasetError(f"{csv_path}: metadata file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise DatasetError(f"{csv_path}: not a readable CSV ({one_line(e)})") from None


def header(csv_path: Path) -> list[str]:
    """The column names of a CSV (its first line).

    Raises
    ------
    DatasetError
        The file is missing or unreadable.
    """
    try:
        return [str(c).strip() for c in pd.read_csv(csv_path, nrows=0, dtype=str, skipinitialspace=True).columns]
    except FileNotFoundError:
        raise DatasetError(f"{csv_path}: metadata file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise DatasetError(f"{csv_path}: not a readable CSV ({one_line(e)})") from None


def _ints(cells: list[str], column: str, csv_path: Path, minimum: int | None = None) -> np.ndarray:
    for i, v in enumerate(cells):
        if (not _INT.match(v) or (minimum is not None and int(v) < minimum)
                or not -2**63 <= int(v) < 2**63):  # an int64 column
            what = "an integer" if minimum is None else f"an integer >= {minimum}"
            raise DatasetError(f"{csv_path}: {row_name(i)}, column {column!r}: expected {what}, got {v!r}")
    return np.array([int(v) for v in cells], dtype=np.int64)


def _bools(cells: list[str], column: str, csv_path: Path) -> np.ndarray:
    for i, v in enumerate(cells):
        if v.lower() not in _BOOL:
            raise DatasetError(f"{csv_path}: {row_name(i)}, column {column!r}: expected True or False, got {v!r}")
    return np.array([_BOOL[v.lower()] for v in cells], dtype=bool)


def _nonempty(cells: list[str], column: str, csv_path: Path) -> list[str]:
    for i, v in enumerate(cells):
        if not v:
            raise DatasetError(f"{csv_path}: {row_name(i)}, column {column!r}: empty")
    return cells


def _check_filenames(meta: pd.DataFrame, csv_path: Path) -> None:
    """Names are unique and spell out ``{fold}-{src_file}-{take}-{target}.wav``."""
    _check_duplicates(meta, csv_path)
    for i, row in enumerate(meta.itertuples(index=False)):
        m = _FILENAME.match(row.filename)
        if not m:
            raise DatasetError(f"{csv_path}: {row_name(i)}, column 'filename': {row.filename!r} is not "
                               f"<fold>-<src_file>-<take>-<target>.wav")
        parsed = {"fold": int(m[1]), "src_file": int(m[2]), "take": m[3], "target": int(m[4])}
        for column, value in parsed.items():
            if getattr(row, column) != value:
                raise DatasetError(f"{csv_path}: {row_name(i)}, column {column!r}: {_show(getattr(row, column))} "
                                   f"disagrees with filename {row.filename!r}")


def _check_categories(meta: pd.DataFrame, csv_path: Path, target: str = "target", label: str = "category") -> None:
    """One category name per target and one target per category name (``target`` and ``label``:
    what the CSV calls those columns)."""
    called = {"target": target, "category": label}
    for key, other in (("target", "category"), ("category", "target")):
        first = meta.groupby(key, sort=False)[other].transform("first")
        bad = np.flatnonzero((meta[other] != first).to_numpy())
        if bad.size:
            i = int(bad[0])
            raise DatasetError(f"{csv_path}: {row_name(i)}, column {called[other]!r}: {called[key]} "
                               f"{_show(meta[key].iloc[i])} has {called[other]} {_show(meta[other].iloc[i])} "
                               f"here but {_show(first.iloc[i])} earlier")


def _show(value) -> str:
    """Numbers plain, text quoted (numpy scalars' repr would say np.int64(0))."""
    return str(int(value)) if isinstance(value, (int, np.integer)) else repr(str(value))


def load_table(csv_path: Path, *, file: str, label: str, fold: str | None = None, target: str | None = None,
               group: str | None = None, prefix=None) -> pd.DataFrame:
    """Read the metadata CSV of another layout (``esc50ann.layouts``: UrbanSound8K's, a user's own,
    a fold split) by the names of its columns, every value checked and every error naming its row.

    Parameters
    ----------
    csv_path : Path
    file, label : str
        The columns holding the file name (a path relative to the audio folder) and the class name.
    fold : str, optional
        The column holding the fold (an integer >= 1); None: the folds are assigned later.
    target : str, optional
        The column holding the class id (an integer >= 0); None: assigned by ``to_metadata``.
    group : str, optional
        The column naming the source recording of each clip (any text; clips of one source never
        straddle a split); None: every clip its own source.
    prefix : callable, optional
        ``prefix(fold)`` -> the folder the file lies in, relative to the audio folder
        (UrbanSound8K's ``fold<k>``); ``filename`` is then ``<prefix>/<file>``.

    Returns
    -------
    pandas.DataFrame
        Columns ``filename``, ``category``, ``fold`` (int64, 0 without ``fold``), ``target`` (int64,
        -1 without ``target``), ``group`` (str, '' without ``group``), index 0..n-1 in file order.

    Raises
    ------
    DatasetError
        Unreadable file, missing column, empty or bad value, a file listed twice, one class id
        with two names (the message names the CSV's own column names).
    """
    csv_path = Path(csv_path)
    cell = _cells(csv_path, [c for c in (file, label, fold, target, group) if c is not None])
    n = len(cell[file])
    folds = _ints(cell[fold], fold, csv_path, minimum=1) if fold else np.zeros(n, dtype=np.int64)
    names = _nonempty(cell[file], file, csv_path)
    if prefix is not None:
        names = [f"{prefix(int(k))}/{name}" for k, name in zip(folds, names)]
    table = pd.DataFrame({
        "filename": names,
        "category": _nonempty(cell[label], label, csv_path),
        "fold": folds,
        "target": _ints(cell[target], target, csv_path, minimum=0) if target else np.full(n, -1, dtype=np.int64),
        "group": _nonempty(cell[group], group, csv_path) if group else [""] * n,
    })
    _check_duplicates(table, csv_path, file)
    if target:
        _check_categories(table, csv_path, target, label)
    return table


def to_metadata(table: pd.DataFrame) -> pd.DataFrame:
    """A ``load_table`` frame (folds assigned) in ``load_metadata``'s columns, so every later stage
    reads every layout alike: ``target`` the class names' rank in sorted order where the CSV gave
    no ids; ``src_file`` the group (its own number where every group is an integer, else the
    group's rank in sorted order; every clip its own without groups); ``esc10`` False."""
    n = len(table)
    targets = table["target"].to_numpy(dtype=np.int64)
    if (targets < 0).any():
        rank = {c: i for i, c in enumerate(sorted(set(table["category"])))}
        targets = np.array([rank[c] for c in table["category"]], dtype=np.int64)
    groups = [str(g) for g in table["group"]]
    if not any(groups):
        src = np.arange(n, dtype=np.int64)
    elif all(_INT.match(g) and -2**63 <= int(g) < 2**63 for g in groups):
        src = np.array([int(g) for g in groups], dtype=np.int64)
    else:
        rank = {g: i for i, g in enumerate(sorted(set(groups)))}
        src = np.array([rank[g] for g in groups], dtype=np.int64)
    return pd.DataFrame({
        "filename": table["filename"].to_numpy(), "fold": table["fold"].to_numpy(dtype=np.int64),
        "target": targets, "category": table["category"].to_numpy(), "esc10": np.zeros(n, dtype=bool),
        "src_file": src, "take": ["A"] * n,
    }, columns=COLUMNS)


def _check_duplicates(meta: pd.DataFrame, csv_path: Path, column: str = "filename") -> None:
    """Every file listed once."""
    dup = meta["filename"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        first = int(np.flatnonzero((meta["filename"] == meta["filename"].iloc[i]).to_numpy())[0])
        raise DatasetError(f"{csv_path}: {row_name(i)}, column {column!r}: {meta['filename'].iloc[i]!r} "
                           f"duplicates {row_name(first)}")
