"""End to end on the synthetic mini dataset: download -> features -> 3-fold CV -> report files."""
import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import synth
from esc50ann import evaluate
from esc50ann.dataset import Dataset
from esc50ann.errors import DatasetError
from esc50ann.evaluate import cross_validate
from esc50ann.recipe import FeatureConfig, clip_features
from esc50ann.pipeline import Pipeline
from esc50ann.predict import predict_files



@pytest.fixture(scope="module")
def tiny_run(synth_archive, tmp_path_factory):
    """One full pipeline run on the synthetic archive, shared by the report checks below."""
    root = tmp_path_factory.mktemp("run")
    path = root / "tiny.toml"
    path.write_text(synth.TINY_PIPELINE)
    pipe = Pipeline.from_toml(path, data_dir=root / "data", source=str(synth_archive), n_jobs=1, progress=False)
    return pipe, pipe.run(out=root / "out")


def test_run_writes_every_report_file(tiny_run):
    _, run = tiny_run
    names = {p.name for p in run.run_dir.iterdir()}
    assert {"metrics.json", "per_class.csv", "confusion.csv", "predictions.csv", "confusion.png",
            "learning_curves.png", "report.md", "fold-1.npz", "fold-2.npz", "fold-3.npz"} <= names


def test_report_files_agree_with_each_other(tiny_run):
    pipe, run = tiny_run
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    per_class = pd.read_csv(run.run_dir / "per_class.csv")
    confusion = pd.read_csv(run.run_dir / "confusion.csv", index_col=0)
    predictions = pd.read_csv(run.run_dir / "predictions.csv")
    n_clips = len(pipe.download())
    assert metrics["n_clips"] == n_clips == per_class["total"].sum() == len(predictions)
    assert metrics["folds"] == [1, 2, 3]
    assert metrics["accuracy_mean"] == pytest.approx(np.mean(list(metrics["fold_accuracy"].values())))
    # confusion rows sum to the class totals, the diagonal to the per-class correct counts
    totals = dict(zip(per_class["category"], per_class["total"]))
    assert confusion.sum(axis=1).to_dict() == totals
    assert dict(zip(confusion.index, np.diag(confusion.to_numpy()))) == dict(zip(per_class["category"], per_class["correct"]))
    # per-class accuracy in metrics.json matches the table and the predictions
    for row in per_class.itertuples():
        assert metrics["per_class_accuracy"][row.category] == pytest.approx(row.accuracy)
        mine = predictions[predictions["true"] == row.category]
        assert (mine["true"] == mine["predicted"]).sum() == row.correct
    for fold, acc in metrics["fold_accuracy"].items():
        fold_rows = predictions[predictions["fold"] == int(fold)]
        assert (fold_rows["true"] == fold_rows["predicted"]).mean() == pytest.approx(acc)
    assert set(metrics["timings_seconds"]) >= {"dataset", "features", "cross_validation"}
    assert metrics["pipeline"]["name"] == "tiny"


def test_tones_are_learned(tiny_run):
    _, run = tiny_run
    assert run.metrics["accuracy_mean"] >= 0.75  # 4 pure-tone classes: chance is 0.25


def test_validation_fold_is_a_training_fold_never_the_test_fold(tiny_run):
    _, run = tiny_run
    for fold in run.cv.folds.values():
        assert fold.val_fold is not None and fold.val_fold != fold.test_fold


def test_no_test_row_reaches_training_or_early_stopping(tiny_run, monkeypatch):
    """Spy on every fit: neither its training rows nor its validation rows come from the test fold."""
    pipe, _ = tiny_run
    dataset = pipe.download()
    fold_of = dataset.meta["fold"].to_numpy()
    X = np.column_stack([fold_of, np.asarray(pipe.features().X)]).astype(np.float32)  # column 0 = fold
    seen = []

    class Spy(evaluate.ANNClassifier):
        def fit(self, X, y, *, X_val=None, y_val=None, callback=None):
            seen.append((set(X[:, 0]), set(X_val[:, 0]) if X_val is not None else set()))
            return super().fit(X, y, X_val=X_val, y_val=y_val, callback=callback)

    monkeypatch.setattr(evaluate, "ANNClassifier", Spy)
    cv = cross_validate(X, dataset, pipe.config.estimator_params(), progress=False)
    assert len(seen) == 6  # per fold: early stopping fit, then refit on train + validation
    for k, fold in enumerate(cv.folds.values()):
        (train, val), (refit, _) = seen[2 * k], seen[2 * k + 1]
        assert fold.test_fold not in train | val | refit
        assert val == {fold.val_fold} and refit == train | val


def test_stages_reuse_cached_features(tiny_run, synth_archive, tmp_path):
    pipe, _ = tiny_run
    again = Pipeline(pipe.config, data_dir=pipe.data_dir, source=str(synth_archive), n_jobs=1, progress=False)
    feats = again.features()
    assert feats.from_cache
    assert np.array_equal(np.asarray(feats.X), np.asarray(pipe.features().X))


def test_parallel_folds_give_the_same_numbers_as_serial(tiny_run):
    pipe, _ = tiny_run
    X, dataset, params = np.asarray(pipe.features().X), pipe.download(), pipe.config.estimator_params()
    serial = cross_validate(X, dataset, params, n_jobs=1, progress=False)
    parallel = cross_validate(X, dataset, params, n_jobs=2, progress=False)
    assert serial.fold_accuracy == parallel.fold_accuracy
    for a, b in zip(serial.folds.values(), parallel.folds.values()):
        np.testing.assert_allclose(a.proba, b.proba, rtol=1e-4, atol=1e-5)
    # an ensemble without early stopping: on two workers fold 3's networks train in two parts
    trio = {**params, "n_networks": 3, "patience": None, "max_epochs": 5}
    serial = cross_validate(X, dataset, trio, validation="none", n_jobs=1, progress=False)
    parallel = cross_validate(X, dataset, trio, validation="none", n_jobs=2, progress=False)
    for a, b in zip(serial.folds.values(), parallel.folds.values()):
        assert len(b.model.networks_) == 3 and [h[0]["network"] for h in b.histories] == [1, 2, 3]
        np.testing.assert_allclose(a.proba, b.proba, rtol=1e-4, atol=1e-5)


def test_the_final_model_and_predict_run_with_one_blas_thread(tiny_run, tmp_path, monkeypatch):
    """The main process's BLAS may have every core; training and predicting in it use one thread."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from esc50ann import model as model_mod

    pipe, _ = tiny_run
    seen = []
    real = (model_mod.ANNClassifier.fit, model_mod.ANNClassifier.predict_proba)

    def spy(real_method):
        def method(self, *args, **kwargs):
            seen.append(max(p["num_threads"] for p in threadpool_info()))
            return real_method(self, *args, **kwargs)
        return method

    monkeypatch.setattr(model_mod.ANNClassifier, "fit", spy(real[0]))
    monkeypatch.setattr(model_mod.ANNClassifier, "predict_proba", spy(real[1]))
    with threadpool_limits(limits=2):
        assert max(p["num_threads"] for p in threadpool_info()) == 2
        model = pipe.train(None)
        model.save(tmp_path / "m.npz")
        predict_files(tmp_path / "m.npz", [pipe.download().audio_paths[0]])
    assert seen and set(seen) == {1}


def test_normalisation_is_fit_on_training_rows_only(tiny_run):
    """Shifting the test fold's features must not change what the model learned."""
    pipe, _ = tiny_run
    X, dataset, params = np.array(pipe.features().X), pipe.download(), pipe.config.estimator_params()
    base = cross_validate(X, dataset, params, folds=[1], validation="none", progress=False)
    shifted = X.copy()
    shifted[dataset.meta["fold"].to_numpy() == 1] += 100.0
    moved = cross_validate(shifted, dataset, params, folds=[1], validation="none", progress=False)
    train_rows = X[dataset.meta["fold"].to_numpy() != 1]
    np.testing.assert_array_equal(base.folds[1].model.predict_proba(train_rows),
                                  moved.folds[1].model.predict_proba(train_rows))


def test_empty_class_in_training_split_is_a_clear_error(tiny_run):
    pipe, _ = tiny_run
    dataset = pipe.download()
    meta = dataset.meta
    # "dog" only in fold 1: testing on fold 1 leaves no dog clip to train on
    keep = ~((meta["category"] == "dog") & (meta["fold"] != 1))
    lonely = Dataset(dataset.root, meta[keep].reset_index(drop=True))
    X = np.asarray(pipe.features().X)[keep.to_numpy()]
    with pytest.raises(DatasetError, match="test fold 1.*'dog'"):
        cross_validate(X, lonely, pipe.config.estimator_params(), progress=False)


def test_unknown_fold_is_a_clear_error(tiny_run):
    pipe, _ = tiny_run
    with pytest.raises(DatasetError, match="7"):
        pipe.cross_validate(folds=[1, 7])


def test_metrics_record_the_resolved_config(tiny_run):
    pipe, run = tiny_run
    assert run.metrics["pipeline"]["features"] == pipe.config.features.to_dict()
    assert run.metrics["pipeline"]["model"]["hidden_layer_sizes"] == [16]


def test_saved_model_predicts_a_wav_as_the_pipeline_did(tiny_run, tmp_path):
    """predict on a file recomputes the features exactly as the cached training features."""
    pipe, _ = tiny_run
    model = pipe.train(test_fold=2)
    path = tmp_path / "model.npz"
    model.save(path)
    dataset = pipe.download()
    rows = np.flatnonzero(dataset.meta["fold"].to_numpy() == 2)[:3]
    expected = model.predict_proba(np.asarray(pipe.features().X)[rows])
    got = predict_files(path, [dataset.audio_paths[i] for i in rows], top=len(model.classes_))
    names = dataset.names_by_target
    for want, prediction in zip(expected, got):
        by_name = dict(prediction.top)
        for target, p in zip(model.classes_, want):
            assert by_name[names[int(target)]] == pytest.approx(float(p), abs=1e-5)


def test_models_pin_the_sample_rate_so_other_rates_are_resampled(tiny_run, tmp_path):
    pipe, _ = tiny_run
    meta = pipe.model_metadata()
    assert meta["features"]["sample_rate"] == 44100
    flat = FeatureConfig(**{**meta["features"], "representation": "flat", "time_pool": 8})
    sf.write(tmp_path / "a.wav", synth.tone(0, 1), 44100)
    sf.write(tmp_path / "b.wav", synth.tone(0, 1, sample_rate=22050), 22050)
    assert clip_features(tmp_path / "a.wav", flat).shape == clip_features(tmp_path / "b.wav", flat).shape


def test_fold_results_are_keyed_by_fold_number(tiny_run):
    _, run = tiny_run
    assert list(run.cv.folds) == [1, 2, 3] == list(run.cv.fold_accuracy)
    assert all(run.cv.folds[k].test_fold == k for k in (1, 2, 3))
    assert run.cv.class_names == ["dog", "rooster", "chirping_birds", "vacuum_cleaner"]
    assert list(run.cv.classes) == [0, 1, 14, 36]
