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
from esc50ann.paths import DATASET_FOLDER
from esc50ann import progress as progress_mod

META_CSV = "meta/esc50.csv"
# Bounds from what ESC-50 needs: 2000 clips x 5 s x 44.1 kHz x 16 bit = 882 MB of audio (the
# official zip is ~600 MB, about 1.5:1). An archive may declare at most 1.5 GB in total, at most
# 20:1 overall (audio barely compresses; 300 MiB of zeros squeezes 900:1), at most 10,000
# members; one member may not inflate more than 1000:1 unless it is tiny (silence compresses).
MAX_UNCOMPRESSED = 1_500_000_000
MAX_TOTAL_RATIO = 20
MAX_MEMBERS = 10_000
MAX_RATIO = 1000
RATIO_MIN_SIZE = 1 << 20


def extract(archive: Path, dest_parent: Path, *, max_uncompressed: int = MAX_UNCOMPRESSED,
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
        if info.flag_bits & 0x1:
            raise DatasetError(f"{archive}: member {name!r} is encrypted (ESC-50 archives are not)")
        if info.file_size > RATIO_MIN_SIZE and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise DatasetError(f"{archive}: refusing member {name!r} (compression ratio "
                               f"{info.file_size // max(info.compress_size, 1)}:1 looks like a zip bomb)")
        total += info.file_size
    if total > max_uncompressed:
        raise DatasetError(f"{archive}: refusing to extract {total} bytes "
                           f"(more than the {max_uncompressed}-byte limit; zip bomb?)")
    if len(infos) > MAX_MEMBERS:
        raise DatasetError(f"{archive}: refusing an archive of {len(infos)} members (ESC-50 has about 2,000; "
                           f"the limit is {MAX_MEMBERS})")
    packed = sum(i.compress_size for i in infos)
    if total > RATIO_MIN_SIZE and total > MAX_TOTAL_RATIO * max(packed, 1):
        raise DatasetError(f"{archive}: refusing to extract {total} bytes from {packed} (overall compression "
                           f"ratio {total // max(packed, 1)}:1, over {MAX_TOTAL_RATIO}:1; zip bomb?)")


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
