"""The network: a multilayer perceptron written by hand in NumPy, with exact backpropagation.

    x_in = x + b0                         learnable input bias, shape (n_in,)   (optional)
    a1   = f(x_in W1 + b1)                hidden layers, f = tanh | sigmoid | relu
    ...
    s    = out(a_L W_{L+1} + b_{L+1})     output: softmax | sigmoid
    L    = mean over the batch of  sum_k (s - y)^2        (squared error, the write-ups' loss)
        or mean over the batch of  -sum_k y log s          (cross-entropy; binary form for sigmoid)

Rows are samples throughout: ``X`` has shape (n, n_in), weights ``W_l`` shape (fan_in, fan_out),
so a whole mini-batch goes through one BLAS matmul per layer.

Exact gradients
---------------
The write-ups differentiate softmax as ``s (1 - s)``, i.e. they keep only the diagonal of its
Jacobian ``J = diag(s) - s s^T``.  With squared error that gives a wrong gradient (the off-diagonal
terms do not cancel).  Here the output-layer error ``delta = dL/dz`` uses the full Jacobian:

* squared error through softmax, with ``g = dL/ds = 2 (s - y)``:
  ``delta = J^T g = s * (g - <g, s>)``  (row-wise inner product);
* cross-entropy through softmax: ``delta = s * sum_k y_k - y``, i.e. ``s - y`` for one-hot targets;
* squared error through sigmoid: ``delta = g * s (1 - s)`` (the sigmoid Jacobian *is* diagonal);
* binary cross-entropy through sigmoid: ``delta = s - y``.

``tests/test_mlp.py`` checks every combination against finite differences.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "ACTIVATIONS", "OUTPUTS", "COSTS", "Tanh", "Sigmoid", "ReLU", "Softmax", "SigmoidOutput",
    "SquaredError", "CrossEntropy", "MLP", "MLPStack",
]


# ----------------------------------------------------------------------------------------------
# Hidden activations.  ``fn`` works in place when given ``out``; ``backprop(a, grad, tmp)`` does
# ``grad *= f'(z)`` in place, with f'(z) expressed through the activation's *output* a = f(z), so
# the forward pass need not keep z.  ``tmp`` is scratch of grad's shape.
# ----------------------------------------------------------------------------------------------
class Tanh:
    name = "tanh"

    @staticmethod
    def fn(z, out=None):
        return np.tanh(z, out=out)

    @staticmethod
    def backprop(a, grad, tmp):
        """f'(z) = 1 - tanh(z)^2 = 1 - a^2."""
        np.multiply(grad, a, out=tmp)
        tmp *= a
        grad -= tmp  # grad * (1 - a^2) without allocating


class Sigmoid:
    name = "sigmoid"

    @staticmethod
    def fn(z, out=None):
        # 1 / (1 + e^-z) written as (1 + tanh(z/2)) / 2: same value, no overflow warnings.
        out = np.multiply(z, 0.5, out=out)
        np.tanh(out, out=out)
        out += 1.0
        out *= 0.5
        return out

    @staticmethod
    def backprop(a, grad, tmp):
        """f'(z) = a (1 - a)."""
        np.subtract(1.0, a, out=tmp)
        tmp *= a
        grad *= tmp


class ReLU:
    name = "relu"

    @staticmethod
    def fn(z, out=None):
        return np.maximum(z, 0.0, out=out)

    @staticmethod
    def backprop(a, grad, tmp):
        """f'(z) = 1 where z > 0 (i.e. a > 0), else 0 (the subgradient 0 at z = 0)."""
        grad *= a > 0


# ----------------------------------------------------------------------------------------------
# Output layers.  ``vjp(s, g)`` returns J^T g: the gradient wrt z given g = dL/ds.
# ----------------------------------------------------------------------------------------------
class Softmax:
    name = "softmax"

    @staticmethod
    def fn(z, out=None):
        """Softmax over the last axis, shifted by the row maximum so exp never overflows."""
        out = np.subtract(z, z.max(axis=-1, keepdims=True), out=out)
        np.exp(out, out=out)
        out /= out.sum(axis=-1, keepdims=True)
        return out

    @staticmethod
    def vjp(s, g):
        """Full-Jacobian product: ``J = diag(s) - s s^T`` is symmetric, so ``J^T g = s * (g - <g, s>)``."""
        inner = np.einsum("...j,...j->...", g, s)[..., None]
        return s * (g - inner)


class SigmoidOutput:
    name = "sigmoid"
    fn = staticmethod(Sigmoid.fn)

    @staticmethod
    def vjp(s, g):
        """Each unit depends on its own z only: the Jacobian is ``diag(s (1 - s))``."""
        return g * s * (1.0 - s)


# ----------------------------------------------------------------------------------------------
# Costs, as in Nielsen's network2.py: ``fn(s, y, output)`` is the batch-mean loss, ``delta(s, y,
# output)`` the per-sample dL_i/dz at the output (the network divides by the batch size once).
# Both take the output layer, which a cost may need (binary cross-entropy for sigmoid units).
# ----------------------------------------------------------------------------------------------
class SquaredError:
    """``L_i = sum_k (s_k - y_k)^2`` (the write-ups' loss; no 1/2 in front)."""

    name = "squared_error"

    @staticmethod
    def fn(s, y, output):
        d = s - y
        return float(np.einsum("ij,ij->", d, d, dtype=np.float64)) / len(s)

    @staticmethod
    def delta(s, y, output):
        return output.vjp(s, 2.0 * (s - y))


class CrossEntropy:
    """Categorical ``-sum_k y log s`` for softmax; binary ``-sum_k [y log s + (1-y) log(1-s)]`` for sigmoid.

    Both are the canonical pairing of their output, so ``delta`` needs no Jacobian:
    softmax gives ``s * sum_k y - y`` (``s - y`` for one-hot rows), sigmoid gives ``s - y``.
    """

    name = "cross_entropy"

    @staticmethod
    def fn(s, y, output):
        # Clip so a saturated unit gives a large finite loss rather than inf * 0 = nan.
        eps = np.finfo(s.dtype).tiny
        ls = np.log(np.maximum(s, eps))
        total = -np.einsum("ij,ij->", y, ls, dtype=np.float64)
        if output.name == "sigmoid":
            l1s = np.log(np.maximum(1.0 - s, eps))
            total -= np.einsum("ij,ij->", 1.0 - y, l1s, dtype=np.float64)
        return float(total) / len(s)

    @staticmethod
    def delta(s, y, output):
        if output.name == "softmax":
            return s * y.sum(axis=-1, keepdims=True) - y
        return s - y


ACTIVATIONS = {c.name: c for c in (Tanh, Sigmoid, ReLU)}
OUTPUTS = {c.name: c for c in (Softmax, SigmoidOutput)}
COSTS = {c.name: c for c in (SquaredError, CrossEntropy)}


class MLP:
    """A fully connected network with an optional learnable input bias.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths ``(n_in, hidden_1, ..., n_out)``; at least input and output.
    activation : {"tanh", "sigmoid", "relu"}
        Hidden-layer activation.
    output : {"softmax", "sigmoid"}
    loss : {"squared_error", "cross_entropy"}
    input_bias : bool
        Learn ``b0`` (shape (n_in,)) added to every input row before the first layer.
    dtype : numpy float dtype
        float32 for speed; float64 for gradient checks.
    rng : numpy.random.Generator, int or None
        Source of the Glorot-uniform initial weights.

    Attributes
    ----------
    weights : list of arrays, ``weights[l]`` shape (sizes[l], sizes[l+1])
    biases : list of arrays, ``biases[l]`` shape (sizes[l+1],)
    b0 : array of shape (n_in,) or None
    params, grads : lists of arrays in the order of ``names`` (``b0``, ``W1``, ``b1``, ``W2``, ...);
        ``backprop`` writes into ``grads`` in place.
    """

    def __init__(self, sizes, activation="tanh", output="softmax", loss="squared_error",
                 input_bias=True, dtype=np.float32, rng=None):
        self.sizes = [int(n) for n in sizes]
        self.activation = ACTIVATIONS[activation]
        self.output = OUTPUTS[output]
        self.cost = COSTS[loss]
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(rng)
        self.weights, self.biases = [], []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            # Glorot & Bengio (2010): keeps activation variance roughly constant across layers.
            # Drawn in float64 so float32 and float64 networks start from the same point.
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            self.weights.append(rng.uniform(-limit, limit, (fan_in, fan_out)).astype(self.dtype))
            self.biases.append(np.zeros(fan_out, self.dtype))
        self.b0 = np.zeros(self.sizes[0], self.dtype) if input_bias else None
        self._link()

    @classmethod
    def from_arrays(cls, weights, biases, b0=None, activation="tanh", output="softmax",
                    loss="squared_error"):
        """A network holding the given arrays (e.g. read from a model file); no random init.

        ``weights[l]`` has shape (fan_in, fan_out), ``biases[l]`` shape (fan_out,), ``b0`` shape
        (n_in,) or None; the dtype is that of ``weights[0]``.
        """
        net = cls.__new__(cls)
        net.dtype = np.dtype(weights[0].dtype)
        net.sizes = [weights[0].shape[0]] + [w.shape[1] for w in weights]
        net.activation, net.output, net.cost = ACTIVATIONS[activation], OUTPUTS[output], COSTS[loss]
        net.weights = [np.array(w, dtype=net.dtype, order="C") for w in weights]
        net.biases = [np.array(b, dtype=net.dtype) for b in biases]
        net.b0 = None if b0 is None else np.array(b0, dtype=net.dtype)
        net._link()
        return net

    def _link(self):
        """(Re)build ``names``/``params``/``grads`` after the parameter arrays changed identity."""
        self.names, self.params = [], []
        if self.b0 is not None:
            self.names.append("b0")
            self.params.append(self.b0)
        for i, (w, b) in enumerate(zip(self.weights, self.biases), start=1):
            self.names += [f"W{i}", f"b{i}"]
            self.params += [w, b]
        self.grads = [np.zeros_like(p) for p in self.params]
        self._work = {}  # per-batch-size scratch buffers, rebuilt lazily

    # Scratch buffers are not state: keep pickles (and sklearn clones) small.
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_work"] = {}
        state["grads"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.grads = [np.zeros_like(p) for p in self.params]

    n_networks = 1  # what the training loop asks of a network or a stack of them (MLPStack)

    @property
    def input_bias(self):
        return self.b0 is not None

    def set_state(self, arrays, network=0):
        """Copy parameter values in, by name (``{"W1": ..., "b0": ...}``); shapes must match.
        (``network`` is there for the training loop, which also drives stacks: only 0.)"""
        assert network == 0
        for name, p in zip(self.names, self.params):
            if name in arrays:
                p[...] = arrays[name]

    def get_state(self, network=0):
        """A dict name -> copy of every parameter array (for saving or restoring best weights)."""
        assert network == 0
        return {name: p.copy() for name, p in zip(self.names, self.params)}

    def squared_weights(self):
        """The sum of the squared weights (the ``W`` matrices, not the biases), shape (1,) (as
        ``MLPStack``'s one per network): what an L2 weight decay penalises."""
        return np.array([sum(_sum_squares(p) for name, p in zip(self.names, self.params) if name.startswith("W"))])

    def clip_gradients(self, max_norm):
        """Rescale ``grads`` to norm ``max_norm`` (over every parameter) if it is larger; return
        the norm before, shape (1,) (as ``MLPStack``'s one per network)."""
        return _clip([self.grads], max_norm)

    # ------------------------------------------------------------------------------------------
    def _workspace(self, n):
        """Activation and delta buffers for a batch of ``n`` rows, allocated once per ``n``."""
        work = self._work.get(n)
        if work is None:
            if len(self._work) > 2:  # training uses at most two sizes (full and last batch)
                self._work.clear()
            # acts[0] holds x + b0; without an input bias the first layer reads X directly.
            acts = [np.empty((n, m), self.dtype) if (i > 0 or self.b0 is not None) else None
                    for i, m in enumerate(self.sizes)]
            deltas = [np.empty((n, m), self.dtype) for m in self.sizes[1:-1]]
            tmps = [np.empty((n, m), self.dtype) for m in self.sizes[1:-1]]
            work = self._work[n] = (acts, deltas, tmps)
        return work

    def forward(self, X, *, acts=None):
        """Output probabilities ``s`` of shape (n, n_out) for inputs ``X`` of shape (n, n_in).

        With ``acts`` (a list of preallocated arrays, one per layer) every layer's output is
        written there and kept for ``backprop``; otherwise fresh arrays are allocated.
        """
        X = np.asarray(X, dtype=self.dtype)
        if self.b0 is not None:
            a = np.add(X, self.b0, out=None if acts is None else acts[0])
        else:
            a = X  # read only, never written: no copy needed
        last = len(self.weights) - 1
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = np.matmul(a, w, out=None if acts is None else acts[l + 1])
            z += b
            a = (self.output if l == last else self.activation).fn(z, out=z)
        return a

    def loss(self, X, Y):
        """Batch-mean loss of the network on inputs ``X`` (n, n_in) and targets ``Y`` (n, n_out)."""
        return self.cost_of(self.forward(X), Y)

    def cost_of(self, s, Y):
        """Batch-mean loss of the outputs ``s`` (n, n_out) against the targets ``Y`` (n, n_out)."""
        return self.cost.fn(s, np.asarray(Y, dtype=s.dtype), self.output)

    def astype(self, dtype):
        """The same network in ``dtype`` (itself when it already is)."""
        if self.dtype == np.dtype(dtype):
            return self
        return MLP.from_arrays([w.astype(dtype) for w in self.weights], [b.astype(dtype) for b in self.biases],
                               None if self.b0 is None else self.b0.astype(dtype),
                               self.activation.name, self.output.name, self.cost.name)

    def backprop(self, X, Y):
        """Forward and backward pass on one mini-batch; fills ``self.grads``.

        Parameters
        ----------
        X : array of shape (n, n_in)
        Y : array of shape (n, n_out)
            Targets (one-hot rows for classification; any values are allowed).

        Returns
        -------
        loss : float
            The batch-mean loss before the update.
        s : array of shape (n, n_out)
            The output probabilities (a view of a scratch buffer: valid until the next call).
        """
        X = np.asarray(X, dtype=self.dtype)
        Y = np.asarray(Y, dtype=self.dtype)
        n = len(X)
        acts, deltas, tmps = self._workspace(n)
        s = self.forward(X, acts=acts)
        inputs = [X if self.b0 is None else acts[0]] + acts[1:-1]  # each layer's input
        loss = self.cost_of(s, Y)

        off = 0 if self.b0 is None else 1
        # dL/dz at the output, already divided by n because L is the batch mean.
        delta = self.cost.delta(s, Y, self.output)
        delta *= 1.0 / n
        for l in range(len(self.weights) - 1, -1, -1):
            gw, gb = self.grads[off + 2 * l], self.grads[off + 2 * l + 1]
            np.matmul(inputs[l].T, delta, out=gw)  # (fan_in, n) @ (n, fan_out): BLAS, no copy
            np.sum(delta, axis=0, out=gb)
            if l > 0:
                nxt = np.matmul(delta, self.weights[l].T, out=deltas[l - 1])
                self.activation.backprop(inputs[l], nxt, tmps[l - 1])
                delta = nxt
        if self.b0 is not None:
            # b0 is shared by all rows: dL/db0 = sum_rows(delta1) W1^T = W1 @ db1, one matvec.
            np.matmul(self.weights[0], self.grads[off + 1], out=self.grads[0])
        return loss, s


def _sum_squares(a):
    """The sum of ``a ** 2`` without a copy of a strided view."""
    axes = "ijkl"[:a.ndim]
    return float(np.einsum(f"{axes},{axes}->", a, a))


def _clip(groups, max_norm):
    """Scale each group of gradient arrays (views; any strides) to norm ``max_norm`` if larger."""
    norms = np.array([math.sqrt(sum(_sum_squares(g) for g in group)) for group in groups])
    for group, norm in zip(groups, norms):
        if norm > max_norm:
            for g in group:
                g *= max_norm / norm
    return norms


class MLPStack:
    """``k`` networks of one architecture trained as one: an ensemble fused into wide products.

    Every network sees the same mini-batch, so the first layers of all ``k`` are one matrix
    product with their weights side by side, ``X @ [W1_1 | ... | W1_k]`` (``k`` times wider: far
    better use of BLAS at a small batch), and every later layer is one batched product over
    ``k`` (``np.matmul`` on stacked arrays). The parameters of all ``k`` networks are a handful
    of arrays, so one optimizer pass updates them all. Layout (``h_l`` the width of layer l)::

        b0  (k, n_in)            W1 (n_in, k * h_1)     b1 (k * h_1,)      network j: columns j*h_1 ...
        W2  (k, h_1, h_2)        b2 (k, h_2)            ...                network j: [j]

    The input bias enters through the same product: ``(X + b0_j) W1_j = X W1_j + b0_j W1_j``, so
    the ``k`` rows ``b0_j`` go through ``@ W1`` below the batch's rows, and in the backward pass
    ``dW1_j = (X + b0_j)^T delta1_j = [X; b0]^T [delta1_j; e_j (1^T delta1_j)]`` is again one
    product over the batch and those ``k`` rows. ``tests/test_mlp.py`` checks every gradient
    against finite differences, and a stack of one network against the lone network.

    Parameters
    ----------
    networks : list of MLP
        The starting points (copied in): one architecture, one dtype.

    Attributes
    ----------
    names, params, grads : lists of arrays (``b0``, ``W1``, ``b1``, ``W2``, ...), as ``MLP``'s
    n_networks : int
    """

    def __init__(self, networks):
        first = networks[0]
        self.n_networks = k = len(networks)
        self.sizes, self.dtype = list(first.sizes), first.dtype
        self.activation, self.output, self.cost = first.activation, first.output, first.cost
        for net in networks:
            if (net.sizes, net.dtype, net.activation, net.output, net.cost, net.input_bias) != (
                    self.sizes, self.dtype, self.activation, self.output, self.cost, first.input_bias):
                raise ValueError("the networks of a stack must share one architecture and dtype")
        self.b0 = np.stack([n.b0 for n in networks]) if first.input_bias else None
        self.weights = [np.concatenate([n.weights[0] for n in networks], axis=1)]
        self.biases = [np.concatenate([n.biases[0] for n in networks])]
        for l in range(1, len(self.sizes) - 1):
            self.weights.append(np.stack([n.weights[l] for n in networks]))
            self.biases.append(np.stack([n.biases[l] for n in networks]))
        self.names, self.params = ([], []) if self.b0 is None else (["b0"], [self.b0])
        for i, (w, b) in enumerate(zip(self.weights, self.biases), start=1):
            self.names += [f"W{i}", f"b{i}"]
            self.params += [w, b]
        self.grads = [np.zeros_like(p) for p in self.params]
        self._work = {}
        self._diag = np.arange(k)

    @property
    def input_bias(self):
        return self.b0 is not None

    def _views(self, arrays, j):
        """Network ``j``'s slice of each of ``arrays`` (in ``names`` order): views, no copies."""
        h1, off = self.sizes[1], 0 if self.b0 is None else 1
        out = [] if self.b0 is None else [arrays[0][j]]
        out += [arrays[off][:, j * h1:(j + 1) * h1], arrays[off + 1][j * h1:(j + 1) * h1]]
        out += [a[j] for a in arrays[off + 2:]]
        return out

    def get_state(self, network):
        """Network ``network``'s parameters: a dict name -> copy (``MLP.get_state``'s names)."""
        return {name: v.copy() for name, v in zip(self.names, self._views(self.params, network))}

    def set_state(self, arrays, network):
        """Copy network ``network``'s parameters in, by name."""
        for name, v in zip(self.names, self._views(self.params, network)):
            if name in arrays:
                v[...] = arrays[name]

    def squared_weights(self):
        """Per network, the sum of its squared weights (not the biases), shape (k,)."""
        return np.array([sum(_sum_squares(p) for name, p in zip(self.names, self._views(self.params, j))
                             if name.startswith("W")) for j in range(self.n_networks)])

    def clip_gradients(self, max_norm):
        """Rescale each network's part of ``grads`` to norm ``max_norm`` if it is larger (each on
        its own, as ``k`` lone networks would be); return the norms before, shape (k,)."""
        return _clip([self._views(self.grads, j) for j in range(self.n_networks)], max_norm)

    def networks(self):
        """The ``k`` networks as ``MLP`` objects of their own (copies)."""
        off = 0 if self.b0 is None else 1
        nets = []
        for j in range(self.n_networks):
            views = self._views(self.params, j)
            nets.append(MLP.from_arrays(views[off::2], views[off + 1::2], views[0] if off else None,
                                        self.activation.name, self.output.name, self.cost.name))
        return nets

    # ------------------------------------------------------------------------------------------
    def _workspace(self, n):
        """Buffers for a batch of ``n`` rows: ``A`` (the rows, then the ``k`` input biases), the
        first layer's output and delta ``(n + kb, k * h_1)``, each later layer's (k, n, h)."""
        work = self._work.get(n)
        if work is None:
            if len(self._work) > 2:
                self._work.clear()
            k, kb, sizes = self.n_networks, 0 if self.b0 is None else self.n_networks, self.sizes
            A = np.empty((n + kb, sizes[0]), self.dtype)
            first = np.empty((n + kb, k * sizes[1]), self.dtype)
            later = [np.empty((k, n, m), self.dtype) for m in sizes[2:]]
            d_first = np.empty((n + kb, k * sizes[1]), self.dtype)
            d_later = [np.empty((k, n, m), self.dtype) for m in sizes[2:-1]]
            t_first = np.empty((n, k * sizes[1]), self.dtype)
            t_later = [np.empty((k, n, m), self.dtype) for m in sizes[2:-1]]
            work = self._work[n] = (A, first, later, d_first, d_later, t_first, t_later)
        return work

    def _by_network(self, rows, n):
        """The (n, k * h) first-layer array ``rows`` seen as (k, n, h): a view."""
        return rows[:n].reshape(n, self.n_networks, -1).transpose(1, 0, 2)

    def forward(self, X, *, work=None):
        """Every network's output probabilities, shape (k, n, n_out), for ``X`` of shape (n, n_in)."""
        X = np.asarray(X, dtype=self.dtype)
        n = len(X)
        A, first, later = (work or self._workspace(n))[:3]
        A[:n] = X
        if self.b0 is not None:
            A[n:] = self.b0
        np.matmul(A, self.weights[0], out=first)
        z = first[:n]
        z += self.biases[0]
        if self.b0 is not None:  # network j's own block of row n + j: b0_j W1_j
            z += first[n:].reshape(self.n_networks, self.n_networks, -1)[self._diag, self._diag].reshape(-1)
        last = len(self.weights) - 1
        if last == 0:
            a = self._by_network(z, n)
            return self.output.fn(a, out=a)
        a = self._by_network(self.activation.fn(z, out=z), n)
        for l in range(1, last + 1):
            z = np.matmul(a, self.weights[l], out=later[l - 1])
            z += self.biases[l][:, None, :]
            a = (self.output if l == last else self.activation).fn(z, out=z)
        return a

    def loss(self, X, Y):
        """Every network's batch-mean loss, shape (k,)."""
        return self.cost_of(self.forward(X), Y)

    def cost_of(self, s, Y):
        """Batch-mean losses of the outputs ``s`` (k, n, n_out) against the targets ``Y`` (n, n_out)."""
        Y = np.asarray(Y, dtype=s.dtype)
        return np.array([self.cost.fn(sj, Y, self.output) for sj in s])

    def backprop(self, X, Y):
        """Forward and backward pass of all ``k`` networks on one mini-batch; fills ``grads``.

        Returns
        -------
        losses : ndarray of shape (k,)
            Every network's batch-mean loss before the update.
        s : ndarray of shape (k, n, n_out)
            The output probabilities (a view of scratch memory: valid until the next call).
        """
        X = np.asarray(X, dtype=self.dtype)
        Y = np.asarray(Y, dtype=self.dtype)
        n, k = len(X), self.n_networks
        work = self._workspace(n)
        A, first, later, d_first, d_later, t_first, t_later = work
        s = self.forward(X, work=work)
        losses = self.cost_of(s, Y)
        # each layer's input, as (k, n, h); the first layer's is A itself
        inputs = [None, self._by_network(first, n)] + later[:-1]
        off = 0 if self.b0 is None else 1
        delta = self.cost.delta(s, Y, self.output)
        delta *= 1.0 / n
        for l in range(len(self.weights) - 1, 0, -1):
            gw, gb = self.grads[off + 2 * l], self.grads[off + 2 * l + 1]
            np.matmul(inputs[l].transpose(0, 2, 1), delta, out=gw)
            np.sum(delta, axis=1, out=gb)
            if l > 1:
                nxt, tmp = d_later[l - 2], t_later[l - 2]
            else:  # the first layer's delta lands in its (n, k * h_1) layout for the one product below
                nxt, tmp = self._by_network(d_first, n), self._by_network(t_first, n)
            np.matmul(delta, self.weights[l].transpose(0, 2, 1), out=nxt)
            self.activation.backprop(inputs[l], nxt, tmp)
            delta = nxt
        if len(self.weights) == 1:
            self._by_network(d_first, n)[...] = delta
        gw, gb = self.grads[off], self.grads[off + 1]
        np.sum(d_first[:n], axis=0, out=gb)
        if self.b0 is not None:
            # rows n + j: network j's column sums in its own block, zeros elsewhere, so that
            # [X; b0]^T d_first adds b0_j (1^T delta1_j) to dW1_j and nothing to the others
            blocks = d_first[n:].reshape(k, k, -1)
            blocks[...] = 0
            blocks[self._diag, self._diag] = gb.reshape(k, -1)
        np.matmul(A.T, d_first, out=gw)
        if self.b0 is not None:
            # b0_j is shared by all rows: dL/db0_j = W1_j db1_j, one batched mat-vec
            w1 = self.weights[0].reshape(self.sizes[0], k, -1).transpose(1, 0, 2)
            np.matmul(w1, gb.reshape(k, -1, 1), out=self.grads[0][:, :, None])
        return losses, s
