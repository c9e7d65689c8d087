"""The feature recipe: what one clip's feature vector is, and how it is computed.

``FeatureConfig`` holds every setting that determines the numbers. Per clip
(``clip_features``, built from ``esc50ann.audio``): read, mix to mono, cut/zero-pad to
``duration``, log-mel spectrogram, its planes (the log-mel, optionally its delta and the MFCCs),
then either flattened (``"flat"``) or summarised per band over time (``"stats"``), optionally
followed by the modulation spectra of the log-mel and MFCC planes. ``planes`` is the one
statement of that layout: the feature names, the vector's length and its computation all follow
it.

This module is what feature workers import: it needs no pandas and no dataset (the stage that
runs it over a dataset and caches the result is ``esc50ann.features``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from esc50ann import audio
from esc50ann.errors import ConfigError, FeatureError, one_line
from esc50ann.params import Boolean, Integral, Interval, ListOf, Options, Real, validate

# Bump when the computation changes the numbers: it is part of the cache key.
FEATURE_VERSION = 1


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


def planes(config: FeatureConfig) -> list[tuple[str, int, bool]]:
    """The planes of a clip's analysis, in the order of the feature vector: ``(name, bands,
    modulated)`` for the log-mel, its delta (``deltas``) and the MFCCs (``n_mfcc``). ``modulated``
    planes also get modulation spectra (of the log-mel and the MFCCs: measured +2 points each on
    the development copy; the delta's added nothing there)."""
    return ([("logmel", config.n_mels, True)] + ([("delta", config.n_mels, False)] if config.deltas else [])
            + ([("mfcc", config.n_mfcc, True)] if config.n_mfcc else []))


def n_frames(config: FeatureConfig, sample_rate: int) -> int:
    """Frames of a clip's spectrogram at ``sample_rate`` (ignored when the config fixes the rate)."""
    sr = config.sample_rate or sample_rate
    return 1 + int(round(config.duration * sr)) // config.hop_length


def feature_shape(config: FeatureConfig, sample_rate: int = 44100) -> tuple[int]:
    """(n_features,) for clips at ``sample_rate`` (ignored when the config fixes the rate): as many
    as ``feature_names`` names, counted without naming them."""
    layout = planes(config)
    per_band = (len(audio.STATS) if config.representation == "stats"
                else math.ceil(n_frames(config, sample_rate) / config.time_pool))
    return (sum(bands for _, bands, _ in layout) * per_band
            + sum(bands for _, bands, modulated in layout if modulated) * len(config.modulation),)


def feature_names(config: FeatureConfig, sample_rate: int = 44100) -> list[str]:
    """A name per feature: ``logmel_mean_0`` ... ``mfcc_std_diff_39`` (``stats``) or
    ``logmel_3_t12`` (band 3, time step 12; ``flat``), then the modulation bins, named by their
    lower edge (``logmel_mod4hz_17`` is band 17 from 4 Hz)."""
    layout = planes(config)
    if config.representation == "stats":
        names = [f"{name}_{stat}_{band}" for name, bands, _ in layout for stat in audio.STATS for band in range(bands)]
    else:
        steps = math.ceil(n_frames(config, sample_rate) / config.time_pool)
        names = [f"{name}_{band}_t{t}" for name, bands, _ in layout for band in range(bands) for t in range(steps)]
    return names + [f"{name}_mod{edge:g}hz_{band}" for name, bands, modulated in layout if modulated
                    for band in range(bands) for edge in config.modulation]


def clip_features(path, config: FeatureConfig, *, augmented: bool = False, filterbanks: dict | None = None) -> np.ndarray:
    """The feature vector of one audio file, shape (n_features,), float32 (see ``signal_features``
    for ``augmented`` and ``filterbanks``)."""
    y, sr = audio.load_clip(path, duration=config.duration, sample_rate=config.sample_rate)
    return signal_features(y, sr, config, augmented=augmented, filterbanks=filterbanks)


def signal_features(y: np.ndarray, sr: int, config: FeatureConfig, *, augmented: bool = False,
                    filterbanks: dict | None = None) -> np.ndarray:
    """The feature vector of one clip's samples ``y`` (shape (n_samples,), ``config.duration``
    seconds at ``sr``), shape (n_features,), float32.

    With ``augmented``, the vectors of the clip and of each of its ``config.pitch_shifts`` copies
    one after the other: shape ((1 + len(pitch_shifts)) * n_features,). ``filterbanks``
    (``(sample rate, augmented)`` -> ``mel_filterbank``) holds filterbanks built elsewhere, say
    once by the parent of worker processes; others are built (and cached) here.
    """
    shifted = augmented and bool(config.pitch_shifts)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # huge samples: see below
        S = audio.log_mel(y, sr, n_fft=config.n_fft, hop_length=config.hop_length, n_mels=config.n_mels,
                          fmin=config.fmin, fmax=config.fmax, top_db=config.top_db,
                          semitones=(0.0, *config.pitch_shifts) if shifted else None,
                          basis=(filterbanks or {}).get((sr, shifted)))
    if not np.isfinite(S).all():
        # Finite samples whose power overflows float32 (|x| ~ 1e19 and more): no feature means
        # anything. The callers' finiteness checks name the file; librosa would raise on these.
        n = feature_shape(config, sr)[0] * (1 + len(config.pitch_shifts) if shifted else 1)
        return np.full(n, np.nan, np.float32)
    if not shifted:
        return _describe(S, sr, config)
    return np.concatenate([_describe(S_db, sr, config) for S_db in S])


def mel_filterbank(config: FeatureConfig, sr: int, *, augmented: bool = False):
    """The sparse mel filterbank of ``config`` at ``sr`` (``audio.mel_basis``); with ``augmented``
    and ``pitch_shifts``, those of the clip and of each shifted copy stacked
    (``audio.shifted_mel_basis``)."""
    bands = dict(sr=sr, n_fft=config.n_fft, n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax)
    if augmented and config.pitch_shifts:
        return audio.shifted_mel_basis(**bands, semitones=(0.0, *config.pitch_shifts))
    return audio.mel_basis(**bands)


def _describe(S_db: np.ndarray, sr: int, config: FeatureConfig) -> np.ndarray:
    """One log-mel (n_mels, T) -> the clip's feature vector (n_features,), in ``planes`` order."""
    layout = planes(config)
    computed = audio.planes(S_db, deltas=config.deltas, n_mfcc=config.n_mfcc)
    if config.representation == "flat":
        vector = audio.flatten(computed, time_pool=config.time_pool)
    else:
        vector = audio.band_stats(computed)
    if not config.modulation:
        return vector
    mods = [audio.modulation_spectrum(plane, frame_rate=sr / config.hop_length, edges=config.modulation).reshape(-1)
            for plane, (_, _, modulated) in zip(computed, layout) if modulated]
    return np.concatenate([vector, *mods])


def files_features(paths: list[str], names: list[str], config: FeatureConfig,
                   filterbanks: dict | None = None) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Features (clip and augmented copies) of a list of files, in order: ``(array (n_ok, d)
    float32, failures [(name, reason)])``. A file that cannot be featurised is a failure naming it,
    never an exception: the others are still computed (a worker process's task)."""
    rows, failures = [], []
    for path, name in zip(paths, names):
        try:
            v = clip_features(path, config, augmented=True, filterbanks=filterbanks)
            if not np.isfinite(v).all():
                raise FeatureError(f"non-finite features computed from {path}")
            rows.append(v)
        except FeatureError as e:
            failures.append((name, str(e)))
        except Exception as e:  # anything else a bad clip triggers, still naming it
            failures.append((name, f"{path}: {type(e).__name__}: {one_line(e)}"))
    d = len(rows[0]) if rows else 0
    return (np.stack(rows) if rows else np.zeros((0, d), np.float32)), failures
