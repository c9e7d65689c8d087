"""The esc50ann command on the synthetic archive: in-process through ``cli.main(argv)`` with the
output captured, plus one real subprocess to show the installed entry point behaves the same."""
import json
import subprocess
import sys

import pytest
import soundfile as sf

import synth
from conftest import run_cli as esc50ann
from esc50ann import cli


def assert_one_line_error(result, *words):
    code, _, err = result
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("esc50ann: error:"), err
    for word in words:
        assert word in lines[0]


def test_info_lists_clips_classes_and_folds(cli_root, capsys):
    code, out, err = esc50ann(capsys, "info", "--data-dir", cli_root / "data")
    assert code == 0, err
    assert "24" in out and "1, 2, 3" in out


def test_run_then_report_then_train_then_predict(cli_root, tmp_path, capsys):
    data, out_dir = cli_root / "data", tmp_path / "run"
    code, out, err = esc50ann(capsys, "--quiet", "run", cli_root / "tiny.toml", "--data-dir", data,
                              "--out", out_dir, "--jobs", 1)
    assert code == 0, err
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert out.count("\n") == 1 and str(out_dir) in out  # -q: one summary line
    assert f"{100 * metrics['accuracy_mean']:.1f} % ± {100 * metrics['accuracy_std']:.1f}" in out

    code, report, _ = esc50ann(capsys, "report", out_dir, "--data-dir", data)
    assert code == 0 and "per fold: 1:" in report and "worst classes:" in report, report
    assert "**" not in report and "|---" not in report and str(out_dir / "report.html") in report
    code, markdown, _ = esc50ann(capsys, "report", out_dir, "--markdown")
    assert code == 0 and "Per-class accuracy" in markdown

    model = tmp_path / "model.npz"
    code, _, err = esc50ann(capsys, "--quiet", "train", cli_root / "tiny.toml", "--test-fold", 2, "--save", model,
                            "--data-dir", data)
    assert code == 0, err
    assert model.exists()

    # odd WAVs: short, stereo, another rate, long -- all classified
    clips = {"short.wav": (synth.tone(14, 1, duration=1.2), 44100),
             "stereo.wav": (synth.tone(0, 2, channels=2), 44100),
             "rate.wav": (synth.tone(1, 3, sample_rate=22050), 22050),
             "long.wav": (synth.tone(36, 4, duration=7.5), 44100)}
    for name, (y, sr) in clips.items():
        sf.write(tmp_path / name, y, sr)
    code, predicted, err = esc50ann(capsys, "predict", model, *(tmp_path / n for n in clips), "--top", 2)
    assert code == 0, err
    lines = predicted.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(str(tmp_path / "short.wav")) and "%" in lines[0]
    known = {"dog", "rooster", "chirping_birds", "vacuum_cleaner"}
    for line in lines:
        ranked = line.split(": ", 1)[1].split(", ")
        assert len(ranked) == 2 and {r.rsplit(" ", 2)[0] for r in ranked} <= known

    junk = tmp_path / "junk.wav"
    junk.write_text("not audio")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert_one_line_error(esc50ann(capsys, "predict", model, junk), "junk.wav")
    assert_one_line_error(esc50ann(capsys, "predict", model, empty), "empty.wav")


def test_cv_is_run(cli_root, tmp_path, capsys):
    code, _, err = esc50ann(capsys, "--quiet", "cv", cli_root / "tiny.toml", "--data-dir", cli_root / "data",
                            "--out", tmp_path / "run", "--folds", "1,2", "--jobs", 1)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["folds"] == [1, 2] and metrics["warnings"] == [] and "warning" not in err


def test_an_unstable_fold_is_a_warning_on_the_terminal_even_quiet(cli_root, tmp_path, capsys, monkeypatch):
    from esc50ann import evaluate

    def unstable(history, kept_epoch=None):  # every network counts as unstable
        return {**instability(history, kept_epoch), "unstable": True}

    instability = evaluate.instability
    monkeypatch.setattr(evaluate, "instability", unstable)
    code, _, err = esc50ann(capsys, "--quiet", "cv", cli_root / "tiny.toml", "--data-dir", cli_root / "data",
                            "--out", tmp_path / "run", "--folds", "1,2", "--jobs", 1,
                            "--set", "training.lr_schedule=cosine", "--set", "training.warmup_epochs=2")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["warnings"]) == 2 and metrics["pipeline"]["training"]["lr_schedule"] == "cosine"
    for fold in (1, 2):
        assert f"esc50ann: warning: fold {fold}: unstable training" in err


def test_a_snapshot_ensemble_with_clipping_runs_from_the_command_line(cli_root, tmp_path, capsys):
    code, _, err = esc50ann(capsys, "--quiet", "cv", cli_root / "tiny.toml", "--data-dir", cli_root / "data",
                            "--out", tmp_path / "run", "--folds", "1,2", "--jobs", 1,
                            "--set", "model.n_networks=2", "--set", "model.ensemble=snapshots",
                            "--set", "training.max_epochs=4", "--set", "training.lr_schedule=cosine",
                            "--set", "training.clip_norm=0.5", "--set", "training.epsilon=1e-6", "--set", "training.patience=0")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [s["kept_epoch"] for s in metrics["training_stability"]["1"]] == [2, 4]  # one member per cycle
    report = (tmp_path / "run" / "report.md").read_text()
    assert "an ensemble of 2 snapshots of one network" in report and "gradients clipped to norm 0.5" in report


@pytest.mark.parametrize("args, words", [
    (["cv", "{dir}/typo.toml"], ["typo.toml", "n_mel"]),
    (["cv", "{dir}/tiny.toml", "--folds", "1,7"], ["7"]),
    (["cv", "{dir}/tiny.toml", "--folds", "2"], ["folds 2", "two"]),
    (["cv", "{dir}/tiny.toml", "--folds", "1,1"], ["folds 1", "two"]),
    (["cv", "{dir}"], ["pipeline file not found"]),
    (["report", "{dir}"], ["metrics.json"]),
    (["predict", "{dir}/missing.npz", "{dir}/tiny.toml"], ["missing.npz"]),
])
def test_bad_input_is_one_line_error(cli_root, capsys, args, words):
    (cli_root / "typo.toml").write_text("[features]\nn_mel = 64\n")
    args = [a.format(dir=cli_root) for a in args]
    assert_one_line_error(esc50ann(capsys, "--quiet", "--data-dir", cli_root / "data", *args), *words)


def test_info_without_dataset_says_what_to_do(tmp_path, capsys):
    assert_one_line_error(esc50ann(capsys, "info", "--data-dir", tmp_path), "download")


def test_cache_list_and_clear(cli_root, capsys):
    data = cli_root / "data"
    assert esc50ann(capsys, "--quiet", "features", cli_root / "tiny.toml", "--data-dir", data, "--jobs", 1)[0] == 0
    code, listed, _ = esc50ann(capsys, "cache", "list", "--data-dir", data)
    assert code == 0
    key = listed.split()[0]
    # chunks left by a killed extraction are listed, not a crash
    (data / "cache" / "features" / ("f" * len(key) + ".partial")).mkdir()
    code, with_partial, err = esc50ann(capsys, "cache", "list", "--data-dir", data)
    assert code == 0 and "partial" in with_partial, err
    assert_one_line_error(esc50ann(capsys, "cache", "clear", "--key", "nonexistent", "--data-dir", data), "nonexistent")
    code, cleared, _ = esc50ann(capsys, "cache", "clear", "--key", key, "--data-dir", data)
    assert code == 0 and key in cleared
    assert key not in esc50ann(capsys, "cache", "list", "--data-dir", data)[1]


def test_the_real_command_exits_1_with_one_line(tmp_path):
    """One real process: the module entry point, its exit status and stderr."""
    result = subprocess.run([sys.executable, "-m", "esc50ann", "info", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("esc50ann: error: ") and result.stderr.count("\n") == 1
    assert "download" in result.stderr
