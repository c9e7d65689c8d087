"""The mini-batch training loop for the networks of :mod:`esc50ann.mlp`: epochs, validation,
learning-rate schedule, early stopping, and the check that training ended where it was going.

    opt = make_optimizer("adam", learning_rate=1e-3)
    histories, best_epochs = train(net, X, Y, optimizer=opt, batch_size=32, max_epochs=50,
                                   rng=np.random.default_rng(0), X_val=Xv, Y_val=Yv, patience=10,
                                   schedule=LRSchedule("cosine", epochs=50))

``net`` is an ``MLP`` or an ``MLPStack`` of ``k`` networks trained together on the same
mini-batches (one history and one best epoch each). ``Y`` holds target rows (one-hot for
classification). The loop shuffles from ``rng`` every epoch, so a run repeats exactly for a
given seed. The training accuracy in the history is the running accuracy of the epoch's own
forward passes (each batch scored just before its update): free to compute, but a little
behind the end-of-epoch weights.
"""
from __future__ import annotations

import math
import time

import numpy as np

from esc50ann.errors import ModelError

__all__ = ["score", "train", "run_epoch", "EarlyStopping", "instability", "UNSTABLE_RATIO", "UNSTABLE_MARGIN"]

# A network whose training loss at its kept epoch is more than UNSTABLE_RATIO times the lowest it
# reached before, and more than UNSTABLE_MARGIN above it, ended on a spike of the loss: its
# weights are not where training was going (the full ESC-50 folds at a constant learning rate:
# 0.013, then 0.62 at the last epoch). The margin keeps a loss wobbling near zero -- 0.004 after
# 0.0015 -- from counting: that costs nothing.
UNSTABLE_RATIO = 2.0
UNSTABLE_MARGIN = 0.02


def score(net, X, Y, batch_size=2048):
    """Mean loss and accuracy (argmax of output vs argmax of target) of every network of ``net``
    on ``(X, Y)``: two arrays of shape (n_networks,).

    Rows go through in chunks of ``batch_size`` so memory stays bounded on large sets.
    """
    k = net.n_networks
    total, correct = np.zeros(k), np.zeros(k, np.int64)
    for lo in range(0, len(X), batch_size):
        xb, yb = X[lo:lo + batch_size], Y[lo:lo + batch_size]
        s = net.forward(xb).reshape(k, len(xb), -1)  # an MLP's (n, n_out) as a stack of one
        yb = np.asarray(yb, dtype=s.dtype)
        total += np.array([net.cost.fn(sj, yb, net.output) for sj in s]) * len(xb)
        correct += np.count_nonzero(s.argmax(axis=-1) == yb.argmax(axis=1), axis=1)
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


def run_epoch(net, batches, optimizer, order, epoch, *, schedule=None, step=0, clip_norm=None):
    """One pass over the rows in ``order``: backprop and an update per batch.

    ``step`` counts the updates before this epoch, for ``schedule`` (an ``LRSchedule``), which
    sets ``optimizer.lr_factor`` before every update. With ``clip_norm``, each network's gradient
    is rescaled to at most that norm before its update. Returns every network's mean training loss
    and running accuracy over the epoch (arrays of shape (n_networks,)); raises the divergence
    ``ModelError`` as soon as a batch loss is not finite.
    """
    k = net.n_networks
    steps = math.ceil(len(order) / batches.size)
    loss_sum, correct = np.zeros(k), np.zeros(k, np.int64)
    for i, (idx, xb, yb) in enumerate(batches(order)):
        if schedule is not None:
            optimizer.lr_factor = schedule.factor(step + i, steps)
        loss, s = net.backprop(xb, yb)
        loss = np.atleast_1d(loss)
        if not np.isfinite(loss).all():
            raise _diverged(epoch, loss[~np.isfinite(loss)][0], optimizer)
        loss_sum += loss * len(idx)
        s = s.reshape(k, len(idx), -1)
        correct += np.count_nonzero(s.argmax(axis=-1) == batches.labels[idx], axis=1)
        if clip_norm is not None:
            net.clip_gradients(clip_norm)
        optimizer.step(net)
    return loss_sum / len(order), correct / len(order)


class EarlyStopping:
    """Per network: stop once its validation loss has not improved for ``patience`` epochs, and
    keep its best weights. Training stops when every network has stopped."""

    def __init__(self, patience, n_networks=1):
        self.patience = patience
        self.best_loss = np.full(n_networks, math.inf)
        self.best_epoch = np.zeros(n_networks, int)
        self.stale = np.zeros(n_networks, int)
        self.best_params = [None] * n_networks

    def update(self, net, epoch, val_losses) -> bool:
        """Record epoch ``epoch``'s validation losses (one per network); True when training should stop."""
        for j, loss in enumerate(np.atleast_1d(val_losses)):
            if loss < self.best_loss[j]:
                self.best_loss[j], self.best_epoch[j], self.stale[j] = loss, epoch, 0
                self.best_params[j] = net.get_state(j)
            else:
                self.stale[j] += 1
        return bool((self.stale >= self.patience).all())

    def restore(self, net, last_epoch) -> list[int]:
        """Put every network's best epoch's weights back (where it was not the last); return those epochs."""
        for j, (epoch, params) in enumerate(zip(self.best_epoch, self.best_params)):
            if params is not None and epoch != last_epoch:
                net.set_state(params, j)
        return [int(e) for e in self.best_epoch]


class _Average:
    """The running mean of ``params`` (arrays, updated in place by training) over the epochs from
    ``first`` on; ``put`` writes it into them."""

    def __init__(self, params, first):
        self.params, self.first, self.count = params, max(1, first), 0
        self.sums = [np.zeros_like(p) for p in params]

    def add(self, epoch):
        if epoch >= self.first:
            for total, p in zip(self.sums, self.params):
                total += p
            self.count += 1

    def put(self):
        for total, p in zip(self.sums, self.params):
            np.divide(total, self.count, out=p)


def instability(history, kept_epoch=None) -> dict:
    """How far the training loss at the kept epoch is above the lowest it reached up to then.

    A rise that the weight penalty's fall pays for is not a spike: with weight decay training
    minimises the loss plus the penalty, and the loss alone may climb as the weights shrink (the
    development folds with pitch-shifted copies: the loss 0.019 at epoch 22 of 60 and 0.030 at the
    end, the penalty 0.54 and 0.24). A spike raises both.

    Parameters
    ----------
    history : list of dict
        One network's history rows (``loss`` and ``penalty`` per epoch; rows without a
        ``penalty``, from older runs, count it as 0).
    kept_epoch : int, optional
        The epoch whose weights the network holds (default: the last).

    Returns
    -------
    dict
        ``final_loss`` (at the kept epoch), ``min_loss``, ``min_epoch``, ``kept_epoch``, ``ratio``
        (final / min), ``objective_ratio`` (the same of the loss plus the penalty) and
        ``unstable``: final > ``UNSTABLE_RATIO`` x min, more than ``UNSTABLE_MARGIN`` above it,
        and the loss plus the penalty above its value at the loss's minimum (the network ended on
        a spike of its loss).
    """
    kept = int(kept_epoch or len(history))
    losses = np.array([row["loss"] for row in history[:kept]])
    objectives = losses + [row.get("penalty", 0.0) for row in history[:kept]]
    low = int(np.argmin(losses))
    final, least = float(losses[-1]), float(losses[low])
    return {"kept_epoch": kept, "final_loss": final, "min_loss": least, "min_epoch": low + 1,
            "ratio": _ratio(final, least), "objective_ratio": _ratio(objectives[-1], objectives.min()),
            "unstable": bool(final > UNSTABLE_RATIO * least and final - least > UNSTABLE_MARGIN
                             and objectives[-1] > objectives[low])}


def _ratio(final, least):
    return float(final / least) if least > 0 else (1.0 if final == 0 else math.inf)


def train(net, X, Y, *, optimizer, batch_size=32, max_epochs=100, rng=None, mixup=0.0, schedule=None,
          clip_norm=None, average_epochs=0, X_val=None, Y_val=None, patience=None, callback=None, epoch_end=None,
          verbose=False):
    """Train ``net`` in place with mini-batches; return ``(histories, best_epochs)``.

    Parameters
    ----------
    net : esc50ann.mlp.MLP or esc50ann.mlp.MLPStack
        One network, or ``k`` trained together (on the same mini-batches, in one loop).
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
    schedule : esc50ann.optim.LRSchedule, optional
        The learning rate of every update, as a factor of the optimizer's (None: constant).
    clip_norm : float or None
        Rescale each network's gradient to at most this norm before every update.
    average_epochs : int
        Return the mean of the weights at the end of the last ``average_epochs`` epochs (all of
        them if fewer ran) instead of the last epoch's: weight averaging. Not with ``patience``.
    X_val, Y_val : arrays or None
        Scored after every epoch.  With ``patience`` set, a network stops improving once its
        validation loss has not fallen for ``patience`` epochs, training stops when every network
        has, and each network's best epoch's weights are restored.  Without a validation set, or
        with ``patience=None`` (validation then only monitored), all ``max_epochs`` run and the
        last weights are kept.
    callback : callable or None
        Called after every epoch with each network's history row, in network order (e.g. to
        drive a progress bar).
    epoch_end : callable or None
        Called as ``epoch_end(net, epoch)`` after every epoch (e.g. to keep snapshots of the weights).
    verbose : bool
        Print one line per epoch and network.

    Returns
    -------
    histories : list of list of dict
        Per network, one row per epoch: ``epoch`` (1-based), ``loss`` (mean training loss over
        the epoch's batches), ``penalty`` (the weight decay's ``(weight_decay / 2) * ||W||^2`` at
        the epoch's end: the loss plus it is what training minimises), ``accuracy`` (running training accuracy, see the module
        docstring), ``val_loss`` and ``val_accuracy`` (None without a validation set), ``lr``
        (the learning rate of the epoch's last update), ``seconds`` (the epoch's wall time, for
        all networks together) and, for a stack of more than one, ``network`` (1-based).
    best_epochs : list of int
        Per network, the epoch whose weights it holds on return.

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
    k = net.n_networks
    stopper = EarlyStopping(patience, k) if has_val and patience is not None else None
    if stopper is not None and average_epochs:
        raise ValueError("weight averaging keeps the last epochs, early stopping the best: not both")
    averager = _Average(net.params, first=int(max_epochs) - int(average_epochs) + 1) if average_epochs else None
    steps = math.ceil(len(batches.X) / batches.size)

    histories = [[] for _ in range(k)]
    # Overflow on the way to a NaN loss is reported once, as a ModelError, not as warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        for epoch in range(1, int(max_epochs) + 1):
            start = time.perf_counter()
            losses, accuracies = run_epoch(net, batches, optimizer, rng.permutation(len(batches.X)), epoch,
                                           schedule=schedule, step=(epoch - 1) * steps, clip_norm=clip_norm)
            if averager is not None:
                averager.add(epoch)
            if epoch_end is not None:
                epoch_end(net, epoch)
            val_losses = val_accuracies = [None] * k
            if has_val:
                val_losses, val_accuracies = score(net, X_val, Y_val)
                if not np.isfinite(val_losses).all():
                    raise _diverged(epoch, val_losses[~np.isfinite(val_losses)][0], optimizer, "val_loss")
            penalties = optimizer.weight_decay / 2 * net.squared_weights()
            seconds = time.perf_counter() - start
            for j in range(k):
                row = {"epoch": epoch, "loss": float(losses[j]), "penalty": float(penalties[j]),
                       "accuracy": float(accuracies[j]),
                       "val_loss": None if val_losses[j] is None else float(val_losses[j]),
                       "val_accuracy": None if val_accuracies[j] is None else float(val_accuracies[j]),
                       "lr": optimizer.learning_rate * optimizer.lr_factor, "seconds": seconds}
                if k > 1:
                    row["network"] = j + 1
                histories[j].append(row)
                if verbose:
                    _print_row(row)
                if callback is not None:
                    callback(row)
            if stopper is not None and stopper.update(net, epoch, val_losses):
                break
    last = len(histories[0])
    best_epochs = stopper.restore(net, last) if stopper is not None else [last] * k
    if averager is not None:
        averager.put()
    # The loss is checked before each update, so the last update can still overflow: check
    # the weights the caller gets, or a "trained" network of inf/NaN would be saved and scored.
    if not all(np.isfinite(p).all() for p in net.params):
        raise ModelError(f"training diverged at epoch {last} (weights not finite after the last "
                         f"update): lower the learning rate (now {optimizer.learning_rate:g})")
    return histories, best_epochs


def _print_row(row):
    extra = (f", val_loss = {row['val_loss']:.6f}, val_accuracy = {row['val_accuracy']:.4f}"
             if row["val_loss"] is not None else "")
    network = f"network {row['network']} " if "network" in row else ""
    print(f"{network}epoch {row['epoch']}: loss = {row['loss']:.6f}, accuracy = {row['accuracy']:.4f}{extra}", flush=True)
