"""The one exception family users see.

Every expected failure (bad input, bad config, network trouble, a damaged file) raises an
``Esc50Error`` whose message is a single line naming the file, row, key or URL at fault.
The command line prints that line and exits with status 1 instead of a traceback.

``os_error`` turns an ``OSError`` into such a line (which path, what is wrong, in words, not an
errno text); ``warning_line`` is the one-line form of any warning, ours or a library's.
"""
import errno
import os
from pathlib import Path


def one_line(exc) -> str:
    """``exc`` as one line of text: its ``strerror`` (OS errors) or message with whitespace folded,
    else its type name. For embedding a library's exception in an ``Esc50Error`` message."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


class Esc50Error(Exception):
    """A user-facing error whose message is one line naming what is wrong and where."""


class DownloadError(Esc50Error):
    """The archive could not be fetched (offline, HTTP error, disk full, bad checksum)."""


class DatasetError(Esc50Error):
    """The archive, the metadata or an audio file is malformed or missing."""


class FeatureError(Esc50Error):
    """A clip could not be turned into features (unreadable, empty, NaN) or the cache is unusable."""


class ConfigError(Esc50Error, ValueError):
    """A pipeline file or a parameter has an unknown key, a wrong type or an invalid value."""


class ModelError(Esc50Error):
    """Training diverged, or a model file is damaged or of another architecture."""


class StorageError(Esc50Error):
    """The disk could not take a write (full, quota, unwritable): nothing read was at fault, so
    nothing already downloaded or cached is discarded for it."""


# What an errno means for the path it names, said as a statement (not "[Errno 28] ...").
_STATEMENTS = {
    errno.ENOSPC: "no space left on the device; free some space",
    errno.EDQUOT: "disk quota exceeded; free some space",
    errno.EFBIG: "file too large for the file system",
    errno.EISDIR: "is a folder, where a file belongs; move it away",
    errno.ENOTDIR: "is not a folder",
    errno.EEXIST: "already exists",
    errno.ENOENT: "no such file or folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "on a read-only file system",
    errno.EMFILE: "too many open files (raise `ulimit -n`)",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error (a failing disk?)",
}
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def os_error(exc: OSError, path=None) -> "Esc50Error":
    """The one-line ``Esc50Error`` for ``exc`` (``StorageError`` when the disk could not take a
    write): ``"<path>: <what is wrong>"``, ``path`` defaulting to the one the error names. A path
    that cannot be a folder because a file stands on it says which file."""
    names = [p for p in (exc.filename2 if exc.errno == errno.EISDIR else None, exc.filename) if p is not None]
    path = path if path is not None else (names[0] if names else None)
    statement = _STATEMENTS.get(exc.errno) or one_line(exc)
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) and path is not None:
        blocking = _file_in_the_way(path)
        if blocking is not None:
            statement = f"{blocking} is a file, where a folder belongs" if str(blocking) != str(path) else \
                "is a file, where a folder belongs"
    text = f"{os.fspath(path)}: {statement}" if path is not None else statement
    return (StorageError if exc.errno in _DISK_FULL or exc.errno in (errno.EROFS, errno.EACCES) else Esc50Error)(text)


def _file_in_the_way(path):
    """The nearest of ``path`` and its parents that exists and is not a folder, or None."""
    for candidate in (Path(path), *Path(path).parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def warning_line(message, category, filename) -> str:
    """A warning as one line: ``esc50ann: warning: <text>``, a library's prefixed with its name
    (``numpy: overflow encountered in square``) -- never Python's two-line source excerpt."""
    text = one_line(message)
    parts = Path(str(filename)).parts
    origin = next((parts[i + 1] for i in range(len(parts) - 1)
                   if parts[i] in ("site-packages", "dist-packages")), None)
    if origin is not None and not origin.startswith("esc50ann"):
        text = f"{origin.split('.')[0]}: {text}"
    return f"esc50ann: warning: {text}"


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` in the one-line form (``warning_line``), on stderr."""
    import sys

    try:
        print(warning_line(message, category, filename), file=file or sys.stderr)
    except (OSError, ValueError):  # stderr closed: nowhere to say it
        pass
