"""The whole product in one object: dataset -> features -> folds -> model -> report.

    >>> pipe = Pipeline.from_toml("pipelines/quick.toml", data_dir="data")
    >>> dataset = pipe.download()        # Dataset: metadata, audio paths, folds
    >>> feats = pipe.features()          # FeatureSet: X (n_clips, n_features), from the cache if present
    >>> cv = pipe.cross_validate()       # CVResult: per-fold predictions, models, histories
    >>> run = pipe.report(cv)            # RunResult: run folder with metrics.json, plots, report.md

``run()`` does all four. Each stage reuses what the previous one computed (and the feature
cache on disk), so calling a later stage first runs the earlier ones once.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from esc50ann import config as config_mod
from esc50ann import dataset as dataset_mod
from esc50ann import paths
from esc50ann import features as features_mod
from esc50ann.config import PipelineConfig
from esc50ann.dataset import Dataset
from esc50ann.errors import ConfigError, Esc50Error
from esc50ann.evaluate import CVResult, cross_validate, fit_fold, make_splits
from esc50ann.features import FeatureConfig, FeatureSet
from esc50ann.model import ANNClassifier
from esc50ann.report import write_run

PIPELINES_DIR = Path(__file__).resolve().parent.parent / "pipelines"


def resolve_pipeline(name_or_path: str | Path | None) -> Path:
    """A pipeline file path: an existing path as given, else ``pipelines/<name>.toml`` of this checkout."""
    if name_or_path is None:
        name_or_path = "default"
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name if path.suffix == ".toml" else f"{path.name}.toml"
    for folder in (Path("pipelines"), PIPELINES_DIR):
        if (folder / name).is_file():
            return folder / name
    raise Esc50Error(f"{name_or_path}: pipeline file not found (looked in ., ./pipelines and {PIPELINES_DIR})")


@dataclass
class RunResult:
    """A finished run: its folder, its metrics (as in metrics.json) and the CV result behind them."""

    run_dir: Path
    metrics: dict[str, Any]
    cv: CVResult


class Pipeline:
    """A configured run over ESC-50.

    Parameters
    ----------
    config : PipelineConfig
        What to run (see ``esc50ann.config``).
    data_dir : path, optional
        Data root; default ``$ESC50ANN_DATA_DIR`` or ``./data``.
    source : str, optional
        Dataset source, overriding ``$ESC50ANN_SOURCE`` and the config's ``[dataset] source``.
    n_jobs : int
        Processes for feature extraction (-1: all cores).
    progress : bool
        Show progress bars.
    """

    def __init__(self, config: PipelineConfig, *, data_dir=None, source=None, n_jobs: int = -1,
                 progress: bool = True):
        self.config = config
        self.data_dir = paths.data_dir(data_dir)
        # Precedence: argument (--source), then $ESC50ANN_SOURCE, then the pipeline file.
        self.source = source or os.environ.get(dataset_mod.SOURCE_ENV) or config.dataset.source
        self.n_jobs = n_jobs
        self.progress = progress
        self.timings: dict[str, float] = {}
        self._dataset: Dataset | None = None
        self._features: FeatureSet | None = None

    @classmethod
    def from_toml(cls, path, **kwargs) -> "Pipeline":
        """Read ``path`` (or a name under ``pipelines/``) and build the pipeline."""
        return cls(config_mod.load(resolve_pipeline(path)), **kwargs)

    # --- stages -------------------------------------------------------------------------------

    def download(self) -> Dataset:
        """Download (or find), verify and load the dataset, restricted to the configured subset."""
        if self._dataset is None:
            with self._timed("dataset"):
                full = dataset_mod.prepare(self.source, self.data_dir, sha256=self.config.dataset.sha256,
                                           n_jobs=self.n_jobs, progress=self.progress)
                self._dataset = full.subset(self.config.dataset.subset)
        return self._dataset

    def features(self) -> FeatureSet:
        """Features of every clip of the dataset, computed once and cached under the data root."""
        if self._features is None:
            dataset = self.download()
            with self._timed("features"):
                self._features = features_mod.extract(dataset, self.config.features, self.cache_dir,
                                                      n_jobs=self.n_jobs, progress=self.progress)
            if self._features.skipped:  # keep dataset rows aligned with feature rows
                self._dataset = dataset.select(self._features.filenames)
        return self._features

    def cross_validate(self, folds=None, n_jobs: int | None = None) -> CVResult:
        """Train and test the model once per test fold (``folds`` default: the config's, else all)."""
        folds = folds or self.config.dataset.folds or None
        if folds is not None and len(set(folds)) < 2:
            raise Esc50Error(f"folds {','.join(map(str, folds))}: cross-validation needs at least two test "
                             "folds (train one model with `esc50ann train --test-fold K`)")
        feats = self.features()
        evaluation = self.config.evaluation
        with self._timed("cross_validation"):
            return cross_validate(
                np.asarray(feats.X), self.download(), self.config.estimator_params(), folds=folds,
                validation=evaluation.validation, refit=evaluation.refit,
                n_jobs=n_jobs or evaluation.n_jobs, progress=self.progress)

    def report(self, cv: CVResult, out=None) -> RunResult:
        """Write the run folder (``out``, default ``<data_dir>/runs/<name>-<timestamp>``)."""
        run_dir = Path(out) if out else self._new_run_dir()
        feats = self.features()
        with self._timed("report"):
            extra = {"feature_shape": list(feats.X.shape), "feature_cache_key": feats.key,
                     "features_from_cache": feats.from_cache,
                     "skipped_clips": [list(s) for s in feats.skipped],
                     "fold_train_seconds": {str(k): f.seconds for k, f in cv.folds.items()}}
            metrics = write_run(run_dir, cv, self.download(), pipeline=self.config.to_dict(),
                                timings=dict(self.timings), extra=extra, model_metadata=self.model_metadata())
        return RunResult(run_dir, metrics, cv)

    def run(self, folds=None, out=None, n_jobs: int | None = None) -> RunResult:
        """All stages: download, features, cross-validation, report."""
        return self.report(self.cross_validate(folds=folds, n_jobs=n_jobs), out=out)

    def train(self, test_fold: int) -> ANNClassifier:
        """Train one model with ``test_fold`` held out (validation and refit as in cross-validation)."""
        feats, dataset = self.features(), self.download()
        evaluation = self.config.evaluation
        split, = make_splits(dataset, [test_fold], evaluation.validation)
        with self._timed("train"):
            result = fit_fold(np.asarray(feats.X), dataset.targets, split, self.config.estimator_params(),
                              refit=evaluation.refit)
        result.model.metadata_ = {**self.model_metadata(), "test_fold": test_fold,
                                  "test_accuracy": result.accuracy}
        return result.model

    # --- helpers ------------------------------------------------------------------------------

    @property
    def cache_dir(self) -> Path:
        return paths.feature_cache_dir(self.data_dir)

    def model_metadata(self) -> dict[str, Any]:
        """What a saved model needs to classify a new WAV: the feature config and the class names.

        The sample rate is pinned to the dataset's, so ``predict`` resamples a WAV of another
        rate instead of analysing it at its own (other mel bands, another feature size).
        """
        features = self.config.features.to_dict()
        features["sample_rate"] = features["sample_rate"] or dataset_mod.SAMPLE_RATE
        return {"pipeline": self.config.name, "features": features,
                "class_names": {str(k): v for k, v in self.download().names_by_target.items()}}

    def _new_run_dir(self) -> Path:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = paths.runs_dir(self.data_dir) / f"{self.config.name}-{stamp}"
        base.parent.mkdir(parents=True, exist_ok=True)
        for k in range(1, 1000):
            run_dir = base if k == 1 else base.with_name(f"{base.name}-{k}")
            try:
                run_dir.mkdir()  # claims the name: two runs started in the same second get two folders
                return run_dir
            except FileExistsError:
                continue
        raise Esc50Error(f"{base}: too many runs with this name and time stamp")

    @contextlib.contextmanager
    def _timed(self, stage: str):
        """Add the block's wall time to ``self.timings[stage]`` (reported in metrics.json)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start


@dataclass
class Prediction:
    """Top-k classes of one clip: (category, probability) pairs, most probable first."""

    path: Path
    top: list[tuple[str, float]]


def predict_files(model_path, paths, top: int = 5) -> list[Prediction]:
    """Classify WAV files of any length, rate or channel count with a saved model.

    The model file carries its feature configuration, so the clip is turned into features
    exactly as the training clips were.
    """
    model = ANNClassifier.load(model_path)
    meta = getattr(model, "metadata_", None) or {}
    if "features" not in meta:
        raise Esc50Error(f"{model_path}: model has no feature configuration (not saved by an esc50ann pipeline)")
    try:
        feature_config = FeatureConfig(**meta["features"])
    except (TypeError, ConfigError) as exc:
        raise Esc50Error(f"{model_path}: feature configuration not understood ({exc})") from None
    names = {int(k): v for k, v in meta.get("class_names", {}).items()}
    results = []
    for path in paths:
        x = features_mod.clip_features(Path(path), feature_config)
        if x.shape[0] != model.n_features_in_:
            raise Esc50Error(f"{path}: gives {x.shape[0]} features, the model {model_path} expects "
                             f"{model.n_features_in_}")
        proba = model.predict_proba(x[None, :])[0]
        order = np.argsort(proba)[::-1][:top]
        results.append(Prediction(Path(path), [(names.get(int(model.classes_[i]), str(model.classes_[i])),
                                                float(proba[i])) for i in order]))
    return results
