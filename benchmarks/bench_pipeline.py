"""The whole pipeline, cold and warm, and its cross-validation against peers doing equal work.

    python benchmarks/bench_pipeline.py --source /tmp/ESC-50-dev.zip [--pipeline default]
        [--set training.max_epochs=20 ...] [--threads 2] [--json out.json] [--profile cold.prof] [--skip-peers]

1. cold: a fresh data root -- extract and verify the archive, compute features, cross-validate,
   write the report -- with the wall time of each stage and of each fold's training, as the
   pipeline is configured (its own ``[evaluation] n_jobs``);
2. warm: the same run again on that data root (dataset and feature cache present);
3. the ensemble: the pipeline's cross-validation on the cached features and augmented copies,
   as it runs it (folds on ``[evaluation] n_jobs`` workers), four ways -- ``n_networks``
   independent networks fused (one product per layer for all of them, the last round of folds
   cut into parts), the same
   networks trained as ``k`` separate ones (``k`` cross-validations of one network, each its own
   seed and row order, probabilities averaged: how ensembles trained before), ``n_networks``
   snapshots of one network (``model.ensemble = "snapshots"``: its schedule run ``k`` times,
   each end a member), and one network alone -- with the ratios to one network (skipped for a
   pipeline of one network);
4. equal work: the pipeline's cross-validation redone on the cached features by
     ours     ``esc50ann.model.ANNClassifier`` (fit and predict per fold, as the peers),
     sklearn  ``StandardScaler + MLPClassifier``,
     torch    a plain PyTorch CPU loop (``nn.Linear``-``Tanh``-``Linear``; only if torch is
              importable: ``pip install torch``, CPU build; never a dependency of esc50ann),
   each with the same features and folds, folds in series, the same BLAS/torch thread count
   (``--threads``), the same network (hidden sizes, tanh, softmax, Glorot-uniform start; the
   input bias b0 where the pipeline has one -- sklearn cannot have it), the same loss, the same
   standardisation fit on the training folds, the same optimizer and learning rate, batch size
   and number of epochs at a constant learning rate (sklearn has no cosine decay; the schedule
   costs nothing measurable) (no early stopping: sklearn with ``tol=0`` and ``n_iter_no_change``
   past the last epoch), and the same L2 decay on the weight matrices only (sklearn divides
   ``alpha`` by the batch size, so ``alpha = weight_decay * batch_size``; torch gets
   ``weight_decay`` on the weight matrices' parameter group), one network per side (the
   pipeline's ``n_networks`` ensemble and ``mixup`` are set aside: the peers have neither) and
   the clips' own features only (no augmented copies, on any side). sklearn has no squared-error
   classifier: with ``loss = "squared_error"`` it is skipped;
5. ``RandomForestClassifier(500)`` on the same folds, for scale (not equal work).

Prints a table; ``--json`` also writes it. Peak memory is the maximum resident size of this
process and of its worker processes (``resource.getrusage``).
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from esc50ann.evaluate import cross_validate
from esc50ann.model import ANNClassifier, default_params
from esc50ann.pipeline import Pipeline


def peak_mib() -> dict[str, float]:
    # Worker processes count in RUSAGE_CHILDREN only once they have exited and been waited for.
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self": round(own, 1), "workers": round(children, 1)}


def timed_run(pipeline: str, data_dir: Path, source: str, out: Path, overrides: dict) -> dict:
    pipe = Pipeline.from_toml(pipeline, data_dir=data_dir, source=source, progress=False, overrides=overrides or None)
    start = time.perf_counter()
    run = pipe.run(out=out)
    total = time.perf_counter() - start
    stages = dict(pipe.timings)
    return {"total_s": total, "stages_s": stages, "fold_train_s": run.metrics["fold_train_seconds"],
            "accuracy_mean": run.metrics["accuracy_mean"], "accuracy_std": run.metrics["accuracy_std"],
            "excluding_dataset_s": total - stages.get("dataset", 0.0), "pipe": pipe, "run": run}


def summary(accuracies: list[float], seconds: float) -> dict:
    return {"accuracy_mean": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies, ddof=1)),
            "fold_accuracy": accuracies, "cv_s": seconds}


# --------------------------------------------------------------------------- equal-work peers

def ensemble_cv(X, dataset, params, evaluation, X_aug=None) -> dict | None:
    """The pipeline's cross-validation fused, as k separate networks, and of one network (see 3.)."""
    k = params["n_networks"]
    if k == 1:
        return None
    run = lambda p: cross_validate(X, dataset, p, validation=evaluation.validation, refit=evaluation.refit,  # noqa: E731
                                   n_jobs=evaluation.n_jobs, progress=False, X_aug=X_aug)
    out = {}
    for name, kind in (("fused", "independent"), ("snapshots", "snapshots")):
        start = time.perf_counter()
        cv = run({**params, "ensemble": kind})
        out[name] = summary(list(cv.fold_accuracy.values()), time.perf_counter() - start)
    start = time.perf_counter()
    members = [run({**params, "n_networks": 1, "ensemble": "independent", "random_state": params["random_state"] * 1000 + j}) for j in range(k)]
    seconds = time.perf_counter() - start
    folds = list(members[0].fold_accuracy)
    accuracies = []
    for fold in folds:
        proba = np.mean([m.folds[fold].proba for m in members], axis=0)
        accuracies.append(float(np.mean(members[0].classes[proba.argmax(axis=1)] == members[0].folds[fold].y_true)))
    out["separate"] = summary(accuracies, seconds)
    start = time.perf_counter()
    cv = run({**params, "n_networks": 1, "ensemble": "independent"})
    out["one"] = summary(list(cv.fold_accuracy.values()), time.perf_counter() - start)
    out["n_networks"], out["default"] = k, {"independent": "fused", "snapshots": "snapshots"}[params["ensemble"]]
    return out


def ours_cv(X, y, fold_of, folds, params, threads) -> dict:
    # Fit by fit, as the peers are: cross_validate runs in-process tasks on one BLAS thread (as its
    # workers do), which would hold ours to one thread against the peers' ``threads``.
    def fit_predict(Xtr, ytr, Xte):
        return ANNClassifier(**{**params, "standardize": False}).fit(Xtr, ytr).predict(Xte)

    start = time.perf_counter()
    with threadpool_limits(threads):
        accuracies = each_fold(X, y, fold_of, folds, fit_predict)
    return summary(accuracies, time.perf_counter() - start)


def each_fold(X, y, fold_of, folds, fit_predict) -> list[float]:
    """Accuracy of ``fit_predict(X_train, y_train, X_test)`` per test fold, standardised on the training rows."""
    accuracies = []
    for k in folds:
        train, test = fold_of != k, fold_of == k
        scaler = StandardScaler().fit(X[train])
        predicted = fit_predict(scaler.transform(X[train]).astype(np.float32), y[train],
                                scaler.transform(X[test]).astype(np.float32))
        accuracies.append(float(np.mean(predicted == y[test])))
    return accuracies


def sklearn_cv(X, y, fold_of, folds, params, threads) -> dict | None:
    if params["loss"] != "cross_entropy":
        return None  # MLPClassifier always minimises log-loss
    solver = {"adam": "adam", "sgd": "sgd", "momentum": "sgd"}[params["solver"]]
    extra = ({"momentum": params["momentum"] if params["solver"] == "momentum" else 0.0,
              "nesterovs_momentum": False, "learning_rate": "constant"} if solver == "sgd" else {})

    def fit_predict(Xtr, ytr, Xte):
        model = MLPClassifier(params["hidden_layer_sizes"], activation="tanh", solver=solver,
                              learning_rate_init=params["learning_rate"],
                              alpha=params["weight_decay"] * params["batch_size"],  # sklearn divides by the batch
                              batch_size=params["batch_size"], max_iter=params["max_epochs"], tol=0.0,
                              n_iter_no_change=params["max_epochs"] + 1, early_stopping=False,
                              shuffle=True, random_state=0, **extra)
        return model.fit(Xtr, ytr).predict(Xte)

    start = time.perf_counter()
    with threadpool_limits(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "max_iter reached": intended, every epoch runs
        accuracies = each_fold(X, y, fold_of, folds, fit_predict)
    return summary(accuracies, time.perf_counter() - start)


def torch_cv(X, y, fold_of, folds, params, threads) -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)

    def fit_predict(Xtr, ytr, Xte):
        classes, target = np.unique(ytr, return_inverse=True)
        torch.manual_seed(0)
        net = TorchMLP(Xtr.shape[1], params["hidden_layer_sizes"], len(classes), params["input_bias"])
        weights = [p for name, p in net.named_parameters() if name.endswith("weight")]
        others = [p for name, p in net.named_parameters() if not name.endswith("weight")]
        groups = [{"params": weights, "weight_decay": params["weight_decay"]},
                  {"params": others, "weight_decay": 0.0}]
        lr = params["learning_rate"]
        if params["solver"] == "adam":
            opt = torch.optim.Adam(groups, lr=lr)
        else:
            opt = torch.optim.SGD(groups, lr=lr, momentum=params["momentum"] if params["solver"] == "momentum" else 0.0)
        Xt, yt = torch.from_numpy(Xtr), torch.from_numpy(target)
        onehot = torch.eye(len(classes))[yt]
        for _ in range(params["max_epochs"]):
            for idx in torch.randperm(len(Xt)).split(params["batch_size"]):
                logits = net(Xt[idx])
                if params["loss"] == "cross_entropy":
                    loss = torch.nn.functional.cross_entropy(logits, yt[idx])
                else:  # the write-ups' squared error on the softmax output, summed over classes
                    loss = ((torch.softmax(logits, 1) - onehot[idx]) ** 2).sum(1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            return classes[net(torch.from_numpy(Xte)).argmax(1).numpy()]

    start = time.perf_counter()
    accuracies = each_fold(X, y, fold_of, folds, fit_predict)
    return summary(accuracies, time.perf_counter() - start)


def TorchMLP(n_in, hidden, n_out, input_bias):
    """x (+ b0) -> Linear-Tanh per hidden layer -> Linear; Glorot-uniform weights, zero biases (as ours)."""
    import torch

    class InputBias(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b0 = torch.nn.Parameter(torch.zeros(n_in))

        def forward(self, x):
            return x + self.b0

    layers, sizes = ([InputBias()] if input_bias else []), [n_in, *hidden, n_out]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = torch.nn.Linear(a, b)
        torch.nn.init.xavier_uniform_(linear.weight)
        torch.nn.init.zeros_(linear.bias)
        layers += [linear] + ([torch.nn.Tanh()] if i < len(sizes) - 2 else [])
    return torch.nn.Sequential(*layers)


def forest_cv(X, y, fold_of, folds) -> dict:
    start = time.perf_counter()
    accuracies = each_fold(X, y, fold_of, folds, lambda Xtr, ytr, Xte: RandomForestClassifier(
        500, n_jobs=-1, random_state=0).fit(Xtr, ytr).predict(Xte))
    return summary(accuracies, time.perf_counter() - start)


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="dataset archive (.zip) or extracted folder")
    parser.add_argument("--pipeline", default="default", help="pipeline file or name (default: default)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="BLAS / torch threads for every side of the equal-work comparison (default: all cores)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--profile", type=Path, help="cProfile the cold run into this file and print its top 15")
    parser.add_argument("--skip-peers", action="store_true", help="only cold and warm runs")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a pipeline key for every run (repeatable), e.g. training.max_epochs=20")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value) if value[:1] in "[{0123456789-tf" else value

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        data_dir = Path(tmp) / "data"
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        cold = timed_run(args.pipeline, data_dir, args.source, Path(tmp) / "cold", overrides)
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
            pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(15)
        warm = timed_run(args.pipeline, data_dir, args.source, Path(tmp) / "warm", overrides)
        pipe, run = warm.pop("pipe"), warm.pop("run")
        cold.pop("pipe"), cold.pop("run")
        results = {"pipeline": args.pipeline, "overrides": overrides, "cpu_count": os.cpu_count(), "threads": args.threads,
                   "load_average_1min": os.getloadavg()[0], "cold": cold, "warm": warm}
        if not args.skip_peers:
            feats = pipe.features()
            X, dataset = np.asarray(feats.X), feats.dataset
            results["ensemble"] = ensemble_cv(X, dataset, {**default_params(), **pipe.config.estimator_params()},
                                              pipe.config.evaluation, X_aug=feats.X_aug)
            # every parameter explicit (defaults filled in), fixed epochs: no early stopping anywhere
            # one network on each side: the peers have no ensembles (nor mixing) of their own
            params = {**default_params(), **pipe.config.estimator_params(), "patience": None, "n_networks": 1,
                      "ensemble": "independent", "mixup": 0.0, "lr_schedule": "constant", "warmup_epochs": 0,
                      "average_epochs": 0, "clip_norm": None}
            folds = run.metrics["folds"]
            y, fold_of = dataset.targets, dataset.meta["fold"].to_numpy()
            results["equal_work"] = {
                "held_equal": {k: params[k] for k in ("hidden_layer_sizes", "activation", "loss", "input_bias", "solver",
                                                      "learning_rate", "batch_size", "max_epochs", "weight_decay")},
                "ours": ours_cv(X, y, fold_of, folds, params, args.threads),
                "sklearn": sklearn_cv(X, y, fold_of, folds, params, args.threads),
                "torch": torch_cv(X, y, fold_of, folds, params, args.threads),
            }
            results["random_forest"] = forest_cv(X, y, fold_of, folds)
        results["peak_memory_mib"] = peak_mib()

    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def print_table(r: dict) -> None:
    cold, warm = r["cold"], r["warm"]
    acc = lambda d: f"{100 * d['accuracy_mean']:.1f} ± {100 * d['accuracy_std']:.1f} %"  # noqa: E731
    print(f"\npipeline {r['pipeline']} {r['overrides'] or ''} on {r['cpu_count']} cores "
          f"(load average {r['load_average_1min']:.1f})")
    print(f"{'run':<40}{'wall s':>9}{'accuracy':>16}")
    print(f"{'cold (all stages)':<40}{cold['total_s']:>9.1f}{acc(cold):>16}")
    print(f"{'cold, excluding dataset stage':<40}{cold['excluding_dataset_s']:>9.1f}")
    print(f"{'warm (dataset + cache present)':<40}{warm['total_s']:>9.1f}{acc(warm):>16}")
    print("\nstage times (s)      cold      warm")
    for stage in cold["stages_s"]:
        print(f"  {stage:<16}{cold['stages_s'][stage]:>8.2f}{warm['stages_s'].get(stage, 0.0):>10.2f}")
    print("  per-fold training (warm): " + ", ".join(f"fold {k} {v:.1f}" for k, v in warm["fold_train_s"].items()))
    if r.get("ensemble"):
        e = r["ensemble"]
        print(f"\nthe ensemble of {e['n_networks']}, cross-validated as the pipeline runs it (cached features)")
        print(f"{'':<44}{'CV s':>9}{'accuracy':>16}{'/ one network':>15}")
        for name, label in (("fused", f"{e['n_networks']} independent networks fused"),
                            ("separate", f"{e['n_networks']} separate networks"),
                            ("snapshots", f"{e['n_networks']} snapshots of one network"), ("one", "one network")):
            d = e[name]
            print(f"{label + (' (the pipeline)' if name == e['default'] else ''):<44}{d['cv_s']:>9.1f}{acc(d):>16}"
                  f"{d['cv_s'] / e['one']['cv_s']:>14.2f}x")
    if "equal_work" in r:
        eq = r["equal_work"]
        print(f"\nequal work: folds in series, {r['threads']} threads each, held equal: "
              + ", ".join(f"{k}={v}" for k, v in eq["held_equal"].items()))
        print(f"{'':<12}{'CV s':>9}{'accuracy':>16}{'ours / it':>11}")
        for name in ("ours", "sklearn", "torch"):
            d = eq[name]
            if d is None:
                print(f"{name:<12}{'skipped (torch not installed / sklearn has no squared error)':>40}")
                continue
            print(f"{name:<12}{d['cv_s']:>9.1f}{acc(d):>16}{eq['ours']['cv_s'] / d['cv_s']:>10.2f}x")
        forest = r["random_forest"]
        print(f"{'forest(500)':<12}{forest['cv_s']:>9.1f}{acc(forest):>16}   (not equal work: for scale)")
    print(f"peak memory MiB: {r['peak_memory_mib']}")


if __name__ == "__main__":
    sys.exit(main())
