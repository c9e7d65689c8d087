"""The scikit-learn estimator around the hand-written network, and its model files.

    clf = ANNClassifier(hidden_layer_sizes=(1024,), solver="sgd", learning_rate=0.05)
    clf.fit(X_train, y_train, X_val=X_val, y_val=y_val)   # early stopping on the val loss
    clf.predict(X_test); clf.predict_proba(X_test); clf.history_; clf.best_epoch_
    clf.save("fold-1.npz");  clf = ANNClassifier.load("fold-1.npz")

A model file is one ``.npz`` (read with ``allow_pickle=False``) holding the arrays -- ``W1, b1, ...``,
``b0``, the standardisation ``mean``/``scale`` and ``classes`` -- plus ``header``: UTF-8 JSON as a
uint8 array with the architecture, the constructor params, the class labels, the training history,
``class_names_``/``metadata_`` when set, the esc50ann version and ``format_version``.
"""
from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from esc50ann import __version__
from esc50ann.errors import ConfigError, ModelError, one_line
from esc50ann.fileio import atomic_path, json_default
from esc50ann.mlp import ACTIVATIONS, COSTS, MLP, OUTPUTS
from esc50ann.train import OPTIMIZERS, make_optimizer, train

__all__ = ["ANNClassifier", "load_model", "FORMAT", "FORMAT_VERSION"]

FORMAT = "esc50ann-model"
FORMAT_VERSION = 1
# Rows per forward pass at prediction time: bounds memory on large inputs.
_PREDICT_CHUNK = 4096


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


class ANNClassifier(ClassifierMixin, BaseEstimator):
    """A multilayer perceptron classifier: ``x + b0 -> hidden layers -> softmax``, trained by hand.

    Parameters
    ----------
    hidden_layer_sizes : sequence of int, default=(1024,)
        Width of each hidden layer (empty for no hidden layer).
    activation : {"tanh", "sigmoid", "relu"}, default="tanh"
    output : {"softmax", "sigmoid"}, default="softmax"
        With sigmoid outputs, ``predict_proba`` normalises each row to sum to one.
    loss : {"squared_error", "cross_entropy"}, default="squared_error"
        ``sum_k (p_k - y_k)^2`` per sample (the reference write-ups' loss) or cross-entropy,
        averaged over the mini-batch.
    input_bias : bool, default=True
        Learn a bias ``b0`` added to every (standardised) input vector.
    solver : {"sgd", "momentum", "adam"}, default="sgd"
    learning_rate : float, default=0.01
    momentum : float, default=0.9
        Only used by ``solver="momentum"``.
    batch_size : int, default=32
        Samples per update (1 = per-sample SGD as in the write-ups).
    max_epochs : int, default=100
    weight_decay : float, default=0.0
        L2 penalty ``(weight_decay / 2) ||W||^2`` on the weight matrices.
    patience : int or None, default=10
        With a validation set, stop after this many epochs without a lower validation loss and
        restore the best weights.  None (or no validation set) runs all ``max_epochs`` and keeps
        the last weights; with None a validation set is still scored every epoch (``val_loss``,
        ``val_accuracy`` in ``history_``) but never stops training or picks the weights.
    standardize : bool, default=True
        Scale every feature to zero mean and unit variance using the training X only.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the network and of training.
    random_state : int, numpy Generator or None, default=0
        Seeds the initial weights and the per-epoch shuffles.
    verbose : bool, default=False
        Print one line per epoch.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    network_ : esc50ann.mlp.MLP
    mean_, scale_ : ndarray of shape (n_features_in_,) or None
        The standardisation fitted on the training X (``scale_`` is 1 for constant features).
    history_ : list of dict
        One row per epoch: epoch, loss, accuracy, val_loss, val_accuracy, seconds.
    best_epoch_ : int
        The epoch whose weights the model holds (the last one without early stopping).
    n_iter_ : int
        Epochs run.
    class_names_, metadata_ : optional, set by the caller; saved and loaded with the model.
    """

    def __init__(self, hidden_layer_sizes=(1024,), activation="tanh", output="softmax",
                 loss="squared_error", input_bias=True, solver="sgd", learning_rate=0.01,
                 momentum=0.9, batch_size=32, max_epochs=100, weight_decay=0.0, patience=10,
                 standardize=True, dtype="float32", random_state=0, verbose=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.output = output
        self.loss = loss
        self.input_bias = input_bias
        self.solver = solver
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.weight_decay = weight_decay
        self.patience = patience
        self.standardize = standardize
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    # --- validation ---------------------------------------------------------------------------

    def _validate_params(self):
        """Check every constructor parameter; raise ``ConfigError`` naming the first bad one."""
        def bad(name, expected):
            value = getattr(self, name)
            return ConfigError(f"{name} must be {expected} (got {value!r})")

        sizes = self.hidden_layer_sizes
        if not isinstance(sizes, (list, tuple)) or not all(_is_int(h) and h >= 1 for h in sizes):
            raise bad("hidden_layer_sizes", "a list of positive integers")
        for name, choices in (("activation", ACTIVATIONS), ("output", OUTPUTS), ("loss", COSTS),
                              ("solver", OPTIMIZERS)):
            if not isinstance(getattr(self, name), str) or getattr(self, name) not in choices:
                raise bad(name, "one of " + ", ".join(repr(c) for c in choices))
        for name in ("input_bias", "standardize"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise bad(name, "true or false")
        if not (isinstance(self.verbose, (bool, np.bool_)) or (_is_int(self.verbose) and self.verbose >= 0)):
            raise bad("verbose", "true, false or a non-negative integer")
        if not (_is_real(self.learning_rate) and 0 < self.learning_rate < math.inf):
            raise bad("learning_rate", "a positive number")
        if not (_is_real(self.momentum) and 0 <= self.momentum < 1):
            raise bad("momentum", "a number in [0, 1)")
        if not (_is_real(self.weight_decay) and 0 <= self.weight_decay < math.inf):
            raise bad("weight_decay", "a number >= 0")
        for name in ("batch_size", "max_epochs"):
            if not (_is_int(getattr(self, name)) and getattr(self, name) >= 1):
                raise bad(name, "a positive integer")
        if self.patience is not None and not (_is_int(self.patience) and self.patience >= 1):
            raise bad("patience", "a positive integer or None")
        if str(self.dtype) not in ("float32", "float64"):
            raise bad("dtype", "'float32' or 'float64'")
        rs = self.random_state
        if not (rs is None or (_is_int(rs) and rs >= 0)
                or isinstance(rs, (np.random.Generator, np.random.RandomState))):
            raise bad("random_state", "a non-negative integer, a numpy Generator or None")

    def _rng(self):
        if isinstance(self.random_state, np.random.RandomState):  # sklearn's legacy generator
            return np.random.default_rng(self.random_state.randint(2**32, dtype=np.uint64))
        return np.random.default_rng(self.random_state)

    # --- fitting ------------------------------------------------------------------------------

    def fit(self, X, y, *, X_val=None, y_val=None, callback=None):
        """Train on ``X`` (n_samples, n_features) and labels ``y`` (n_samples,).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels: any ints or strings.
        X_val, y_val : optional validation set, scored after every epoch into ``history_``.  With
            ``patience`` set it drives early stopping and the best epoch's weights are restored;
            with ``patience=None`` it is only monitored: all ``max_epochs`` run, the last weights
            are kept and ``best_epoch_ == n_iter_``.  Its labels must all occur in ``y``.
        callback : callable, optional
            Called after every epoch with that epoch's history row.

        Returns
        -------
        self
        """
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        dtype = np.dtype(str(self.dtype))
        if (X_val is None) != (y_val is None):
            raise ConfigError("X_val and y_val must be given together")

        if self.standardize:
            self.mean_ = X.mean(axis=0, dtype=np.float64)
            std = X.std(axis=0, dtype=np.float64)
            # Like StandardScaler: a (near-)constant feature is only centred, never blown up.
            self.scale_ = np.where(std < 10 * np.finfo(np.float64).eps * (1.0 + np.abs(self.mean_)),
                                   1.0, std)
        else:
            self.mean_ = self.scale_ = None
        Xs = self._transform(X, dtype)
        Y = np.eye(len(self.classes_), dtype=dtype)[y_idx]
        Xv = Yv = None
        if X_val is not None:
            Xv = self._transform(validate_data(self, X_val, reset=False, dtype=(np.float64, np.float32)),
                                 dtype)
            Yv = np.eye(len(self.classes_), dtype=dtype)[self._encode(y_val, len(Xv))]

        rng = self._rng()
        self.network_ = MLP([X.shape[1], *self.hidden_layer_sizes, len(self.classes_)],
                            self.activation, self.output, self.loss, bool(self.input_bias), dtype, rng)
        optimizer = make_optimizer(self.solver, self.learning_rate, self.momentum, self.weight_decay)
        self.history_, self.best_epoch_ = train(
            self.network_, Xs, Y, optimizer=optimizer, batch_size=self.batch_size,
            max_epochs=self.max_epochs, rng=rng, X_val=Xv, Y_val=Yv,
            patience=self.patience if Xv is not None else None, callback=callback,
            verbose=bool(self.verbose))
        self.n_iter_ = len(self.history_)
        return self

    def _encode(self, y_val, n):
        y_val = np.asarray(y_val)
        if y_val.ndim != 1 or len(y_val) != n:
            raise ConfigError(f"y_val must be 1-D with one label per X_val row (got shape {y_val.shape})")
        idx = np.searchsorted(self.classes_, y_val)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        unseen = y_val[self.classes_[idx] != y_val]
        if len(unseen):
            raise ConfigError(f"y_val has labels not seen in y: {sorted(set(unseen.tolist()))[:5]}")
        return idx

    def _transform(self, X, dtype):
        """Standardised copy of X in ``dtype`` (X itself is never written)."""
        if self.mean_ is None:
            return np.asarray(X, dtype=dtype)
        out = np.empty(X.shape, dtype)
        np.subtract(X, self.mean_, out=out, casting="same_kind")
        np.divide(out, self.scale_.astype(dtype), out=out)
        return out

    # --- prediction ---------------------------------------------------------------------------

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in the order of ``classes_``."""
        check_is_fitted(self, "network_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        net = self.network_
        proba = np.empty((len(X), len(self.classes_)), np.float64)
        for lo in range(0, len(X), _PREDICT_CHUNK):
            proba[lo:lo + _PREDICT_CHUNK] = net.forward(self._transform(X[lo:lo + _PREDICT_CHUNK],
                                                                        net.dtype))
        if net.output.name != "softmax":
            # Independent sigmoid units do not sum to one: normalise (uniform if all are 0).
            total = proba.sum(axis=1, keepdims=True)
            np.divide(proba, total, out=proba, where=total > 0)
            proba[total[:, 0] <= 0] = 1.0 / proba.shape[1]
        return proba

    def predict(self, X):
        """Most probable class label for each row of X, shape (n_samples,)."""
        proba = self.predict_proba(X)  # first: it raises NotFittedError before classes_ is touched
        return self.classes_[np.argmax(proba, axis=1)]

    # --- model files --------------------------------------------------------------------------

    def save(self, path):
        """Write the fitted model to ``path`` (one ``.npz``), atomically.  Returns the path."""
        check_is_fitted(self, "network_")
        path = Path(path)
        net = self.network_
        arrays = dict(zip(net.names, net.params))
        if self.mean_ is not None:
            arrays["mean"], arrays["scale"] = self.mean_, self.scale_
        classes = self.classes_
        arrays["classes"] = classes.astype(str) if classes.dtype == object else classes
        params = dict(self.get_params())
        params["hidden_layer_sizes"] = [int(h) for h in self.hidden_layer_sizes]
        params["dtype"] = str(self.dtype)
        if not (params["random_state"] is None or _is_int(params["random_state"])):
            params["random_state"] = None  # a generator object cannot be stored
        class_names = getattr(self, "class_names_", None)
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "esc50ann_version": __version__,
            # From the network itself, not the params, which may have been set since fit.
            "architecture": {"sizes": [int(s) for s in net.sizes], "activation": net.activation.name,
                             "output": net.output.name, "loss": net.cost.name, "input_bias": net.input_bias,
                             "standardize": self.mean_ is not None, "dtype": str(net.dtype)},
            "params": params,
            "classes": classes.tolist(),
            "classes_dtype": "object" if classes.dtype == object else classes.dtype.str,
            "feature_names_in": getattr(self, "feature_names_in_", np.array([])).tolist() or None,
            "class_names": None if class_names is None else [[k, v] for k, v in dict(class_names).items()],
            "metadata": getattr(self, "metadata_", None),
            "history": self.history_,
            "best_epoch": self.best_epoch_,
        }
        try:
            text = json.dumps(header, default=json_default)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{path}: cannot store the model header ({one_line(exc)})") from None
        arrays["header"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **arrays)  # a file object, so numpy does not append ".npz"
        except OSError as exc:
            raise ModelError(f"{path}: cannot write the model ({one_line(exc)})") from None
        return path

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`; raise ``ModelError`` naming the file if it is unusable."""
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}  # reads (and CRC-checks) all now
        except AttributeError:  # np.load returned a bare array (a .npy), which has no .files
            raise ModelError(f"{path}: not an esc50ann model file (a .npy, not an .npz)") from None
        except Exception as exc:  # zip/npy/CRC/truncation errors all mean the same thing here
            raise ModelError(f"{path}: not a readable model file ({one_line(exc)})") from None

        header = _read_header(path, arrays)
        arch = header["architecture"]
        sizes = arch["sizes"]
        n_layers = len(sizes) - 1
        expected = {f"W{i}": (sizes[i - 1], sizes[i]) for i in range(1, n_layers + 1)}
        expected.update({f"b{i}": (sizes[i],) for i in range(1, n_layers + 1)})
        expected["classes"] = (sizes[-1],)
        if arch["input_bias"]:
            expected["b0"] = (sizes[0],)
        if arch["standardize"]:
            expected["mean"] = expected["scale"] = (sizes[0],)
        for name, shape in expected.items():
            if name not in arrays:
                raise ModelError(f"{path}: array {name!r} is missing")
            if arrays[name].shape != tuple(shape):
                raise ModelError(f"{path}: array {name!r} has shape {arrays[name].shape}, "
                                 f"the header says {tuple(shape)}")
            if name != "classes" and (arrays[name].dtype.kind != "f" or not np.isfinite(arrays[name]).all()):
                raise ModelError(f"{path}: array {name!r} is not finite floating point")

        model = cls()
        params, known = dict(header["params"]), set(model.get_params())
        # Exactly the constructor's params, as save() writes them: no silent defaults.
        for problem, keys in (("lack", known - set(params)), ("have unknown", set(params) - known)):
            if keys:
                raise ModelError(f"{path}: the model header's params {problem} "
                                 f"{', '.join(repr(k) for k in sorted(keys))}")
        if isinstance(params["hidden_layer_sizes"], list):  # JSON has no tuples
            params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
        try:
            model.set_params(**params)
            model._validate_params()
        except ValueError as exc:
            raise ModelError(f"{path}: bad params in header ({one_line(exc)})") from None
        dtype = np.dtype(arch["dtype"])
        model.network_ = MLP.from_arrays(
            [arrays[f"W{i}"].astype(dtype) for i in range(1, n_layers + 1)],
            [arrays[f"b{i}"] for i in range(1, n_layers + 1)],
            arrays.get("b0") if arch["input_bias"] else None,
            arch["activation"], arch["output"], arch["loss"])
        classes = arrays["classes"]
        model.classes_ = classes.astype(object) if header.get("classes_dtype") == "object" else classes
        model.n_features_in_ = sizes[0]
        if header.get("feature_names_in"):
            model.feature_names_in_ = np.asarray(header["feature_names_in"], dtype=object)
        model.mean_ = arrays["mean"] if arch["standardize"] else None
        model.scale_ = arrays["scale"] if arch["standardize"] else None
        model.history_ = header.get("history") or []
        model.best_epoch_ = header.get("best_epoch")
        model.n_iter_ = len(model.history_)
        if header.get("class_names") is not None:
            model.class_names_ = {k: v for k, v in header["class_names"]}
        if header.get("metadata") is not None:
            model.metadata_ = header["metadata"]
        return model


# What each header field read by load() must hold (as JSON: lists, never tuples).
_ARCHITECTURE = {
    "sizes": lambda v: isinstance(v, list) and len(v) >= 2 and all(_is_int(s) and s >= 1 for s in v),
    "activation": lambda v: isinstance(v, str) and v in ACTIVATIONS,
    "output": lambda v: isinstance(v, str) and v in OUTPUTS,
    "loss": lambda v: isinstance(v, str) and v in COSTS,
    "input_bias": lambda v: isinstance(v, bool),
    "standardize": lambda v: isinstance(v, bool),
    "dtype": lambda v: v in ("float32", "float64"),
}
# Optional fields: absent or null is fine, anything else must look like this.
_OPTIONAL = {
    "classes_dtype": lambda v: isinstance(v, str),
    "feature_names_in": lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
    "class_names": lambda v: isinstance(v, list) and all(  # [[key, name], ...], keys hashable
        isinstance(kv, list) and len(kv) == 2 and not isinstance(kv[0], (list, dict)) for kv in v),
    "history": lambda v: isinstance(v, list) and all(isinstance(row, dict) for row in v),
    "best_epoch": _is_int,
}


def _read_header(path, arrays):
    """The parsed JSON header, with every field that :meth:`ANNClassifier.load` reads checked."""
    if "header" not in arrays:
        raise ModelError(f"{path}: not an esc50ann model file (no 'header' array)")
    raw = arrays["header"]
    try:
        header = json.loads(raw.tobytes().decode("utf-8") if raw.dtype == np.uint8 else str(raw))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{path}: the model header is not valid JSON ({one_line(exc)})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelError(f"{path}: not an esc50ann model file")
    if header.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path}: model format version {header.get('format_version')!r} "
                         f"is not supported (this esc50ann {__version__} reads {FORMAT_VERSION})")
    arch = header.get("architecture")
    if not isinstance(arch, dict):
        raise ModelError(f"{path}: the model header has no architecture")
    for key, ok in _ARCHITECTURE.items():
        if not ok(arch.get(key)):
            raise ModelError(f"{path}: the model header's architecture has no valid {key!r}")
    if not isinstance(header.get("params"), dict):
        raise ModelError(f"{path}: the model header has no params")
    for key, ok in _OPTIONAL.items():
        if header.get(key) is not None and not ok(header[key]):
            raise ModelError(f"{path}: the model header's {key!r} is invalid")
    if header.get("feature_names_in") and len(header["feature_names_in"]) != arch["sizes"][0]:
        raise ModelError(f"{path}: the model header has {len(header['feature_names_in'])} feature "
                         f"names for {arch['sizes'][0]} inputs")
    return header


def load_model(path):
    """Read a model file written by :meth:`ANNClassifier.save`."""
    return ANNClassifier.load(path)
