"""Fetching the ESC-50 archive over HTTP.

``fetch`` streams a URL to disk: resumable (HTTP ``Range``), retried with backoff, atomic (a
``.part`` file renamed when complete), checksummed when asked. Every expected failure is a
one-line ``DownloadError`` naming the URL.
"""
from __future__ import annotations

import errno
import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse


from esc50ann.errors import DownloadError, one_line
from esc50ann.fileio import CHUNK, sha256
from esc50ann import progress as progress_mod

# GitHub regenerates master.zip on demand, so its bytes (and checksum) are not stable:
# never pin a default checksum for it.
DEFAULT_SOURCE = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
USER_AGENT = "esc50ann/0.1 (+https://github.com/karolpiczak/ESC-50)"


class _Retryable(Exception):
    """A transient failure (connection, 5xx, short read): worth another attempt."""


class _RangeRefused(_Retryable):
    """HTTP 416: the partial file is no prefix of the remote one; start over."""


OFFLINE_HINT = "to use a local copy, pass --source PATH (a .zip or an extracted folder) or set ESC50ANN_SOURCE"


STALL_BYTES = 16 * 1024  # a transfer slower than this per STALL_SECONDS counts as stalled
STALL_SECONDS = 60.0


def fetch(url: str, dest: Path, *, sha256: str | None = None, retries: int = 4,
          backoff: float = 1.0, timeout: float = 30, stall_seconds: float = STALL_SECONDS,
          progress: bool = True) -> Path:
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
    stall_seconds : float
        A server trickling fewer than ``STALL_BYTES`` in this many seconds is given up on (and
        retried), so a download never hangs on a connection that is alive but useless.
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
    try:
        scheme = urlparse(url).scheme.lower()
        urlparse(url).port  # noqa: B018 - a malformed host or port raises here, not mid-download
    except ValueError as e:
        raise DownloadError(f"{url}: malformed URL ({one_line(e)})") from None
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: unsupported URL scheme {scheme!r} (only http and https "
                            f"are downloaded; give a local archive as a path)")
    dest = Path(dest)
    if dest.is_file():
        check_sha256(dest, sha256, name=url)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    progress_mod.note(f"fetching {url} into {dest.parent}", enabled=progress)
    _download_with_retries(url, part, retries=retries, backoff=backoff, timeout=timeout,
                           stall_seconds=stall_seconds, progress=progress)
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
    actual = sha256(path)
    if actual.lower() != expected.strip().lower():
        if remove:
            path.unlink(missing_ok=True)
        where = f"{name}: checksum mismatch for {path}" if name else f"{path}: checksum mismatch"
        raise DownloadError(f"{where}: sha256 {actual}, expected {expected}")


def _download_with_retries(url: str, part: Path, *, retries: int, backoff: float,
                           timeout: float, stall_seconds: float, progress: bool) -> None:
    """Call ``_download_once`` until it completes, sleeping ``backoff * 2**k`` between tries."""
    attempts = max(0, int(retries)) + 1
    for attempt in range(attempts):
        try:
            _download_once(url, part, timeout=timeout, stall_seconds=stall_seconds, progress=progress)
            return
        except _Retryable as e:
            if attempt == attempts - 1:
                raise DownloadError(f"{url}: {e} (gave up after {attempts} attempts; {OFFLINE_HINT})") from None
            time.sleep(backoff * 2 ** attempt)


def _download_once(url: str, part: Path, *, timeout: float, stall_seconds: float, progress: bool) -> None:
    """One HTTP request appending to (206) or rewriting (200) ``part``.

    Raises ``_Retryable`` for transient failures and ``DownloadError`` for final ones.
    """
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, min(timeout, stall_seconds))
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
        size = f"{total / 1e6:.1f} MB" if total is not None else "size not given"
        resumed = f", resuming at {offset / 1e6:.1f} MB" if offset else ""
        progress_mod.note(f"downloading {url} ({size}{resumed}) to {part.with_name(part.name.removesuffix('.part'))}",
                          enabled=progress)
        written = _stream(response, part, mode, offset, total, url, progress, stall_seconds)
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
        if 300 <= e.code < 400:  # urllib gave up following redirects (a loop, or too many)
            raise DownloadError(f"{url}: redirect loop or too many redirects (HTTP {e.code})") from None
        reason = f"HTTP {e.code} {one_line(e.reason)}"
        if e.code == 416 and offset:
            # The .part is no prefix of the current file (e.g. longer): drop it, start over.
            raise _RangeRefused(reason) from None
        if e.code >= 500 or e.code in (408, 429):
            raise _Retryable(reason) from None
        raise DownloadError(f"{url}: {reason}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, socket.gaierror):  # no DNS: offline or a wrong host, not transient
            raise DownloadError(f"{url}: cannot resolve host {urlparse(url).hostname!r} (offline?); "
                                f"{OFFLINE_HINT}") from None
        raise _Retryable(f"cannot connect ({one_line(e.reason)})") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise _Retryable(f"connection failed ({one_line(e)})") from None


def _range_start(response) -> int | None:
    """First byte position in a 206 answer's ``Content-Range: bytes a-b/n`` header."""
    m = re.match(r"\s*bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None


def _stream(response, part: Path, mode: str, offset: int, total: int | None, url: str,
            progress: bool, stall_seconds: float = STALL_SECONDS) -> int:
    """Copy the response body into ``part``; return the file's size afterwards."""
    written = offset
    window_start, window_bytes = time.monotonic(), 0
    try:
        with open(part, mode) as f, progress_mod.bar(total=total, initial=offset, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=part.name.removesuffix(".part"),
                                         enabled=progress, leave=False) as bar:
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
                window_bytes += len(block)
                if time.monotonic() - window_start >= stall_seconds:
                    if window_bytes < STALL_BYTES:
                        raise _Retryable(f"stalled: {window_bytes} bytes in the last {stall_seconds:g} s")
                    window_start, window_bytes = time.monotonic(), 0
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DownloadError(f"{url}: disk full while writing {part}") from None
        raise DownloadError(f"{url}: cannot write {part} ({one_line(e)})") from None
    if mode == "wb" and part.stat().st_size != written:  # pragma: no cover - paranoia
        raise _Retryable("local file size disagrees with bytes written")
    return written
