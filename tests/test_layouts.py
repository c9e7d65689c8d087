"""Datasets other than ESC-50 (esc50ann.layouts): a class-per-folder tree and an UrbanSound8K-shaped
folder, prepared and run like ESC-50, every bad input one line."""
import json
import warnings

import numpy as np
import pandas as pd
import pytest

import synth
from conftest import run_cli as esc50ann
from esc50ann import audio, layouts, paths
from esc50ann.dataset import load, prepare
from esc50ann.errors import DatasetError
from test_cli import assert_one_line_error

FAST = ("--set", "features.duration=2", "--set", "features.sample_rate=16000", "--jobs", 1)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return synth.make_class_tree(tmp_path_factory.mktemp("tree") / "sounds")


@pytest.fixture(scope="module")
def urban(tmp_path_factory):
    return synth.make_urbansound(tmp_path_factory.mktemp("us8k") / "UrbanSound8K")


def test_class_tree_gets_stratified_seeded_folds_reused_on_rerun(tree, tmp_path):
    d = prepare(tree, tmp_path / "data", progress=False)
    assert d.layout == layouts.FOLDERS and len(d) == 15 and d.folds == [1, 2, 3, 4, 5]
    assert d.class_names == ["bark", "chime", "hum"]
    assert all(p.is_file() for p in d.audio_paths) and "bark/sub/clip2.wav" in set(d.meta["filename"])
    # stratified: every class in every fold
    assert (pd.crosstab(d.meta["fold"], d.meta["category"]) == 1).all().all()
    assert not d.meta["esc10"].any() and d.meta["src_file"].is_unique
    split = paths.folds_csv(tmp_path / "data", tree)
    assert split.is_file() and split.parent.parent == tmp_path / "data"
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
    assert json.loads((tmp_path / "data" / "dataset.json").read_text())["layout"] == "folders"


def test_class_tree_runs_to_a_report_with_per_class_accuracy(tree, tmp_path, capsys):
    (tmp_path / "tiny.toml").write_text(synth.TINY_PIPELINE)
    out = tmp_path / "run"
    code, _, err = esc50ann(capsys, "--quiet", "run", tmp_path / "tiny.toml", "--source", tree,
                            "--data-dir", tmp_path / "data", "--out", out, *FAST)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["per_class_accuracy"]) == {"bark", "chime", "hum"} and metrics["n_clips"] == 15
    report = (out / "report.md").read_text()
    assert "Per-class accuracy" in report and f"source: {tree} (class-per-folder layout)" in report
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 15
    code, info, err = esc50ann(capsys, "info", "--data-dir", tmp_path / "data")
    assert code == 0 and "layout:   class-per-folder" in info and "ESC-10" not in info, err
    # a model trained on it classifies a clip of another rate and length as one of its classes
    model = tmp_path / "model.npz"
    code, _, err = esc50ann(capsys, "--quiet", "train", tmp_path / "tiny.toml", "--all", "--save", model,
                            "--data-dir", tmp_path / "data", *FAST[:4])
    assert code == 0, err
    clip = next(tree.rglob("*.ogg"))
    code, predicted, err = esc50ann(capsys, "predict", model, clip, "--top", 1)
    assert code == 0, err
    assert predicted.split(": ", 1)[1].rsplit(" ", 2)[0] in {"bark", "chime", "hum"}, predicted


def test_native_rate_means_one_rate_on_other_datasets(tree, tmp_path):
    from esc50ann.pipeline import Pipeline

    pipe = Pipeline.from_toml("quick", data_dir=tmp_path / "data", source=str(tree), progress=False,
                              overrides={"dataset.subset": "esc50"})
    assert pipe.config.features.sample_rate is None
    pipe.download()
    assert pipe.config.features.sample_rate == 44100


def test_urbansound8k_folder_runs_with_its_own_folds(urban, tmp_path, capsys):
    d = prepare(urban, tmp_path / "data", progress=False)
    assert d.layout == layouts.URBANSOUND8K and d.folds == [1, 2, 3, 4] and len(d) == 12
    assert d.meta["filename"][0] == "fold1/1000-0-0-0.wav" and all(p.is_file() for p in d.audio_paths)
    assert d.names_by_target == {0: "bark", 14: "chime", 36: "hum"}
    assert d.meta["src_file"].tolist()[:2] == [1000, 1140]  # fsID: one recording's slices stay together
    (tmp_path / "tiny.toml").write_text(synth.TINY_PIPELINE)
    out = tmp_path / "run"
    code, _, err = esc50ann(capsys, "--quiet", "run", tmp_path / "tiny.toml", "--source", urban,
                            "--data-dir", tmp_path / "data", "--out", out, *FAST)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(int(f) for f in metrics["fold_accuracy"]) == [1, 2, 3, 4]


def test_esc50_checks_stay_strict_and_others_do_not(synth_folder, tree, tmp_path):
    from esc50ann.verify import check_clip

    odd = next(p for p in tree.rglob("*.flac"))
    assert check_clip(odd)[1] and check_clip(odd, strict=False)[1] == []
    assert prepare(synth_folder, tmp_path / "data", progress=False).layout == layouts.ESC50


def test_a_clip_under_a_tenth_of_the_duration_warns(tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "blip.wav", synth.tone(0, 0, sample_rate=8000, duration=0.3), 8000)
    with pytest.warns(UserWarning, match="blip.wav: 0.30 s long, under a tenth"):
        y, sr = audio.load_clip(tmp_path / "blip.wav", duration=5.0, sample_rate=16000)
    assert (sr, y.shape) == (16000, (80000,)) and not y[5000:].any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        audio.load_clip(tmp_path / "blip.wav", duration=2.0, sample_rate=16000)


# ----------------------------------------------------------------------------- bad input


def test_a_class_with_one_clip_is_refused(tree, tmp_path, capsys):
    import shutil

    copy = shutil.copytree(tree, tmp_path / "sounds")
    (copy / "lonely").mkdir()
    shutil.copy(copy / "bark" / "clip0.wav", copy / "lonely" / "only.wav")
    assert_one_line_error(esc50ann(capsys, "download", "--source", copy, "--data-dir", tmp_path / "data"),
                          "lonely", "1 clip", "at least 2")


def test_esc10_is_refused_on_other_datasets(tree, tmp_path, capsys):
    assert_one_line_error(esc50ann(capsys, "features", "quick", "--source", tree, "--data-dir", tmp_path / "data"),
                          "subset 'esc10'", str(tree))


@pytest.mark.parametrize("damage, words", [
    ("missing", ["1 of 12 audio files", "fold2/2140-14-0-0.wav: missing"]),
    ("duplicate", ["UrbanSound8K.csv", "row 5 (line 6)", "'fold1/1000-0-0-0.wav'", "duplicates row 1"]),
    ("bad fold", ["UrbanSound8K.csv", "row 2 (line 3)", "'fold'", "'x'"]),
    ("two names", ["UrbanSound8K.csv", "row 4 (line 5)", "'class'"]),
])
def test_bad_urbansound8k_folder_is_one_line(urban, tmp_path, capsys, damage, words):
    import shutil

    copy = shutil.copytree(urban, tmp_path / "UrbanSound8K")
    csv = copy / "metadata" / "UrbanSound8K.csv"
    meta = pd.read_csv(csv, dtype=str)
    if damage == "missing":
        (copy / "audio" / "fold2" / "2140-14-0-0.wav").unlink()
    elif damage == "duplicate":
        meta.loc[4, ["slice_file_name", "fold"]] = ["1000-0-0-0.wav", "1"]
    elif damage == "bad fold":
        meta.loc[1, "fold"] = "x"
    else:
        meta.loc[3, "class"] = "woof"
    meta.to_csv(csv, index=False)
    assert_one_line_error(esc50ann(capsys, "download", "--source", copy, "--data-dir", tmp_path / "data"), *words)


def test_a_folder_of_nothing_is_one_line(tmp_path, capsys):
    (tmp_path / "empty" / "label").mkdir(parents=True)
    (tmp_path / "empty" / "label" / "notes.txt").write_text("no audio")
    assert_one_line_error(esc50ann(capsys, "download", "--source", tmp_path / "empty", "--data-dir", tmp_path / "d"),
                          "no class folders of audio files")


# ----------------------------------------------------------------------------- features --out


def test_features_out_writes_one_row_per_clip(tree, tmp_path, capsys):
    data = tmp_path / "data"
    (tmp_path / "tiny.toml").write_text(synth.TINY_PIPELINE)
    code, out, err = esc50ann(capsys, "--quiet", "features", tmp_path / "tiny.toml", "--source", tree, "--data-dir",
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
    code, _, err = esc50ann(capsys, "--quiet", "features", tmp_path / "tiny.toml", "--data-dir", data,
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


def test_a_tree_that_changed_is_split_anew_with_a_warning(tree, tmp_path):
    import shutil

    copy = shutil.copytree(tree, tmp_path / "sounds")
    first = prepare(copy, tmp_path / "data", progress=False)
    shutil.copy(copy / "bark" / "clip0.wav", copy / "bark" / "clip9.wav")
    with pytest.warns(UserWarning, match="splitting it anew"):
        again = prepare(copy, tmp_path / "data", progress=False)
    assert len(again) == len(first) + 1 and "bark/clip9.wav" in set(again.meta["filename"])
    assert set(pd.read_csv(paths.folds_csv(tmp_path / "data", copy))["filename"]) == set(again.meta["filename"])
