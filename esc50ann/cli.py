"""The ``esc50ann`` command: a thin layer over the Python API (``esc50ann.pipeline`` and the stages).

Expected failures print one line, ``esc50ann: error: ...``, and exit with status 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
import time
import warnings
from pathlib import Path

from esc50ann import __version__
from esc50ann.params import Integral, Interval, Pattern, Real
from esc50ann.errors import Esc50Error, one_line, os_error, show_warning


def _folds(text: str) -> list[int]:
    try:
        return list(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))  # unique, in order
    except ValueError:
        raise argparse.ArgumentTypeError(f"--folds takes fold numbers separated by commas, not {text!r}") from None


def _setting(text: str) -> tuple[str, object]:
    """``section.key=value`` with the value read as TOML (``0.01``, ``[512, 256]``, ``true``),
    else taken as a string (``sgd``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--set takes section.key=value, not {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip(), parsed


def _checked(constraint):
    """An argparse type: a value that ``constraint`` (``esc50ann.params``, the vocabulary of the
    pipeline files' checks) accepts -- for a number zero, negatives, inf and NaN are refused where
    they mean nothing."""
    kind = getattr(constraint, "kind", str)

    def parse(text: str):
        try:
            value = int(text) if kind is Integral else float(text) if kind is Real else text
        except ValueError:
            value = None
        if value is None or not constraint.accepts(value):
            raise argparse.ArgumentTypeError(f"expected {constraint}, not {text!r}")
        return value

    return parse


_positive_int = _checked(Interval(Integral, 1))
_positive_float = _checked(Interval(Real, 0, closed="neither"))
# Any integer: 0 runs in this process, -1 every core, N is capped at the cores (parallel.n_processes).
_jobs = _checked(Interval(Integral))
_seed = _checked(Interval(Integral, 0))
_sha256 = _checked(Pattern(r"[0-9a-fA-F]{64}", "64 hexadecimal digits"))


class _Parser(argparse.ArgumentParser):
    """argparse with the project's one-line error and exit status 1."""

    def error(self, message):
        self.exit(1, f"esc50ann: error: {message} (see {self.prog} --help)\n")


JOBS_HELP = "0 or 1: none, -1: all cores, -2: all but one; at most one per core"


def build_parser() -> argparse.ArgumentParser:
    # Global options are accepted before or after the subcommand; SUPPRESS keeps a subcommand's
    # unset option from overwriting one given before it.
    common = _Parser(add_help=False)
    common.add_argument("--data-dir", default=argparse.SUPPRESS,
                        help="data root (default: $ESC50ANN_DATA_DIR, else the checkout's data/ in a source "
                             "checkout, else the per-user data directory)")
    common.add_argument("--source", default=argparse.SUPPRESS,
                        help="dataset URL, .zip or extracted folder (default: $ESC50ANN_SOURCE, the pipeline's, or the official archive)")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="print only errors and the final result")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="also a line per training epoch")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an internal error")
    settings = _Parser(add_help=False)
    settings.add_argument("--set", dest="settings", metavar="SECTION.KEY=VALUE", type=_setting, action="append",
                          default=[], help="override a pipeline key (repeatable), checked like the file")
    settings.add_argument("--seed", type=_seed, help="random state of everything random (training.random_state)")

    parser = _Parser(prog="esc50ann", parents=[common],
                                     description="ESC-50 sound classification with an MLP written from scratch.")
    parser.add_argument("--version", action="version", version=f"esc50ann {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, help_text, aliases=(), configurable=False):
        parents = [common, settings] if configurable else [common]
        return sub.add_parser(name, parents=parents, help=help_text, description=help_text, aliases=aliases)

    p = command("download", "download, verify and extract the dataset (a no-op when already done)")
    p.add_argument("--sha256", type=_sha256, help="expected SHA-256 of the archive")
    p = command("info", "describe the downloaded dataset")
    p.add_argument("--verify", action="store_true", help="re-check every audio file against the manifest")
    p = command("pipelines", "list the built-in pipelines, or print one to copy and edit")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("name", nargs="?", help="with show: the pipeline to print")
    p = command("features", "compute (or load from the cache) the features of a pipeline", configurable=True)
    p.add_argument("pipeline", nargs="?", default="default", help="pipeline file or name (default: default)")
    p.add_argument("--jobs", type=_jobs, default=-1, help="worker processes (default: all cores; " + JOBS_HELP + ")")
    p = command("cache", "list or clear the feature cache")
    p.add_argument("action", choices=["list", "clear"])
    p.add_argument("--key", help="with clear: only this entry")
    p = command("run", "run a whole pipeline: download, features, cross-validation, report", aliases=["cv"],
                configurable=True)
    p.add_argument("pipeline", nargs="?", default="default",
                   help="pipeline file or built-in name (default: default; see `esc50ann pipelines`)")
    p.add_argument("--folds", type=_folds, help="test folds, e.g. 1,2 (default: every fold listed)")
    p.add_argument("--out", type=Path, help="run folder (default: <data-dir>/runs/<name>-<timestamp>)")
    p.add_argument("--jobs", type=_jobs,
                   help="worker processes for feature extraction and for folds trained in parallel "
                        "(default: all cores for features, the pipeline's n_jobs for folds; " + JOBS_HELP + ")")
    p = command("train", "train a model (the final one on every fold, or with a test fold held out) and save it",
                configurable=True)
    p.add_argument("pipeline")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="train the final model on every fold")
    which.add_argument("--test-fold", type=_positive_int, help="hold this fold out and report the accuracy on it")
    p.add_argument("--save", type=Path, required=True, help="model file to write (.npz)")
    p = command("predict", "classify audio files, folders or glob patterns with a saved model")
    p.add_argument("model", type=Path)
    p.add_argument("inputs", nargs="+", metavar="AUDIO", help="files, folders (searched recursively) or glob patterns")
    p.add_argument("--top", type=_positive_int, default=5, help="classes to show per file (default 5)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="table (default), csv or json on stdout; messages go to stderr")
    p.add_argument("--hop", type=_positive_float,
                   help="seconds between windows of a recording longer than the model's clip (default: half a clip)")
    p.add_argument("--per-window", action="store_true", help="also list each window's prediction")
    p = command("sweep", "try many configurations of a pipeline, chosen by nested cross-validation")
    p.add_argument("sweep_file", type=Path, help="sweep file (see sweeps/)")
    p.add_argument("--out", type=Path, help="report folder; rerun into it to resume (default: <data-dir>/runs/sweep-...)")
    p.add_argument("--jobs", type=_jobs, default=-1,
                   help="local worker processes (default: all cores; " + JOBS_HELP + ")")
    p.add_argument("--cluster", help="tcp://host:8786 (a Dask scheduler) or local:N (a LocalCluster of N workers)")
    command("runs", "list the finished runs under the data root, newest first")
    p = command("report", "print the report of a finished run")
    p.add_argument("run_dir", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed in one line
        return exc.code if isinstance(exc.code, int) else 1
    args.progress = not getattr(args, "quiet", False)
    args.verbose = getattr(args, "verbose", False) and args.progress
    args.data_dir = getattr(args, "data_dir", None)
    args.source = getattr(args, "source", None)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning  # ours and the libraries': one line each
            code = COMMANDS[args.command](args) or 0
            sys.stdout.flush()  # a closed pipe shows here, not at exit
            return code
    except BrokenPipeError:
        if not _stdout_closed():
            print(f"esc50ann: error: {os_error(sys.exc_info()[1])}", file=sys.stderr)
            return 1
        _quiet_stdout()  # `esc50ann runs | head -1`: the reader has what it wanted
        return 0
    except Esc50Error as exc:
        print(f"esc50ann: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # an unwritable --out, ...: what is wrong and where, not an errno text
        print(f"esc50ann: error: {os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("esc50ann: interrupted (caches stay valid; an unfinished run folder has no metrics.json)",
              file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        if getattr(args, "debug", False) or os.environ.get("ESC50ANN_DEBUG"):  # the test suite sets it
            raise
        print(f"esc50ann: internal error: {type(exc).__name__}: {one_line(exc)} (run with --debug for the "
              "traceback)", file=sys.stderr)
        return 2


def _stdout_closed() -> bool:
    """Whether stdout is a pipe nobody reads any more (a BrokenPipeError may come from elsewhere)."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (ImportError, AttributeError, OSError, ValueError):  # cannot tell: most likely it was stdout
        return True


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for a closed pipe is dropped at exit
    instead of ending in "Exception ignored ... BrokenPipeError" (the Python documentation's way)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's captured stdout)
        pass


def _pipeline(args, name, n_jobs=-1):
    from esc50ann.pipeline import Pipeline

    overrides = dict(args.settings)
    if args.seed is not None:
        overrides["training.random_state"] = args.seed
    return Pipeline.from_toml(name, overrides=overrides, data_dir=args.data_dir, source=args.source,
                              n_jobs=n_jobs, progress=args.progress, verbose=args.verbose)


def cmd_download(args) -> None:
    from esc50ann.dataset import prepare

    start = time.perf_counter()
    dataset = prepare(args.source, args.data_dir, sha256=args.sha256, progress=args.progress)
    print(f"dataset ready: {len(dataset)} clips in {dataset.root} ({time.perf_counter() - start:.1f} s)")


def cmd_info(args) -> int:
    from esc50ann.dataset import load

    dataset = load(args.data_dir, check_files=not args.verify)  # --verify reports changed files itself
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
    pipe = _pipeline(args, args.pipeline, n_jobs=-1 if args.jobs is None else args.jobs)
    run = pipe.run(folds=args.folds, out=args.out, n_jobs=args.jobs)
    print((run.run_dir / "report.md").read_text(encoding="utf-8"))
    print(f"run folder: {run.run_dir}")


def cmd_pipelines(args) -> None:
    from esc50ann import config

    builtin = config.builtin_pipelines()
    if args.action == "show":
        if args.name is None:
            raise Esc50Error(f"pipelines show: name a pipeline ({', '.join(builtin)})")
        print(config.find(args.name).read_text(encoding="utf-8"), end="")
        return
    width = max(map(len, builtin))
    for name, path in builtin.items():
        print(f"{name:<{width}}  {config.load(path).description}")


def cmd_train(args) -> None:
    pipe = _pipeline(args, args.pipeline)
    model = pipe.train(None if args.all else args.test_fold)
    model.save(args.save)
    meta = model.metadata_
    if args.all:
        done = f"final model trained on folds {','.join(map(str, meta['trained_on_folds']))}"
    else:
        done = f"test fold {args.test_fold}: accuracy {100 * meta['test_accuracy']:.1f} %"
    print(f"{done}; model saved to {args.save}")


def cmd_predict(args) -> int:
    from esc50ann.predict import predict_files

    results = predict_files(args.model, args.inputs, top=args.top, hop=args.hop)
    if not results:
        raise Esc50Error(f"no audio files found in {' '.join(args.inputs)}")
    for r in results:  # messages on stderr, results on stdout
        if r.error:
            print(f"esc50ann: error: {r.error}", file=sys.stderr)
        for warning in r.warnings:
            print(f"esc50ann: warning: {r.path}: {warning}", file=sys.stderr)
    good = [r for r in results if not r.error]
    print(_FORMATS[args.format](good, args.per_window), end="")
    return 1 if len(good) < len(results) else 0


def _views(result, per_window):
    """(window start or None for the whole file, top classes) to show for one file."""
    return [(None, result.top)] + (result.windows if per_window else [])


def _table(results, per_window) -> str:
    lines = []
    for r in results:
        for start, top in _views(r, per_window):
            ranked = ", ".join(f"{name} {100 * p:.1f} %" for name, p in top)
            lines.append(f"{r.path}: {ranked}" if start is None else f"  at {start:.2f} s: {ranked}")
    return "".join(line + "\n" for line in lines)


def _csv(results, per_window) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", "window_start_s", "rank", "category", "probability"])
    for r in results:
        for start, top in _views(r, per_window):
            for rank, (name, p) in enumerate(top, 1):
                writer.writerow([r.path, "" if start is None else f"{start:.3f}", rank, name, f"{p:.6f}"])
    return out.getvalue()


def _json(results, per_window) -> str:
    doc = []
    for r in results:
        item = {"file": str(r.path), "label": r.label,
                "top": [{"category": n, "probability": p} for n, p in r.top], "warnings": r.warnings,
                "n_windows": len(r.windows)}
        if per_window:
            item["windows"] = [{"start_s": start, "top": [{"category": n, "probability": p} for n, p in top]}
                               for start, top in r.windows]
        doc.append(item)
    return json.dumps(doc, indent=2) + "\n"


_FORMATS = {"table": _table, "csv": _csv, "json": _json}


def cmd_sweep(args) -> None:
    from esc50ann import sweep

    result = sweep.run(args.sweep_file, data_dir=args.data_dir, source=args.source, out=args.out,
                       n_jobs=args.jobs, cluster=args.cluster, progress=args.progress)
    print((result.out_dir / "report.md").read_text(encoding="utf-8"))
    print(f"sweep folder: {result.out_dir}")


def cmd_runs(args) -> None:
    from esc50ann import paths
    from esc50ann.report import list_runs

    runs_dir = paths.runs_dir(paths.data_dir(args.data_dir))
    runs = list_runs(runs_dir)
    if runs.empty:
        print(f"no finished runs in {runs_dir}")
    for r in runs.itertuples():
        print(f"{r.finished[:19].replace('T', ' ')}  {r.pipeline:<12s}  folds {r.folds:<9s}  "
              f"{100 * r.accuracy:5.1f} %  {r.folder}")


def cmd_report(args) -> None:
    from esc50ann.report import load_run

    if not args.run_dir.is_dir():
        raise Esc50Error(f"{args.run_dir}: no such run folder")
    _, text = load_run(args.run_dir)
    print(text)


COMMANDS = {"download": cmd_download, "info": cmd_info, "pipelines": cmd_pipelines, "features": cmd_features,
            "cache": cmd_cache,
            "run": cmd_run, "cv": cmd_run, "sweep": cmd_sweep, "runs": cmd_runs, "train": cmd_train, "predict": cmd_predict, "report": cmd_report}
