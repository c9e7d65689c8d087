"""Property-based tests: mutate every input the product reads and require that the public entry
points either succeed or raise the project's own error with a one-line message -- never anything
else (a traceback for the user)."""
import io
import json
import shutil
import warnings

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import synth
from esc50ann import audio, cache, config, dataset as ds, metadata
from esc50ann.errors import Esc50Error
from esc50ann.recipe import FeatureConfig
from esc50ann.model import ANNClassifier

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)


def succeeds_or_says_so(call):
    """Run ``call``; a failure must be an Esc50Error of one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call()
    except Esc50Error as exc:
        assert str(exc) and "\n" not in str(exc), repr(str(exc))
        return None


# a mutation of bytes: overwrite, insert or delete a short run at some position
mutations = st.lists(st.tuples(st.sampled_from(["set", "insert", "delete"]), st.floats(0, 1),
                               st.binary(min_size=1, max_size=8)), min_size=1, max_size=4)


def mutate(data: bytes, edits) -> bytes:
    data = bytearray(data)
    for kind, where, chunk in edits:
        at = int(where * len(data))
        if kind == "set":
            data[at:at + len(chunk)] = chunk
        elif kind == "insert":
            data[at:at] = chunk
        else:
            del data[at:at + len(chunk)]
    return bytes(data)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=8)


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# --------------------------------------------------------------------------- metadata CSV

@FUZZ
@given(edits=mutations)
def test_metadata_csv(place, edits):
    good = synth.metadata().to_csv(index=False).encode()
    path = place / "esc50.csv"
    path.write_bytes(mutate(good, edits))
    succeeds_or_says_so(lambda: metadata.load_metadata(path))


# --------------------------------------------------------------------------- pipeline TOML

keys = st.sampled_from(["name", "description", "dataset.subset", "dataset.folds", "features.n_mels",
                        "features.representation", "features.duration", "model.hidden_layer_sizes",
                        "model.loss", "training.learning_rate", "training.batch_size", "training.patience",
                        "evaluation.validation", "evaluation.n_jobs", "unknown.key", "features.nope"])
toml_values = st.one_of(st.integers(-5, 10**12), st.floats(allow_nan=True), st.text(max_size=6), st.booleans(),
                        st.lists(st.integers(-3, 5000), max_size=3))


@FUZZ
@given(values=st.dictionaries(keys, toml_values, max_size=4))
def test_pipeline_values(values):
    base = config.load(config.find("quick"))
    succeeds_or_says_so(lambda: config.override(base, values, where="fuzz"))


@FUZZ
@given(edits=mutations)
def test_pipeline_file_bytes(place, edits):
    path = place / "p.toml"
    path.write_bytes(mutate(config.find("quick").read_bytes(), edits))
    succeeds_or_says_so(lambda: config.load(path))


# --------------------------------------------------------------------------- model files

@pytest.fixture(scope="module")
def model_file(place):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 5)).astype(np.float32), np.arange(30) % 3
    model = ANNClassifier(hidden_layer_sizes=(4,), max_epochs=2).fit(X, y)
    model.class_names_ = ["a", "b", "c"]
    model.metadata_ = {"features": FeatureConfig().to_dict()}
    return model.save(place / "good.npz")


def _rewrite_header(path, out, change):
    import zipfile

    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    raw = np.load(io.BytesIO(members["header.npy"]))
    header = json.loads(raw.tobytes().decode())
    change(header)
    buffer = io.BytesIO()
    np.save(buffer, np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    members["header.npy"] = buffer.getvalue()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def load_and_predict(path):
    """Loading a crafted model file, and preparing to predict with it, works or says why in one line."""
    if succeeds_or_says_so(lambda: ANNClassifier.load(path)) is not None:
        from esc50ann.predict import Predictor

        succeeds_or_says_so(lambda: Predictor(path))


@FUZZ
@given(section=st.sampled_from(["architecture", "params", "metadata", None]),
       key=st.sampled_from(["sizes", "activation", "input_bias", "dtype", "hidden_layer_sizes", "features",
                            "class_names", "classes", "format_version", "history", "learning_rate",
                            "ensemble", "clip_norm", "epsilon", "average_epochs"]),
       value=json_values)
def test_model_header(place, model_file, section, key, value):
    def change(header):
        target = header if section is None else header.setdefault(section, {})
        if isinstance(target, dict):
            target[key] = value

    path = place / "crafted.npz"
    _rewrite_header(model_file, path, change)
    load_and_predict(path)


@FUZZ
@given(edits=mutations)
def test_model_file_bytes(place, model_file, edits):
    path = place / "bytes.npz"
    path.write_bytes(mutate(model_file.read_bytes(), edits))
    succeeds_or_says_so(lambda: ANNClassifier.load(path))


# --------------------------------------------------------------------------- WAV files

@FUZZ
@given(edits=mutations, in_header=st.booleans())
def test_wav_files(place, edits, in_header):
    good = synth.wav_bytes(synth.tone(0, 1, duration=0.5))
    cut = 44 if in_header else len(good)
    scaled = [(k, w * cut / len(good), c) for k, w, c in edits]
    path = place / "clip.wav"
    path.write_bytes(mutate(good, scaled))
    config = FeatureConfig(n_mels=16, duration=0.5)
    from esc50ann.recipe import clip_features

    x = succeeds_or_says_so(lambda: clip_features(path, config))
    assert x is None or x.shape == (6 * 16,)


@FUZZ
@given(samples=st.lists(st.floats(width=32), min_size=0, max_size=64))
def test_wav_samples(place, samples):
    path = place / "samples.wav"
    sf.write(path, np.asarray(samples or [0.0], np.float32), 8000, subtype="FLOAT")
    succeeds_or_says_so(lambda: audio.load_clip(path, duration=0.01))


# --------------------------------------------------------------------------- dataset.json and cache manifests

@pytest.fixture(scope="module")
def data_root(place, synth_folder):
    root = place / "data"
    ds.prepare(synth_folder, root, progress=False)
    return root


@FUZZ
@given(key=st.sampled_from(["source", "root", "verified_at", "n_clips", "files", "stats", "archive_sha256", "x"]),
       value=json_values)
def test_dataset_record(data_root, key, value):
    record_path = data_root / "dataset.json"
    good = record_path.read_text()
    try:
        record_path.write_text(json.dumps({**json.loads(good), key: value}))
        succeeds_or_says_so(lambda: ds.load(data_root))
    finally:
        record_path.write_text(good)


@pytest.fixture(scope="module")
def cache_entry(place):
    folder = place / "cache"
    cache.commit(folder, "c" * 16, [np.ones((4, 3), np.float32)], n_cols=3, filenames=list("abcd"), skipped=[],
                 info={"config": {}})
    return folder


@FUZZ
@given(key=st.sampled_from(["format", "key", "count", "shape", "dtype", "file_size", "checksum", "filenames",
                            "skipped"]), value=json_values)
def test_cache_manifest(place, cache_entry, key, value):
    work = place / "cache-copy"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(cache_entry, work)
    manifest = work / ("c" * 16) / cache.MANIFEST_FILE
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), key: value}))
    entry = succeeds_or_says_so(lambda: cache.load(work, "c" * 16, discard_damaged=False))
    assert entry is None or entry.array.shape == (4, 3)


# --------------------------------------------------------------------------- whole JSON documents of the wrong shape
# Every JSON file the product reads back, replaced by (or merged with) random JSON values of any
# type: its reader says so in one line (or treats it as absent), never an internal error.

@FUZZ
@given(field=st.sampled_from(["architecture", "params", "class_names", "metadata", "history", "feature_names_in",
                              "best_epoch", "classes_dtype", None]), value=json_values)
def test_model_header_fields_of_any_type(place, model_file, field, value):
    def change(header):
        if field is None:
            header.clear()
            header.update(value if isinstance(value, dict) else {"format": value})
        else:
            header[field] = value

    path = place / "crafted-field.npz"
    _rewrite_header(model_file, path, change)
    load_and_predict(path)


def test_model_header_class_names_as_a_plain_list(place, model_file):
    path = place / "names.npz"
    _rewrite_header(model_file, path, lambda header: header.update(class_names=["a", "b", "c"]))
    with pytest.raises(Esc50Error, match="class_names"):
        ANNClassifier.load(path)


@FUZZ
@given(doc=json_values)
def test_cache_manifest_of_any_type(place, cache_entry, doc):
    work = place / "cache-doc"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(cache_entry, work)
    (work / ("c" * 16) / cache.MANIFEST_FILE).write_text(json.dumps(doc))
    assert succeeds_or_says_so(lambda: cache.load(work, "c" * 16, discard_damaged=False)) is None
    rows = cache.list_entries(work)
    assert [r["status"] for r in rows] == ["damaged"]


def test_cache_list_of_a_manifest_holding_a_list(place, cache_entry, tmp_path, capsys):
    from esc50ann import cli

    data = tmp_path / "data"
    shutil.copytree(cache_entry, data / "cache" / "features")
    (data / "cache" / "features" / ("c" * 16) / cache.MANIFEST_FILE).write_text("[1, 2]")
    assert cli.main(["cache", "list", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "c" * 16 in out and "damaged" in out and "expected an object" in out


@FUZZ
@given(doc=json_values)
def test_dataset_record_of_any_type(data_root, doc):
    record_path = data_root / "dataset.json"
    good = record_path.read_text()
    try:
        record_path.write_text(json.dumps(doc))
        succeeds_or_says_so(lambda: ds.load(data_root))
    finally:
        record_path.write_text(good)


@FUZZ
@given(info=json_values | st.dictionaries(st.sampled_from(["names", "failures"]), json_values))
def test_feature_chunk_info_of_any_type(info):
    from esc50ann import features

    assert features._chunk_fits(np.zeros((2, 3), np.float32), info, ["a", "b"]) in (True, False)


@pytest.fixture(scope="module")
def swept(place, synth_archive):
    """A finished tiny sweep (one configuration) and what its folder holds."""
    from esc50ann import sweep as sweep_mod

    (place / "tiny.toml").write_text(synth.TINY_PIPELINE.replace("max_epochs = 30", "max_epochs = 2"))
    (place / "s.toml").write_text('pipeline = "tiny.toml"\n[values]\n"training.learning_rate" = [0.01]\n')
    ds.prepare(synth_archive, place / "sweep-data", progress=False)
    out = place / "sweep-out"
    sweep_mod.run(place / "s.toml", data_dir=place / "sweep-data", out=out, n_jobs=1, progress=False)
    return sweep_mod.Sweep.from_toml(place / "s.toml"), out, ds.load(place / "sweep-data")


@FUZZ
@given(task=st.sampled_from([(0, 1, None), (0, 1, 2)]), change=st.dictionaries(
    st.sampled_from(["config", "outer", "inner", "accuracy", "seconds", "epochs", "test_index", "y_true", "y_pred"]),
    json_values, min_size=1, max_size=3), whole=st.none() | json_values)
def test_sweep_task_files_of_any_shape(swept, task, change, whole):
    from esc50ann import sweep as sweep_mod

    sweep, out, dataset = swept
    task = sweep_mod.Task(*task)
    path = sweep_mod._task_path(out, sweep, task)
    good = path.read_text()
    try:
        path.write_text(json.dumps({**json.loads(good), **change} if whole is None else whole))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = sweep_mod._read_task(out, sweep, task, dataset)
        if result is not None:  # accepted: the summary can use it
            results = [r if t != task else result for t in sweep_mod.tasks_for(1, dataset.folds)
                       for r in [json.loads(sweep_mod._task_path(out, sweep, t).read_text())]]
            sweep_mod._summarise(sweep, dataset, results)
    finally:
        path.write_text(good)


@FUZZ
@given(change=st.dictionaries(st.sampled_from(["pipeline", "folds", "accuracy_mean", "accuracy_std", "fold_accuracy",
                                               "finished", "overrides", "per_class_accuracy", "most_confused",
                                               "config_hash", "sweep", "nested_accuracy_mean", "nested_accuracy_std",
                                               "optimistic_accuracy_mean", "nested_fold_accuracy",
                                               "chosen_configuration", "nested_per_class_accuracy"]),
                              json_values, min_size=1, max_size=4),
       whole=st.none() | json_values)
def test_metrics_files_of_any_shape(place, change, whole):
    from esc50ann import cli, report

    runs = place / "runs-data" / "runs"
    run = runs / "r"
    run.mkdir(parents=True, exist_ok=True)
    good = {"pipeline": {"name": "p"}, "folds": [1, 2], "accuracy_mean": 0.5, "accuracy_std": 0.1,
            "fold_accuracy": {"1": 0.4, "2": 0.6}, "finished": "2025-01-01T00:00:00"}
    (run / "metrics.json").write_text(json.dumps({**good, **change} if whole is None else whole))
    (run / "report.md").write_text("# a report\n")
    listed = report.list_runs(runs.parent)  # never raises: an unreadable run is left out
    assert len(listed) in (0, 1)
    succeeds_or_says_so(lambda: report.load_run(run))
    assert cli.main(["--quiet", "runs", "--data-dir", str(place / "runs-data")]) == 0
    assert cli.main(["--quiet", "report", "--data-dir", str(place / "runs-data")]) in (0, 1)  # never a traceback


# --------------------------------------------------------------------------- sweep files

sweep_keys = st.sampled_from(["pipeline", "mode", "n_samples", "seed", "cluster", "name", "values", "extra"])


@FUZZ
@given(doc=st.dictionaries(sweep_keys, json_values | st.dictionaries(keys, toml_values | json_values, max_size=3),
                           max_size=5))
def test_sweep_documents(doc):
    from esc50ann.sweepfile import Sweep

    succeeds_or_says_so(lambda: Sweep.from_dict({"pipeline": "quick", **doc}, where="fuzz.toml"))
