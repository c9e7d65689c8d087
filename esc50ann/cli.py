"""The ``esc50ann`` command: a thin layer over the Python API (``esc50ann.pipeline`` and the stages).

Expected failures print one line, ``esc50ann: error: ...``, and exit with status 1.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from esc50ann import __version__
from esc50ann.errors import Esc50Error


def _folds(text: str) -> list[int]:
    try:
        return list(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))  # unique, in order
    except ValueError:
        raise argparse.ArgumentTypeError(f"--folds takes fold numbers separated by commas, not {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    # Global options are accepted before or after the subcommand; SUPPRESS keeps a subcommand's
    # unset option from overwriting one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=argparse.SUPPRESS,
                        help="data root (default: $ESC50ANN_DATA_DIR or ./data)")
    common.add_argument("--source", default=argparse.SUPPRESS,
                        help="dataset URL, .zip or extracted folder (default: $ESC50ANN_SOURCE, the pipeline's, or the official archive)")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")

    parser = argparse.ArgumentParser(prog="esc50ann", parents=[common],
                                     description="ESC-50 sound classification with an MLP written from scratch.")
    parser.add_argument("--version", action="version", version=f"esc50ann {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, help_text, aliases=()):
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text, aliases=aliases)

    p = command("download", "download, verify and extract the dataset (a no-op when already done)")
    p.add_argument("--sha256", help="expected SHA-256 of the archive")
    p = command("info", "describe the downloaded dataset")
    p.add_argument("--verify", action="store_true", help="re-check every audio file against the manifest")
    p = command("features", "compute (or load from the cache) the features of a pipeline")
    p.add_argument("pipeline", nargs="?", default="default", help="pipeline file or name (default: default)")
    p.add_argument("--jobs", type=int, default=-1, help="worker processes (default: all cores)")
    p = command("cache", "list or clear the feature cache")
    p.add_argument("action", choices=["list", "clear"])
    p.add_argument("--key", help="with clear: only this entry")
    p = command("run", "run a whole pipeline: download, features, cross-validation, report", aliases=["cv"])
    p.add_argument("pipeline", nargs="?", default="default",
                   help="pipeline file or name under pipelines/ (default: default)")
    p.add_argument("--folds", type=_folds, help="test folds, e.g. 1,2 (default: every fold listed)")
    p.add_argument("--out", type=Path, help="run folder (default: <data-dir>/runs/<name>-<timestamp>)")
    p.add_argument("--jobs", type=int,
                   help="worker processes for feature extraction and for folds trained in parallel "
                        "(default: all cores for features, the pipeline's n_jobs for folds)")
    p = command("train", "train one model with a test fold held out and save it")
    p.add_argument("pipeline")
    p.add_argument("--test-fold", type=int, required=True)
    p.add_argument("--save", type=Path, required=True, help="model file to write (.npz)")
    p = command("predict", "classify WAV files with a saved model")
    p.add_argument("model", type=Path)
    p.add_argument("clips", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=5, help="classes to show per clip (default 5)")
    p = command("report", "print the report of a finished run")
    p.add_argument("run_dir", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.progress = not getattr(args, "quiet", False)
    args.data_dir = getattr(args, "data_dir", None)
    args.source = getattr(args, "source", None)
    try:
        return COMMANDS[args.command](args) or 0
    except (Esc50Error, OSError) as exc:  # OSError: unwritable --out, disk full, ... (names the path)
        print(f"esc50ann: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("esc50ann: interrupted (caches stay valid; an unfinished run folder has no metrics.json)",
              file=sys.stderr)
        return 130


def _pipeline(args, name, n_jobs=-1):
    from esc50ann.pipeline import Pipeline

    return Pipeline.from_toml(name, data_dir=args.data_dir, source=args.source, n_jobs=n_jobs,
                              progress=args.progress)


def cmd_download(args) -> None:
    from esc50ann.dataset import prepare

    start = time.perf_counter()
    dataset = prepare(args.source, args.data_dir, sha256=args.sha256, progress=args.progress)
    print(f"dataset ready: {len(dataset)} clips in {dataset.root} ({time.perf_counter() - start:.1f} s)")


def cmd_info(args) -> int:
    from esc50ann.dataset import load

    dataset = load(args.data_dir)
    info = dataset.summary()
    print(f"root:     {info['root']}")
    print(f"clips:    {info['n_clips']}  (ESC-10 subset: {info['n_esc10']})")
    print(f"classes:  {info['n_classes']}")
    print(f"folds:    {', '.join(map(str, info['folds']))}")
    print(f"verified: {'yes' if info['verified'] else 'no'}")
    if args.verify:
        problems = dataset.verify(progress=args.progress)
        for filename, reason in problems:
            print(f"  {filename}: {reason}")
        print(f"verify:   {len(problems)} problem(s) in {len(dataset)} files")
        return 1 if problems else 0
    return 0


def cmd_features(args) -> None:
    pipe = _pipeline(args, args.pipeline, n_jobs=args.jobs)
    feats = pipe.features()
    how = "loaded from cache" if feats.from_cache else "computed"
    print(f"features {feats.X.shape[0]} x {feats.X.shape[1]} {how} in {pipe.timings['features']:.2f} s "
          f"(key {feats.key})")
    for filename, reason in feats.skipped:
        print(f"  skipped {filename}: {reason}")


def cmd_cache(args) -> None:
    from esc50ann import cache, paths

    cache_dir = paths.feature_cache_dir(paths.data_dir(args.data_dir))
    if args.action == "clear":
        removed = cache.clear(cache_dir, key=args.key)
        print(f"removed {len(removed)} cache entr{'y' if len(removed) == 1 else 'ies'}: {' '.join(removed)}")
        return
    entries = cache.list_entries(cache_dir)
    if not entries:
        print(f"no cached features in {cache_dir}")
    for entry in entries:
        shape = "x".join(map(str, entry["shape"])) if entry["shape"] else entry["status"]
        print(f"{entry['key']}  {shape:>12}  {entry['size'] / 2**20:8.1f} MiB  {entry['created']}  {entry.get('summary', '')}")


def cmd_run(args) -> None:
    pipe = _pipeline(args, args.pipeline, n_jobs=args.jobs or -1)
    run = pipe.run(folds=args.folds, out=args.out, n_jobs=args.jobs)
    print((run.run_dir / "report.md").read_text(encoding="utf-8"))
    print(f"run folder: {run.run_dir}")


def cmd_train(args) -> None:
    pipe = _pipeline(args, args.pipeline)
    model = pipe.train(args.test_fold)
    model.save(args.save)
    print(f"test fold {args.test_fold}: accuracy {100 * model.metadata_['test_accuracy']:.1f} %; "
          f"model saved to {args.save}")


def cmd_predict(args) -> None:
    from esc50ann.pipeline import predict_files

    for prediction in predict_files(args.model, args.clips, top=args.top):
        ranked = ", ".join(f"{name} {100 * p:.1f} %" for name, p in prediction.top)
        print(f"{prediction.path}: {ranked}")


def cmd_report(args) -> None:
    from esc50ann.report import load_run

    _, text = load_run(args.run_dir)
    print(text)


COMMANDS = {"download": cmd_download, "info": cmd_info, "features": cmd_features, "cache": cmd_cache,
            "run": cmd_run, "cv": cmd_run, "train": cmd_train, "predict": cmd_predict, "report": cmd_report}
