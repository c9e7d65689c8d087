"""Dataset stage: obtain ESC-50 (download or local copy), unpack it, validate and verify it; or
read another labelled audio folder (``esc50ann.layouts``: UrbanSound8K's layout, class folders).

``prepare`` is the stage; ``Dataset`` is what it returns and what every later stage takes as
input: the validated metadata, the audio paths, the folds and the class names. The data root's
``dataset.json`` records what was verified, so a second ``prepare`` costs one CSV read.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import pandas as pd

from esc50ann import layouts, paths, record
from esc50ann.archive import extract
from esc50ann.download import DEFAULT_SOURCE, check_sha256, fetch
from esc50ann.errors import DatasetError, StorageError, one_line
from esc50ann.fileio import file_lock
from esc50ann.layouts import Layout
from esc50ann.verify import changed_files, describe_problems, verify_clips

SOURCE_ENV = "ESC50ANN_SOURCE"


@dataclass(frozen=True)
class Dataset:
    """ESC-50 (or a subset of it, or another labelled set of clips) as the pipeline sees it.

    Attributes
    ----------
    root : Path
        The dataset folder (for ESC-50, the one holding ``meta/esc50.csv`` and ``audio/``).
    meta : pandas.DataFrame
        Validated metadata, one row per clip, columns ``esc50ann.metadata.COLUMNS``, index 0..n-1.
    manifest : dict[str, str] or None
        filename -> SHA-256 of the audio file, recorded at verification; None if never verified.
    layout : str
        ``"esc50"``, ``"urbansound8k"``, ``"csv"`` or ``"folders"`` (``esc50ann.layouts``).
    audio_dir : Path, optional
        The folder ``meta``'s filenames are relative to; default ``root / "audio"``.
    """

    root: Path
    meta: pd.DataFrame
    manifest: dict[str, str] | None = field(default=None, repr=False)
    layout: str = layouts.ESC50
    audio_dir: Path | None = None

    def __repr__(self):
        subset = " (ESC-10)" if len(self.classes) == 10 and self.meta["esc10"].all() else ""
        kind = "" if self.layout == layouts.ESC50 else f"{self.layout}, "
        return (f"Dataset({len(self)} clips, {len(self.classes)} classes{subset}, folds "
                f"{','.join(map(str, self.folds))}, {kind}{self.root})")

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def audio_root(self) -> Path:
        """The folder the metadata's filenames are relative to."""
        return self.audio_dir if self.audio_dir is not None else self.root / "audio"

    @property
    def audio_paths(self) -> list[Path]:
        """Path of each clip's audio file, in ``meta`` row order."""
        audio = self.audio_root
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
    def classes(self) -> np.ndarray:
        """The class ids (``target``) present, sorted, shape (n_classes,), int64."""
        return np.unique(self.targets)

    @property
    def class_names(self) -> list[str]:
        """Category names in ``classes`` order (for the full ESC-50, index = target)."""
        names = self.names_by_target
        return [names[int(t)] for t in self.classes]

    @property
    def names_by_target(self) -> dict[int, str]:
        """Class id -> category name, sorted by id."""
        pairs = self.meta[["target", "category"]].drop_duplicates().sort_values("target")
        return {int(t): str(c) for t, c in zip(pairs["target"], pairs["category"])}

    def subset(self, name: str) -> "Dataset":
        """``"esc50"``: all clips; ``"esc10"``: the clips whose ``esc10`` column is true (ESC-50 only)."""
        if name == "esc50":
            return self
        if name == "esc10" and self.layout != layouts.ESC50:
            raise DatasetError(f"subset 'esc10' is part of ESC-50 only, and {self.root} is a "
                               f"{layouts.NAMES[self.layout]} dataset: use subset = 'esc50' (every clip)")
        if name == "esc10":
            meta = self.meta[self.meta["esc10"]].reset_index(drop=True)
            return dataclasses.replace(self, meta=meta)
        raise DatasetError(f"unknown subset {name!r}: expected 'esc50' or 'esc10'")

    def select(self, filenames) -> "Dataset":
        """The clips named in ``filenames``, in that order (e.g. those a later stage kept).

        Raises
        ------
        DatasetError
            A filename that is not in the metadata.
        """
        names = [str(n) for n in filenames]
        position = pd.Series(np.arange(len(self.meta)), index=self.meta["filename"].to_numpy())
        unknown = [n for n in names if n not in position.index]
        if unknown:
            raise DatasetError(f"cannot select {unknown[0]!r}: not in the metadata of {self.root}"
                               + (f" (and {len(unknown) - 1} more unknown)" if len(unknown) > 1 else ""))
        meta = self.meta.iloc[position[names].to_numpy()].reset_index(drop=True)
        return dataclasses.replace(self, meta=meta)

    def verify(self, n_jobs: int = -1, progress: bool = True) -> list[tuple[str, str]]:
        """Re-check every clip's format and SHA-256 against ``self.manifest``.

        Returns
        -------
        list of (filename, reason)
            Every bad file; empty when all are fine. Without a manifest only the format
            (existence, readability; for ESC-50 also sample rate, channels, length) is checked.
        """
        _, problems = verify_clips(self.audio_root, self.meta["filename"], expected=self.manifest,
                                   strict=self.layout == layouts.ESC50, n_jobs=n_jobs, progress=progress)
        return problems

    def summary(self) -> dict:
        """JSON-serialisable overview: sizes, folds (keys of ``clips_per_fold`` are strings)."""
        per_fold = self.meta["fold"].value_counts().sort_index()
        return {
            "n_clips": len(self.meta),
            "n_classes": int(self.meta["target"].nunique()),
            "folds": self.folds,
            "clips_per_fold": {str(int(f)): int(n) for f, n in per_fold.items()},
            "n_esc10": int(self.meta["esc10"].sum()),
            "root": str(self.root),
            "layout": self.layout,
            "verified": self.manifest is not None,
        }


def prepare(source: str | Path | None = None, data_dir: Path | str | None = None, *,
            sha256: str | None = None, settings: layouts.Settings | None = None, n_jobs: int = -1,
            progress: bool = True) -> Dataset:
    """The dataset stage: obtain, unpack, validate and verify ESC-50; record it in ``dataset.json``.

    Parameters
    ----------
    source : str or Path, optional
        An http(s) URL (downloaded into ``data_dir/downloads/``), a ``file://`` URL or a local
        ``.zip`` (extracted straight from where it is), or an extracted folder (used in place):
        ESC-50's (``meta/esc50.csv`` and ``audio/``), UrbanSound8K's, one folder of audio files
        per class, or any folder with the CSV ``settings.metadata`` names (``esc50ann.layouts``). Default: ``$ESC50ANN_SOURCE``,
        else whatever dataset ``data_dir`` already holds, else ``DEFAULT_SOURCE``.
    data_dir : Path or str, optional
        Data root (``esc50ann.paths.data_dir``).
    sha256 : str, optional
        Expected SHA-256 of a downloaded or local archive.
    settings : esc50ann.layouts.Settings, optional
        How to read a folder other than ESC-50 (``[dataset] metadata``, its columns, ``n_folds``,
        the grouping); a ``PipelineConfig.dataset`` is one. None: the defaults, and a recorded
        dataset is taken as it was recorded.
    n_jobs : int
        joblib workers for verification.
    progress : bool
        Show progress bars.

    Returns
    -------
    Dataset
        With ``manifest`` set. If ``dataset.json`` already records this source as verified
        and its folder still exists, that record is returned without re-hashing anything.

    Notes
    -----
    Calls on one ``data_dir`` are serialised by a lock file (``paths.dataset_lock``): a
    second call waits, then finds the dataset the first one recorded. The previous record
    is replaced only once the new dataset is validated, so after any failure ``load``
    still opens the previous dataset.

    Raises
    ------
    DownloadError
        The archive could not be fetched.
    DatasetError
        Bad archive, bad metadata, or bad audio files (all of them counted, the first few
        named); an archive extracted by this call is removed again in that case.
    """
    unspecified = source in (None, "") and not os.environ.get(SOURCE_ENV)
    source = resolve_source(source)
    data_dir = paths.data_dir(data_dir)
    # With no source named anywhere, a dataset already verified here (say the offline dev
    # copy) is what the caller means, not a 600 MB download of the default.
    wanted = None if unspecified else source
    done = _recorded(data_dir, wanted, sha256, settings)
    if done is not None:
        return done
    if unspecified:  # a recorded dataset whose files changed: repair it from where it came from
        with contextlib.suppress(DatasetError):
            source = (record.read(data_dir) or {}).get("source") or source
    with file_lock(paths.dataset_lock(data_dir)):  # a second prepare() waits here, then finds the record
        # Another prepare() may have finished this while we waited for the lock.
        done = _recorded(data_dir, wanted, sha256, settings)
        if done is not None:
            return done
        # The previous record stays until the new dataset is validated: if anything below
        # fails, the previous dataset is still there and still loadable.
        local = _obtain(source, data_dir, sha256=sha256, progress=progress)
        if local.is_dir():
            layout = _dataset_folder(local, source, data_dir, settings)
            dataset = _validate(layout, n_jobs=n_jobs, progress=progress)
        else:
            if settings is not None and settings.metadata is not None:
                raise DatasetError(f"source {source}: an archive is read as ESC-50; dataset.metadata "
                                   f"({settings.metadata}) needs an extracted folder as the source")
            dataset = _extract_and_validate(local, data_dir, downloaded=_is_url(source),
                                            n_jobs=n_jobs, progress=progress)
            layout = layouts.esc50(dataset.root)
        record.write(data_dir, source=source, root=dataset.root, manifest=dataset.manifest,
                     archive_sha256=sha256, layout=layout)  # atomic: replaces the previous record
    return dataset


def load(data_dir: Path | str | None = None, *, check_files: bool = True) -> Dataset:
    """Open the dataset that ``prepare`` recorded in ``data_dir/dataset.json``.

    With ``check_files`` (the default) every audio file's size and modification time must still
    be those recorded at verification (cheap: no hashing); ``Dataset.verify`` re-hashes them.

    Raises
    ------
    DatasetError
        No record, a damaged record, or its dataset folder is gone.
    """
    data_dir = paths.data_dir(data_dir)
    rec = record.read(data_dir)
    if rec is None:
        raise DatasetError(f"no dataset in {data_dir}: run `esc50ann download` first")
    layout = record.layout(rec)
    if not _present(layout):
        raise DatasetError(f"{paths.record_path(data_dir)}: dataset folder {layout.root} is gone: "
                           "run `esc50ann download` again")
    changed = changed_files(layout.audio_dir, rec.get("stats")) if check_files else []
    if changed:
        raise DatasetError(f"{layout.audio_dir / changed[0]}: changed since verification ({len(changed)} file(s)); "
                           "run `esc50ann download` to repair it from the kept archive")
    meta = layouts.read(layout, assign=False)
    if check_files and set(meta["filename"]) != set(rec["files"]):
        raise DatasetError(f"{layout.metadata or layout.root}: lists other clips than were verified: "
                           "run `esc50ann download` again")
    return _dataset(layout, meta, dict(rec["files"]))


def _present(layout: Layout) -> bool:
    """The layout's folders and metadata file are still there."""
    return layout.audio_dir.is_dir() and (layout.metadata is None or layout.metadata.is_file())


def resolve_source(source: str | Path | None = None) -> str:
    """The source to use, normalised: URLs as given, local paths (and file:// URLs) absolute."""
    source = source if source not in (None, "") else (os.environ.get(SOURCE_ENV) or DEFAULT_SOURCE)
    text = str(source)
    try:
        scheme = urlparse(text).scheme.lower()
    except ValueError as e:
        raise DatasetError(f"source {text}: malformed URL ({one_line(e)})") from None
    if scheme in ("http", "https"):
        return text
    if "://" in text and scheme != "file":  # ftp://, s3://, ...: not a local path
        raise DatasetError(f"source {text}: unsupported URL scheme {scheme!r} (use http, https, file or a local path)")
    if scheme == "file":
        text = url2pathname(urlparse(text).path)
    return str(Path(text).expanduser().resolve())


def _obtain(source: str, data_dir: Path, *, sha256: str | None, progress: bool) -> Path:
    """A local file or folder for ``source``: downloads URLs, uses local paths in place."""
    if _is_url(source):
        return fetch(source, paths.download_path(source, data_dir), sha256=sha256, progress=progress)
    path = Path(source)
    if not path.exists():
        raise DatasetError(f"source {path}: no such file or folder")
    if path.is_file():
        check_sha256(path, sha256)
    elif sha256:
        raise DatasetError(f"source {path}: a folder has no archive checksum to check (--sha256 is for archives)")
    return path


def _is_url(source: str) -> bool:
    return urlparse(source).scheme.lower() in ("http", "https")


def _extract_and_validate(archive: Path, data_dir: Path, *, downloaded: bool, n_jobs: int,
                          progress: bool) -> Dataset:
    """Extract ``archive`` into ``data_dir/ESC-50-master``, validating it before it replaces
    an older folder, so a bad archive leaves the previous dataset (and its record) untouched.
    """
    final = paths.extracted_dataset(data_dir)
    checked = {}

    def check(folder: Path) -> None:
        try:
            checked["dataset"] = _validate(folder, n_jobs=n_jobs, progress=progress)
        except DatasetError as e:
            # The temporary folder is about to vanish: name the archive instead.
            kept = "; kept the previous dataset" if final.exists() else ""
            raise DatasetError(str(e).replace(str(folder), str(archive)) + kept) from None
        # ``final`` is replaced next: a record describing it would then describe other files.
        record.forget(data_dir, final)

    root = _extract(archive, data_dir, downloaded=downloaded, progress=progress, check=check)
    return dataclasses.replace(checked["dataset"], root=root)


def _extract(archive: Path, data_dir: Path, *, downloaded: bool, progress: bool, check=None) -> Path:
    """``extract``, dropping a downloaded archive that turns out bad so a rerun fetches it anew."""
    try:
        return extract(archive, data_dir, progress=progress, check=check)
    except StorageError:  # the disk's fault, not the archive's: keep the download
        raise
    except DatasetError as e:
        if not downloaded:
            raise
        archive.unlink(missing_ok=True)
        raise DatasetError(f"{e} (removed the download)") from None


def _dataset_folder(folder: Path, source: str, data_dir: Path, settings: layouts.Settings | None) -> Layout:
    """The layout of ``folder`` (``layouts.detect``)."""
    layout = layouts.detect(folder, data_dir, settings)
    if layout is None:
        raise DatasetError(f"source {source}: folder has no meta/esc50.csv and audio/ (ESC-50), no "
                           f"metadata/UrbanSound8K.csv and audio/ (UrbanSound8K) and no class folders of "
                           f"audio files (<label>/*{', *'.join(layouts.AUDIO_EXTENSIONS)})")
    return layout


def _expected_layout(source: str, data_dir: Path, settings: layouts.Settings) -> dict | None:
    """``Layout.to_record`` of how ``prepare`` would read ``source`` with ``settings`` now."""
    if not _is_url(source) and Path(source).is_dir():
        layout = layouts.detect(Path(source), data_dir, settings)
        return None if layout is None else layout.to_record()
    if settings.metadata is not None:
        return None  # refused by prepare: an archive is ESC-50
    return layouts.esc50(paths.extracted_dataset(data_dir)).to_record()


def _validate(layout: Layout | Path, *, n_jobs: int, progress: bool) -> Dataset:
    """Load the metadata and verify every clip; raise if any is bad. Only ESC-50's clips must be
    of its exact format: other layouts' clips are resampled and cut or padded by the features."""
    layout = layout if isinstance(layout, Layout) else layouts.esc50(layout)
    meta = layouts.read(layout)
    manifest, problems = verify_clips(layout.audio_dir, meta["filename"], strict=layout.kind == layouts.ESC50,
                                      n_jobs=n_jobs, progress=progress)
    if problems:
        raise DatasetError(describe_problems(problems, len(meta), layout.root))
    return _dataset(layout, meta, manifest)


def _dataset(layout: Layout, meta: pd.DataFrame, manifest: dict | None) -> Dataset:
    if layout.kind == layouts.ESC50:
        return Dataset(layout.root, meta, manifest)
    return Dataset(layout.root, meta, manifest, layout=layout.kind, audio_dir=layout.audio_dir)


def _recorded(data_dir: Path, source: str | None, sha256: str | None = None,
              settings: layouts.Settings | None = None) -> Dataset | None:
    """The recorded dataset if it came from ``source`` (any, if None), was checked against the
    checksum ``sha256`` (when one is given: a checksum given is always checked), is read the way
    ``settings`` say (when given) and still matches its metadata; else None.

    Costs one small JSON and one CSV read (and a listing of a tree): no hashing, no audio decoding.
    """
    try:
        rec = record.read(data_dir)
    except DatasetError:
        return None  # a damaged record is simply redone
    if rec is None or (source is not None and rec["source"] != source):
        return None
    if sha256 and (rec.get("archive_sha256") or "") != sha256.strip().lower():
        return None
    layout = record.layout(rec)
    if not _present(layout):
        return None
    try:
        if settings is not None and _expected_layout(rec["source"], data_dir, settings) != layout.to_record():
            return None
        meta = layouts.read(layout, assign=False)
    except DatasetError:
        return None
    if set(meta["filename"]) != set(rec["files"]) or changed_files(layout.audio_dir, rec.get("stats")):
        return None
    return _dataset(layout, meta, dict(rec["files"]))
