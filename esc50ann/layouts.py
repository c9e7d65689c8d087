"""Dataset layouts: where a folder's metadata and audio are, read into ESC-50's metadata columns.

    esc50         ROOT/meta/esc50.csv, ROOT/audio/*.wav (or ROOT/ESC-50-master/...)
    urbansound8k  ROOT/metadata/UrbanSound8K.csv (slice_file_name, fold, classID, class[, fsID]),
                  ROOT/audio/fold<k>/*.wav (or ROOT/UrbanSound8K/...)
    csv           the CSV ``[dataset] metadata`` names, its columns named by ``Settings``
    folders       ROOT/<label>/**/*.wav|flac|ogg: the folder below ROOT is the label

``detect`` works out the layout of an extracted folder; ``read`` gives its metadata frame (columns
``esc50ann.metadata.COLUMNS``, filenames relative to ``Layout.audio_dir``), every other layout
checked as strictly as ESC-50's: each error one line naming the file and the row.

Clips without folds (a tree, a CSV without a fold column) get them from a seeded stratified split
that keeps every group (clips of one source recording) in one fold and every class in every fold.
The split is written to ``<data root>/folds/`` (``paths.folds_csv``) and reused while the clips,
their labels and groups stay the same: a rerun splits the same way (whatever the library version),
and a hand-edited split is what the next run reads.
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from esc50ann import paths
from esc50ann.errors import ConfigError, DatasetError
from esc50ann.fileio import write_text
from esc50ann.metadata import header, load_metadata, load_table, row_name, to_metadata
from esc50ann.params import InstanceOf, Integral, Interval, validate

ESC50, URBANSOUND8K, CSV, FOLDERS = "esc50", "urbansound8k", "csv", "folders"
KINDS = (ESC50, URBANSOUND8K, CSV, FOLDERS)
NAMES = {ESC50: "ESC-50", URBANSOUND8K: "UrbanSound8K", CSV: "metadata CSV", FOLDERS: "class-per-folder"}
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
SPLIT_SEED = 0  # the assigned split's random state: one set of clips always splits the same way
ROLES = ("file", "label", "fold", "target", "group")  # what a CSV layout's columns hold
_US8K_CSV = "metadata/UrbanSound8K.csv"
_US8K_COLUMNS = {"file": "slice_file_name", "label": "class", "fold": "fold", "target": "classID"}


@dataclass(frozen=True)
class Settings:
    """How to read a dataset folder other than ESC-50: the ``[dataset]`` keys below, all optional.

    metadata : str or None
        A CSV listing the clips (relative to the source folder, or absolute): the ``csv`` layout.
        None: whatever layout the folder has (ESC-50, UrbanSound8K, a folder per class).
    audio_dir : str or None
        The folder the CSV's file names are relative to (relative to the source folder);
        default the source folder. With ``metadata`` only.
    file_column, label_column : str or None
        The CSV's columns of file names and of class names; default ``filename`` and ``label``.
    fold_column : str or None
        The CSV's column of folds (integers >= 1); default ``fold`` if the CSV has one, else the
        folds are assigned (``n_folds``).
    group_column : str or None
        The CSV's column naming each clip's source recording: clips of one source never straddle
        folds. Default: every clip its own source.
    group_pattern : str or None
        Instead, a regular expression searched in each clip's file name (its path relative to the
        audio folder, say ``dog/rec12_take3.wav``): the first group it captures, else the whole
        match, names the source. For a tree or a CSV.
    n_folds : int
        Folds of an assigned split; every class needs clips of at least this many sources.
    """

    metadata: str | None = None
    audio_dir: str | None = None
    file_column: str | None = None
    label_column: str | None = None
    fold_column: str | None = None
    group_column: str | None = None
    group_pattern: str | None = None
    n_folds: int = 5

    _constraints = {
        **{key: [InstanceOf(str), None] for key in ("metadata", "audio_dir", "file_column", "label_column",
                                                     "fold_column", "group_column", "group_pattern")},
        "n_folds": [Interval(Integral, 2, 100)],
    }

    def __post_init__(self):
        validate(asdict(self), self._constraints)
        if self.group_pattern is not None:
            try:
                re.compile(self.group_pattern)
            except re.error as e:
                raise ConfigError(f"group_pattern: {self.group_pattern!r} is not a regular expression ({e})") from None
        if self.group_column is not None and self.group_pattern is not None:
            raise ConfigError("group_pattern: give group_column or group_pattern, not both")
        if self.metadata is None:
            for key in ("audio_dir", "file_column", "label_column", "fold_column", "group_column"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"{key}: applies to a metadata CSV only; set metadata too")


@dataclass(frozen=True)
class Layout:
    """Where one dataset's metadata and audio are, and how to read them.

    Attributes
    ----------
    kind : str
        One of ``KINDS``.
    root : Path
        The dataset folder.
    audio_dir : Path
        The folder the metadata's file names are relative to.
    metadata : Path or None
        The CSV listing the clips; None for a tree.
    columns : dict
        For the CSV of ``URBANSOUND8K`` and ``CSV``: role (``ROLES``) -> column name.
    split : Path or None
        Where assigned folds are kept (``paths.folds_csv``); None when the metadata has folds.
    n_folds : int or None
        Folds of the assigned split.
    group_pattern : str or None
        ``Settings.group_pattern``.
    """

    kind: str
    root: Path
    audio_dir: Path
    metadata: Path | None = None
    columns: dict = field(default_factory=dict)
    split: Path | None = None
    n_folds: int | None = None
    group_pattern: str | None = None

    def to_record(self) -> dict:
        """JSON-ready form, paths absolute (what ``dataset.json`` keeps; ``from_record`` reads it)."""
        def path(p):
            return None if p is None else str(Path(p).resolve())
        return {"kind": self.kind, "root": path(self.root), "audio_dir": path(self.audio_dir),
                "metadata": path(self.metadata), "columns": dict(self.columns), "split": path(self.split),
                "n_folds": self.n_folds, "group_pattern": self.group_pattern}

    @classmethod
    def from_record(cls, doc: dict) -> "Layout":
        """The layout ``to_record`` wrote (its shape checked by ``esc50ann.record``)."""
        def path(p):
            return None if p is None else Path(p)
        return cls(doc["kind"], Path(doc["root"]), Path(doc["audio_dir"]), path(doc["metadata"]),
                   dict(doc["columns"]), path(doc["split"]), doc["n_folds"], doc["group_pattern"])


def esc50(root: Path) -> Layout:
    root = Path(root)
    return Layout(ESC50, root, root / "audio", root / "meta" / "esc50.csv")


def detect(folder: Path, data_dir: Path, settings: Settings | None = None) -> Layout | None:
    """The layout of the extracted folder ``folder`` (or of its ``ESC-50-master/`` or
    ``UrbanSound8K/``): the CSV ``settings.metadata`` names if set, else ESC-50's, UrbanSound8K's or
    a folder per class; None when it is none of these.

    Raises
    ------
    DatasetError
        ``settings.metadata`` or ``settings.audio_dir`` is not there, or the CSV is unreadable.
    """
    settings = settings or Settings()
    folder = Path(folder)
    if settings.metadata is not None:
        return _csv_layout(folder, data_dir, settings)
    for candidate in (folder, folder / "ESC-50-master"):
        if (candidate / "meta" / "esc50.csv").is_file() and (candidate / "audio").is_dir():
            return esc50(candidate)
    for candidate in (folder, folder / "UrbanSound8K"):
        csv = candidate / _US8K_CSV
        if csv.is_file() and (candidate / "audio").is_dir():
            columns = {**_US8K_COLUMNS, **({"group": "fsID"} if "fsID" in header(csv) else {})}
            return Layout(URBANSOUND8K, candidate, candidate / "audio", csv, columns)
    if _audio_files(folder):
        return _assigned(Layout(FOLDERS, folder, folder, group_pattern=settings.group_pattern), folder,
                         data_dir, settings)
    return None


def _csv_layout(folder: Path, data_dir: Path, settings: Settings) -> Layout:
    csv = folder / Path(settings.metadata).expanduser()
    audio = folder / Path(settings.audio_dir).expanduser() if settings.audio_dir is not None else folder
    if not csv.is_file():
        raise DatasetError(f"{csv}: metadata file not found (dataset.metadata, relative to the source {folder})")
    if not audio.is_dir():
        raise DatasetError(f"{audio}: audio folder not found (dataset.audio_dir, relative to the source {folder})")
    has = header(csv)
    columns = {"file": settings.file_column or "filename", "label": settings.label_column or "label"}
    fold = settings.fold_column or ("fold" if "fold" in has else None)
    if fold is not None:
        columns["fold"] = fold
    if settings.group_column is not None:
        columns["group"] = settings.group_column
    layout = Layout(CSV, folder, audio, csv, columns, group_pattern=settings.group_pattern)
    return layout if fold is not None else _assigned(layout, csv.with_suffix(""), data_dir, settings)


def _assigned(layout: Layout, named_by: Path, data_dir: Path, settings: Settings) -> Layout:
    """``layout`` with folds to assign: ``n_folds`` and where the split is kept, named by what
    decides it (the clips' folder or CSV, the grouping, the number of folds)."""
    decides = json.dumps({"n_folds": settings.n_folds, "columns": layout.columns, "audio_dir": str(layout.audio_dir),
                          "group_pattern": settings.group_pattern}, sort_keys=True)
    return Layout(layout.kind, layout.root, layout.audio_dir, layout.metadata, layout.columns,
                  paths.folds_csv(data_dir, named_by, decides), settings.n_folds, layout.group_pattern)


def read(layout: Layout, *, assign: bool = True) -> pd.DataFrame:
    """The validated metadata of ``layout`` (columns ``esc50ann.metadata.COLUMNS``).

    Folds a layout lacks come from its kept split if that lists exactly these clips, labels and
    groups; else, with ``assign``, from a new split (kept for the next time, with a warning when
    it replaces one), and without it a ``DatasetError``.

    Raises
    ------
    DatasetError
        Bad metadata (see ``esc50ann.metadata``), a listed file missing, a clip the group pattern
        does not match, a class with too few clips (sources) to split, a fold without some class.
    """
    if layout.kind == ESC50:
        return load_metadata(layout.metadata)
    table = _clips(layout)
    if layout.split is not None:
        table = _split(table, layout, assign)
    _check_every_fold_has_every_class(table, layout)
    return to_metadata(table)


def _clips(layout: Layout) -> pd.DataFrame:
    """``load_table``'s frame of the clips, from the tree or the CSV, groups filled in."""
    if layout.kind == FOLDERS:
        files = _audio_files(layout.root)
        if not files:
            raise DatasetError(f"{layout.root}: no audio files (*{', *'.join(AUDIO_EXTENSIONS)}) in class folders")
        n = len(files)
        table = pd.DataFrame({"filename": files, "category": [f.split("/", 1)[0] for f in files],
                              "fold": np.zeros(n, dtype=np.int64), "target": np.full(n, -1, dtype=np.int64),
                              "group": [""] * n})
    else:
        c = layout.columns
        prefix = (lambda k: f"fold{k}") if layout.kind == URBANSOUND8K else None
        table = load_table(layout.metadata, file=c["file"], label=c["label"], fold=c.get("fold"),
                           target=c.get("target"), group=c.get("group"), prefix=prefix)
        _check_files_exist(table, layout)
    if layout.group_pattern is not None:
        table["group"] = _groups_by_pattern(table, layout)
    return table


def _where(layout: Layout, i: int) -> str:
    """How a message names clip ``i`` of ``layout``'s table: its CSV row, or its file in a tree."""
    if layout.kind == FOLDERS:
        return f"{layout.root}"
    return f"{layout.metadata}: {row_name(i)}"


def _check_files_exist(table: pd.DataFrame, layout: Layout) -> None:
    missing = [i for i, name in enumerate(table["filename"]) if not (layout.audio_dir / name).is_file()]
    if missing:
        i = missing[0]
        more = f" (and {len(missing) - 1} more listed files missing)" if len(missing) > 1 else ""
        raise DatasetError(f"{_where(layout, i)}, column {layout.columns['file']!r}: "
                           f"{layout.audio_dir / table['filename'].iloc[i]}: no such file{more}")


def _groups_by_pattern(table: pd.DataFrame, layout: Layout) -> list[str]:
    pattern = re.compile(layout.group_pattern)
    groups = []
    for i, name in enumerate(table["filename"]):
        m = pattern.search(name)
        group = (m.group(1) if pattern.groups else m.group(0)) if m else None
        if not group:
            where = f"{layout.metadata}: {row_name(i)}: " if layout.kind != FOLDERS else ""
            raise DatasetError(f"{where}{layout.audio_dir / name}: group_pattern {pattern.pattern!r} names no "
                               "group in this file name (every clip needs one)")
        groups.append(group)
    return groups


def _split(table: pd.DataFrame, layout: Layout, assign: bool) -> pd.DataFrame:
    """``table`` with the folds of the kept split, or of a new one (written to ``layout.split``)."""
    kept = _read_split(layout.split)
    if kept is not None and _clip_set(kept) == _clip_set(table):
        # In the split's row order, so that messages naming a row name the split's.
        return table.set_index("filename").loc[kept["filename"]].reset_index().assign(fold=kept["fold"].to_numpy())
    if not assign:
        raise DatasetError(f"{layout.split}: the fold split of {layout.metadata or layout.root} is missing or "
                           "lists other clips: run `esc50ann download` again")
    if kept is not None:
        warnings.warn(f"{layout.metadata or layout.root} lists other clips (or labels, groups) than its split "
                      f"{layout.split}: splitting it anew")
    table = table.assign(fold=_assign_folds(table, layout))
    columns = ["filename", "category", "fold"] + (["group"] if any(table["group"]) else [])
    write_text(layout.split, table[columns].to_csv(index=False))  # atomic
    return table


def _read_split(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    return load_table(path, file="filename", label="category", fold="fold",
                      group="group" if "group" in header(path) else None)


def _clip_set(table: pd.DataFrame) -> set:
    return set(zip(table["filename"], table["category"], table["group"]))


def _sources(table: pd.DataFrame) -> np.ndarray:
    """Each clip's source: its group, or the clip itself without one."""
    return np.where(table["group"].to_numpy() != "", table["group"].to_numpy(), "\0" + table["filename"].to_numpy())


def _assign_folds(table: pd.DataFrame, layout: Layout) -> np.ndarray:
    """Fold 1..n_folds of each clip: scikit-learn's ``StratifiedGroupKFold`` (shuffled, seed
    ``SPLIT_SEED``) over the clips in file-name order, so a reordered CSV splits alike."""
    from sklearn.model_selection import StratifiedGroupKFold

    k, n = layout.n_folds, len(table)
    labels, sources = table["category"].to_numpy(), _sources(table)
    per_class = pd.Series(sources).groupby(labels).nunique()
    for label in sorted(per_class.index):
        if per_class[label] < k:
            i = int(np.flatnonzero(labels == label)[0])
            what = "source(s)" if any(table["group"]) else "clip(s)"
            where = f"{layout.root / label}" if layout.kind == FOLDERS else _where(layout, i)
            raise DatasetError(f"{where}: class {label!r} has {per_class[label]} {what}; a split into {k} folds "
                               f"needs at least {k} per class (add clips, or set dataset.n_folds lower)")
    order = np.argsort(table["filename"].to_numpy(), kind="stable")
    fold = np.zeros(n, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=SPLIT_SEED)
    for f, (_, test) in enumerate(splitter.split(np.zeros(n), labels[order], sources[order])):
        fold[order[test]] = f + 1
    missing = pd.crosstab(fold, labels).eq(0).stack()
    if missing.any():
        f, label = missing[missing].index[0]
        raise DatasetError(f"{layout.metadata or layout.root}: cannot split into {k} folds holding every class "
                           f"with each source in one fold (fold {f} would have no {label!r}): set dataset.n_folds "
                           "lower, or give fewer clips one source")
    return fold


def _check_every_fold_has_every_class(table: pd.DataFrame, layout: Layout) -> None:
    """A fold without some class cannot test it (and cross-validation's figures would mix folds
    of different class sets); refused, naming a row of that class."""
    counts = pd.crosstab(table["fold"], table["category"])
    empty = counts.eq(0).stack()
    if empty.any():
        fold, label = empty[empty].index[0]
        rows = np.flatnonzero(table["category"].to_numpy() == label)
        listed = ", ".join(str(f) for f in sorted(set(table["fold"].to_numpy()[rows].tolist())))
        where = layout.split if layout.split is not None else layout.metadata
        i = int(rows[0])
        raise DatasetError(f"{where}: {row_name(i)}: fold {fold} has no clip of class {label!r} (its clips are in "
                           f"fold(s) {listed}); every fold needs every class")


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
