"""The Python API as people use it in a notebook: one fold convention, lists where lists are
expected, labelled features, and short reprs that say what an object holds."""
import numpy as np
import pandas as pd
import pytest

import synth
from esc50ann.pipeline import Pipeline


@pytest.fixture(scope="module")
def pipe(synth_archive, tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    (root / "tiny.toml").write_text(synth.TINY_PIPELINE)
    pipe = Pipeline.from_toml(root / "tiny.toml", data_dir=root / "data", source=synth_archive, progress=False, n_jobs=1)
    return pipe


def test_feature_set_has_labels_names_and_a_frame(pipe):
    feats, dataset = pipe.features(), pipe.download()
    assert np.array_equal(feats.y, dataset.targets)
    names = feats.feature_names
    assert len(names) == feats.X.shape[1] and len(set(names)) == len(names)
    assert names[0] == "logmel_mean_0" and names[32] == "logmel_std_0"  # 32 bands per statistic
    frame = feats.to_frame()
    assert list(frame.index) == feats.filenames and frame.index.name == "filename"
    assert {"fold", "target", "category", "logmel_mean_0"} <= set(frame.columns)
    row = feats.filenames.index(feats.filenames[5])
    assert frame.loc[feats.filenames[5], names[7]] == pytest.approx(float(feats.X[row, 7]))


def test_feature_names_follow_the_stats_layout():
    from esc50ann import audio
    from esc50ann.recipe import FeatureConfig, feature_names

    config = FeatureConfig(n_mels=4, deltas=True, n_mfcc=3)
    chans = audio.planes(np.random.default_rng(0).normal(size=(4, 20)).astype(np.float32), deltas=True, n_mfcc=3)
    values = audio.band_stats(chans)
    names = feature_names(config)
    assert len(names) == len(values) == 6 * (4 + 4 + 3)
    assert values[names.index("delta_max_2")] == pytest.approx(chans[1][2].max())
    assert values[names.index("mfcc_std_1")] == pytest.approx(chans[2][1].std())


def test_class_names_are_an_ordered_list_with_the_mapping_beside(pipe):
    dataset = pipe.download()
    assert isinstance(dataset.class_names, list) and dataset.class_names[:2] == ["dog", "rooster"]
    assert dataset.names_by_target[int(dataset.classes[0])] == dataset.class_names[0]


def test_fold_results_are_keyed_by_fold_number(pipe):
    cv = pipe.cross_validate(n_jobs=1)
    assert list(cv.folds) == [1, 2, 3] and cv.folds[2].test_fold == 2
    assert cv.fold_accuracy[2] == cv.folds[2].accuracy


def test_reprs_are_short_and_informative(pipe):
    feats, dataset = pipe.features(), pipe.download()
    cv = pipe.cross_validate(n_jobs=1)
    for obj, words in ((pipe, ["tiny", "loaded"]), (dataset, ["24 clips", "4 classes", "folds 1,2,3"]),
                       (feats, ["24 clips", "features", feats.key]),
                       (cv, ["accuracy", "3 folds", "1:"]), (cv.folds[1], ["test fold 1", "accuracy"])):
        text = repr(obj)
        assert len(text) < 300 and "\n" not in text and " at 0x" not in text, text
        assert all(w in text for w in words), text


def test_saved_models_name_their_predictions(pipe, tmp_path):
    from esc50ann.model import ANNClassifier

    pipe.train(1).save(tmp_path / "m.npz")
    model = ANNClassifier.load(tmp_path / "m.npz")
    assert model.class_names_ == pipe.download().class_names
    X = np.asarray(pipe.features().X[:4])
    assert set(model.predict_names(X)) <= set(model.class_names_)
    assert isinstance(pd.Series(model.predict_names(X)).iloc[0], str)
