"""Datasets other than ESC-50 (esc50ann.layouts): a class-per-folder tree, an UrbanSound8K-shaped
folder and a metadata CSV of its own shape, prepared and run like ESC-50, every bad input one line."""
import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

import synth
from conftest import run_cli as esc50ann
from esc50ann import audio, layouts
from esc50ann.dataset import load, prepare
from esc50ann.errors import ConfigError, DatasetError
from test_cli import assert_one_line_error

FAST = ("--set", "features.duration=2", "--set", "features.sample_rate=16000", "--jobs", 1)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return synth.make_class_tree(tmp_path_factory.mktemp("tree") / "sounds")


@pytest.fixture(scope="module")
def urban(tmp_path_factory):
    return synth.make_urbansound(tmp_path_factory.mktemp("us8k") / "UrbanSound8K")


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """A tree of 3 classes x 3 recordings x 2 takes: ``<label>/rec<r>_take<t>.<ext>``."""
    return synth.make_class_tree(tmp_path_factory.mktemp("recordings") / "field", clips_per_class=6,
                                 name=lambda k: f"rec{k // 2}_take{k % 2}")


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(synth.TINY_PIPELINE)
    return path


def split_of(source, data, **settings):
    """The kept fold split of ``source`` in the data root ``data``."""
    return layouts.detect(source, data, layouts.Settings(**settings)).split


# ----------------------------------------------------------------------------- a folder per class


def test_class_tree_gets_stratified_seeded_folds_reused_on_rerun(tree, tmp_path):
    d = prepare(tree, tmp_path / "data", progress=False)
    assert d.layout == layouts.FOLDERS and len(d) == 15 and d.folds == [1, 2, 3, 4, 5]
    assert d.class_names == ["bark", "chime", "hum"]
    assert all(p.is_file() for p in d.audio_paths) and "bark/sub/clip2.wav" in set(d.meta["filename"])
    # stratified: every class in every fold
    assert (pd.crosstab(d.meta["fold"], d.meta["category"]) == 1).all().all()
    assert not d.meta["esc10"].any() and d.meta["src_file"].is_unique
    split = split_of(tree, tmp_path / "data")
    assert split.is_file() and split.parent == tmp_path / "data" / "folds"
    # seeded: another data root splits the same way
    other = prepare(tree, tmp_path / "other", progress=False)
    assert other.meta["fold"].tolist() == d.meta["fold"].tolist()
    # reused: an edited split (swap two clips' folds) is what a rerun reads, and load() too
    edited = pd.read_csv(split)
    edited.loc[[0, 1], "fold"] = edited.loc[[1, 0], "fold"].to_numpy()
    edited.to_csv(split, index=False)
    (tmp_path / "data" / "dataset.json").unlink()
    again = prepare(tree, tmp_path / "data", progress=False)
    assert again.meta["fold"].tolist() == edited["fold"].tolist() != d.meta["fold"].tolist()
    assert load(tmp_path / "data").meta["fold"].tolist() == edited["fold"].tolist()
    record = json.loads((tmp_path / "data" / "dataset.json").read_text())
    assert record["layout"]["kind"] == "folders" and record["layout"]["split"] == str(split)


def test_class_tree_runs_to_a_report_with_per_class_accuracy(tree, tiny, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = esc50ann(capsys, "--quiet", "run", tiny, "--source", tree, "--data-dir", tmp_path / "data",
                            "--out", out, *FAST)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["per_class_accuracy"]) == {"bark", "chime", "hum"} and metrics["n_clips"] == 15
    report = (out / "report.md").read_text()
    assert "Per-class accuracy" in report and f"source: {tree} (class-per-folder layout)" in report
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 15
    code, info, err = esc50ann(capsys, "info", "--data-dir", tmp_path / "data")
    assert code == 0 and "layout:   class-per-folder" in info and "ESC-10" not in info, err
    # a rerun splits the same way: every clip tested in the same fold
    code, _, err = esc50ann(capsys, "--quiet", "run", tiny, "--source", tree, "--data-dir", tmp_path / "data",
                            "--out", tmp_path / "again", *FAST)
    assert code == 0, err
    again = pd.read_csv(tmp_path / "again" / "predictions.csv")
    assert dict(zip(again["clip"], again["fold"])) == dict(zip(predictions["clip"], predictions["fold"]))
    # a model trained on it classifies a clip of another rate and length as one of its classes
    model = tmp_path / "model.npz"
    code, _, err = esc50ann(capsys, "--quiet", "train", tiny, "--all", "--save", model,
                            "--data-dir", tmp_path / "data", *FAST[:4])
    assert code == 0, err
    clip = next(tree.rglob("*.ogg"))
    code, predicted, err = esc50ann(capsys, "predict", model, clip, "--top", 1)
    assert code == 0, err
    assert predicted.split(": ", 1)[1].rsplit(" ", 2)[0] in {"bark", "chime", "hum"}, predicted


def test_the_default_pipeline_runs_on_a_class_tree(tree, tmp_path, capsys):
    # The default's own features (log-mel, delta, MFCC, modulation spectra at 44.1 kHz, 5 s) on
    # clips of 1-7 s at 8-48 kHz; a smaller network and two epochs keep it to seconds.
    out = tmp_path / "run"
    code, _, err = esc50ann(capsys, "--quiet", "run", "default", "--source", tree, "--data-dir", tmp_path / "data",
                            "--out", out, "--set", "model.n_networks=1", "--set", "model.hidden_layer_sizes=[32]",
                            "--set", "training.max_epochs=2", "--jobs", 1)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["feature_shape"] == [15, 2952] and len(metrics["per_class_accuracy"]) == 3
    assert metrics["pipeline"]["features"]["sample_rate"] == 44100  # one rate for clips of five


def test_native_rate_means_one_rate_on_other_datasets(tree, tmp_path):
    from esc50ann.pipeline import Pipeline

    pipe = Pipeline.from_toml("quick", data_dir=tmp_path / "data", source=str(tree), progress=False,
                              overrides={"dataset.subset": "esc50"})
    assert pipe.config.features.sample_rate is None
    pipe.download()
    assert pipe.config.features.sample_rate == 44100


def test_n_folds_sets_the_split_and_each_setting_keeps_its_own(tree, tmp_path):
    data = tmp_path / "data"
    five = prepare(tree, data, settings=layouts.Settings(), progress=False)
    three = prepare(tree, data, settings=layouts.Settings(n_folds=3), progress=False)
    assert five.folds == [1, 2, 3, 4, 5] and three.folds == [1, 2, 3]
    assert (pd.crosstab(three.meta["fold"], three.meta["category"]) > 0).all().all()
    assert split_of(tree, data) != split_of(tree, data, n_folds=3)
    assert split_of(tree, data).is_file() and split_of(tree, data, n_folds=3).is_file()
    # the recorded dataset is the one these settings give, without splitting again
    assert prepare(tree, data, settings=layouts.Settings(n_folds=3), progress=False).folds == [1, 2, 3]


def test_groups_never_straddle_folds(recordings, tmp_path):
    data = tmp_path / "data"
    grouped = prepare(recordings, data, settings=layouts.Settings(n_folds=3, group_pattern=r"/(rec\d+)_"),
                      progress=False)
    # recording r of every class (a session, say): one group of six clips
    meta = grouped.meta.assign(recording=grouped.meta["filename"].str.extract(r"(rec\d+)_")[0])
    assert meta.groupby("recording")["fold"].nunique().eq(1).all()
    assert meta.groupby("recording")["src_file"].nunique().eq(1).all() and meta["src_file"].nunique() == 3
    assert (pd.crosstab(meta["fold"], meta["category"]) == 2).all().all()  # still every class in every fold
    # without the grouping the same clips do straddle: the test above could fail
    loose = prepare(recordings, tmp_path / "loose", settings=layouts.Settings(n_folds=3), progress=False)
    loose = loose.meta.assign(recording=meta["recording"])
    assert loose.groupby("recording")["fold"].nunique().gt(1).any()


# ----------------------------------------------------------------------------- UrbanSound8K


def test_urbansound8k_folder_runs_with_its_own_ten_folds(urban, tiny, tmp_path, capsys):
    d = prepare(urban, tmp_path / "data", progress=False)
    assert d.layout == layouts.URBANSOUND8K and d.folds == list(range(1, 11)) and len(d) == 30
    assert d.meta["filename"][0] == "fold1/1000-0-0-0.wav" and all(p.is_file() for p in d.audio_paths)
    assert d.names_by_target == {0: "bark", 14: "chime", 36: "hum"}
    assert d.meta["src_file"].tolist()[:2] == [1000, 1140]  # fsID: one recording's slices stay together
    out = tmp_path / "run"
    code, _, err = esc50ann(capsys, "--quiet", "run", tiny, "--source", urban, "--data-dir", tmp_path / "data",
                            "--out", out, *FAST)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(int(f) for f in metrics["fold_accuracy"]) == list(range(1, 11))
    assert not (tmp_path / "data" / "folds").exists()  # its own folds: nothing assigned


@pytest.mark.parametrize("damage, words", [
    ("missing", ["UrbanSound8K.csv", "row 5 (line 6)", "'slice_file_name'", "fold2/2140-14-0-0.wav: no such file"]),
    ("duplicate", ["UrbanSound8K.csv", "row 5 (line 6)", "'fold1/1000-0-0-0.wav'", "duplicates row 1"]),
    ("bad fold", ["UrbanSound8K.csv", "row 2 (line 3)", "'fold'", "'x'"]),
    ("two names", ["UrbanSound8K.csv", "row 4 (line 5)", "'class'"]),
    ("fold without a class", ["UrbanSound8K.csv", "row 2 (line 3)", "fold 3 has no clip of class 'chime'"]),
])
def test_bad_urbansound8k_folder_is_one_line(urban, tmp_path, capsys, damage, words):
    copy = shutil.copytree(urban, tmp_path / "UrbanSound8K")
    csv = copy / "metadata" / "UrbanSound8K.csv"
    meta = pd.read_csv(csv, dtype=str)
    if damage == "missing":
        (copy / "audio" / "fold2" / "2140-14-0-0.wav").unlink()
    elif damage == "duplicate":
        meta.loc[4, ["slice_file_name", "fold"]] = ["1000-0-0-0.wav", "1"]
    elif damage == "bad fold":
        meta.loc[1, "fold"] = "x"
    elif damage == "two names":
        meta.loc[3, "class"] = "woof"
    else:  # fold 3's chime clip listed (and moved) into fold 4
        i = meta.index[(meta["fold"] == "3") & (meta["class"] == "chime")][0]
        shutil.move(copy / "audio" / "fold3" / meta.loc[i, "slice_file_name"], copy / "audio" / "fold4")
        meta.loc[i, "fold"] = "4"
    meta.to_csv(csv, index=False)
    assert_one_line_error(esc50ann(capsys, "download", "--source", copy, "--data-dir", tmp_path / "data"), *words)


# ----------------------------------------------------------------------------- a CSV of its own shape


@pytest.fixture(scope="module")
def field_csv(recordings, tmp_path_factory):
    """``recordings``' clips listed in ``notes/labels.csv`` with columns path (relative to the
    folder ``clips/``), species, recording and, unlike the tree, a column of given folds ``split``."""
    root = tmp_path_factory.mktemp("csv") / "field"
    shutil.copytree(recordings, root / "clips")
    files = sorted(p.relative_to(root / "clips").as_posix() for p in (root / "clips").rglob("*.*"))
    table = pd.DataFrame({"path": files, "species": [f.split("/")[0].upper() for f in files],
                          "recording": [f.split("/")[0] + f.split("/")[-1].split("_")[0] for f in files]})
    table["split"] = table["recording"].str[-1].astype(int) + 1  # recording r in fold r + 1
    (root / "notes").mkdir()
    table.sample(frac=1, random_state=1).to_csv(root / "notes" / "labels.csv", index=False)
    return root


CSV = ("--set", "dataset.metadata=notes/labels.csv", "--set", "dataset.audio_dir=clips",
       "--set", "dataset.file_column=path", "--set", "dataset.label_column=species")


def test_a_csv_with_its_own_column_names_and_folds(field_csv, tiny, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = esc50ann(capsys, "--quiet", "run", tiny, "--source", field_csv, "--data-dir", tmp_path / "data",
                            "--out", out, *CSV, "--set", "dataset.fold_column=split",
                            "--set", "dataset.group_column=recording", *FAST)
    assert code == 0, err
    predictions = pd.read_csv(out / "predictions.csv")
    table = pd.read_csv(field_csv / "notes" / "labels.csv")
    assert dict(zip(predictions["clip"], predictions["fold"])) == dict(zip(table["path"], table["split"]))
    assert set(predictions["true"]) == {"BARK", "CHIME", "HUM"}
    code, info, _ = esc50ann(capsys, "info", "--data-dir", tmp_path / "data")
    assert "layout:   metadata CSV" in info and "folds:    1, 2, 3" in info


def test_a_csv_without_folds_gets_a_grouped_split(field_csv, tmp_path):
    settings = layouts.Settings(metadata="notes/labels.csv", audio_dir="clips", file_column="path",
                                label_column="species", group_column="recording", n_folds=3)
    d = prepare(field_csv, tmp_path / "data", settings=settings, progress=False)
    assert d.layout == layouts.CSV and d.folds == [1, 2, 3] and all(p.is_file() for p in d.audio_paths)
    table = pd.read_csv(field_csv / "notes" / "labels.csv").set_index("path")
    recording = table.loc[d.meta["filename"], "recording"].to_numpy()
    assert pd.Series(d.meta["fold"].to_numpy()).groupby(recording).nunique().eq(1).all()
    split = pd.read_csv(split_of(field_csv, tmp_path / "data", **vars(settings)))
    assert list(split.columns) == ["filename", "category", "fold", "group"] and len(split) == 18
    # a reordered CSV is the same clips: the kept split is reused as it is
    shuffled = field_csv / "notes" / "shuffled.csv"
    table.reset_index().sample(frac=1, random_state=7).to_csv(shuffled, index=False)
    again = prepare(field_csv, tmp_path / "other", progress=False,
                    settings=layouts.Settings(**{**vars(settings), "metadata": "notes/shuffled.csv"}))
    assert dict(zip(again.meta["filename"], again.meta["fold"])) == dict(zip(d.meta["filename"], d.meta["fold"]))


@pytest.mark.parametrize("change, words", [
    (lambda t: t.drop(columns="species"), ["labels.csv", "missing column 'species'"]),
    (lambda t: t.assign(path=t["path"].where(t.index != 3, "bark/gone.wav")),
     ["labels.csv", "row 4 (line 5)", "'path'", "bark/gone.wav: no such file"]),
    (lambda t: pd.concat([t, t.iloc[[2]]], ignore_index=True), ["labels.csv", "row 19 (line 20)", "duplicates row 3"]),
    (lambda t: t.assign(species=t["species"].where(t.index != 5, "")), ["labels.csv", "row 6 (line 7)", "empty"]),
])
def test_bad_csv_is_one_line(field_csv, tmp_path, capsys, change, words):
    copy = shutil.copytree(field_csv, tmp_path / "field")
    csv = copy / "notes" / "labels.csv"
    change(pd.read_csv(csv, dtype=str, keep_default_na=False)).to_csv(csv, index=False)
    assert_one_line_error(esc50ann(capsys, "features", "default", "--source", copy, "--data-dir", tmp_path / "data",
                                   *CSV), *words)


# ----------------------------------------------------------------------------- bad input


def test_a_class_with_too_few_clips_to_split_is_refused(tree, tmp_path, capsys):
    copy = shutil.copytree(tree, tmp_path / "sounds")
    (copy / "lonely").mkdir()
    for k in range(2):
        shutil.copy(copy / "bark" / "clip0.wav", copy / "lonely" / f"only{k}.wav")
    assert_one_line_error(esc50ann(capsys, "download", "--source", copy, "--data-dir", tmp_path / "data"),
                          str(copy / "lonely"), "class 'lonely' has 2 clip(s)", "5 folds", "dataset.n_folds")
    # with fewer folds it splits
    assert prepare(copy, tmp_path / "data", settings=layouts.Settings(n_folds=2), progress=False).folds == [1, 2]


def test_a_file_the_group_pattern_does_not_match_is_one_line(recordings, tmp_path, capsys):
    copy = shutil.copytree(recordings, tmp_path / "field")
    shutil.copy(next((copy / "hum").glob("rec0_take0.*")), copy / "hum" / "stray.wav")
    assert_one_line_error(esc50ann(capsys, "features", "default", "--source", copy, "--data-dir", tmp_path / "data",
                                   "--set", r"dataset.group_pattern='/(rec\d+)_'"),
                          str(copy / "hum" / "stray.wav"), "group_pattern")


@pytest.mark.parametrize("settings, words", [
    (["dataset.audio_dir='clips'"], ["dataset.audio_dir", "set metadata too"]),
    (["dataset.metadata='x.csv'", "dataset.group_column='a'", "dataset.group_pattern='b'"], ["not both"]),
    (["dataset.group_pattern='(unclosed'"], ["dataset.group_pattern", "not a regular expression"]),
    (["dataset.n_folds=1"], ["dataset.n_folds must be an integer in [2, 100]"]),
    (["dataset.metadata='nowhere.csv'"], ["nowhere.csv: metadata file not found"]),
])
def test_bad_dataset_settings_are_one_line(tree, tmp_path, capsys, settings, words):
    args = [a for s in settings for a in ("--set", s)]
    assert_one_line_error(esc50ann(capsys, "features", "default", "--source", tree, "--data-dir", tmp_path / "data",
                                   *args), *words)


def test_settings_are_checked_by_themselves_too():
    with pytest.raises(ConfigError, match="file_column: applies to a metadata CSV only"):
        layouts.Settings(file_column="path")


def test_esc10_is_refused_on_other_datasets(tree, tmp_path, capsys):
    assert_one_line_error(esc50ann(capsys, "features", "quick", "--source", tree, "--data-dir", tmp_path / "data"),
                          "subset 'esc10'", str(tree))


def test_esc50_checks_stay_strict_and_others_do_not(synth_folder, tree, tmp_path):
    from esc50ann.verify import check_clip

    odd = next(p for p in tree.rglob("*.flac"))
    assert check_clip(odd)[1] and check_clip(odd, strict=False)[1] == []
    d = prepare(synth_folder, tmp_path / "data", progress=False)
    assert d.layout == layouts.ESC50
    assert "layout" not in json.loads((tmp_path / "data" / "dataset.json").read_text())  # as it always was
    # the metadata setting reads another CSV over ESC-50's own folder; an archive cannot
    with pytest.raises(DatasetError, match="an archive is read as ESC-50"):
        prepare(synth.make_archive(tmp_path / "esc.zip"), tmp_path / "zip", progress=False,
                settings=layouts.Settings(metadata="meta/esc50.csv"))


def test_a_clip_under_a_tenth_of_the_duration_warns(tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "blip.wav", synth.tone(0, 0, sample_rate=8000, duration=0.3), 8000)
    with pytest.warns(UserWarning, match="blip.wav: 0.30 s long, under a tenth"):
        y, sr = audio.load_clip(tmp_path / "blip.wav", duration=5.0, sample_rate=16000)
    assert (sr, y.shape) == (16000, (80000,)) and not y[5000:].any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        audio.load_clip(tmp_path / "blip.wav", duration=2.0, sample_rate=16000)


def test_a_folder_of_nothing_is_one_line(tmp_path, capsys):
    (tmp_path / "empty" / "label").mkdir(parents=True)
    (tmp_path / "empty" / "label" / "notes.txt").write_text("no audio")
    assert_one_line_error(esc50ann(capsys, "download", "--source", tmp_path / "empty", "--data-dir", tmp_path / "d"),
                          "no class folders of audio files")


def test_a_tree_that_changed_is_split_anew_with_a_warning(tree, tmp_path, capsys):
    copy = shutil.copytree(tree, tmp_path / "sounds")
    first = prepare(copy, tmp_path / "data", progress=False)
    shutil.copy(copy / "bark" / "clip0.wav", copy / "bark" / "clip9.wav")
    # what was verified no longer holds: `info` says so in one line, it does not split anew
    assert_one_line_error(esc50ann(capsys, "info", "--data-dir", tmp_path / "data"), "download")
    with pytest.warns(UserWarning, match="splitting it anew"):
        again = prepare(copy, tmp_path / "data", progress=False)
    assert len(again) == len(first) + 1 and "bark/clip9.wav" in set(again.meta["filename"])
    assert set(pd.read_csv(split_of(copy, tmp_path / "data"))["filename"]) == set(again.meta["filename"])


def test_a_damaged_layout_in_the_record_is_one_line(tree, tmp_path, capsys):
    prepare(tree, tmp_path / "data", progress=False)
    path = tmp_path / "data" / "dataset.json"
    record = json.loads(path.read_text())
    record["layout"]["n_folds"] = "five"
    path.write_text(json.dumps(record))
    assert_one_line_error(esc50ann(capsys, "info", "--data-dir", tmp_path / "data"), str(path), "damaged")


# ----------------------------------------------------------------------------- features --out, the cache


def test_features_out_writes_one_row_per_clip(tree, tiny, tmp_path, capsys):
    data = tmp_path / "data"
    code, out, err = esc50ann(capsys, "--quiet", "features", tiny, "--source", tree, "--data-dir",
                              data, "--out", tmp_path / "f.csv", *FAST)
    assert code == 0, err
    table = pd.read_csv(tmp_path / "f.csv")
    assert len(table) == 15 and list(table.columns[:3]) == ["filename", "category", "fold"]
    assert table["filename"].is_unique and set(table["category"]) == {"bark", "chime", "hum"}
    d = load(data)
    assert table.set_index("filename")["fold"].to_dict() == d.meta.set_index("filename")["fold"].to_dict()
    assert table.shape[1] == 3 + 6 * 32 and np.isfinite(table.iloc[:, 3:].to_numpy()).all()
    assert "wrote 15 rows" in out
    pytest.importorskip("pyarrow")
    code, _, err = esc50ann(capsys, "--quiet", "features", tiny, "--data-dir", data,
                            "--out", tmp_path / "f.parquet", *FAST)
    assert code == 0, err
    parquet = pd.read_parquet(tmp_path / "f.parquet")
    assert list(parquet.columns) == list(table.columns) and parquet.iloc[:, :3].equals(table.iloc[:, :3])
    assert parquet.dtypes.iloc[3] == np.float32  # as computed, not widened by a text round trip
    np.testing.assert_allclose(parquet.iloc[:, 3:].to_numpy(), table.iloc[:, 3:].to_numpy(), rtol=1e-6)


def test_features_out_of_another_kind_is_refused_before_any_work(tmp_path, capsys):
    assert_one_line_error(esc50ann(capsys, "features", "quick", "--data-dir", tmp_path / "nothing",
                                   "--out", tmp_path / "f.xlsx"), "f.xlsx", ".csv or .parquet")
    assert not (tmp_path / "nothing").exists()


def test_two_datasets_never_share_a_cache_entry(tree, recordings, urban, tmp_path):
    from esc50ann.features import cache_key
    from esc50ann.recipe import FeatureConfig

    config = FeatureConfig(sample_rate=16000, duration=2.0, n_mels=32)
    keys = {cache_key(prepare(source, tmp_path / name, progress=False), config)
            for name, source in (("a", tree), ("b", recordings), ("c", urban))}
    assert len(keys) == 3
    # the same relative file names with other audio in them: another key
    copy = shutil.copytree(tree, tmp_path / "sounds")
    shutil.copy(copy / "hum" / "clip0.wav", copy / "bark" / "clip0.wav")
    assert cache_key(prepare(copy, tmp_path / "d", progress=False), config) not in keys
