"""Where the default pipeline's accuracy comes from, over seeds, fold by fold.

    python benchmarks/bench_accuracy.py --source /tmp/ESC-50-dev.zip [--seeds 0 1 2]
        [--rows default one-network ...] [--data-dir DIR] [--json out.json]

Every row is a built-in pipeline -- mostly the default (``pipelines/default.toml``) -- with some
keys changed (``ROWS`` below: the ingredient it changes), cross-validated over every fold the
metadata lists once per seed (``training.random_state``), folds in parallel as the pipeline
runs them. Two rows change how training runs rather than a key:

* ``double``: every training clip twice per epoch, so an epoch has the updates of the full
  ESC-50's 1600-clip training folds (the development copy's folds have 800): the constant
  learning rate's loss spikes appeared there, and do here;
* ``separate``: the ensemble trained as ``k`` separate networks, each with its own shuffles
  (``k`` cross-validations of one network, their probabilities averaged), against the fused
  ensemble, whose networks share one order of the rows.

Per row it prints every seed's fold-mean accuracy and folds, the mean and sample standard
deviation over seeds (an ingredient counts as a gain only beyond it), the worst fold, how many
networks ended on a spike of their training loss (the run's warnings) and the highest ratio of
a kept epoch's training loss to its minimum (and of the loss plus the weight penalty, which is
what training minimises), and the median wall time of one seed's
cross-validation. For the default row, how fast the trainer ran: against plain float32
``A @ B`` of the step's shapes (the matmul roofline) and against the step's memory traffic at
this machine's copy bandwidth (Adam's update at batch 32 is memory-bound).

The features of every row are computed once and cached under ``--data-dir`` (default a
temporary folder); the time column is training and scoring only. Timings are noisy on a shared
machine: compare rows of one run.
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
from esc50ann.evaluate import cross_validate  # noqa: E402
from esc50ann.pipeline import Pipeline  # noqa: E402

# Most rows were measured before nested cross-validation moved the default's weight decay from
# 1e-3 to 3e-3 (sweeps/default-decay.toml) and before it took the pitch-shifted copies
# (sweeps/default-pitch.toml): they keep the earlier decay and no copies, so that what they print
# is what the README reports.
NO_PITCH = {"features.pitch_shifts": []}
EARLIER = {"training.weight_decay": 1e-3, **NO_PITCH}
SINGLE = {"model.n_networks": 1, **EARLIER}
CONSTANT = {"training.lr_schedule": "constant"}
# name -> (what it is, the pipeline, the keys it changes there, how training runs). Rows below
# "one-network" take their ingredient out of one network (the ensemble costs three times as much).
ROWS = {
    "default": ("the default pipeline", "default", {}, {}),
    "previous-default": ("the default without the pitch-shifted copies (the default before them)", "default",
                         NO_PITCH, {}),
    "ensemble-decay-1e-3": ("the earlier default: the same ensemble at weight decay 1e-3", "default", EARLIER, {}),
    "constant": ("the earlier default at a constant learning rate (the earlier trainer), 30 epochs", "default",
                 {**CONSTANT, **EARLIER, "training.max_epochs": 30}, {}),
    "epochs-30": ("the earlier default over 30 epochs", "default", {**EARLIER, "training.max_epochs": 30}, {}),
    "separate": ("the earlier default's ensemble as separate networks, each with its own row order", "default",
                 EARLIER, {"separate": True}),
    "default-decay-1e-3": ("the default at weight decay 1e-3 (its decay was chosen without the copies)", "default",
                           {"training.weight_decay": 1e-3}, {}),
    "default-one-layer": ("the default with one hidden layer of 1024 (its depth was chosen without the copies)",
                          "default", {"model.hidden_layer_sizes": [1024]}, {}),
    "five-networks": ("an ensemble of five networks instead of three", "default", {"model.n_networks": 5}, {}),
    "pitch-shifts": ("one network, pitch-shifted copies (-2 and +2 semitones) trained alongside each clip",
                     "default", {**SINGLE, "features.pitch_shifts": [-2.0, 2.0]}, {}),
    "pitch-shifts-3e-3": ("one network of the default (weight decay 3e-3, pitch-shifted copies)", "default",
                          {"model.n_networks": 1}, {}),
    "snapshots": ("the ensemble as snapshots of one network: the cosine run three times over the 60 epochs, "
                  "each cycle's end a member (the work of one network)", "default",
                  {"model.ensemble": "snapshots", **EARLIER}, {}),
    "snapshots-90": ("... over 90 epochs (three cycles of 30)", "default",
                     {"model.ensemble": "snapshots", "training.max_epochs": 90, **EARLIER}, {}),
    "one-network": ("one network of the earlier default (weight decay 1e-3)", "default", SINGLE, {}),
    "one-constant": ("one network at a constant learning rate, 30 epochs", "default",
                     {**SINGLE, **CONSTANT, "training.max_epochs": 30}, {}),
    "one-double": ("one network, 30 epochs, every clip twice an epoch (the full folds' updates)", "default",
                   {**SINGLE, "training.max_epochs": 30}, {"double": True}),
    "one-constant-double": ("... at a constant learning rate, 30 epochs: the loss spikes of the full folds",
                            "default", {**SINGLE, **CONSTANT, "training.max_epochs": 30}, {"double": True}),
    "one-constant-double-clip": ("... with each gradient clipped to norm 0.5 (late-epoch norms are 0.1, the "
                                 "first epoch's 7)", "default",
                                 {**SINGLE, **CONSTANT, "training.max_epochs": 30, "training.clip_norm": 0.5},
                                 {"double": True}),
    "one-constant-double-eps": ("... with Adam's eps 1e-5 instead of 1e-8", "default",
                                {**SINGLE, **CONSTANT, "training.max_epochs": 30, "training.epsilon": 1e-5},
                                {"double": True}),
    "one-average": ("one network, its weights averaged over the last 15 of the 60 epochs", "default",
                    {**SINGLE, "training.average_epochs": 15}, {}),
    "one-swa": ("one network, the cosine to a floor of 0.2 and the weights averaged over the last 20 epochs",
                "default", {**SINGLE, "training.lr_floor": 0.2, "training.average_epochs": 20}, {}),
    "no-modulation": ("one network, without the modulation spectra", "default",
                      {**SINGLE, "features.modulation": []}, {}),
    "one-layer": ("one network of one hidden layer (1024)", "default",
                  {**SINGLE, "model.hidden_layer_sizes": [1024]}, {}),
    "width-2048": ("one network of one hidden layer of 2048", "default",
                   {**SINGLE, "model.hidden_layer_sizes": [2048]}, {}),
    "batch-64": ("one network, batch 64 at twice the learning rate", "default",
                 {**SINGLE, "training.batch_size": 64}, {"lr_scale": 2}),
    "one-epochs-30": ("one network, 30 epochs", "default", {**SINGLE, "training.max_epochs": 30}, {}),
    "decay-3e-4": ("one network, weight decay 3e-4", "default", {**SINGLE, "training.weight_decay": 3e-4}, {}),
    "decay-3e-3": ("one network, weight decay 3e-3", "default", {**SINGLE, "training.weight_decay": 3e-3}, {}),
    "decay-1e-2": ("one network, weight decay 1e-2", "default", {**SINGLE, "training.weight_decay": 1e-2}, {}),
    "lr-1e-4": ("one network, learning rate 1e-4", "default", {**SINGLE, "training.learning_rate": 1e-4}, {}),
    "lr-6e-4": ("one network, learning rate 6e-4", "default", {**SINGLE, "training.learning_rate": 6e-4}, {}),
    "mixup-60": ("one network, mixing (mixup 0.4) over 60 epochs", "default",
                 {**SINGLE, "training.mixup": 0.4}, {}),
    "mixup-100": ("one network, mixing (mixup 0.4) over 100 epochs", "default",
                  {**SINGLE, "training.mixup": 0.4, "training.max_epochs": 100}, {}),
    "writeups-network": ("the write-ups' network (b0, 1024 tanh, softmax, squared error, plain SGD) on these "
                         "features", "original-features", {}, {}),
}


def cross_validate_row(pipe: Pipeline, seed: int, options: dict):
    """(CVResult, seconds) of ``pipe`` with ``training.random_state = seed``, run as ``options`` say."""
    feats = pipe.features()
    X, evaluation = np.asarray(feats.X), pipe.config.evaluation
    params = {**pipe.config.estimator_params(), "random_state": seed}
    if "lr_scale" in options:
        params["learning_rate"] *= options["lr_scale"]
    # the pitch-shifted copies of the clips where the pipeline makes them; "double": each clip's one "copy" is itself
    X_aug = X[:, None, :] if options.get("double") else None if feats.X_aug is None else np.asarray(feats.X_aug)
    run = lambda p: cross_validate(X, feats.dataset, p, validation=evaluation.validation,  # noqa: E731
                                   refit=evaluation.refit, n_jobs=evaluation.n_jobs, progress=False, X_aug=X_aug)
    start = time.perf_counter()
    if not options.get("separate"):
        return run(params), time.perf_counter() - start
    k = params["n_networks"]
    members = [run({**params, "n_networks": 1, "random_state": seed * 1000 + j}) for j in range(k)]
    cv = members[0]
    for fold, result in cv.folds.items():  # the ensemble's probabilities: the mean over its members
        result.proba = np.mean([m.folds[fold].proba for m in members], axis=0)
        result.y_pred = cv.classes[np.argmax(result.proba, axis=1)]
        result.histories = [h for m in members for h in m.folds[fold].histories]
        result.best_epochs = [e for m in members for e in m.folds[fold].best_epochs]
    return cv, time.perf_counter() - start


def step_shapes(b: int, sizes: list[int], k: int, input_bias: bool) -> list[tuple]:
    """The matmul operand shapes of one fused training step of ``k`` networks on ``b`` rows:
    ``(batch, (m, kk), (kk, n))`` -- the first layer one product over the rows and the ``k``
    input biases, every later layer ``k`` products (forward, weight gradient, input gradient),
    and ``db0_j = W1_j db1_j``."""
    rows = b + (k if input_bias else 0)
    shapes = [(1, (rows, sizes[0]), (sizes[0], k * sizes[1])),      # forward
              (1, (sizes[0], rows), (rows, k * sizes[1]))]          # dW1 = [X; b0]^T delta1
    for n_in, n_out in zip(sizes[1:-1], sizes[2:]):
        shapes += [(k, (b, n_in), (n_in, n_out)), (k, (n_in, b), (b, n_out)), (k, (b, n_out), (n_out, n_in))]
    if input_bias:
        shapes.append((k, (sizes[0], sizes[1]), (sizes[1], 1)))
    return shapes


def copy_bandwidth() -> float:
    """Bytes per second of a large float32 copy, one thread (read + write)."""
    a = np.ones(1 << 25, np.float32)
    b = np.empty_like(a)
    return 2 * a.nbytes / best_time(lambda: np.copyto(b, a), 5)


def roofline(pipe: Pipeline, cv) -> dict:
    """The trainer's speed in the run: its epoch time against plain float32 ``A @ B`` of the
    step's shapes (one BLAS thread, as each parallel fold has) and against the step's least
    memory traffic -- every parameter read by the forward pass, its gradient written, ``W1``
    read again for ``db0``, and Adam's read of parameter, gradient and both moments and write of
    three (10 passes over 4-byte values at the measured copy bandwidth; other solvers fewer)."""
    fold = next(iter(cv.folds.values()))
    model = fold.model
    net, batch, k = model.network_, model.batch_size, len(model.networks_)
    copies = 1 + len(pipe.config.features.pitch_shifts)
    steps = int(np.ceil((len(pipe.download()) - len(fold.test_index)) * copies / batch))  # validation = "none"
    shapes = step_shapes(batch, net.sizes, k, net.input_bias)
    flops = sum(n * 2 * a[0] * a[1] * c[1] for n, a, c in shapes)
    rng = np.random.default_rng(0)
    step_roof = 0.0
    with threadpool_limits(1):
        for n, sa, sb in shapes:
            A = rng.standard_normal((n, *sa) if n > 1 else sa, dtype=np.float32)
            B = rng.standard_normal((n, *sb) if n > 1 else sb, dtype=np.float32)
            step_roof += best_time(lambda: A @ B, 5)
        bandwidth = copy_bandwidth()
    params = k * sum(a * b + b for a, b in zip(net.sizes, net.sizes[1:])) + k * net.sizes[0] * net.input_bias
    passes = {"adam": 10, "momentum": 7, "sgd": 5}[model.solver]
    step_memory = passes * 4 * params / bandwidth
    epoch = float(np.median([h["seconds"] for f in cv.folds.values() for h in f.history]))
    return {"batch_size": batch, "sizes": net.sizes, "n_networks": k, "steps": steps, "epoch_s": epoch,
            "roofline_epoch_s": step_roof * steps, "memory_epoch_s": step_memory * steps,
            "gflops": flops * steps / epoch / 1e9, "fraction": step_roof * steps / epoch,
            "memory_fraction": step_memory * steps / epoch, "bound_fraction": (step_roof + step_memory) * steps / epoch,
            "bandwidth_gb_s": bandwidth / 1e9}


def run_row(name: str, seeds: list[int], data_dir: Path, source: str) -> dict:
    what, pipeline, overrides, options = ROWS[name]
    pipe = Pipeline.from_toml(pipeline, overrides=overrides or None, data_dir=data_dir, source=source,
                              progress=False)
    per_seed, seconds, cv = [], [], None
    for seed in seeds:
        cv, s = cross_validate_row(pipe, seed, options)
        stability = [st for f in cv.folds.values() for st in f.stability]
        per_seed.append({"seed": seed, "accuracy": cv.accuracy_mean,
                         "folds": {str(k): v for k, v in cv.fold_accuracy.items()},
                         "unstable": sum(st["unstable"] for st in stability),
                         "max_loss_ratio": max(st["ratio"] for st in stability),
                         "max_objective_ratio": max(st["objective_ratio"] for st in stability)})
        seconds.append(s)
    accuracies = [p["accuracy"] for p in per_seed]
    row = {"row": name, "what": what, "pipeline": pipeline, "overrides": overrides, "options": options,
           "seeds": per_seed, "mean": float(np.mean(accuracies)),
           "std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0,
           "worst_fold": min(min(p["folds"].values()) for p in per_seed),
           "unstable": sum(p["unstable"] for p in per_seed),
           "max_loss_ratio": max(p["max_loss_ratio"] for p in per_seed),
           "max_objective_ratio": max(p["max_objective_ratio"] for p in per_seed), "cv_s": float(np.median(seconds))}
    if name == "default":
        pipe.config = config_mod.override(pipe.config, {"training.random_state": seeds[-1]})
        row["roofline"] = roofline(pipe, cv)
    return row


def print_row(r: dict) -> None:
    seeds = "; ".join(f"seed {p['seed']}: {100 * p['accuracy']:.1f} ("
                      + " / ".join(f"{100 * v:.1f}" for v in p["folds"].values()) + ")" for p in r["seeds"])
    print(f"{r['row']:20s} {100 * r['mean']:5.1f} ± {100 * r['std']:3.1f} %  worst fold {100 * r['worst_fold']:4.1f}  "
          f"unstable {r['unstable']} (loss ratio up to {r['max_loss_ratio']:.2f}, with the weight penalty "
          f"{r['max_objective_ratio']:.2f})  {r['cv_s']:6.1f} s  {seeds}",
          flush=True)


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
            results.append(run_row(name, args.seeds, data_dir, args.source))
            print_row(results[-1])
            if args.json:
                args.json.write_text(json.dumps(results, indent=2))

    print(f"\naccuracy over seeds {args.seeds}: mean ± sample std of the fold-mean, the worst single fold, the "
          f"networks that ended on a loss spike; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'row':20s} {'accuracy':>13s} {'worst':>6s} {'spikes':>6s} {'CV s':>7s}  what")
    for r in results:
        print(f"{r['row']:20s} {100 * r['mean']:6.1f} ± {100 * r['std']:3.1f} % {100 * r['worst_fold']:5.1f} "
              f"{r['unstable']:6d} {r['cv_s']:7.1f}  {r['what']}")
    for r in results:
        if "roofline" in r:
            f = r["roofline"]
            print(f"\ntrainer in the default run: {f['n_networks']} x {f['sizes']}, batch {f['batch_size']}, "
                  f"{f['steps']} steps an epoch, {f['epoch_s']:.2f} s an epoch: {f['gflops']:.1f} GFLOP/s, "
                  f"{100 * f['fraction']:.0f} % of the matmul roofline (plain float32 A @ B of the step's shapes, one "
                  f"thread: {f['roofline_epoch_s']:.2f} s); the step's least memory traffic at {f['bandwidth_gb_s']:.1f} "
                  f"GB/s takes {f['memory_epoch_s']:.2f} s ({100 * f['memory_fraction']:.0f} %); both together "
                  f"{100 * f['bound_fraction']:.0f} % of the epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
