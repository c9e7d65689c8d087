"""Progress that tells the truth wherever it is read.

On a terminal long steps draw ``tqdm`` bars on stderr; in a Jupyter kernel they are widget bars
(``tqdm.notebook``) when ``ipywidgets`` is installed. Anywhere else -- a CI log, ``2> file``, a
notebook without ``ipywidgets``, where text bars with carriage returns and cursor moves would pile
up as hundreds of lines in the cell's output -- nothing draws bars; the pipeline prints one line
per stage with its time and result instead (``note``). ``quiet`` keeps only errors, warnings
(``warn``) and the final summary, ``verbose`` adds a line per training epoch.
"""
from __future__ import annotations

import sys
import warnings

from tqdm import tqdm

# Our bars are plain text (tqdm.std) everywhere. A library that imports tqdm.auto later (librosa's
# pooch) would warn "IProgress not found" in a notebook without ipywidgets: nothing is missing.
warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")


def _in_kernel() -> bool:
    return "ipykernel" in sys.modules


def _widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def interactive() -> bool:
    """True when bars can be drawn: stderr is a terminal, or a Jupyter kernel with ``ipywidgets``."""
    if _in_kernel():
        return _widgets()
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """A ``tqdm`` bar on stderr, drawn only when ``enabled`` and :func:`interactive` (a widget in a
    notebook)."""
    if enabled and interactive() and _in_kernel():
        from tqdm.notebook import tqdm as notebook_tqdm

        kwargs.pop("position", None)  # widgets stack by themselves
        return notebook_tqdm(iterable, **kwargs)
    return tqdm(iterable, disable=not (enabled and interactive()), **kwargs)


def epoch_line(label: str, row: dict, total: int) -> str:
    """The ``-v`` line of one training epoch (a history row) of ``label`` ("fold 2", "final model")."""
    network = f" network {row['network']}" if "network" in row else ""
    penalty = f" + weight penalty {row['penalty']:.4f}" if row.get("penalty") else ""
    return (f"{label}{network} epoch {row['epoch']}/{total}: loss {row['loss']:.4f}{penalty}, "
            f"training accuracy {100 * row['accuracy']:.1f} %")


def note(message: str, *, enabled: bool = True) -> None:
    """One line on stderr (through tqdm, so it does not break a bar being drawn)."""
    if enabled:
        tqdm.write(message, file=sys.stderr)


def warn(message: str) -> None:
    """``esc50ann: warning: message`` on stderr, shown even with ``quiet`` (it may change what a
    figure means)."""
    tqdm.write(f"esc50ann: warning: {message}", file=sys.stderr)
