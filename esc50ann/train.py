"""Optimizers and the mini-batch training loop for :class:`esc50ann.mlp.MLP`.

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

from esc50ann.errors import ConfigError, ModelError

__all__ = ["SGD", "Momentum", "Adam", "OPTIMIZERS", "make_optimizer", "evaluate", "train"]

# The updates are elementwise and memory-bound.  They walk the parameters in slices of this
# many values, so the several passes of momentum/Adam over a slice hit the cache instead of main
# memory (about 1.3x faster than whole-array passes for a 5000x1024 W on the development machine;
# splitting the slices over two threads gave nothing more there, so the update stays serial).
_CHUNK = 1 << 18


def _unfrozen(net, buffers):
    """The optimizer-state buffers (one per parameter, flat) of the parameters not frozen."""
    return (b for name, b in zip(net.names, buffers) if name not in net.frozen)


def _is_weight(name):
    return name.startswith("W")  # weight decay applies to weights, not to biases or b0


class SGD:
    """Plain stochastic gradient descent: ``w <- w - lr * (dL/dw + weight_decay * w)``.

    ``weight_decay`` is an L2 penalty ``(weight_decay / 2) * ||W||^2`` on the weight matrices.
    ``step`` uses ``net.grads`` as scratch: they are consumed by the update.  Subclasses define
    ``_kernel(p, g, *state, decay, tmp)``, the update of one flat slice.
    """

    n_state = 0  # optimizer buffers per parameter (velocity; m and v)

    def __init__(self, learning_rate, weight_decay=0.0):
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)
        self.t = 0
        self.state = self._tmp = None  # per-parameter buffers; scratch for one slice

    def step(self, net):
        """Update every parameter of ``net`` not in ``net.frozen`` from ``net.grads``."""
        self.t += 1
        if self.state is None:
            self.state = [[np.zeros(p.size, p.dtype) for p in net.params] for _ in range(self.n_state)]
            self._tmp = np.empty(min(_CHUNK, max(p.size for p in net.params)), net.dtype)
        self._begin_step()
        for i, (name, p, g) in enumerate(zip(net.names, net.params, net.grads)):
            if name in net.frozen:
                continue
            decay = self.weight_decay if _is_weight(name) else 0.0
            arrays = [p.reshape(-1), g.reshape(-1)] + [buf[i] for buf in self.state]
            for lo in range(0, p.size, _CHUNK):
                parts = [a[lo:lo + _CHUNK] for a in arrays]
                self._kernel(*parts, decay=decay, tmp=self._tmp[:len(parts[0])])

    def _begin_step(self):
        pass

    def _kernel(self, p, g, *, decay, tmp):
        lr = self.learning_rate
        if decay:
            p *= 1.0 - lr * decay
        g *= lr
        p -= g


class Momentum(SGD):
    """Classical momentum: ``v <- momentum * v - lr * g;  w <- w + v``."""

    n_state = 1

    def __init__(self, learning_rate, momentum=0.9, weight_decay=0.0):
        super().__init__(learning_rate, weight_decay)
        self.momentum = float(momentum)

    def _kernel(self, p, g, v, *, decay, tmp):
        if decay:
            np.multiply(p, decay, out=tmp)
            g += tmp
        g *= self.learning_rate
        v *= self.momentum
        v -= g
        p += v


class Adam(SGD):
    """Adam (Kingma & Ba 2015) with the step-size form of bias correction (as in scikit-learn):
    ``w <- w - lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``.
    Weight decay is added to the gradient (L2, not decoupled AdamW)."""

    n_state = 2

    def __init__(self, learning_rate=1e-3, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(learning_rate, weight_decay)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def _begin_step(self):
        t = self.t
        self.lr_t = self.learning_rate * math.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)

    def _kernel(self, p, g, m, v, *, decay, tmp):
        b1, b2 = self.beta1, self.beta2
        if decay:
            np.multiply(p, decay, out=tmp)
            g += tmp
        m *= b1                        # m <- b1 m + (1 - b1) g
        np.multiply(g, 1.0 - b1, out=tmp)
        m += tmp
        v *= b2                        # v <- b2 v + (1 - b2) g^2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - b2
        v += tmp
        np.sqrt(v, out=tmp)            # w <- w - lr_t m / (sqrt(v) + eps)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= self.lr_t
        p -= tmp


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def make_optimizer(solver, learning_rate, momentum=0.9, weight_decay=0.0):
    """The optimizer named ``solver`` ("sgd", "momentum" or "adam")."""
    if solver == "sgd":
        return SGD(learning_rate, weight_decay)
    if solver == "momentum":
        return Momentum(learning_rate, momentum, weight_decay)
    if solver == "adam":
        return Adam(learning_rate, weight_decay)
    raise ConfigError(f"solver must be one of {sorted(OPTIMIZERS)} (got {solver!r})")


def evaluate(net, X, Y, batch_size=2048):
    """Mean loss and accuracy (argmax of output vs argmax of target) of ``net`` on ``(X, Y)``.

    Rows go through in chunks of ``batch_size`` so memory stays bounded on large sets.
    """
    total, correct = 0.0, 0
    for lo in range(0, len(X), batch_size):
        xb, yb = X[lo:lo + batch_size], Y[lo:lo + batch_size]
        s = net.forward(xb)
        total += net._cost(s, np.asarray(yb, dtype=net.dtype)) * len(xb)
        correct += int(np.count_nonzero(s.argmax(axis=1) == yb.argmax(axis=1)))
    return total / len(X), correct / len(X)


def _diverged(epoch, loss, optimizer, where="loss"):
    return ModelError(f"training diverged at epoch {epoch} ({where}={loss}): "
                      f"lower the learning rate (now {optimizer.learning_rate:g})")


def train(net, X, Y, *, optimizer, batch_size=32, max_epochs=100, rng=None,
          X_val=None, Y_val=None, patience=None, callback=None, verbose=False):
    """Train ``net`` in place with mini-batches; return ``(history, best_epoch)``.

    Parameters
    ----------
    net : esc50ann.mlp.MLP
    X : array of shape (n, n_in), in ``net.dtype`` (otherwise converted once)
    Y : array of shape (n, n_out), target rows
    optimizer : SGD, Momentum or Adam
    batch_size : int
        Rows per update; 1 reproduces per-sample SGD, ``n`` full-batch gradient descent.
    max_epochs : int
    rng : numpy.random.Generator or int or None
        Shuffles the rows every epoch.
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
    X = np.asarray(X, dtype=net.dtype)
    Y = np.asarray(Y, dtype=net.dtype)
    n = len(X)
    batch_size = max(1, min(int(batch_size), n))
    has_val = X_val is not None
    if has_val:
        X_val = np.asarray(X_val, dtype=net.dtype)
        Y_val = np.asarray(Y_val, dtype=net.dtype)
    labels = Y.argmax(axis=1)
    # Shuffled batches are gathered into these, not into fresh arrays every step.
    xbuf = np.empty((batch_size,) + X.shape[1:], net.dtype)
    ybuf = np.empty((batch_size, Y.shape[1]), net.dtype)

    history, best, best_epoch, best_params, stale = [], math.inf, 0, None, 0
    # Overflow on the way to a NaN loss is reported once, as a ModelError, not as warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        for epoch in range(1, int(max_epochs) + 1):
            start = time.perf_counter()
            order = rng.permutation(n)
            loss_sum, correct = 0.0, 0
            for lo in range(0, n, batch_size):
                idx = order[lo:lo + batch_size]
                xb, yb = xbuf[:len(idx)], ybuf[:len(idx)]
                np.take(X, idx, axis=0, out=xb)
                np.take(Y, idx, axis=0, out=yb)
                loss, s = net.backprop(xb, yb)
                if not math.isfinite(loss):
                    raise _diverged(epoch, loss, optimizer)
                loss_sum += loss * len(idx)
                correct += int(np.count_nonzero(s.argmax(axis=1) == labels[idx]))
                optimizer.step(net)
            row = {"epoch": epoch, "loss": loss_sum / n, "accuracy": correct / n,
                   "val_loss": None, "val_accuracy": None}
            if has_val:
                val_loss, val_acc = evaluate(net, X_val, Y_val)
                if not math.isfinite(val_loss):
                    raise _diverged(epoch, val_loss, optimizer, "val_loss")
                row["val_loss"], row["val_accuracy"] = val_loss, val_acc
            row["seconds"] = time.perf_counter() - start
            history.append(row)
            if verbose:
                extra = (f", val_loss = {row['val_loss']:.6f}, val_accuracy = {row['val_accuracy']:.4f}"
                         if has_val else "")
                print(f"epoch {epoch}: loss = {row['loss']:.6f}, accuracy = {row['accuracy']:.4f}{extra}",
                      flush=True)
            if callback is not None:
                callback(row)

            if has_val and patience is not None:
                if row["val_loss"] < best:
                    best, best_epoch, stale = row["val_loss"], epoch, 0
                    best_params = net.get_state()
                else:
                    stale += 1
                    if stale >= patience:
                        break
            else:
                best_epoch = epoch

        if best_params is not None and best_epoch != len(history):
            net.set_state(best_params)
        return history, best_epoch
