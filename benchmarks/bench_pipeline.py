"""The whole pipeline, cold and warm, against what a scikit-learn user would do, on the same folds.

    python benchmarks/bench_pipeline.py --source /tmp/ESC-50-dev.zip [--pipeline default] [--json out.json]

1. cold: a fresh data root -- extract and verify the archive, compute features, cross-validate,
   write the report -- with the wall time of each stage and of each fold's training;
2. warm: the same run again on that data root (dataset and feature cache present);
3. the same cross-validation done the scikit-learn way on our cached features:
   ``StandardScaler + MLPClassifier`` with the same hidden layer, and ``RandomForestClassifier(500)``.

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
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from esc50ann.pipeline import Pipeline


def peak_mib() -> dict[str, float]:
    # Worker processes count in RUSAGE_CHILDREN only once they have exited and been waited for.
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self": round(own, 1), "workers": round(children, 1)}


def timed_run(pipeline: str, data_dir: Path, source: str, out: Path) -> dict:
    pipe = Pipeline.from_toml(pipeline, data_dir=data_dir, source=source, progress=False)
    start = time.perf_counter()
    run = pipe.run(out=out)
    total = time.perf_counter() - start
    stages = dict(pipe.timings)  # metrics.json is written inside the report stage, so it lacks that stage
    return {"total_s": total, "stages_s": stages, "fold_train_s": run.metrics["fold_train_seconds"],
            "accuracy_mean": run.metrics["accuracy_mean"], "accuracy_std": run.metrics["accuracy_std"],
            "excluding_dataset_s": total - stages.get("dataset", 0.0), "pipe": pipe, "run": run}


def sklearn_cv(make_model, X, dataset, folds) -> dict:
    """Train on every fold but the test fold (no validation fold: sklearn's own stopping rule)."""
    y, fold_of = dataset.targets, dataset.meta["fold"].to_numpy()
    accuracies, start = [], time.perf_counter()
    for k in folds:
        train, test = fold_of != k, fold_of == k
        model = make_model().fit(X[train], y[train])
        accuracies.append(float(np.mean(model.predict(X[test]) == y[test])))
    return {"accuracy_mean": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies, ddof=1)),
            "cv_s": time.perf_counter() - start}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="dataset archive (.zip) or extracted folder")
    parser.add_argument("--pipeline", default="default", help="pipeline file or name (default: default)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--profile", type=Path, help="cProfile the cold run into this file and print its top 15")
    parser.add_argument("--skip-baselines", action="store_true", help="only cold and warm runs")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        data_dir = Path(tmp) / "data"
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        cold = timed_run(args.pipeline, data_dir, args.source, Path(tmp) / "cold")
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
            pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(15)
        warm = timed_run(args.pipeline, data_dir, args.source, Path(tmp) / "warm")
        pipe = warm.pop("pipe")
        run = warm.pop("run")
        cold.pop("pipe"), cold.pop("run")
        results = {"pipeline": args.pipeline, "cpu_count": os.cpu_count(), "cold": cold, "warm": warm,
                   "ours_cv_s": warm["stages_s"]["cross_validation"]}
        if not args.skip_baselines:
            X, dataset = np.asarray(pipe.features().X), pipe.download()
            params = pipe.config.estimator_params()
            folds = run.metrics["folds"]
            mlp = lambda: make_pipeline(StandardScaler(), MLPClassifier(  # noqa: E731
                params["hidden_layer_sizes"], activation="tanh", solver="adam",
                learning_rate_init=params["learning_rate"], alpha=params["weight_decay"],
                batch_size=params["batch_size"], max_iter=200, random_state=0))
            forest = lambda: RandomForestClassifier(500, n_jobs=-1, random_state=0)  # noqa: E731
            results["sklearn_mlp"] = sklearn_cv(mlp, X, dataset, folds)
            results["random_forest"] = sklearn_cv(forest, X, dataset, folds)
        results["peak_memory_mib"] = peak_mib()

    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def print_table(r: dict) -> None:
    cold, warm = r["cold"], r["warm"]
    print(f"\npipeline {r['pipeline']} on {r['cpu_count']} cores")
    print(f"{'run':<34}{'wall s':>9}{'accuracy':>16}")
    acc = lambda d: f"{100 * d['accuracy_mean']:.1f} ± {100 * d['accuracy_std']:.1f} %"  # noqa: E731
    print(f"{'cold (all stages)':<34}{cold['total_s']:>9.1f}{acc(cold):>16}")
    print(f"{'cold, excluding dataset stage':<34}{cold['excluding_dataset_s']:>9.1f}")
    print(f"{'warm (dataset + cache present)':<34}{warm['total_s']:>9.1f}{acc(warm):>16}")
    for name, label in (("sklearn_mlp", "sklearn MLPClassifier CV"), ("random_forest", "RandomForest(500) CV")):
        if name in r:
            print(f"{label:<34}{r[name]['cv_s']:>9.1f}{acc(r[name]):>16}")
    print("\nstage times (s)      cold      warm")
    for stage in cold["stages_s"]:
        print(f"  {stage:<16}{cold['stages_s'][stage]:>8.2f}{warm['stages_s'].get(stage, 0.0):>10.2f}")
    print("  per-fold training: " + ", ".join(f"fold {k} {v:.1f}" for k, v in warm["fold_train_s"].items()))
    if "sklearn_mlp" in r:
        print(f"\nour MLP CV / sklearn MLP CV time: {r['ours_cv_s'] / r['sklearn_mlp']['cv_s']:.2f}x")
    print(f"targets: cold excl. dataset <= 60 s: {cold['excluding_dataset_s']:.1f} s; warm <= 20 s: {warm['total_s']:.1f} s")
    print(f"peak memory MiB: {r['peak_memory_mib']}")


if __name__ == "__main__":
    sys.exit(main())
