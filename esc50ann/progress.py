"""Progress that tells the truth wherever it is read.

On a terminal (or in a notebook) long steps draw ``tqdm`` bars on stderr. Anywhere else -- a CI
log, ``2> file`` -- nothing draws carriage-return bars; the pipeline prints one line per stage
with its time and result instead (``note``). ``quiet`` keeps only errors and the final summary,
``verbose`` adds a line per training epoch.
"""
from __future__ import annotations

import sys
import warnings

from tqdm import tqdm

# Our bars are plain text (tqdm.std) everywhere. A library that imports tqdm.auto later (librosa's
# pooch) would warn "IProgress not found" in a notebook without ipywidgets: nothing is missing.
warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")


def interactive() -> bool:
    """True when stderr is a terminal or the code runs in a Jupyter kernel."""
    return "ipykernel" in sys.modules or bool(getattr(sys.stderr, "isatty", lambda: False)())


def bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """A ``tqdm`` bar on stderr, drawn only when ``enabled`` and :func:`interactive`."""
    return tqdm(iterable, disable=not (enabled and interactive()), **kwargs)


def note(message: str, *, enabled: bool = True) -> None:
    """One line on stderr (through tqdm, so it does not break a bar being drawn)."""
    if enabled:
        tqdm.write(message, file=sys.stderr)
