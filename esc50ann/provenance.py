"""What produced a result: the versions of the libraries behind it, read from the installed
distributions' metadata (no library is imported for it)."""
from __future__ import annotations

import platform
from importlib import metadata

import esc50ann


def versions(*libraries: str) -> dict[str, str]:
    """``{"esc50ann": ..., library: version, ..., "python": ...}`` for the named distributions
    (``"numpy"``, ``"scikit-learn"``, ...); a library that is not installed is ``"absent"``."""
    found = {"esc50ann": esc50ann.__version__}
    for name in libraries:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return {**found, "python": platform.python_version()}
