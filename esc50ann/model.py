"""The scikit-learn estimator around the hand-written network.

    clf = ANNClassifier(hidden_layer_sizes=(1024,), solver="sgd", learning_rate=0.05)
    clf.fit(X_train, y_train, X_val=X_val, y_val=y_val)   # early stopping on the val loss
    clf.predict(X_test); clf.predict_proba(X_test); clf.history_; clf.best_epoch_
    clf.save("fold-1.npz");  clf = ANNClassifier.load("fold-1.npz")   # format: esc50ann.modelfile
"""
from __future__ import annotations

import inspect

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from esc50ann import modelfile
from esc50ann.errors import ConfigError, ModelError, one_line
from esc50ann.mlp import ACTIVATIONS, COSTS, MLP, OUTPUTS, MLPStack
from esc50ann.optim import OPTIMIZERS, SCHEDULES, LRSchedule, make_optimizer
from esc50ann.parallel import physical_memory
from esc50ann.params import Boolean, InstanceOf, Integral, Interval, ListOf, Options, Real, validate
from esc50ann.train import train

__all__ = ["ANNClassifier", "default_params"]

# Rows per forward pass at prediction time: bounds memory on large inputs.
_PREDICT_CHUNK = 4096
# More epochs than any training here needs (the default runs 30-100), fewer than a runaway asks.
MAX_EPOCHS = 100_000
MAX_LAYERS = 100
# Arrays of a network's size held while training, besides the kept networks: its gradients and
# the optimizer's state (Momentum: a velocity; Adam: two moments).
_STATE = {"sgd": 1, "momentum": 2, "adam": 3}


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
        The base learning rate (see ``lr_schedule``).
    lr_schedule : {"constant", "cosine", "linear", "step"}, default="constant"
        The learning rate over training (``esc50ann.optim.LRSchedule``), after ``warmup_epochs``:
        ``learning_rate`` throughout; a half cosine from it down to ``lr_floor x learning_rate``
        at ``max_epochs``; a straight line down to that; or ``learning_rate`` multiplied by
        ``lr_step_factor`` every ``lr_step_every`` epochs. Updated at every mini-batch.
    lr_floor : float, default=0.0
        Where ``cosine`` and ``linear`` end (and the least ``step`` reaches), as a fraction of
        ``learning_rate``: 0 decays to zero.
    warmup_epochs : int, default=0
        Ramp the learning rate up linearly from almost zero over this many epochs first.
    lr_step_every : int, default=10
        Epochs between the drops of ``lr_schedule="step"``.
    lr_step_factor : float, default=0.1
        What each drop of ``lr_schedule="step"`` multiplies the learning rate by.
    momentum : float, default=0.9
        Only used by ``solver="momentum"``.
    epsilon : float, default=1e-8
        Adam's ``eps``, added to ``sqrt(v)`` in its step (only used by ``solver="adam"``): a
        larger value caps the step where gradients have become tiny.
    clip_norm : float or None, default=None
        Rescale each network's gradient (over all its parameters, before weight decay) to this
        norm whenever it is larger. None: never.
    average_epochs : int, default=0
        Keep the mean of each network's weights at the end of its last ``average_epochs`` epochs
        instead of the last epoch's (weight averaging, as in stochastic weight averaging,
        Izmailov et al. 2018). 0: the last epoch's weights. Not with early stopping.
    batch_size : int, default=32
        Samples per update (1 = per-sample SGD as in the write-ups).
    max_epochs : int, default=100
        At most ``MAX_EPOCHS`` (100,000).
    weight_decay : float, default=0.0
        L2 penalty ``(weight_decay / 2) ||W||^2`` on the weight matrices.
    n_networks : int, default=1
        Train this many networks from different random starts on the same rows and average their
        probabilities: an ensemble. They train together (``esc50ann.mlp.MLPStack``: one product
        per layer for all of them, one loop), so they see the same mini-batches in the same
        order; the first is the network a lone one would be.
    ensemble : {"independent", "snapshots"}, default="independent"
        How the ``n_networks`` are made. ``"independent"``: from different random starts, as
        above (``n_networks`` times the work of one). ``"snapshots"``: one network whose
        ``lr_schedule`` runs ``n_networks`` times over ``max_epochs`` (warm restarts), the
        weights at the end of each cycle one member (a snapshot ensemble, Huang et al. 2017):
        the work of one network. Not with early stopping or ``average_epochs``.
    mixup : float, default=0.0
        Between-class mixing of training rows: 0 is off; otherwise each row of a mini-batch is
        mixed with another at a ratio drawn from ``Beta(mixup, mixup)``, its target the same mix
        of the two one-hot labels (``esc50ann.train``). Validation and test rows are never mixed.
    patience : int or None, default=10
        With a validation set, stop after this many epochs without a lower validation loss and
        restore the best weights.  None (or no validation set) runs all ``max_epochs`` and keeps
        the last weights; with None a validation set is still scored every epoch (``val_loss``,
        ``val_accuracy`` in ``history_``) but never stops training or picks the weights.
    early_stopping : bool, default=False
        Without an explicit ``X_val`` (as inside a scikit-learn ``Pipeline`` or ``GridSearchCV``),
        hold out a stratified ``validation_fraction`` of the training rows (seeded by
        ``random_state``) and use it as the validation set for ``patience``.
    validation_fraction : float, default=0.1
        Share of the training rows held out by ``early_stopping``.
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
        The first network (the only one unless ``n_networks > 1``).
    networks_ : list of esc50ann.mlp.MLP
    mean_, scale_ : ndarray of shape (n_features_in_,) or None
        The standardisation fitted on the training X (``scale_`` is 1 for constant features).
    histories_ : list of list of dict
        Per network, one row per epoch: epoch, loss, accuracy, val_loss, val_accuracy, lr,
        seconds (and network, in an ensemble); see ``esc50ann.train.train``.
    history_ : list of dict
        The first network's (``histories_[0]``).
    best_epochs_ : list of int
        Per network, the epoch whose weights it holds (the last one without early stopping).
    best_epoch_ : int
        The first network's (``best_epochs_[0]``).
    n_iter_ : int
        Epochs run.
    class_names_ : list of str, optional
        The category name of each of ``classes_`` (set by the caller, e.g. ``Pipeline.train``; a
        dict label -> name is accepted too); saved with the model, loaded as a list.
    metadata_ : dict, optional
        Set by the caller (a pipeline stores its feature configuration here); saved and loaded.
    """

    def __init__(self, *, hidden_layer_sizes=(1024,), activation="tanh", output="softmax",
                 loss="squared_error", input_bias=True, solver="sgd", learning_rate=0.01,
                 lr_schedule="constant", lr_floor=0.0, warmup_epochs=0, lr_step_every=10, lr_step_factor=0.1,
                 momentum=0.9, epsilon=1e-8, clip_norm=None, average_epochs=0, batch_size=32, max_epochs=100,
                 weight_decay=0.0, n_networks=1, ensemble="independent", mixup=0.0, patience=10,
                 early_stopping=False, validation_fraction=0.1, standardize=True, dtype="float32",
                 random_state=0, verbose=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.output = output
        self.loss = loss
        self.input_bias = input_bias
        self.solver = solver
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.lr_floor = lr_floor
        self.warmup_epochs = warmup_epochs
        self.lr_step_every = lr_step_every
        self.lr_step_factor = lr_step_factor
        self.momentum = momentum
        self.epsilon = epsilon
        self.clip_norm = clip_norm
        self.average_epochs = average_epochs
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.weight_decay = weight_decay
        self.n_networks = n_networks
        self.ensemble = ensemble
        self.mixup = mixup
        self.patience = patience
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.standardize = standardize
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    _parameter_constraints = {
        "hidden_layer_sizes": [ListOf(Interval(Integral, 1), max_len=MAX_LAYERS)],
        "activation": [Options(*ACTIVATIONS)],
        "output": [Options(*OUTPUTS)],
        "loss": [Options(*COSTS)],
        "input_bias": [Boolean()],
        "solver": [Options(*OPTIMIZERS)],
        "learning_rate": [Interval(Real, 0, closed="neither")],
        "lr_schedule": [Options(*SCHEDULES)],
        "lr_floor": [Interval(Real, 0, 1)],
        "warmup_epochs": [Interval(Integral, 0)],
        "lr_step_every": [Interval(Integral, 1)],
        "lr_step_factor": [Interval(Real, 0, 1, closed="right")],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, 1, closed="neither")],
        "clip_norm": [Interval(Real, 0, closed="neither"), None],
        "average_epochs": [Interval(Integral, 0, MAX_EPOCHS)],
        "batch_size": [Interval(Integral, 1)],
        "max_epochs": [Interval(Integral, 1, MAX_EPOCHS)],
        "weight_decay": [Interval(Real, 0)],
        "n_networks": [Interval(Integral, 1, 64)],
        "ensemble": [Options("independent", "snapshots")],
        "mixup": [Interval(Real, 0, 100)],
        "patience": [Interval(Integral, 1), None],
        "early_stopping": [Boolean()],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "standardize": [Boolean()],
        "dtype": [Options("float32", "float64")],
        "random_state": [Interval(Integral, 0), InstanceOf(np.random.Generator, np.random.RandomState), None],
        "verbose": [Boolean(), Interval(Integral, 0)],
    }

    def _check_params(self):
        """Check every constructor parameter against ``_parameter_constraints`` (this package's
        constraint objects, ``esc50ann.params``); raise ``ConfigError`` naming the first bad one."""
        params = self.get_params()
        params["dtype"] = str(params["dtype"])  # np.float32 and "float32" alike
        validate(params, self._parameter_constraints)

    def _rng(self):
        if isinstance(self.random_state, np.random.RandomState):  # sklearn's legacy generator
            return np.random.default_rng(self.random_state.randint(2**32, dtype=np.uint64))
        return np.random.default_rng(self.random_state)

    # --- fitting ------------------------------------------------------------------------------

    def fit(self, X, y, *, X_val=None, y_val=None, callback=None, networks=None):
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
            Called after every epoch of every network with that epoch's history row (and, for an
            ensemble, ``row["network"]``: 1 to ``n_networks``).
        networks : sequence of int, optional
            Train only these networks of the ensemble (0-based), exactly as they are trained in the
            whole of it: one ensemble can be trained in parts on several workers and put together
            with :meth:`join` (``esc50ann.evaluate`` does, to keep every core busy). Without
            early stopping only: with it, the parts would stop at different epochs.

        Returns
        -------
        self
        """
        self._check_params()
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        dtype = np.dtype(str(self.dtype))
        if (X_val is None) != (y_val is None):
            raise ConfigError("X_val and y_val must be given together")
        if self.early_stopping and X_val is None:
            X, y, X_val, y_val = self._validation_split(X, y)
        y_idx = np.searchsorted(self.classes_, y)
        self._check_memory([X.shape[1], *self.hidden_layer_sizes, len(self.classes_)], dtype)

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
        snapshots = self.ensemble == "snapshots"
        numbers = list(range(self.n_networks)) if networks is None else sorted(set(map(int, networks)))
        if not numbers or not set(numbers) <= set(range(self.n_networks)):
            raise ConfigError(f"networks must be some of 0 to {self.n_networks - 1} (got {networks!r})")
        self._check_combination(stopping=Xv is not None and self.patience is not None,
                                part=len(numbers) < self.n_networks)
        everyone = self._new_networks(Xs.shape[1], Y.shape[1], dtype, rng, 1 if snapshots else self.n_networks)
        stack = MLPStack([everyone[j] for j in ([0] if snapshots else numbers)])
        del everyone
        if self.n_networks > 1 and callback is not None and not snapshots:  # which network of the ensemble
            callback = _numbered(callback, numbers)
        optimizer = make_optimizer(self.solver, self.learning_rate, weight_decay=self.weight_decay,
                                   momentum=self.momentum, epsilon=self.epsilon)
        schedule = LRSchedule(self.lr_schedule, epochs=self.max_epochs, warmup_epochs=self.warmup_epochs,
                              floor=self.lr_floor, step_every=self.lr_step_every, step_factor=self.lr_step_factor,
                              cycles=self.n_networks if snapshots else 1)
        kept = {}  # a snapshot ensemble's members: the weights at the end of each cycle

        def keep(net, epoch):
            if epoch in schedule.cycle_ends:
                kept[epoch] = net.networks()[0]
        histories, best_epochs = train(
            stack, Xs, Y, optimizer=optimizer, batch_size=self.batch_size, max_epochs=self.max_epochs,
            rng=rng, mixup=self.mixup, schedule=schedule, clip_norm=self.clip_norm,
            average_epochs=self.average_epochs, X_val=Xv, Y_val=Yv,
            patience=self.patience if Xv is not None else None, callback=callback,
            epoch_end=keep if snapshots else None,
            verbose=bool(self.verbose))
        if snapshots:  # member j: the network at the end of cycle j, its history up to there
            self.networks_ = [kept[e] for e in schedule.cycle_ends]
            self.best_epochs_ = list(schedule.cycle_ends)
            self.histories_ = [[{**row, "network": j + 1} for row in histories[0][:e]]
                               for j, e in enumerate(self.best_epochs_)] if self.n_networks > 1 else histories
        else:
            self.histories_, self.best_epochs_ = histories, best_epochs
            if self.n_networks > 1:
                for j, history in zip(numbers, self.histories_):
                    for row in history:
                        row["network"] = j + 1
            self.networks_ = stack.networks()
        self.history_, self.best_epoch_ = self.histories_[0], self.best_epochs_[0]
        self.n_iter_ = len(histories[0])
        return self

    def _check_combination(self, *, stopping, part):
        """Refuse settings that cannot go together, in one line naming them (``stopping``: early
        stopping will run; ``part``: only some networks of the ensemble are to be trained)."""
        snapshots = self.ensemble == "snapshots"
        if part and (stopping or snapshots):
            raise ConfigError(f"networks: an ensemble {'of snapshots' if snapshots else 'with early stopping'} "
                              "trains as a whole")
        if self.average_epochs and stopping:
            raise ConfigError("average_epochs: weight averaging keeps the last epochs, early stopping the best one: "
                              "set patience to None (0 in a pipeline file) or average_epochs to 0")
        if not snapshots:
            return
        if self.average_epochs:
            raise ConfigError("average_epochs: weight averaging keeps the last epochs, a snapshot ensemble the end "
                              "of every cycle: set ensemble to independent or average_epochs to 0")
        if stopping:
            raise ConfigError("ensemble: a snapshot ensemble keeps the end of every cycle, early stopping the best "
                              "epoch: set patience to None (0 in a pipeline file) or ensemble to independent")
        if self.max_epochs - self.warmup_epochs < self.n_networks:
            raise ConfigError(f"ensemble: a snapshot ensemble of {self.n_networks} needs at least one epoch a cycle "
                              f"after the warm-up (max_epochs {self.max_epochs}, warmup_epochs {self.warmup_epochs})")

    @classmethod
    def join(cls, parts):
        """One fitted ensemble from ``parts``: models of the same params and training data that
        each trained some of its networks (``fit(..., networks=...)``), in network order."""
        model = cls(**parts[0].get_params())
        for name in ("classes_", "n_features_in_", "mean_", "scale_", "feature_names_in_"):
            if hasattr(parts[0], name):
                setattr(model, name, getattr(parts[0], name))
        model.networks_ = [net for part in parts for net in part.networks_]
        model.histories_ = [h for part in parts for h in part.histories_]
        model.best_epochs_ = [e for part in parts for e in part.best_epochs_]
        model.history_, model.best_epoch_, model.n_iter_ = model.histories_[0], model.best_epochs_[0], parts[0].n_iter_
        return model

    @property
    def network_(self):
        """The (first) network; ``networks_`` holds all ``n_networks``."""
        return self.networks_[0]

    def _check_memory(self, sizes, dtype) -> None:
        """Refuse up front an ensemble that cannot fit in this machine's memory: the networks, their
        gradients and optimizer state (they train together), and the float64 copies
        ``predict_proba`` scores with. (Allocating it would succeed lazily and then swap, or be
        killed by the kernel half-way.)"""
        weights = sum(a * b + b for a, b in zip(sizes, sizes[1:])) + (sizes[0] if self.input_bias else 0)
        need = weights * self.n_networks * (dtype.itemsize + 8 + _STATE.get(self.solver, 3) * dtype.itemsize)
        memory = physical_memory()
        if memory is not None and need > memory:
            raise ModelError(f"network {sizes} x {self.n_networks} does not fit in memory ({weights:,} weights per "
                             f"network: {need / 2**30:,.1f} GiB to train and score, this machine has "
                             f"{memory / 2**30:,.1f} GiB): choose smaller hidden_layer_sizes or fewer n_networks")

    def _new_networks(self, n_in, n_out, dtype, rng, count):
        """The first ``count`` of the ``n_networks`` starting points. The first is drawn from
        ``rng`` as a lone network's is, and ``rng`` then shuffles the rows for all of them; the
        others from its independent children (``Generator.spawn``, which draws nothing from it)."""
        sizes = [n_in, *self.hidden_layer_sizes, n_out]
        try:
            return [MLP(sizes, self.activation, self.output, self.loss, bool(self.input_bias), dtype, g)
                    for g in [rng, *rng.spawn(count - 1)]]
        except MemoryError:
            n = sum(a * b for a, b in zip(sizes, sizes[1:])) * self.n_networks
            raise ModelError(f"network {sizes} x {self.n_networks} does not fit in memory ({n:,} weights): "
                             "choose smaller hidden_layer_sizes or fewer n_networks") from None

    def _validation_split(self, X, y):
        """``early_stopping``: a stratified, seeded hold-out of ``validation_fraction`` of the rows
        (plain random when a class is too small to stratify)."""
        from sklearn.model_selection import train_test_split

        seed = int(self._rng().integers(2**31))
        try:
            X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=self.validation_fraction,
                                                              stratify=y, random_state=seed)
        except ValueError:  # a class with a single row, or fewer validation rows than classes
            X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=self.validation_fraction,
                                                              random_state=seed)
        return X_train, y_train, X_val, y_val

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
        check_is_fitted(self, "networks_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        nets = [_float64(net) for net in self.networks_]
        proba = np.zeros((len(X), len(self.classes_)), np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            for lo in range(0, len(X), _PREDICT_CHUNK):
                rows = self._transform(X[lo:lo + _PREDICT_CHUNK], np.float64)
                for net in nets:  # an ensemble: the mean of its networks' probabilities
                    proba[lo:lo + _PREDICT_CHUNK] += net.forward(rows)
        proba /= len(nets)
        if not np.isfinite(proba).all():  # finite but huge weights overflow here
            raise ModelError("the model gives non-finite probabilities (training diverged to huge weights): "
                             f"lower the learning rate (now {self.learning_rate:g})")
        if nets[0].output.name != "softmax":
            # Independent sigmoid units do not sum to one: normalise (uniform if all are 0).
            total = proba.sum(axis=1, keepdims=True)
            np.divide(proba, total, out=proba, where=total > 0)
            proba[total[:, 0] <= 0] = 1.0 / proba.shape[1]
        return proba

    def predict(self, X):
        """Most probable class label for each row of X, shape (n_samples,)."""
        proba = self.predict_proba(X)  # first: it raises NotFittedError before classes_ is touched
        return self.classes_[np.argmax(proba, axis=1)]

    def predict_names(self, X):
        """The category name of the most probable class for each row of X, shape (n_samples,)
        (needs ``class_names_``)."""
        names = self._names_by_label()
        return np.array([names[_plain(label)] for label in self.predict(X)], dtype=object)

    def _names_by_label(self) -> dict:
        names = getattr(self, "class_names_", None)
        if names is None:
            raise AttributeError("this model has no class_names_: set it, or train it with a Pipeline")
        if isinstance(names, dict):
            return {_plain(k): v for k, v in names.items()}
        return {_plain(c): n for c, n in zip(self.classes_, names)}

    # --- model files (format: esc50ann.modelfile) --------------------------------------------

    def save(self, path):
        """Write the fitted model to ``path`` (one ``.npz``), atomically.  Returns the path."""
        check_is_fitted(self, "networks_")
        params = dict(self.get_params())
        params["hidden_layer_sizes"] = [int(h) for h in self.hidden_layer_sizes]
        params["dtype"] = str(self.dtype)
        if not isinstance(params["random_state"], (int, np.integer)):
            params["random_state"] = None  # a generator object cannot be stored
        names = self._names_by_label() if getattr(self, "class_names_", None) is not None else None
        return modelfile.save(path, modelfile.SavedModel(
            networks=self.networks_, classes=self.classes_, params=params, mean=self.mean_, scale=self.scale_,
            class_names=None if names is None else [names[_plain(c)] for c in self.classes_],
            feature_names_in=getattr(self, "feature_names_in_", np.array([])).tolist() or None,
            metadata=getattr(self, "metadata_", None), histories=self.histories_, best_epochs=self.best_epochs_))

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`; raise ``ModelError`` naming the file if it is unusable."""
        saved = modelfile.load(path)
        model = cls()
        params, known = dict(saved.params), set(model.get_params())
        # Exactly the constructor's params, as save() writes them: no silent defaults.
        for problem, keys in (("lack", known - set(params)), ("have unknown", set(params) - known)):
            if keys:
                raise ModelError(f"{path}: the model header's params {problem} "
                                 f"{', '.join(repr(k) for k in sorted(keys))}")
        if isinstance(params["hidden_layer_sizes"], list):  # JSON has no tuples
            params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
        try:
            model.set_params(**params)
            model._check_params()
        except ValueError as exc:
            raise ModelError(f"{path}: bad params in header ({one_line(exc)})") from None
        model.networks_, model.classes_ = saved.networks, saved.classes
        model.n_features_in_ = saved.networks[0].sizes[0]
        if saved.feature_names_in:
            model.feature_names_in_ = np.asarray(saved.feature_names_in, dtype=object)
        model.mean_, model.scale_ = saved.mean, saved.scale
        model.histories_ = saved.histories
        model.best_epochs_ = saved.best_epochs or [None] * len(saved.histories)
        model.history_, model.best_epoch_ = model.histories_[0], model.best_epochs_[0]
        model.n_iter_ = len(model.history_)
        if saved.class_names is not None:
            model.class_names_ = saved.class_names
        if saved.metadata is not None:
            model.metadata_ = saved.metadata
        return model


def default_params() -> dict:
    """Every ``ANNClassifier`` parameter with its default value (what an unset key means)."""
    return {name: p.default for name, p in inspect.signature(ANNClassifier.__init__).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _numbered(callback, numbers):
    """``callback`` given rows numbered by network of the whole ensemble (``numbers``: 0-based)."""
    return lambda row: callback({**row, "network": numbers[row.get("network", 1) - 1] + 1})


def _float64(net):
    """``net`` in float64 for scoring. BLAS picks kernels by matrix shape, so in float32 a row's
    probabilities change in the last digits with the batch it is scored in; in float64 they
    agree far below any decision (scikit-learn's subset-invariance check). Training keeps float32."""
    return net.astype(np.float64)


def _plain(label):
    """A class label as a plain Python value (numpy scalars are not JSON)."""
    return label.item() if isinstance(label, np.generic) else label
