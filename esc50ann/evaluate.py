"""Fold cross-validation: train on some folds, test on the held-out one, for every listed fold.

Leakage rules, enforced here:

* splits are whole folds (``esc50ann.folds``), so clips cut from one source recording never
  straddle train, validation and test;
* early stopping watches a whole *training* fold, never the test fold;
* standardisation is fit inside the estimator, on the rows it is trained on only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from esc50ann import folds as folds_mod
from esc50ann.dataset import Dataset
from esc50ann.errors import DatasetError
from esc50ann.folds import Split
from esc50ann.model import ANNClassifier


@dataclass
class FoldResult:
    """One test fold's outcome.

    ``test_index`` holds row positions into the dataset's metadata, shape (n_test,);
    ``proba`` has shape (n_test, n_classes) with columns in ``CVResult.classes`` order.
    """

    test_fold: int
    val_fold: int | None
    test_index: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray
    proba: np.ndarray
    history: list[dict]
    best_epoch: int | None
    model: ANNClassifier = field(repr=False)
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.y_true == self.y_pred))


@dataclass
class CVResult:
    """Every fold's outcome, plus what is needed to read them (class ids and names).

    ``folds`` maps each test fold's number to its ``FoldResult`` (``cv.folds[2]`` is fold 2),
    in the order the folds ran; ``class_names[i]`` names class id ``classes[i]``.
    """

    folds: dict[int, FoldResult]
    classes: np.ndarray  # class ids, shape (n_classes,)
    class_names: list[str]

    @property
    def names_by_target(self) -> dict[int, str]:
        """Class id -> category name."""
        return dict(zip(self.classes.tolist(), self.class_names))

    @property
    def fold_accuracy(self) -> dict[int, float]:
        return {k: f.accuracy for k, f in self.folds.items()}

    @property
    def accuracy_mean(self) -> float:
        return float(np.mean(list(self.fold_accuracy.values())))

    @property
    def accuracy_std(self) -> float:
        """Sample standard deviation (ddof=1) over test folds; 0 for a single fold."""
        values = list(self.fold_accuracy.values())
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def make_splits(dataset: Dataset, folds=None, validation: str = "auto") -> list[Split]:
    """The splits for ``folds`` (default: every listed fold) under a validation policy:
    ``"auto"`` holds out the next listed fold for early stopping, ``"none"`` trains on every
    non-test fold."""
    return folds_mod.splits(dataset, folds, val_fold="auto" if validation == "auto" else None)


def fit_fold(X: np.ndarray, y: np.ndarray, split: Split, params: dict[str, Any], *, refit: bool = True,
             callback: Callable[[dict], None] | None = None) -> FoldResult:
    """Train one estimator for ``split`` and predict its test fold.

    Parameters
    ----------
    X : ndarray, shape (n_clips, n_features)
        Features of every clip, in dataset row order.
    y : ndarray, shape (n_clips,)
        Class id of every clip.
    split : Split
        Row positions of train, validation and test.
    params : dict
        ``ANNClassifier`` parameters.
    refit : bool
        With a validation fold, retrain on train + validation for the epoch count early stopping
        chose, so the validation fold's clips are not lost to training.

    Without early stopping (``patience`` None) a validation fold has nothing to choose, so it
    simply joins the training rows.
    """
    start = time.perf_counter()
    model = ANNClassifier(**params)
    early_stopping = split.val.size > 0 and model.patience is not None
    if early_stopping:
        model.fit(X[split.train], y[split.train], X_val=X[split.val], y_val=y[split.val], callback=callback)
    else:
        train = np.concatenate([split.train, split.val])
        model.fit(X[train], y[train], callback=callback)
    history, best_epoch = model.history_, model.best_epoch_
    if early_stopping and refit:
        train_val = np.concatenate([split.train, split.val])
        model = ANNClassifier(**{**params, "max_epochs": best_epoch, "patience": None})
        model.fit(X[train_val], y[train_val])
    proba = model.predict_proba(X[split.test])
    return FoldResult(
        test_fold=split.test_fold, val_fold=split.val_fold, test_index=split.test, y_true=y[split.test],
        y_pred=model.classes_[np.argmax(proba, axis=1)], proba=proba, history=history,
        best_epoch=best_epoch, model=model, seconds=time.perf_counter() - start,
    )


def cross_validate(X: np.ndarray, dataset: Dataset, params: dict[str, Any], *, folds=None,
                   validation: str = "auto", refit: bool = True, n_jobs: int = 1,
                   progress: bool = True) -> CVResult:
    """Cross-validate ``ANNClassifier(**params)`` over the dataset's folds.

    Parameters
    ----------
    X : ndarray, shape (n_clips, n_features)
        Features in ``dataset.meta`` row order.
    dataset : Dataset
        Supplies folds, targets and class names.
    folds : list of int, optional
        Test folds to run; default every fold the metadata lists.
    validation : {"auto", "none"}
        ``"auto"``: the next listed fold after the test fold is held out of training for early
        stopping; ``"none"``: train on all other folds for ``max_epochs``.
    n_jobs : int
        Folds trained in parallel (each worker's BLAS limited to one thread). Results are the
        same as serial: every fold has its own seeded estimator.
    """
    if X.shape[0] != len(dataset):
        raise DatasetError(f"features have {X.shape[0]} rows but the dataset has {len(dataset)} clips")
    splits = make_splits(dataset, folds, validation)
    y = dataset.targets
    if n_jobs == 1:
        results = []
        for split in tqdm(splits, desc="folds", unit="fold", disable=not progress):
            with tqdm(desc=f"fold {split.test_fold} epochs", unit="epoch", leave=False,
                      disable=not progress) as epochs:
                results.append(fit_fold(X, y, split, params, refit=refit, callback=lambda row: epochs.update()))
    else:
        jobs = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_fit_fold_single_thread)(X, y, s, params, refit) for s in splits)
        results = list(tqdm(jobs, total=len(splits), desc="folds (parallel)", unit="fold", disable=not progress))
    classes = results[0].model.classes_
    names = dataset.names_by_target
    return CVResult(folds={r.test_fold: r for r in results}, classes=classes,
                    class_names=[names[int(t)] for t in classes])


def _fit_fold_single_thread(X, y, split, params, refit):
    # Parallel folds share the cores; one BLAS thread each avoids oversubscription.
    with threadpool_limits(limits=1):
        return fit_fold(X, y, split, params, refit=refit)
