"""Classify recordings with a saved model: any length, rate or channel count.

    >>> results = predict_files("model.npz", ["clips/", "more/*.wav"], top=3)
    >>> for r in results:
    ...     print(r.path, r.error or r.top)

A recording longer than the model's clip length is analysed in windows of that length (every
``hop`` seconds, default half a clip) and the windows' probabilities are averaged; a shorter one
is zero-padded, as the training clips were. Each input is handled on its own: one bad file is
reported in its result (``error``) and the others are still predicted.

The top probability is the model's confidence among the classes it was trained on: it cannot
say that a recording belongs to none of them. A low top probability (``min_confidence``) flags
an answer the model is unsure of; a high one does not prove the sound is one of its classes.
"""
from __future__ import annotations

import csv
import glob
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from esc50ann import audio
from esc50ann.errors import ConfigError, Esc50Error, FeatureError
from esc50ann.model import ANNClassifier
from esc50ann.params import Interval, Real, validate
from esc50ann.recipe import FeatureConfig, signal_features

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")
SILENCE_RMS = 1e-4  # below this (about -80 dBFS) a recording is taken as silent
SHORT_FRACTION = 0.5  # a recording under half the training clip length gets a warning
NEW_WINDOW_FRACTION = 0.1  # a last window must reach this fraction of a clip past the one before it
MAX_WINDOWS = 10_000  # windows per recording: a day at the default hop; a runaway hop always exceeds it
MAX_SECONDS = 6 * 3600  # longest recording read (decoded whole: 6 h of 44.1 kHz float32 is 3.8 GB)

PARAMS = {"hop": [Interval(Real, 0.01, None), None],
          "min_confidence": [Interval(Real, 0, 1), None]}


@dataclass
class Prediction:
    """One input's outcome.

    ``top`` holds (category, probability) pairs, most probable first; ``proba`` the averaged
    probabilities of every class, shape (n_classes,); ``windows`` the start (s) and the top
    classes of each analysed window; ``warnings`` what makes the answer doubtful;
    ``low_confidence`` whether the top probability is under the predictor's ``min_confidence``;
    ``error`` the one-line reason the file could not be predicted (then nothing else is set).
    """

    path: Path
    top: list[tuple[str, float]] = field(default_factory=list)
    proba: np.ndarray | None = field(default=None, repr=False)
    windows: list[tuple[float, list[tuple[str, float]]]] = field(default_factory=list, repr=False)
    warnings: list[str] = field(default_factory=list)
    low_confidence: bool = False
    error: str | None = None

    @property
    def label(self) -> str | None:
        return self.top[0][0] if self.top else None

    @property
    def confidence(self) -> float | None:
        """The top probability (the model's confidence among its own classes)."""
        return self.top[0][1] if self.top else None

    def to_dict(self, *, per_window: bool = False) -> dict:
        """The prediction as plain JSON types (every field, ``error`` None when it worked)."""
        item = {"file": str(self.path), "label": self.label, "confidence": self.confidence,
                "low_confidence": self.low_confidence, "top": _ranked(self.top),
                "n_windows": len(self.windows), "warnings": self.warnings, "error": self.error}
        if per_window:
            item["windows"] = [{"start_s": start, "top": _ranked(top)} for start, top in self.windows]
        return item


def _ranked(top):
    return [{"category": name, "probability": p} for name, p in top]


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


def window_starts(n_samples: int, *, window: int, hop: int) -> list[int]:
    """Start samples of the analysis windows of a recording.

    Windows start every ``hop`` samples; the end of the recording gets a window of its own only
    when it reaches at least ``NEW_WINDOW_FRACTION`` of a window past the last regular one (a
    5.001 s recording is one 5 s window, not two nearly equal ones).
    """
    last = max(0, n_samples - window)
    starts = list(range(0, last + 1, hop))
    if last - starts[-1] >= NEW_WINDOW_FRACTION * window:
        starts.append(last)
    return starts


def covered(starts: list[int], *, window: int, n_samples: int) -> int:
    """How many samples of the recording the windows starting at ``starts`` cover."""
    reach, total = 0, 0
    for start in starts:
        end = min(start + window, n_samples)
        total += max(0, end - max(start, reach))
        reach = max(reach, end)
    return total


class Predictor:
    """A saved model with what it needs to turn a recording into its features.

    Parameters
    ----------
    model_path : path
        A model file written by ``esc50ann train`` or ``Pipeline.train(...).save`` (it carries the
        feature configuration and the class names).
    hop : float, optional
        Seconds between window starts for recordings longer than the clip length, at least
        0.01; default half the clip length. A hop longer than the clip leaves gaps (warned).
    min_confidence : float in [0, 1], optional
        A prediction whose top probability is below it is marked ``low_confidence``.
    """

    def __init__(self, model_path, *, hop: float | None = None, min_confidence: float | None = None):
        try:
            validate({"hop": hop, "min_confidence": min_confidence}, PARAMS)
        except ConfigError as exc:
            raise Esc50Error(str(exc)) from None
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
        self.hop = hop if hop is not None else self.config.duration / 2
        self.min_confidence = min_confidence

    def predict(self, path, top: int = 5) -> Prediction:
        """Classify one recording; a problem with the file is returned in ``Prediction.error``."""
        path = Path(path)
        try:
            _check_length(path)
            y, sr = audio.read_audio(path, sample_rate=self.config.sample_rate)
            starts, X, doubts = self._windows(y, sr)
            if not np.isfinite(X).all():
                raise FeatureError(f"{path}: its samples give non-finite features (values far outside [-1, 1]?)")
            if X.shape[1] != self.model.n_features_in_:
                raise FeatureError(f"{path}: gives {X.shape[1]} features, the model {self.model_path} "
                                   f"expects {self.model.n_features_in_}")
            window_proba = self.model.predict_proba(X)
        except Esc50Error as exc:
            return Prediction(path, error=str(exc))
        proba = window_proba.mean(axis=0)
        ranked = self._top(proba, top)
        low = self.min_confidence is not None and ranked[0][1] < self.min_confidence
        if low:
            doubts.append(f"top probability {ranked[0][1]:.2f} is under --min-confidence "
                          f"{self.min_confidence:g}: the model is unsure")
        return Prediction(path, top=ranked, proba=proba, low_confidence=low,
                          windows=[(start, self._top(p, top)) for start, p in zip(starts, window_proba)],
                          warnings=self._doubts(y, sr) + doubts)

    def _top(self, proba, k):
        return [(self.class_names[i], float(proba[i])) for i in np.argsort(proba)[::-1][:k]]

    def _windows(self, y, sr):
        """Window starts (s), the features of each window, shape (n_windows, n_features), and a
        warning when the windows leave part of the recording out."""
        window = int(round(self.config.duration * sr))
        hop = max(1, int(round(self.hop * sr)))
        n_windows = 1 + max(0, len(y) - window) // hop
        if n_windows > MAX_WINDOWS:
            raise FeatureError(f"hop {self.hop:g} s would cut {len(y) / sr:.1f} s into {n_windows} windows "
                               f"(at most {MAX_WINDOWS}): give a longer --hop")
        starts = window_starts(len(y), window=window, hop=hop)
        doubts = []
        skipped = (len(y) - covered(starts, window=window, n_samples=len(y))) / sr
        if skipped >= NEW_WINDOW_FRACTION * self.config.duration:
            doubts.append(f"hop {self.hop:g} s is longer than the {self.config.duration:g} s window: "
                          f"{skipped:.1f} s of {len(y) / sr:.1f} s not analysed")
        X = np.stack([signal_features(audio.fit_length(y[s:s + window], window), sr, self.config)
                      for s in starts])
        return [s / sr for s in starts], X, doubts

    def _doubts(self, y, sr) -> list[str]:
        doubts = []
        if float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) < SILENCE_RMS:
            doubts.append("the recording is silent: the answer means nothing")
        seconds = len(y) / sr
        if seconds < SHORT_FRACTION * self.config.duration:
            doubts.append(f"only {seconds:.2f} s long, the model was trained on {self.config.duration:g} s clips: "
                          "padded with silence, the answer is doubtful")
        return doubts


def _check_length(path: Path) -> None:
    """Refuse a recording too long to decode whole, from its header (before reading it)."""
    try:
        info = sf.info(str(path))
    except Exception:
        return  # not readable by its header: read_audio says why in its own words
    if info.frames > MAX_SECONDS * info.samplerate:
        raise FeatureError(f"{path}: {info.frames / info.samplerate / 3600:.1f} h long, more than the "
                           f"{MAX_SECONDS // 3600} h read at once: cut it into parts first")


def predict_files(model_path, inputs, *, top: int = 5, hop: float | None = None,
                  min_confidence: float | None = None) -> list[Prediction]:
    """Classify audio files, folders and glob patterns with a saved model (see :class:`Predictor`).

    Returns one :class:`Prediction` per file found, in order; a file that cannot be read has its
    ``error`` set and the others are still predicted.
    """
    if not (isinstance(top, int) and top >= 1):
        raise Esc50Error(f"top {top!r}: must be an integer >= 1")
    from threadpoolctl import threadpool_limits

    predictor = Predictor(model_path, hop=hop, min_confidence=min_confidence)
    # A recording is a few windows: products of a few rows, where BLAS threads only cost
    # (they spin, and fight other work for the cores). One thread, as every training task has.
    with threadpool_limits(limits=1):
        return [predictor.predict(path, top=top) for path in find_inputs(inputs)]


def format_predictions(results: list[Prediction], fmt: str = "table", *, per_window: bool = False) -> str:
    """The predictions as text: ``"table"`` (for people: the files that worked),
    ``"csv"`` or ``"json"`` (for scripts: every input, with its warnings or error)."""
    return {"table": _table, "csv": _csv, "json": _json}[fmt](results, per_window)


def _views(result, per_window):
    """(window start or None for the whole file, top classes) to show for one file."""
    return [(None, result.top)] + (result.windows if per_window else [])


def _table(results, per_window) -> str:
    lines = []
    for r in results:
        if r.error:
            continue  # said on stderr
        for start, top in _views(r, per_window):
            ranked = ", ".join(f"{name} {100 * p:.1f} %" for name, p in top)
            flag = " (low confidence)" if start is None and r.low_confidence else ""
            lines.append(f"{r.path}: {ranked}{flag}" if start is None else f"  at {start:.2f} s: {ranked}")
    return "".join(line + "\n" for line in lines)


def _csv(results, per_window) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", "window_start_s", "rank", "category", "probability", "low_confidence",
                     "warnings", "error"])
    for r in results:
        notes = [str(r.low_confidence).lower(), "; ".join(r.warnings), r.error or ""]
        if r.error:
            writer.writerow([r.path, "", "", "", ""] + notes)
        for start, top in _views(r, per_window):
            for rank, (name, p) in enumerate(top, 1):
                writer.writerow([r.path, "" if start is None else f"{start:.3f}", rank, name, f"{p:.6f}"] + notes)
    return out.getvalue()


def _json(results, per_window) -> str:
    return json.dumps([r.to_dict(per_window=per_window) for r in results], indent=2) + "\n"
