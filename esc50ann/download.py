"""Fetching and unpacking the ESC-50 archive.

``fetch`` streams a URL to disk (resumable, retried, atomic); ``extract`` unpacks the
archive's dataset folder safely (no path traversal, no symlinks, no zip bombs) and atomically.
Both raise one-line ``DownloadError`` / ``DatasetError`` messages for every expected failure.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from tqdm.auto import tqdm

from esc50ann.errors import DatasetError, DownloadError, one_line

# GitHub regenerates master.zip on demand, so its bytes (and checksum) are not stable:
# never pin a default checksum for it.
DEFAULT_SOURCE = "https://github.com/karolpiczak/ESC-50/archive/master.zip"

META_CSV = "meta/esc50.csv"
DATASET_FOLDER = "ESC-50-master"
CHUNK = 1 << 20
# Deflate cannot exceed ~1032:1, so a higher declared ratio is forged; members under
# RATIO_MIN_SIZE are exempt because tiny or silent files legitimately compress very well.
MAX_RATIO = 1000
RATIO_MIN_SIZE = 1 << 20
USER_AGENT = "esc50ann/0.1 (+https://github.com/karolpiczak/ESC-50)"


class _Retryable(Exception):
    """A transient failure (connection, 5xx, short read): worth another attempt."""


class _RangeRefused(_Retryable):
    """HTTP 416: the partial file is no prefix of the remote one; start over."""


# ----------------------------------------------------------------------------- hashing


def sha256_file(path: Path, chunk: int = CHUNK) -> str:
    """SHA-256 of a file's bytes, as a hex string.

    Parameters
    ----------
    path : Path
        File to hash.
    chunk : int
        Bytes read at a time (keeps memory flat for big archives).

    Returns
    -------
    str
        64 lowercase hex digits.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- fetch


def fetch(url: str, dest: Path, *, sha256: str | None = None, retries: int = 4,
          backoff: float = 1.0, timeout: float = 30, progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, resuming and retrying as needed.

    Bytes stream into ``dest + ".part"``, which is renamed to ``dest`` only once complete
    (and checksum-verified when ``sha256`` is given), so ``dest`` never holds a partial file.
    An existing ``.part`` is resumed with an HTTP ``Range`` request; a server that ignores
    ``Range`` causes a clean restart from byte zero. An existing ``dest`` is taken as a
    finished download and reused (delete it to download again).

    Parameters
    ----------
    url : str
        ``http://`` or ``https://`` URL. (Local archives need no fetching: callers use their
        path as is.)
    dest : Path
        Where the finished download goes. Its folder is created if needed.
    sha256 : str, optional
        Expected SHA-256 (hex). Checked only when given.
    retries : int
        Extra attempts after the first on connection errors, 5xx answers and short reads.
        4xx answers fail at once.
    backoff : float
        Seconds before the first retry; doubled for each further one (0 in tests).
    timeout : float
        Socket timeout in seconds for connecting and for each read.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    DownloadError
        Offline, HTTP error, disk full, bad checksum, a scheme other than http(s); the
        message names the URL.
    """
    scheme = urlparse(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: unsupported URL scheme {scheme!r} (only http and https "
                            f"are downloaded; give a local archive as a path)")
    dest = Path(dest)
    if dest.is_file():
        check_sha256(dest, sha256, name=url)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    _download_with_retries(url, part, retries=retries, backoff=backoff, timeout=timeout,
                           progress=progress)
    check_sha256(part, sha256, name=url, remove=True)
    os.replace(part, dest)
    return dest


def check_sha256(path: Path, expected: str | None, *, name: str | None = None,
                 remove: bool = False) -> None:
    """Raise DownloadError if ``path`` does not hash to ``expected`` (no-op without one).

    Parameters
    ----------
    path : Path
        File to check.
    expected : str or None
        Expected SHA-256 (hex, any case); None or '' skips the check.
    name : str, optional
        What the message names first (say the URL the file came from); default ``path``.
    remove : bool
        Delete ``path`` on a mismatch (a complete but wrong download must not be resumed).
    """
    if not expected:
        return
    actual = sha256_file(path)
    if actual.lower() != expected.strip().lower():
        if remove:
            path.unlink(missing_ok=True)
        where = f"{name}: checksum mismatch for {path}" if name else f"{path}: checksum mismatch"
        raise DownloadError(f"{where}: sha256 {actual}, expected {expected}")


def _download_with_retries(url: str, part: Path, *, retries: int, backoff: float,
                           timeout: float, progress: bool) -> None:
    """Call ``_download_once`` until it completes, sleeping ``backoff * 2**k`` between tries."""
    attempts = max(0, int(retries)) + 1
    for attempt in range(attempts):
        try:
            _download_once(url, part, timeout=timeout, progress=progress)
            return
        except _Retryable as e:
            if attempt == attempts - 1:
                raise DownloadError(f"{url}: {e} (gave up after {attempts} attempts)") from None
            time.sleep(backoff * 2 ** attempt)


def _download_once(url: str, part: Path, *, timeout: float, progress: bool) -> None:
    """One HTTP request appending to (206) or rewriting (200) ``part``.

    Raises ``_Retryable`` for transient failures and ``DownloadError`` for final ones.
    """
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except _RangeRefused:
        part.unlink(missing_ok=True)
        raise
    with response:
        if response.status == 206:
            if _range_start(response) != offset:
                # Appending another range would corrupt the file: drop it and start over.
                part.unlink(missing_ok=True)
                raise _Retryable(f"server answered the wrong byte range (asked for {offset}-)")
            mode = "ab"
        else:
            # The server ignored Range (200 instead of 206): restart from zero.
            mode, offset = "wb", 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        written = _stream(response, part, mode, offset, total, url, progress)
    if total is not None and written != total:
        raise _Retryable(f"incomplete download: {written} of {total} bytes")


def _open(url: str, offset: int, timeout: float):
    """Open the URL, asking for bytes ``offset``- when resuming; classify failures."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        reason = f"HTTP {e.code} {e.reason}"
        if e.code == 416 and offset:
            # The .part is no prefix of the current file (e.g. longer): drop it, start over.
            raise _RangeRefused(reason) from None
        if e.code >= 500 or e.code in (408, 429):
            raise _Retryable(reason) from None
        raise DownloadError(f"{url}: {reason}") from None
    except urllib.error.URLError as e:
        raise _Retryable(f"cannot connect ({one_line(e.reason)})") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise _Retryable(f"connection failed ({one_line(e)})") from None


def _range_start(response) -> int | None:
    """First byte position in a 206 answer's ``Content-Range: bytes a-b/n`` header."""
    m = re.match(r"\s*bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None


def _stream(response, part: Path, mode: str, offset: int, total: int | None, url: str,
            progress: bool) -> int:
    """Copy the response body into ``part``; return the file's size afterwards."""
    written = offset
    try:
        with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=part.name.removesuffix(".part"),
                                         disable=not progress, leave=False) as bar:
            while True:
                try:
                    block = response.read(CHUNK)
                except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
                    raise _Retryable(f"connection lost after {written} bytes ({one_line(e)})") from None
                if not block:
                    break
                f.write(block)
                written += len(block)
                bar.update(len(block))
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DownloadError(f"{url}: disk full while writing {part}") from None
        raise DownloadError(f"{url}: cannot write {part} ({one_line(e)})") from None
    if mode == "wb" and part.stat().st_size != written:  # pragma: no cover - paranoia
        raise _Retryable("local file size disagrees with bytes written")
    return written


# ----------------------------------------------------------------------------- extract


def extract(archive: Path, dest_parent: Path, *, max_uncompressed: int = 4 * 2**30,
            progress: bool = True, check: Callable[[Path], object] | None = None) -> Path:
    """Unpack the dataset folder of a zip archive into ``dest_parent/ESC-50-master``.

    Every member is checked first; the archive is refused as a whole if any member is
    unsafe. The dataset folder is the one holding ``meta/esc50.csv`` (``ESC-50-master/``
    in the official zip); members outside it are skipped. Files are written into a fresh
    temporary folder beside the destination and renamed into place only when complete, so
    an interrupted extraction never leaves a half dataset that looks complete; an older
    ``ESC-50-master`` is replaced only then.

    Parameters
    ----------
    archive : Path
        The zip file.
    dest_parent : Path
        Folder to hold ``ESC-50-master/``; created if needed.
    max_uncompressed : int
        Refuse archives whose declared uncompressed size exceeds this many bytes.
    progress : bool
        Show a tqdm progress bar.
    check : callable, optional
        Called with the complete temporary folder before it replaces anything; if it raises,
        the temporary folder is removed and an older ``ESC-50-master`` stays as it was.

    Returns
    -------
    Path
        ``dest_parent / "ESC-50-master"``.

    Raises
    ------
    DatasetError
        Not a zip, damaged member, unsafe member (absolute path, drive letter, ``..``,
        symlink), zip bomb, no ``meta/esc50.csv``, or disk full.
    """
    archive, dest_parent = Path(archive), Path(dest_parent)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DatasetError(f"{archive}: not a readable zip archive ({one_line(e)})") from None
    with zf:
        infos = zf.infolist()
        check_members(infos, archive, max_uncompressed=max_uncompressed)
        prefix = dataset_prefix(infos, archive)
        members = [i for i in infos if i.filename.startswith(prefix) and i.filename != prefix]
        dest_parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the dataset folder should not be
        try:
            _extract_members(zf, members, prefix, tmp, archive, progress)
            if check is not None:
                check(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    final = dest_parent / DATASET_FOLDER
    _swap_in(tmp, final)
    return final


def check_members(infos: list[zipfile.ZipInfo], archive: Path, *, max_uncompressed: int) -> None:
    """Refuse unsafe members and zip bombs before anything is written.

    Raises
    ------
    DatasetError
        Naming the archive and the offending member.
    """
    total = 0
    for info in infos:
        name = info.filename
        parts = re.split(r"[\\/]", name)
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
            raise DatasetError(f"{archive}: refusing member {name!r} (absolute path)")
        if ".." in parts:
            raise DatasetError(f"{archive}: refusing member {name!r} ('..' in path)")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DatasetError(f"{archive}: refusing member {name!r} (symbolic link)")
        if info.file_size > RATIO_MIN_SIZE and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise DatasetError(f"{archive}: refusing member {name!r} (compression ratio "
                               f"{info.file_size // max(info.compress_size, 1)}:1 looks like a zip bomb)")
        total += info.file_size
    if total > max_uncompressed:
        raise DatasetError(f"{archive}: refusing to extract {total} bytes "
                           f"(more than the {max_uncompressed}-byte limit; zip bomb?)")


def dataset_prefix(infos: list[zipfile.ZipInfo], archive: Path) -> str:
    """The member-name prefix of the folder holding ``meta/esc50.csv`` ('' if at the top).

    The shallowest such folder wins (the official zip has exactly one: ``ESC-50-master/``).
    """
    candidates = [i.filename[: -len(META_CSV)] for i in infos
                  if i.filename == META_CSV or i.filename.endswith("/" + META_CSV)]
    if not candidates:
        raise DatasetError(f"{archive}: no {META_CSV} in the archive (not an ESC-50 archive?)")
    return min(candidates, key=lambda p: (p.count("/"), p))


def _extract_members(zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], prefix: str,
                     tmp: Path, archive: Path, progress: bool) -> None:
    """Write ``members`` (names relative to ``prefix``) under ``tmp``."""
    with tqdm(total=sum(i.file_size for i in members), unit="B", unit_scale=True,
              unit_divisor=1024, desc=f"extract {archive.name}", disable=not progress,
              leave=False) as bar:
        for info in members:
            target = tmp.joinpath(*info.filename[len(prefix):].split("/"))
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            _extract_one(zf, info, target, archive)
            bar.update(info.file_size)


def _extract_one(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, archive: Path) -> None:
    """Copy one member, never writing more than its declared size (bomb guard)."""
    written = 0
    try:
        with zf.open(info) as src, open(target, "wb") as dst:
            while block := src.read(CHUNK):
                written += len(block)
                if written > info.file_size:
                    raise DatasetError(f"{archive}: member {info.filename!r} is larger than declared")
                dst.write(block)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
        raise DatasetError(f"{archive}: damaged member {info.filename!r} ({one_line(e)})") from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DatasetError(f"{archive}: disk full while writing {target}") from None
        raise DatasetError(f"{archive}: cannot write {target} ({one_line(e)})") from None


def _swap_in(new: Path, final: Path) -> None:
    """Rename the complete folder ``new`` to ``final``, replacing an older one last."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=".old-", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
