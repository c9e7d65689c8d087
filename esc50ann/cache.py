"""A keyed store of 2-D float32 arrays on disk, safe against kills and concurrent writers.

Layout under ``cache_dir``::

    <key>/features.npy        the array, float32, rows named by manifest["filenames"]
    <key>/manifest.json       human-readable: key, info (config, versions), shape, checksum, ...
    <key>.partial/*.npz       finished chunks of an entry being built (resumable)
    .locks/<key>.lock         lock file serialising writers of one key (kept, never deleted)
    .<key>.tmp-*/             an entry being committed; renamed to <key>/ when complete

An entry is only ever created by an atomic ``os.replace`` of a complete folder, so a
killed writer leaves a ``.partial`` folder (reused on the next run) or a stray temp folder
(ignored and swept), never a ``<key>/`` that looks valid.

Integrity check: on every load the file size and the ``.npy`` header (shape, dtype) must
match the manifest, and a SHA-256 must match. Entries up to ``FULL_CHECKSUM_LIMIT`` bytes
(64 MiB; the default stats features of all 2000 ESC-50 clips are ~6 MB, hashed in ~10 ms)
are hashed whole. Larger entries (e.g. flat spectrograms, ~440 MB) hash their size plus
``SAMPLE_BLOCKS`` evenly spaced 64 KiB blocks, so a warm load stays well under a second;
truncation is still always caught by the size check, but a bit flip between sampled
blocks of a large entry is not.

This module knows nothing about audio features; ``esc50ann.features`` builds on it.
"""
from __future__ import annotations

import hashlib
import errno
import json
import os
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from esc50ann.errors import FeatureError, StorageError
from esc50ann import fileio
from esc50ann.fileio import atomic_path, file_lock, owned_name, remove_stale, write_text
from esc50ann.params import Document, InstanceOf, Integral, Interval, ListOf, Options

ARRAY_FILE = "features.npy"
MANIFEST_FILE = "manifest.json"
FORMAT = 1
FULL_CHECKSUM_LIMIT = 64 * 2**20
SAMPLE_BLOCKS = 256
BLOCK_SIZE = 64 * 2**10
KEY_LENGTH = 16  # hex digits: 64 bits, plenty for a local cache


@dataclass
class Entry:
    """A verified cache entry: ``array`` is read-only memory-mapped (n_rows, n_cols) float32."""

    key: str
    path: Path
    array: np.ndarray
    manifest: dict


def make_key(payload) -> str:
    """Short hex SHA-256 of a canonical JSON rendering of ``payload`` (sorted keys, no spaces)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def _is_key(name: str) -> bool:
    return len(name) == KEY_LENGTH and all(c in "0123456789abcdef" for c in name)


def _check_key(key: str) -> None:
    # Keys become path components: refuse anything that could escape cache_dir.
    if not _is_key(key):
        raise FeatureError(f"invalid cache key {key!r}: expected {KEY_LENGTH} hex digits")


# --------------------------------------------------------------------------- locking

@contextmanager
def locked(cache_dir: Path, key: str, *, blocking: bool = True) -> Iterator[bool]:
    """Hold the exclusive ``<key>.lock`` for the block; yields False if non-blocking and busy."""
    _check_key(key)
    with file_lock(Path(cache_dir) / ".locks" / f"{key}.lock", blocking=blocking) as acquired:
        yield acquired


# --------------------------------------------------------------------------- checksums

def _checksum(path: Path, size: int, scope: str) -> str:
    if scope == "full":
        return fileio.sha256(path)
    h = hashlib.sha256()  # "sampled": size plus evenly spaced blocks, first and last included
    h.update(str(size).encode())
    last = max(size - BLOCK_SIZE, 0)
    with open(path, "rb") as f:
        for i in range(SAMPLE_BLOCKS):
            f.seek(last * i // (SAMPLE_BLOCKS - 1))
            h.update(f.read(BLOCK_SIZE))
    return h.hexdigest()


def _scope(size: int) -> str:
    return "full" if size <= FULL_CHECKSUM_LIMIT else "sampled"


# --------------------------------------------------------------------------- reading

# The shape of manifest.json, checked before any field is used (read_manifest).
_COUNT = Interval(Integral, 0)
MANIFEST = Document({
    "key": [InstanceOf(str)],
    "shape": [ListOf(_COUNT, min_len=2, max_len=2)],
    "file_size": [_COUNT],
    "checksum": [Document({"sha256": [InstanceOf(str)]}, {"scope": [Options("full", "sampled")]})],
    "filenames": [ListOf(InstanceOf(str))],
    "skipped": [ListOf(ListOf(InstanceOf(str), min_len=2, max_len=2))],
}, {
    "dtype": [Options("float32")],
    "created": [InstanceOf(str), None],
    "count": [_COUNT, None],
    "config": [InstanceOf(dict)],
}, description="an object (a cache manifest)")
def read_manifest(folder: Path) -> tuple[dict | None, str | None]:
    """``(manifest, None)`` for the entry folder's ``manifest.json`` of the right shape (``MANIFEST``),
    else ``(None, what is wrong)``: the one reader of manifests."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # missing, unreadable, not UTF-8, not JSON
        return None, f"unreadable manifest ({type(e).__name__})"
    problem = MANIFEST.problem(manifest)
    return (None, f"manifest of the wrong shape ({problem})") if problem else (manifest, None)


def _problem(folder: Path, key: str) -> tuple[str | None, dict | None, np.ndarray | None]:
    """(what is wrong or None, manifest, mapped array) for the entry folder."""
    manifest, problem = read_manifest(folder)
    if problem:
        return problem, None, None
    shape, size, checksum = tuple(manifest["shape"]), manifest["file_size"], manifest["checksum"]
    if manifest["key"] != key or len(manifest["filenames"]) != shape[0]:
        return "manifest does not match its key or row count", None, None
    array_path = folder / ARRAY_FILE
    try:
        actual = array_path.stat().st_size
    except OSError:
        return f"missing {ARRAY_FILE}", None, None
    if actual != size:
        return f"{ARRAY_FILE} is {actual} bytes, manifest says {size}", None, None
    try:
        if shape[0] == 0:  # an empty file cannot be memory-mapped
            array = np.load(array_path)
        else:
            array = np.load(array_path, mmap_mode="r")
    except (OSError, ValueError) as e:
        return f"unreadable {ARRAY_FILE} ({type(e).__name__})", None, None
    if array.shape != shape or array.dtype != np.float32:
        return f"{ARRAY_FILE} holds {array.shape} {array.dtype}, manifest says {shape}", None, None
    if _checksum(array_path, size, checksum.get("scope", "full")) != checksum.get("sha256"):
        return f"{ARRAY_FILE} checksum mismatch", None, None
    return None, manifest, array


def load(cache_dir: Path, key: str, *, discard_damaged: bool = True) -> Entry | None:
    """The verified entry ``key``, or None if absent or damaged.

    A damaged entry (truncated, resized, checksum mismatch, bad manifest) is never returned.
    With ``discard_damaged`` (call it while holding ``locked``) it is reported with
    ``warnings.warn`` naming the key and removed so it can be rebuilt.
    """
    _check_key(key)
    folder = Path(cache_dir) / key
    if not folder.is_dir():
        return None
    problem, manifest, array = _problem(folder, key)
    if problem is None:
        return Entry(key, folder, array, manifest)
    if discard_damaged:
        warnings.warn(f"cache entry {key} is damaged ({problem}); recomputing", stacklevel=2)
        _remove_dir(folder)
    return None


# --------------------------------------------------------------------------- writing

def partial_dir(cache_dir: Path, key: str) -> Path:
    _check_key(key)
    return Path(cache_dir) / f"{key}.partial"


def save_chunk(cache_dir: Path, key: str, name: str, array: np.ndarray, info: dict) -> Path:
    """Atomically store one finished chunk (rows of the future entry) plus JSON ``info``."""
    folder = partial_dir(cache_dir, key)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, array=np.asarray(array, dtype=np.float32), info=np.array(json.dumps(info)))
    return path


def load_chunks(cache_dir: Path, key: str) -> dict[str, tuple[np.ndarray, dict]]:
    """Chunks finished by earlier (possibly killed) runs: name -> (array, info)."""
    folder = partial_dir(cache_dir, key)
    chunks = {}
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        try:
            with np.load(path) as z:
                chunks[path.stem] = (z["array"], json.loads(str(z["info"])))
        except Exception:  # a damaged chunk is simply recomputed
            path.unlink(missing_ok=True)
    return chunks


def commit(cache_dir: Path, key: str, parts: Iterable[np.ndarray], *, n_cols: int,
           filenames: list[str], skipped: list, info: dict) -> Entry:
    """Write the entry from row blocks ``parts`` into a temp folder, then rename it into place.

    Call while holding ``locked(cache_dir, key)``. Removes the key's ``.partial`` chunks after.
    """
    _check_key(key)
    cache_dir = Path(cache_dir)
    for stale in cache_dir.glob(f".{key}.tmp-*"):  # left by a writer killed mid-commit (we hold the lock)
        _remove_dir(stale)
    for pattern in (".*.tmp-*", ".*.del-*"):  # other keys' leftovers, when their owner is gone
        remove_stale(cache_dir, pattern)
    tmp = cache_dir / owned_name(f".{key}.tmp-")
    tmp.mkdir(parents=True)
    try:
        shape = (len(filenames), int(n_cols))
        array_path = tmp / ARRAY_FILE
        _write_rows(array_path, parts, shape, key)
        size = array_path.stat().st_size
        scope = _scope(size)
        manifest = {
            "format": FORMAT,
            "key": key,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "count": shape[0],
            "shape": list(shape),
            "dtype": "float32",
            "file_size": size,
            "checksum": {"sha256": _checksum(array_path, size, scope), "scope": scope,
                         **({"blocks": SAMPLE_BLOCKS, "block_size": BLOCK_SIZE} if scope == "sampled" else {})},
            **info,
            "skipped": [list(s) for s in skipped],
            "filenames": list(filenames),
        }
        _write_manifest(tmp, manifest)
        final = cache_dir / key
        if final.exists():  # a damaged entry the caller chose to replace
            _remove_dir(final)
        os.replace(tmp, final)  # the one step that makes the entry visible
    except BaseException:
        _remove_dir(tmp)
        raise
    _remove_dir(partial_dir(cache_dir, key))
    entry = load(cache_dir, key, discard_damaged=False)
    if entry is None:
        raise FeatureError(f"cache entry {key} failed verification right after writing")
    return entry


def _write_rows(path: Path, parts: Iterable[np.ndarray], shape: tuple[int, int], key: str) -> None:
    """Stream row blocks into a ``.npy`` file of ``shape`` with ordinary writes (flat features of
    2000 clips are ~0.5 GB), its space reserved first.

    Not through a memory map: when the disk cannot supply a mapped page's block the process gets
    SIGBUS and dies without a word. Here a full disk is an ``OSError`` (ENOSPC), raised as a
    one-line ``FeatureError`` naming the file.
    """
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": shape}
    rows = 0
    try:
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            f.flush()
            _reserve(f, f.tell() + shape[0] * shape[1] * 4)
            for part in parts:
                part = np.ascontiguousarray(part, dtype=np.float32)
                f.write(part.data)
                rows += len(part)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise StorageError(f"{path}: no space left on the device for the feature cache entry "
                               f"({shape[0]} x {shape[1]} float32, {shape[0] * shape[1] * 4 / 2**20:.0f} MiB); "
                               "free space or choose another --data-dir") from None
        raise
    if rows != shape[0]:
        raise FeatureError(f"cache entry {key}: got {rows} rows for {shape[0]} filenames")


def _reserve(f, size: int) -> None:
    """Claim the file's blocks up front, so a full disk fails here rather than half-way."""
    try:
        os.posix_fallocate(f.fileno(), 0, size)
    except AttributeError:  # no posix_fallocate on this platform: the writes will tell
        pass
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def _write_manifest(folder: Path, manifest: dict) -> None:
    write_text(folder / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")


def _remove_dir(path: Path) -> None:
    # Rename first so a half-deleted entry never sits under its key.
    path = Path(path)
    if not path.exists():
        return
    doomed = path.with_name(owned_name(f".{path.name}.del-"))
    try:
        os.replace(path, doomed)
    except OSError:
        doomed = path
    shutil.rmtree(doomed, ignore_errors=True)


# --------------------------------------------------------------------------- management

def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _summary(config) -> str:
    if not isinstance(config, dict):
        return ""
    return ", ".join(f"{k}={v}" for k, v in config.items())


def list_entries(cache_dir: Path) -> list[dict]:
    """One dict per key found: key, status ('complete'|'partial'|'damaged'), created, count,
    shape, size (bytes on disk), config (dict) and summary (one line). Not checksummed."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return []
    rows = []
    for path in sorted(cache_dir.iterdir()):
        name = path.name
        if path.is_dir() and _is_key(name):
            m, problem = read_manifest(path)
            if problem is None:
                rows.append({"key": name, "status": "complete", "created": m.get("created"),
                             "count": m.get("count"), "shape": tuple(m["shape"]),
                             "size": _dir_size(path), "config": m.get("config", {}),
                             "summary": _summary(m.get("config", {}))})
            else:
                rows.append({"key": name, "status": "damaged", "created": None, "count": None,
                             "shape": None, "size": _dir_size(path), "config": {}, "summary": problem})
        elif path.is_dir() and name.endswith(".partial") and _is_key(name[:-8]):
            if (cache_dir / name[:-8]).is_dir():
                continue
            rows.append({"key": name[:-8], "status": "partial", "created": None,
                         "count": len(list(path.glob("*.npz"))), "shape": None,
                         "size": _dir_size(path), "config": {}, "summary": "unfinished chunks"})
    return rows


def clear(cache_dir: Path, key: str | None = None) -> list[str]:
    """Remove entry ``key`` (or every entry) with its partial chunks; return the removed keys.

    A key being written by another process right now is left alone (with a warning).
    """
    cache_dir = Path(cache_dir)
    names = [p.name for p in cache_dir.iterdir()] if cache_dir.is_dir() else []
    found = sorted({n.split(".")[0] for n in names if _is_key(n.split(".")[0])})
    if key is not None:
        _check_key(key)
        if key not in found:
            raise FeatureError(f"no cache entry {key!r} in {cache_dir}")
        found = [key]
    removed = []
    for k in found:
        with locked(cache_dir, k, blocking=False) as got:
            if not got:
                warnings.warn(f"cache entry {k} is being written by another process; left alone")
                continue
            _remove_dir(cache_dir / k)
            _remove_dir(partial_dir(cache_dir, k))
            for stale in cache_dir.glob(f".{k}.tmp-*"):
                _remove_dir(stale)
            removed.append(k)
    if key is None:
        for stale in cache_dir.glob(".*.del-*"):
            shutil.rmtree(stale, ignore_errors=True)
    return removed
