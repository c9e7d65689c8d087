"""Speed of the hand-written MLP against scikit-learn's MLPClassifier and against plain BLAS.

    python benchmarks/bench_mlp.py [--json out.json] [--quick]

1. Versus sklearn and PyTorch: the same random float32 data, the same network (tanh hidden layer,
   softmax, cross-entropy, no input bias, no standardisation, no L2), the same batch size, number
   of epochs and thread count (``--threads``), ``MLPClassifier(solver="adam")`` and
   ``(solver="sgd", momentum=0)`` made to run every epoch (tol=0, n_iter_no_change > max_epochs,
   early_stopping=False), and a plain PyTorch CPU loop (``nn.Linear``-``Tanh``-``Linear``,
   ``torch.optim.Adam`` / ``SGD``, shuffled mini-batches; run only if torch is importable --
   ``pip install torch`` -- never a dependency).  Whole ``fit`` times, best of ``--repeats``,
   the sides interleaved; the target is ours <= 0.5x sklearn.
2. Versus the roofline: our training throughput in GFLOP/s (2*m*n*k per matmul, forward and
   backward, from the fastest epoch) against plain float32 ``A @ B`` of exactly the same shapes
   on this machine, timed back to back.  The target is >= 50 % of the roofline.

Why sgd stays near 0.5x sklearn: both spend most of a step in the same two BLAS matmuls
(x W1 and x^T delta1); we only save sklearn's extra passes over the gradients. Adam at a small
batch is held back by its update (~11 elementwise passes over the weights per step); larger
batches amortise it. On a busy machine, several BLAS threads per side oversubscribe the cores:
prefer ``--threads 1`` there. (Measured figures: README, Performance.)

3. ``--step``: one training step of the default pipeline's network (2952-1024-512-50, tanh, softmax,
   cross-entropy, input bias, Adam with weight decay) profiled by part -- forward, backward,
   optimizer -- for one network and for an ensemble fused (``esc50ann.mlp.MLPStack``), one BLAS
   thread, at the batch sizes of ``--step-batches``; beside it plain float32 ``X @ W1`` of the
   first layer and Adam's least memory traffic (7 passes over the parameters) at the machine's
   copy bandwidth.

Both are ratios of runs made seconds apart, so they survive a busy machine better than the
absolute times (which are printed too); every time is the best of ``--repeats``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from esc50ann.mlp import MLP, MLPStack  # noqa: E402
from esc50ann.model import ANNClassifier  # noqa: E402
from esc50ann.optim import make_optimizer  # noqa: E402


def best_time(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def data(n, dim, n_classes, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim), dtype=np.float32)
    return X, rng.integers(0, n_classes, n)


def ours(solver, args, input_bias=False, batch_size=None):
    return ANNClassifier(hidden_layer_sizes=(args.hidden,), activation="tanh", output="softmax",
                         loss="cross_entropy", input_bias=input_bias, solver=solver,
                         learning_rate=1e-3 if solver == "adam" else 1e-2,
                         batch_size=batch_size or args.batch_size, max_epochs=args.epochs,
                         patience=None, standardize=False, dtype="float32", random_state=0)


def theirs(solver, args):
    from sklearn.neural_network import MLPClassifier
    extra = {"momentum": 0.0, "nesterovs_momentum": False} if solver == "sgd" else {}
    return MLPClassifier(hidden_layer_sizes=(args.hidden,), activation="tanh", solver=solver, alpha=0.0,
                         batch_size=args.batch_size, learning_rate_init=1e-3 if solver == "adam" else 1e-2,
                         max_iter=args.epochs, tol=0.0, n_iter_no_change=args.epochs + 1,
                         early_stopping=False, shuffle=True, random_state=0, **extra)


def torch_fit(solver, args, X, y):
    """The same network and training as ``ours(solver, args)`` in a plain PyTorch loop; None without torch."""
    try:
        import torch
    except ImportError:
        return None
    if args.threads:
        torch.set_num_threads(args.threads)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(args.dim, args.hidden), torch.nn.Tanh(),
                              torch.nn.Linear(args.hidden, args.classes))
    lr = 1e-3 if solver == "adam" else 1e-2
    opt = torch.optim.Adam(net.parameters(), lr=lr) if solver == "adam" else torch.optim.SGD(net.parameters(), lr=lr)
    for _ in range(args.epochs):
        for idx in torch.randperm(len(Xt)).split(args.batch_size):
            loss = torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


def flops_per_batch(b, d, h, k, input_bias):
    """(shape list, flop count) of the matmuls of one training step on a batch of b rows."""
    shapes = [((b, d), (d, h)),   # forward, layer 1
              ((b, h), (h, k)),   # forward, layer 2
              ((h, b), (b, k)),   # dW2 = a1^T delta2
              ((b, k), (k, h)),   # delta1 = delta2 W2^T
              ((d, b), (b, h))]   # dW1 = x_in^T delta1
    if input_bias:
        shapes.append(((d, h), (h,)))  # db0 = W1 db1
    total = sum(2 * a[0] * a[1] * (bb[1] if len(bb) == 2 else 1) for a, bb in shapes)
    return shapes, total


def roofline_seconds(shapes, repeats, rng):
    """Time plain float32 A @ B for each shape (fresh C-contiguous operands), best of repeats."""
    total = 0.0
    for sa, sb in shapes:
        A = rng.standard_normal(sa, dtype=np.float32)
        B = rng.standard_normal(sb, dtype=np.float32)
        A @ B  # warm the BLAS threads
        total += min(best_time(lambda: A @ B, 3) for _ in range(repeats))
    return total


def step_profile(batches, networks, repeats=20):
    """Milliseconds of forward, backprop (forward included) and the Adam step, per batch size and
    ensemble size, for the default's network, one BLAS thread (see 3. above)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    rows = []
    with threadpool_limits(1):
        a = np.ones(1 << 25, np.float32)
        b = np.empty_like(a)
        bandwidth = 2 * a.nbytes / best_time(lambda: np.copyto(b, a), 5)
        for k in networks:
            stack = MLPStack([MLP([2952, 1024, 512, 50], loss="cross_entropy", rng=j) for j in range(k)])
            opt = make_optimizer("adam", 3e-4, weight_decay=1e-3)
            size = sum(p.size for p in stack.params)
            for bs in batches:
                X = rng.standard_normal((bs, 2952), dtype=np.float32)
                Y = np.eye(50, dtype=np.float32)[rng.integers(0, 50, bs)]
                A = rng.standard_normal((bs + k, 2952), dtype=np.float32)
                stack.backprop(X, Y)
                opt.step(stack)
                each = lambda fn: min(best_time(lambda: [fn() for _ in range(repeats)], 1) for _ in range(3)) / repeats  # noqa: E731
                forward, backprop = each(lambda: stack.forward(X)), each(lambda: stack.backprop(X, Y))
                step = each(lambda: opt.step(stack))
                matmul = each(lambda: A @ stack.weights[0])
                rows.append({"networks": k, "batch_size": bs, "forward_ms": 1e3 * forward, "backprop_ms": 1e3 * backprop,
                             "adam_ms": 1e3 * step, "step_ms": 1e3 * (backprop + step), "x_w1_ms": 1e3 * matmul,
                             "adam_memory_ms": 1e3 * 7 * 4 * size / bandwidth, "per_row_ms": 1e3 * (backprop + step) / bs})
    print(f"\none training step of 2952-1024-512-50 (Adam, input bias), one thread, ms (copy bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s)")
    print(f"{'networks':>8}{'batch':>6}{'forward':>9}{'backprop':>9}{'adam':>7}{'step':>7}{'X@W1':>7}{'adam floor':>11}"
          f"{'per row':>9}")
    for r in rows:
        print(f"{r['networks']:8d}{r['batch_size']:6d}{r['forward_ms']:9.1f}{r['backprop_ms']:9.1f}{r['adam_ms']:7.1f}"
              f"{r['step_ms']:7.1f}{r['x_w1_ms']:7.1f}{r['adam_memory_ms']:11.1f}{r['per_row_ms']:9.3f}")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--n", type=int, default=2000, help="samples (default 2000)")
    p.add_argument("--dim", type=int, default=5000, help="input features (default 5000)")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--classes", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="runs per timing; the best counts")
    p.add_argument("--roofline-batches", type=int, nargs="+", default=[32, 200],
                   help="batch sizes for the GFLOP/s table (default 32 200)")
    p.add_argument("--float64", action="store_true",
                   help="also time sklearn on float64 data (its precision for float64 input; slow)")
    p.add_argument("--threads", type=int, help="BLAS threads for both sides (default: BLAS's own)")
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat (a smoke test)")
    p.add_argument("--step", action="store_true", help="only profile the default's training step (3. above)")
    p.add_argument("--step-batches", type=int, nargs="+", default=[32, 64, 128])
    args = p.parse_args(argv)
    if args.step:
        rows = step_profile(args.step_batches, [1, 3])
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        return rows
    if args.threads:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
    if args.quick:
        args.n, args.dim, args.hidden, args.epochs, args.repeats = 400, 500, 128, 2, 1
    warnings.filterwarnings("ignore", message=".*Stochastic Optimizer.*")  # sklearn's max_iter note

    X, y = data(args.n, args.dim, args.classes)
    X64 = X.astype(np.float64)  # what sklearn trains in when handed float64 data (its default)
    result = {"machine": {"python": platform.python_version(), "numpy": np.__version__,
                          "cpus": os.cpu_count(), "processor": platform.processor()},
              "config": {k: v for k, v in vars(args).items() if k != "json"}}
    try:
        from threadpoolctl import threadpool_info
        result["machine"]["blas"] = [(i["internal_api"], i["num_threads"]) for i in threadpool_info()]
    except ImportError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result["machine"]["load_average_1min"] = load
    print(f"machine: {os.cpu_count()} cpus, BLAS threads {result['machine'].get('blas')}, "
          f"load average {load:.1f} (timings from a busy machine are noisy)")
    print(f"data: {args.n} x {args.dim} float32, {args.classes} classes; network {args.dim}-{args.hidden}-"
          f"{args.classes} tanh/softmax/cross-entropy; batch {args.batch_size}, {args.epochs} epochs, "
          f"best of {args.repeats}")

    # 1. against sklearn and torch (interleaved so a load spike hits every side alike)
    has_torch = torch_fit("sgd", argparse.Namespace(**{**vars(args), "epochs": 0}), X[:2], y[:2]) is not None
    rows = []
    for solver in ("adam", "sgd"):
        t_ours = t_b0 = t_sk = t_sk64 = t_torch = float("inf")
        for _ in range(args.repeats):
            t_ours = min(t_ours, best_time(lambda: ours(solver, args).fit(X, y), 1))
            t_b0 = min(t_b0, best_time(lambda: ours(solver, args, input_bias=True).fit(X, y), 1))
            t_sk = min(t_sk, best_time(lambda: theirs(solver, args).fit(X, y), 1))
            if has_torch:
                t_torch = min(t_torch, best_time(lambda: torch_fit(solver, args, X, y), 1))
            if args.float64:
                t_sk64 = min(t_sk64, best_time(lambda: theirs(solver, args).fit(X64, y), 1))
        rows.append({"solver": solver, "ours_s": t_ours, "ours_with_b0_s": t_b0, "sklearn_s": t_sk,
                     "ratio": t_ours / t_sk, "ratio_with_b0": t_b0 / t_sk,
                     "torch_s": t_torch if has_torch else None,
                     "ratio_vs_torch": t_ours / t_torch if has_torch else None,
                     "sklearn_float64_s": t_sk64 if args.float64 else None,
                     "ratio_vs_float64": t_ours / t_sk64 if args.float64 else None})
    result["vs_sklearn"] = rows
    print("\nversus sklearn MLPClassifier and PyTorch (whole fit, seconds; ratio = ours / sklearn, target <= 0.5)")
    print("  ours: float32, no input bias (sklearn's architecture); ours+b0: with the input bias;")
    print("  sklearn: on the same float32 data (trains in float32)"
          + ("; sklearn64: on float64 data" if args.float64 else ""))
    print(f"{'solver':8}{'ours':>8}{'ours+b0':>9}{'sklearn':>9}{'ratio':>7}{'ratio+b0':>10}"
          + (f"{'torch':>8}{'ours/torch':>12}" if has_torch else "")
          + (f"{'sklearn64':>11}{'ratio64':>9}" if args.float64 else ""))
    for r in rows:
        print(f"{r['solver']:8}{r['ours_s']:8.2f}{r['ours_with_b0_s']:9.2f}{r['sklearn_s']:9.2f}"
              f"{r['ratio']:7.2f}{r['ratio_with_b0']:10.2f}"
              + (f"{r['torch_s']:8.2f}{r['ratio_vs_torch']:12.2f}" if has_torch else "")
              + (f"{r['sklearn_float64_s']:11.2f}{r['ratio_vs_float64']:9.2f}" if args.float64 else ""))
    if not has_torch:
        print("  (PyTorch not installed: `pip install torch` adds it as a peer)")

    # 2. against the roofline
    rng = np.random.default_rng(1)
    roof = []
    for b in args.roofline_batches:
        for solver in ("sgd", "adam"):
            shapes, per_batch = flops_per_batch(b, args.dim, args.hidden, args.classes, True)
            batches = args.n / b
            epoch_flops = per_batch * batches
            best_epoch = float("inf")
            best_roof = float("inf")
            for _ in range(args.repeats):
                best_roof = min(best_roof, roofline_seconds(shapes, 1, rng) * batches)
                clf = ours(solver, args, input_bias=True, batch_size=b).fit(X, y)
                best_epoch = min(best_epoch, min(h["seconds"] for h in clf.history_))
            roof.append({"batch_size": b, "solver": solver, "epoch_s": best_epoch, "roofline_epoch_s": best_roof,
                         "gflops": epoch_flops / best_epoch / 1e9, "roofline_gflops": epoch_flops / best_roof / 1e9,
                         "fraction": best_roof / best_epoch})
    result["roofline"] = roof
    print(f"\nthroughput of training (network {args.dim}-{args.hidden}-{args.classes} with input bias) "
          f"against plain float32 A @ B of the same shapes; target >= 50 %")
    print(f"{'batch':>6} {'solver':7}{'epoch s':>9}{'GFLOP/s':>9}{'roofline':>10}{'fraction':>10}")
    for r in roof:
        print(f"{r['batch_size']:6d} {r['solver']:7}{r['epoch_s']:9.3f}{r['gflops']:9.1f}"
              f"{r['roofline_gflops']:10.1f}{100 * r['fraction']:9.0f}%")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"\nwritten to {args.json}")
    return result


if __name__ == "__main__":
    main()
