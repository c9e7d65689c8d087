"""The network and its training loop: exact gradients, the write-ups' worked example, optimizers."""
import itertools

import numpy as np
import pytest

from esc50ann.errors import ConfigError, ModelError
from esc50ann.mlp import MLP, MLPStack, Softmax
from esc50ann.optim import SGD, LRSchedule, make_optimizer
from esc50ann.train import instability, score, train


def numeric_grads(net, X, Y, h=1e-6):
    """Central finite differences of the batch loss wrt every parameter (float64)."""
    out = []
    for p in net.params:
        g = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            keep = p[i]
            p[i] = keep + h
            up = net.loss(X, Y)
            p[i] = keep - h
            down = net.loss(X, Y)
            p[i] = keep
            g[i] = (up - down) / (2 * h)
        out.append(g)
    return out


def rel_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-12)


def random_problem(sizes, activation, output, loss, input_bias, seed=1):
    rng = np.random.default_rng(seed)
    net = MLP(sizes, activation, output, loss, input_bias, np.float64, rng=seed)
    # Non-zero biases so every term of the gradient is exercised.
    for b in net.biases:
        b[:] = rng.normal(0, 0.5, b.shape)
    if net.b0 is not None:
        net.b0[:] = rng.normal(0, 0.5, net.b0.shape)
    X = rng.normal(size=(7, sizes[0]))
    if output == "softmax":
        Y = rng.dirichlet(np.ones(sizes[-1]), size=7)  # probability rows, not only one-hot
    else:
        Y = rng.uniform(size=(7, sizes[-1]))
    return net, X, Y


@pytest.mark.parametrize("sizes", [[4, 6, 3], [4, 5, 3, 3]], ids=["1hidden", "2hidden"])
@pytest.mark.parametrize("input_bias", [True, False], ids=["b0", "no_b0"])
@pytest.mark.parametrize("activation,output,loss", list(itertools.product(
    ["tanh", "sigmoid", "relu"], ["softmax", "sigmoid"], ["squared_error", "cross_entropy"])))
def test_gradients_match_finite_differences(sizes, input_bias, activation, output, loss):
    net, X, Y = random_problem(sizes, activation, output, loss, input_bias)
    net.backprop(X, Y)
    analytic = [g.copy() for g in net.grads]
    assert net.names[0] == ("b0" if input_bias else "W1")  # b0 is checked like every other parameter
    for name, a, n in zip(net.names, analytic, numeric_grads(net, X, Y)):
        assert rel_error(a, n) < 1e-6, name


def test_diagonal_softmax_derivative_of_the_writeups_is_wrong():
    """The write-ups use d softmax = s (1 - s); with squared error that misses the off-diagonal terms."""
    net, X, Y = random_problem([4, 6, 5], "tanh", "softmax", "squared_error", True)
    Y = np.eye(5)[np.arange(7) % 5]
    a1 = np.tanh((X + net.b0) @ net.weights[0] + net.biases[0])
    s = Softmax.fn(a1 @ net.weights[1] + net.biases[1])
    diag_delta = 2 * (s - Y) * s * (1 - s) / len(X)
    diag_grad_w2 = a1.T @ diag_delta

    net.backprop(X, Y)
    ours = net.grads[net.names.index("W2")].copy()
    numeric = numeric_grads(net, X, Y)[net.names.index("W2")]
    assert rel_error(ours, numeric) < 1e-6
    assert rel_error(diag_grad_w2, numeric) > 1e-2


def worked_example_net():
    """Section 1.2 of seeds/003: 2-2-2, sigmoid hidden and output, fixed biases 0.35 and 0.60."""
    net = MLP([2, 2, 2], "sigmoid", "sigmoid", "squared_error", input_bias=False, dtype=np.float64)
    # weights[l][i, j] connects unit i of layer l to unit j of layer l+1.
    net.weights[0][:] = [[0.15, 0.25],   # w1 i1->h1, w3 i1->h2
                         [0.20, 0.30]]   # w2 i2->h1, w4 i2->h2
    net.weights[1][:] = [[0.40, 0.50],   # w5 h1->o1, w7 h1->o2
                         [0.45, 0.55]]   # w6 h2->o1, w8 h2->o2
    net.biases[0][:] = 0.35
    net.biases[1][:] = 0.60
    return net


def test_worked_example_of_the_writeup():
    net = worked_example_net()
    X, Y = np.array([[0.05, 0.10]]), np.array([[0.01, 0.99]])
    np.testing.assert_allclose(net.forward(X), [[0.75136507, 0.772928465]], atol=1e-6)
    # The write-up's error is sum 1/2 (t - o)^2, ours sum (t - o)^2: half of ours, and its
    # gradient is half of ours, so its learning rate 0.5 is our 0.25 (powers of two: exact).
    assert net.loss(X, Y) / 2 == pytest.approx(0.298371109, abs=1e-6)

    net.backprop(X, Y)           # every gradient from the old weights first ...
    SGD(learning_rate=0.25).step(net)  # ... then one update of all of them
    for b, value in zip(net.biases, (0.35, 0.60)):
        b[:] = value             # the example never updates its biases
    w = net.weights
    np.testing.assert_allclose([w[1][0, 0], w[1][1, 0], w[1][0, 1], w[1][1, 1]],
                               [0.35891648, 0.408666186, 0.511301270, 0.561370121], atol=1e-6)
    np.testing.assert_allclose([w[0][0, 0], w[0][1, 0], w[0][0, 1], w[0][1, 1]],
                               [0.149780716, 0.19956143, 0.24975114, 0.29950229], atol=1e-6)
    assert net.loss(X, Y) / 2 == pytest.approx(0.291027924, abs=1e-6)


def test_batch_size_one_is_per_sample_sgd():
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(9, 4)), np.eye(3)[rng.integers(0, 3, 9)]
    a = MLP([4, 5, 3], dtype=np.float64, rng=0)
    b = MLP([4, 5, 3], dtype=np.float64, rng=0)
    train(a, X, Y, optimizer=SGD(0.1), batch_size=1, max_epochs=2, rng=7)
    order = np.random.default_rng(7)
    for _ in range(2):
        for i in order.permutation(9):
            b.backprop(X[i:i + 1], Y[i:i + 1])
            SGD(0.1).step(b)
    for p, q in zip(a.params, b.params):
        np.testing.assert_allclose(p, q, rtol=1e-12)


@pytest.mark.parametrize("solver", ["sgd", "momentum", "adam"])
def test_optimizers_reduce_the_loss_and_weight_decay_shrinks_weights(solver):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(64, 6)), np.eye(3)[rng.integers(0, 3, 64)]
    norms = {}
    for wd in (0.0, 0.1):
        net = MLP([6, 16, 3], loss="cross_entropy", rng=0)
        before = net.loss(X, Y)
        lr = 0.01 if solver == "adam" else 0.1
        (history,), _ = train(net, X, Y, optimizer=make_optimizer(solver, lr, momentum=0.9, weight_decay=wd), batch_size=16,
                           max_epochs=20, rng=0)
        assert history[-1]["loss"] < before
        norms[wd] = sum(np.sum(w.astype(np.float64) ** 2) for w in net.weights)
    assert norms[0.1] < norms[0.0]


@pytest.mark.parametrize("weight_decay", [0.0, 0.3], ids=["no_decay", "decay"])
@pytest.mark.parametrize("solver", ["sgd", "momentum", "adam"])
def test_optimizer_steps_match_the_documented_updates(solver, weight_decay):
    """Two steps of each optimizer against its documented rule, computed here from ``net.grads``.

    ``weight_decay`` is an L2 penalty ``(wd / 2) ||W||^2`` on the weight matrices only: it adds
    ``wd * W`` to the gradient of W1, W2 and nothing to the biases b1, b2 or the input bias b0.
    Adam uses the step-size form of bias correction (eps added to sqrt(v), not to sqrt(v_hat)).
    """
    net, X, Y = random_problem([4, 5, 3], "tanh", "softmax", "cross_entropy", True, seed=2)
    assert net.names == ["b0", "W1", "b1", "W2", "b2"]
    assert all(np.abs(p).min() > 1e-3 for p in net.params)  # decaying any of them would show
    decayed = {"W1", "W2"}
    lr, mu, beta1, beta2, eps = 0.1, 0.9, 0.9, 0.999, 1e-8
    opt = make_optimizer(solver, lr, momentum=mu, weight_decay=weight_decay)
    expected = [p.copy() for p in net.params]
    m = [np.zeros_like(p) for p in net.params]  # velocity for momentum, first moment for Adam
    v = [np.zeros_like(p) for p in net.params]
    for t in (1, 2):
        net.backprop(X, Y)
        for i, (name, g) in enumerate(zip(net.names, net.grads)):
            p = expected[i]
            g = g + weight_decay * p if name in decayed else g.copy()
            if solver == "sgd":
                p -= lr * g
            elif solver == "momentum":
                m[i] = mu * m[i] - lr * g
                p += m[i]
            else:
                m[i] = beta1 * m[i] + (1 - beta1) * g
                v[i] = beta2 * v[i] + (1 - beta2) * g * g
                p -= lr * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t) * m[i] / (np.sqrt(v[i]) + eps)
        opt.step(net)
        for name, p, e in zip(net.names, net.params, expected):
            np.testing.assert_allclose(p, e, rtol=1e-12, atol=1e-15, err_msg=f"{name} after step {t}")


def test_float32_default_and_probabilities():
    net = MLP([5, 8, 4], rng=0)
    assert all(p.dtype == np.float32 for p in net.params)
    s = net.forward(np.random.default_rng(0).normal(size=(10, 5)))
    assert s.dtype == np.float32
    np.testing.assert_allclose(s.sum(axis=1), 1.0, rtol=1e-6)


def test_divergence_is_one_clear_error():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(50, 5)), np.eye(3)[rng.integers(0, 3, 50)]
    net = MLP([5, 16, 3], activation="relu", loss="cross_entropy", rng=0)
    with pytest.raises(ModelError, match=r"^training diverged at epoch 1 \(loss=nan\): "
                                         r"lower the learning rate \(now 1e\+06\)$"):
        train(net, X, Y, optimizer=SGD(1e6), batch_size=10, max_epochs=5, rng=0)


def test_early_stopping_restores_the_best_weights():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(60, 8)), np.eye(3)[rng.integers(0, 3, 60)]        # noise: overfits
    Xv, Yv = rng.normal(size=(40, 8)), np.eye(3)[rng.integers(0, 3, 40)]
    net = MLP([8, 64, 3], loss="cross_entropy", dtype=np.float64, rng=0)
    (history,), (best,) = train(net, X, Y, optimizer=make_optimizer("adam", 0.01), batch_size=10,
                          max_epochs=200, rng=0, X_val=Xv, Y_val=Yv, patience=3)
    assert len(history) < 200 and best == len(history) - 3
    assert history[best - 1]["val_loss"] == min(h["val_loss"] for h in history)
    assert score(net, Xv, Yv)[0][0] == pytest.approx(history[best - 1]["val_loss"], rel=1e-12)


def test_same_seed_same_run_and_callback():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(40, 5)), np.eye(2)[rng.integers(0, 2, 40)]
    runs, rows = [], []
    for _ in range(2):
        net = MLP([5, 7, 2], rng=np.random.default_rng(4))
        (h,), _ = train(net, X, Y, optimizer=make_optimizer("momentum", 0.05), batch_size=8,
                     max_epochs=3, rng=5, callback=rows.append)
        runs.append((net.get_state(), [r["loss"] for r in h]))
    assert runs[0][1] == runs[1][1]
    for name in runs[0][0]:
        np.testing.assert_array_equal(runs[0][0][name], runs[1][0][name])
    assert [r["epoch"] for r in rows] == [1, 2, 3, 1, 2, 3]


def test_unknown_solver():
    with pytest.raises(ConfigError, match="solver"):
        make_optimizer("lbfgs", 0.1)


def test_score_goes_through_every_row_in_chunks():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(50, 5)), np.eye(3)[rng.integers(0, 3, 50)]
    net = MLP([5, 7, 3], loss="cross_entropy", dtype=np.float64, rng=0)
    s = net.forward(X)
    loss, accuracy = score(net, X, Y, batch_size=8)  # 7 chunks, the last of 2 rows
    assert loss == pytest.approx(net.loss(X, Y), rel=1e-12)
    assert accuracy == np.mean(s.argmax(axis=1) == Y.argmax(axis=1))


def test_softmax_and_cross_entropy_with_huge_logits():
    """Logits of +-1000 (float32 exp overflows past ~88): shifted by the row maximum, never inf or nan."""
    z = np.array([[1000, -1000, 0], [-1000, -1000, -1000], [1e4, 1e4, -1e4]], np.float32)
    s = Softmax.fn(z.copy())
    np.testing.assert_allclose(s, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0]], atol=1e-7)
    net = MLP([2, 3], activation="tanh", loss="cross_entropy", input_bias=False, rng=0)  # no hidden layer
    net.weights[0][:] = [[1000, -1000, 0], [0, 0, 0]]
    X, Y = np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32), np.eye(3, dtype=np.float32)[[1, 1]]
    out = net.forward(X)
    assert np.isfinite(out).all() and np.allclose(out.sum(axis=1), 1)
    loss, _ = net.backprop(X, Y)  # row 0 gives its target probability 0: the loss is clipped, finite
    assert loss == pytest.approx(-np.log(np.finfo(np.float32).tiny) / 2, rel=1e-4)  # row 1 costs ~0
    assert all(np.isfinite(g).all() for g in net.grads)


def test_mixup_mixes_inputs_and_targets_alike():
    """Each row becomes lam * row + (1 - lam) * another row of its batch, targets with the same lam."""
    from esc50ann.train import _Batches

    n = 16
    eye = np.eye(n, dtype=np.float32)  # X == Y: mixed rows must stay equal to their mixed targets
    plain = _Batches(eye, eye, batch_size=8)
    for idx, xb, yb in plain(np.arange(n)):
        assert np.array_equal(xb, eye[idx]) and np.array_equal(yb, eye[idx])
    mixed = _Batches(eye, eye.copy(), batch_size=8, mixup=1.0, rng=np.random.default_rng(0))
    lams = []
    for idx, xb, yb in mixed(np.arange(n)):
        np.testing.assert_allclose(xb, yb, atol=1e-6)
        np.testing.assert_allclose(yb.sum(axis=1), 1.0, atol=1e-6)
        assert (yb >= 0).all() and (np.count_nonzero(yb > 1e-7, axis=1) <= 2).all()
        assert set(np.flatnonzero(yb.any(axis=0))) <= set(idx)  # partners come from the same batch
        lams += yb[np.arange(len(idx)), idx].tolist()
    assert 0.05 < np.std(lams) and min(lams) < 0.9  # a real spread of ratios, not a copy


def test_mixup_trains_and_repeats_for_a_seed():
    from esc50ann.model import ANNClassifier

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (5, 8))
    y = np.repeat(np.arange(5), 30)
    X = centres[y] + rng.normal(0, 0.5, (len(y), 8))
    fit = lambda: ANNClassifier(hidden_layer_sizes=(32,), solver="adam", learning_rate=3e-3, max_epochs=40,  # noqa: E731
                                loss="cross_entropy", mixup=0.4, patience=None).fit(X, y)
    a, b = fit(), fit()
    assert a.score(X, y) > 0.95
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    plain = ANNClassifier(hidden_layer_sizes=(32,), solver="adam", learning_rate=3e-3, max_epochs=40,
                          loss="cross_entropy", patience=None).fit(X, y)
    assert a.history_[-1]["loss"] > plain.history_[-1]["loss"]  # mixed targets cannot be fit exactly


# ---------------------------------------------------------------------------- learning-rate schedules

@pytest.mark.parametrize("kind, floor, expected", [
    # 10 epochs of 4 updates: (step, factor) pairs; the decay is evaluated at the epochs done
    ("constant", 0.0, {0: 1.0, 20: 1.0, 39: 1.0}),
    ("cosine", 0.0, {0: 1.0, 10: 0.5 * (1 + np.cos(np.pi * 0.25)), 20: 0.5, 39: 0.5 * (1 + np.cos(np.pi * 0.975))}),
    ("cosine", 0.1, {0: 1.0, 20: 0.1 + 0.9 * 0.5, 39: 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 0.975))}),
    ("linear", 0.0, {0: 1.0, 10: 0.75, 20: 0.5, 39: 0.025}),
    ("linear", 0.2, {20: 0.6}),
    ("step", 0.0, {0: 1.0, 11: 1.0, 12: 0.5, 23: 0.5, 24: 0.25, 39: 0.125}),  # x0.5 every 3 epochs
    ("step", 0.3, {24: 0.3, 39: 0.3}),  # never below the floor
])
def test_each_schedule_gives_its_rate_at_chosen_steps(kind, floor, expected):
    schedule = LRSchedule(kind, epochs=10, floor=floor, step_every=3, step_factor=0.5)
    for step, factor in expected.items():
        assert schedule.factor(step, 4) == pytest.approx(factor, abs=1e-12), step


def test_warm_up_ramps_linearly_then_the_decay_spans_the_rest():
    schedule = LRSchedule("linear", epochs=10, warmup_epochs=2)
    assert [schedule.factor(s, 4) for s in range(8)] == pytest.approx([(s + 1) / 8 for s in range(8)])
    assert schedule.factor(8, 4) == 1.0  # the decay starts after the warm-up ...
    assert schedule.factor(24, 4) == pytest.approx(0.5)  # ... and spans epochs 2 to 10
    assert LRSchedule("constant", epochs=5, warmup_epochs=1).factor(4, 4) == 1.0


def test_cycles_restart_the_decay_and_end_where_the_snapshots_are_kept():
    schedule = LRSchedule("cosine", epochs=7, warmup_epochs=1, cycles=3)  # cycles of 2 epochs after the warm-up
    assert schedule.cycle_ends == [3, 5, 7]
    one = LRSchedule("cosine", epochs=2)
    for cycle in range(3):
        for step in range(8):  # 4 updates an epoch: each cycle is the 2-epoch cosine again
            assert schedule.factor(4 + 8 * cycle + step, 4) == pytest.approx(one.factor(step, 4), abs=1e-12)
    assert LRSchedule("cosine", epochs=10).cycle_ends == [10]


def test_training_steps_by_the_scheduled_rate():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(12, 4)), np.eye(3)[rng.integers(0, 3, 12)]
    schedule = LRSchedule("linear", epochs=3, warmup_epochs=1)
    a, b = MLP([4, 5, 3], dtype=np.float64, rng=0), MLP([4, 5, 3], dtype=np.float64, rng=0)
    (history,), _ = train(a, X, Y, optimizer=SGD(0.1), batch_size=4, max_epochs=3, rng=7, schedule=schedule)
    order, step = np.random.default_rng(7), 0  # the same updates by hand, each at its scheduled rate
    for _ in range(3):
        perm = order.permutation(12)
        for lo in range(0, 12, 4):
            b.backprop(X[perm[lo:lo + 4]], Y[perm[lo:lo + 4]])
            SGD(0.1 * schedule.factor(step, 3)).step(b)
            step += 1
    for p, q in zip(a.params, b.params):
        np.testing.assert_allclose(p, q, rtol=1e-12)
    assert [r["lr"] for r in history] == pytest.approx([0.1 * schedule.factor(s, 3) for s in (2, 5, 8)])


def test_clipping_rescales_a_large_gradient_to_the_norm_and_leaves_a_small_one():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(12, 4)), np.eye(3)[rng.integers(0, 3, 12)]
    net = MLP([4, 5, 3], dtype=np.float64, rng=0)
    net.backprop(X, Y)
    grads = [g.copy() for g in net.grads]
    norm = np.sqrt(sum((g ** 2).sum() for g in grads))
    assert net.clip_gradients(2 * norm) == pytest.approx([norm])  # below the cap: untouched
    for g, before in zip(net.grads, grads):
        np.testing.assert_array_equal(g, before)
    net.clip_gradients(norm / 4)
    for g, before in zip(net.grads, grads):
        np.testing.assert_allclose(g, before / 4, rtol=1e-12)


def test_training_with_clipping_and_averaging_makes_the_updates_by_hand():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(12, 4)), np.eye(3)[rng.integers(0, 3, 12)]
    a, b = MLP([4, 5, 3], dtype=np.float64, rng=0), MLP([4, 5, 3], dtype=np.float64, rng=0)
    train(a, X, Y, optimizer=SGD(0.5), batch_size=4, max_epochs=4, rng=7, clip_norm=0.3, average_epochs=2)
    order, snapshots = np.random.default_rng(7), []
    for _ in range(4):
        perm = order.permutation(12)
        for lo in range(0, 12, 4):
            b.backprop(X[perm[lo:lo + 4]], Y[perm[lo:lo + 4]])
            norm = np.sqrt(sum((g ** 2).sum() for g in b.grads))
            for g in b.grads:
                g *= min(1.0, 0.3 / norm)
            SGD(0.5).step(b)
        snapshots.append([p.copy() for p in b.params])
    for p, third, fourth in zip(a.params, snapshots[2], snapshots[3]):  # the mean of the last two epochs
        np.testing.assert_allclose(p, (third + fourth) / 2, rtol=1e-12)
    assert not np.allclose(a.params[1], snapshots[3][1])


# ---------------------------------------------------------------------------- a fused ensemble

def random_stack(sizes, activation, output, loss, input_bias, k=3, seed=1):
    rng = np.random.default_rng(seed)
    nets = [random_problem(sizes, activation, output, loss, input_bias, seed=seed + j)[0] for j in range(k)]
    X = rng.normal(size=(7, sizes[0]))
    Y = rng.dirichlet(np.ones(sizes[-1]), size=7) if output == "softmax" else rng.uniform(size=(7, sizes[-1]))
    return nets, MLPStack(nets), X, Y


@pytest.mark.parametrize("sizes", [[4, 6, 3], [4, 5, 3, 3], [4, 3]], ids=["1hidden", "2hidden", "0hidden"])
@pytest.mark.parametrize("input_bias", [True, False], ids=["b0", "no_b0"])
@pytest.mark.parametrize("activation,output,loss", [("tanh", "softmax", "cross_entropy"),
                                                    ("relu", "softmax", "squared_error"),
                                                    ("sigmoid", "sigmoid", "cross_entropy")])
def test_fused_gradients_match_finite_differences(sizes, input_bias, activation, output, loss):
    """The stack's gradient of the summed losses of its networks, parameter by parameter (each
    network's loss depends on its own slice only, so this is every network's own gradient)."""
    _, stack, X, Y = random_stack(sizes, activation, output, loss, input_bias)
    losses, _ = stack.backprop(X, Y)
    analytic = [g.copy() for g in stack.grads]
    total = type("Summed", (), {"params": stack.params, "loss": lambda self, X, Y: stack.loss(X, Y).sum()})()
    for name, a, n in zip(stack.names, analytic, numeric_grads(total, X, Y)):
        assert rel_error(a, n) < 1e-6, name
    assert losses.shape == (3,) and stack.names[0] == ("b0" if input_bias else "W1")


def test_fused_networks_are_the_networks_they_were_made_of():
    nets, stack, X, Y = random_stack([4, 5, 3, 3], "tanh", "softmax", "cross_entropy", True)
    s = stack.forward(X)
    for j, (net, back) in enumerate(zip(nets, stack.networks())):
        np.testing.assert_allclose(s[j], net.forward(X), rtol=1e-12)
        for name, p in zip(net.names, net.params):
            np.testing.assert_array_equal(back.get_state()[name], p)
            np.testing.assert_array_equal(stack.get_state(j)[name], p)
    stack.set_state(nets[0].get_state(), 2)  # network 3 now starts where network 1 does
    np.testing.assert_allclose(stack.forward(X)[2], nets[0].forward(X), rtol=1e-12)


def test_a_stack_clips_each_networks_gradient_on_its_own():
    nets, stack, X, Y = random_stack([4, 5, 3, 3], "tanh", "softmax", "cross_entropy", True)
    stack.backprop(X, Y)
    for net in nets:
        net.backprop(X, Y)
    norms = [np.sqrt(sum((g ** 2).sum() for g in net.grads)) for net in nets]
    cap = sorted(norms)[1]  # one network above the cap, one at it, one below
    np.testing.assert_allclose(stack.clip_gradients(cap), norms, rtol=1e-12)
    for j, net in enumerate(nets):
        net.clip_gradients(cap)
        for name, g in zip(net.names, net.grads):
            np.testing.assert_allclose(stack._views(stack.grads, j)[net.names.index(name)], g, rtol=1e-12)


def test_a_fused_ensemble_of_one_is_the_lone_network():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(30, 6)), np.eye(3)[rng.integers(0, 3, 30)]
    lone = MLP([6, 8, 4, 3], loss="cross_entropy", dtype=np.float64, rng=0)
    stack = MLPStack([MLP([6, 8, 4, 3], loss="cross_entropy", dtype=np.float64, rng=0)])
    runs = []
    for net in (lone, stack):
        runs.append(train(net, X, Y, optimizer=make_optimizer("adam", 0.01, weight_decay=0.01), batch_size=7,
                          max_epochs=4, rng=3, mixup=0.3, schedule=LRSchedule("cosine", epochs=4)))
    (trained,) = stack.networks()
    for name, p in zip(lone.names, lone.params):
        np.testing.assert_allclose(trained.get_state()[name], p, rtol=1e-9, atol=1e-12)
    assert [r["loss"] for r in runs[0][0][0]] == pytest.approx([r["loss"] for r in runs[1][0][0]], rel=1e-9)


def test_early_stopping_keeps_each_networks_own_best_epoch():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(60, 8)), np.eye(3)[rng.integers(0, 3, 60)]        # noise: overfits
    Xv, Yv = rng.normal(size=(40, 8)), np.eye(3)[rng.integers(0, 3, 40)]
    stack = MLPStack([MLP([8, 64, 3], loss="cross_entropy", dtype=np.float64, rng=s) for s in range(3)])
    histories, best = train(stack, X, Y, optimizer=make_optimizer("adam", 0.01), batch_size=10, max_epochs=200,
                            rng=0, X_val=Xv, Y_val=Yv, patience=3)
    assert len(histories[0]) == max(best) + 3 < 200  # stops when the last network does
    losses, _ = score(stack, Xv, Yv)
    for j, (history, epoch) in enumerate(zip(histories, best)):
        assert history[epoch - 1]["val_loss"] == min(h["val_loss"] for h in history[:epoch + 3])
        assert losses[j] == pytest.approx(history[epoch - 1]["val_loss"], rel=1e-12)


def test_instability_is_the_kept_epochs_loss_against_its_minimum():
    rows = [{"loss": v} for v in (1.0, 0.2, 0.013, 0.175, 0.62)]
    spike = instability(rows)
    assert spike["unstable"] and spike["min_epoch"] == 3 and spike["ratio"] == pytest.approx(0.62 / 0.013)
    assert not instability(rows, kept_epoch=3)["unstable"]  # early stopping kept the low point
    assert not instability([{"loss": v} for v in (0.5, 0.0015, 0.004)])["unstable"]  # 2.7x, but near zero
    assert not instability([{"loss": v} for v in (0.5, 0.3, 0.55)])["unstable"]  # far above, but not 2x


def test_a_loss_rise_the_weight_penalty_pays_for_is_not_a_spike():
    # The development folds with pitch-shifted copies: the loss climbs from 0.019 to 0.030 while
    # weight decay shrinks the penalty from 0.54 to 0.24; their sum ends at its lowest.
    decay = [{"loss": a, "penalty": b} for a, b in ((1.7, 3.3), (0.019, 0.54), (0.036, 0.33), (0.050, 0.24))]
    calm = instability(decay)
    assert calm["ratio"] == pytest.approx(0.050 / 0.019) and calm["objective_ratio"] == 1.0
    assert not calm["unstable"]
    spike = [dict(row, loss=0.62) if row is decay[-1] else row for row in decay]  # the same, on a spike
    assert instability(spike)["unstable"] and instability(spike)["objective_ratio"] > 1


def test_the_history_holds_the_weight_penalty_of_each_network():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(30, 4)), np.eye(3)[rng.integers(0, 3, 30)]
    stack = MLPStack([MLP([4, 6, 3], loss="cross_entropy", dtype=np.float64, rng=s) for s in range(2)])
    opt = make_optimizer("adam", 1e-2, weight_decay=0.1)
    histories, _ = train(stack, X, Y, optimizer=opt, batch_size=8, max_epochs=2, rng=0)
    for history, net in zip(histories, stack.networks()):
        expected = 0.05 * sum(float(np.sum(W.astype(np.float64) ** 2)) for W in net.weights)
        assert history[-1]["penalty"] == pytest.approx(expected, rel=1e-5)
        assert net.squared_weights() == pytest.approx(expected / 0.05, rel=1e-5)
