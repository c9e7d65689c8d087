"""Sweeps: strict files, nested cross-validation that never lets the test fold choose, resume, and
the same numbers on a Dask LocalCluster (127.0.0.1)."""
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

import synth
from esc50ann import cli, sweep as sweep_mod
from esc50ann.errors import ConfigError
from esc50ann.sweep import Sweep, Task, tasks_for

SWEEP = """
name = "tiny-sweep"
pipeline = "tiny.toml"
[values]
"training.learning_rate" = [0.001, 0.03]
"model.hidden_layer_sizes" = [[4], [16]]
"""


@pytest.fixture(scope="module")
def workdir(synth_archive, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    (root / "tiny.toml").write_text(synth.TINY_PIPELINE.replace("max_epochs = 30", "max_epochs = 8")
                                    .replace("patience = 5", "patience = 0"))
    (root / "tiny-sweep.toml").write_text(SWEEP)
    assert cli.main(["--quiet", "download", "--source", str(synth_archive), "--data-dir", str(root / "data")]) == 0
    return root


@pytest.fixture(scope="module")
def finished(workdir):
    out = workdir / "out"
    result = sweep_mod.run(workdir / "tiny-sweep.toml", data_dir=workdir / "data", out=out, n_jobs=1, progress=False)
    return result, out


def test_grid_is_every_combination(workdir):
    sweep = Sweep.from_toml(workdir / "tiny-sweep.toml")
    assert len(sweep.configurations) == 4
    assert {json.dumps(c, sort_keys=True) for c in sweep.configurations} == {
        json.dumps({"training.learning_rate": lr, "model.hidden_layer_sizes": h}, sort_keys=True)
        for lr in (0.001, 0.03) for h in ([4], [16])}
    assert sweep.pipelines[0].training["learning_rate"] == 0.001 and sweep.pipelines[0].model["hidden_layer_sizes"] == [4]


def test_random_sampling_is_seeded_and_within_ranges(workdir, tmp_path):
    text = ('pipeline = "{}"\nmode = "random"\nn_samples = 20\nseed = {}\n[values]\n'
            '"training.learning_rate" = {{ loguniform = [1e-4, 1e-1] }}\n"training.max_epochs" = {{ uniform = [2, 9] }}\n'
            '"training.solver" = ["sgd", "adam"]\n')
    for seed in (1, 2):
        (tmp_path / f"r{seed}.toml").write_text(text.format(workdir / "tiny.toml", seed))
    a, again, b = (Sweep.from_toml(tmp_path / f) for f in ("r1.toml", "r1.toml", "r2.toml"))
    assert a.configurations == again.configurations != b.configurations
    rates = [c["training.learning_rate"] for c in a.configurations]
    assert all(1e-4 <= r <= 1e-1 for r in rates)
    assert all(isinstance(c["training.max_epochs"], int) and 2 <= c["training.max_epochs"] <= 9 for c in a.configurations)


@pytest.mark.parametrize("values, words", [
    ('"training.lerning_rate" = [0.1]', ["lerning_rate"]),
    ('"training.learning_rate" = ["fast"]', ["learning_rate"]),
    ('"training.learning_rate" = []', ["learning_rate", "empty"]),
    ('"training.learning_rate" = { loguniform = [1e-4, 1e-1] }', ["random"]),
    ('"training.learning_rate" = { loguniform = [0, 1] }', ["loguniform"]),
    ("", ["[values]"]),
])
def test_bad_sweep_files_are_one_line_errors(workdir, tmp_path, capsys, values, words):
    path = tmp_path / "bad.toml"
    path.write_text(f'pipeline = "{workdir / "tiny.toml"}"\n[values]\n{values}\n')
    with pytest.raises(ConfigError) as info:
        Sweep.from_toml(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and all(w in message for w in words), message
    assert cli.main(["sweep", str(path), "--data-dir", str(workdir / "data")]) == 1
    assert capsys.readouterr().err.startswith("esc50ann: error:")


def test_tasks_cover_inner_and_outer_splits():
    tasks = tasks_for(2, [1, 2, 3])
    assert len(tasks) == 2 * 3 * 3
    assert Task(0, 1, None) in tasks and Task(1, 3, 2) in tasks
    assert not [t for t in tasks if t.inner == t.outer]


def test_nested_choice_uses_inner_scores_only(finished):
    result, _ = finished
    scores = result.scores
    for outer, chosen in result.chosen.items():
        inner = scores[(scores.outer == outer) & scores.inner.notna()]
        means = inner.groupby("config")["accuracy"].mean()
        assert chosen == means.idxmax() and set(inner["inner"]) == {1, 2, 3} - {outer}
        score = scores[(scores.outer == outer) & scores.inner.isna() & (scores.config == chosen)]["accuracy"]
        assert result.nested_fold_accuracy[outer] == score.iloc[0]
    outer = scores[scores.inner.isna()]
    assert result.optimistic_mean == pytest.approx(outer.groupby("config")["accuracy"].mean().max())
    assert result.optimistic_mean >= result.nested_mean - 1e-12  # selection on the test folds can only flatter


def test_test_fold_never_influences_the_choice(finished, monkeypatch):
    """Poison the outer test fold's results: the chosen configurations stay the same."""
    result, _ = finished
    scores = result.scores.copy()
    real = sweep_mod._summarise
    poisoned = []
    for outer in result.chosen:
        rows = [dict(r) for r in _results_of(result)]
        for r in rows:  # every fit that was scored on the outer fold gets a fake score
            if r["inner"] is None and r["outer"] == outer:
                r["accuracy"] = 1.0 if r["config"] != result.chosen[outer] else 0.0
        poisoned.append(real(result.sweep, _DatasetStub(), rows).chosen[outer])
    assert poisoned == list(result.chosen.values())
    assert scores.equals(result.scores)


class _DatasetStub:
    targets = np.zeros(100, dtype=int)
    names_by_target = {0: "x"}


def _results_of(result):
    for row in result.scores.itertuples():
        yield {"config": row.config, "outer": row.outer, "inner": None if pd.isna(row.inner) else row.inner,
               "accuracy": row.accuracy, "seconds": row.seconds, "epochs": row.epochs,
               "test_index": [0], "y_true": [0], "y_pred": [0]}


def test_report_files(finished):
    result, out = finished
    table = pd.read_csv(out / "sweep.csv")
    assert len(table) == 4 * 9 and {"config", "outer", "inner", "accuracy", "training.learning_rate"} <= set(table)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nested_accuracy_mean"] == pytest.approx(result.nested_mean)
    assert set(metrics["chosen_configuration"]) == {"1", "2", "3"}
    report = (out / "report.md").read_text()
    assert "Nested accuracy" in report and "Optimistic" in report
    assert metrics["dataset_layout"] == "esc50" and f"Dataset: {metrics['dataset']} (ESC-50 layout)" in report
    assert (out / "scores.png").stat().st_size > 0
    assert table["inner"].dropna().tolist() == table["inner"].dropna().astype(int).tolist()
    assert ",2," in (out / "sweep.csv").read_text() and ",2.0," not in (out / "sweep.csv").read_text()
    assert metrics["inner_fits_train_every_epoch"] is False  # tiny.toml here has patience = 0
    assert result.per_class["total"].sum() == 24  # every clip predicted once, by its outer fold's choice


def test_sweep_plot_orders_list_values_by_number_and_keeps_its_title(finished):
    result, _ = finished
    fig = result.plot()
    ax = [a for a in fig.axes if a.get_xlabel() == "model.hidden_layer_sizes"][0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["[4]", "[16]"]  # not "[16]" first, as text
    one_key = dataclasses.replace(result.sweep, values={"model.hidden_layer_sizes": result.sweep.values[
        "model.hidden_layer_sizes"]})  # the narrowest figure
    fig = dataclasses.replace(result, sweep=one_key).plot()
    fig.canvas.draw()
    title = fig.texts[0].get_window_extent()
    assert title.x0 >= 0 and title.x1 <= fig.bbox.width  # not clipped at either side


def test_sweeps_are_listed_with_runs_and_reported_by_name(finished, workdir, capsys):
    result, out = finished
    assert cli.main(["runs", "--data-dir", str(workdir / "data")]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.endswith(str(out))]
    assert len(listed) == 1 and " sweep " in listed[0] and "tiny-sweep" in listed[0]
    assert cli.main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"nested accuracy {100 * result.nested_mean:.1f} %" in text and "outer fold 1:" in text


def test_resume_runs_only_the_missing_tasks(finished, workdir, monkeypatch):
    result, out = finished
    tasks = sorted((out / "tasks").glob("*.json"))
    for path in tasks[:5]:  # as if killed before these finished
        path.unlink()
    ran = []
    real = sweep_mod.run_task
    monkeypatch.setattr(sweep_mod, "run_task", lambda *a: ran.append(a[2]) or real(*a))
    again = sweep_mod.run(workdir / "tiny-sweep.toml", data_dir=workdir / "data", out=out, n_jobs=1, progress=False)
    assert len(ran) == 5
    pd.testing.assert_frame_equal(again.scores.drop(columns="seconds"), result.scores.drop(columns="seconds"))


def test_damaged_task_files_are_run_again_with_a_warning(finished, workdir, monkeypatch):
    result, out = finished
    tasks = sorted((out / "tasks").glob("*.json"))
    good = json.loads(tasks[0].read_text())
    tasks[0].write_text(json.dumps({**good, "accuracy": "high"}))  # the wrong type
    tasks[1].write_text(json.dumps({**good, "config": good["config"] + 7}))  # another task's result
    tasks[2].write_bytes(b"\xff{")
    ran = []
    real = sweep_mod.run_task
    monkeypatch.setattr(sweep_mod, "run_task", lambda *a: ran.append(a[2]) or real(*a))
    with pytest.warns(UserWarning, match="running the task again") as caught:
        again = sweep_mod.run(workdir / "tiny-sweep.toml", data_dir=workdir / "data", out=out, n_jobs=1,
                              progress=False)
    assert len(ran) == 3 and sorted(str(w.message).split(":")[0] for w in caught) == [str(t) for t in tasks[:3]]
    said = " | ".join(str(w.message) for w in caught)
    assert all(why in said for why in ("accuracy must be a float in [0, 1]", "the result of another task", "unreadable"))
    pd.testing.assert_frame_equal(again.scores.drop(columns="seconds"), result.scores.drop(columns="seconds"))


@pytest.mark.slow
def test_local_cluster_gives_the_same_numbers(finished, workdir, tmp_path):
    pytest.importorskip("distributed")
    result, _ = finished
    on_cluster = sweep_mod.run(workdir / "tiny-sweep.toml", data_dir=workdir / "data", out=tmp_path / "c",
                               cluster="local:2", progress=False)
    key = ["config", "outer", "inner"]
    a = result.scores.sort_values(key).reset_index(drop=True)
    b = on_cluster.scores.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    assert on_cluster.chosen == result.chosen


def test_sweeps_train_on_the_augmented_copies_of_an_augmented_pipeline(workdir, tmp_path, monkeypatch):
    pipeline = (workdir / "tiny.toml").read_text().replace("n_mels = 32", "n_mels = 32\npitch_shifts = [1.0]")
    (tmp_path / "aug.toml").write_text(pipeline)
    (tmp_path / "aug-sweep.toml").write_text('pipeline = "aug.toml"\n[values]\n"training.learning_rate" = [0.03]\n')
    from esc50ann import evaluate

    trained = []  # (clips in the task, copies handed to the fit) for every fit the sweep makes
    real = evaluate.fit_fold
    monkeypatch.setattr(evaluate, "fit_fold", lambda X, *a, **kw: trained.append((len(X), kw["X_aug"])) or
                        real(X, *a, **kw))
    result = sweep_mod.run(tmp_path / "aug-sweep.toml", data_dir=workdir / "data", out=tmp_path / "out", n_jobs=1,
                           progress=False)
    assert len(trained) == 9 and all(c is not None and c.shape[:2] == (n, 1) for n, c in trained)
    assert sorted(n for n, _ in trained) == [16] * 6 + [24] * 3  # inner fits on two folds, outer on three
    assert 0 <= result.nested_mean <= 1


def test_a_sweep_over_a_pipeline_that_skips_a_clip_scores_the_others(tmp_path):
    """A clip whose samples are not finite passes header verification and is skipped by the feature
    stage: every task then trains and scores on the feature set's own rows (23 of 24 clips)."""
    import soundfile as sf

    folder = synth.make_dataset_folder(tmp_path / "src")
    bad = sorted((folder / "audio").iterdir())[5]
    y = synth.tone(0, 0)
    y[100] = np.nan
    sf.write(bad, y, synth.SAMPLE_RATE, subtype="FLOAT")
    (tmp_path / "skip.toml").write_text(synth.TINY_PIPELINE.replace("n_mels = 32", 'n_mels = 32\non_error = "skip"')
                                        .replace("max_epochs = 30", "max_epochs = 3"))
    (tmp_path / "sweep.toml").write_text('pipeline = "skip.toml"\n[values]\n"training.learning_rate" = [0.01, 0.03]\n')
    result = sweep_mod.run(tmp_path / "sweep.toml", data_dir=tmp_path / "data", source=folder, out=tmp_path / "out",
                           n_jobs=1, progress=False)
    assert result.per_class["total"].sum() == 23  # every kept clip predicted once by its outer fold
    assert len(result.scores) == 2 * 9 and result.scores["accuracy"].between(0, 1).all()
