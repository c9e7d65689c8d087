"""The data root's ``dataset.json``: what the dataset stage verified, so the next run trusts it.

    {"source": ..., "archive_sha256": ... | null, "root": <dataset folder>, "verified_at": ...,
     "n_clips": N, "files": {filename: sha256}, "stats": {filename: [size, mtime_ns]},
     "layout": {"kind": ..., "audio_dir": ..., ...}}

``layout`` (``esc50ann.layouts.Layout.to_record``) is written for datasets other than ESC-50 only:
a record without one is ESC-50's, so ESC-50's records stay as they always were.

``read`` checks the shape of the file (``RECORD``) before anything uses it (a damaged or forged record is one
``DatasetError``); ``write`` replaces it atomically.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from esc50ann import layouts
from esc50ann.errors import DatasetError, one_line
from esc50ann.fileio import write_text
from esc50ann.params import DictOf, Document, InstanceOf, Integral, Interval, ListOf, Options
from esc50ann.paths import record_path
from esc50ann.verify import fingerprints

# The shape of dataset.json, checked before any field is used.
RECORD = Document({
    "source": [InstanceOf(str)],
    "root": [InstanceOf(str)],
    "verified_at": [InstanceOf(str)],
    "n_clips": [Interval(Integral, 0)],
    "files": [DictOf(InstanceOf(str), description="an object of file names and their SHA-256")],
}, {
    "archive_sha256": [InstanceOf(str), None],
    "stats": [DictOf(ListOf(Interval(Integral), min_len=2, max_len=2), None,
                     description="an object of file names and their [size, mtime_ns]")],
    "layout": [Document({
        "kind": [Options(*layouts.KINDS)],
        "root": [InstanceOf(str)],
        "audio_dir": [InstanceOf(str)],
        "metadata": [InstanceOf(str), None],
        "columns": [Document({}, {role: [InstanceOf(str)] for role in layouts.ROLES},
                             description="an object of column names")],
        "split": [InstanceOf(str), None],
        "n_folds": [Interval(Integral, 2), None],
        "group_pattern": [InstanceOf(str), None],
    }, description="an object (esc50ann.layouts.Layout.to_record)")],
}, description="an object (what the dataset stage verified)")


def read(data_dir: Path) -> dict | None:
    """The parsed ``dataset.json`` of the data root ``data_dir``, or None if there is none.

    Raises
    ------
    DatasetError
        The file exists but is damaged or of the wrong shape (``RECORD``).
    """
    path = record_path(data_dir)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: damaged ({one_line(e)}); run `esc50ann download` again") from None
    problem = RECORD.problem(record)
    kind = (record.get("layout") or {}).get("kind") if not problem else None
    if kind in (layouts.URBANSOUND8K, layouts.CSV) and not {"file", "label"} <= set(record["layout"]["columns"]):
        problem = f"layout {kind!r} names no file and label columns"
    if problem:
        raise DatasetError(f"{path}: damaged ({problem}); run `esc50ann download` again")
    return record


def layout(record: dict) -> layouts.Layout:
    """The ``esc50ann.layouts.Layout`` a record (as ``read`` gives it) describes."""
    if "layout" not in record:
        return layouts.esc50(Path(record["root"]))
    return layouts.Layout.from_record(record["layout"])


def write(data_dir: Path, *, source: str, root: Path, manifest: dict[str, str],
          archive_sha256: str | None = None, layout: layouts.Layout | None = None) -> Path:
    """Atomically write ``dataset.json`` for the verified dataset folder ``root`` whose audio files
    hash to ``manifest`` (filename -> SHA-256), and the archive checksum it was checked against;
    ``layout`` (default: ESC-50's) says where its metadata and audio are."""
    layout = layout or layouts.esc50(root)
    record = {
        "source": source,
        "archive_sha256": archive_sha256.strip().lower() if archive_sha256 else None,
        "root": str(Path(root).resolve()),
        "verified_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_clips": len(manifest),
        "files": dict(manifest),
        "stats": fingerprints(layout.audio_dir, manifest),
    }
    if layout.kind != layouts.ESC50:  # ESC-50's records stay as they always were
        record["layout"] = layout.to_record()
    return write_text(record_path(data_dir), json.dumps(record, indent=1) + "\n")


def forget(data_dir: Path, root: Path) -> None:
    """Remove ``dataset.json`` if it describes the dataset folder ``root`` (or is damaged): that
    folder is about to be replaced, and a record of it would then describe other files."""
    try:
        record = read(data_dir)
    except DatasetError:
        record = {"root": str(Path(root).resolve())}
    if record is not None and Path(record["root"]) == Path(root).resolve():
        record_path(data_dir).unlink(missing_ok=True)
