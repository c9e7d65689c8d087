"""What a user installs is a wheel: build it, install it into a fresh virtual environment and run a
built-in pipeline by name from a directory outside the checkout, on ESC-50 and on the other layouts."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

import synth

CHECKOUT = Path(__file__).resolve().parent.parent


# The installed package must be what runs: nothing may point back into the checkout.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


def run(*args, cwd):
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600,
                            env=CLEAN_ENV)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


def fresh_venv(venv: Path) -> Path:
    """A new virtual environment that sees the dependencies this interpreter sees, wherever they
    are installed: a plain venv, the system Python, a user site, CI. (``--system-site-packages``
    would give the *base* interpreter's packages, which inside a venv lack the dependencies.) The
    folders this interpreter imports packages from go into a ``.pth`` file, after the venv's own
    site-packages, so the wheel installed there comes first. Returns the venv's python."""
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv.parent)
    python = venv / "bin" / "python"
    own = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=venv.parent).stdout.strip()
    theirs = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    (Path(own) / "_deps_of_the_test_runner.pth").write_text("".join(p + "\n" for p in theirs))
    return python


def test_wheel_installs_and_runs_a_builtin_pipeline_from_anywhere(tmp_path, synth_archive):
    # Build from a copy of the sources, so the checkout gets no build/ folder.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, src / name)
    for folder in ("esc50ann", "pipelines", "sweeps"):  # (a worktree may link the data folders into esc50ann/)
        shutil.copytree(CHECKOUT / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "pipelines", "sweeps"))
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", src,
        "-w", tmp_path / "dist", cwd=tmp_path)
    wheel, = (tmp_path / "dist").glob("esc50ann-*.whl")

    # A fresh environment; dependencies come from this interpreter's site-packages (no network).
    venv = tmp_path / "venv"
    python, command = fresh_venv(venv), venv / "bin" / "esc50ann"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", wheel, cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data = tmp_path / "data"
    result = run(command, "run", "quick", "--source", synth_archive, "--data-dir", data, "--out", elsewhere / "run",
                 "--set", "training.max_epochs=2", "--jobs", 1, cwd=elsewhere)
    assert "\r" not in result.stderr and "cross-validation:" in result.stderr
    metrics = json.loads((elsewhere / "run" / "metrics.json").read_text())
    assert metrics["pipeline"]["name"] == "quick" and metrics["folds"] == [1, 2, 3]
    loaded = run(python, "-c", "import esc50ann; from esc50ann.pipeline import Pipeline; "
                 "print(esc50ann.__file__, Pipeline.from_toml('pipelines/default.toml').config.name)",
                 cwd=elsewhere).stdout.split()
    assert loaded[0].startswith(str(venv)) and loaded[1] == "default"  # the wheel's, not this checkout's
    sweeps = run(command, "sweeps", cwd=elsewhere).stdout
    assert "default-small" in sweeps  # the example sweeps ship in the wheel
    assert run(command, "report", "--data-dir", data, cwd=elsewhere).stdout.startswith("quick: accuracy")

    # The other layouts from the wheel (esc50ann.layouts is package code, nothing new is data):
    # `run default` on a class-per-folder tree of mixed rates and lengths (a small network, two
    # epochs), `features default --out` on an UrbanSound8K-shaped folder.
    tree = synth.make_class_tree(tmp_path / "sounds")
    run(command, "run", "default", "--source", tree, "--data-dir", tmp_path / "tree-data", "--out", elsewhere / "tree",
        "--set", "model.n_networks=1", "--set", "model.hidden_layer_sizes=[16]", "--set", "training.max_epochs=2",
        "--jobs", 1, "--quiet", cwd=elsewhere)
    metrics = json.loads((elsewhere / "tree" / "metrics.json").read_text())
    assert metrics["folds"] == [1, 2, 3, 4, 5] and set(metrics["per_class_accuracy"]) == {"bark", "chime", "hum"}
    urban = synth.make_urbansound(tmp_path / "UrbanSound8K")
    run(command, "features", "default", "--source", urban, "--data-dir", tmp_path / "us8k-data",
        "--out", elsewhere / "f.csv", "--jobs", 1, "--quiet", cwd=elsewhere)
    table = pd.read_csv(elsewhere / "f.csv")
    assert len(table) == 30 and sorted(set(table["fold"])) == list(range(1, 11))
