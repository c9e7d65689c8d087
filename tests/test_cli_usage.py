"""The command as people use it every day: built-in pipelines, --set/--seed, the data root, a final
model, predictions on folders of real-world recordings, and progress readable in a log."""
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import synth
from conftest import run_cli as esc50ann
from esc50ann import cli, paths


def test_pipelines_lists_every_builtin_with_a_description(capsys):
    code, out, _ = esc50ann(capsys, "pipelines")
    assert code == 0
    names = [line.split()[0] for line in out.strip().splitlines()]
    assert names == ["default", "original", "original-features", "quick"]
    assert all(len(line.split(None, 1)) == 2 for line in out.strip().splitlines())  # each has a description


def test_pipelines_show_prints_a_file_that_loads_back(capsys, tmp_path):
    from esc50ann import config

    code, out, _ = esc50ann(capsys, "pipelines", "show", "quick")
    assert code == 0 and 'name = "quick"' in out
    (tmp_path / "copy.toml").write_text(out)
    assert config.load(tmp_path / "copy.toml").dataset.subset == "esc10"
    code, _, err = esc50ann(capsys, "pipelines", "show", "nope")
    assert code == 1 and err.startswith("esc50ann: error:") and "default, original, original-features, quick" in err


def test_set_and_seed_reach_the_run(cli_root, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, _, err = esc50ann(capsys, "--quiet", "run", cli_root / "tiny.toml", "--data-dir", cli_root / "data", "--out", out_dir,
                            "--jobs", 1, "--set", "training.max_epochs=3", "--set", "model.hidden_layer_sizes=[8]",
                            "--set", "training.solver=sgd", "--seed", 7)
    assert code == 0, err
    pipeline = json.loads((out_dir / "metrics.json").read_text())["pipeline"]
    assert pipeline["training"]["max_epochs"] == 3 and pipeline["training"]["solver"] == "sgd"
    assert pipeline["training"]["random_state"] == 7 and pipeline["model"]["hidden_layer_sizes"] == [8]


@pytest.mark.parametrize("setting, words", [
    ("training.lerning_rate=0.1", ["lerning_rate"]),
    ("training.learning_rate=fast", ["learning_rate"]),
    ("nosection.key=1", ["nosection.key"]),
    ("justtext", ["--set", "section.key=value"]),
])
def test_bad_set_is_one_line(cli_root, capsys, setting, words):
    code, _, err = esc50ann(capsys, "run", cli_root / "tiny.toml", "--data-dir", cli_root / "data", "--set", setting)
    assert code == 1 and len(err.strip().splitlines()) == 1 and err.startswith("esc50ann: error:"), err
    assert all(w in err for w in words), err


def test_data_root_does_not_depend_on_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    checkout = paths.source_checkout()
    assert checkout is not None and paths.data_dir() == checkout / "data"  # running from this checkout
    monkeypatch.setattr(paths, "source_checkout", lambda: None)  # as from an installed wheel
    import platformdirs

    assert paths.data_dir() == paths.Path(platformdirs.user_data_dir("esc50ann"))
    assert not str(paths.data_dir()).startswith(str(tmp_path))
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(tmp_path / "env"))
    assert paths.data_dir() == tmp_path / "env"
    assert paths.data_dir(tmp_path / "arg") == tmp_path / "arg"


@pytest.fixture(scope="module")
def final_model(cli_root, tmp_path_factory):
    model = tmp_path_factory.mktemp("model") / "m.npz"
    assert cli.main(["--quiet", "train", str(cli_root / "tiny.toml"), "--all", "--save", str(model),
                     "--data-dir", str(cli_root / "data")]) == 0
    return model


@pytest.fixture
def recordings(tmp_path):
    """A folder with a good clip, a 12 s recording, a silent one, a very short one and a bad file."""
    folder = tmp_path / "recordings"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "dog.wav", synth.tone(0, 11), synth.SAMPLE_RATE)
    sf.write(folder / "sub" / "long.wav", synth.tone(36, 12, duration=12.0), synth.SAMPLE_RATE)
    sf.write(folder / "silent.wav", np.zeros(5 * synth.SAMPLE_RATE, np.float32), synth.SAMPLE_RATE)
    sf.write(folder / "blip.wav", synth.tone(1, 13, duration=0.5), synth.SAMPLE_RATE)
    (folder / "broken.wav").write_bytes(b"RIFF....not a wave at all")
    (folder / "notes.txt").write_text("not audio, and not an audio name: ignored")
    return folder


def test_train_all_uses_every_fold(final_model):
    from esc50ann.model import ANNClassifier

    meta = ANNClassifier.load(final_model).metadata_
    assert meta["trained_on_folds"] == [1, 2, 3] and meta["test_fold"] is None


def test_predict_a_folder_reports_bad_files_and_predicts_the_rest(final_model, recordings, capsys):
    code, out, err = esc50ann(capsys, "predict", final_model, recordings, "--format", "json", "--top", 2)
    assert code == 1  # one file failed
    results = json.loads(out)  # stdout is pure JSON; messages went to stderr
    assert [r["file"].split("recordings/")[1] for r in results] == [
        "blip.wav", "broken.wav", "dog.wav", "silent.wav", "sub/long.wav"]  # every input, the bad one too
    by_name = {r["file"].rsplit("/", 1)[1]: r for r in results}
    broken = by_name.pop("broken.wav")
    assert "broken.wav" in broken["error"] and broken["top"] == [] and broken["label"] is None
    assert all(len(r["top"]) == 2 and r["error"] is None for r in by_name.values())
    assert all(r["confidence"] == r["top"][0]["probability"] for r in by_name.values())
    assert by_name["long.wav"]["n_windows"] == 4  # 12 s in 5 s windows every 2.5 s: 0, 2.5, 5, 7 (end)
    assert by_name["dog.wav"]["n_windows"] == 1 and by_name["dog.wav"]["warnings"] == []
    assert any("silent" in w for w in by_name["silent.wav"]["warnings"])
    assert any("0.50 s" in w for w in by_name["blip.wav"]["warnings"])
    errors = [line for line in err.splitlines() if line.startswith("esc50ann: error:")]
    assert len(errors) == 1 and "broken.wav" in errors[0]


def test_predict_csv_carries_errors_and_warnings(final_model, recordings, capsys):
    code, out, _ = esc50ann(capsys, "predict", final_model, recordings, "--format", "csv", "--top", 1)
    rows = {r["file"].rsplit("/", 1)[1]: r for r in csv.DictReader(io.StringIO(out))}
    assert code == 1 and set(rows) == {"blip.wav", "broken.wav", "dog.wav", "silent.wav", "long.wav"}
    assert "broken.wav" in rows["broken.wav"]["error"] and rows["broken.wav"]["category"] == ""
    assert "silent" in rows["silent.wav"]["warnings"] and rows["dog.wav"]["warnings"] == ""


def test_min_confidence_marks_unsure_answers(final_model, recordings, capsys):
    clip = recordings / "dog.wav"
    _, out, _ = esc50ann(capsys, "predict", final_model, clip, "--format", "json", "--min-confidence", "0")
    assert json.loads(out)[0]["low_confidence"] is False
    code, out, err = esc50ann(capsys, "predict", final_model, clip, "--format", "json", "--min-confidence", "1")
    result = json.loads(out)[0]
    assert code == 0 and result["low_confidence"] is True and result["confidence"] < 1
    assert any("min-confidence" in w for w in result["warnings"]) and "unsure" in err
    _, table, _ = esc50ann(capsys, "predict", final_model, clip, "--min-confidence", "1")
    assert table.rstrip().endswith("(low confidence)")


@pytest.mark.parametrize("seconds, starts", [
    (20.004, [0.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0]),  # the 4 ms past 15 s is no new window
    (5.001, [0.0]),
    (5.6, [0.0, 0.6]),  # 0.6 s past the last window: a window of its own
])
def test_a_last_window_only_samples_past_the_previous_is_no_new_window(seconds, starts):
    from esc50ann.predict import window_starts

    sr = 44100
    found = window_starts(int(round(seconds * sr)), window=5 * sr, hop=sr * 5 // 2)
    assert [s / sr for s in found] == pytest.approx(starts)


def test_a_hop_longer_than_the_clip_says_what_it_skips(final_model, tmp_path, capsys):
    sf.write(tmp_path / "long.wav", synth.tone(3, 5, duration=20.0), synth.SAMPLE_RATE)
    code, out, err = esc50ann(capsys, "predict", final_model, tmp_path / "long.wav", "--hop", 30,
                              "--format", "json")
    result = json.loads(out)[0]
    assert code == 0 and result["n_windows"] == 2  # 0 s and the end (15 s)
    assert any("10.0 s of 20.0 s not analysed" in w for w in result["warnings"]), result
    _, out, _ = esc50ann(capsys, "predict", final_model, tmp_path / "long.wav", "--hop", 5, "--format", "json")
    assert json.loads(out)[0]["warnings"] == []  # windows end to end cover it all


def test_predict_refuses_runaway_windows_and_recordings(final_model, tmp_path, capsys, monkeypatch):
    from esc50ann import predict

    sf.write(tmp_path / "long.wav", synth.tone(3, 5, duration=8.0), synth.SAMPLE_RATE)
    monkeypatch.setattr(predict, "MAX_WINDOWS", 10)
    code, out, err = esc50ann(capsys, "predict", final_model, tmp_path / "long.wav", "--hop", 0.1)
    assert code == 1 and "windows (at most 10)" in err and "--hop" in err and out == ""
    monkeypatch.setattr(predict, "MAX_SECONDS", 3600 * 7.0 / 3600)
    code, _, err = esc50ann(capsys, "predict", final_model, tmp_path / "long.wav")
    assert code == 1 and "long.wav" in err and "cut it into parts" in err


def test_long_recordings_average_their_windows(final_model, recordings):
    from esc50ann.predict import Predictor

    predictor = Predictor(final_model, hop=5.0)
    result = predictor.predict(recordings / "sub" / "long.wav", top=50)
    assert [start for start, _ in result.windows] == [0.0, 5.0, 7.0]
    window_proba = predictor.model.predict_proba(predictor._windows(*_read(recordings / "sub" / "long.wav"))[1])
    np.testing.assert_allclose(result.proba, window_proba.mean(axis=0), rtol=1e-6)


def _read(path):
    from esc50ann import audio

    return audio.read_audio(path, sample_rate=44100)


def test_predict_formats_parse_back(final_model, recordings, capsys):
    clip = recordings / "dog.wav"
    _, table, _ = esc50ann(capsys, "predict", final_model, clip, "--top", 3)
    _, as_csv, _ = esc50ann(capsys, "predict", final_model, clip, "--top", 3, "--format", "csv")
    _, as_json, _ = esc50ann(capsys, "predict", final_model, clip, "--top", 3, "--format", "json")
    rows = list(csv.DictReader(io.StringIO(as_csv)))
    top = json.loads(as_json)[0]["top"]
    assert [r["category"] for r in rows] == [t["category"] for t in top]
    assert [float(r["probability"]) for r in rows] == pytest.approx([t["probability"] for t in top], abs=1e-6)
    assert table.startswith(f"{clip}: {top[0]['category']} ")


def test_predict_per_window_and_glob(final_model, recordings, capsys):
    code, out, err = esc50ann(capsys, "predict", final_model, f"{recordings}/**/long*.wav", "--per-window",
                              "--format", "csv", "--top", 1)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["window_start_s"] for r in rows] == ["", "0.000", "2.500", "5.000", "7.000"]


@pytest.mark.parametrize("args, words", [
    (["--top", "0"], ["--top", "0"]),
    (["--hop", "-1"], ["hop", "0.01"]),
    (["--hop", "0"], ["hop"]),
    (["--hop", "1e-6"], ["hop", "1e-06"]),
    (["--hop", "inf"], ["hop", "inf"]),
    (["--hop", "nan"], ["hop", "nan"]),
    (["--hop", "fast"], ["--hop", "fast"]),
    (["--min-confidence", "2"], ["min_confidence", "[0, 1]"]),
    (["--min-confidence", "nan"], ["min_confidence"]),
])
def test_predict_bad_options(final_model, recordings, capsys, args, words):
    code, _, err = esc50ann(capsys, "predict", final_model, recordings / "dog.wav", *args)
    assert code == 1 and err.startswith("esc50ann: error:") and all(w in err for w in words), err


def test_missing_file_says_no_such_file(final_model, tmp_path, capsys):
    code, _, err = esc50ann(capsys, "predict", final_model, tmp_path / "nothere.wav")
    assert code == 1 and "no such file" in err and "nothere.wav" in err


def test_model_saved_from_python_explains_what_predict_needs(tmp_path, capsys):
    from esc50ann.model import ANNClassifier

    X, y = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32), np.arange(20) % 2
    ANNClassifier(hidden_layer_sizes=(3,), max_epochs=1).fit(X, y).save(tmp_path / "bare.npz")
    code, _, err = esc50ann(capsys, "predict", tmp_path / "bare.npz", tmp_path / "x.wav")
    assert code == 1 and "feature configuration" in err and "esc50ann train" in err


def test_log_has_stage_lines_and_no_carriage_returns(cli_root, tmp_path, capsys):
    """stderr here is not a terminal: a line per stage and per fold, no bars."""
    code, _, err = esc50ann(capsys, "run", cli_root / "tiny.toml", "--data-dir", cli_root / "data", "--out", tmp_path / "r",
                            "--set", "training.max_epochs=2", "-v")
    assert code == 0, err
    assert "\r" not in err
    for stage in ("dataset:", "features:", "cross-validation:", "report:"):
        assert any(line.startswith(stage) for line in err.splitlines()), (stage, err)
    assert "fold 1: accuracy" in err and "fold 3 epoch 2/2" in err  # parallel folds report epochs too


def test_quiet_prints_only_the_result(cli_root, tmp_path, capsys):
    code, out, err = esc50ann(capsys, "--quiet", "run", cli_root / "tiny.toml", "--data-dir", cli_root / "data",
                              "--out", tmp_path / "r", "--set", "training.max_epochs=2")
    assert code == 0 and err == "" and len(out.splitlines()) == 1 and "accuracy" in out and str(tmp_path / "r") in out


def test_runs_are_found_by_name_path_or_latest_and_never_overwritten(cli_root, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(cli_root / "data", data, ignore=shutil.ignore_patterns("runs"))
    args = ["--quiet", "run", cli_root / "tiny.toml", "--data-dir", data, "--jobs", 1]
    assert esc50ann(capsys, *args, "--set", "training.max_epochs=2")[0] == 0
    elsewhere = tmp_path / "mine"
    assert esc50ann(capsys, *args, "--set", "training.max_epochs=3", "--out", elsewhere)[0] == 0
    code, out, _ = esc50ann(capsys, "runs", "--data-dir", data)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 2, out
    assert lines[0].endswith(str(elsewhere)) and "training.max_epochs=3" in lines[0]  # newest first
    assert "training.max_epochs=2" in lines[1] and lines[0].split()[8] != lines[1].split()[8]  # config hashes
    first = Path(lines[1].split()[-1])
    assert first.parent == data / "runs"
    _, latest, _ = esc50ann(capsys, "report", "--data-dir", data)
    _, by_name, _ = esc50ann(capsys, "report", first.name, "--data-dir", data)
    assert str(elsewhere) in latest and str(first) in by_name and "per fold:" in by_name
    code, _, err = esc50ann(capsys, "report", "tiny-nope", "--data-dir", data)
    assert code == 1 and "tiny-nope" in err and first.name in err  # names the runs there are
    before = (elsewhere / "metrics.json").read_text()
    code, _, err = esc50ann(capsys, *args, "--out", elsewhere)
    assert code == 1 and "--force" in err and str(elsewhere) in err
    assert (elsewhere / "metrics.json").read_text() == before  # refused before any work
    assert esc50ann(capsys, *args, "--out", elsewhere, "--force")[0] == 0
    assert (elsewhere / "metrics.json").read_text() != before


def test_unknown_folds_are_named_before_counting(cli_root, capsys):
    code, _, err = esc50ann(capsys, "run", cli_root / "tiny.toml", "--data-dir", cli_root / "data", "--folds", "4")
    assert code == 1 and "folds 4: not in the metadata" in err, err


def test_report_of_a_missing_folder(tmp_path, capsys):
    code, _, err = esc50ann(capsys, "report", tmp_path / "nope")
    assert code == 1 and "no such run folder" in err


def test_an_internal_error_is_one_line_without_a_traceback(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("a bug\nwith two lines")

    monkeypatch.setitem(cli.COMMANDS, "pipelines", broken)
    monkeypatch.delenv("ESC50ANN_DEBUG")
    code, _, err = esc50ann(capsys, "pipelines")
    assert code == 2 and err == "esc50ann: internal error: RuntimeError: a bug with two lines (run with --debug for the traceback)\n"
    with pytest.raises(RuntimeError):
        cli.main(["pipelines", "--debug"])


def test_bare_command_prints_the_usage(capsys):
    code, out, err = esc50ann(capsys)
    assert code == 0 and err == "" and "COMMAND" in out and "predict" in out and "example:" in out


@pytest.mark.parametrize("command", ["download", "info", "pipelines", "sweeps", "features", "cache", "run",
                                     "train", "predict", "sweep", "runs", "report"])
def test_each_command_help_lists_only_its_options_documents_positionals_and_ends_with_an_example(
        command, capsys):
    code, out, _ = esc50ann(capsys, command, "--help")
    assert code == 0 and out.rstrip().splitlines()[-1].startswith(f"example: esc50ann {command}")
    parser = cli.build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        if not action.option_strings:  # a positional: has its line of help
            assert action.help, f"{command} {action.dest} has no help"
    takes_source = command in {"download", "features", "run", "train", "sweep"}
    assert ("--source" in out) == takes_source
    assert ("--set" in out) == (command in {"features", "run", "train"})
    assert ("--data-dir" in out) == (command not in {"pipelines", "sweeps", "predict"})


def test_builtin_sweeps_are_listed_shown_and_run_by_name(capsys, tmp_path):
    from esc50ann.sweepfile import Sweep

    code, out, _ = esc50ann(capsys, "sweeps")
    names = [line.split()[0] for line in out.strip().splitlines()]
    assert code == 0 and names == ["default-decay", "default-depth", "default-pitch", "default-random", "default-small"]
    code, out, _ = esc50ann(capsys, "sweeps", "show", "default-small")
    assert code == 0 and 'name = "default-small"' in out
    assert Sweep.from_toml("default-small").name == "default-small"  # what `sweep default-small` reads
    code, _, err = esc50ann(capsys, "sweep", "nosuch", "--data-dir", tmp_path)
    assert code == 1 and "default-small" in err and "nosuch" in err


def test_pipeline_descriptions_carry_no_figures():
    import re

    from esc50ann import config

    for name, path in config.builtin_pipelines().items():
        description = config.load(path).description
        assert not re.search(r"\d\s*%|\d+\.\d+ ?s\b|\bminutes?\b", description), (name, description)


def test_features_prints_its_summary_once_worded_like_run(cli_root, capsys, monkeypatch):
    import sys

    for stream in (sys.stdout, sys.stderr):  # as on a terminal
        monkeypatch.setattr(stream, "isatty", lambda: True)
    code, out, err = esc50ann(capsys, "features", cli_root / "tiny.toml", "--data-dir", cli_root / "data",
                              "--jobs", 1)
    lines = [line for line in (out + err).splitlines() if line.startswith("features:")]
    assert code == 0 and len(lines) == 1 and "x" in lines[0] and "(key " in lines[0], out + err
    code, out, err = esc50ann(capsys, "-q", "features", cli_root / "tiny.toml", "--data-dir", cli_root / "data")
    assert code == 0 and err == "" and out.startswith("features: ") and len(out.splitlines()) == 1
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)  # stdout to a file: the line goes there too
    code, out, err = esc50ann(capsys, "features", cli_root / "tiny.toml", "--data-dir", cli_root / "data")
    assert code == 0 and out.startswith("features: ") and "features: " in err
