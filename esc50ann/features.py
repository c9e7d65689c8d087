"""Feature stage: a dataset's clips -> a (n_clips, n_features) float32 matrix, cached on disk.

``extract`` runs the recipe (``esc50ann.recipe``: what one clip's vector is) over a ``Dataset``
in parallel chunks and stores the result in ``esc50ann.cache`` under a key derived from the
config, the library versions and the audio files' identity. Its ``FeatureSet`` carries the
dataset its rows belong to, so no later stage has to line rows and clips up again.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from esc50ann import cache, provenance
from esc50ann import progress as progress_mod
from esc50ann.dataset import Dataset
from esc50ann.errors import FeatureError
from esc50ann.fileio import atomic_path
from esc50ann.params import Document, InstanceOf, ListOf
from esc50ann.recipe import FEATURE_VERSION, FeatureConfig, feature_names, feature_shape, files_features, mel_filterbank
from esc50ann.verify import SAMPLE_RATE, fingerprint
from esc50ann.parallel import Runner, physical_memory

# Clips per parallel task and per resumable chunk. Fixed (not derived from n_jobs) so a
# rerun with another n_jobs still reuses the chunks a killed run finished.
CHUNK_SIZE = 32
# The libraries whose code produces the feature numbers: their versions are part of the cache key.
NUMERIC_LIBRARIES = ("librosa", "numpy", "scipy", "soundfile")


# --------------------------------------------------------------------------- the stage

@dataclass
class FeatureSet:
    """Output of ``extract``: one row of features per clip, and the dataset those rows belong to.

    Attributes
    ----------
    X : np.ndarray, shape (n_clips, n_features), float32 (read-only memory map when cached)
    dataset : Dataset
        The clips of the rows, in row order: the dataset given to ``extract`` minus ``skipped``.
        Every later stage takes its labels, folds and names from here.
    skipped : list of (filename, reason)
        Clips left out (``on_error="skip"``).
    key : str
        The cache entry.
    from_cache : bool
    config : FeatureConfig
    X_aug : np.ndarray of shape (n_clips, n_copies, n_features), or None
        The features of each clip's augmented copies (``config.pitch_shifts``, in that order);
        for training rows only -- cross-validation never shows a test clip's copy.
    """

    X: np.ndarray = field(repr=False)
    dataset: Dataset = field(repr=False)
    skipped: list[tuple[str, str]]
    key: str
    from_cache: bool
    config: FeatureConfig = field(repr=False)
    X_aug: np.ndarray | None = field(default=None, repr=False)

    def __repr__(self):
        copies = f", {self.X_aug.shape[1]} augmented copies each" if self.X_aug is not None else ""
        return (f"FeatureSet({self.X.shape[0]} clips x {self.X.shape[1]} features{copies}, "
                f"{self.config.representation}, key {self.key}, "
                f"{'from the cache' if self.from_cache else 'computed'}"
                + (f", {len(self.skipped)} skipped" if self.skipped else "") + ")")

    @property
    def meta(self) -> pd.DataFrame:
        """The metadata of the rows' clips, in row order (index 0..n-1)."""
        return self.dataset.meta

    @property
    def filenames(self) -> list[str]:
        """The clip of each row."""
        return [str(n) for n in self.dataset.meta["filename"]]

    @property
    def y(self) -> np.ndarray:
        """Class id (``target``) of every row, shape (n_clips,)."""
        return self.dataset.targets

    @property
    def feature_names(self) -> list[str]:
        """A name per column (``esc50ann.recipe.feature_names``)."""
        return feature_names(self.config)

    def to_frame(self) -> pd.DataFrame:
        """The features as a DataFrame indexed by filename, joined with the metadata columns."""
        frame = pd.DataFrame(np.asarray(self.X), columns=self.feature_names, index=pd.Index(self.filenames, name="filename"))
        return self.meta.set_index("filename").join(frame)

    def write(self, path) -> Path:
        """Write the feature matrix, one row per clip, to ``path`` (``.csv``, or ``.parquet`` with
        pyarrow installed), atomically: columns ``filename``, ``category``, ``fold``, then the
        features (``feature_names``)."""
        path = Path(path)
        check_table_path(path)
        frame = pd.DataFrame(np.asarray(self.X), columns=self.feature_names)
        frame.insert(0, "filename", self.filenames)
        frame.insert(1, "category", self.meta["category"].to_numpy())
        frame.insert(2, "fold", self.meta["fold"].to_numpy())
        with atomic_path(path) as tmp:
            if path.suffix.lower() == ".parquet":
                frame.to_parquet(tmp, index=False)
            else:
                frame.to_csv(tmp, index=False)
        return path


TABLE_SUFFIXES = (".csv", ".parquet")


def check_table_path(path) -> None:
    """Refuse a ``FeatureSet.write`` destination it cannot write, before any work is done.

    Raises
    ------
    FeatureError
        Neither ``.csv`` nor ``.parquet``, or ``.parquet`` without pyarrow.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise FeatureError(f"{path}: expected a .csv or .parquet file name")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise FeatureError(f"{path}: writing .parquet needs pyarrow (pip install 'esc50ann[parquet]')") from None


def cache_key(dataset: Dataset, config: FeatureConfig) -> str:
    """Key of the features of ``dataset`` under ``config``.

    Covers the config (except ``on_error``, which does not change any number), the versions
    of the libraries that compute the numbers, ``FEATURE_VERSION`` and each clip in row order:
    filename and ``verify.fingerprint`` (size, mtime) -- so a file replaced in place gets a new
    key -- plus its SHA-256 from ``dataset.manifest`` when the dataset was verified.
    """
    settings = {k: v for k, v in config.to_dict().items() if k != "on_error"}
    manifest = dataset.manifest or {}
    clips = [[name, fingerprint(path), manifest.get(name)]
             for name, path in zip(dataset.meta["filename"], dataset.audio_paths)]
    versions = {k: v for k, v in provenance.versions(*NUMERIC_LIBRARIES).items() if k in NUMERIC_LIBRARIES}
    return cache.make_key({"feature_version": FEATURE_VERSION, "config": settings, "versions": versions,
                           "clips": clips})


def _bad(name, reason):
    return FeatureError(reason if name in reason else f"{name}: {reason}")


def extract(dataset: Dataset, config: FeatureConfig, cache_dir: Path, *, n_jobs: int = -1,
            runner: Runner | None = None, progress: bool = True) -> FeatureSet:
    """Features of every clip of ``dataset``, from the cache or computed and cached.

    A cache hit memory-maps the stored matrix without touching any audio. A miss computes
    chunks of ``CHUNK_SIZE`` clips in parallel (``n_jobs`` local processes, -1 = all cores, or
    on ``runner``'s workers when given: a Dask cluster), saves each finished chunk (a killed run
    resumes from them) and publishes the entry atomically. Concurrent runs of the same key wait
    for each other (file lock).

    Raises
    ------
    FeatureError
        With ``on_error="raise"``, the first clip that cannot be featurised, by name.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(dataset, config)
    entry = cache.load(cache_dir, key, discard_damaged=False)
    computed = False
    if entry is None:
        with cache.locked(cache_dir, key):
            entry = cache.load(cache_dir, key)  # maybe finished while we waited; warns if damaged
            if entry is None:
                _check_size(dataset, config)
                entry = _compute(dataset, config, cache_dir, key, runner or Runner(n_jobs), progress)
                computed = True
    skipped = [(str(a), str(b)) for a, b in entry.manifest["skipped"]]
    if skipped and config.on_error == "raise":
        raise _bad(*skipped[0])
    rows = dataset.select(entry.manifest["filenames"]) if skipped else dataset
    X, X_aug = _split_copies(entry.array, 1 + len(config.pitch_shifts))
    return FeatureSet(X=X, dataset=rows, skipped=skipped, key=key, from_cache=not computed, config=config,
                      X_aug=X_aug)


def _split_copies(stored: np.ndarray, n_copies: int):
    """The stored rows (clip, then its augmented copies, side by side) as views ``X`` (n, d) and
    ``X_aug`` (n, n_copies - 1, d), or None without copies."""
    if n_copies == 1:
        return stored, None
    n, width = stored.shape
    if width % n_copies:
        raise FeatureError(f"feature cache: rows of {width} values cannot hold {n_copies} copies")
    d = width // n_copies
    return stored[:, :d], stored[:, d:].reshape(n, n_copies - 1, d)


# The info stored with each finished chunk of an entry being built: its clips and their failures.
CHUNK_INFO = Document({"names": [ListOf(InstanceOf(str))],
                       "failures": [ListOf(ListOf(InstanceOf(str), min_len=2, max_len=2))]})


def _chunk_fits(array, info, names) -> bool:
    """Whether a chunk a previous run left is of the right shape for the clips ``names``."""
    return (CHUNK_INFO.accepts(info) and info["names"] == names and array.ndim == 2
            and array.dtype == np.float32 and len(array) == len(names) - len({f[0] for f in info["failures"]}))


def _check_size(dataset, config: FeatureConfig) -> None:
    """Refuse up front a feature matrix larger than this machine's memory: training reads it whole
    (a flat spectrogram of long clips at a fine hop can ask for terabytes)."""
    width = feature_shape(config, config.sample_rate or SAMPLE_RATE)[0] * (1 + len(config.pitch_shifts))
    need, memory = len(dataset) * width * 4, physical_memory()
    if memory is not None and need > memory:
        raise FeatureError(f"features of {len(dataset)} clips x {width:,} values are {need / 2**30:,.1f} GiB, more "
                           f"than this machine's {memory / 2**30:,.1f} GiB of memory: choose representation = "
                           "\"stats\", a larger time_pool or hop_length, fewer n_mels or a shorter duration")


def _compute(dataset, config, cache_dir, key, runner: Runner, progress) -> cache.Entry:
    names = [str(n) for n in dataset.meta["filename"]]
    paths = [str(p) for p in dataset.audio_paths]
    n = len(names)
    plan = [(a, min(a + CHUNK_SIZE, n)) for a in range(0, n, CHUNK_SIZE)]
    chunk_name = lambda a, b: f"{a:07d}-{b:07d}"  # noqa: E731
    done = {}
    for name, (array, info) in cache.load_chunks(cache_dir, key).items():
        ab = tuple(int(x) for x in name.split("-")) if re.fullmatch(r"\d+-\d+", name) else None
        if ab in plan and _chunk_fits(array, info, names[ab[0]:ab[1]]):  # else computed again
            done[ab] = (array, [tuple(f) for f in info["failures"]])
    if config.on_error == "raise":
        for a, b in plan:
            if (a, b) in done and done[(a, b)][1]:
                raise _bad(*done[(a, b)][1][0])

    todo = [(a, b) for a, b in plan if (a, b) not in done]
    filterbanks = _filterbanks(config, paths[todo[0][0]]) if todo else {}
    tasks = [(paths[a:b], names[a:b], config, filterbanks) for a, b in todo]
    resumed = sum(b - a for a, b in done)
    with progress_mod.bar(total=n, initial=resumed, enabled=progress, unit="clip", desc="features") as bar:
        for position, (array, failures) in runner.map(files_features, tasks, ordered=True):
            a, b = todo[position]
            cache.save_chunk(cache_dir, key, chunk_name(a, b), array,
                             {"names": names[a:b], "failures": [list(f) for f in failures]})
            done[(a, b)] = (array, failures)
            bar.update(b - a)
            if failures and config.on_error == "raise":
                raise _bad(*failures[0])

    blocks = [done[ab] for ab in plan]
    failed = {f[0] for _, fs in blocks for f in fs}
    skipped = [f for _, fs in blocks for f in fs]
    kept = [nm for nm in names if nm not in failed]
    if skipped and not kept:
        raise FeatureError(f"every one of the {n} clips was skipped; the first: {_bad(*skipped[0])}")
    widths = {arr.shape[1] for arr, _ in blocks if len(arr)}
    if len(widths) > 1:
        raise FeatureError(f"cache entry {key}: clips gave different feature sizes {sorted(widths)}")
    n_cols = widths.pop() if widths else feature_shape(config)[0] * (1 + len(config.pitch_shifts))
    info = {"config": config.to_dict(),
            "versions": {**provenance.versions(*NUMERIC_LIBRARIES), "feature_version": FEATURE_VERSION}}
    return cache.commit(cache_dir, key, (arr for arr, _ in blocks), n_cols=n_cols,
                        filenames=kept, skipped=skipped, info=info)


def _filterbanks(config: FeatureConfig, first_path: str) -> dict:
    """The mel filterbank at the rate the clips will have, built once here and sent to the
    workers with their tasks, so a worker need not import librosa.core to build it."""
    try:
        sr = config.sample_rate or sf.info(first_path).samplerate
    except Exception:  # unreadable first clip: its own task reports it
        return {}
    return {(sr, bool(config.pitch_shifts)): mel_filterbank(config, sr, augmented=True)}
