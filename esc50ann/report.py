"""Reports of cross-validation runs and sweeps: metrics, tables, plots and a readable summary.

A run folder holds::

    per_class.csv  confusion.csv  predictions.csv  confusion.png  learning_curves.png
    report.md  report.html  fold-K.npz (one model per test fold)  metrics.json (written last)

and a sweep folder (``esc50ann.sweep``) ``sweep.csv  per_class.csv  scores.png  report.md
metrics.json``. ``metrics.json`` is written last, so a folder without it is an interrupted run.
"""
from __future__ import annotations

import base64
import hashlib
import os
import contextlib
import html
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from esc50ann import paths, provenance
from esc50ann.dataset import Dataset
from esc50ann.errors import Esc50Error, one_line
from esc50ann.evaluate import CVResult
from esc50ann.fileio import atomic_path, json_default, write_text
from esc50ann.layouts import NAMES
from esc50ann.params import DictOf, Document, InstanceOf, Integral, Interval, ListOf, Real


def predictions_table(cv: CVResult, dataset: Dataset) -> pd.DataFrame:
    """One row per test clip: clip, fold, true, predicted (category names), target ids, probability
    (the top one), path (of the audio file)."""
    names = cv.names_by_target
    audio_paths = np.array([str(p) for p in dataset.audio_paths], dtype=object)
    frames = []
    for fold in cv.folds.values():
        frames.append(pd.DataFrame({
            "clip": dataset.meta["filename"].to_numpy()[fold.test_index],
            "fold": fold.test_fold,
            "true": [names[t] for t in fold.y_true],
            "predicted": [names[t] for t in fold.y_pred],
            "true_target": fold.y_true,
            "predicted_target": fold.y_pred,
            "probability": fold.proba.max(axis=1),
            "path": audio_paths[fold.test_index],
        }))
    return pd.concat(frames, ignore_index=True)


def per_class_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per class of a predictions table (``predictions_table``'s columns ``fold``, ``true``,
    ``true_target``, ``predicted_target``): category, target, correct, total, accuracy (= recall:
    the share of the class's clips recognised), precision, recall, F1 (scikit-learn's), then
    accuracy per test fold."""
    hit = predictions["true_target"] == predictions["predicted_target"]
    grouped = hit.groupby(predictions["true_target"])
    table = pd.DataFrame({"correct": grouped.sum().astype(int), "total": grouped.size()})
    table["accuracy"] = table["correct"] / table["total"]
    by_fold = hit.groupby([predictions["true_target"], predictions["fold"]]).mean().unstack("fold")
    precision, recall, f1, _ = precision_recall_fscore_support(
        predictions["true_target"], predictions["predicted_target"], labels=table.index, zero_division=0)
    table["precision"], table["recall"], table["f1"] = precision, recall, f1
    for fold in by_fold.columns:
        table[f"fold_{fold}"] = by_fold[fold]
    names = dict(zip(predictions["true_target"], predictions["true"]))
    table.insert(0, "category", [names[t] for t in table.index])
    return table.rename_axis("target").reset_index()[["category", "target", *table.columns[1:]]]


def confusion_table(predictions: pd.DataFrame, cv: CVResult) -> pd.DataFrame:
    """Counts, rows = true category, columns = predicted category, in class-id order."""
    matrix = confusion_matrix(predictions["true_target"], predictions["predicted_target"], labels=cv.classes)
    names = list(cv.class_names)
    return pd.DataFrame(matrix, index=pd.Index(names, name="true"), columns=names)


def most_confused(confusion: pd.DataFrame, k: int = 10) -> list[tuple[str, str, int]]:
    """The ``k`` largest off-diagonal cells: (true, predicted, count), largest first."""
    counts = confusion.to_numpy().copy()
    np.fill_diagonal(counts, 0)
    order = np.argsort(counts, axis=None)[::-1][:k]
    rows, cols = np.unravel_index(order, counts.shape)
    return [(confusion.index[r], confusion.columns[c], int(counts[r, c])) for r, c in zip(rows, cols) if counts[r, c]]


def config_hash(pipeline: dict[str, Any]) -> str:
    """A short hash of a resolved pipeline: two runs with the same one ran the same settings."""
    return hashlib.sha256(json.dumps(pipeline, sort_keys=True, default=json_default).encode()).hexdigest()[:8]


def metrics(cv: CVResult, per_class: pd.DataFrame, *, pipeline: dict[str, Any],
            timings: dict[str, float], confused: list[tuple[str, str, int]] = (),
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's ``metrics.json`` content."""
    truth = np.concatenate([f.y_true for f in cv.folds.values()])
    guess = np.concatenate([f.y_pred for f in cv.folds.values()])
    return {
        "finished": datetime.now().astimezone().isoformat(timespec="seconds"),
        "accuracy_mean": cv.accuracy_mean,
        "accuracy_std": cv.accuracy_std,
        "fold_accuracy": {str(k): v for k, v in cv.fold_accuracy.items()},
        "macro_f1": float(f1_score(truth, guess, labels=cv.classes, average="macro", zero_division=0)),
        "chance": 1.0 / len(cv.classes),
        "per_class_accuracy": dict(zip(per_class["category"], per_class["accuracy"].astype(float))),
        "per_class_precision": dict(zip(per_class["category"], per_class["precision"].astype(float))),
        "per_class_recall": dict(zip(per_class["category"], per_class["recall"].astype(float))),
        "per_class_f1": dict(zip(per_class["category"], per_class["f1"].astype(float))),
        "seed": pipeline["training"]["random_state"],
        "n_clips": int(per_class["total"].sum()),
        "folds": list(cv.folds),
        "validation_folds": {str(k): f.val_fold for k, f in cv.folds.items()},
        "best_epochs": {str(k): f.best_epoch for k, f in cv.folds.items()},
        "most_confused": [list(pair) for pair in confused],
        # per fold and network: the training loss at the kept epoch against its minimum
        "training_stability": {str(k): f.stability for k, f in cv.folds.items()},
        "warnings": cv.warnings,
        "pipeline": pipeline,
        "config_hash": config_hash(pipeline),
        "versions": provenance.versions("numpy", "librosa", "scikit-learn"),
        "timings_seconds": timings,
        **(extra or {}),
    }


IMAGES = (("confusion.png", "Confusion matrix"), ("confusion_normalized.png", "Confusion matrix, rows normalised"),
          ("learning_curves.png", "Learning curves"))


def settings_lines(metrics: dict[str, Any]) -> list[str]:
    """What was run, in a few lines: source, features, network, training, evaluation, seed."""
    pipe = metrics["pipeline"]
    f, e, m, t = (pipe.get(k, {}) for k in ("features", "evaluation", "model", "training"))
    overrides = metrics.get("overrides") or {}
    return [
        f"- source: {metrics.get('source') or 'the dataset in the data root'}"
        + (f" ({NAMES.get(metrics['dataset_layout'], metrics['dataset_layout'])} layout)"
           if metrics.get("dataset_layout") else ""),
        *([f"- overrides: {format_overrides(overrides)}"] if overrides else []),
        f"- features: {f.get('representation')} of a {f.get('n_mels')}-band log-mel"
        + (" + delta" if f.get("deltas") else "") + (f" + {f.get('n_mfcc')} MFCC" if f.get("n_mfcc") else "")
        + f" ({'x'.join(map(str, metrics.get('feature_shape', [])))})",
        f"- network: {m.get('hidden_layer_sizes')} {m.get('activation')}, {m.get('output')} output, "
        f"{m.get('loss')} loss, input bias {m.get('input_bias')}" + _ensemble(m),
        f"- training: {t.get('solver')}, learning rate {t.get('learning_rate')} ({_schedule(t)}), "
        f"batch {t.get('batch_size')}, "
        f"{t.get('max_epochs')} epochs max, weight decay {t.get('weight_decay')}, patience {t.get('patience')}",
        f"- evaluation: validation {e.get('validation')}, refit {e.get('refit')}; seed {metrics.get('seed')}; "
        f"finished {metrics.get('finished', '?')}",
    ]


def _ensemble(m: dict[str, Any]) -> str:
    """The ensemble of a [model] section, in words (nothing for one network)."""
    k = m.get("n_networks", 1)
    if k == 1:
        return ""
    if m.get("ensemble") == "snapshots":
        return f"; an ensemble of {k} snapshots of one network (its schedule run {k} times, each end kept)"
    return f"; an ensemble of {k} networks from different random starts"


def _schedule(t: dict[str, Any]) -> str:
    """The learning-rate schedule of a [training] section, in words."""
    kind = t.get("lr_schedule", "constant")
    words = {"cosine": "cosine decay", "linear": "linear decay", "step": "step decay"}.get(kind, kind)
    if kind in ("cosine", "linear"):
        words += f" to {t.get('lr_floor', 0.0):g}x"
    elif kind == "step":
        words += f" x{t.get('lr_step_factor'):g} every {t.get('lr_step_every')} epochs"
    if t.get("warmup_epochs"):
        words += f", {t['warmup_epochs']} warm-up epochs"
    if t.get("average_epochs"):
        words += f", weights averaged over the last {t['average_epochs']} epochs"
    if t.get("clip_norm"):
        words += f", gradients clipped to norm {t['clip_norm']:g}"
    return words


def summary(metrics: dict[str, Any], per_class: pd.DataFrame) -> str:
    """``report.md``: settings, folds, mean ± std, macro-F1 and chance, per class (precision,
    recall, F1), the most-confused pairs (``metrics["most_confused"]``), the images."""
    confused = metrics.get("most_confused") or []
    name = metrics["pipeline"].get("name", "run")
    lines = [f"# {name}: cross-validation over {len(metrics['folds'])} test folds, {metrics['n_clips']} test clips", "",
             f"**Accuracy: {100 * metrics['accuracy_mean']:.1f} % ± {100 * metrics['accuracy_std']:.1f}** "
             "(mean ± sample standard deviation over test folds)"]
    if "macro_f1" in metrics:
        lines.append(f"macro-F1 {100 * metrics['macro_f1']:.1f} %; chance {100 * metrics['chance']:.1f} %")
    if metrics.get("warnings"):
        lines += ["", "## Warnings", "", *(f"- {w}" for w in metrics["warnings"])]
    lines += ["", "## Settings", "", *settings_lines(metrics),
              "", "| fold | " + " | ".join(metrics["fold_accuracy"]) + " |",
              "|---|" + "---|" * len(metrics["fold_accuracy"]),
              "| accuracy | " + " | ".join(f"{100 * v:.1f} %" for v in metrics["fold_accuracy"].values()) + " |",
              "", *_per_class_lines(per_class)]
    if confused:
        lines += ["", "## Most confused pairs", "", "| true | predicted as | clips |", "|---|---|---|"]
        lines += [f"| {t} | {p} | {n} |" for t, p, n in confused]
    lines += ["", "## Images", ""] + [f"![{title}]({file})" for file, title in IMAGES]
    return "\n".join(lines) + "\n"


def _per_class_lines(per_class: pd.DataFrame) -> list[str]:
    """The per-class table of a report, worst class first, as Markdown lines."""
    lines = ["## Per-class accuracy (worst first)", "",
             "| category | correct / total | accuracy | precision | F1 |", "|---|---|---|---|---|"]
    for row in per_class.sort_values(["accuracy", "category"]).itertuples():
        lines.append(f"| {row.category} | {row.correct} / {row.total} | {100 * row.accuracy:.1f} % | "
                     f"{100 * row.precision:.1f} % | {100 * row.f1:.1f} % |")
    return lines


def sweep_summary(metrics: dict[str, Any], per_class: pd.DataFrame) -> str:
    """A sweep's ``report.md``: the nested figure, the optimistic one beside it, the configuration
    chosen for each outer fold, the nested predictions per class."""
    folds = ", ".join(map(str, metrics["folds"]))
    lines = [f"# Sweep {metrics['sweep']} over `{metrics['base_pipeline']}` ({metrics['n_configurations']} "
             f"configurations, {metrics['n_tasks']} tasks, folds {folds})", "",
             *([f"Dataset: {metrics['dataset']} ({NAMES.get(metrics.get('dataset_layout'), 'ESC-50')} layout)", ""]
               if metrics.get("dataset") else []),
             f"**Nested accuracy: {100 * metrics['nested_accuracy_mean']:.1f} % ± "
             f"{100 * metrics['nested_accuracy_std']:.1f}** — the honest figure: each outer fold scored by the "
             "configuration its inner cross-validation chose.", "",
             f"Optimistic: {100 * metrics['optimistic_accuracy_mean']:.1f} % — the best configuration by plain "
             "cross-validation over the same folds it is reported on (selection saw the test folds).", "",
             "| outer fold | chosen configuration | nested accuracy |", "|---|---|---|"]
    lines += [f"| {k} | {json.dumps(c)} | {100 * metrics['nested_fold_accuracy'][k]:.1f} % |"
              for k, c in metrics["chosen_configuration"].items()]
    if metrics.get("inner_fits_train_every_epoch"):
        lines += ["", f"Inner fits train on {len(metrics['folds']) - 2} folds, with no validation fold left to "
                      "stop early on: they train every epoch, while outer fits stop early on a validation fold."]
    lines += ["", f"Best by outer-fold CV: {json.dumps(metrics['optimistic_configuration'])}", "",
              *_per_class_lines(per_class), "",
              "Files: `sweep.csv` (every task's score), `per_class.csv` (nested predictions), `scores.png`."]
    return "\n".join(lines) + "\n"


def _misclassified_rows(predictions: pd.DataFrame, run_dir: Path, esc) -> str:
    """Table rows of the misclassified clips, most confident mistake first, each with a player.

    The clips are linked (relative to the run folder), not embedded: a 5 s clip is 441 kB, and a
    run's few hundred mistakes would make a page of a hundred megabytes or more."""
    wrong = predictions[predictions["true_target"] != predictions["predicted_target"]]
    rows = []
    for r in wrong.sort_values("probability", ascending=False).itertuples():
        src = Path(os.path.relpath(r.path, run_dir)).as_posix() if "path" in wrong else ""
        player = f'<audio controls preload="none" src="{esc(src)}"></audio>' if src else ""
        rows.append(f"<tr><td>{esc(str(r.clip))}</td><td>{r.fold}</td><td>{esc(str(r.true))}</td>"
                    f"<td>{esc(str(r.predicted))}</td><td>{100 * r.probability:.1f} %</td><td>{player}</td></tr>")
    return "".join(rows)


def html_page(metrics: dict[str, Any], per_class: pd.DataFrame, run_dir: Path,
              predictions: pd.DataFrame | None = None) -> str:
    """``report.html``: one self-contained page (styles and images inline, no network) with the
    summary, settings, per-fold table, per-class table (worst first), the most-confused pairs,
    the misclassified clips (each with an audio player linking the clip) and the images."""
    esc = html.escape
    confused = "".join(f"<tr><td>{esc(t)}</td><td>{esc(p)}</td><td>{n}</td></tr>"
                       for t, p, n in metrics.get("most_confused") or [])
    wrong = "" if predictions is None else _misclassified_rows(predictions, Path(run_dir), esc)
    name = esc(str(metrics["pipeline"].get("name", "run")))
    folds = "".join(f"<tr><td>{esc(k)}</td><td>{100 * v:.1f} %</td></tr>" for k, v in metrics["fold_accuracy"].items())
    rows = "".join(
        f"<tr><td>{esc(str(r.category))}</td><td>{r.correct} / {r.total}</td><td>{100 * r.accuracy:.1f} %</td>"
        f"<td>{100 * r.precision:.1f} %</td><td>{100 * r.f1:.1f} %</td></tr>"
        for r in per_class.sort_values(["accuracy", "category"]).itertuples())
    images = ""
    for file, title in IMAGES:
        path = Path(run_dir) / file
        if path.is_file():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            images += f'<figure><img alt="{esc(title)}" src="data:image/png;base64,{data}"><figcaption>{esc(title)}</figcaption></figure>'
    settings = "".join(f"<li>{esc(line[2:])}</li>" for line in settings_lines(metrics))
    warnings = "".join(f"<li>{esc(w)}</li>" for w in metrics.get("warnings", []))
    warnings = f'<h2>Warnings</h2><ul id="warnings">{warnings}</ul>' if warnings else ""
    f1 = (f"<p>macro-F1 {100 * metrics['macro_f1']:.1f} % · chance {100 * metrics['chance']:.1f} %</p>"
          if "macro_f1" in metrics else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>esc50ann run: {name}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 70em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: .25em .6em; }}
th {{ background: #eef; }} .big {{ font-size: 1.6em; font-weight: bold; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>{name}: cross-validation over {len(metrics["folds"])} test folds, {metrics["n_clips"]} test clips</h1>
<p class="big" id="accuracy">Accuracy {100 * metrics["accuracy_mean"]:.1f} % ± {100 * metrics["accuracy_std"]:.1f}</p>
{f1}{warnings}<h2>Settings</h2><ul>{settings}</ul>
<h2>Per fold</h2><table id="folds"><tr><th>test fold</th><th>accuracy</th></tr>{folds}</table>
<h2>Per class (worst first)</h2>
<table id="per-class"><tr><th>category</th><th>correct / total</th><th>accuracy (recall)</th><th>precision</th><th>F1</th></tr>{rows}</table>
<h2>Most confused pairs</h2>
<table id="confused"><tr><th>true</th><th>predicted as</th><th>clips</th></tr>{confused}</table>
<h2>Images</h2>{images}
<h2>Misclassified clips</h2>
<details><summary>{wrong.count("<tr>")} clips, most confident mistake first: open to list and listen</summary>
<table id="misclassified"><tr><th>clip</th><th>fold</th><th>true</th><th>predicted</th><th>probability</th><th>listen</th></tr>{wrong}</table>
</details>
</body></html>
"""


def plot_confusion(confusion: pd.DataFrame, *, normalize: bool = False):
    """A readable confusion matrix: class names on both axes, counts (or, with ``normalize``,
    each true class's row as fractions) as colour. Returns a matplotlib ``Figure``."""
    from matplotlib.figure import Figure

    values = confusion.to_numpy(dtype=float)
    if normalize:
        values = values / np.maximum(values.sum(axis=1, keepdims=True), 1)
    n = len(confusion)
    size = max(6.0, 0.34 * n + 4)  # 50 classes: cells of a third of an inch, labels at 8 pt
    fig = Figure(figsize=(size, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(n), confusion.columns, rotation=90, fontsize=8 if n > 20 else 10)
    ax.set_yticks(range(n), confusion.index, fontsize=8 if n > 20 else 10)
    if not normalize:  # the counts themselves, where a cell holds any
        dark = values > 0.6 * max(values.max(), 1)
        for (i, j), count in np.ndenumerate(confusion.to_numpy()):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=6 if n > 20 else 9,
                        color="white" if dark[i, j] else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix, all test folds" + (" (rows normalised)" if normalize else ""))
    fig.colorbar(image, ax=ax, shrink=0.6, label="fraction of the true class" if normalize else "clips")
    return fig


def plot_learning_curves(cv: CVResult):
    """Loss and accuracy per epoch, one colour per fold and a line per network of an ensemble
    (the first solid, the others fainter); training solid, validation dashed; a dot marks the
    epoch each network kept, and a cross one that ended on a spike of its training loss (the
    report's warnings). Returns a matplotlib ``Figure`` whose title says what was run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    validated = False
    for i, fold in enumerate(cv.folds.values()):
        colour = f"C{i % 10}"
        stability = {s["network"]: s for s in fold.stability}
        for j, (rows, kept) in enumerate(zip(fold.histories, fold.best_epochs), start=1):
            history = pd.DataFrame(rows)
            if history.empty:
                continue
            style = {"color": colour, "alpha": 1.0 if j == 1 else 0.45, "linewidth": 1.4 if j == 1 else 0.8}
            kept = int(kept or len(history))
            marker = "X" if stability.get(j, {}).get("unstable") else "o"
            for ax, train_col, val_col in ((loss_ax, "loss", "val_loss"), (acc_ax, "accuracy", "val_accuracy")):
                label = None if j > 1 else f"fold {fold.test_fold} training" + (
                    f" ({len(fold.histories)} networks)" if len(fold.histories) > 1 else "")
                ax.plot(history["epoch"], history[train_col], label=label, **style)
                ax.plot([kept], [history[train_col].iloc[kept - 1]], marker=marker, linestyle="none",
                        markersize=6 if marker == "X" else 4, color=colour)
                if val_col in history and history[val_col].notna().any():
                    validated = True
                    ax.plot(history["epoch"], history[val_col], linestyle="--",
                            label=None if j > 1 else f"fold {fold.test_fold} validation (fold {fold.val_fold})", **style)
    for ax, label in ((loss_ax, "loss"), (acc_ax, "accuracy (training: running, over the epoch)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if not validated:
        title = "Learning curves: training on every non-test fold (no validation fold); dot: the epoch kept"
    elif any(f.refitted for f in cv.folds.values()):
        title = "Learning curves with early stopping on a validation fold (before the refit on training + validation)"
    else:
        title = "Learning curves with a validation fold"
    fig.suptitle(title)
    return fig


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _begin_folder(folder: Path) -> Path:
    """Make ``folder`` ready for a report: created, and -- when reused -- no longer looking finished
    until the new ``metrics.json`` lands (``_finish_folder``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").unlink(missing_ok=True)
    return folder


def _finish_folder(folder: Path, result: dict[str, Any]) -> None:
    """Write ``metrics.json``, last: its presence is what marks a finished report folder."""
    write_text(folder / "metrics.json", json.dumps(result, indent=2, default=json_default))


def write_sweep(out_dir: Path, result: dict[str, Any], *, scores: pd.DataFrame, per_class: pd.DataFrame,
                figure) -> None:
    """Write a sweep's report folder: ``sweep.csv``, ``per_class.csv``, ``scores.png`` (``figure()``
    draws it), ``report.md`` and, last, ``metrics.json`` (``result``)."""
    out_dir = _begin_folder(out_dir)
    write_text(out_dir / "sweep.csv", scores.to_csv(index=False))
    write_text(out_dir / "per_class.csv", per_class.to_csv(index=False))
    with contextlib.suppress(Exception):  # a plot must never lose the figures
        _save(figure(), out_dir / "scores.png")
    write_text(out_dir / "report.md", sweep_summary(result, per_class))
    _finish_folder(out_dir, result)


def write_run(run_dir: Path, cv: CVResult, dataset: Dataset, *, pipeline: dict[str, Any],
              timings: dict[str, float], extra: dict[str, Any] | None = None, save_models: bool = True,
              model_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write every report file of a run into ``run_dir``; ``metrics.json`` last. Returns the metrics."""
    run_dir = _begin_folder(run_dir)
    predictions = predictions_table(cv, dataset)
    per_class = per_class_table(predictions)
    confusion = confusion_table(predictions, cv)
    write_text(run_dir / "predictions.csv", predictions.to_csv(index=False))
    write_text(run_dir / "per_class.csv", per_class.to_csv(index=False))
    write_text(run_dir / "confusion.csv", confusion.to_csv())
    _save(plot_confusion(confusion), run_dir / "confusion.png")
    _save(plot_confusion(confusion, normalize=True), run_dir / "confusion_normalized.png")
    _save(plot_learning_curves(cv), run_dir / "learning_curves.png")
    if save_models:
        for fold in cv.folds.values():
            fold.model.metadata_ = {**(model_metadata or {}), "test_fold": fold.test_fold}
            fold.model.save(run_dir / f"fold-{fold.test_fold}.npz")
    result = metrics(cv, per_class, pipeline=pipeline, timings=timings, confused=most_confused(confusion),
                     extra=extra)
    write_text(run_dir / "report.md", summary(result, per_class))
    write_text(run_dir / "report.html", html_page(result, per_class, run_dir, predictions))
    _finish_folder(run_dir, result)
    return result


def format_overrides(overrides: dict[str, Any]) -> str:
    """``--set`` values as they were given: ``training.max_epochs=3 model.n_networks=1``."""
    return " ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())


def is_sweep(metrics: dict[str, Any]) -> bool:
    return "nested_accuracy_mean" in metrics


def summary_line(metrics: dict[str, Any], folder: Path) -> str:
    """A finished run or sweep in one line (``-q``): name, accuracy ± spread, folds, folder."""
    folds = ",".join(map(str, metrics["folds"]))
    if is_sweep(metrics):
        return (f"sweep {metrics['sweep']}: nested accuracy {100 * metrics['nested_accuracy_mean']:.1f} % ± "
                f"{100 * metrics['nested_accuracy_std']:.1f} over folds {folds}; {folder}")
    return (f"{metrics['pipeline']['name']}: accuracy {100 * metrics['accuracy_mean']:.1f} % ± "
            f"{100 * metrics['accuracy_std']:.1f} over folds {folds}; {folder}")


def text_summary(metrics: dict[str, Any], folder: Path, *, n_worst: int = 5, n_pairs: int = 5) -> str:
    """A finished run or sweep as plain text for a terminal: the accuracy, per fold, the worst
    classes, the most-confused pairs and where the full report is."""
    folder = Path(folder)
    if is_sweep(metrics):
        lines = [summary_line(metrics, folder).rsplit(";", 1)[0],
                 f"  optimistic (selection saw the test folds): {100 * metrics['optimistic_accuracy_mean']:.1f} %"]
        lines += [f"  outer fold {k}: {100 * metrics['nested_fold_accuracy'][k]:.1f} % with {json.dumps(c)}"
                  for k, c in metrics["chosen_configuration"].items()]
        if metrics.get("inner_fits_train_every_epoch"):
            lines.append("  inner fits train every epoch (no validation fold left); outer fits stop early")
        per_class = metrics.get("nested_per_class_accuracy", {})
    else:
        lines = [summary_line(metrics, folder).rsplit(";", 1)[0],
                 "  per fold: " + ", ".join(f"{k}: {100 * v:.1f} %" for k, v in metrics["fold_accuracy"].items())]
        if metrics.get("overrides"):
            lines.append(f"  overrides: {format_overrides(metrics['overrides'])}")
        per_class = metrics.get("per_class_accuracy", {})
    worst = sorted(per_class.items(), key=lambda item: (item[1], item[0]))[:n_worst]
    if worst:
        lines.append("  worst classes: " + ", ".join(f"{name} {100 * acc:.0f} %" for name, acc in worst))
    pairs = (metrics.get("most_confused") or [])[:n_pairs]
    if pairs:
        lines.append("  most confused: " + ", ".join(f"{t} as {p} ({n})" for t, p, n in pairs))
    page = folder / "report.html"
    lines.append(f"  report: {page if page.is_file() else folder / 'report.md'}")
    return "\n".join(lines) + "\n"


# The shapes of metrics.json that are read back: a run's (``metrics``) and a sweep's
# (``esc50ann.sweep``), as far as ``runs``, ``report`` and the summaries use them.
_FRACTION = [Interval(Real, 0, 1)]
RUN_METRICS = Document({
    "pipeline": [Document({"name": [InstanceOf(str)]}, description="an object with a name")],
    "folds": [ListOf(Interval(Integral))],
    "accuracy_mean": _FRACTION, "accuracy_std": [Interval(Real, 0, None)],
    "fold_accuracy": [DictOf(*_FRACTION, description="an object of folds and their accuracy")],
}, {"finished": [InstanceOf(str)], "overrides": [InstanceOf(dict)], "config_hash": [InstanceOf(str)],
    "per_class_accuracy": [DictOf(*_FRACTION)], "most_confused": [ListOf(ListOf(InstanceOf(str, int),
                                                                              min_len=3, max_len=3))]},
    description="a JSON object (a run's metrics)")
SWEEP_METRICS = Document({
    "sweep": [InstanceOf(str)], "folds": [ListOf(Interval(Integral))],
    "nested_accuracy_mean": _FRACTION, "nested_accuracy_std": [Interval(Real, 0, None)],
    "optimistic_accuracy_mean": _FRACTION,
    "nested_fold_accuracy": [DictOf(*_FRACTION)], "chosen_configuration": [DictOf(InstanceOf(dict))],
}, {"finished": [InstanceOf(str)], "nested_per_class_accuracy": [DictOf(*_FRACTION)]},
    description="a JSON object (a sweep's metrics)")


def read_metrics(path: Path) -> dict[str, Any]:
    """The ``metrics.json`` at ``path``, checked to be of a run's or a sweep's shape: the one
    reader of metrics files.

    Raises
    ------
    Esc50Error
        Unreadable, not JSON, or of neither shape; the message names the file.
    """
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # JSON errors and non-UTF-8 bytes are both ValueErrors
        raise Esc50Error(f"{path}: damaged metrics file ({one_line(exc)})") from None
    problem = (SWEEP_METRICS if isinstance(result, dict) and is_sweep(result) else RUN_METRICS).problem(result)
    if problem is None and is_sweep(result) and not set(result["chosen_configuration"]) <= set(
            result["nested_fold_accuracy"]):  # the summary reads the nested accuracy of each chosen fold
        problem = "a chosen configuration for a fold without a nested accuracy"
    if problem:
        raise Esc50Error(f"{path}: damaged metrics file ({problem})")
    return result


def load_run(run_dir: Path) -> tuple[dict[str, Any], str]:
    """A finished run's (or sweep's) metrics and its Markdown report."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise Esc50Error(f"{run_dir}: no metrics.json — not a finished run (interrupted, or not a run folder)")
    result = read_metrics(metrics_path)
    report_path = run_dir / "report.md"
    try:
        text = report_path.read_text(encoding="utf-8") if report_path.is_file() else ""
    except (ValueError, OSError) as exc:
        raise Esc50Error(f"{report_path}: damaged report ({one_line(exc)})") from None
    return result, text


def remember(data_dir: Path, folder: Path) -> None:
    """Note a run or sweep folder written outside ``<data_dir>/runs`` (``--out``), so that ``runs``
    lists it and ``report NAME`` finds it: one small file per folder under ``runs/elsewhere/``."""
    folder, runs = Path(folder).resolve(), paths.runs_dir(data_dir).resolve()
    if folder.parent == runs:
        return
    key = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    write_text(runs / ELSEWHERE / f"{key}.txt", str(folder) + "\n")


ELSEWHERE = "elsewhere"


def _run_folders(data_dir: Path) -> list[Path]:
    runs = paths.runs_dir(data_dir)
    folders = [p.parent for p in runs.glob("*/metrics.json")]
    for link in sorted((runs / ELSEWHERE).glob("*.txt")):
        with contextlib.suppress(OSError, ValueError):
            folders.append(Path(link.read_text(encoding="utf-8").strip()))
    return list(dict.fromkeys(folders))


def list_runs(data_dir: Path) -> pd.DataFrame:
    """Finished runs and sweeps of the data root (under ``runs/`` or written elsewhere with
    ``--out``), newest first: finished, kind (run or sweep), name, folds, accuracy (nested for a
    sweep), settings (``--set`` values, or the sweep's pipeline), config (a hash of the resolved
    settings), folder. Unreadable folders are left out."""
    rows = []
    for folder in _run_folders(data_dir):
        try:
            result, _ = load_run(folder)
            written = (folder / "metrics.json").stat().st_mtime_ns
        except (Esc50Error, OSError, ValueError):  # damaged, gone, or a note naming no folder (a bad path)
            continue
        sweep = is_sweep(result)
        rows.append({
            "finished": result.get("finished") or datetime.fromtimestamp(written / 1e9).astimezone().isoformat(
                timespec="seconds"),
            "kind": "sweep" if sweep else "run",
            "name": result["sweep"] if sweep else result["pipeline"]["name"],
            "folds": ",".join(map(str, result["folds"])),
            "accuracy": float(result["nested_accuracy_mean" if sweep else "accuracy_mean"]),
            "settings": (f"over {result.get('base_pipeline')}" if sweep
                         else format_overrides(result.get("overrides") or {})),
            "config": "" if sweep else result.get("config_hash") or config_hash(result["pipeline"]),
            "folder": str(folder), "written": written})
    columns = ["finished", "kind", "name", "folds", "accuracy", "settings", "config", "folder", "written"]
    runs = pd.DataFrame(rows, columns=columns)  # within one second of "finished", the file's time decides
    return runs.sort_values(["finished", "written"], ascending=False, ignore_index=True).drop(columns="written")


def find_run(data_dir: Path, run: str | Path | None = None) -> Path:
    """The folder of a finished run or sweep: ``run`` a folder path, a folder name as ``runs``
    shows it, or None for the latest one."""
    runs = list_runs(data_dir)
    if run is None:
        if runs.empty:
            raise Esc50Error(f"no finished runs in {paths.runs_dir(data_dir)}: start one with `esc50ann run`")
        return Path(runs["folder"].iloc[0])
    if Path(run).is_dir():
        return Path(run)
    named = [Path(f) for f in runs["folder"] if Path(f).name == str(run)]
    if named:
        return named[0]
    known = ", ".join(Path(f).name for f in runs["folder"][:5]) or "none yet"
    raise Esc50Error(f"{run}: no such run folder or run name in {paths.runs_dir(data_dir)} "
                     f"(latest: {known}; see `esc50ann runs`)")
