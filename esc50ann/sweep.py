"""Sweeps: many configurations of one pipeline, chosen honestly by nested cross-validation.

A sweep file names a base pipeline and the values to try for any of its dotted keys::

    pipeline = "default"                 # a built-in name, or a file (relative to the sweep file)
    mode = "grid"                        # or "random" (then n_samples and seed)
    [values]
    "training.learning_rate" = [1e-4, 3e-4, 1e-3]
    "model.hidden_layer_sizes" = [[512], [1024]]
    "training.weight_decay" = { loguniform = [1e-5, 1e-2] }   # random mode only (also uniform)

For every outer test fold (every fold the metadata lists) an inner cross-validation over the
remaining folds -- each held out whole in turn -- scores every configuration; the best mean inner
accuracy picks one, and that configuration's model trained on all the outer-training folds is
scored once on the outer test fold. The test fold never influences a choice: the nested figure is
the honest one. The best configuration by plain cross-validation over the outer folds is reported
beside it, labelled optimistic.

Every (configuration, split) fit is one task, run with joblib across local cores (one BLAS thread
each) or on a Dask distributed cluster (``cluster="tcp://host:8786"`` or ``"local:N"``), the
feature matrices sent to the workers once. Each finished task is written atomically under
``<out>/tasks/``: a sweep killed half-way resumes from the tasks it had finished, and gives the
same numbers wherever it runs (every fit is seeded).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from esc50ann import config as config_mod
from esc50ann import progress as progress_mod
from esc50ann.errors import ConfigError, Esc50Error
from esc50ann.fileio import json_default, sha256, write_text
from esc50ann.folds import split as split_folds
from esc50ann.params import InstanceOf, Interval, Integral, Options, validate
from esc50ann.pipeline import Pipeline
from esc50ann.worker import exit_with_parent

RANGES = ("loguniform", "uniform")
_CONSTRAINTS = {
    "pipeline": [InstanceOf(str)],
    "mode": [Options("grid", "random")],
    "n_samples": [Interval(Integral, 1), None],
    "seed": [Interval(Integral, 0)],
    "cluster": [InstanceOf(str), None],
    "name": [InstanceOf(str), None],
}


# --------------------------------------------------------------------------- the sweep file

@dataclass
class Sweep:
    """A parsed, checked sweep: the base pipeline and the configurations to try.

    ``configurations[k]`` maps dotted keys to values; ``pipelines[k]`` is the resolved
    ``PipelineConfig`` for it.
    """

    name: str
    base: config_mod.PipelineConfig
    values: dict[str, Any]
    mode: str = "grid"
    n_samples: int | None = None
    seed: int = 0
    cluster: str | None = None
    source_file: str | None = None
    configurations: list[dict[str, Any]] = field(default_factory=list)
    pipelines: list[config_mod.PipelineConfig] = field(default_factory=list, repr=False)

    def __repr__(self):
        return (f"Sweep({self.name!r}: {len(self.configurations)} configurations of {self.base.name!r} "
                f"over {', '.join(self.values)}; {self.mode})")

    @classmethod
    def from_toml(cls, path) -> "Sweep":
        """Read and check a sweep file (see the module docstring)."""
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: sweep file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read sweep file ({exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        return cls.from_dict(doc, where=str(path), folder=path.parent)

    @classmethod
    def from_dict(cls, doc: dict, *, where: str = "<sweep>", folder: Path | None = None) -> "Sweep":
        unknown = sorted(set(doc) - set(_CONSTRAINTS) - {"values"})
        if unknown:
            raise ConfigError(f"{where}: unknown key '{unknown[0]}' (expected {', '.join([*_CONSTRAINTS, 'values'])})")
        settings = {"pipeline": "default", "mode": "grid", "n_samples": None, "seed": 0, "cluster": None,
                    "name": None, **{k: v for k, v in doc.items() if k != "values"}}
        validate(settings, _CONSTRAINTS, where=f"{where}: ")
        base_path = Path(settings["pipeline"])
        if folder is not None and not base_path.is_absolute() and (folder / base_path).is_file():
            base_path = folder / base_path
        base = config_mod.load(config_mod.find(base_path))
        values = _flatten(doc.get("values"), where)
        if settings["mode"] == "random" and settings["n_samples"] is None:
            raise ConfigError(f"{where}: n_samples: random mode needs the number of configurations to draw")
        sweep = cls(name=settings["name"] or Path(where).stem, base=base, values=values, mode=settings["mode"],
                    n_samples=settings["n_samples"], seed=settings["seed"], cluster=settings["cluster"],
                    source_file=where)
        sweep.configurations = (_grid(values, where) if sweep.mode == "grid"
                                else _sample(values, sweep.n_samples, sweep.seed))
        for key, options in values.items():  # every listed value checked as a pipeline file checks it
            for value in options if isinstance(options, list) else []:
                config_mod.override(base, {key: value}, where=f"{where}: values")
        sweep.pipelines = [config_mod.override(base, c, where=f"{where}: values") for c in sweep.configurations]
        return sweep


def _flatten(table, where) -> dict[str, Any]:
    """``[values]`` as dotted key -> list of values or range table; nested tables flattened."""
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{where}: [values] must be a table with at least one key to sweep")
    flat = {}

    def walk(prefix, node):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and not (set(value) & set(RANGES)):
                walk(dotted + ".", value)
            else:
                flat[dotted] = _check_values(dotted, value, where)

    walk("", table)
    return flat


def _check_values(key, value, where):
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: values.{key}: empty list, nothing to try")
        return value
    if isinstance(value, dict):
        kind, = value.keys() if len(value) == 1 else (None,)
        bounds = value.get(kind)
        if (kind not in RANGES or not isinstance(bounds, list) or len(bounds) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
                or not bounds[0] < bounds[1] or (kind == "loguniform" and bounds[0] <= 0)):
            raise ConfigError(f"{where}: values.{key}: a range is {{ loguniform = [low, high] }} or "
                              "{ uniform = [low, high] } with low < high (and low > 0 for loguniform)")
        return value
    raise ConfigError(f"{where}: values.{key}: expected a list of values or a range, not {type(value).__name__}")


def _grid(values, where) -> list[dict[str, Any]]:
    ranges = [k for k, v in values.items() if isinstance(v, dict)]
    if ranges:
        raise ConfigError(f"{where}: values.{ranges[0]}: a range needs mode = \"random\" (a grid takes lists)")
    keys = list(values)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(values[k] for k in keys))]


def _sample(values, n, seed) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    configurations = []
    for _ in range(n):
        config = {}
        for key, options in values.items():
            if isinstance(options, list):
                config[key] = options[int(rng.integers(len(options)))]
                continue
            (kind, (low, high)), = options.items()
            x = math.exp(rng.uniform(math.log(low), math.log(high))) if kind == "loguniform" else rng.uniform(low, high)
            config[key] = int(round(x)) if isinstance(low, int) and isinstance(high, int) else float(x)
        configurations.append(config)
    return configurations


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
    """Fit and score one task; returns its JSON-ready result (predictions for outer tasks).
    ``X_aug`` (n_clips, n_copies, n_features): augmented copies, trained on for training clips only."""
    from threadpoolctl import threadpool_limits

    from esc50ann.evaluate import fit_fold

    start = time.perf_counter()
    keep = dataset.meta["fold"].to_numpy() != task.outer if task.inner is not None else slice(None)
    rows = np.arange(len(dataset))[keep]
    part = dataset.select(dataset.meta["filename"].to_numpy()[rows]) if task.inner is not None else dataset
    enough = len(part.folds) >= 3  # a validation fold needs a training fold beside it
    split = split_folds(part, task.test_fold, "auto" if validation == "auto" and enough else None)
    with threadpool_limits(limits=1):
        result = fit_fold(np.asarray(X)[rows], part.targets, split, params, refit=refit,
                          X_aug=None if X_aug is None else np.asarray(X_aug)[rows])
    return {"config": task.config, "outer": task.outer, "inner": task.inner, "accuracy": result.accuracy,
            "seconds": time.perf_counter() - start, "epochs": len(result.history),
            "test_index": rows[split.test].tolist() if task.inner is None else None,
            "y_pred": result.y_pred.tolist() if task.inner is None else None}


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
        fig = Figure(figsize=(4 * len(keys), 3.5), layout="constrained")
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
                ax.bar(range(len(means)), 100 * means.to_numpy(), tick_label=list(means.index))
            ax.set_xlabel(key)
            ax.set_ylabel("outer-fold accuracy %")
            ax.grid(alpha=0.3)
        fig.suptitle(f"Sweep {self.sweep.name}: accuracy against each swept key (dots: single folds)")
        return fig


def _label(value):
    return json.dumps(value) if isinstance(value, (list, dict)) else value


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
    base = Pipeline(sweep.base, data_dir=data_dir, source=source, progress=progress)
    dataset = base.download()
    out_dir = Path(out) if out else base.data_dir / "runs" / f"sweep-{sweep.name}-{datetime.now():%Y%m%d-%H%M%S}"
    (out_dir / "tasks").mkdir(parents=True, exist_ok=True)
    folds = dataset.folds
    if len(folds) < 3:
        raise Esc50Error(f"nested cross-validation needs at least 3 folds; the metadata lists {folds}")
    tasks = tasks_for(len(sweep.configurations), folds)
    done = {t: r for t in tasks if (r := _read_task(out_dir, sweep, t)) is not None}
    todo = [t for t in tasks if t not in done]
    progress_mod.note(f"sweep {sweep.name}: {len(sweep.configurations)} configurations x "
                      f"{len(tasks) // len(sweep.configurations)} splits = {len(tasks)} tasks "
                      f"({len(done)} already done) in {out_dir}", enabled=progress)
    with _engine(cluster) as client:
        features = _features(sweep, base, todo, client)
        for task, result in _execute(todo, sweep, dataset, features, n_jobs, client, progress):
            write_text(_task_path(out_dir, sweep, task), json.dumps(result, default=json_default))
            done[task] = result
    result = _summarise(sweep, dataset, [done[t] for t in tasks])
    result.out_dir = out_dir
    _write_report(result, dataset, cluster)
    progress_mod.note(f"sweep {sweep.name}: nested accuracy {100 * result.nested_mean:.1f} % ± "
                      f"{100 * result.nested_std:.1f}; optimistic (best by outer-fold CV) "
                      f"{100 * result.optimistic_mean:.1f} %", enabled=progress)
    return result


def _task_path(out_dir: Path, sweep: Sweep, task: Task) -> Path:
    # Named by what the task computes, so an edited sweep file never reuses a stale result.
    what = json.dumps([sweep.pipelines[task.config].to_doc(), task.outer, task.inner], sort_keys=True,
                      default=json_default)
    return out_dir / "tasks" / f"{sha256(what.encode())[:16]}.json"


def _read_task(out_dir, sweep, task):
    try:
        result = json.loads(_task_path(out_dir, sweep, task).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and "accuracy" in result else None


@contextlib.contextmanager
def _engine(cluster: str | None):
    """None for local joblib, else a connected ``distributed.Client`` (closed afterwards)."""
    if not cluster:
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise Esc50Error("--cluster needs Dask distributed: pip install 'esc50ann[cluster]'") from None
    if cluster.startswith("local:"):
        try:
            n = int(cluster.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise Esc50Error(f"cluster {cluster!r}: expected local:N with N >= 1 workers")
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as local, Client(local) as client:
            yield client
        return
    try:
        client = Client(cluster, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise Esc50Error(f"cluster {cluster}: cannot connect to the Dask scheduler ({exc})") from None
    with client:
        yield client


def _features(sweep, base, todo, client) -> dict[int, Any]:
    """Configuration index -> its feature matrix and augmented copies ``(X, X_aug)`` (one
    extraction per distinct feature config), scattered to the cluster's workers once when there is one."""
    by_features: dict[str, list[int]] = {}
    for c in sorted({t.config for t in todo}):
        by_features.setdefault(json.dumps(sweep.pipelines[c].features.to_dict(), sort_keys=True), []).append(c)
    matrices = {}
    for configs in by_features.values():
        pipe = Pipeline(sweep.pipelines[configs[0]], data_dir=base.data_dir, source=base.source,
                        progress=base.progress)
        pipe._dataset = base.download()
        if client is not None:
            from joblib import parallel_config

            with parallel_config(backend="dask"):  # extraction on the cluster too
                feats = pipe.features()
        else:
            feats = pipe.features()
        pair = (np.asarray(feats.X), None if feats.X_aug is None else np.asarray(feats.X_aug))
        if client is not None:
            pair = tuple(None if a is None else client.scatter(a, broadcast=True) for a in pair)
        for c in configs:
            matrices[c] = pair
    return matrices


def _execute(todo, sweep, dataset, features, n_jobs, client, progress):
    """Yield (task, result) as tasks finish, with a bar counting tasks (ETA)."""
    def args(task):
        pipe = sweep.pipelines[task.config]
        X, X_aug = features[task.config]
        return (X, dataset, task, pipe.estimator_params(), pipe.evaluation.validation, pipe.evaluation.refit, X_aug)

    bar = progress_mod.bar(total=len(todo), desc="sweep tasks", unit="task", enabled=progress)
    every, start, finished = max(1, len(todo) // 10), time.perf_counter(), 0

    def tick():
        nonlocal finished
        finished += 1
        bar.update()
        if progress and not progress_mod.interactive() and (finished % every == 0 or finished == len(todo)):
            eta = (time.perf_counter() - start) / finished * (len(todo) - finished)
            progress_mod.note(f"sweep tasks: {finished}/{len(todo)} done, about {eta:.0f} s to go")

    with bar:
        if client is not None:
            from distributed import as_completed

            shared = client.scatter(dataset, broadcast=True)  # once, like the feature matrices
            futures = {}
            for task in todo:
                X, _, _, params, validation, refit, X_aug = args(task)
                futures[client.submit(run_task, X, shared, task, params, validation, refit, X_aug, pure=False)] = task
            for future in as_completed(futures):
                yield futures[future], future.result()
                tick()
        else:
            from joblib import Parallel, delayed

            jobs = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
                delayed(_tagged)(t, *args(t)) for t in todo)
            for task, result in jobs:
                yield task, result
                tick()


def _tagged(task, *args):
    exit_with_parent()
    return task, run_task(*args)


def _summarise(sweep, dataset, results) -> SweepResult:
    scores = pd.DataFrame([{k: r[k] for k in ("config", "outer", "inner", "accuracy", "seconds", "epochs")}
                           for r in results])
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
    per_class = _nested_per_class(results, chosen, dataset)
    return SweepResult(sweep, scores, chosen, nested, per_class, best, optimistic)


def _nested_per_class(results, chosen, dataset) -> pd.DataFrame:
    """Per-class accuracy of the nested predictions (each outer fold by its chosen configuration)."""
    y_true, y_pred = [], []
    for r in results:
        if r["inner"] is None and chosen.get(r["outer"]) == r["config"]:
            y_true += dataset.targets[r["test_index"]].tolist()
            y_pred += r["y_pred"]
    frame = pd.DataFrame({"target": y_true, "correct": np.equal(y_true, y_pred)})
    table = frame.groupby("target")["correct"].agg(["sum", "count"]).reset_index()
    table.insert(0, "category", table["target"].map(dataset.names_by_target))
    table = table.rename(columns={"sum": "correct", "count": "total"})
    table["accuracy"] = table["correct"] / table["total"]
    return table.sort_values(["accuracy", "category"]).reset_index(drop=True)


def _write_report(result: SweepResult, dataset, cluster) -> None:
    out, sweep = result.out_dir, result.sweep
    write_text(out / "sweep.csv", result.scores.to_csv(index=False))
    write_text(out / "per_class.csv", result.per_class.to_csv(index=False))
    with contextlib.suppress(Exception):  # a plot must never lose the figures
        result.plot().savefig(out / "scores.png", dpi=100)
    configs = sweep.configurations
    result.metrics = {
        "sweep": sweep.name, "source_file": sweep.source_file, "base_pipeline": sweep.base.name,
        "mode": sweep.mode, "seed": sweep.seed, "cluster": cluster, "folds": dataset.folds,
        "n_configurations": len(configs), "n_tasks": len(result.scores),
        "nested_accuracy_mean": result.nested_mean, "nested_accuracy_std": result.nested_std,
        "nested_fold_accuracy": {str(k): v for k, v in result.nested_fold_accuracy.items()},
        "chosen_configuration": {str(k): configs[c] for k, c in result.chosen.items()},
        "optimistic_accuracy_mean": result.optimistic_mean,
        "optimistic_fold_accuracy": {str(k): v for k, v in result.optimistic_fold_accuracy.items()},
        "optimistic_configuration": configs[result.optimistic_config],
        "nested_per_class_accuracy": dict(zip(result.per_class["category"], result.per_class["accuracy"])),
        "finished": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    lines = [f"# Sweep {sweep.name} over `{sweep.base.name}` ({len(configs)} configurations, "
             f"{len(result.scores)} tasks, folds {', '.join(map(str, dataset.folds))})", "",
             f"**Nested accuracy: {100 * result.nested_mean:.1f} % ± {100 * result.nested_std:.1f}** — the honest "
             "figure: each outer fold scored by the configuration its inner cross-validation chose.", "",
             f"Optimistic: {100 * result.optimistic_mean:.1f} % — the best configuration by plain cross-validation "
             "over the same folds it is reported on (selection saw the test folds).", "",
             "| outer fold | chosen configuration | nested accuracy |", "|---|---|---|"]
    lines += [f"| {k} | {json.dumps(configs[c])} | {100 * result.nested_fold_accuracy[k]:.1f} % |"
              for k, c in result.chosen.items()]
    lines += ["", f"Best by outer-fold CV: {json.dumps(configs[result.optimistic_config])}", "",
              "Files: `sweep.csv` (every task's score), `per_class.csv` (nested predictions), `scores.png`."]
    write_text(out / "report.md", "\n".join(lines) + "\n")
    write_text(out / "metrics.json", json.dumps(result.metrics, indent=2, default=json_default))
