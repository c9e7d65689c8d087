"""What a person opens to look at a run: metrics.json with what ran, per-class precision/recall/F1,
report.md with its settings and images, report.html rendered by a real browser (headless
Chromium), and the list of runs."""
import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

import synth
from esc50ann import cli
from esc50ann.pipeline import Pipeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def run(synth_archive, tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    (root / "tiny.toml").write_text(synth.TINY_PIPELINE)
    pipe = Pipeline.from_toml(root / "tiny.toml", data_dir=root / "data", source=synth_archive, progress=False,
                              n_jobs=1, overrides={"training.random_state": 3})
    return pipe.run(out=root / "data" / "runs" / "tiny-1"), synth_archive


def test_metrics_record_when_what_and_from_where(run):
    result, archive = run
    m = json.loads((result.run_dir / "metrics.json").read_text())
    assert m["source"] == str(archive) and m["seed"] == 3
    assert m["finished"][:4].isdigit() and "T" in m["finished"]
    assert m["pipeline"]["training"]["random_state"] == 3 and m["pipeline"]["features"]["n_mels"] == 32
    assert {"esc50ann", "numpy", "librosa", "scikit-learn", "python"} <= set(m["versions"])
    assert m["chance"] == pytest.approx(1 / 4)
    assert 0 <= m["macro_f1"] <= 1 and set(m["per_class_f1"]) == {"dog", "rooster", "chirping_birds", "vacuum_cleaner"}


def test_per_class_precision_recall_f1_are_scikit_learns(run):
    from sklearn.metrics import f1_score, precision_score

    result, _ = run
    table = pd.read_csv(result.run_dir / "per_class.csv")
    predictions = pd.read_csv(result.run_dir / "predictions.csv")
    labels = sorted(predictions["true_target"].unique())
    expected = precision_score(predictions["true_target"], predictions["predicted_target"], labels=labels,
                               average=None, zero_division=0)
    np.testing.assert_allclose(table.sort_values("target")["precision"], expected)
    np.testing.assert_allclose(table["recall"], table["accuracy"])
    macro = f1_score(predictions["true_target"], predictions["predicted_target"], average="macro", zero_division=0)
    assert result.metrics["macro_f1"] == pytest.approx(macro)


def test_report_md_states_settings_and_links_images(run):
    result, _ = run
    text = (result.run_dir / "report.md").read_text()
    assert "## Settings" in text and "seed 3" in text and "[16] tanh" in text
    assert "macro-F1" in text and "chance 25.0 %" in text
    for image in ("confusion.png", "confusion_normalized.png", "learning_curves.png"):
        assert f"]({image})" in text and (result.run_dir / image).is_file()


def test_report_html_is_self_contained(run):
    result, _ = run
    page = (result.run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page and "src=\"confusion" not in page


def test_report_html_lists_confusions_and_plays_each_misclassified_clip(run):
    result, _ = run
    page = (result.run_dir / "report.html").read_text()
    predictions = pd.read_csv(result.run_dir / "predictions.csv")
    wrong = predictions[predictions["true"] != predictions["predicted"]]
    assert len(wrong) > 0  # the tiny run makes mistakes to show
    sources = re.findall(r'<audio controls preload="none" src="([^"]+)">', page)
    assert len(sources) == len(wrong)
    assert all((result.run_dir / src).resolve().is_file() for src in sources)  # linked, relative, playable
    assert {(result.run_dir / src).resolve().name for src in sources} == set(wrong["clip"])
    t, p, n = result.metrics["most_confused"][0]
    assert f"<tr><td>{t}</td><td>{p}</td><td>{n}</td></tr>" in page


def test_the_count_matrix_writes_each_count_in_its_cell(run):
    from esc50ann.report import plot_confusion

    result, _ = run
    confusion = pd.read_csv(result.run_dir / "confusion.csv", index_col=0)
    fig = plot_confusion(confusion)
    counts = sorted(int(t.get_text()) for t in fig.axes[0].texts)
    assert counts == sorted(v for v in confusion.to_numpy().ravel() if v)
    assert len(plot_confusion(confusion, normalize=True).axes[0].texts) == 0


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (.ci/run installs the Debian package)")
def test_report_html_renders_in_a_real_browser(run, tmp_path):
    result, _ = run
    page = (result.run_dir / "report.html").resolve().as_uri()
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    assert 'id="per-class"' in dom and 'id="folds"' in dom and "rooster" in dom and "Accuracy" in dom
    assert 'id="confused"' in dom and 'id="misclassified"' in dom and "<audio" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,2600", page], capture_output=True,
                   timeout=120)
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[0] >= 2000 and pixels.std() > 0.05  # not blank
    blue = (pixels[..., 2] > 0.5) & (pixels[..., 0] < 0.35)  # the confusion matrix's dark blue cells
    assert blue.sum() > 2000, "no confusion matrix image drawn"


def test_runs_lists_finished_runs_newest_first(run, capsys, tmp_path):
    result, _ = run
    data = result.run_dir.parent.parent
    older = result.run_dir.parent / "old-run"
    older.mkdir(exist_ok=True)
    (older / "metrics.json").write_text(json.dumps({**result.metrics, "finished": "2001-01-01T00:00:00+00:00"}))
    (result.run_dir.parent / "unfinished").mkdir(exist_ok=True)
    assert cli.main(["runs", "--data-dir", str(data)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].endswith(str(result.run_dir)) and lines[1].startswith("2001-01-01")
    assert len(repr(result)) < 200 and str(result.run_dir) in repr(result)  # a one-line repr
    assert "tiny" in lines[0] and "folds 1,2,3" in lines[0]
