"""Report tables on a hand-built result with asymmetric errors: orientation and counts are pinned."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from esc50ann.dataset import Dataset
from esc50ann.evaluate import CVResult, FoldResult
from esc50ann.report import confusion_table, most_confused, per_class_table, predictions_table, summary


def fold(test_fold, index, y_true, y_pred):
    proba = np.full((len(index), 2), 0.25)
    proba[np.arange(len(index)), [0 if p == 3 else 1 for p in y_pred]] = 0.75
    return FoldResult(test_fold=test_fold, val_fold=None, test_index=np.array(index), y_true=np.array(y_true),
                      y_pred=np.array(y_pred), proba=proba, histories=[[]], best_epochs=[1], model=None)


@pytest.fixture
def result():
    # class 3 "cat" and class 7 "dog"; fold 1: three cats, two called dogs; fold 2: two dogs, both right
    meta = pd.DataFrame({"filename": [f"clip{i}.wav" for i in range(6)], "fold": [1, 1, 1, 1, 2, 2],
                         "target": [3, 3, 3, 7, 7, 7], "category": ["cat"] * 3 + ["dog"] * 3})
    dataset = Dataset(root=Path("/data/ESC-50-master"), meta=meta)
    cv = CVResult(folds={1: fold(1, [0, 1, 2, 3], [3, 3, 3, 7], [3, 7, 7, 7]), 2: fold(2, [4, 5], [7, 7], [7, 7])},
                  classes=np.array([3, 7]), class_names=["cat", "dog"])
    return cv, dataset


def test_predictions_name_clips_folds_and_classes(result):
    cv, dataset = result
    table = predictions_table(cv, dataset)
    assert list(table["clip"]) == [f"clip{i}.wav" for i in range(6)]
    assert list(table["fold"]) == [1, 1, 1, 1, 2, 2]
    assert list(table["true"]) == ["cat"] * 3 + ["dog"] * 3
    assert list(table["predicted"]) == ["cat", "dog", "dog", "dog", "dog", "dog"]
    assert table["probability"].tolist() == [0.75] * 6
    assert table["path"].iloc[1] == "/data/ESC-50-master/audio/clip1.wav"


def test_confusion_rows_are_true_columns_predicted(result):
    cv, dataset = result
    confusion = confusion_table(predictions_table(cv, dataset), cv)
    assert confusion.loc["cat", "dog"] == 2 and confusion.loc["dog", "cat"] == 0
    assert confusion.to_numpy().tolist() == [[1, 2], [0, 3]]
    assert most_confused(confusion) == [("cat", "dog", 2)]


def test_per_class_accuracy_is_recall_with_per_fold_columns(result):
    cv, dataset = result
    table = per_class_table(predictions_table(cv, dataset)).set_index("category")
    assert table.loc["cat", ["correct", "total"]].tolist() == [1, 3]
    assert table.loc["cat", "accuracy"] == pytest.approx(1 / 3)
    assert table.loc["dog", "accuracy"] == 1.0
    assert table.loc["dog", "fold_1"] == 1.0 and table.loc["dog", "fold_2"] == 1.0
    assert np.isnan(table.loc["cat", "fold_2"])  # no cat in fold 2


def test_fold_mean_and_sample_std(result):
    cv, _ = result
    assert cv.fold_accuracy == {1: 0.5, 2: 1.0}
    assert cv.accuracy_mean == pytest.approx(0.75)
    assert cv.accuracy_std == pytest.approx(np.std([0.5, 1.0], ddof=1))


def test_summary_lists_worst_class_first(result):
    cv, dataset = result
    predictions = predictions_table(cv, dataset)
    per_class = per_class_table(predictions)
    metrics = {"pipeline": {"name": "t"}, "folds": [1, 2], "n_clips": 6, "accuracy_mean": cv.accuracy_mean,
               "accuracy_std": cv.accuracy_std, "fold_accuracy": {"1": 0.5, "2": 1.0},
               "most_confused": most_confused(confusion_table(predictions, cv))}
    text = summary(metrics, per_class)
    assert text.index("| cat | 1 / 3 |") < text.index("| dog | 3 / 3 |")
    assert "| cat | dog | 2 |" in text and "75.0 %" in text


def test_plots_return_figures_and_normalised_rows_sum_to_one(result):
    from matplotlib.figure import Figure

    from esc50ann.report import plot_confusion

    cv, dataset = result
    confusion = confusion_table(predictions_table(cv, dataset), cv)
    counts, fractions = plot_confusion(confusion), plot_confusion(confusion, normalize=True)
    assert isinstance(counts, Figure) and isinstance(fractions, Figure)
    shown = fractions.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(shown).sum(axis=1), [1.0, 1.0])
    assert np.asarray(counts.axes[0].images[0].get_array()).tolist() == [[1, 2], [0, 3]]
    assert "normalised" in fractions.axes[0].get_title()


@pytest.mark.parametrize("val_fold, refitted, words, absent", [
    (None, False, "no validation fold", "refit"),
    (2, True, "before the refit", "no validation"),
    (2, False, "with a validation fold", "refit"),
])
def test_learning_curve_title_says_what_ran(result, val_fold, refitted, words, absent):
    from esc50ann.report import plot_learning_curves

    cv, _ = result
    for f in cv.folds.values():
        f.val_fold, f.refitted = val_fold, refitted
        f.histories = [[{"epoch": e, "loss": 1.0 / e, "accuracy": 0.5, "seconds": 0.1,
                      "val_loss": 1.0 / e if val_fold else None, "val_accuracy": 0.5 if val_fold else None}
                     for e in (1, 2, 3)]]
    title = plot_learning_curves(cv)._suptitle.get_text()
    assert words in title and absent not in title


def test_an_unstable_network_is_reported_per_fold_and_network(result, tmp_path):
    from esc50ann.report import html_page, metrics, plot_learning_curves

    cv, dataset = result
    calm = [{"epoch": e, "loss": v, "accuracy": 0.5, "seconds": 0.1} for e, v in enumerate((1.0, 0.2, 0.1), 1)]
    spike = [{"epoch": e, "loss": v, "accuracy": 0.5, "seconds": 0.1} for e, v in enumerate((1.0, 0.02, 0.6), 1)]
    cv.folds[1].histories, cv.folds[1].best_epochs = [calm, spike, calm], [3, 3, 3]
    cv.folds[2].histories, cv.folds[2].best_epochs = [calm], [3]
    per_class = per_class_table(predictions_table(cv, dataset))
    result_ = metrics(cv, per_class, pipeline={"name": "t", "training": {"random_state": 0}}, timings={})
    assert result_["warnings"] == [cv.folds[1].warnings[0]] and "fold 1 network 2: unstable training" in result_["warnings"][0]
    assert [s["unstable"] for s in result_["training_stability"]["1"]] == [False, True, False]
    assert [s["network"] for s in result_["training_stability"]["1"]] == [1, 2, 3]
    assert not result_["training_stability"]["2"][0]["unstable"]
    assert "## Warnings" in summary(result_, per_class) and "fold 1 network 2" in summary(result_, per_class)
    assert 'id="warnings"' in html_page(result_, per_class, tmp_path)
    fig = plot_learning_curves(cv)
    loss_ax = fig.axes[0]
    assert len(loss_ax.lines) == 2 * 4  # every network of every fold: its curve and its kept-epoch mark
    assert [line.get_marker() for line in loss_ax.lines[1::2]] == ["o", "X", "o", "o"]  # the spike is a cross
    calm_only = metrics(cv.__class__(folds={2: cv.folds[2]}, classes=cv.classes, class_names=cv.class_names),
                        per_class, pipeline={"name": "t", "training": {"random_state": 0}}, timings={})
    assert calm_only["warnings"] == [] and "## Warnings" not in summary(calm_only, per_class)
