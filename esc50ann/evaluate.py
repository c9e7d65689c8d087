"""Fold cross-validation: train on some folds, test on the held-out one, for every listed fold.

Leakage rules, enforced here:

* splits are whole folds (``esc50ann.folds``), so clips cut from one source recording never
  straddle train, validation and test;
* early stopping watches a whole *training* fold, never the test fold;
* standardisation is fit inside the estimator, on the rows it is trained on only.
"""
from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from esc50ann import folds as folds_mod
from esc50ann.dataset import Dataset
from esc50ann.errors import DatasetError
from esc50ann.folds import Split
from esc50ann.model import ANNClassifier, default_params
from esc50ann import progress as progress_mod
from esc50ann.parallel import Runner
from esc50ann.train import instability


@dataclass
class FoldResult:
    """One test fold's outcome.

    ``test_index`` holds row positions into the dataset's metadata, shape (n_test,);
    ``proba`` has shape (n_test, n_classes) with columns in ``CVResult.classes`` order;
    ``histories`` and ``best_epochs`` hold every network's training history and kept epoch (of
    the first fit, before any refit).
    """

    test_fold: int | None  # None: a final model trained on every fold
    val_fold: int | None
    test_index: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray
    proba: np.ndarray
    histories: list[list[dict]]
    best_epochs: list[int]
    model: ANNClassifier = field(repr=False)
    seconds: float = 0.0
    refitted: bool = False  # the model was retrained on train + validation after early stopping

    @property
    def history(self) -> list[dict]:
        """The first network's history."""
        return self.histories[0]

    @property
    def best_epoch(self) -> int | None:
        """The first network's kept epoch."""
        return self.best_epochs[0]

    @property
    def stability(self) -> list[dict]:
        """Per network, how its training loss ended against its lowest (``esc50ann.train.instability``)."""
        return [{"network": j, **instability(h, e)} for j, (h, e) in enumerate(zip(self.histories, self.best_epochs),
                                                                                start=1) if h]

    @property
    def warnings(self) -> list[str]:
        """One line per network of this fold that ended on a spike of its training loss."""
        label = "final model" if self.test_fold is None else f"fold {self.test_fold}"
        lines = []
        for s in self.stability:
            if s["unstable"]:
                who = f"{label} network {s['network']}" if len(self.histories) > 1 else label
                lines.append(f"{who}: unstable training: the training loss at the kept epoch {s['kept_epoch']} is "
                             f"{s['final_loss']:.4f}, {s['ratio']:.1f}x its minimum {s['min_loss']:.4f} (epoch "
                             f"{s['min_epoch']}); decay the learning rate (training.lr_schedule = \"cosine\") or lower it")
        return lines

    @property
    def accuracy(self) -> float | None:
        return float(np.mean(self.y_true == self.y_pred)) if len(self.y_true) else None

    def __repr__(self):
        acc = "no test fold" if self.accuracy is None else f"accuracy {100 * self.accuracy:.1f} %"
        return (f"FoldResult(test fold {self.test_fold}, validation fold {self.val_fold}, {len(self.y_true)} "
                f"test clips, {acc}, {len(self.history)} epochs, {self.seconds:.1f} s)")


@dataclass
class CVResult:
    """Every fold's outcome, plus what is needed to read them (class ids and names).

    ``folds`` maps each test fold's number to its ``FoldResult`` (``cv.folds[2]`` is fold 2),
    in the order the folds ran; ``class_names[i]`` names class id ``classes[i]``.
    """

    folds: dict[int, FoldResult]
    classes: np.ndarray  # class ids, shape (n_classes,)
    class_names: list[str]

    def __repr__(self):
        folds = ", ".join(f"{k}: {100 * a:.1f} %" for k, a in self.fold_accuracy.items())
        return (f"CVResult(accuracy {100 * self.accuracy_mean:.1f} % ± {100 * self.accuracy_std:.1f} over "
                f"{len(self.folds)} folds ({folds}), {len(self.classes)} classes)")

    @property
    def names_by_target(self) -> dict[int, str]:
        """Class id -> category name."""
        return dict(zip(self.classes.tolist(), self.class_names))

    @property
    def fold_accuracy(self) -> dict[int, float]:
        return {k: f.accuracy for k, f in self.folds.items()}

    @property
    def warnings(self) -> list[str]:
        """Every fold's warnings (``FoldResult.warnings``): networks that ended on a loss spike."""
        return [line for f in self.folds.values() for line in f.warnings]

    @property
    def accuracy_mean(self) -> float:
        return float(np.mean(list(self.fold_accuracy.values())))

    @property
    def accuracy_std(self) -> float:
        """Sample standard deviation (ddof=1) over test folds; 0 for a single fold."""
        values = list(self.fold_accuracy.values())
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def training_rows(X: np.ndarray, y: np.ndarray, rows: np.ndarray, X_aug: np.ndarray | None = None):
    """The clips ``rows`` (positions) as training data: their features and labels, followed by
    every augmented copy of each of them when ``X_aug`` (n_clips, n_copies, n_features) is given.

    Returns
    -------
    X_rows : ndarray, shape (len(rows) * (1 + n_copies), n_features)
    y_rows : ndarray, shape (len(rows) * (1 + n_copies),)
    """
    if X_aug is None:
        return X[rows], y[rows]
    copies = X_aug[rows].reshape(-1, X.shape[1])
    return np.concatenate([X[rows], copies]), np.concatenate([y[rows], np.repeat(y[rows], X_aug.shape[1])])


def fit_fold(X: np.ndarray, y: np.ndarray, split: Split, params: dict[str, Any], *, refit: bool = True,
             callback: Callable[[dict], None] | None = None, X_aug: np.ndarray | None = None,
             networks=None) -> FoldResult:
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
    X_aug : ndarray of shape (n_clips, n_copies, n_features), optional
        Augmented copies of every clip (``FeatureSet.X_aug``): those of the training clips are
        added to the training rows; validation and test clips are scored as they are.
    networks : sequence of int, optional
        Train only these networks of the ensemble (``ANNClassifier.fit``); ``join_parts`` puts
        the parts of a fold together. Only where the fold has no early stopping (``splittable``).

    Without early stopping (``patience`` None) a validation fold has nothing to choose, so it
    simply joins the training rows.
    """
    start = time.perf_counter()
    model = ANNClassifier(**params)
    early_stopping = split.val.size > 0 and model.patience is not None
    train_val = np.concatenate([split.train, split.val])
    if early_stopping:
        model.fit(*training_rows(X, y, split.train, X_aug), X_val=X[split.val], y_val=y[split.val],
                  callback=callback)
    else:
        model.fit(*training_rows(X, y, train_val, X_aug), callback=callback, networks=networks)
    histories, best_epochs = model.histories_, model.best_epochs_
    if early_stopping and refit:
        model = ANNClassifier(**{**params, "max_epochs": best_epochs[0], "patience": None})
        model.fit(*training_rows(X, y, train_val, X_aug))
    proba = (model.predict_proba(X[split.test]) if split.test.size
             else np.empty((0, len(model.classes_)), dtype=np.float32))
    return FoldResult(
        test_fold=split.test_fold, val_fold=split.val_fold, test_index=split.test, y_true=y[split.test],
        y_pred=model.classes_[np.argmax(proba, axis=1)], proba=proba, histories=histories,
        best_epochs=best_epochs, model=model, seconds=time.perf_counter() - start,
        refitted=early_stopping and refit,
    )


def splittable(split: Split, params: dict[str, Any]) -> int:
    """Into how many parts the fold's training can be cut: its networks, unless early stopping
    (on a validation fold) makes the ensemble stop as a whole, or they are snapshots of one."""
    params = {**default_params(), **params}
    stops_early = split.val.size > 0 and params["patience"] is not None
    if stops_early or params["ensemble"] == "snapshots":
        return 1
    return params["n_networks"]


def join_parts(parts: list[FoldResult]) -> FoldResult:
    """One fold's result from the results of its parts (each trained some of its networks, in
    network order): the ensemble joined, its probabilities the mean over all its networks."""
    if len(parts) == 1:
        return parts[0]
    model = ANNClassifier.join([p.model for p in parts])
    sizes = np.array([len(p.model.networks_) for p in parts], dtype=np.float64)
    proba = sum(w * p.proba for w, p in zip(sizes, parts)) / sizes.sum()
    first = parts[0]
    return FoldResult(
        test_fold=first.test_fold, val_fold=first.val_fold, test_index=first.test_index, y_true=first.y_true,
        y_pred=model.classes_[np.argmax(proba, axis=1)], proba=proba,
        histories=[h for p in parts for h in p.histories], best_epochs=[e for p in parts for e in p.best_epochs],
        model=model, seconds=sum(p.seconds for p in parts), refitted=first.refitted)


def cross_validate(X: np.ndarray, dataset: Dataset, params: dict[str, Any], *, folds=None,
                   validation: str = "auto", refit: bool = True, n_jobs: int = 1,
                   progress: bool = True, verbose: bool = False, X_aug: np.ndarray | None = None) -> CVResult:
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
        Folds trained in parallel (each worker's BLAS limited to one thread). When the folds do
        not fill the last round of workers (3 folds on 2), the ensembles of that round's folds
        are trained in parts side by side (``Runner.parts``): a network trains the same in a
        part as in the whole. Results are the same as serial: every fold has its own seeded
        estimator. A fold's ``seconds`` is then the sum over its parts.
    progress : bool
        Per-fold epoch bars with the running loss on a terminal; elsewhere a line per finished
        fold (see ``esc50ann.progress``). Parallel folds report their epochs too.
    verbose : bool
        Also a line per epoch.
    X_aug : ndarray of shape (n_clips, n_copies, n_features), optional
        Augmented copies of every clip; each fold trains on those of its training clips only.
    """
    if X.shape[0] != len(dataset):
        raise DatasetError(f"features have {X.shape[0]} rows but the dataset has {len(dataset)} clips")
    splits = folds_mod.splits(dataset, folds, val_fold=validation)
    results = fit_splits(X, dataset.targets, splits, params, refit=refit, n_jobs=n_jobs, progress=progress,
                         verbose=verbose, X_aug=X_aug)
    classes = results[0].model.classes_
    names = dataset.names_by_target
    return CVResult(folds={r.test_fold: r for r in results}, classes=classes,
                    class_names=[names[int(t)] for t in classes])


def fit_splits(X: np.ndarray, y: np.ndarray, splits: list[Split], params: dict[str, Any], *, refit: bool = True,
               n_jobs: int = 1, progress: bool = True, verbose: bool = False,
               X_aug: np.ndarray | None = None) -> list[FoldResult]:
    """``fit_fold`` for every split, on ``n_jobs`` workers (``Runner``): the results in split order.

    Splits train side by side; where they do not fill the last round of workers, the ensembles
    of that round are cut into parts (``Runner.parts``, ``splittable``) and joined again
    (``join_parts``), so one final model of three networks trains on two cores as networks 1-2
    beside network 3. Progress as in ``cross_validate``.
    """
    with _EpochReporter(splits, params, progress=progress, verbose=verbose,
                        across_processes=n_jobs != 1) as reporter:
        runner = Runner(n_jobs)
        units = [splittable(s, params) for s in splits]
        plan = runner.parts(units)
        tasks = [(X, y, splits[i], params, refit, reporter.callback(i), X_aug,
                  None if len(part) == units[i] else list(part)) for i, part in plan]
        results, pieces = [None] * len(splits), [{} for _ in splits]
        for position, result in runner.map(_fit, tasks):
            i, part = plan[position]
            pieces[i][part.start] = result
            if len(pieces[i]) == sum(j == i for j, _ in plan):  # every part of split i is in
                results[i] = join_parts([pieces[i][k] for k in sorted(pieces[i])])
                reporter.done(i, results[i])
    return results


class _EpochReporter:
    """Epoch progress of every split, also from worker processes (through a manager queue).

    On a terminal each split gets a bar (epochs, running loss); anywhere else a line per finished
    split; ``verbose`` adds a line per epoch. Splits are named "fold K" by their test fold, or
    "final model" (no test fold).
    """

    def __init__(self, splits, params, *, progress, verbose, across_processes):
        self.progress, self.verbose = progress, verbose
        params = {**default_params(), **params}
        self.epochs = params["max_epochs"]
        # every network of an ensemble reports its epochs: the bar counts them all (snapshots: one's)
        self.total = self.epochs * (1 if params["ensemble"] == "snapshots" else params["n_networks"])
        self.labels = ["final model" if s.test_fold is None else f"fold {s.test_fold}" for s in splits]
        self.bars = [progress_mod.bar(total=self.total, desc=label, unit="epoch", position=i, leave=False,
                                      enabled=progress) for i, label in enumerate(self.labels)]
        self.wanted = progress and (verbose or progress_mod.interactive())
        self.queue = self._manager = self._listener = None
        if self.wanted and across_processes:
            import multiprocessing

            self._manager = multiprocessing.Manager()
            self.queue = self._manager.Queue()

    def __enter__(self):
        if self.queue is not None:
            self._listener = threading.Thread(target=self._listen, daemon=True)
            self._listener.start()
        return self

    def __exit__(self, *exc):
        if self.queue is not None:
            self.queue.put(None)
            self._listener.join()
            self._manager.shutdown()
        for bar in self.bars:
            bar.close()

    def callback(self, i):
        """What split ``i``'s trainer calls after every epoch (picklable when it runs elsewhere)."""
        if not self.wanted:
            return None
        if self.queue is not None:
            return functools.partial(_put_row, self.queue, i)
        return functools.partial(self.epoch, i)

    def epoch(self, i, row):
        bar = self.bars[i]
        bar.update()
        bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
        if self.verbose:
            progress_mod.note(progress_mod.epoch_line(self.labels[i], row, self.epochs))

    def done(self, i, result):
        self.bars[i].close()
        if self.progress:
            scored = "trained" if result.accuracy is None else f"accuracy {100 * result.accuracy:.1f} %"
            progress_mod.note(f"{self.labels[i]}: {scored} ({len(result.history)} epochs, {result.seconds:.1f} s)")

    def _listen(self):
        while (item := self.queue.get()) is not None:
            self.epoch(*item)


def _put_row(queue, i, row):
    queue.put((i, row))


def _fit(X, y, split, params, refit, callback, X_aug, networks):
    return fit_fold(X, y, split, params, refit=refit, callback=callback, X_aug=X_aug, networks=networks)
