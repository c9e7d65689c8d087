"""The one exception family users see.

Every expected failure (bad input, bad config, network trouble, a damaged file) raises an
``Esc50Error`` whose message is a single line naming the file, row, key or URL at fault.
The command line prints that line and exits with status 1 instead of a traceback.
"""


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
