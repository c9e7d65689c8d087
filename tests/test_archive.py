"""Safe extraction: the official layout, atomic replacement, damaged and hostile archives."""
import os
import re
import stat
import zipfile
from pathlib import Path

import pytest

import synth
from esc50ann.archive import extract
from esc50ann.errors import DatasetError


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_extract_official_layout(synth_archive, tmp_path):
    root = extract(synth_archive, tmp_path / "data", progress=False)
    assert root == tmp_path / "data" / "ESC-50-master"
    assert (root / "meta" / "esc50.csv").is_file()
    assert len(list((root / "audio").glob("*.wav"))) == 24
    assert os.listdir(tmp_path / "data") == ["ESC-50-master"]  # no temporary folder left


def test_extract_replaces_an_older_folder(synth_archive, tmp_path):
    old = tmp_path / "ESC-50-master"
    old.mkdir()
    (old / "stale.txt").write_text("old")
    root = extract(synth_archive, tmp_path, progress=False)
    assert not (root / "stale.txt").exists()
    assert os.listdir(tmp_path) == ["ESC-50-master"]


def test_extract_finds_the_folder_holding_the_metadata(tmp_path):
    zpath = tmp_path / "other.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("outer/inner/meta/esc50.csv", "x")
        z.writestr("outer/inner/audio/a.wav", "y")
        z.writestr("outer/README", "skipped")
    root = extract(zpath, tmp_path / "out", progress=False)
    assert _tree(root) == ["audio", "audio/a.wav", "meta", "meta/esc50.csv"]


def test_corrupted_zip(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip" * 100)
    with pytest.raises(DatasetError, match=re.escape(str(bad)) + ".*not a readable zip"):
        extract(bad, tmp_path / "out")


def test_damaged_member_leaves_nothing_behind(synth_archive, tmp_path):
    data = bytearray(synth_archive.read_bytes())
    middle = len(data) // 2  # inside some WAV's deflated data
    data[middle:middle + 200] = bytes(200)
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=re.escape(str(damaged)) + ".*damaged member"):
        extract(damaged, tmp_path / "out", progress=False)
    assert _tree(tmp_path / "out") == []


def test_no_metadata_in_archive(tmp_path):
    zpath = tmp_path / "x.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("something/else.txt", "x")
    with pytest.raises(DatasetError, match="no meta/esc50.csv"):
        extract(zpath, tmp_path / "out")


@pytest.mark.parametrize("member", ["../evil", "ESC-50-master/../../evil", "/tmp/abs-evil",
                                    "C:/evil", "ESC-50-master\\..\\..\\evil"])
def test_path_traversal_refused(member, tmp_path):
    zpath = synth.make_archive(tmp_path / "slip.zip", n_folds=1, clips_per_class=1,
                               extra_members={member: b"pwned"})
    out = tmp_path / "a" / "b"
    with pytest.raises(DatasetError, match=re.escape(repr(member))):
        extract(zpath, out, progress=False)
    assert _tree(tmp_path / "a") == []
    assert not (tmp_path / "a" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not Path("/tmp/abs-evil").exists()


def test_symlink_member_refused(tmp_path):
    zpath = synth.make_archive(tmp_path / "link.zip", n_folds=1, clips_per_class=1)
    info = zipfile.ZipInfo("ESC-50-master/audio/link.wav")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(zpath, "a") as z:
        z.writestr(info, "/etc/passwd")
    with pytest.raises(DatasetError, match="link.wav.*symbolic link"):
        extract(zpath, tmp_path / "out", progress=False)
    assert _tree(tmp_path / "out") == []


def test_total_size_limit(synth_archive, tmp_path):
    with pytest.raises(DatasetError, match="zip bomb"):
        extract(synth_archive, tmp_path / "out", max_uncompressed=100_000, progress=False)
    assert _tree(tmp_path / "out") == []


def test_absurd_compression_ratio_refused(tmp_path):
    zpath = synth.make_archive(tmp_path / "bomb.zip", n_folds=1, clips_per_class=1)
    with zipfile.ZipFile(zpath, "a", compression=zipfile.ZIP_BZIP2) as z:
        z.writestr("ESC-50-master/audio/zeros.wav", bytes(16 * 2**20))  # ~16 MiB -> ~50 bytes
    with pytest.raises(DatasetError, match="zeros.wav.*compression ratio"):
        extract(zpath, tmp_path / "out", progress=False)


