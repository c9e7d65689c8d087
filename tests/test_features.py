"""Feature stage: the config, feature shapes, the cached parallel ``extract``."""
import json
import multiprocessing as mp
import os

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import synth
from esc50ann import audio, cache
from esc50ann import features as F
from esc50ann import recipe as R
from esc50ann.dataset import Dataset
from esc50ann.errors import ConfigError, FeatureError

SR = synth.SAMPLE_RATE


def _dataset(root):
    return Dataset(root, pd.read_csv(root / "meta" / "esc50.csv"))


@pytest.fixture
def small(tmp_path):
    """A writable 8-clip dataset (1 fold x 4 classes x 2 clips)."""
    return _dataset(synth.make_dataset_folder(tmp_path / "data", n_folds=1))


def _wav(path, y, sr=SR, subtype="PCM_16"):
    sf.write(path, y, sr, subtype=subtype)
    return path


# --------------------------------------------------------------------------- config

@pytest.mark.parametrize("field,value", [
    ("sample_rate", 0), ("duration", -1.0), ("n_fft", 1.5), ("hop_length", 0), ("n_mels", True),
    ("fmax", -5.0), ("top_db", float("nan")), ("representation", "cnn"), ("time_pool", 0),
    ("deltas", 1), ("n_mfcc", -1), ("on_error", "ignore")])
def test_config_rejects_bad_field_by_name(field, value):
    with pytest.raises(ConfigError, match=field):
        R.FeatureConfig(**{field: value})


def test_config_canonical_and_to_dict():
    assert R.FeatureConfig(duration=5) == R.FeatureConfig(duration=5.0)
    d = R.FeatureConfig(representation="flat", time_pool=4).to_dict()
    assert d["time_pool"] == 4 and d["sample_rate"] is None and json.dumps(d)
    with pytest.raises(ConfigError, match="time_pool"):
        R.FeatureConfig(representation="stats", time_pool=2)
    with pytest.raises(ConfigError, match="n_mfcc"):
        R.FeatureConfig(n_mels=8, n_mfcc=13)


@pytest.mark.parametrize("kw,bands", [
    ({}, 128), ({"deltas": True}, 256), ({"n_mfcc": 13}, 141), ({"deltas": True, "n_mfcc": 20, "n_mels": 40}, 100)])
def test_stats_shapes(synth_folder, kw, bands):
    config = R.FeatureConfig(**kw)
    v = R.clip_features(_dataset(synth_folder).audio_paths[0], config)
    assert v.shape == R.feature_shape(config) == (6 * bands,) and v.dtype == np.float32
    assert np.isfinite(v).all()


@pytest.mark.parametrize("kw,expect", [
    ({"time_pool": 1, "n_mels": 64}, 64 * 431), ({"time_pool": 4, "n_mels": 64}, 64 * 108),
    ({"time_pool": 8, "n_mels": 32, "deltas": True, "n_mfcc": 13}, (64 + 13) * 54),
    ({"sample_rate": 22050, "n_mels": 40, "duration": 2.0}, 40 * 87)])
def test_flat_shapes(synth_folder, kw, expect):
    config = R.FeatureConfig(representation="flat", **kw)
    v = R.clip_features(_dataset(synth_folder).audio_paths[0], config)
    assert v.shape == R.feature_shape(config) == (expect,) and v.dtype == np.float32


# --------------------------------------------------------------------------- extract and its cache

def _no_audio(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("audio decoded on a cache hit")
    monkeypatch.setattr(audio, "load_clip", boom)
    monkeypatch.setattr(sf, "read", boom)
    monkeypatch.setattr(sf, "info", boom)


def test_extract_then_hit_without_decoding(synth_folder, tmp_path, monkeypatch):
    ds = _dataset(synth_folder)
    config = R.FeatureConfig(n_mels=32)
    first = F.extract(ds, config, tmp_path, n_jobs=1, progress=False)
    assert not first.from_cache and first.X.shape == (24, 6 * 32) and first.X.dtype == np.float32
    assert first.filenames == list(ds.meta["filename"]) and first.skipped == []
    np.testing.assert_allclose(first.X[3], R.clip_features(ds.audio_paths[3], config), rtol=1e-6)
    _no_audio(monkeypatch)
    again = F.extract(ds, config, tmp_path, n_jobs=1, progress=False)
    assert again.from_cache and again.key == first.key and isinstance(again.X, np.memmap)
    np.testing.assert_array_equal(again.X, first.X)
    m = json.loads((tmp_path / first.key / "manifest.json").read_text())
    assert m["config"]["n_mels"] == 32 and m["versions"]["librosa"] == librosa.__version__


def test_parallel_matches_serial(synth_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(F, "CHUNK_SIZE", 5)  # 5 tasks of <= 5 clips on 2 workers
    ds = _dataset(synth_folder)
    config = R.FeatureConfig(representation="flat", n_mels=16, time_pool=8)
    par = F.extract(ds, config, tmp_path / "a", n_jobs=2, progress=True)
    ser = F.extract(ds, config, tmp_path / "b", n_jobs=1, progress=False)
    assert par.key == ser.key and par.X.shape == (24, 16 * 54)
    np.testing.assert_array_equal(par.X, ser.X)


def test_key_tracks_config_librosa_and_audio(small, monkeypatch):
    base = F.cache_key(small, R.FeatureConfig())
    assert F.cache_key(small, R.FeatureConfig(on_error="skip")) == base  # same numbers
    assert F.cache_key(small, R.FeatureConfig(n_mels=64)) != base
    assert F.cache_key(small, R.FeatureConfig(fmax=8000)) != base
    path = small.audio_paths[2]
    y = synth.tone(0, 99)
    _wav(path, y)
    os.utime(path, ns=(1, 1))
    changed = F.cache_key(small, R.FeatureConfig())
    assert changed != base
    verified = Dataset(small.root, small.meta, {n: "0" * 64 for n in small.meta["filename"]})
    assert F.cache_key(verified, R.FeatureConfig()) != changed  # the manifest's hashes count too
    # a file replaced in place under a stale manifest still changes the key (size and mtime)
    before = F.cache_key(verified, R.FeatureConfig())
    _wav(path, synth.tone(1, 98))
    os.utime(path, ns=(2, 2))
    assert F.cache_key(verified, R.FeatureConfig()) != before
    monkeypatch.setattr(librosa, "__version__", "0.0.0")
    assert F.cache_key(small, R.FeatureConfig()) != changed


def test_killed_run_leaves_no_entry_and_resumes(small, tmp_path, monkeypatch):
    monkeypatch.setattr(F, "CHUNK_SIZE", 3)  # chunks 0-3, 3-6, 6-8
    config = R.FeatureConfig(n_mels=16)
    real = R.clip_features
    calls = []

    def dies_on_fifth(path, cfg, **kw):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt  # as if killed halfway through the second chunk
        return real(path, cfg, **kw)

    monkeypatch.setattr(R, "clip_features", dies_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        F.extract(small, config, tmp_path, n_jobs=1, progress=False)
    key = F.cache_key(small, config)
    assert not (tmp_path / key).exists() and cache.load(tmp_path, key) is None
    assert [p.name for p in (tmp_path / f"{key}.partial").glob("*.npz")] == ["0000000-0000003.npz"]

    calls.clear()
    monkeypatch.setattr(R, "clip_features", lambda p, c, **kw: calls.append(p) or real(p, c, **kw))
    out = F.extract(small, config, tmp_path, n_jobs=1, progress=False)
    assert len(calls) == 5 and not out.from_cache  # only the 5 unfinished clips
    assert out.X.shape == (8, 96) and not (tmp_path / f"{key}.partial").exists()
    np.testing.assert_allclose(out.X[0], real(small.audio_paths[0], config), rtol=1e-6)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_entry_is_warned_and_recomputed(small, tmp_path, damage):
    config = R.FeatureConfig(n_mels=16)
    good = np.array(F.extract(small, config, tmp_path, n_jobs=1, progress=False).X)
    path = next(tmp_path.glob("*/features.npy"))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-10] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=path.parent.name):
        again = F.extract(small, config, tmp_path, n_jobs=1, progress=False)
    assert not again.from_cache
    np.testing.assert_array_equal(again.X, good)


def test_nan_clip_raises_or_is_skipped(small, tmp_path):
    bad = small.audio_paths[5]
    y = synth.tone(1, 5)
    y[100:200] = np.nan
    _wav(bad, y, subtype="FLOAT")
    with pytest.raises(FeatureError, match=bad.name) as info:
        F.extract(small, R.FeatureConfig(n_mels=16), tmp_path, n_jobs=1, progress=False)
    assert "\n" not in str(info.value)
    key = F.cache_key(small, R.FeatureConfig(n_mels=16))
    assert not (tmp_path / key).exists()

    out = F.extract(small, R.FeatureConfig(n_mels=16, on_error="skip"), tmp_path, n_jobs=1, progress=False)
    assert out.X.shape == (7, 96) and np.isfinite(out.X).all()
    assert bad.name not in out.filenames and [s[0] for s in out.skipped] == [bad.name]
    assert "non-finite" in out.skipped[0][1]
    with pytest.raises(FeatureError, match=bad.name):  # a raise-mode hit on that entry still raises
        F.extract(small, R.FeatureConfig(n_mels=16), tmp_path, n_jobs=1, progress=False)


def _extract_in_child(root, cache_dir, queue):
    out = F.extract(_dataset(root), R.FeatureConfig(n_mels=16), cache_dir, n_jobs=1, progress=False)
    queue.put((out.from_cache, out.key, np.asarray(out.X).sum()))


def test_concurrent_writers_make_one_valid_entry(small, tmp_path):
    ctx = mp.get_context("fork")  # two real processes racing for one key (fork: no re-imports)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_extract_in_child, args=(small.root, tmp_path / "c", queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sorted(r[0] for r in results) == [False, True]  # one computed, one waited and reused
    assert results[0][1:] == results[1][1:]
    entries = cache.list_entries(tmp_path / "c")
    assert [e["status"] for e in entries] == ["complete"] and entries[0]["count"] == 8
    assert cache.load(tmp_path / "c", results[0][1]) is not None


def test_pitch_shifted_copies_sit_beside_the_unchanged_features(synth_folder, tmp_path):
    ds = _dataset(synth_folder)
    plain = R.FeatureConfig(n_mels=32, n_mfcc=8, modulation=(1.0, 4.0))
    shifted = R.FeatureConfig(n_mels=32, n_mfcc=8, modulation=(1.0, 4.0), pitch_shifts=(-1, 2))
    base = F.extract(ds, plain, tmp_path, n_jobs=1, progress=False)
    aug = F.extract(ds, shifted, tmp_path, n_jobs=1, progress=False)
    assert base.X_aug is None and aug.key != base.key
    d = 6 * (32 + 8) + 2 * (32 + 8)  # statistics of the log-mel and MFCCs, then the modulation of each
    assert base.X.shape == aug.X.shape == (len(ds), d) and aug.X_aug.shape == (len(ds), 2, d)
    np.testing.assert_allclose(aug.X, base.X, rtol=1e-6)  # the clip itself is never changed
    assert not np.allclose(aug.X_aug[:, 0], aug.X) and not np.allclose(aug.X_aug[:, 0], aug.X_aug[:, 1])
    names = base.feature_names
    assert len(names) == d and names[6 * 40] == "logmel_mod1hz_0" and names[-1] == "mfcc_mod4hz_7"
    S_db = audio.log_mel(audio.load_clip(ds.audio_paths[0], duration=5.0)[0], 44100, n_mels=32)
    mfcc = audio.planes(S_db, n_mfcc=8)[-1]
    np.testing.assert_allclose(base.X[0, -8 * 2:], audio.modulation_spectrum(mfcc, frame_rate=44100 / 512,
                                                                             edges=(1.0, 4.0)).ravel(), rtol=1e-4)
    again = F.extract(ds, shifted, tmp_path, n_jobs=1, progress=False)  # the copies are cached too
    assert again.from_cache and np.array_equal(again.X_aug, aug.X_aug) and "2 augmented copies" in repr(again)
    with pytest.raises(ConfigError, match="pitch_shifts"):
        R.FeatureConfig(pitch_shifts=(0, 1))
    with pytest.raises(ConfigError, match="modulation"):
        R.FeatureConfig(modulation=(4.0, 2.0))
