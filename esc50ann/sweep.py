"""Sweeps: many configurations of one pipeline, chosen honestly by nested cross-validation.

A sweep file (``esc50ann.sweepfile``) names a base pipeline and the values to try. For every outer
test fold (every fold the metadata lists) an inner cross-validation over the remaining folds --
each held out whole in turn -- scores every configuration; the best mean inner accuracy picks
one, and that configuration's model trained on all the outer-training folds is scored once on the
outer test fold. The test fold never influences a choice: the nested figure is the honest one.
The best configuration by plain cross-validation over the outer folds is reported beside it,
labelled optimistic.

Every (configuration, split) fit is one task, run by ``esc50ann.parallel`` across local cores
(one BLAS thread each) or on a Dask distributed cluster (``cluster="tcp://host:8786"`` or
``"local:N"``), the feature matrices sent to the workers once. Each finished task is written
atomically under ``<out>/tasks/``: a sweep killed half-way resumes from the tasks it had finished,
and gives the same numbers wherever it runs (every fit is seeded).
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from esc50ann import features as features_mod
from esc50ann import parallel
from esc50ann import progress as progress_mod
from esc50ann import report as report_mod
from esc50ann.errors import Esc50Error, one_line
from esc50ann import evaluate
from esc50ann.fileio import json_default, make_folder, sha256, write_text
from esc50ann.folds import split as split_folds
from esc50ann.params import Document, Integral, Interval, ListOf, Real
from esc50ann.pipeline import Pipeline
from esc50ann.sweepfile import Sweep

__all__ = ["Sweep", "Task", "tasks_for", "run_task", "SweepResult", "run"]


# --------------------------------------------------------------------------- tasks

@dataclass(frozen=True)
class Task:
    """One fit: configuration ``config``, trained on every listed fold but ``outer`` (and
    ``inner``), scored on ``inner`` (inner CV) or on ``outer`` (``inner`` None)."""

    config: int
    outer: int
    inner: int | None

    @property
    def test_fold(self) -> int:
        return self.outer if self.inner is None else self.inner


def tasks_for(n_configs: int, folds: list[int]) -> list[Task]:
    """Every (configuration, split) of nested cross-validation over ``folds``."""
    tasks = []
    for c in range(n_configs):
        for outer in folds:
            tasks.append(Task(c, outer, None))
            tasks += [Task(c, outer, inner) for inner in folds if inner != outer]
    return tasks


def run_task(X, dataset, task: Task, params: dict, validation: str, refit: bool, X_aug=None) -> dict:
    """Fit and score one task on the feature rows ``X`` of ``dataset`` (the feature set's own);
    returns its JSON-ready result (the test clips' true and predicted classes for outer tasks).
    ``X_aug`` (n_clips, n_copies, n_features): augmented copies, trained on for training clips only."""
    start = time.perf_counter()
    keep = dataset.meta["fold"].to_numpy() != task.outer if task.inner is not None else slice(None)
    rows = np.arange(len(dataset))[keep]
    part = dataset.select(dataset.meta["filename"].to_numpy()[rows]) if task.inner is not None else dataset
    enough = len(part.folds) >= 3  # a validation fold needs a training fold beside it
    split = split_folds(part, task.test_fold, validation if enough else "none")
    result = evaluate.fit_fold(np.asarray(X)[rows], part.targets, split, params, refit=refit,
                      X_aug=None if X_aug is None else np.asarray(X_aug)[rows])
    outer = task.inner is None
    return {"config": task.config, "outer": task.outer, "inner": task.inner, "accuracy": result.accuracy,
            "seconds": time.perf_counter() - start, "epochs": len(result.history),
            "test_index": rows[split.test].tolist() if outer else None,
            "y_true": result.y_true.tolist() if outer else None,
            "y_pred": result.y_pred.tolist() if outer else None}


# --------------------------------------------------------------------------- running

@dataclass
class SweepResult:
    """What a sweep found.

    ``scores`` has one row per task (``config``, ``outer``, ``inner`` (NaN for an outer task),
    ``accuracy``, ``seconds``) plus a column per swept key; ``chosen[outer]`` is the
    configuration the inner CV picked for that outer fold; ``nested_fold_accuracy[outer]`` its
    score there (the honest figure); ``optimistic_config`` the best by outer-fold CV.
    """

    sweep: Sweep
    scores: pd.DataFrame
    chosen: dict[int, int]
    nested_fold_accuracy: dict[int, float]
    per_class: pd.DataFrame
    optimistic_config: int
    optimistic_fold_accuracy: dict[int, float]
    out_dir: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def nested_mean(self) -> float:
        return float(np.mean(list(self.nested_fold_accuracy.values())))

    @property
    def nested_std(self) -> float:
        values = list(self.nested_fold_accuracy.values())
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    @property
    def optimistic_mean(self) -> float:
        return float(np.mean(list(self.optimistic_fold_accuracy.values())))

    def __repr__(self):
        return (f"SweepResult({self.sweep.name!r}: {len(self.sweep.configurations)} configurations, "
                f"nested {100 * self.nested_mean:.1f} % ± {100 * self.nested_std:.1f}, "
                f"optimistic {100 * self.optimistic_mean:.1f} %)")

    def plot(self):
        """Mean outer-fold accuracy against each swept key (one panel per key); a ``Figure``."""
        from matplotlib.figure import Figure

        keys = list(self.sweep.values)
        fig = Figure(figsize=(max(7.0, 4 * len(keys)), 3.8), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(keys)))
        outer = self.scores[self.scores["inner"].isna()]
        for ax, key in zip(axes, keys):
            labels = outer[key].map(_label)
            means = outer.groupby(labels)["accuracy"].mean()
            numeric = pd.to_numeric(pd.Series(means.index), errors="coerce")
            if numeric.notna().all():
                order = np.argsort(numeric.to_numpy())
                xs, ys = numeric.to_numpy()[order], means.to_numpy()[order]
                ax.plot(xs, 100 * ys, "o-")
                ax.scatter(pd.to_numeric(labels), 100 * outer["accuracy"], s=8, alpha=0.4)
                if key.endswith(("learning_rate", "weight_decay")) and (xs > 0).all():
                    ax.set_xscale("log")
            else:
                means = means.loc[sorted(means.index, key=_order_key)]
                ax.bar(range(len(means)), 100 * means.to_numpy(), tick_label=list(means.index))
            ax.set_xlabel(key)
            ax.set_ylabel("outer-fold accuracy %")
            ax.grid(alpha=0.3)
        fig.suptitle(f"Sweep {self.sweep.name}: outer-fold accuracy per value (dots: single folds)",
                     fontsize="medium")
        return fig


def _label(value):
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _order_key(label):
    """Sort labels of list values by their numbers (``[64]`` before ``[256]``), others as text."""
    try:
        value = json.loads(label)
    except (TypeError, ValueError):
        return (1, (), str(label))
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        return (0, tuple(value), "")
    return (1, (), str(label))


def run(sweep: Sweep | str | Path, *, data_dir=None, source=None, out=None, n_jobs: int = -1,
        cluster: str | None = None, progress: bool = True) -> SweepResult:
    """Run a sweep with nested cross-validation and write its report folder.

    Parameters
    ----------
    sweep : Sweep or path
    data_dir, source
        As for ``Pipeline``.
    out : path, optional
        Report folder; default ``<data_dir>/runs/sweep-<name>-<stamp>``. Rerunning into the
        same folder resumes: finished tasks are read back, not refitted.
    n_jobs : int
        Local worker processes (-1: all cores); ignored with a cluster.
    cluster : str, optional
        ``"tcp://host:port"`` (an existing Dask scheduler) or ``"local:N"`` (a ``LocalCluster`` of
        N single-threaded worker processes on 127.0.0.1); default the sweep file's ``cluster``.
    """
    sweep = sweep if isinstance(sweep, Sweep) else Sweep.from_toml(sweep)
    cluster = cluster or sweep.cluster
    parallel.check_cluster(cluster)  # before any work: nothing announced, no folder made
    base = Pipeline(sweep.base, data_dir=data_dir, source=source, progress=progress)
    dataset = base.download()
    out_dir = Path(out) if out else base.data_dir / "runs" / f"sweep-{sweep.name}-{datetime.now():%Y%m%d-%H%M%S}"
    make_folder(out_dir / "tasks")
    folds = dataset.folds
    if len(folds) < 3:
        raise Esc50Error(f"nested cross-validation needs at least 3 folds; the metadata lists {folds}")
    tasks = tasks_for(len(sweep.configurations), folds)
    done = {t: r for t in tasks if (r := _read_task(out_dir, sweep, t, dataset)) is not None}
    todo = [t for t in tasks if t not in done]
    progress_mod.note(f"sweep {sweep.name}: {len(sweep.configurations)} configurations x "
                      f"{len(tasks) // len(sweep.configurations)} splits = {len(tasks)} tasks "
                      f"({len(done)} already done) in {out_dir}", enabled=progress)
    with parallel.cluster(cluster, n_jobs=n_jobs) as runner:
        features = _features(sweep, base, todo, runner)
        for task, result in _execute(todo, sweep, features, runner, progress):
            write_text(_task_path(out_dir, sweep, task), json.dumps(result, default=json_default))
            done[task] = result
    result = _summarise(sweep, dataset, [done[t] for t in tasks])
    result.out_dir = out_dir
    result.metrics = _metrics(result, dataset, cluster)
    report_mod.write_sweep(out_dir, result.metrics, scores=result.scores, per_class=result.per_class,
                           figure=result.plot)
    report_mod.remember(base.data_dir, out_dir)
    progress_mod.note(f"sweep {sweep.name}: nested accuracy {100 * result.nested_mean:.1f} % ± "
                      f"{100 * result.nested_std:.1f}; optimistic (best by outer-fold CV) "
                      f"{100 * result.optimistic_mean:.1f} %", enabled=progress)
    return result


def _task_path(out_dir: Path, sweep: Sweep, task: Task) -> Path:
    # Named by what the task computes, so an edited sweep file never reuses a stale result.
    what = json.dumps([sweep.pipelines[task.config].to_doc(), task.outer, task.inner], sort_keys=True,
                      default=json_default)
    return out_dir / "tasks" / f"{sha256(what.encode())[:16]}.json"


_LABELS = [ListOf(Interval(Integral, 0)), None]
# The shape of a task file (what ``run_task`` returns), checked before a resumed sweep uses it.
TASK_FILE = Document({
    "config": [Interval(Integral, 0)], "outer": [Interval(Integral)], "inner": [Interval(Integral), None],
    "accuracy": [Interval(Real, 0, 1)], "seconds": [Interval(Real, 0)], "epochs": [Interval(Integral, 0)],
    "test_index": _LABELS, "y_true": _LABELS, "y_pred": _LABELS,
}, description="an object (a sweep task's result)")


def _read_task(out_dir, sweep, task, dataset):
    """The finished result of ``task`` in ``out_dir/tasks/``, or None to run it (again): none yet,
    or one that is unreadable, of the wrong shape (``TASK_FILE``) or not of this task and these
    clips -- said in a warning, as a damaged cache entry is."""
    path = _task_path(out_dir, sweep, task)
    if path.is_dir():  # said before any task runs, not when its result cannot be written
        raise Esc50Error(f"{path}: is a folder, where a sweep task file belongs; move it away")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        problem = f"unreadable ({one_line(exc)})"
    else:
        problem = TASK_FILE.problem(result) or _task_mismatch(result, task, dataset)
    if problem:
        warnings.warn(f"{path}: {problem}; running the task again", stacklevel=2)
        return None
    return result


def _task_mismatch(result, task, dataset) -> str | None:
    """What makes a well-formed task result not the result of ``task`` on ``dataset``, or None."""
    if (result["config"], result["outer"], result["inner"]) != (task.config, task.outer, task.inner):
        return "the result of another task"
    if task.inner is None:
        lists = [result[k] for k in ("test_index", "y_true", "y_pred")]
        targets = set(dataset.targets.tolist())
        if (any(v is None for v in lists) or len({len(v) for v in lists}) != 1
                or any(i >= len(dataset) for i in lists[0])
                or not set(lists[1]) | set(lists[2]) <= targets):
            return "test predictions that do not fit the clips"
    return None


def _features(sweep, base, todo, runner) -> dict[int, tuple]:
    """Configuration index -> ``(X, X_aug, dataset)``: its feature matrix, augmented copies and the
    dataset of their rows (one extraction per distinct feature config, on the runner's workers),
    shared with the workers once."""
    by_features: dict[str, list[int]] = {}
    for c in sorted({t.config for t in todo}):
        by_features.setdefault(json.dumps(sweep.pipelines[c].features.to_dict(), sort_keys=True), []).append(c)
    shared = {}
    for configs in by_features.values():
        feats = features_mod.extract(base.download(), sweep.pipelines[configs[0]].features, base.cache_dir,
                                     runner=runner, progress=base.progress)
        triple = tuple(None if a is None else runner.share(a)
                       for a in (np.asarray(feats.X), None if feats.X_aug is None else np.asarray(feats.X_aug),
                                 feats.dataset))
        for c in configs:
            shared[c] = triple
    return shared


def _execute(todo, sweep, features, runner, progress):
    """Yield (task, result) as tasks finish, with a bar counting tasks (ETA)."""
    def args(task):
        pipe = sweep.pipelines[task.config]
        X, X_aug, dataset = features[task.config]
        return (X, dataset, task, pipe.estimator_params(), pipe.evaluation.validation, pipe.evaluation.refit, X_aug)

    bar = progress_mod.bar(total=len(todo), desc="sweep tasks", unit="task", enabled=progress)
    every, start, finished = max(1, len(todo) // 10), time.perf_counter(), 0
    with bar:
        for position, result in runner.map(run_task, [args(t) for t in todo]):
            yield todo[position], result
            finished += 1
            bar.update()
            if progress and not progress_mod.interactive() and (finished % every == 0 or finished == len(todo)):
                eta = (time.perf_counter() - start) / finished * (len(todo) - finished)
                progress_mod.note(f"sweep tasks: {finished}/{len(todo)} done, about {eta:.0f} s to go")


def _summarise(sweep, dataset, results) -> SweepResult:
    scores = pd.DataFrame([{k: r[k] for k in ("config", "outer", "inner", "accuracy", "seconds", "epochs")}
                           for r in results])
    scores["inner"] = scores["inner"].astype("Int64")  # fold numbers, empty for outer tasks (not 2.0)
    for key in sweep.values:
        scores[key] = [_label(sweep.configurations[c][key]) for c in scores["config"]]
    inner = scores[scores["inner"].notna()]
    outer = scores[scores["inner"].isna()]
    chosen, nested = {}, {}
    for fold, rows in inner.groupby("outer"):
        means = rows.groupby("config")["accuracy"].mean()
        chosen[int(fold)] = int(means.idxmax())  # ties: the first configuration listed
        nested[int(fold)] = float(outer[(outer["outer"] == fold) & (outer["config"] == chosen[int(fold)])]
                                  ["accuracy"].iloc[0])
    by_config = outer.groupby("config")["accuracy"].mean()
    best = int(by_config.idxmax())
    optimistic = {int(r.outer): float(r.accuracy) for r in outer[outer["config"] == best].itertuples()}
    per_class = report_mod.per_class_table(_nested_predictions(results, chosen, dataset.names_by_target))
    return SweepResult(sweep, scores, chosen, nested, per_class, best, optimistic)


def _nested_predictions(results, chosen, names) -> pd.DataFrame:
    """The nested predictions (each outer fold by its chosen configuration) as a predictions table."""
    rows = [(r["outer"], t, p) for r in results if r["inner"] is None and chosen.get(r["outer"]) == r["config"]
            for t, p in zip(r["y_true"], r["y_pred"])]
    frame = pd.DataFrame(rows, columns=["fold", "true_target", "predicted_target"])
    frame["true"], frame["predicted"] = frame["true_target"].map(names), frame["predicted_target"].map(names)
    return frame


def _metrics(result: SweepResult, dataset, cluster) -> dict[str, Any]:
    """The sweep's ``metrics.json`` content."""
    sweep, configs = result.sweep, result.sweep.configurations
    return {
        "sweep": sweep.name, "source_file": sweep.source_file, "base_pipeline": sweep.base.name,
        "mode": sweep.mode, "seed": sweep.seed, "cluster": cluster, "folds": dataset.folds,
        "dataset": str(dataset.root), "dataset_layout": dataset.layout,
        "n_configurations": len(configs), "n_tasks": len(result.scores),
        # Inner splits have one fold fewer: with under 3 folds there is none left to stop early
        # on, so inner fits train every epoch while outer fits stop early.
        "inner_fits_train_every_epoch": (len(dataset.folds) < 4 and sweep.base.evaluation.validation != "none"
                                         and sweep.base.estimator_params()["patience"] is not None),
        "nested_accuracy_mean": result.nested_mean, "nested_accuracy_std": result.nested_std,
        "nested_fold_accuracy": {str(k): v for k, v in result.nested_fold_accuracy.items()},
        "chosen_configuration": {str(k): configs[c] for k, c in result.chosen.items()},
        "optimistic_accuracy_mean": result.optimistic_mean,
        "optimistic_fold_accuracy": {str(k): v for k, v in result.optimistic_fold_accuracy.items()},
        "optimistic_configuration": configs[result.optimistic_config],
        "nested_per_class_accuracy": dict(zip(result.per_class["category"], result.per_class["accuracy"])),
        "finished": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
