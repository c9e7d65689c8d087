"""Unpacking the ESC-50 archive safely.

``extract`` refuses unsafe members (absolute paths, ``..``, symlinks) and zip bombs before
writing anything, unpacks the dataset folder into a temporary folder beside the destination and
renames it into place only when complete (and, optionally, checked). Every expected failure is a
one-line ``DatasetError`` naming the archive and the member.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import zipfile
import zlib
from pathlib import Path
from typing import Callable


from esc50ann.errors import DatasetError, StorageError, one_line
from esc50ann.fileio import CHUNK, owned_name, remove_stale
from esc50ann import progress as progress_mod

META_CSV = "meta/esc50.csv"
DATASET_FOLDER = "ESC-50-master"
# Deflate cannot exceed ~1032:1, so a higher declared ratio is forged; members under
# RATIO_MIN_SIZE are exempt because tiny or silent files legitimately compress very well.
MAX_RATIO = 1000
RATIO_MIN_SIZE = 1 << 20

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
        for pattern in (".extract-*", ".old-*"):  # left by a killed extraction (~280 MB each)
            remove_stale(dest_parent, pattern)
        tmp = dest_parent / owned_name(".extract-")
        tmp.mkdir()
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
    with progress_mod.bar(total=sum(i.file_size for i in members), unit="B", unit_scale=True,
              unit_divisor=1024, desc=f"extract {archive.name}", enabled=progress,
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
    """Copy one member. (A member that inflates past its declared size fails zipfile's own
    length and CRC checks, raised here as a damaged member.)"""
    try:
        with zf.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
        raise DatasetError(f"{archive}: damaged member {info.filename!r} ({one_line(e)})") from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise StorageError(f"{archive}: disk full while writing {target} (the archive is kept; "
                               "free space and run again)") from None
        raise StorageError(f"{archive}: cannot write {target} ({one_line(e)})") from None


def _swap_in(new: Path, final: Path) -> None:
    """Rename the complete folder ``new`` to ``final``, replacing an older one last."""
    old = None
    if final.exists():
        old = final.parent / owned_name(".old-")
        old.mkdir()
        os.replace(final, old / final.name)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
