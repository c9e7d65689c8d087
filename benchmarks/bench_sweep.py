"""Sweep throughput: tasks per second on 1 and 2 local workers and on a 2-worker Dask LocalCluster.

    python benchmarks/bench_sweep.py --source /tmp/ESC-50-dev.zip [--data-dir D] [--epochs 3]
        [--hidden 128] [--configs 4] [--json out.json]

The same small sweep (``--configs`` learning rates of the default pipeline with ``--hidden`` units
and ``--epochs`` epochs: cheap tasks, so the per-task overhead shows) runs three times from
scratch, each into a fresh folder, features from the cache. For each engine it prints the wall
time, tasks per second, the mean time a task spends fitting (measured inside the task) and the
overhead per task: ``(wall x workers - summed fit time) / tasks``, i.e. what scheduling,
transfers and start-up cost each task. A 1,000-task sweep on N workers then costs about
``1000 x (fit + overhead) / N`` seconds (printed for N = 2, 8, 32, with this machine's fit times).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from esc50ann import sweep as sweep_mod
from esc50ann.pipeline import Pipeline


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "esc50ann-bench-sweep"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--configs", type=int, default=4)
    parser.add_argument("--json")
    args = parser.parse_args()

    rates = [1e-4 * 3 ** k for k in range(args.configs)]
    doc = {"name": "bench", "pipeline": "default",
           "values": {"training.learning_rate": rates, "training.max_epochs": [args.epochs],
                      "model.hidden_layer_sizes": [[args.hidden]]}}
    sweep = sweep_mod.Sweep.from_dict(doc, where="bench_sweep")
    Pipeline(sweep.base, data_dir=args.data_dir, source=args.source, progress=False).features()  # warm the cache

    rows = []
    for label, n_jobs, cluster, workers in (("local, 1 worker", 1, None, 1), ("local, 2 workers", 2, None, 2),
                                            ("Dask LocalCluster, 2 workers", -1, "local:2", 2)):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = sweep_mod.run(sweep, data_dir=args.data_dir, out=Path(out), n_jobs=n_jobs, cluster=cluster,
                                   progress=False)
            wall = time.perf_counter() - start
        n, fit = len(result.scores), float(result.scores["seconds"].sum())
        rows.append({"engine": label, "workers": workers, "tasks": n, "wall_s": wall, "tasks_per_s": n / wall,
                     "fit_s_per_task": fit / n, "overhead_s_per_task": (wall * workers - fit) / n,
                     "nested_accuracy": result.nested_mean})

    splits = rows[0]["tasks"] // len(sweep.configurations)  # outer + inner splits: 9 with 3 folds
    print(f"sweep: {len(sweep.configurations)} configurations x {splits} splits, {args.hidden} tanh units, "
          f"{args.epochs} epochs; cores={os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'engine':32s} {'tasks':>5s} {'wall s':>7s} {'tasks/s':>8s} {'fit s/task':>11s} {'overhead s/task':>16s}")
    for r in rows:
        print(f"{r['engine']:32s} {r['tasks']:5d} {r['wall_s']:7.1f} {r['tasks_per_s']:8.2f} "
              f"{r['fit_s_per_task']:11.3f} {r['overhead_s_per_task']:16.3f}")
    same = len({round(r["nested_accuracy"], 12) for r in rows}) == 1
    print(f"same nested accuracy on every engine: {same}")
    cluster = rows[-1]
    print("a 1,000-task sweep of these tasks, from the cluster row's fit + overhead per task:")
    for workers in (2, 8, 32):
        print(f"  {workers:3d} workers: {1000 * (cluster['fit_s_per_task'] + cluster['overhead_s_per_task']) / workers:8.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
