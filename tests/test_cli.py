"""The esc50ann command, run as users run it (a subprocess), on the synthetic archive."""
import json
import subprocess
import sys

import pytest
import soundfile as sf

import synth



def esc50ann(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "esc50ann", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def workdir(synth_archive, tmp_path_factory):
    """A data root with the synthetic dataset downloaded, and a tiny pipeline file."""
    root = tmp_path_factory.mktemp("cli")
    (root / "tiny.toml").write_text(synth.TINY_PIPELINE)
    done = esc50ann("--quiet", "download", "--source", synth_archive, "--data-dir", root / "data")
    assert done.returncode == 0, done.stderr
    return root


def assert_one_line_error(result, *words):
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("esc50ann: error:"), result.stderr
    for word in words:
        assert word in lines[0]


def test_info_lists_clips_classes_and_folds(workdir):
    result = esc50ann("info", "--data-dir", workdir / "data")
    assert result.returncode == 0, result.stderr
    assert "24" in result.stdout and "1, 2, 3" in result.stdout


def test_cv_then_report_then_train_then_predict(workdir, tmp_path):
    data, out = workdir / "data", tmp_path / "run"
    result = esc50ann("--quiet", "cv", workdir / "tiny.toml", "--data-dir", data, "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert "Per-class accuracy" in result.stdout and "fold" in result.stdout
    assert f"{100 * metrics['accuracy_mean']:.1f} %" in result.stdout

    report = esc50ann("report", out)
    assert report.returncode == 0 and "Per-class accuracy" in report.stdout

    model = tmp_path / "model.npz"
    trained = esc50ann("--quiet", "train", workdir / "tiny.toml", "--test-fold", 2, "--save", model,
                       "--data-dir", data)
    assert trained.returncode == 0, trained.stderr
    assert model.exists()

    # odd WAVs: short, stereo, another rate, long -- all classified
    clips = {"short.wav": (synth.tone(14, 1, duration=1.2), 44100),
             "stereo.wav": (synth.tone(0, 2, channels=2), 44100),
             "rate.wav": (synth.tone(1, 3, sample_rate=22050), 22050),
             "long.wav": (synth.tone(36, 4, duration=7.5), 44100)}
    for name, (y, sr) in clips.items():
        sf.write(tmp_path / name, y, sr)
    predicted = esc50ann("predict", model, *(tmp_path / n for n in clips), "--top", 2)
    assert predicted.returncode == 0, predicted.stderr
    lines = predicted.stdout.strip().splitlines()
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
    assert_one_line_error(esc50ann("predict", model, junk), "junk.wav")
    assert_one_line_error(esc50ann("predict", model, empty), "empty.wav")


@pytest.mark.parametrize("args, words", [
    (["cv", "{dir}/typo.toml"], ["typo.toml", "n_mel"]),
    (["cv", "{dir}/tiny.toml", "--folds", "1,7"], ["7"]),
    (["cv", "{dir}/tiny.toml", "--folds", "2"], ["folds 2", "two"]),
    (["cv", "{dir}/tiny.toml", "--folds", "1,1"], ["folds 1", "two"]),
    (["cv", "{dir}"], ["pipeline file not found"]),
    (["report", "{dir}"], ["metrics.json"]),
    (["predict", "{dir}/missing.npz", "{dir}/tiny.toml"], ["missing.npz"]),
])
def test_bad_input_is_one_line_error(workdir, args, words):
    (workdir / "typo.toml").write_text("[features]\nn_mel = 64\n")
    args = [a.format(dir=workdir) for a in args]
    assert_one_line_error(esc50ann("--quiet", *args, "--data-dir", workdir / "data"), *words)


def test_info_without_dataset_says_what_to_do(tmp_path):
    assert_one_line_error(esc50ann("info", "--data-dir", tmp_path), "download")


def test_cache_list_and_clear(workdir):
    data = workdir / "data"
    assert esc50ann("--quiet", "features", workdir / "tiny.toml", "--data-dir", data).returncode == 0
    listed = esc50ann("cache", "list", "--data-dir", data)
    assert listed.returncode == 0
    key = listed.stdout.split()[0]
    # chunks left by a killed extraction are listed, not a crash
    (data / "cache" / "features" / ("f" * len(key) + ".partial")).mkdir()
    with_partial = esc50ann("cache", "list", "--data-dir", data)
    assert with_partial.returncode == 0 and "partial" in with_partial.stdout, with_partial.stderr
    assert_one_line_error(esc50ann("cache", "clear", "--key", "nonexistent", "--data-dir", data), "nonexistent")
    cleared = esc50ann("cache", "clear", "--key", key, "--data-dir", data)
    assert cleared.returncode == 0 and key in cleared.stdout
    assert key not in esc50ann("cache", "list", "--data-dir", data).stdout
