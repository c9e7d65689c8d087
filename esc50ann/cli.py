"""The ``esc50ann`` command: a thin layer over the Python API (``esc50ann.pipeline`` and the stages).

Expected failures print one line, ``esc50ann: error: ...``, and exit with status 1.
"""
from __future__ import annotations

import argparse
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
    # unset option from overwriting one given before it. Each subcommand lists only those it uses.
    options = {name: _Parser(add_help=False) for name in ("data", "source", "quiet", "verbose", "debug", "set")}
    options["data"].add_argument("--data-dir", default=argparse.SUPPRESS,
                                 help="data root (default: $ESC50ANN_DATA_DIR, else the checkout's data/ in a "
                                      "source checkout, else the per-user data directory)")
    options["source"].add_argument("--source", default=argparse.SUPPRESS,
                                   help="dataset URL, .zip or extracted folder (default: $ESC50ANN_SOURCE, the "
                                        "pipeline's, or the official archive)")
    options["quiet"].add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                                  help="print only errors and the final result")
    options["verbose"].add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                    help="also a line per training epoch")
    options["debug"].add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                  help="show the traceback of an internal error")
    options["set"].add_argument("--set", dest="settings", metavar="SECTION.KEY=VALUE", type=_setting,
                                action="append", default=[],
                                help="override a pipeline key (repeatable), checked like the file")
    options["set"].add_argument("--seed", type=_seed, help="random state of everything random (training.random_state)")

    parser = _Parser(prog="esc50ann", parents=list(options.values())[:-1],
                     description="ESC-50 sound classification with an MLP written from scratch.",
                     epilog="example: esc50ann run quick   (then `esc50ann report`; `esc50ann COMMAND --help` "
                            "for each command)")
    parser.add_argument("--version", action="version", version=f"esc50ann {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, help_text, example, uses=("debug",), aliases=()):
        return sub.add_parser(name, parents=[options[u] for u in uses], help=help_text, description=help_text,
                              aliases=aliases, epilog=f"example: {example}",
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("download", "download, verify and extract the dataset (a no-op when already done)",
                "esc50ann download --source ESC-50-master.zip", ("data", "source", "quiet", "debug"))
    p.add_argument("--sha256", type=_sha256, help="expected SHA-256 of the archive")
    p = command("info", "describe the downloaded dataset", "esc50ann info --verify", ("data", "quiet", "debug"))
    p.add_argument("--verify", action="store_true", help="re-check every audio file against the manifest")
    p = command("pipelines", "list the built-in pipelines, or print one to copy and edit",
                "esc50ann pipelines show quick > mine.toml")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list",
                   help="list (default): names and descriptions; show: print the file of NAME")
    p.add_argument("name", nargs="?", help="with show: the pipeline to print")
    p = command("sweeps", "list the built-in sweeps, or print one to copy and edit",
                "esc50ann sweeps show default-small > mine.toml")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list",
                   help="list (default): names and what they try; show: print the file of NAME")
    p.add_argument("name", nargs="?", help="with show: the sweep to print")
    every = ("data", "source", "quiet", "verbose", "debug", "set")
    p = command("features", "compute (or load from the cache) the features of a pipeline",
                "esc50ann features quick --out features.csv", every)
    p.add_argument("pipeline", nargs="?", default="default", help="pipeline file or name (default: default)")
    p.add_argument("--jobs", type=_jobs, default=-1, help="worker processes (default: all cores; " + JOBS_HELP + ")")
    p.add_argument("--out", type=Path, help="also write the feature matrix, one row per clip (.csv, or .parquet "
                                             "with the parquet extra)")
    p = command("cache", "list or clear the feature cache", "esc50ann cache clear --key 1a2b3c4d",
                ("data", "debug"))
    p.add_argument("action", choices=["list", "clear"], help="list the entries, or clear them (all, or --key)")
    p.add_argument("--key", help="with clear: only this entry")
    p = command("run", "run a whole pipeline: download, features, cross-validation, report",
                "esc50ann run quick --set training.max_epochs=20", every, aliases=["cv"])
    p.add_argument("pipeline", nargs="?", default="default",
                   help="pipeline file or built-in name (default: default; see `esc50ann pipelines`)")
    p.add_argument("--folds", type=_folds, help="test folds, e.g. 1,2 (default: every fold listed)")
    p.add_argument("--out", type=Path, help="run folder (default: <data-dir>/runs/<name>-<timestamp>)")
    p.add_argument("--force", action="store_true", help="overwrite a finished run in --out")
    p.add_argument("--jobs", type=_jobs,
                   help="worker processes for feature extraction and for folds trained in parallel "
                        "(default: all cores for features, the pipeline's n_jobs for folds; " + JOBS_HELP + ")")
    p = command("train", "train a model (the final one on every fold, or with a test fold held out) and save it",
                "esc50ann train default --all --save model.npz", every)
    p.add_argument("pipeline", help="pipeline file or built-in name (see `esc50ann pipelines`)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="train the final model on every fold")
    which.add_argument("--test-fold", type=_positive_int, help="hold this fold out and report the accuracy on it")
    p.add_argument("--save", type=Path, required=True, help="model file to write (.npz)")
    p = command("predict", "classify audio files, folders or glob patterns with a saved model",
                'esc50ann predict model.npz recordings/ "more/*.wav" --format csv', ("quiet", "debug"))
    p.add_argument("model", type=Path, help="model file written by `esc50ann train ... --save`")
    p.add_argument("inputs", nargs="+", metavar="AUDIO", help="files, folders (searched recursively) or glob patterns")
    p.add_argument("--top", type=_positive_int, default=5, help="classes to show per file (default 5)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="table (default), csv or json on stdout (csv and json list every input, with its "
                        "warnings or error); messages go to stderr")
    p.add_argument("--hop", type=float,
                   help="seconds (>= 0.01) between windows of a recording longer than the model's clip "
                        "(default: half a clip)")
    p.add_argument("--min-confidence", type=float, metavar="P",
                   help="mark predictions whose top probability is below P (0-1) as low confidence")
    p.add_argument("--per-window", action="store_true", help="also list each window's prediction")
    p = command("sweep", "try many configurations of a pipeline, chosen by nested cross-validation",
                "esc50ann sweep default-small --cluster local:2", ("data", "source", "quiet", "debug"))
    p.add_argument("sweep_file", type=Path, metavar="SWEEP",
                   help="sweep file or built-in name (see `esc50ann sweeps`)")
    p.add_argument("--out", type=Path, help="report folder; rerun into it to resume (default: <data-dir>/runs/sweep-...)")
    p.add_argument("--jobs", type=_jobs, default=-1,
                   help="local worker processes (default: all cores; " + JOBS_HELP + ")")
    p.add_argument("--cluster", help="tcp://host:8786 (a Dask scheduler) or local:N (a LocalCluster of N workers)")
    command("runs", "list the finished runs and sweeps of the data root, newest first", "esc50ann runs",
            ("data", "debug"))
    p = command("report", "print the summary of a finished run or sweep", "esc50ann report quick-20261203-112650",
                ("data", "debug"))
    p.add_argument("run", nargs="?", help="run folder, or its name as `esc50ann runs` shows it (default: the latest)")
    p.add_argument("--markdown", action="store_true", help="print the whole report.md instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed in one line
        return exc.code if isinstance(exc.code, int) else 1
    if args.command is None:  # bare `esc50ann`: what it can do, not an error
        parser.print_help()
        return 0
    args.quiet = getattr(args, "quiet", False)
    args.progress = not args.quiet
    args.verbose = getattr(args, "verbose", False) and args.progress
    args.data_dir = getattr(args, "data_dir", None)
    args.source = getattr(args, "source", None)
    args.settings = getattr(args, "settings", [])
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
    from esc50ann.layouts import NAMES

    dataset = load(args.data_dir, check_files=not args.verify)  # --verify reports changed files itself
    info = dataset.summary()
    print(f"root:     {info['root']}")
    print(f"layout:   {NAMES.get(info['layout'], info['layout'])}")
    esc10 = f"  (ESC-10 subset: {info['n_esc10']})" if info["layout"] == "esc50" else ""
    print(f"clips:    {info['n_clips']}{esc10}")
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
    from esc50ann.features import check_table_path

    if args.out is not None:
        check_table_path(args.out)  # before minutes of feature extraction, not after
    pipe = _pipeline(args, args.pipeline, n_jobs=args.jobs)
    feats = pipe.features()
    if args.out is not None:
        feats.write(args.out)
    # The stage's own line (stderr) is the summary, worded as in `run`; stdout gets it when it is
    # not the same terminal (a file, a pipe) or when --quiet kept stderr silent.
    if args.quiet or not (sys.stdout.isatty() and sys.stderr.isatty()):
        print(pipe.stage_lines["features"])
    for filename, reason in feats.skipped:
        print(f"  skipped {filename}: {reason}")
    if args.out is not None:
        print(f"wrote {len(feats.filenames)} rows x {feats.X.shape[1]} features to {args.out}")


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
    run = pipe.run(folds=args.folds, out=args.out, n_jobs=args.jobs, force=args.force)
    _print_summary(args, run.metrics, run.run_dir)


def _print_summary(args, metrics, folder) -> None:
    """A finished run's (or sweep's) result on stdout: one line with -q, else a plain-text summary."""
    from esc50ann.report import summary_line, text_summary

    print(summary_line(metrics, folder) if args.quiet else text_summary(metrics, folder), end="\n" if args.quiet else "")


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


def cmd_sweeps(args) -> None:
    from esc50ann import config

    builtin = config.builtin_pipelines("sweeps")
    if args.action == "show":
        if args.name is None:
            raise Esc50Error(f"sweeps show: name a sweep ({', '.join(builtin)})")
        print(config.find(args.name, "sweeps").read_text(encoding="utf-8"), end="")
        return
    width = max(map(len, builtin))
    for name, path in builtin.items():
        first = path.read_text(encoding="utf-8").splitlines()[0]  # every sweep file opens with what it tries
        print(f"{name:<{width}}  {first.lstrip('# ')}")


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
    from esc50ann.predict import format_predictions, predict_files

    results = predict_files(args.model, args.inputs, top=args.top, hop=args.hop,
                            min_confidence=args.min_confidence)
    if not results:
        raise Esc50Error(f"no audio files found in {' '.join(args.inputs)}")
    for r in results:  # messages on stderr, results on stdout (csv and json carry them too)
        if r.error:
            print(f"esc50ann: error: {r.error}", file=sys.stderr)
        for warning in r.warnings:
            print(f"esc50ann: warning: {r.path}: {warning}", file=sys.stderr)
    print(format_predictions(results, args.format, per_window=args.per_window), end="")
    return 1 if any(r.error for r in results) else 0


def cmd_sweep(args) -> None:
    from esc50ann import sweep

    result = sweep.run(args.sweep_file, data_dir=args.data_dir, source=args.source, out=args.out,
                       n_jobs=args.jobs, cluster=args.cluster, progress=args.progress)
    _print_summary(args, result.metrics, result.out_dir)


def cmd_runs(args) -> None:
    from esc50ann import paths
    from esc50ann.report import list_runs

    root = paths.data_dir(args.data_dir)
    runs = list_runs(root)
    if runs.empty:
        print(f"no finished runs in {paths.runs_dir(root)}")
    for r in runs.itertuples():
        settings = " ".join(filter(None, (r.config, r.settings)))
        print(f"{r.finished[:19].replace('T', ' ')}  {r.kind:<5s} {r.name:<14s} folds {r.folds:<9s} "
              f"{100 * r.accuracy:5.1f} %  {settings + '  ' if settings else ''}{r.folder}")


def cmd_report(args) -> None:
    from esc50ann import paths
    from esc50ann.report import find_run, load_run, text_summary

    folder = find_run(paths.data_dir(args.data_dir), args.run)
    metrics, markdown = load_run(folder)
    print(markdown if args.markdown else text_summary(metrics, folder), end="")


COMMANDS = {"download": cmd_download, "info": cmd_info, "pipelines": cmd_pipelines, "sweeps": cmd_sweeps,
            "features": cmd_features,
            "cache": cmd_cache,
            "run": cmd_run, "cv": cmd_run, "sweep": cmd_sweep, "runs": cmd_runs, "train": cmd_train, "predict": cmd_predict, "report": cmd_report}
