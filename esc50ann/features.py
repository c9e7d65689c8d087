"""Feature stage: ESC-50 clips -> a (n_clips, n_features) float32 matrix, cached on disk.

Per clip (``clip_features``, built from ``esc50ann.audio``): read, mix to mono, cut/zero-pad to
``duration``, log-mel spectrogram (optionally + delta and MFCC channels), then either flattened
(``"flat"``) or summarised per band over time (``"stats"``). ``extract`` runs that over a
``Dataset`` in parallel chunks and stores the result in ``esc50ann.cache`` under a key derived
from the config, the library versions and the audio files' identity.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy
import soundfile as sf

from esc50ann import audio, cache
from esc50ann.errors import ConfigError, FeatureError, one_line
from esc50ann.params import Boolean, Integral, Interval, ListOf, Options, Real, validate
from esc50ann import progress as progress_mod
from esc50ann.worker import exit_with_parent

if TYPE_CHECKING:  # importing dataset pulls in pandas; workers do not need it
    from esc50ann.dataset import Dataset

# Bump when the computation changes the numbers: it is part of the cache key.
FEATURE_VERSION = 1
# Clips per parallel task and per resumable chunk. Fixed (not derived from n_jobs) so a
# rerun with another n_jobs still reuses the chunks a killed run finished.
CHUNK_SIZE = 32


# --------------------------------------------------------------------------- config

@dataclass(frozen=True)
class FeatureConfig:
    """Everything that determines the feature numbers (plus ``on_error``).

    sample_rate : int or None
        None keeps each file's native rate; otherwise resample (``soxr_hq``).
    duration : float
        Seconds; every clip is cut or zero-padded to this before analysis.
    n_fft, hop_length, n_mels, fmin, fmax, top_db
        Log-mel parameters (``top_db=None``: no floor).
    representation : {"stats", "flat"}
        ``"stats"``: per band over time, see ``audio.band_stats``; ``"flat"``: the whole
        spectrogram, average-pooled over time by ``time_pool`` frames.
    deltas : bool
        Add the delta (first time derivative) log-mel as a second channel.
    n_mfcc : int
        Add this many MFCCs (computed from the log-mel) as a channel; 0 = none.
    modulation : tuple of float
        Add the modulation spectra (``audio.modulation_spectrum``) of the log-mel and, with
        ``n_mfcc``, of the MFCCs: per band (coefficient), the spectrum of its course over time
        averaged in bins starting at these frequencies (Hz); () = none.
    pitch_shifts : tuple of float
        Augmentation: also compute every clip's features pitch-shifted by each of these many
        semitones (``audio.shifted_mel_basis``; same duration). Stored beside the clip's own
        features (``FeatureSet.X_aug``); cross-validation trains on the copies of training clips
        only and never shows a test clip's copy. () = none.
    on_error : {"raise", "skip"}
        A bad clip stops the stage, or is left out and listed in ``FeatureSet.skipped``.
    """

    sample_rate: int | None = None
    duration: float = 5.0
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    top_db: float | None = 80.0
    representation: str = "stats"
    time_pool: int = 1
    deltas: bool = False
    n_mfcc: int = 0
    modulation: tuple[float, ...] = ()
    pitch_shifts: tuple[float, ...] = ()
    on_error: str = "raise"

    # Upper bounds keep a crafted model file or pipeline from asking for absurd work or memory.
    _constraints = {
        "sample_rate": [Interval(Integral, 1, 384_000), None],
        "duration": [Interval(Real, 0, 600, closed="right")],
        "n_fft": [Interval(Integral, 2, 65_536)],
        "hop_length": [Interval(Integral, 1, 65_536)],
        "n_mels": [Interval(Integral, 1, 1024)],
        "fmin": [Interval(Real, 0)],
        "fmax": [Interval(Real, 0, closed="neither"), None],
        "top_db": [Interval(Real, 0), None],
        "representation": [Options("stats", "flat")],
        "time_pool": [Interval(Integral, 1, 100_000)],
        "deltas": [Boolean()],
        "n_mfcc": [Interval(Integral, 0)],
        "modulation": [ListOf(Interval(Real, 0), max_len=64)],
        "pitch_shifts": [ListOf(Interval(Real, -24, 24), max_len=16)],
        "on_error": [Options("raise", "skip")],
    }

    def __post_init__(self):
        validate(asdict(self), self._constraints)
        if self.fmax is not None and self.fmax <= self.fmin:
            raise ConfigError(f"fmax must be greater than fmin ({self.fmin}), got {self.fmax}")
        if self.representation == "stats" and self.time_pool != 1:
            raise ConfigError("time_pool applies to representation 'flat' only")
        if self.n_mfcc > self.n_mels:
            raise ConfigError(f"n_mfcc ({self.n_mfcc}) cannot exceed n_mels ({self.n_mels})")
        if any(b <= a for a, b in zip(self.modulation, self.modulation[1:])):
            raise ConfigError(f"modulation must list increasing bin edges in Hz (got {list(self.modulation)})")
        if 0 in self.pitch_shifts or len(set(self.pitch_shifts)) < len(self.pitch_shifts):
            raise ConfigError(f"pitch_shifts must be distinct non-zero semitones (got {list(self.pitch_shifts)})")
        object.__setattr__(self, "modulation", tuple(float(v) for v in self.modulation))
        object.__setattr__(self, "pitch_shifts", tuple(float(v) for v in self.pitch_shifts))
        # Canonical types, so 5 and 5.0 give the same cache key.
        for name, kind in (("duration", float), ("fmin", float), ("fmax", float), ("top_db", float),
                           ("sample_rate", int), ("n_fft", int), ("hop_length", int), ("n_mels", int),
                           ("time_pool", int), ("n_mfcc", int), ("deltas", bool)):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, kind(value))

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of every field."""
        return asdict(self)


def clip_features(path, config: FeatureConfig, *, augmented: bool = False) -> np.ndarray:
    """The feature vector of one audio file, shape (n_features,), float32 (see ``signal_features``
    for ``augmented``)."""
    y, sr = audio.load_clip(path, config.duration, config.sample_rate)
    return signal_features(y, sr, config, augmented=augmented)


def signal_features(y: np.ndarray, sr: int, config: FeatureConfig, *, augmented: bool = False) -> np.ndarray:
    """The feature vector of one clip's samples ``y`` (shape (n_samples,), ``config.duration``
    seconds at ``sr``), shape (n_features,), float32.

    With ``augmented``, the vectors of the clip and of each of its ``config.pitch_shifts`` copies
    one after the other: shape ((1 + len(pitch_shifts)) * n_features,).
    """
    mel = dict(n_fft=config.n_fft, hop_length=config.hop_length, n_mels=config.n_mels, fmin=config.fmin,
               fmax=config.fmax, top_db=config.top_db)
    if not (augmented and config.pitch_shifts):
        return _describe(audio.log_mel(y, sr, **mel), sr, config)
    copies = audio.log_mel(y, sr, semitones=(0.0, *config.pitch_shifts), **mel)
    return np.concatenate([_describe(S_db, sr, config) for S_db in copies])


def _describe(S_db: np.ndarray, sr: int, config: FeatureConfig) -> np.ndarray:
    """One log-mel (n_mels, T) -> the clip's feature vector (n_features,)."""
    chans = audio.channels(S_db, deltas=config.deltas, n_mfcc=config.n_mfcc)
    if config.representation == "flat":
        vector = audio.flatten(chans, config.time_pool)
    else:
        vector = audio.band_stats(chans)
    if not config.modulation:
        return vector
    # Of the log-mel and the MFCCs (measured: +2 points each on the development copy); the
    # delta channel's modulation added nothing there.
    sources = [S_db] + ([chans[-1]] if config.n_mfcc else [])
    mods = [audio.modulation_spectrum(c, frame_rate=sr / config.hop_length, edges=config.modulation).reshape(-1)
            for c in sources]
    return np.concatenate([vector, *mods])


def feature_shape(config: FeatureConfig, sample_rate: int = 44100) -> tuple[int]:
    """(n_features,) for clips at ``sample_rate`` (ignored when the config fixes the rate)."""
    sr = config.sample_rate or sample_rate
    n_frames = 1 + int(round(config.duration * sr)) // config.hop_length
    bands = config.n_mels * (2 if config.deltas else 1) + config.n_mfcc
    if config.representation == "flat":
        n = bands * math.ceil(n_frames / config.time_pool)
    else:
        n = len(audio.STATS) * bands
    return (n + (config.n_mels + config.n_mfcc) * len(config.modulation),)


# --------------------------------------------------------------------------- the stage

@dataclass
class FeatureSet:
    """Output of ``extract``: one row of features per clip, with its labels and names.

    Attributes
    ----------
    X : np.ndarray, shape (n_clips, n_features), float32 (read-only memory map when cached)
    X_aug : np.ndarray of shape (n_clips, n_copies, n_features), or None
        The features of each clip's augmented copies (``config.pitch_shifts``, in that order);
        for training rows only -- cross-validation never shows a test clip's copy.
    filenames : list of str
        Row order = ``dataset.meta`` order minus ``skipped``.
    skipped : list of (filename, reason)
        Clips left out (``on_error="skip"``).
    key : str
        The cache entry.
    from_cache : bool
    config : FeatureConfig
    meta : pandas.DataFrame
        The dataset's metadata rows of ``filenames``, in row order (index 0..n-1).
    """

    X: np.ndarray = field(repr=False)
    filenames: list[str] = field(repr=False)
    skipped: list[tuple[str, str]]
    key: str
    from_cache: bool
    config: FeatureConfig = field(repr=False)
    meta: pd.DataFrame = field(default=None, repr=False)
    X_aug: np.ndarray | None = field(default=None, repr=False)

    def __repr__(self):
        copies = f", {self.X_aug.shape[1]} augmented copies each" if self.X_aug is not None else ""
        return (f"FeatureSet({self.X.shape[0]} clips x {self.X.shape[1]} features{copies}, "
                f"{self.config.representation}, key {self.key}, "
                f"{'from the cache' if self.from_cache else 'computed'}"
                + (f", {len(self.skipped)} skipped" if self.skipped else "") + ")")

    @property
    def y(self) -> np.ndarray:
        """Class id (``target``) of every row, shape (n_clips,)."""
        return self.meta["target"].to_numpy()

    @property
    def feature_names(self) -> list[str]:
        """A name per column: ``logmel_mean_0`` ... ``mfcc_std_diff_39`` (``stats``) or
        ``logmel_3_t12`` (band 3, time step 12; ``flat``)."""
        return feature_names(self.config, self.X.shape[1])

    def to_frame(self) -> pd.DataFrame:
        """The features as a DataFrame indexed by filename, joined with the metadata columns."""
        frame = pd.DataFrame(np.asarray(self.X), columns=self.feature_names, index=pd.Index(self.filenames, name="filename"))
        return self.meta.set_index("filename").join(frame)


def feature_names(config: FeatureConfig, n_features: int) -> list[str]:
    """Column names of a feature matrix of ``config`` with ``n_features`` columns (modulation bins
    are named by their lower edge: ``logmel_mod4hz_17`` is band 17 from 4 Hz)."""
    channels = [("logmel", config.n_mels)] + ([("delta", config.n_mels)] if config.deltas else []) + (
        [("mfcc", config.n_mfcc)] if config.n_mfcc else [])
    modulation = [f"{name}_mod{edge:g}hz_{band}" for name, bands in channels if name != "delta"
                  for band in range(bands) for edge in config.modulation]
    if config.representation == "stats":
        return [f"{name}_{stat}_{band}" for name, bands in channels for stat in audio.STATS
                for band in range(bands)] + modulation
    steps = (n_features - len(modulation)) // sum(bands for _, bands in channels)
    return [f"{name}_{band}_t{t}" for name, bands in channels for band in range(bands)
            for t in range(steps)] + modulation


def _librosa_version() -> str:
    import librosa  # lazy loader: cheap, does not import librosa.core

    return librosa.__version__


def cache_key(dataset: "Dataset", config: FeatureConfig) -> str:
    """Key of the features of ``dataset`` under ``config``.

    Covers the config (except ``on_error``, which does not change any number), the versions
    of the libraries that compute the numbers, ``FEATURE_VERSION`` and each clip in row order:
    filename, file size and mtime (ns) -- so a file replaced in place gets a new key -- plus
    its SHA-256 from ``dataset.manifest`` when the dataset was verified.
    """
    settings = {k: v for k, v in config.to_dict().items() if k != "on_error"}
    manifest = dataset.manifest or {}
    clips = []
    for name, path in zip(dataset.meta["filename"], dataset.audio_paths):
        try:
            st = os.stat(path)
            clips.append([name, st.st_size, st.st_mtime_ns, manifest.get(name)])
        except OSError:
            clips.append([name, "missing"])
    return cache.make_key({"feature_version": FEATURE_VERSION, "config": settings,
                           "versions": _numeric_versions(), "clips": clips})


def _numeric_versions() -> dict:
    """Versions of the libraries whose code produces the feature numbers."""
    return {"librosa": _librosa_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "soundfile": sf.__version__}


def _chunk_worker(paths: list[str], names: list[str], config: FeatureConfig, bases: dict):
    """Features of one chunk: (array (n_ok, d) float32, failures [(filename, reason)])."""
    exit_with_parent()
    audio.MEL_BASES.update(bases)  # built once in the parent: workers skip importing librosa.core
    rows, failures = [], []
    for path, name in zip(paths, names):
        try:
            v = clip_features(path, config, augmented=True)
            if not np.isfinite(v).all():
                raise FeatureError(f"non-finite features computed from {path}")
            rows.append(v)
        except FeatureError as e:
            failures.append((name, str(e)))
        except Exception as e:  # anything else a bad clip triggers, still naming it
            failures.append((name, f"{path}: {type(e).__name__}: {one_line(e)}"))
    d = len(rows[0]) if rows else 0
    return (np.stack(rows) if rows else np.zeros((0, d), np.float32)), failures


def _run_chunks(tasks, config, bases, n_workers):
    """Yield (task, result) in task order, in-process or on loky workers."""
    if n_workers <= 1:
        for task in tasks:
            yield task, _chunk_worker(task[2], task[3], config, bases)
        return
    import contextlib

    from joblib import Parallel, delayed, parallel_config
    from joblib.parallel import get_active_backend

    # One BLAS/OpenMP thread per worker: n_workers processes already fill the cores. A caller
    # that chose the Dask backend (a cluster, ``esc50ann.sweep``) keeps it.
    on_dask = type(get_active_backend()[0]).__name__.startswith("Dask")
    with contextlib.nullcontext() if on_dask else parallel_config(backend="loky", inner_max_num_threads=1):
        results = Parallel(n_jobs=n_workers, return_as="generator")(
            delayed(_chunk_worker)(t[2], t[3], config, bases) for t in tasks)
        yield from zip(tasks, results)


def _bad(name, reason):
    return FeatureError(reason if name in reason else f"{name}: {reason}")


def extract(dataset: "Dataset", config: FeatureConfig, cache_dir: Path, *, n_jobs: int = -1,
            progress: bool = True) -> FeatureSet:
    """Features of every clip of ``dataset``, from the cache or computed and cached.

    A cache hit memory-maps the stored matrix without touching any audio. A miss computes
    chunks of ``CHUNK_SIZE`` clips in parallel (joblib loky, ``n_jobs`` processes, -1 = all
    cores), saves each finished chunk (a killed run resumes from them) and publishes the
    entry atomically. Concurrent runs of the same key wait for each other (file lock).

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
                entry = _compute(dataset, config, cache_dir, key, n_jobs, progress)
                computed = True
    skipped = [(str(a), str(b)) for a, b in entry.manifest["skipped"]]
    if skipped and config.on_error == "raise":
        raise _bad(*skipped[0])
    filenames = list(entry.manifest["filenames"])
    meta = dataset.meta.set_index("filename").loc[filenames].reset_index()
    X, X_aug = _split_copies(entry.array, 1 + len(config.pitch_shifts))
    return FeatureSet(X=X, filenames=filenames, skipped=skipped, key=key, from_cache=not computed,
                      config=config, meta=meta, X_aug=X_aug)


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


def _compute(dataset, config, cache_dir, key, n_jobs, progress) -> cache.Entry:
    from joblib import cpu_count
    
    names = [str(n) for n in dataset.meta["filename"]]
    paths = [str(p) for p in dataset.audio_paths]
    n = len(names)
    plan = [(a, min(a + CHUNK_SIZE, n)) for a in range(0, n, CHUNK_SIZE)]
    chunk_name = lambda a, b: f"{a:07d}-{b:07d}"  # noqa: E731
    done = {}
    for name, (array, info) in cache.load_chunks(cache_dir, key).items():
        a, b = (int(x) for x in name.split("-"))
        if (a, b) in plan and info.get("names") == names[a:b]:
            done[(a, b)] = (array, [tuple(f) for f in info["failures"]])
    if config.on_error == "raise":
        for a, b in plan:
            if (a, b) in done and done[(a, b)][1]:
                raise _bad(*done[(a, b)][1][0])

    # Mel bases for the expected rate(s), built here so workers need not import librosa.core.
    bases = {}
    todo = [(a, b, paths[a:b], names[a:b]) for a, b in plan if (a, b) not in done]
    if todo:
        try:
            sr = config.sample_rate or sf.info(todo[0][2][0]).samplerate
            audio.mel_basis(sr, config.n_fft, config.n_mels, config.fmin, config.fmax)
            if config.pitch_shifts:
                audio.shifted_mel_basis(sr, config.n_fft, config.n_mels, config.fmin, config.fmax,
                                        (0.0, *config.pitch_shifts))
            bases = dict(audio.MEL_BASES)
        except Exception:  # unreadable first clip: it will be reported by its own task
            pass
    workers = cpu_count() if n_jobs is None or n_jobs < 0 else max(1, n_jobs)
    workers = min(workers, len(todo))
    resumed = sum(b - a for a, b in done)
    with progress_mod.bar(total=n, initial=resumed, enabled=progress, unit="clip", desc="features") as bar:
        for (a, b, _, chunk_names), (array, failures) in _run_chunks(todo, config, bases, workers):
            cache.save_chunk(cache_dir, key, chunk_name(a, b), array,
                             {"names": chunk_names, "failures": [list(f) for f in failures]})
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
            "versions": _versions()}
    return cache.commit(cache_dir, key, (arr for arr, _ in blocks), n_cols=n_cols,
                        filenames=kept, skipped=skipped, info=info)


def _versions() -> dict:
    import esc50ann

    return {"esc50ann": esc50ann.__version__, **_numeric_versions(), "feature_version": FEATURE_VERSION}
