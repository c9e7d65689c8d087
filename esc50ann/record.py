"""The data root's ``dataset.json``: what the dataset stage verified, so the next run trusts it.

    {"source": ..., "archive_sha256": ... | null, "root": <dataset folder>, "verified_at": ...,
     "n_clips": N, "files": {filename: sha256}, "stats": {filename: [size, mtime_ns]},
     "layout": {"kind": ..., "audio_dir": ..., ...}}

``layout`` (``esc50ann.layouts.Layout.to_record``) is written for datasets other than ESC-50 only:
a record without one is ESC-50's, so ESC-50's records stay as they always were.

``read`` checks the shape of the file before anything uses it (a damaged or forged record is one
``DatasetError``); ``write`` replaces it atomically.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from esc50ann import layouts
from esc50ann.errors import DatasetError, one_line
from esc50ann.fileio import write_text
from esc50ann.paths import record_path
from esc50ann.verify import fingerprints

_KEYS = ("source", "root", "verified_at", "n_clips", "files")


def read(data_dir: Path) -> dict | None:
    """The parsed ``dataset.json`` of the data root ``data_dir``, or None if there is none.

    Raises
    ------
    DatasetError
        The file exists but is damaged or of the wrong shape.
    """
    path = record_path(data_dir)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: damaged ({one_line(e)}); run `esc50ann download` again") from None
    if not _well_formed(record):
        raise DatasetError(f"{path}: damaged (expected an object with string source and root and files "
                           f"mapping names to checksums); run `esc50ann download` again")
    return record


def _well_formed(record) -> bool:
    if not isinstance(record, dict) or any(k not in record for k in _KEYS):
        return False
    files, stats = record["files"], record.get("stats", {})
    return (isinstance(record["source"], str) and isinstance(record["root"], str) and isinstance(files, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
            and isinstance(stats, dict)
            and all(v is None or (isinstance(v, list) and len(v) == 2 and all(type(x) is int for x in v))
                    for v in stats.values())
            and isinstance(record.get("archive_sha256") or "", str)
            and ("layout" not in record or _layout_well_formed(record["layout"])))


def _layout_well_formed(doc) -> bool:
    def path(v, optional=False):
        return (optional and v is None) or isinstance(v, str)
    return (isinstance(doc, dict) and set(doc) == {"kind", "root", "audio_dir", "metadata", "columns", "split",
                                                    "n_folds", "group_pattern"}
            and doc["kind"] in layouts.KINDS and path(doc["root"]) and path(doc["audio_dir"])
            and path(doc["metadata"], True) and path(doc["split"], True) and path(doc["group_pattern"], True)
            and isinstance(doc["columns"], dict)
            and all(k in layouts.ROLES and isinstance(v, str) for k, v in doc["columns"].items())
            and (doc["n_folds"] is None or type(doc["n_folds"]) is int))


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
