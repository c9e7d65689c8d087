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
import dataclasses
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from esc50ann import config as config_mod
from esc50ann import dataset as dataset_mod
from esc50ann import folds as folds_mod
from esc50ann import paths
from esc50ann import record as record_mod
from esc50ann import progress as progress_mod
from esc50ann import verify
from esc50ann import features as features_mod
from esc50ann.config import PipelineConfig
from esc50ann.dataset import Dataset
from esc50ann.errors import DatasetError, Esc50Error
from esc50ann.evaluate import CVResult, cross_validate, fit_splits
from esc50ann.features import FeatureSet
from esc50ann.model import ANNClassifier
from esc50ann import report as report_mod

@dataclass
class RunResult:
    """A finished run: its folder, its metrics (as in metrics.json) and the CV result behind them."""

    run_dir: Path
    metrics: dict[str, Any]
    cv: CVResult

    def __repr__(self):
        return f"RunResult({report_mod.summary_line(self.metrics, self.run_dir)})"


class Pipeline:
    """A configured run over ESC-50.

    Parameters
    ----------
    config : PipelineConfig
        What to run (see ``esc50ann.config``).
    data_dir : path, optional
        Data root (``esc50ann.paths.data_dir``: ``$ESC50ANN_DATA_DIR``, a checkout's ``data/``, else
        the per-user data directory).
    source : str, optional
        Dataset source, overriding ``$ESC50ANN_SOURCE`` and the config's ``[dataset] source``.
    n_jobs : int
        Processes for feature extraction (-1: all cores).
    progress : bool
        Progress on stderr: bars on a terminal, a line per stage (and per fold) elsewhere; False
        prints nothing (``--quiet``).
    verbose : bool
        Also a line per training epoch (``-v``).
    """

    def __init__(self, config: PipelineConfig, *, data_dir=None, source=None, n_jobs: int = -1,
                 progress: bool = True, verbose: bool = False):
        self.config = config
        self.data_dir = paths.data_dir(data_dir)
        # Precedence: argument (--source), then $ESC50ANN_SOURCE, then the pipeline file.
        self.source = source or os.environ.get(dataset_mod.SOURCE_ENV) or config.dataset.source
        self.n_jobs = n_jobs
        self.progress = progress
        self.verbose = verbose
        self.timings: dict[str, float] = {}
        self.stage_lines: dict[str, str] = {}  # each finished stage's summary line, as printed
        self._dataset: Dataset | None = None
        self._features: FeatureSet | None = None
        self.overrides: dict[str, Any] = {}  # the --set values config holds, recorded with a run

    def __repr__(self):
        stages = [name for name, done in (("dataset", self._dataset), ("features", self._features)) if done is not None]
        return (f"Pipeline({self.config.name!r}, data_dir={str(self.data_dir)!r}, source={self.source!r}, "
                f"loaded: {', '.join(stages) or 'nothing yet'})")

    @classmethod
    def from_toml(cls, path, *, overrides: dict[str, Any] | None = None, **kwargs) -> "Pipeline":
        """Read ``path`` (or a built-in pipeline's name: ``"default"``, ``"quick"``, ...) and build the
        pipeline; ``overrides`` sets dotted keys (``{"training.learning_rate": 0.01}``), checked as
        the file is (see ``esc50ann.config.override``)."""
        config = config_mod.load(config_mod.find(path))
        if overrides:
            config = config_mod.override(config, overrides, where="--set")
        pipe = cls(config, **kwargs)
        pipe.overrides = dict(overrides or {})
        return pipe

    # --- stages -------------------------------------------------------------------------------

    def download(self) -> Dataset:
        """Download (or find), verify and load the dataset, restricted to the configured subset."""
        if self._dataset is None:
            with self._timed("dataset"):
                full = dataset_mod.prepare(self.source, self.data_dir, sha256=self.config.dataset.sha256,
                                           settings=self.config.dataset, n_jobs=self.n_jobs, progress=self.progress)
                self._dataset = full.subset(self.config.dataset.subset)
            if self._dataset.layout != "esc50" and self.config.features.sample_rate is None:
                # "Native rate" means one rate on ESC-50 only: other sets mix rates, and features
                # (and a saved model's) must be of one rate, so they are read at ESC-50's.
                features = dataclasses.replace(self.config.features, sample_rate=verify.SAMPLE_RATE)
                self.config = dataclasses.replace(self.config, features=features)
            d = self._dataset
            self._note("dataset", f"{len(d)} clips, {len(d.classes)} classes, folds "
                                  f"{','.join(map(str, d.folds))} in {d.root}")
        return self._dataset

    def features(self) -> FeatureSet:
        """Features of every clip of the dataset, computed once and cached under the data root.
        Its ``dataset`` holds the clips of its rows (without any clip skipped): what the later
        stages train and score on."""
        if self._features is None:
            dataset = self.download()
            with self._timed("features"):
                self._features = features_mod.extract(dataset, self.config.features, self.cache_dir,
                                                      n_jobs=self.n_jobs, progress=self.progress)
            f = self._features
            self._note("features", f"{f.X.shape[0]} x {f.X.shape[1]} "
                                   f"{'from the cache' if f.from_cache else 'computed'} (key {f.key})"
                                   + (f", {len(f.skipped)} clips skipped" if f.skipped else ""))
        return self._features

    def cross_validate(self, folds=None, n_jobs: int | None = None) -> CVResult:
        """Train and test the model once per test fold (``folds`` default: the config's, else all)."""
        folds = folds or self.config.dataset.folds or None
        listed = self.download().folds
        unknown = [f for f in folds or () if f not in listed]
        if unknown:
            raise DatasetError(f"folds {','.join(map(str, unknown))}: not in the metadata "
                             f"(folds: {','.join(map(str, listed))})")
        if folds is not None and len(set(folds)) < 2:
            raise Esc50Error(f"folds {','.join(map(str, folds))}: cross-validation needs at least two test "
                             "folds (train one model with `esc50ann train --test-fold K`)")
        feats = self.features()
        evaluation = self.config.evaluation
        with self._timed("cross_validation"):
            cv = cross_validate(
                np.asarray(feats.X), feats.dataset, self.config.estimator_params(), folds=folds,
                validation=evaluation.validation, refit=evaluation.refit,
                n_jobs=evaluation.n_jobs if n_jobs is None else n_jobs, progress=self.progress, verbose=self.verbose,
                X_aug=None if feats.X_aug is None else np.asarray(feats.X_aug))
        self._note("cross_validation", f"accuracy {100 * cv.accuracy_mean:.1f} % ± {100 * cv.accuracy_std:.1f} "
                                       f"over folds {','.join(map(str, cv.folds))}")
        for line in cv.warnings:
            progress_mod.warn(line)
        return cv

    def report(self, cv: CVResult, out=None, *, force: bool = False) -> RunResult:
        """Write the run folder (``out``, default ``<data_dir>/runs/<name>-<timestamp>``); a finished
        run in ``out`` is kept unless ``force``."""
        _check_out(out, force)
        run_dir = Path(out) if out else self._new_run_dir()
        feats = self.features()
        with self._timed("report"):
            recorded = record_mod.read(self.data_dir) or {}
            extra = {"source": recorded.get("source"), "dataset_layout": feats.dataset.layout,
                     "overrides": self.overrides,
                     "feature_shape": list(feats.X.shape), "feature_cache_key": feats.key,
                     "features_from_cache": feats.from_cache,
                     "skipped_clips": [list(s) for s in feats.skipped],
                     "fold_train_seconds": {str(k): f.seconds for k, f in cv.folds.items()}}
            metrics = report_mod.write_run(run_dir, cv, feats.dataset, pipeline=self.config.to_dict(),
                                timings=dict(self.timings), extra=extra, model_metadata=self.model_metadata())
            report_mod.remember(self.data_dir, run_dir)
        self._note("report", str(run_dir))
        return RunResult(run_dir, metrics, cv)

    def run(self, folds=None, out=None, n_jobs: int | None = None, *, force: bool = False) -> RunResult:
        """All stages: download, features, cross-validation, report (see ``report`` for ``force``)."""
        _check_out(out, force)  # before the work, not after it
        return self.report(self.cross_validate(folds=folds, n_jobs=n_jobs), out=out, force=force)

    def train(self, test_fold: int | None = None) -> ANNClassifier:
        """Train one model with ``test_fold`` held out, or (``None``) the final model on every fold.

        Validation and refit work as in cross-validation; for the final model the last listed
        fold drives early stopping (when the pipeline uses it) and the refit then uses every clip.
        An ensemble trains in parts on ``[evaluation] n_jobs`` worker processes (as a fold of
        cross-validation does), every part with one BLAS thread; a lone network in this process,
        with one BLAS thread too (``esc50ann.parallel``).
        The model's ``metadata_`` carries what ``esc50ann predict`` needs (feature configuration,
        class names) and, with a test fold, its accuracy there.
        """
        feats = self.features()
        dataset, evaluation = feats.dataset, self.config.evaluation
        if test_fold is None:
            split = folds_mod.final_split(dataset, evaluation.validation)
        else:
            split = folds_mod.split(dataset, test_fold, evaluation.validation)
        with self._timed("train"):
            (result,) = fit_splits(np.asarray(feats.X), dataset.targets, [split], self.config.estimator_params(),
                                   refit=evaluation.refit, n_jobs=evaluation.n_jobs, progress=self.progress,
                                   verbose=self.verbose,
                                   X_aug=None if feats.X_aug is None else np.asarray(feats.X_aug))
        self._note("train", f"{split.train.size + split.val.size} clips" + (
            f", test fold {test_fold} accuracy {100 * result.accuracy:.1f} %" if test_fold is not None else ""))
        for line in result.warnings:
            progress_mod.warn(line)
        names = dataset.names_by_target
        result.model.class_names_ = [names[int(c)] for c in result.model.classes_]
        result.model.metadata_ = {**self.model_metadata(), "test_fold": test_fold,
                                  "test_accuracy": result.accuracy,
                                  "trained_on_folds": sorted(set(dataset.meta["fold"].to_numpy()[
                                      np.concatenate([split.train, split.val])].tolist()))}
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
        features["sample_rate"] = features["sample_rate"] or verify.SAMPLE_RATE
        return {"pipeline": self.config.name, "features": features}

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

    def _note(self, stage: str, result: str) -> None:
        """The stage's line: what it gave and how long it took."""
        self.stage_lines[stage] = f"{stage.replace('_', '-')}: {result} ({self.timings.get(stage, 0.0):.1f} s)"
        progress_mod.note(self.stage_lines[stage], enabled=self.progress)

    @contextlib.contextmanager
    def _timed(self, stage: str):
        """Add the block's wall time to ``self.timings[stage]`` (reported in metrics.json)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start


def _check_out(out, force: bool) -> None:
    """Refuse to overwrite a finished run folder unless told to."""
    if out is not None and not force and (Path(out) / "metrics.json").is_file():
        raise Esc50Error(f"{out}: holds a finished run; pass --force (force=True) to overwrite it, "
                         "or choose another --out")
