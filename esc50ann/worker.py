"""Worker processes end with the run that started them.

joblib's loky workers outlive a parent killed with SIGKILL (re-parented, ~250 MB each, for good).
Every task function calls ``exit_with_parent()`` first: in a worker it starts, once, a daemon
thread that exits the process as soon as the main process is gone. The main process's pid is
recorded in the environment at import, which workers inherit.
"""
from __future__ import annotations

import os
import threading
import time

MAIN_PID_ENV = "ESC50ANN_MAIN_PID"
os.environ.setdefault(MAIN_PID_ENV, str(os.getpid()))
POLL_SECONDS = 0.5

_watching = False


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
