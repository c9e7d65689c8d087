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


@FUZZ
@given(section=st.sampled_from(["architecture", "params", "metadata", None]),
       key=st.sampled_from(["sizes", "activation", "input_bias", "dtype", "hidden_layer_sizes", "features",
                            "class_names", "classes", "format_version", "history", "learning_rate"]),
       value=json_values)
def test_model_header(place, model_file, section, key, value):
    def change(header):
        target = header if section is None else header.setdefault(section, {})
        if isinstance(target, dict):
            target[key] = value

    path = place / "crafted.npz"
    _rewrite_header(model_file, path, change)
    model = succeeds_or_says_so(lambda: ANNClassifier.load(path))
    if model is not None:
        from esc50ann.predict import Predictor

        succeeds_or_says_so(lambda: Predictor(path))


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
