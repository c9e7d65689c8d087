"""Pipeline files: the shipped ones load; typos, wrong types and bad values name key and file."""
from pathlib import Path

import pytest

from esc50ann import config
from esc50ann.errors import ConfigError

PIPELINES = sorted((Path(__file__).parent.parent / "pipelines").glob("*.toml"))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_shipped_pipelines_load(path):
    cfg = config.load(path)
    assert cfg.name == path.stem
    assert cfg.estimator_params()["hidden_layer_sizes"]


def test_required_pipelines_ship():
    assert {"default.toml", "original.toml", "original-features.toml", "quick.toml"} <= {p.name for p in PIPELINES}


def test_original_is_the_reference_network():
    cfg = config.load(Path(__file__).parent.parent / "pipelines" / "original.toml")
    params = cfg.estimator_params()
    assert cfg.features.representation == "flat"
    assert params["hidden_layer_sizes"] == (1024,)
    assert (params["activation"], params["output"], params["loss"], params["solver"]) == (
        "tanh", "softmax", "squared_error", "sgd")
    assert params["input_bias"] is True


def write(tmp_path, text):
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, words", [
    ("[features]\nn_mel = 64\n", ["p.toml", "features.n_mel"]),
    ("[trainig]\n", ["p.toml", "trainig"]),
    ("[training]\nlearning_rate = 'fast'\n", ["p.toml", "training.learning_rate", "float"]),
    ("[training]\nbatch_size = 3.5\n", ["p.toml", "training.batch_size"]),
    ("[model]\ninput_bias = 1\n", ["p.toml", "model.input_bias", "bool"]),
    ("[features]\nn_mels = true\n", ["p.toml", "features.n_mels"]),
    ("[dataset]\nsubset = 'esc20'\n", ["p.toml", "subset", "esc20"]),
    ("[evaluation]\nvalidation = 'test'\n", ["p.toml", "validation"]),
    ("[model]\nactivation = 'swish'\n", ["p.toml", "activation"]),
    ("name = 3\n", ["p.toml", "name"]),
    ("[evaluation]\nn_jobs = 'all'\n", ["p.toml", "evaluation.n_jobs"]),
    ("[training]\nlr_schedule = 'exponential'\n", ["p.toml", "training.lr_schedule", "'cosine'"]),
    ("[training]\nlr_floor = 1.5\n", ["p.toml", "training.lr_floor", "[0, 1]"]),
    ("[training]\nwarmup_epochs = -1\n", ["p.toml", "training.warmup_epochs", ">= 0"]),
    ("[training]\nwarmup_epochs = 2.0\n", ["p.toml", "training.warmup_epochs", "integer"]),
    ("[training]\nlr_step_every = 0\n", ["p.toml", "training.lr_step_every", ">= 1"]),
    ("[training]\nlr_step_factor = 0\n", ["p.toml", "training.lr_step_factor", "(0, 1]"]),
    ("[model]\nlr_schedule = 'cosine'\n", ["p.toml", "model.lr_schedule", "unknown key"]),
    ("[training]\nclip_norm = -1.0\n", ["p.toml", "training.clip_norm", "> 0"]),
    ("[training]\nclip_norm = 'yes'\n", ["p.toml", "training.clip_norm"]),
    ("[training]\nepsilon = 0\n", ["p.toml", "training.epsilon", "(0, 1)"]),
    ("[training]\naverage_epochs = 1.5\n", ["p.toml", "training.average_epochs", "integer"]),
    ("[training]\naverage_epochs = -2\n", ["p.toml", "training.average_epochs", "[0, 100000]"]),
    ("[model]\nn_networks = 3\nensemble = 'snapshots'\n", ["p.toml", "ensemble: a snapshot ensemble", "patience"]),
    ("[training]\naverage_epochs = 5\n", ["p.toml", "average_epochs: weight averaging", "early stopping"]),
    ("[features\n", ["p.toml", "invalid TOML"]),
])
def test_bad_pipeline_names_key_and_file(tmp_path, text, words):
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml"):
        config.load(tmp_path / "nope.toml")


def test_defaults_and_overrides(tmp_path):
    cfg = config.load(write(tmp_path, "name = 'x'\n[features]\nn_mels = 40\nfmax = 8000\n"
                                      "[training]\npatience = 0\n[dataset]\nfolds = [1, 2]\n"))
    assert cfg.features.n_mels == 40 and cfg.features.fmax == 8000
    assert cfg.dataset.folds == (1, 2)
    assert cfg.estimator_params()["patience"] is None  # 0 disables early stopping
    assert cfg.to_dict()["features"]["n_mels"] == 40


def test_override_sets_dotted_keys_and_checks_them_like_a_file(tmp_path):
    base = config.load(write(tmp_path, "name = 'x'\n[training]\nlearning_rate = 0.1\n"))
    changed = config.override(base, {"training.learning_rate": 0.01, "features.n_mels": 40, "model.hidden_layer_sizes": [8, 4],
                                     "name": "y"})
    assert changed.training["learning_rate"] == 0.01 and changed.features.n_mels == 40
    assert changed.estimator_params()["hidden_layer_sizes"] == (8, 4) and changed.name == "y"
    assert changed.source_file == base.source_file and base.training["learning_rate"] == 0.1  # a copy
    assert config.override(base, {}) == base
    for values, words in [({"training.learning_rat": 1}, ["--set", "training.learning_rat"]),
                          ({"training.learning_rate": "fast"}, ["--set", "training.learning_rate", "float"]),
                          ({"trainig.batch_size": 3}, ["--set", "trainig.batch_size"]),
                          ({"batch_size": 3}, ["--set", "batch_size"])]:
        with pytest.raises(ConfigError) as info:
            config.override(base, values, where="--set")
        assert all(w in str(info.value) for w in words), str(info.value)
