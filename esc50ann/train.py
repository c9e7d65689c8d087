"""The mini-batch training loop for :class:`esc50ann.mlp.MLP`: epochs, validation, early stopping.

    opt = make_optimizer("adam", learning_rate=1e-3)
    history, best_epoch = train(net, X, Y, optimizer=opt, batch_size=32, max_epochs=50,
                                rng=np.random.default_rng(0), X_val=Xv, Y_val=Yv, patience=10)

``Y`` holds target rows (one-hot for classification).  The loop shuffles from ``rng`` every epoch,
so a run repeats exactly for a given seed.  The training accuracy in the history is the running
accuracy of the epoch's own forward passes (each batch scored just before its update): free to
compute, but a little behind the end-of-epoch weights.
"""
from __future__ import annotations

import math
import time

import numpy as np

from esc50ann.errors import ModelError

__all__ = ["score", "train", "run_epoch", "EarlyStopping"]


def score(net, X, Y, batch_size=2048):
    """Mean loss and accuracy (argmax of output vs argmax of target) of ``net`` on ``(X, Y)``.

    Rows go through in chunks of ``batch_size`` so memory stays bounded on large sets.
    """
    total, correct = 0.0, 0
    for lo in range(0, len(X), batch_size):
        xb, yb = X[lo:lo + batch_size], Y[lo:lo + batch_size]
        s = net.forward(xb)
        total += net.cost_of(s, yb) * len(xb)
        correct += int(np.count_nonzero(s.argmax(axis=1) == yb.argmax(axis=1)))
    return total / len(X), correct / len(X)


def _diverged(epoch, loss, optimizer, where="loss"):
    return ModelError(f"training diverged at epoch {epoch} ({where}={loss}): "
                      f"lower the learning rate (now {optimizer.learning_rate:g})")


class _Batches:
    """Shuffled mini-batches of ``(X, Y)``, gathered into reused buffers (no fresh arrays per step).

    With ``mixup > 0`` every row of a batch is mixed with another row of the same batch
    (Zhang et al. 2018; between-class learning, Tokozume et al. 2018, mixes waveforms the same
    way): ``x = lam x_i + (1 - lam) x_j`` and ``y = lam y_i + (1 - lam) y_j`` with
    ``lam ~ Beta(mixup, mixup)`` per row, so the targets become probability vectors.
    """

    def __init__(self, X, Y, batch_size, mixup=0.0, rng=None):
        self.X, self.Y = X, Y
        self.size = max(1, min(int(batch_size), len(X)))
        self.labels = Y.argmax(axis=1)
        self.mixup, self.rng = float(mixup), rng
        self._x = np.empty((self.size,) + X.shape[1:], X.dtype)
        self._y = np.empty((self.size, Y.shape[1]), Y.dtype)

    def __call__(self, order):
        for lo in range(0, len(order), self.size):
            idx = order[lo:lo + self.size]
            xb, yb = self._x[:len(idx)], self._y[:len(idx)]
            np.take(self.X, idx, axis=0, out=xb)
            np.take(self.Y, idx, axis=0, out=yb)
            if self.mixup > 0 and len(idx) > 1:
                self._mix(xb, yb)
            yield idx, xb, yb

    def _mix(self, xb, yb):
        n = len(xb)
        lam = self.rng.beta(self.mixup, self.mixup, size=(n, 1)).astype(xb.dtype)
        partner = self.rng.permutation(n)
        for buf in (xb, yb):  # buf <- lam * buf + (1 - lam) * buf[partner], in place
            other = buf[partner]
            other -= buf
            other *= 1.0 - lam
            buf += other


def run_epoch(net, batches, optimizer, order, epoch):
    """One pass over the rows in ``order``: backprop and an update per batch.

    Returns the epoch's mean training loss and running accuracy; raises the divergence
    ``ModelError`` as soon as a batch loss is not finite.
    """
    loss_sum, correct = 0.0, 0
    for idx, xb, yb in batches(order):
        loss, s = net.backprop(xb, yb)
        if not math.isfinite(loss):
            raise _diverged(epoch, loss, optimizer)
        loss_sum += loss * len(idx)
        correct += int(np.count_nonzero(s.argmax(axis=1) == batches.labels[idx]))
        optimizer.step(net)
    return loss_sum / len(order), correct / len(order)


class EarlyStopping:
    """Stop once the validation loss has not improved for ``patience`` epochs; keep the best weights."""

    def __init__(self, patience):
        self.patience = patience
        self.best_loss, self.best_epoch, self.best_params, self.stale = math.inf, 0, None, 0

    def update(self, net, epoch, val_loss) -> bool:
        """Record epoch ``epoch``'s validation loss; True when training should stop."""
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.stale = val_loss, epoch, 0
            self.best_params = net.get_state()
            return False
        self.stale += 1
        return self.stale >= self.patience

    def restore(self, net, last_epoch) -> int:
        """Put the best epoch's weights back into ``net`` (if it was not the last); return that epoch."""
        if self.best_params is not None and self.best_epoch != last_epoch:
            net.set_state(self.best_params)
        return self.best_epoch


def train(net, X, Y, *, optimizer, batch_size=32, max_epochs=100, rng=None, mixup=0.0,
          X_val=None, Y_val=None, patience=None, callback=None, verbose=False):
    """Train ``net`` in place with mini-batches; return ``(history, best_epoch)``.

    Parameters
    ----------
    net : esc50ann.mlp.MLP
    X : array of shape (n, n_in), in ``net.dtype`` (otherwise converted once)
    Y : array of shape (n, n_out), target rows
    optimizer : an optimizer of ``esc50ann.optim``
    batch_size : int
        Rows per update; 1 reproduces per-sample SGD, ``n`` full-batch gradient descent.
    max_epochs : int
    rng : numpy.random.Generator or int or None
        Shuffles the rows every epoch (and draws the mixing, with ``mixup``).
    mixup : float
        0: off. Otherwise the ``alpha`` of ``Beta(alpha, alpha)``: each training row is mixed
        with another row of its batch, inputs and targets alike (see ``_Batches``).
    X_val, Y_val : arrays or None
        Scored after every epoch.  With ``patience`` set, training stops once the validation
        loss has not improved for ``patience`` epochs, and the best epoch's weights are restored.
        Without a validation set, or with ``patience=None`` (validation then only monitored),
        all ``max_epochs`` run and the last weights are kept.
    callback : callable or None
        Called after every epoch with that epoch's history row (e.g. to drive a progress bar).
    verbose : bool
        Print one line per epoch.

    Returns
    -------
    history : list of dict
        One row per epoch: ``epoch`` (1-based), ``loss`` (mean training loss over the epoch's
        batches), ``accuracy`` (running training accuracy, see the module docstring),
        ``val_loss`` and ``val_accuracy`` (None without a validation set), ``seconds``.
    best_epoch : int
        The epoch whose weights the network holds on return.

    Raises
    ------
    ModelError
        The loss became NaN or infinite (checked after every batch).
    """
    rng = np.random.default_rng(rng)
    batches = _Batches(np.asarray(X, dtype=net.dtype), np.asarray(Y, dtype=net.dtype), batch_size, mixup, rng)
    has_val = X_val is not None
    if has_val:
        X_val = np.asarray(X_val, dtype=net.dtype)
        Y_val = np.asarray(Y_val, dtype=net.dtype)
    stopper = EarlyStopping(patience) if has_val and patience is not None else None

    history = []
    # Overflow on the way to a NaN loss is reported once, as a ModelError, not as warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        for epoch in range(1, int(max_epochs) + 1):
            start = time.perf_counter()
            loss, accuracy = run_epoch(net, batches, optimizer, rng.permutation(len(batches.X)), epoch)
            row = {"epoch": epoch, "loss": loss, "accuracy": accuracy, "val_loss": None, "val_accuracy": None}
            if has_val:
                row["val_loss"], row["val_accuracy"] = score(net, X_val, Y_val)
                if not math.isfinite(row["val_loss"]):
                    raise _diverged(epoch, row["val_loss"], optimizer, "val_loss")
            row["seconds"] = time.perf_counter() - start
            history.append(row)
            if verbose:
                _print_row(row)
            if callback is not None:
                callback(row)
            if stopper is not None and stopper.update(net, epoch, row["val_loss"]):
                break
    best_epoch = stopper.restore(net, len(history)) if stopper is not None else len(history)
    # The loss is checked before each update, so the last update can still overflow: check
    # the weights the caller gets, or a "trained" network of inf/NaN would be saved and scored.
    if not all(np.isfinite(p).all() for p in net.params):
        raise ModelError(f"training diverged at epoch {len(history)} (weights not finite after the last "
                         f"update): lower the learning rate (now {optimizer.learning_rate:g})")
    return history, best_epoch


def _print_row(row):
    extra = (f", val_loss = {row['val_loss']:.6f}, val_accuracy = {row['val_accuracy']:.4f}"
             if row["val_loss"] is not None else "")
    print(f"epoch {row['epoch']}: loss = {row['loss']:.6f}, accuracy = {row['accuracy']:.4f}{extra}", flush=True)
