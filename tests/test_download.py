"""fetch and extract against a local HTTP server (127.0.0.1 only) and synthetic archives."""
from __future__ import annotations

import hashlib
import re
import socket
from pathlib import Path

import pytest

from esc50ann import dataset as ds, paths
from esc50ann.download import DEFAULT_SOURCE, check_sha256, fetch
from esc50ann.fileio import sha256 as sha256_file
from esc50ann.errors import DatasetError, DownloadError

from conftest import PAYLOAD


def quick(url, dest, **kw):
    """fetch with test-friendly defaults: no sleeping, short timeout, no bar."""
    return fetch(url, dest, **{"backoff": 0, "timeout": 5, "progress": False, **kw})


# ----------------------------------------------------------------------------- fetch


def test_default_source_is_the_official_archive():
    assert DEFAULT_SOURCE == "https://github.com/karolpiczak/ESC-50/archive/master.zip"


def test_full_download(http_server, tmp_path):
    dest = quick(http_server.url + "/data.bin", tmp_path / "d" / "data.bin", progress=True)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "d" / "data.bin.part").exists()
    assert [r["range"] for r in http_server.requests] == [None]


def test_cut_download_is_resumed_with_range(http_server, tmp_path):
    http_server.cut_after = 100_000
    dest = quick(http_server.url + "/data.bin", tmp_path / "data.bin", retries=2)
    assert dest.read_bytes() == PAYLOAD
    assert [r["range"] for r in http_server.requests] == [None, "bytes=100000-"]


def test_part_file_from_an_earlier_run_is_resumed(http_server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:12345])
    dest = quick(http_server.url + "/data.bin", tmp_path / "data.bin")
    assert dest.read_bytes() == PAYLOAD
    assert http_server.requests[0]["range"] == "bytes=12345-"


def test_server_ignoring_range_restarts_from_zero(http_server, tmp_path):
    http_server.ignore_range = True
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes that are not a prefix")
    dest = quick(http_server.url + "/data.bin", tmp_path / "data.bin")
    assert dest.read_bytes() == PAYLOAD
    assert http_server.requests[0]["range"] is not None  # asked, was ignored, file still right


def test_cut_and_range_ignored_still_ends_correct(http_server, tmp_path):
    http_server.ignore_range, http_server.cut_after = True, 50_000
    dest = quick(http_server.url + "/data.bin", tmp_path / "data.bin", retries=1)
    assert dest.read_bytes() == PAYLOAD
    assert len(http_server.requests) == 2


def test_overlong_part_gets_416_and_restarts(http_server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD + b"extra")
    dest = quick(http_server.url + "/data.bin", tmp_path / "data.bin", retries=1)
    assert dest.read_bytes() == PAYLOAD


def test_404_fails_at_once_naming_the_url(http_server, tmp_path):
    url = http_server.url + "/missing.zip"
    with pytest.raises(DownloadError, match=re.escape(url) + r".*HTTP 404 Not Found") as e:
        quick(url, tmp_path / "m.zip", retries=3)
    assert "\n" not in str(e.value)
    assert len(http_server.requests) == 1
    assert not (tmp_path / "m.zip").exists()


def test_500_is_retried_a_bounded_number_of_times(http_server, tmp_path):
    http_server.status = 500
    url = http_server.url + "/data.bin"
    with pytest.raises(DownloadError, match=re.escape(url) + r".*HTTP 500.*3 attempts"):
        quick(url, tmp_path / "data.bin", retries=2)
    assert len(http_server.requests) == 3


def test_unreachable_port(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: nobody listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.zip"
    with pytest.raises(DownloadError, match=re.escape(url) + r".*cannot connect"):
        quick(url, tmp_path / "x.zip", retries=1)


def test_checksum(http_server, tmp_path):
    url = http_server.url + "/data.bin"
    good = hashlib.sha256(PAYLOAD).hexdigest()
    assert quick(url, tmp_path / "ok.bin", sha256=good).read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match=re.escape(url) + ".*checksum mismatch"):
        quick(url, tmp_path / "bad.bin", sha256="0" * 64)
    assert not (tmp_path / "bad.bin").exists() and not (tmp_path / "bad.bin.part").exists()


def test_disk_full(http_server, tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    (tmp_path / "data.bin.part").symlink_to("/dev/full")  # every write fails with ENOSPC
    with pytest.raises(DownloadError, match="disk full while writing .*data.bin.part"):
        quick(http_server.url + "/data.bin", tmp_path / "data.bin")


@pytest.mark.parametrize("scheme", ["ftp", "file"])
def test_unsupported_scheme(tmp_path, scheme):
    # file:// sources never reach fetch: dataset.resolve_source turns them into paths.
    f = tmp_path / "a.zip"
    f.write_bytes(b"zip")
    url = "ftp://x/y.zip" if scheme == "ftp" else f.as_uri()
    with pytest.raises(DownloadError, match=re.escape(url) + ": unsupported URL scheme") as e:
        fetch(url, tmp_path / "y.zip")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "y.zip").exists()


def test_check_sha256(tmp_path):
    f = tmp_path / "a.zip"
    f.write_bytes(b"zip")
    check_sha256(f, None)
    check_sha256(f, hashlib.sha256(b"zip").hexdigest().upper())
    with pytest.raises(DownloadError, match=re.escape(f"{f}: checksum mismatch: sha256 ")):
        check_sha256(f, "0" * 64)
    assert f.exists()
    with pytest.raises(DownloadError, match=re.escape(f"http://h/a.zip: checksum mismatch for {f}")):
        check_sha256(f, "0" * 64, name="http://h/a.zip", remove=True)
    assert not f.exists()


# ----------------------------------------------------------------------------- prepare over HTTP


def test_prepare_downloads_extracts_and_verifies(http_server, synth_archive, tmp_path):
    http_server.files["/ESC-50-master.zip"] = synth_archive.read_bytes()
    url = http_server.url + "/ESC-50-master.zip"
    data_dir = tmp_path / "data"
    d = ds.prepare(url, data_dir, progress=False)
    assert len(d) == 24 and d.folds == [1, 2, 3]
    assert paths.download_path(url, data_dir).is_file() and paths.download_path(url, data_dir).name.endswith("-ESC-50-master.zip")
    assert d.root == data_dir / "ESC-50-master"
    assert sha256_file(d.root / "audio" / d.meta.filename[0]) == d.manifest[d.meta.filename[0]]
    n = len(http_server.requests)
    again = ds.prepare(url, data_dir, progress=False)
    assert len(http_server.requests) == n  # no-op: nothing fetched
    assert again.manifest == d.manifest


def test_prepare_drops_a_download_that_is_not_a_zip(http_server, tmp_path):
    http_server.files["/broken.zip"] = b"<html>not a zip</html>"
    with pytest.raises(DatasetError, match="not a readable zip.*removed the download"):
        ds.prepare(http_server.url + "/broken.zip", tmp_path, progress=False)
    assert not paths.download_path(http_server.url + "/broken.zip", tmp_path).exists()
