"""Classify recordings with a saved model: any length, rate or channel count.

    >>> results = predict_files("model.npz", ["clips/", "more/*.wav"], top=3)
    >>> for r in results:
    ...     print(r.path, r.error or r.top)

A recording longer than the model's clip length is analysed in windows of that length (every
``hop`` seconds, default half a clip) and the windows' probabilities are averaged; a shorter one
is zero-padded, as the training clips were. Each input is handled on its own: one bad file is
reported in its result (``error``) and the others are still predicted.
"""
from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from esc50ann import audio
from esc50ann.errors import ConfigError, Esc50Error, FeatureError
from esc50ann.recipe import FeatureConfig, signal_features
from esc50ann.model import ANNClassifier

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")
SILENCE_RMS = 1e-4  # below this (about -80 dBFS) a recording is taken as silent
SHORT_FRACTION = 0.5  # a recording under half the training clip length gets a warning


@dataclass
class Prediction:
    """One input's outcome.

    ``top`` holds (category, probability) pairs, most probable first; ``proba`` the averaged
    probabilities of every class, shape (n_classes,); ``windows`` the start (s) and the top
    classes of each analysed window; ``warnings`` what makes the answer doubtful;
    ``error`` the one-line reason the file could not be predicted (then nothing else is set).
    """

    path: Path
    top: list[tuple[str, float]] = field(default_factory=list)
    proba: np.ndarray | None = field(default=None, repr=False)
    windows: list[tuple[float, list[tuple[str, float]]]] = field(default_factory=list, repr=False)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def label(self) -> str | None:
        return self.top[0][0] if self.top else None


def find_inputs(inputs) -> list[Path]:
    """Files, folders (their audio files, recursively, sorted) and glob patterns, in order.

    A name that matches nothing is kept as it is, so its prediction reports "no such file".
    """
    found: list[Path] = []
    for item in map(str, inputs):
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        elif not path.exists() and glob.has_magic(item):
            found += sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
        else:
            found.append(path)
    return list(dict.fromkeys(found))


class Predictor:
    """A saved model with what it needs to turn a recording into its features.

    Parameters
    ----------
    model_path : path
        A model file written by ``esc50ann train`` or ``Pipeline.train(...).save`` (it carries the
        feature configuration and the class names).
    hop : float, optional
        Seconds between window starts for recordings longer than the clip length; default half
        the clip length.
    """

    def __init__(self, model_path, hop: float | None = None):
        self.model_path = Path(model_path)
        self.model = ANNClassifier.load(self.model_path)
        meta = getattr(self.model, "metadata_", None) or {}
        if "features" not in meta:
            raise Esc50Error(
                f"{self.model_path}: the model file carries no feature configuration, so recordings cannot "
                "be turned into its inputs; save models with `esc50ann train PIPELINE --all --save FILE` "
                "or `Pipeline.train(...).save(FILE)` (or set model.metadata_ = {'features': "
                "FeatureConfig(...).to_dict()} before ANNClassifier.save)")
        try:
            self.config = FeatureConfig(**meta["features"])
        except (TypeError, ConfigError) as exc:
            raise Esc50Error(f"{self.model_path}: feature configuration not understood ({exc})") from None
        self.class_names = getattr(self.model, "class_names_", None) or [str(c) for c in self.model.classes_]
        if hop is not None and not hop > 0:
            raise Esc50Error(f"hop {hop}: must be a positive number of seconds")
        self.hop = hop if hop is not None else self.config.duration / 2

    def predict(self, path, top: int = 5) -> Prediction:
        """Classify one recording; a problem with the file is returned in ``Prediction.error``."""
        path = Path(path)
        try:
            y, sr = audio.read_audio(path, sample_rate=self.config.sample_rate)
            starts, X = self._windows(y, sr)
            if not np.isfinite(X).all():
                raise FeatureError(f"{path}: its samples give non-finite features (values far outside [-1, 1]?)")
            if X.shape[1] != self.model.n_features_in_:
                raise FeatureError(f"{path}: gives {X.shape[1]} features, the model {self.model_path} "
                                   f"expects {self.model.n_features_in_}")
            window_proba = self.model.predict_proba(X)
        except Esc50Error as exc:
            return Prediction(path, error=str(exc))
        proba = window_proba.mean(axis=0)
        return Prediction(path, top=self._top(proba, top), proba=proba,
                          windows=[(start, self._top(p, top)) for start, p in zip(starts, window_proba)],
                          warnings=self._doubts(y, sr))

    def _top(self, proba, k):
        return [(self.class_names[i], float(proba[i])) for i in np.argsort(proba)[::-1][:k]]

    def _windows(self, y, sr):
        """Window starts (s) and the features of each window, shape (n_windows, n_features)."""
        n = int(round(self.config.duration * sr))
        hop = max(1, int(round(self.hop * sr)))
        last = max(0, len(y) - n)
        starts = list(range(0, last + 1, hop))
        if starts[-1] != last:  # the end of the recording gets a window too
            starts.append(last)
        X = np.stack([signal_features(audio.fit_length(y[s:s + n], n), sr, self.config)
                      for s in starts])
        return [s / sr for s in starts], X

    def _doubts(self, y, sr) -> list[str]:
        doubts = []
        if float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) < SILENCE_RMS:
            doubts.append("the recording is silent: the answer means nothing")
        seconds = len(y) / sr
        if seconds < SHORT_FRACTION * self.config.duration:
            doubts.append(f"only {seconds:.2f} s long, the model was trained on {self.config.duration:g} s clips: "
                          "padded with silence, the answer is doubtful")
        return doubts


def predict_files(model_path, inputs, *, top: int = 5, hop: float | None = None) -> list[Prediction]:
    """Classify audio files, folders and glob patterns with a saved model (see :class:`Predictor`).

    Returns one :class:`Prediction` per file found, in order; a file that cannot be read has its
    ``error`` set and the others are still predicted.
    """
    if not (isinstance(top, int) and top >= 1):
        raise Esc50Error(f"top {top!r}: must be an integer >= 1")
    from threadpoolctl import threadpool_limits

    predictor = Predictor(model_path, hop=hop)
    # A recording is a few windows: products of a few rows, where BLAS threads only cost
    # (they spin, and fight other work for the cores). One thread, as every training task has.
    with threadpool_limits(limits=1):
        return [predictor.predict(path, top=top) for path in find_inputs(inputs)]
