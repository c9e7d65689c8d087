"""Audio verification, the prepare/load stage, and the Dataset object."""
from __future__ import annotations

import json
import re
import shutil
import threading
import time
import zipfile
from pathlib import Path

import pytest

import synth
from esc50ann import dataset as ds
from esc50ann import folds
from esc50ann import paths
from esc50ann.dataset import Dataset, load, prepare
from esc50ann.verify import verify_clips
from esc50ann.fileio import sha256 as sha256_file
from esc50ann.metadata import load_metadata
from esc50ann.errors import DatasetError, DownloadError


@pytest.fixture
def folder(synth_folder, tmp_path) -> Path:
    """A private, writable copy of the synthetic ESC-50-master folder."""
    return Path(shutil.copytree(synth_folder, tmp_path / "ESC-50-master"))


@pytest.fixture(scope="module")
def dataset(synth_folder) -> Dataset:
    return Dataset(synth_folder, load_metadata(synth_folder / "meta" / "esc50.csv"))


def zip_with(path: Path, replace: dict[str, bytes | None]) -> Path:
    """A synthetic archive whose listed clips are replaced (bytes) or left out (None)."""
    meta = synth.metadata()
    with zipfile.ZipFile(path, "w") as z:  # stored, not deflated: faster, same checks
        z.writestr("ESC-50-master/meta/esc50.csv", meta.to_csv(index=False))
        for name, data in synth.clips(meta):
            data = replace.get(name, data)
            if data is not None:
                z.writestr("ESC-50-master/audio/" + name, data)
    return path


# ----------------------------------------------------------------------------- verify


def test_verify_lists_every_bad_file(folder):
    meta = load_metadata(folder / "meta" / "esc50.csv")
    names = list(meta["filename"])
    audio = folder / "audio"
    (audio / names[0]).unlink()
    wav = (audio / names[1]).read_bytes()
    (audio / names[1]).write_bytes(wav[: len(wav) // 2])
    (audio / names[2]).write_bytes(synth.wav_bytes(synth.tone(0, 1, channels=2)))
    (audio / names[3]).write_bytes(synth.wav_bytes(synth.tone(0, 1, sample_rate=22050), 22050))
    (audio / names[4]).write_bytes(b"RIFF nonsense")
    manifest, problems = verify_clips(folder / "audio", meta["filename"], n_jobs=2, progress=False)
    reasons = dict(problems)
    assert list(reasons) == names[:5]  # all of them, in metadata order
    assert reasons[names[0]] == "missing"
    assert re.fullmatch(r"1102\d\d frames, expected 220500", reasons[names[1]])
    assert "2 channels, expected 1" in reasons[names[2]]
    assert "sample rate 22050 Hz, expected 44100" in reasons[names[3]]
    assert "unreadable by soundfile" in reasons[names[4]]
    assert names[0] not in manifest and len(manifest) == 23


def test_verify_detects_changed_files(folder):
    meta = load_metadata(folder / "meta" / "esc50.csv")
    manifest, problems = verify_clips(folder / "audio", meta["filename"], progress=False)
    assert problems == []
    name = meta["filename"][7]
    (folder / "audio" / name).write_bytes(synth.wav_bytes(synth.tone(36, seed=99)))
    _, problems = verify_clips(folder / "audio", meta["filename"], expected=manifest, progress=False)
    assert problems == [(name, "changed since verification (sha256 mismatch)")]


# ----------------------------------------------------------------------------- prepare / load


def test_prepare_from_folder_in_place(synth_folder, tmp_path):
    d = prepare(synth_folder, tmp_path / "data", progress=False)
    assert d.root == synth_folder and len(d) == 24 and d.manifest is not None
    record = json.loads((tmp_path / "data" / "dataset.json").read_text())
    assert set(record) == {"source", "archive_sha256", "root", "verified_at", "n_clips", "files", "stats"}
    assert record["n_clips"] == 24 and record["files"] == d.manifest
    assert not (tmp_path / "data" / "ESC-50-master").exists()  # nothing copied


def test_prepare_from_parent_of_the_folder(synth_folder, tmp_path):
    assert prepare(synth_folder.parent, tmp_path, progress=False).root == synth_folder


def test_prepare_from_zip_and_file_url(synth_archive, tmp_path):
    d = prepare(synth_archive, tmp_path / "a", progress=False)
    assert d.root == tmp_path / "a" / "ESC-50-master" and d.folds == [1, 2, 3]
    assert not (tmp_path / "a" / "downloads").exists()  # extracted straight from the zip
    d2 = prepare(synth_archive.as_uri(), tmp_path / "b", progress=False)
    assert d2.manifest == d.manifest


def test_second_prepare_is_a_no_op(synth_archive, tmp_path, monkeypatch):
    first = prepare(synth_archive, tmp_path, progress=False)

    def boom(*args, **kwargs):
        raise AssertionError("re-verified or re-extracted")
    monkeypatch.setattr(ds, "verify_clips", boom)
    monkeypatch.setattr(ds, "extract", boom)
    again = prepare(synth_archive, tmp_path, progress=False)
    assert again.manifest == first.manifest and again.root == first.root
    assert again.meta.equals(first.meta)


def test_prepare_without_a_source_reuses_the_recorded_dataset(synth_folder, tmp_path, monkeypatch):
    monkeypatch.delenv("ESC50ANN_SOURCE", raising=False)
    first = prepare(synth_folder, tmp_path, progress=False)
    monkeypatch.setattr(ds, "fetch", lambda *a, **k: pytest.fail("tried to download the default"))
    assert prepare(None, tmp_path, progress=False).manifest == first.manifest


def test_a_different_source_is_prepared_anew(synth_folder, synth_archive, tmp_path):
    prepare(synth_folder, tmp_path, progress=False)
    d = prepare(synth_archive, tmp_path, progress=False)
    assert d.root == tmp_path / "ESC-50-master"
    assert json.loads((tmp_path / "dataset.json").read_text())["source"] == str(synth_archive.resolve())


def test_prepare_again_when_the_folder_is_gone(synth_archive, tmp_path):
    first = prepare(synth_archive, tmp_path, progress=False)
    shutil.rmtree(first.root)
    assert len(prepare(synth_archive, tmp_path, progress=False)) == 24


def test_prepare_reads_the_environment(synth_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("ESC50ANN_SOURCE", str(synth_folder))
    monkeypatch.setenv("ESC50ANN_DATA_DIR", str(tmp_path / "env-data"))
    d = prepare(progress=False)
    assert d.root == synth_folder
    assert load().manifest == d.manifest  # load() finds the same data dir


def test_bad_archive_names_all_bad_files_and_leaves_nothing(tmp_path):
    names = list(synth.metadata()["filename"])
    zpath = zip_with(tmp_path / "bad.zip", {
        names[3]: None,
        names[5]: synth.wav_bytes(synth.tone(0, 0, channels=2)),
        names[9]: synth.wav_bytes(synth.tone(0, 0, sample_rate=22050), 22050),
    })
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError) as e:
        prepare(zpath, data_dir, progress=False)
    msg = str(e.value)
    assert msg.startswith("3 of 24 audio files in ") and "\n" not in msg
    for n in (names[3], names[5], names[9]):
        assert n in msg
    assert not (data_dir / "ESC-50-master").exists() and not (data_dir / "dataset.json").exists()
    assert [p.name for p in data_dir.iterdir()] == [paths.DATASET_LOCK]  # the lock file stays; no data does


def test_bad_archive_keeps_the_previous_dataset(synth_archive, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    good = prepare(synth_archive, data_dir, progress=False)
    names = list(synth.metadata()["filename"])
    bad = zip_with(tmp_path / "bad.zip", {names[3]: None})
    with pytest.raises(DatasetError, match=names[3]) as e:
        prepare(bad, data_dir, progress=False)
    # Named after the archive, not the temporary folder it was extracted into (now gone).
    assert str(e.value).startswith(f"1 of 24 audio files in {bad} are bad: {names[3]}: missing")
    assert ".extract-" not in str(e.value) and "kept the previous dataset" in str(e.value)
    assert sorted(p.name for p in (good.root / "audio").iterdir()) == sorted(names)
    assert [p.name for p in data_dir.iterdir() if p.name.startswith(".") and p.name != paths.DATASET_LOCK] == []
    # ... and still recorded: load() opens it, a run without a source does not download.
    kept = load(data_dir)
    assert kept.root == good.root and kept.manifest == good.manifest
    monkeypatch.delenv("ESC50ANN_SOURCE", raising=False)
    monkeypatch.setattr(ds, "fetch", lambda *a, **k: pytest.fail("tried to download the default"))
    assert prepare(None, data_dir, progress=False).manifest == good.manifest


def test_bad_metadata_in_archive_names_the_archive(tmp_path):
    zpath = tmp_path / "badmeta.zip"
    meta = synth.metadata().astype(str)
    meta.loc[2, "fold"] = "three"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("ESC-50-master/meta/esc50.csv", meta.to_csv(index=False))
        z.writestr("ESC-50-master/audio/", "")
    with pytest.raises(DatasetError, match=re.escape(f"{zpath}/meta/esc50.csv: row 3 (line 4), column 'fold'")) as e:
        prepare(zpath, tmp_path / "data", progress=False)
    assert "kept" not in str(e.value)  # there was nothing to keep
    assert not (tmp_path / "data" / "ESC-50-master").exists()


def test_bad_folder_keeps_the_previous_dataset(synth_archive, folder, tmp_path):
    data_dir = tmp_path / "data"
    good = prepare(synth_archive, data_dir, progress=False)
    sorted((folder / "audio").iterdir())[0].unlink()
    with pytest.raises(DatasetError, match="1 of 24 audio files"):
        prepare(folder, data_dir, progress=False)
    kept = load(data_dir)
    assert kept.root == good.root and kept.manifest == good.manifest


def test_local_archive_checksum(synth_archive, tmp_path):
    with pytest.raises(DownloadError, match=re.escape(f"{synth_archive}: checksum mismatch")):
        prepare(synth_archive, tmp_path / "a", sha256="0" * 64, progress=False)
    assert not (tmp_path / "a" / "ESC-50-master").exists()
    d = prepare(synth_archive, tmp_path / "b", sha256=sha256_file(synth_archive), progress=False)
    assert len(d) == 24


def test_concurrent_prepares_extract_once(synth_archive, tmp_path, monkeypatch):
    inside, calls, results, errors = threading.Event(), [], {}, []
    real_extract = ds.extract

    def slow_extract(*args, **kwargs):
        calls.append(1)
        inside.set()
        time.sleep(0.3)  # the second prepare() arrives while this one is busy
        return real_extract(*args, **kwargs)

    def run(i):
        try:
            results[i] = prepare(synth_archive, tmp_path, n_jobs=1, progress=False)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    monkeypatch.setattr(ds, "extract", slow_extract)
    first = threading.Thread(target=run, args=(1,))
    first.start()
    assert inside.wait(30)
    second = threading.Thread(target=run, args=(2,))
    second.start()
    first.join(60)
    second.join(60)
    assert errors == [] and len(calls) == 1  # the second waited, then found the record
    assert results[1].manifest == results[2].manifest and results[1].root == results[2].root
    assert sorted(p.name for p in tmp_path.iterdir()) == [paths.DATASET_LOCK, "ESC-50-master", "dataset.json"]


def test_bad_folder_is_left_alone(folder, tmp_path):
    name = sorted((folder / "audio").iterdir())[0]
    name.unlink()
    with pytest.raises(DatasetError, match=rf"1 of 24 audio files.*{name.name}: missing"):
        prepare(folder, tmp_path / "data", progress=False)
    assert (folder / "meta" / "esc50.csv").exists()


def test_unknown_source(tmp_path):
    with pytest.raises(DatasetError, match="no such file or folder"):
        prepare(tmp_path / "nothing-here", tmp_path, progress=False)


def test_load(synth_folder, tmp_path):
    with pytest.raises(DatasetError, match=r"no dataset in .*: run `esc50ann download` first"):
        load(tmp_path)
    d = prepare(synth_folder, tmp_path, progress=False)
    loaded = load(tmp_path)
    assert loaded.root == d.root and loaded.manifest == d.manifest
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="dataset.json: damaged"):
        load(tmp_path)


def test_dataset_verify_against_manifest(folder, tmp_path):
    d = prepare(folder, tmp_path, progress=False)
    assert d.verify(progress=False) == []
    name = d.meta["filename"][0]
    (folder / "audio" / name).write_bytes(synth.wav_bytes(synth.tone(36, seed=5)))
    with pytest.raises(DatasetError, match=f"{name}: changed since verification"):
        load(tmp_path)  # size/mtime fingerprint: caught on every load without hashing
    assert load(tmp_path, check_files=False).verify(progress=False) == [
        (name, "changed since verification (sha256 mismatch)")]


# ----------------------------------------------------------------------------- Dataset


def test_summary_is_json(dataset):
    s = dataset.summary()
    assert json.loads(json.dumps(s)) == s
    assert s["n_clips"] == 24 and s["n_classes"] == 4 and s["folds"] == [1, 2, 3]
    assert s["clips_per_fold"] == {"1": 8, "2": 8, "3": 8} and s["n_esc10"] == 12
    assert s["verified"] is False


def test_folds_come_from_the_csv(tmp_path):
    root = synth.make_dataset_folder(tmp_path, n_folds=4, clips_per_class=1)
    d = Dataset(root, load_metadata(root / "meta" / "esc50.csv"))
    assert d.folds == [1, 2, 3, 4] and len(folds.splits(d)) == 4


def test_esc10_subset(dataset):
    sub = dataset.subset("esc10")
    assert len(sub) == 12 and sub.class_names == ["dog", "rooster"]
    assert sub.names_by_target == {0: "dog", 1: "rooster"} and list(sub.classes) == [0, 1]
    assert [s.test_fold for s in folds.splits(sub)] == [1, 2, 3]


def test_select_keeps_the_given_order(dataset):
    names = list(dataset.meta["filename"][[5, 0, 17]])
    sub = dataset.select(names)
    assert list(sub.meta["filename"]) == names and list(sub.meta.index) == [0, 1, 2]
    assert sub.audio_paths[0].name == names[0]
    with pytest.raises(DatasetError, match="'nope.wav'"):
        dataset.select(["nope.wav"])
