"""Files shared by every stage: atomic writes, one SHA-256 helper, one lock helper.

A reader of a file written here sees the old file or the complete new one, never half of one.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from filelock import FileLock, Timeout

CHUNK = 1 << 20  # bytes read at a time when hashing: memory stays flat for big archives


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the same folder, so the final ``os.replace`` is atomic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


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


_OWNER = re.compile(r"(\d+)-[0-9a-f]{8}$")


def remove_stale(folder: str | Path, pattern: str) -> list[Path]:
    """Remove temporaries in ``folder`` matching the glob ``pattern`` whose owner process is gone.

    Names come from ``owned_name``; a temporary of a live process (this one included) is kept.
    Returns what was removed.
    """
    removed = []
    for path in Path(folder).glob(pattern):
        match = _OWNER.search(path.name)
        if match is None or _alive(int(match.group(1))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


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
