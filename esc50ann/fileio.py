"""Files shared by every stage: atomic writes, one SHA-256 helper, one lock helper.

A reader of a file written here sees the old file or the complete new one, never half of one.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import glob
import re
import shutil
import time
import uuid
from pathlib import Path

from filelock import FileLock, Timeout

from esc50ann.errors import Esc50Error, os_error

CHUNK = 1 << 20  # bytes read at a time when hashing: memory stays flat for big archives


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary lives in the same folder, so the final ``os.replace`` is atomic, and is named by
    its owner (``.<name>.<pid>-<random>.tmp``): the temporaries of ``path`` that a killed writer left
    are removed here, by the next writer of ``path`` (``remove_stale``: only those whose process is
    gone, or old ones), never a live writer's.

    Raises
    ------
    Esc50Error
        One line naming ``path`` (``errors.os_error``): a folder where the file belongs, a disk full
        (``StorageError``), no permission, ...
    """
    path = Path(path)
    make_folder(path.parent)
    if path.is_dir() and not path.is_symlink():
        raise Esc50Error(f"{path}: is a folder, where a file belongs; move it away")
    remove_stale(path.parent, f".{glob.escape(path.name)}.*.tmp")
    tmp = path.parent / f"{owned_name(f'.{path.name}.')}.tmp"
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # give the file normal permissions
        os.replace(tmp, path)
    except OSError as exc:  # ENOSPC from a write, EISDIR from the rename, ...: say which file
        raise os_error(exc, path) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def make_folder(path: str | Path) -> Path:
    """``mkdir -p path``, or one ``Esc50Error`` naming what is in the way (a file where a folder
    belongs, no permission, ...)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, path) from None
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def json_default(obj):
    """``json.dumps(default=...)`` for numpy scalars and arrays (as Python values) and paths."""
    import numpy as np

    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()  # a numpy scalar's tolist() is its Python value
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def sha256(source: str | Path | bytes) -> str:
    """SHA-256 of a file (read in 1 MiB blocks) or of ``bytes``, as 64 lowercase hex digits."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return hashlib.sha256(source).hexdigest()
    h = hashlib.sha256()
    with open(source, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: str | Path, *, blocking: bool = True):
    """Hold an exclusive lock on the file ``path`` (created if needed) for the block.

    Yields True, or False at once when ``blocking`` is False and another process holds it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, blocking=blocking)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def owned_name(prefix: str) -> str:
    """A temporary name that records its owner: ``<prefix><pid>-<random>``, so a later run can
    tell a live writer's temporary from one left by a killed process (``remove_stale``)."""
    return f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}"


_OWNER = re.compile(r"(\d+)-[0-9a-f]{8}(?:\.tmp)?$")
# A temporary this old is stale whoever owns it: no writer here takes a day over one file, and a
# dead owner's number may have been given to a new process since (or the name has no owner).
STALE_SECONDS = 24 * 3600


def remove_stale(folder: str | Path, pattern: str) -> list[Path]:
    """Remove temporaries in ``folder`` matching the glob ``pattern`` left by writers that are gone.

    A temporary is stale when the process its name records (``owned_name``) is no longer running,
    or when it is older than ``STALE_SECONDS`` (names without an owner included); a live writer's
    temporary (this process's included) is kept. Returns what was removed.
    """
    removed = []
    for path in Path(folder).glob(pattern):
        match = _OWNER.search(path.name)
        if (match is None or _alive(int(match.group(1)))) and not _old(path):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _old(path: Path) -> bool:
    try:
        return time.time() - path.lstat().st_mtime > STALE_SECONDS
    except OSError:
        return False


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
