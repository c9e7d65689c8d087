"""Bounded work: every quantity a runaway value would blow up is refused up front, in one line that
says the bound, and the number of processes a request means is counted in one place."""
import sys

import numpy as np
import pytest

from conftest import run_cli
from esc50ann import config, parallel
from esc50ann.errors import ConfigError, Esc50Error, FeatureError, ModelError
from esc50ann.model import ANNClassifier
from esc50ann.sweepfile import MAX_CONFIGURATIONS, Sweep


def one_line_error(code, err):
    assert code == 1 and err.startswith("esc50ann: error: ") and err.count("\n") == 1, (code, err)
    return err


# --------------------------------------------------------------------------- epochs, layers, memory

def test_a_billion_epochs_are_refused_before_training(cli_root, capsys, monkeypatch):
    from esc50ann import evaluate

    monkeypatch.setattr(evaluate, "fit_fold", lambda *a, **k: pytest.fail("training started"))
    err = one_line_error(*run_cli(capsys, "--quiet", "train", cli_root / "tiny.toml", "--test-fold", 1, "--save",
                                  cli_root / "m.npz", "--data-dir", cli_root / "data",
                                  "--set", "training.max_epochs=1000000000")[::2])
    assert "training.max_epochs must be an integer in [1, 100000]" in err


def test_more_hidden_layers_than_any_network_has_are_refused():
    base = config.load(config.find("quick"))
    with pytest.raises(ConfigError, match=r"hidden_layer_sizes must be a list.*got \[1, 1, 1"):
        config.override(base, {"model.hidden_layer_sizes": [1] * 101})
    assert config.override(base, {"model.hidden_layer_sizes": [1] * 100}).model["hidden_layer_sizes"] == [1] * 100


def test_an_ensemble_larger_than_memory_is_refused_before_any_allocation(monkeypatch):
    from esc50ann import model as model_mod

    X, y = np.zeros((8, 100), np.float32), np.arange(8) % 2
    sizes_alone = (100 * 1000 + 1000 + 1000 * 2 + 2 + 100) * (4 + 8 + 3 * 4)  # one network with Adam, scored in float64
    monkeypatch.setattr(model_mod, "physical_memory", lambda: 2 * sizes_alone)
    monkeypatch.setattr(model_mod, "MLP", lambda *a, **k: pytest.fail("a network was allocated"))
    with pytest.raises(ModelError, match=r"network \[100, 1000, 2\] x 64 does not fit in memory.*fewer n_networks"):
        ANNClassifier(hidden_layer_sizes=(1000,), solver="adam", n_networks=64).fit(X, y)
    monkeypatch.undo()
    monkeypatch.setattr(model_mod, "physical_memory", lambda: 2 * sizes_alone)
    ANNClassifier(hidden_layer_sizes=(1000,), solver="adam", n_networks=1, max_epochs=1).fit(X, y)  # one fits


def test_a_feature_matrix_larger_than_memory_is_refused_before_any_clip_is_read(cli_root, monkeypatch, tmp_path):
    from esc50ann import dataset as ds, features, recipe

    monkeypatch.setattr(features, "physical_memory", lambda: 2**30)
    monkeypatch.setattr(features, "files_features", lambda *a, **k: pytest.fail("a clip was read"))
    config_ = recipe.FeatureConfig(representation="flat", hop_length=1, duration=60.0, n_mels=128)
    with pytest.raises(FeatureError, match=r"24 clips x 338,688,128 values are 30.3 GiB, more than this machine's "
                                           r"1.0 GiB.*representation = \"stats\""):
        features.extract(ds.load(cli_root / "data"), config_, tmp_path, n_jobs=1, progress=False)


# --------------------------------------------------------------------------- sweeps

def _sweep(values, **settings):
    return Sweep.from_dict({"pipeline": "quick", **settings, "values": values}, where="s.toml")


def test_a_grid_of_a_million_is_refused_before_one_configuration_is_built(monkeypatch):
    from esc50ann import sweepfile

    monkeypatch.setattr(sweepfile.config_mod, "override", lambda *a, **k: pytest.fail("a configuration was built"))
    values = {"training.learning_rate": [0.1 * (i + 1) for i in range(100)], "training.weight_decay": [0.0] * 100,
              "training.momentum": [0.5] * 100}
    with pytest.raises(ConfigError, match=r"s.toml: the grid has 1,000,000 configurations \(100 x 100 x 100\), "
                                          r"more than the 10,000 .*mode = \"random\""):
        _sweep(values)


def test_sweep_sizes_at_and_past_the_bound(monkeypatch):
    from esc50ann import sweepfile

    with pytest.raises(ConfigError, match=r"n_samples must be an integer in \[1, 10000\] or None \(got 10001\)"):
        _sweep({"training.learning_rate": {"loguniform": [1e-4, 1e-1]}}, mode="random", n_samples=MAX_CONFIGURATIONS + 1)
    with pytest.raises(ConfigError, match=r"values.training.random_state: 10,001 values, more than the 10,000"):
        _sweep({"training.random_state": list(range(MAX_CONFIGURATIONS + 1))}, mode="random", n_samples=2)
    monkeypatch.setattr(sweepfile, "MAX_CONFIGURATIONS", 100)  # the bound itself is allowed, one more is not
    assert len(_sweep({"training.random_state": list(range(10)), "training.batch_size": list(range(1, 11))})
               .configurations) == 100
    with pytest.raises(ConfigError, match=r"the grid has 110 configurations \(10 x 11\)"):
        _sweep({"training.random_state": list(range(10)), "training.batch_size": list(range(1, 12))})


# --------------------------------------------------------------------------- processes

def test_jobs_are_counted_in_one_place(monkeypatch):
    monkeypatch.setattr(parallel, "cpu_count", lambda: 4)
    n = parallel.n_processes
    assert [n(j) for j in (None, 0, 1, 3, 4, 10000, -1, -2, -4, -10000)] == [1, 1, 1, 3, 4, 4, 4, 3, 1, 1]
    assert n(10000, n_tasks=3) == 3 and n(-1, n_tasks=0) == 1
    assert parallel.Runner(10000).n_workers == 4 and parallel.Runner(0).n_workers == 1


def test_ten_thousand_jobs_start_no_more_processes_than_cores_or_tasks(monkeypatch):
    import joblib

    asked = []

    class Recording:
        def __init__(self, n_jobs, **kwargs):
            asked.append(n_jobs)

        def __call__(self, jobs):
            return [job[0](*job[1], **job[2]) for job in jobs]

    monkeypatch.setattr(joblib, "Parallel", Recording)
    monkeypatch.setattr(parallel, "cpu_count", lambda: 8)
    list(parallel.Runner(10000).map(abs, [(-1,), (-2,), (-3,)]))
    list(parallel.Runner(10000).map(abs, [(-i,) for i in range(20)]))
    assert asked == [3, 8]


@pytest.mark.parametrize("jobs", [0, 10000])
def test_run_and_sweep_take_any_jobs(cli_root, capsys, tmp_path, jobs, monkeypatch):
    """0 is no worker process for every command (as `features --jobs 0` always was), -1 every core,
    10000 as many as there are cores: none is an error, none starts 10000 processes."""
    monkeypatch.setattr(parallel, "cpu_count", lambda: 1)  # so no pool is started: fast and in process
    code, out, err = run_cli(capsys, "--quiet", "run", cli_root / "tiny.toml", "--data-dir", cli_root / "data",
                             "--jobs", jobs, "--out", tmp_path / "run", "--set", "training.max_epochs=2")
    assert code == 0, err
    (tmp_path / "s.toml").write_text(f'pipeline = "{cli_root / "tiny.toml"}"\n[values]\n"training.max_epochs" = [1]\n')
    code, out, err = run_cli(capsys, "--quiet", "sweep", tmp_path / "s.toml", "--data-dir", cli_root / "data",
                             "--jobs", jobs, "--out", tmp_path / "sweep")
    assert code == 0, err


@pytest.mark.parametrize("args, words", [
    (["train", "tiny.toml", "--all", "--save", "m.npz", "--seed", "-1"], "argument --seed: expected an integer >= 0, not '-1'"),
    (["train", "tiny.toml", "--all", "--save", "m.npz", "--seed", "1.5"], "argument --seed: expected an integer >= 0"),
    (["train", "tiny.toml", "--test-fold", "0", "--save", "m.npz"], "argument --test-fold: expected an integer >= 1, not '0'"),
    (["features", "tiny.toml", "--jobs", "all"], "argument --jobs: expected an integer, not 'all'"),
    (["predict", "m.npz", "x.wav", "--top", "0"], "argument --top: expected an integer >= 1, not '0'"),
    (["download", "--sha256", "xyz"], "argument --sha256: expected 64 hexadecimal digits, not 'xyz'"),
])
def test_options_are_checked_by_the_one_vocabulary(capsys, args, words):
    assert words in one_line_error(*run_cli(capsys, *args)[::2])


def test_local_cluster_of_ten_thousand_workers_starts_one_per_core(monkeypatch):
    distributed = pytest.importorskip("distributed")
    started = []

    class FakeCluster:
        def __init__(self, n_workers, **kwargs):
            started.append(n_workers)

        def __enter__(self):
            raise RuntimeError("stop here")

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(parallel, "cpu_count", lambda: 2)
    monkeypatch.setattr(distributed, "LocalCluster", FakeCluster)
    assert parallel.check_cluster("local:10000") == 2
    with pytest.raises(RuntimeError, match="stop here"):
        with parallel.cluster("local:10000"):
            pass
    assert started == [2]
    for bad in ("local:0", "local:-3", "local:x"):
        with pytest.raises(Esc50Error, match="expected local:N with N >= 1"):
            parallel.check_cluster(bad)


def test_a_cluster_without_dask_is_refused_before_any_work(cli_root, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed: importing it fails
    (tmp_path / "s.toml").write_text(f'pipeline = "{cli_root / "tiny.toml"}"\n[values]\n"training.max_epochs" = [1]\n')
    code, out, err = run_cli(capsys, "sweep", tmp_path / "s.toml", "--data-dir", cli_root / "data",
                             "--cluster", "local:2", "--out", tmp_path / "out")
    assert "pip install 'esc50ann[cluster]'" in one_line_error(code, err)  # the only line: no tasks announced
    assert not (tmp_path / "out").exists()
