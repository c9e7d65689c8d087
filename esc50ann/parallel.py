"""Running independent tasks: in this process, on local worker processes, or on a Dask cluster.

Every stage that fans out -- feature chunks, cross-validation folds, sweep tasks -- hands its
tasks to a ``Runner``::

    runner = Runner(n_jobs=2)                       # or: with cluster("local:2") as runner:
    for position, result in runner.map(fn, [(a1, b1), (a2, b2)]):
        ...                                         # as they finish (ordered=True: in order)

Each task runs with one BLAS/OpenMP thread, on a worker process (the processes already fill the
cores, and more threads would oversubscribe them) and in this process alike: OpenBLAS's threads
spin while they wait, so on a machine that other work shares, two threads at the batch sizes
trained here ran 3-7x slower than one (the default's final model, `quick`'s: 0.2 s against
1.7 s). Local workers exit as soon as the main process is gone: joblib's loky workers otherwise
outlive a parent killed with SIGKILL (re-parented, ~250 MB each, for good). A runner of one job
runs tasks in this process, with no pool at all.

Tasks that can be cut into parts (the networks of an ensemble) are planned by ``Runner.parts``
so that the last round of tasks does not leave workers idle: three folds on two cores run as
fold 1 | fold 2, then fold 3's networks in two parts side by side.

How many processes a request means is said once, by ``n_processes``, for every command and
stage: ``--jobs``, a pipeline's ``n_jobs`` and ``local:N`` alike.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import warnings
from typing import Any, Callable, Iterable, Iterator

from esc50ann.errors import Esc50Error, show_warning

MAIN_PID_ENV = "ESC50ANN_MAIN_PID"
os.environ.setdefault(MAIN_PID_ENV, str(os.getpid()))  # inherited by every worker process
POLL_SECONDS = 0.5

_watching = False


def cpu_count() -> int:
    """The CPUs this process may use (joblib's count: affinity and container limits respected)."""
    from joblib import cpu_count as joblib_cpu_count

    return max(1, joblib_cpu_count())


def n_processes(n_jobs: int | None, n_tasks: int | None = None) -> int:
    """How many processes (or threads) a request of ``n_jobs`` means.

    ``N >= 1`` is N, capped at the CPUs (every task is one BLAS thread, so more processes only
    cost memory) and at ``n_tasks``; ``0`` or None is 1 (in this process); a negative number
    counts back from the CPUs as joblib does (-1: all, -2: all but one), at least 1.
    """
    cpus = cpu_count()
    n = 1 if not n_jobs else (min(int(n_jobs), cpus) if n_jobs > 0 else max(1, cpus + 1 + int(n_jobs)))
    return max(1, min(n, n_tasks)) if n_tasks is not None else n


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine, or None where it cannot be told."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def exit_with_parent() -> None:
    """In a worker process, exit when the main process dies (no-op in the main process)."""
    global _watching
    try:
        main = int(os.environ.get(MAIN_PID_ENV, os.getpid()))
    except ValueError:
        return
    if _watching or main == os.getpid():
        return
    _watching = True
    threading.Thread(target=_watch, args=(main,), name="esc50ann-exit-with-parent", daemon=True).start()


def _watch(main: int) -> None:
    while True:
        time.sleep(POLL_SECONDS)
        try:
            os.kill(main, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # alive, under another user
            pass


def _in_worker(fn: Callable, position: int, args: tuple) -> tuple[int, Any]:
    """What a worker process runs: one task, one BLAS thread, gone with the main process."""
    from threadpoolctl import threadpool_limits

    exit_with_parent()
    warnings.showwarning = show_warning  # a worker's warnings in the one-line form too
    with threadpool_limits(limits=1):
        return position, fn(*args)


class Runner:
    """Where tasks run.

    Parameters
    ----------
    n_jobs : int
        Local worker processes (``n_processes``): 1 (or 0) runs every task in this process, -1
        uses every core.
    client : distributed.Client, optional
        Run on this Dask cluster instead (``n_jobs`` is then ignored).
    """

    def __init__(self, n_jobs: int = 1, client=None):
        self.n_jobs, self.client = n_jobs, client

    def __repr__(self):
        where = "a Dask cluster" if self.client is not None else f"{self.n_workers} local process(es)"
        return f"Runner({where})"

    @property
    def n_workers(self) -> int:
        """How many tasks run at once."""
        if self.client is not None:
            return max(1, sum(self.client.nthreads().values()))
        return n_processes(self.n_jobs)

    def parts(self, units: list[int]) -> list[tuple[int, range]]:
        """Cut tasks into parts so that every round fills the workers.

        Parameters
        ----------
        units : list of int
            For every task, into how many units it can be cut (1: it runs whole).

        Returns
        -------
        list of (task, range of units)
            The parts, in the order to submit them: whole tasks first, then the parts of the
            tasks of the last, partial round (that many tasks, fewer than the workers), each cut
            into contiguous ranges as even as can be, biggest first, so the parts number the
            workers (or every unit of those tasks, if they are fewer).
        """
        workers, n = self.n_workers, len(units)
        rest = n % workers if n > workers else n
        if workers <= 1 or rest == 0 or rest == workers:
            return [(i, range(u)) for i, u in enumerate(units)]
        whole, last = list(range(n - rest)), list(range(n - rest, n))
        # parts per task of the last round: one each, then the spare workers to the largest
        counts = {i: 1 for i in last}
        for _ in range(workers - rest):
            i = max(last, key=lambda t: (units[t] / counts[t] if counts[t] < units[t] else 0, -t))
            if counts[i] >= units[i]:
                break
            counts[i] += 1
        plan = [(i, range(units[i])) for i in whole]
        cut = []
        for i in last:
            q, r = divmod(units[i], counts[i])
            lo = 0
            for p in range(counts[i]):
                size = q + (p < r)
                cut.append((i, range(lo, lo + size)))
                lo += size
        return plan + sorted(cut, key=lambda part: -len(part[1]))

    def share(self, value):
        """``value`` as tasks should receive it: sent to every cluster worker once (a Dask future),
        or itself locally."""
        return value if self.client is None else self.client.scatter(value, broadcast=True)

    def map(self, fn: Callable, tasks: Iterable[tuple], *, ordered: bool = False,
            n_workers: int | None = None) -> Iterator[tuple[int, Any]]:
        """Run ``fn(*args)`` for every ``args`` of ``tasks``; yield ``(position, result)`` as tasks
        finish (in task order with ``ordered``). ``n_workers`` caps the local pool (say at the
        number of tasks); a task's exception is raised here."""
        tasks = list(tasks)
        workers = min(n_workers or self.n_workers, self.n_workers, max(1, len(tasks)))
        if self.client is not None:
            yield from self._on_cluster(fn, tasks, ordered)
        elif workers <= 1:
            from threadpoolctl import threadpool_limits

            for position, args in enumerate(tasks):
                with threadpool_limits(limits=1):
                    result = fn(*args)
                yield position, result
        else:
            from joblib import Parallel, delayed

            jobs = Parallel(n_jobs=workers, return_as="generator" if ordered else "generator_unordered")(
                delayed(_in_worker)(fn, position, args) for position, args in enumerate(tasks))
            yield from jobs

    def _on_cluster(self, fn, tasks, ordered):
        from distributed import as_completed

        futures = [self.client.submit(_in_worker, fn, position, args, pure=False)
                   for position, args in enumerate(tasks)]
        if ordered:
            for future in futures:
                yield future.result()
        else:
            for future in as_completed(futures):
                yield future.result()


def check_cluster(address: str | None) -> int | None:
    """Check a cluster address before any work is done: the number of workers of ``"local:N"``
    (capped at the CPUs, as ``n_processes``), None for a scheduler address or no cluster.

    Raises
    ------
    Esc50Error
        Dask distributed is not installed, or the address is malformed.
    """
    if not address:
        return None
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise Esc50Error("--cluster needs Dask distributed: pip install 'esc50ann[cluster]'") from None
    if address.startswith("local:"):
        try:
            n = int(address.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise Esc50Error(f"cluster {address!r}: expected local:N with N >= 1 workers")
        return n_processes(n)
    return None


@contextlib.contextmanager
def cluster(address: str | None, *, n_jobs: int = 1):
    """A ``Runner`` for ``address``: ``None`` for local processes (``n_jobs``), ``"local:N"`` for a
    ``LocalCluster`` of N single-threaded worker processes on 127.0.0.1 (at most one per CPU), or
    ``"tcp://host:port"`` for an existing Dask scheduler; the cluster is closed afterwards.

    Raises
    ------
    Esc50Error
        Dask distributed is not installed, the address is malformed (``check_cluster``), or the
        scheduler cannot be reached.
    """
    workers = check_cluster(address)
    if not address:
        yield Runner(n_jobs)
        return
    from distributed import Client, LocalCluster

    if workers is not None:
        # silence_logs: the workers' own log lines (warnings about ports, memory) stay out of the
        # output; a worker that fails still fails the task, as one line.
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None, silence_logs=logging.ERROR) as local, Client(local) as client:
            yield Runner(client=client)
        return
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise Esc50Error(f"cluster {address}: cannot connect to the Dask scheduler ({exc})") from None
    with client:
        yield Runner(client=client)
