"""The generic keyed array store: round trip, damage detection, atomic commit, locking, management."""
import json
import multiprocessing as mp
import time

import numpy as np
import pytest

from esc50ann import cache
from esc50ann.errors import FeatureError

KEY = "0123456789abcdef"


def _commit(cache_dir, key=KEY, rows=5, cols=3, seed=0):
    X = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    names = [f"clip{i}.wav" for i in range(rows)]
    entry = cache.commit(cache_dir, key, [X[:2], X[2:]], n_cols=cols, filenames=names,
                         skipped=[("bad.wav", "bad.wav: NaN")], info={"config": {"a": 1}})
    return X, entry


def test_make_key_is_canonical_and_short():
    assert cache.make_key({"a": 1, "b": [1, 2]}) == cache.make_key({"b": [1, 2], "a": 1})
    assert cache.make_key({"a": 1}) != cache.make_key({"a": 2})
    assert len(cache.make_key({})) == cache.KEY_LENGTH


def test_commit_then_load_round_trip(tmp_path):
    X, entry = _commit(tmp_path)
    assert (tmp_path / KEY / "features.npy").is_file()
    loaded = cache.load(tmp_path, KEY)
    assert isinstance(loaded.array, np.memmap) and not loaded.array.flags.writeable
    np.testing.assert_array_equal(loaded.array, X)
    m = json.loads((tmp_path / KEY / "manifest.json").read_text())
    assert m["key"] == KEY and m["shape"] == [5, 3] and m["count"] == 5 and m["dtype"] == "float32"
    assert m["filenames"][0] == "clip0.wav" and m["skipped"] == [["bad.wav", "bad.wav: NaN"]]
    assert m["checksum"]["scope"] == "full" and m["config"] == {"a": 1} and "created" in m
    assert cache.load(tmp_path, "fedcba9876543210") is None


def test_truncated_entry_is_warned_and_removed(tmp_path):
    _commit(tmp_path)
    path = tmp_path / KEY / "features.npy"
    path.write_bytes(path.read_bytes()[:-8])
    assert cache.load(tmp_path, KEY, discard_damaged=False) is None  # silent, kept
    with pytest.warns(UserWarning, match=KEY):
        assert cache.load(tmp_path, KEY) is None
    assert not (tmp_path / KEY).exists()


@pytest.mark.parametrize("limit", [None, 1024])
def test_flipped_byte_fails_checksum(tmp_path, monkeypatch, limit):
    if limit:  # force the sampled checksum used for large entries
        monkeypatch.setattr(cache, "FULL_CHECKSUM_LIMIT", limit)
    _commit(tmp_path, rows=64, cols=32)
    m = json.loads((tmp_path / KEY / "manifest.json").read_text())
    assert m["checksum"]["scope"] == ("sampled" if limit else "full")
    path = tmp_path / KEY / "features.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # last block is always sampled
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="checksum"):
        assert cache.load(tmp_path, KEY) is None


def test_garbled_manifest_is_damage(tmp_path):
    _commit(tmp_path)
    (tmp_path / KEY / "manifest.json").write_text("{not json")
    with pytest.warns(UserWarning, match=KEY):
        assert cache.load(tmp_path, KEY) is None


def test_commit_killed_before_rename_leaves_no_entry(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(cache, "_write_manifest", boom)
    with pytest.raises(KeyboardInterrupt):
        _commit(tmp_path)
    assert not (tmp_path / KEY).exists()
    assert cache.load(tmp_path, KEY) is None


def test_chunks_round_trip_and_are_removed_by_commit(tmp_path):
    cache.save_chunk(tmp_path, KEY, "0000000-0000002", np.ones((2, 3), np.float32), {"names": ["a", "b"]})
    (cache.partial_dir(tmp_path, KEY) / "0000002-0000004.npz").write_bytes(b"garbage")
    chunks = cache.load_chunks(tmp_path, KEY)
    assert list(chunks) == ["0000000-0000002"] and chunks["0000000-0000002"][1] == {"names": ["a", "b"]}
    _commit(tmp_path)
    assert not cache.partial_dir(tmp_path, KEY).exists()


def test_list_and_clear(tmp_path):
    _commit(tmp_path)
    other = "fedcba9876543210"
    _commit(tmp_path, key=other, rows=2)
    cache.save_chunk(tmp_path, "aaaaaaaaaaaaaaaa", "0000000-0000001", np.ones((1, 3)), {})
    rows = {r["key"]: r for r in cache.list_entries(tmp_path)}
    assert rows[KEY]["status"] == "complete" and rows[KEY]["count"] == 5 and rows[KEY]["shape"] == (5, 3)
    assert rows[KEY]["size"] > 0 and "a=1" in rows[KEY]["summary"]
    assert rows["aaaaaaaaaaaaaaaa"]["status"] == "partial"
    assert cache.clear(tmp_path, other) == [other]
    assert not (tmp_path / other).exists()
    with pytest.raises(FeatureError, match=other):
        cache.clear(tmp_path, other)
    assert sorted(cache.clear(tmp_path)) == sorted(["aaaaaaaaaaaaaaaa", KEY])
    assert cache.list_entries(tmp_path) == []


def test_bad_key_is_refused(tmp_path):
    with pytest.raises(FeatureError, match="invalid cache key"):
        cache.load(tmp_path, "../etc")


def _hold_lock(cache_dir, started):
    with cache.locked(cache_dir, KEY):
        started.set()
        time.sleep(0.3)  # long enough for the test to block on the lock meanwhile
        (cache_dir / "released").touch()  # the last thing done while holding it


def test_lock_excludes_other_processes(tmp_path):
    ctx = mp.get_context("fork")
    started = ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(tmp_path, started))
    p.start()
    try:
        assert started.wait(30)
        with cache.locked(tmp_path, KEY, blocking=False) as got:
            assert not got
        with cache.locked(tmp_path, KEY) as got:
            assert got and (tmp_path / "released").exists()  # granted only after the holder let go
    finally:
        p.join(30)
