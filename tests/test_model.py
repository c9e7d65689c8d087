"""The ANNClassifier estimator: sklearn conventions, learning, model files."""
import json
import zipfile

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from esc50ann.errors import ConfigError, ModelError
from esc50ann import modelfile
from esc50ann.model import ANNClassifier


# The defaults, as a user meets them, and two small variants (the estimator checks fit dozens
# of tiny data sets).
@parametrize_with_checks([
    ANNClassifier(),
    ANNClassifier(hidden_layer_sizes=(16,), loss="cross_entropy", solver="adam",
                  learning_rate=0.01, max_epochs=30, patience=None),
    ANNClassifier(hidden_layer_sizes=(8, 4), output="sigmoid", solver="momentum", max_epochs=20,
                  dtype="float64", standardize=False, input_bias=False),
    ANNClassifier(hidden_layer_sizes=(8,), n_networks=2, solver="adam", learning_rate=0.01, max_epochs=20,
                  lr_schedule="cosine", warmup_epochs=2, patience=None),
])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def blobs(n_classes=10, per_class=20, dim=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (n_classes, dim))
    y = np.repeat(np.arange(n_classes), per_class)
    return centres[y] + rng.normal(0, 0.5, (len(y), dim)), y


def test_learns_xor():
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 5, float)
    y = np.array(["no", "yes", "yes", "no"] * 5)
    clf = ANNClassifier(hidden_layer_sizes=(8,), solver="adam", learning_rate=0.05, batch_size=4,
                        max_epochs=200).fit(X, y)
    assert clf.score(X, y) == 1.0
    assert list(clf.classes_) == ["no", "yes"]


def test_learns_separable_ten_classes_with_the_writeups_setup():
    X, y = blobs()
    labels = np.array([f"class{k}" for k in range(10)])[y]  # any labels, mapped via classes_
    clf = ANNClassifier(hidden_layer_sizes=(64,), solver="sgd", learning_rate=0.1, max_epochs=50)
    clf.fit(X, labels)
    assert clf.score(X, labels) == 1.0
    assert clf.history_[-1]["accuracy"] == 1.0 and clf.best_epoch_ == clf.n_iter_ == 50
    proba = clf.predict_proba(X)
    assert proba.shape == (200, 10) and np.allclose(proba.sum(axis=1), 1.0)


def test_diverging_learning_rate_raises_model_error():
    X, y = blobs(3)
    clf = ANNClassifier(hidden_layer_sizes=(16,), activation="relu", loss="cross_entropy",
                        learning_rate=1e6, max_epochs=5)
    with pytest.raises(ModelError, match=r"^training diverged at epoch \d+ \(loss=nan\): lower the learning rate \(now 1e\+06\)$"):
        clf.fit(X, y)


@pytest.mark.parametrize("name,value", [
    ("hidden_layer_sizes", (0,)), ("hidden_layer_sizes", "1024"), ("activation", "softsign"),
    ("output", "linear"), ("loss", "hinge"), ("solver", "lbfgs"), ("learning_rate", 0),
    ("momentum", 1.0), ("batch_size", 0), ("max_epochs", 2.5), ("weight_decay", -1),
    ("patience", 0), ("dtype", "float16"), ("input_bias", "yes"), ("random_state", -1),
    ("lr_schedule", "exponential"), ("lr_schedule", None), ("lr_floor", -0.1), ("lr_floor", 2.0),
    ("warmup_epochs", -1), ("warmup_epochs", 1.5), ("lr_step_every", 0), ("lr_step_factor", 0.0),
    ("lr_step_factor", 1.5), ("epsilon", 0), ("epsilon", 1.5), ("clip_norm", 0), ("clip_norm", -1.0),
    ("clip_norm", "1"), ("average_epochs", -1), ("average_epochs", 2.5), ("ensemble", "bagging"),
])
def test_bad_params_raise_config_error_naming_them(name, value):
    X, y = blobs(2, 5)
    with pytest.raises(ConfigError, match=f"^{name} must be"):
        ANNClassifier(**{name: value}).fit(X, y)
    assert issubclass(ConfigError, ValueError)


def spiky(lr_schedule):
    """Adam at a learning rate high for the task, with weight decay and many updates per epoch
    (50; the full ESC-50 folds have twice the development copy's): at a constant rate the loss
    falls to 0.013 by epoch 25, then jumps to 1.2 at the last epoch (ESC-50's 0.013 -> 0.62)."""
    rng = np.random.default_rng(0)
    y = np.arange(200) % 5
    X = rng.normal(size=(200, 40))
    X[np.arange(200), y] += 1.0
    return ANNClassifier(hidden_layer_sizes=(32, 16), solver="adam", loss="cross_entropy", learning_rate=0.01,
                         weight_decay=1e-3, batch_size=4, max_epochs=30, patience=None, random_state=4,
                         lr_schedule=lr_schedule).fit(X, y)


def test_a_loss_spike_is_flagged_and_the_cosine_schedule_prevents_it():
    from esc50ann.evaluate import FoldResult

    def fold(model):
        return FoldResult(test_fold=2, val_fold=None, test_index=np.arange(0), y_true=np.arange(0), y_pred=np.arange(0),
                          proba=np.zeros((0, 5)), histories=model.histories_, best_epochs=model.best_epochs_, model=model)

    spiked, steady = fold(spiky("constant")), fold(spiky("cosine"))
    (spike,), (calm,) = spiked.stability, steady.stability
    assert spike["unstable"] and spike["ratio"] > 10 and spike["min_loss"] < 0.02
    assert spiked.warnings == [f"fold 2: unstable training: the training loss at the kept epoch 30 is "
                               f"{spike['final_loss']:.4f}, {spike['ratio']:.1f}x its minimum {spike['min_loss']:.4f} "
                               f"(epoch {spike['min_epoch']}); decay the learning rate (training.lr_schedule = "
                               f"\"cosine\") or lower it"]
    assert not calm["unstable"] and calm["ratio"] <= 1.5 and steady.warnings == []  # the target


def test_weight_averaging_refuses_early_stopping_in_one_line():
    X, y = blobs(2, 10)
    with pytest.raises(ConfigError, match=r"^average_epochs: weight averaging keeps the last epochs, early stopping"):
        ANNClassifier(hidden_layer_sizes=(4,), average_epochs=3, patience=2, max_epochs=5).fit(X, y, X_val=X, y_val=y)


def test_a_snapshot_ensemble_keeps_the_end_of_every_cycle_of_one_network():
    X, y = blobs(3, 20)
    kw = dict(hidden_layer_sizes=(8,), solver="adam", learning_rate=1e-2, lr_schedule="cosine", patience=None)
    snaps = ANNClassifier(n_networks=2, ensemble="snapshots", max_epochs=6, **kw).fit(X, y)
    first_cycle = ANNClassifier(max_epochs=3, **kw).fit(X, y)  # the same start, rows and rates for 3 epochs
    assert snaps.best_epochs_ == [3, 6] and [len(h) for h in snaps.histories_] == [3, 6] and snaps.n_iter_ == 6
    for p, q in zip(snaps.networks_[0].params, first_cycle.network_.params):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-7)
    assert not np.allclose(snaps.networks_[1].weights[0], snaps.networks_[0].weights[0])
    lrs = [row["lr"] for row in snaps.histories_[1]]  # cycle 1 ends near zero, cycle 2 starts again from the top
    assert lrs[2] < 0.1 * kw["learning_rate"] < 0.5 * kw["learning_rate"] < lrs[3]
    np.testing.assert_allclose(snaps.predict_proba(X), (snaps.networks_[0].forward(snaps._transform(X, np.float32))
                               + snaps.networks_[1].forward(snaps._transform(X, np.float32))) / 2, rtol=1e-5)


@pytest.mark.parametrize("kw,words", [
    ({"average_epochs": 2}, "average_epochs: weight averaging keeps the last epochs, a snapshot ensemble"),
    ({"patience": 2}, "ensemble: a snapshot ensemble keeps the end of every cycle, early stopping"),
    ({"max_epochs": 3, "warmup_epochs": 2}, r"ensemble: a snapshot ensemble of 2 needs at least one epoch a cycle "
                                            r"after the warm-up \(max_epochs 3, warmup_epochs 2\)"),
])
def test_a_snapshot_ensemble_refuses_what_it_cannot_keep(kw, words):
    X, y = blobs(2, 10)
    with pytest.raises(ConfigError, match=f"^{words}"):
        ANNClassifier(hidden_layer_sizes=(4,), n_networks=2, ensemble="snapshots",
                      **{"patience": None, "max_epochs": 4, **kw}).fit(X, y, X_val=X, y_val=y)


def test_epsilon_reaches_adam():
    X, y = blobs(3, 10)
    kw = dict(hidden_layer_sizes=(8,), solver="adam", learning_rate=1e-2, max_epochs=3, patience=None)
    tiny, huge = ANNClassifier(**kw).fit(X, y), ANNClassifier(epsilon=0.5, **kw).fit(X, y)
    start = ANNClassifier(**{**kw, "learning_rate": 1e-30}).fit(X, y).network_.weights[0]  # where both began
    moved = lambda m: np.abs(m.network_.weights[0] - start).max()  # noqa: E731
    assert moved(huge) < moved(tiny) / 5  # eps 0.5 shrinks Adam's steps m / (sqrt(v) + eps)


def test_list_of_sizes_from_toml_is_accepted():
    ANNClassifier(hidden_layer_sizes=[8, 4])._check_params()


def test_validation_set_and_callback():
    X, y = blobs(4, 10)
    rows = []
    clf = ANNClassifier(hidden_layer_sizes=(8,), max_epochs=4, patience=None)
    clf.fit(X, y, X_val=X[:8], y_val=y[:8], callback=rows.append)
    assert rows == clf.history_ and len(rows) == 4
    assert set(rows[0]) == {"epoch", "loss", "penalty", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    # patience=None: the validation set is scored every epoch but never stops training.
    assert all(r["val_loss"] is not None for r in rows) and clf.best_epoch_ == clf.n_iter_ == 4
    with pytest.raises(ConfigError, match="y_val has labels not seen"):
        clf.fit(X, y, X_val=X[:2], y_val=[0, 99])


def test_early_stopping_restores_best_weights():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(60, 8)), rng.integers(0, 3, 60)   # pure noise: it must overfit
    Xv, yv = rng.normal(size=(40, 8)), rng.integers(0, 3, 40)
    clf = ANNClassifier(hidden_layer_sizes=(64,), loss="cross_entropy", solver="adam",
                        learning_rate=0.01, batch_size=10, max_epochs=200, patience=3,
                        dtype="float64").fit(X, y, X_val=Xv, y_val=yv)
    assert clf.n_iter_ == clf.best_epoch_ + 3 < 200
    p = clf.predict_proba(Xv)
    val_loss = -np.mean(np.log(p[np.arange(40), np.searchsorted(clf.classes_, yv)]))
    assert val_loss == pytest.approx(clf.history_[clf.best_epoch_ - 1]["val_loss"], rel=1e-9)


def test_same_seed_identical_results():
    X, y = blobs(3, 10)
    make = lambda seed: ANNClassifier(hidden_layer_sizes=(8,), max_epochs=3, random_state=seed).fit(X, y)
    a, b, c = make(5), make(5), make(6)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert [h["loss"] for h in a.history_] == [h["loss"] for h in b.history_]
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))


@pytest.fixture(scope="module")
def fitted():
    X, y = blobs(4, 10, dim=6)
    clf = ANNClassifier(hidden_layer_sizes=(8, 5), max_epochs=3).fit(X, np.array(list("abcd"))[y])
    clf.class_names_ = {"a": "ant", "b": "bee", "c": "cat", "d": "dog"}  # a dict is accepted, loaded as a list
    clf.metadata_ = {"features": {"n_mels": 64}, "test_fold": 1}
    return clf, X


def test_save_load_roundtrip(fitted, tmp_path):
    clf, X = fitted
    path = clf.save(tmp_path / "model.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temp file left behind
    for loaded in (ANNClassifier.load(path), ANNClassifier.load(str(path))):
        np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
        assert list(loaded.classes_) == list(clf.classes_)
        assert loaded.get_params() == clf.get_params()
        assert loaded.class_names_ == ["ant", "bee", "cat", "dog"] and loaded.metadata_ == clf.metadata_
        assert list(loaded.predict_names(X[:3])) == [dict(zip("abcd", loaded.class_names_))[c] for c in clf.predict(X[:3])]
        assert loaded.history_ == clf.history_ and loaded.best_epoch_ == clf.best_epoch_
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(npz["header"].tobytes().decode())
        assert {"W1", "b1", "W2", "b2", "W3", "b3", "b0", "mean", "scale", "classes"} <= set(npz.files)
    assert header["format_version"] == 1 and header["architecture"]["sizes"] == [6, 8, 5, 4]


def rewrite(path, out, drop=(), **replace):
    """Copy a model file, dropping or replacing arrays (the header too, as a dict)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in drop}
    if "header" in replace:
        replace["header"] = np.frombuffer(json.dumps(replace["header"]).encode(), np.uint8)
    arrays.update(replace)
    with open(out, "wb") as fh:
        np.savez(fh, **arrays)
    return out


def test_damaged_model_files_fail_cleanly(fitted, tmp_path):
    clf, _ = fitted
    good = clf.save(tmp_path / "good.npz")
    data = good.read_bytes()
    with np.load(good) as npz:
        header = json.loads(npz["header"].tobytes().decode())
    cases = {
        "truncated": (tmp_path / "truncated.npz", None),
        "not an npz": (tmp_path / "text.npz", None),
        "a bare .npy": (tmp_path / "bare.npz", None),
        "flipped byte": (tmp_path / "flipped.npz", None),
    }
    cases["truncated"][0].write_bytes(data[: len(data) // 2])
    cases["not an npz"][0].write_text("hello")
    np.save(open(cases["a bare .npy"][0], "wb"), np.zeros(3))
    flipped = bytearray(data)
    pos = data.index(b"W1.npy") + 200  # inside W1's stored bytes: the zip CRC must catch it
    flipped[pos] ^= 0xFF
    cases["flipped byte"][0].write_bytes(bytes(flipped))
    paths = [p for p, _ in cases.values()]
    paths.append(rewrite(good, tmp_path / "missing.npz", drop=("W2",)))
    paths.append(rewrite(good, tmp_path / "shape.npz", b1=np.zeros(3, np.float32)))
    paths.append(rewrite(good, tmp_path / "noheader.npz", drop=("header",)))
    paths.append(rewrite(good, tmp_path / "version.npz", header={**header, "format_version": 99}))
    paths.append(rewrite(good, tmp_path / "badjson.npz", header="oops"))
    paths.append(rewrite(good, tmp_path / "nan.npz", W1=np.full((6, 8), np.nan, np.float32)))
    paths.append(tmp_path / "absent.npz")
    for path in paths:
        with pytest.raises(ModelError) as info:
            ANNClassifier.load(path)
        message = str(info.value)
        assert message.startswith(str(path) + ": ") and "\n" not in message, message
    assert "'W2' is missing" in str(pytest.raises(ModelError, ANNClassifier.load, paths[4]).value)
    assert "version 99" in str(pytest.raises(ModelError, ANNClassifier.load, paths[7]).value)
    assert zipfile.is_zipfile(good)  # the good file still loads
    ANNClassifier.load(good)


DROP = object()


@pytest.mark.parametrize("where,key,value,says", [
    ("params", "hidden_layer_sizes", DROP, "the model header's params lack 'hidden_layer_sizes'"),
    ("params", "solver", DROP, "the model header's params lack 'solver'"),
    ("params", "loss__x", 1, "the model header's params have unknown 'loss__x'"),
    ("params", "hidden_layer_sizes", 5, "bad params in header (hidden_layer_sizes must be"),
    ("architecture", "activation", DROP, "the model header's architecture has no valid 'activation'"),
    ("architecture", "activation", ["tanh"], "the model header's architecture has no valid 'activation'"),
    ("architecture", "input_bias", "yes", "the model header's architecture has no valid 'input_bias'"),
    (None, "architecture", DROP, "the model header has no architecture"),
    (None, "params", ["solver"], "the model header has no params"),
    (None, "history", 5, "the model header's 'history' is invalid"),
    (None, "best_epoch", "3", "the model header's 'best_epoch' is invalid"),
    (None, "class_names", [[0]], "the model header's 'class_names' is invalid"),
    (None, "class_names", [[[0], "dog"]], "the model header's 'class_names' is invalid"),
    (None, "feature_names_in", ["a"], "the model header has 1 feature names for 6 inputs"),
])
def test_damaged_header_fields_fail_cleanly(fitted, tmp_path, where, key, value, says):
    """Every header field load() reads is checked: one line naming the file, never a KeyError."""
    clf, _ = fitted
    good = clf.save(tmp_path / "good.npz")
    with np.load(good) as npz:
        header = json.loads(npz["header"].tobytes().decode())
    section = header if where is None else header[where]
    if value is DROP:
        del section[key]
    else:
        section[key] = value
    path = rewrite(good, tmp_path / "damaged.npz", header=header)
    with pytest.raises(ModelError) as info:
        ANNClassifier.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {says}") and "\n" not in message, message


def test_predict_proba_scores_every_chunk(monkeypatch):
    """Rows go through the network in chunks; every chunk's rows get their own probabilities."""
    from esc50ann import model as model_mod

    X, y = blobs(4, 10, dim=6)
    clf = ANNClassifier(hidden_layer_sizes=(8,), max_epochs=3).fit(X, y)
    whole = clf.network_.forward(clf._transform(X, np.float32)).astype(np.float64)
    monkeypatch.setattr(model_mod, "_PREDICT_CHUNK", 7)  # 40 rows: 6 chunks, the last partial
    np.testing.assert_allclose(clf.predict_proba(X), whole, rtol=1e-6)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[whole.argmax(axis=1)])


def test_early_stopping_without_x_val_works_inside_sklearn_tools():
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(120, 6)), rng.integers(0, 4, 120)  # no signal: validation loss soon rises
    clf = ANNClassifier(hidden_layer_sizes=(32,), solver="adam", learning_rate=0.05, max_epochs=200, patience=3,
                        early_stopping=True, validation_fraction=0.2)
    clf.fit(X, y)
    assert clf.n_iter_ < 200 and clf.history_[0]["val_loss"] is not None
    assert clf.best_epoch_ < clf.n_iter_ or clf.n_iter_ == 200
    search = GridSearchCV(make_pipeline(FunctionTransformer(), clf), {"annclassifier__learning_rate": [0.01, 0.05]}, cv=2)
    search.fit(X, y)
    assert search.best_estimator_[-1].history_[0]["val_loss"] is not None  # it validated inside the search
    off = ANNClassifier(hidden_layer_sizes=(8,), max_epochs=5, patience=3).fit(X, y)
    assert off.n_iter_ == 5 and off.history_[0]["val_loss"] is None  # no X_val, no early_stopping: no validation


def test_an_ensemble_averages_its_networks_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(90, 6)), np.arange(90) % 3
    X[np.arange(90), y] += 2.0
    kw = dict(hidden_layer_sizes=(8,), solver="adam", learning_rate=0.01, max_epochs=5, patience=None)
    lone = ANNClassifier(**kw).fit(X, y)
    trio = ANNClassifier(n_networks=3, **kw).fit(X, y)
    assert len(trio.networks_) == 3 and trio.network_ is trio.networks_[0]
    # the first is the lone one (to float32 rounding: the fused products are wider)
    for p, q in zip(trio.network_.params, lone.network_.params):
        np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-6)
    assert not np.allclose(trio.networks_[1].weights[0], trio.networks_[2].weights[0])
    members = [ANNClassifier(**kw) for _ in range(3)]
    for m, net in zip(members, trio.networks_):  # each member alone, then their mean by hand
        m.classes_, m.n_features_in_, m.mean_, m.scale_, m.networks_ = trio.classes_, 6, trio.mean_, trio.scale_, [net]
    np.testing.assert_allclose(trio.predict_proba(X), np.mean([m.predict_proba(X) for m in members], axis=0),
                               rtol=1e-12)
    rows = []
    ANNClassifier(n_networks=3, **kw).fit(X, y, callback=rows.append)  # progress counts every network's epochs
    assert [(r["network"], r["epoch"]) for r in rows] == [(k, e) for e in range(1, 6) for k in (1, 2, 3)]
    old = lone.save(tmp_path / "old.npz")  # as written before ensembles, mixing and schedules existed
    arrays, header = modelfile.read(old)
    for key in ("n_networks", "mixup", "lr_schedule", "lr_floor", "warmup_epochs", "lr_step_every", "lr_step_factor",
                "epsilon", "clip_norm", "average_epochs", "ensemble"):
        del header["params"][key]
    del header["architecture"]["n_networks"]
    header["history"], header["best_epoch"] = header.pop("histories")[0], header.pop("best_epochs")[0]
    modelfile.write(old, arrays, {k: v for k, v in header.items() if k not in ("format", "format_version")})
    reread = ANNClassifier.load(old)
    np.testing.assert_array_equal(reread.predict_proba(X), lone.predict_proba(X))
    assert reread.lr_schedule == "constant" and reread.warmup_epochs == 0 and reread.history_ == lone.history_
    assert (reread.epsilon, reread.clip_norm, reread.average_epochs, reread.ensemble) == (1e-8, None, 0, "independent")
    loaded = ANNClassifier.load(trio.save(tmp_path / "trio.npz"))
    assert len(loaded.networks_) == 3
    np.testing.assert_array_equal(loaded.predict_proba(X), trio.predict_proba(X))
