"""Where the default pipeline's accuracy comes from: an ablation, each ingredient off in turn.

    python benchmarks/bench_accuracy.py --source /tmp/ESC-50-dev.zip [--seeds 0 1 2]
        [--rows default no-modulation ...] [--data-dir DIR] [--json out.json]

Every row is a built-in pipeline -- the default (``pipelines/default.toml``) but for the last --
with some keys changed (``ROWS`` below: the ingredient it takes out), cross-validated over every
fold the metadata lists once per seed (``training.random_state``), folds in parallel as the
pipeline runs them. It prints, per row, the mean and sample standard deviation over seeds of
the fold-mean accuracy, the wall time of one seed's cross-validation, and -- for the default
row -- how fast the trainer ran against plain float32 ``A @ B`` of the same shapes (the
roofline; ``bench_mlp.py`` explains the measure).

The features of every row are computed once and cached under ``--data-dir`` (default a
temporary folder), so rows that share features do not pay for them twice; the time column is
training and scoring only.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mlp import best_time  # noqa: E402

from esc50ann import config as config_mod  # noqa: E402
from esc50ann.pipeline import Pipeline  # noqa: E402

# name -> (what it is, the pipeline, the keys it changes there). The ingredients are taken
# out of one network (the ensemble costs three times as much per row), so each row below
# "one-network" differs from it in one ingredient.
SINGLE = {"model.n_networks": 1}
ROWS = {
    "default": ("the default pipeline (an ensemble of three networks)", "default", {}),
    "one-network": ("one network instead of the ensemble", "default", SINGLE),
    "no-modulation": ("one network, without the modulation spectra", "default",
                      {**SINGLE, "features.modulation": []}),
    "one-layer": ("one network of one hidden layer (1024)", "default",
                  {**SINGLE, "model.hidden_layer_sizes": [1024]}),
    "previous-default": ("the previous default: one network of 1024, no modulation spectra", "default",
                         {**SINGLE, "features.modulation": [], "model.hidden_layer_sizes": [1024]}),
    "writeups-network": ("the write-ups' network (b0, 1024 tanh, softmax, squared error, plain SGD) on these "
                         "features", "original-features", {}),
}


def cross_validate(pipe: Pipeline, seed: int) -> tuple[float, float, object]:
    """(fold-mean accuracy, seconds, CVResult) of ``pipe`` with every random state set to ``seed``."""
    pipe.config = config_mod.override(pipe.config, {"training.random_state": seed})
    start = time.perf_counter()
    cv = pipe.cross_validate()
    return cv.accuracy_mean, time.perf_counter() - start, cv


def layer_shapes(b: int, sizes: list[int], input_bias: bool) -> list[tuple]:
    """The matmul operand shapes of one training step on a batch of ``b`` rows (forward, both
    backward products per layer but the first layer's input gradient, and ``db0 = W1 db1``)."""
    shapes = []
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes.append(((b, n_in), (n_in, n_out)))          # forward
        shapes.append(((n_in, b), (b, n_out)))             # dW = a^T delta
        if l > 0:
            shapes.append(((b, n_out), (n_out, n_in)))     # delta_prev = delta W^T
    if input_bias:
        shapes.append(((sizes[0], sizes[1]), (sizes[1],)))  # db0 = W1 db1
    return shapes


def roofline(pipe: Pipeline, cv) -> dict:
    """The trainer's speed in the run against plain float32 ``A @ B`` of the same shapes, one
    BLAS thread (as each parallel fold has), from the median epoch time over the folds."""
    fold = next(iter(cv.folds.values()))
    net, batch = fold.model.network_, fold.model.batch_size
    copies = 1 + len(pipe.config.features.pitch_shifts)
    steps = (len(pipe.download()) - len(fold.test_index)) * copies / batch  # validation = "none"
    shapes = layer_shapes(batch, net.sizes, net.input_bias)
    flops_per_step = sum(2 * a[0] * a[1] * (c[1] if len(c) == 2 else 1) for a, c in shapes)
    rng = np.random.default_rng(0)
    step_roof = 0.0
    with threadpool_limits(1):
        for sa, sb in shapes:
            A, B = rng.standard_normal(sa, dtype=np.float32), rng.standard_normal(sb, dtype=np.float32)
            step_roof += best_time(lambda: A @ B, 5)
    epoch = float(np.median([h["seconds"] for f in cv.folds.values() for h in f.history]))
    return {"batch_size": batch, "sizes": net.sizes, "epoch_s": epoch, "roofline_epoch_s": step_roof * steps,
            "gflops": flops_per_step * steps / epoch / 1e9, "fraction": step_roof * steps / epoch}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="dataset archive (.zip) or extracted folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--data-dir", type=Path, help="data root to reuse (default: a temporary one)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        results = []
        for name in args.rows:
            what, pipeline, overrides = ROWS[name]
            pipe = Pipeline.from_toml(pipeline, overrides=overrides or None, data_dir=data_dir,
                                      source=args.source, progress=False)
            pipe.features()
            accuracies, seconds = [], []
            for seed in args.seeds:
                acc, s, cv = cross_validate(pipe, seed)
                accuracies.append(acc)
                seconds.append(s)
            row = {"row": name, "what": what, "pipeline": pipeline, "overrides": overrides, "seeds": args.seeds,
                   "accuracy": accuracies, "mean": float(np.mean(accuracies)),
                   "std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0,
                   "cv_s": float(np.median(seconds))}
            if name == "default":
                row["roofline"] = roofline(pipe, cv)
            results.append(row)
            print(f"{name:18s} {100 * row['mean']:5.1f} ± {100 * row['std']:3.1f} %  {row['cv_s']:6.1f} s  {what}",
                  flush=True)

    print(f"\naccuracy over seeds {args.seeds} (mean ± sample std of the fold-mean), "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'row':18s} {'accuracy':>13s} {'CV s':>7s}  what")
    for r in results:
        print(f"{r['row']:18s} {100 * r['mean']:6.1f} ± {100 * r['std']:3.1f} % {r['cv_s']:7.1f}  {r['what']}")
    for r in results:
        if "roofline" in r:
            f = r["roofline"]
            print(f"\ntrainer in the default run: batch {f['batch_size']}, network {f['sizes']}: {f['gflops']:.1f} GFLOP/s, "
                  f"{100 * f['fraction']:.0f} % of plain float32 A @ B of the same shapes (one thread)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
