"""Optimizers for the networks of :mod:`esc50ann.mlp` -- plain SGD (the write-ups' rule), momentum
and Adam -- and the learning-rate schedules that drive them.

Each optimizer takes the gradients the network left in ``net.grads`` and updates ``net.params``
in place::

    opt = OPTIMIZERS["adam"](learning_rate=1e-3, weight_decay=1e-4)
    net.backprop(X, Y); opt.step(net)

``weight_decay`` is an L2 penalty ``(weight_decay / 2) * ||W||^2`` on the weight matrices only
(never on the biases or the input bias ``b0``). A schedule (``LRSchedule``) gives the factor the
training loop sets as ``opt.lr_factor`` before every step: the step uses
``learning_rate * lr_factor``.
"""
from __future__ import annotations

import math

import numpy as np

from esc50ann.errors import ConfigError

__all__ = ["SGD", "Momentum", "Adam", "OPTIMIZERS", "make_optimizer", "LRSchedule", "SCHEDULES"]

# The updates are elementwise and memory-bound.  They walk the parameters in slices of this
# many values, so the several passes of momentum/Adam over a slice hit the cache instead of main
# memory: the parameter, its gradient, two moments and a scratch slice (640 KB) stay in a 2 MB
# L2 cache. Adam over the default ensemble's 10.7 M weights, one thread: 52 ms a step with
# slices of 2^15 values, 71 ms with 2^18, 89 ms with 2^20 (the development machine, shared).
_CHUNK = 1 << 15


def _is_weight(name):
    return name.startswith("W")  # weight decay applies to weights, not to biases or b0


class SGD:
    """Plain stochastic gradient descent: ``w <- w - lr * (dL/dw + weight_decay * w)``.

    ``step`` uses ``net.grads`` as scratch: they are consumed by the update.  Subclasses define
    ``_kernel(p, g, *state, decay, tmp)``, the update of one flat slice, and ``n_state``, the
    number of buffers per parameter they keep (velocity; first and second moments).
    """

    n_state = 0

    def __init__(self, learning_rate, weight_decay=0.0):
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)
        self.lr_factor = 1.0  # set by the training loop from its schedule, before every step
        self.t = 0
        self.state = self._tmp = None  # per-parameter buffers; scratch for one slice

    def step(self, net):
        """Update every parameter of ``net`` from ``net.grads``."""
        self.t += 1
        if self.state is None:
            self.state = [[np.zeros(p.size, p.dtype) for p in net.params] for _ in range(self.n_state)]
            self._tmp = np.empty(min(_CHUNK, max(p.size for p in net.params)), net.dtype)
        self.lr = self.learning_rate * self.lr_factor
        self._begin_step()
        for i, (name, p, g) in enumerate(zip(net.names, net.params, net.grads)):
            decay = self.weight_decay if _is_weight(name) else 0.0
            arrays = [p.reshape(-1), g.reshape(-1)] + [buf[i] for buf in self.state]
            for lo in range(0, p.size, _CHUNK):
                parts = [a[lo:lo + _CHUNK] for a in arrays]
                self._kernel(*parts, decay=decay, tmp=self._tmp[:len(parts[0])])

    def _begin_step(self):
        pass

    def _kernel(self, p, g, *, decay, tmp):
        lr = self.lr
        if decay:
            p *= 1.0 - lr * decay
        g *= lr
        p -= g


class Momentum(SGD):
    """Classical momentum: ``v <- momentum * v - lr * g;  w <- w + v``."""

    n_state = 1

    def __init__(self, learning_rate, weight_decay=0.0, momentum=0.9):
        super().__init__(learning_rate, weight_decay)
        self.momentum = float(momentum)

    def _kernel(self, p, g, v, *, decay, tmp):
        if decay:
            np.multiply(p, decay, out=tmp)
            g += tmp
        g *= self.lr
        v *= self.momentum
        v -= g
        p += v


class Adam(SGD):
    """Adam (Kingma & Ba 2015) with the step-size form of bias correction (as in scikit-learn):
    ``w <- w - lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``.
    Weight decay is added to the gradient (L2, not decoupled AdamW).

    The moments are kept without their ``(1 - b)`` factors, ``M = m / (1 - b1)`` and
    ``V = v / (1 - b2)`` (``M <- b1 M + g``: one pass over memory fewer for each), and the
    constants go into the step: ``m / (sqrt(v) + eps) = (1 - b1) / sqrt(1 - b2) * M / (sqrt(V) +
    eps / sqrt(1 - b2))``. The update is the same; it is memory-bound, so passes are what it costs.
    """

    n_state = 2

    def __init__(self, learning_rate=1e-3, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(learning_rate, weight_decay)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def _begin_step(self):
        t, b1, b2 = self.t, self.beta1, self.beta2
        self.lr_t = (self.lr * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)) * (1.0 - b1) / math.sqrt(1.0 - b2)
        self.eps_t = self.eps / math.sqrt(1.0 - b2)

    def _kernel(self, p, g, m, v, *, decay, tmp):
        if decay:
            np.multiply(p, decay, out=tmp)
            g += tmp
        m *= self.beta1                # M <- b1 M + g
        m += g
        np.square(g, out=g)            # V <- b2 V + g^2  (g is scratch)
        v *= self.beta2
        v += g
        np.sqrt(v, out=tmp)            # w <- w - lr_t M / (sqrt(V) + eps_t)
        tmp += self.eps_t
        np.divide(m, tmp, out=tmp)
        tmp *= self.lr_t
        p -= tmp


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def make_optimizer(solver, learning_rate, *, weight_decay=0.0, momentum=0.9, epsilon=1e-8):
    """``OPTIMIZERS[solver]`` with these settings (``momentum`` only reaches ``"momentum"``,
    ``epsilon`` only ``"adam"``)."""
    if solver not in OPTIMIZERS:
        raise ConfigError(f"solver must be one of {sorted(OPTIMIZERS)} (got {solver!r})")
    extra = {"momentum": momentum} if solver == "momentum" else {"eps": epsilon} if solver == "adam" else {}
    return OPTIMIZERS[solver](learning_rate, weight_decay, **extra)


SCHEDULES = ("constant", "cosine", "linear", "step")


class LRSchedule:
    """The learning rate over training, as a factor of the base rate.

    Parameters
    ----------
    kind : {"constant", "cosine", "linear", "step"}
        After the warm-up: the base rate throughout; a half cosine from the base rate down to
        ``floor``; a straight line down to ``floor``; or the base rate multiplied by
        ``step_factor`` every ``step_every`` epochs (never below ``floor``).
    epochs : int
        The length of training the decay spans (``max_epochs``).
    warmup_epochs : int
        A linear ramp from ``1 / (warmup_epochs * steps_per_epoch)`` up to the base rate over the
        first ``warmup_epochs`` epochs; the decay spans the epochs after it.
    floor : float
        Where ``cosine`` and ``linear`` end, and the least ``step`` reaches: a fraction of the base rate.
    step_every : int
    step_factor : float
    cycles : int
        Run the decay this many times over the epochs after the warm-up, each time from the base
        rate (warm restarts, Loshchilov & Hutter 2017): the cycles end at ``cycle_ends``, where a
        snapshot ensemble keeps its members.

    ``factor(step, steps_per_epoch)`` is the factor of update ``step`` (0-based, counted over the
    whole training). Decays are evaluated per update, at the epochs done before it, so a cosine
    over 30 epochs ends a hair above its floor, not at it.
    """

    def __init__(self, kind="constant", *, epochs, warmup_epochs=0, floor=0.0, step_every=10, step_factor=0.1,
                 cycles=1):
        if kind not in SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {', '.join(SCHEDULES)} (got {kind!r})")
        self.kind, self.epochs, self.warmup_epochs = kind, int(epochs), int(warmup_epochs)
        self.floor, self.step_every, self.step_factor = float(floor), int(step_every), float(step_factor)
        self.cycles = int(cycles)

    def __repr__(self):
        return (f"LRSchedule({self.kind!r}, epochs={self.epochs}, warmup_epochs={self.warmup_epochs}, "
                f"floor={self.floor:g}, cycles={self.cycles})")

    @property
    def cycle_ends(self) -> list[int]:
        """The epoch (1-based) at whose end each cycle ends."""
        length = (self.epochs - self.warmup_epochs) / self.cycles
        return [self.warmup_epochs + round(length * (j + 1)) for j in range(self.cycles)]

    def factor(self, step: int, steps_per_epoch: int) -> float:
        """The learning-rate factor of update ``step`` when an epoch has ``steps_per_epoch`` updates."""
        done = step / steps_per_epoch  # epochs done before this update
        warmup = self.warmup_epochs
        if done < warmup:
            return (step + 1) / (warmup * steps_per_epoch)
        if self.kind == "constant":
            return 1.0
        length = max(self.epochs - warmup, 1) / self.cycles  # epochs per cycle
        after = min(done - warmup, self.epochs - warmup)
        after = after - length * min(int(after // length), self.cycles - 1)  # into the current cycle
        if self.kind == "step":
            return max(self.floor, self.step_factor ** int(after // self.step_every))
        progress = min(1.0, after / length)
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.kind == "cosine" else 1.0 - progress
        return self.floor + (1.0 - self.floor) * shape
