"""Faults that used to lose data or crash, each caused for real or at the system call that fails."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import synth
from esc50ann import archive, cache, dataset as ds, paths
from esc50ann.errors import DownloadError, StorageError
from esc50ann.fileio import owned_name, remove_stale


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


# 1. disk full while committing a feature-cache entry ---------------------------------------------

def test_full_disk_on_cache_commit_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "posix_fallocate", _enospc)
    parts = [np.ones((10, 7), np.float32)] * 3
    with pytest.raises(StorageError, match="no space left.*30 x 7") as info:
        cache.commit(tmp_path, "a" * 16, parts, n_cols=7, filenames=[f"{i}.wav" for i in range(30)],
                     skipped=[], info={})
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)
    assert list(tmp_path.iterdir()) == [tmp_path / ".locks"] or list(tmp_path.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs (root with mount rights only; otherwise skipped)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_full_disk_for_real_no_sigbus(small_disk):
    """On a full tmpfs a memory-mapped write killed the process with SIGBUS; now it is an error."""
    code = (f"import numpy as np, sys; sys.path.insert(0, {str(os.getcwd())!r})\n"
            "from esc50ann import cache\n"
            "from esc50ann.errors import StorageError\n"
            "try:\n"
            f"    cache.commit({str(small_disk)!r}, 'b' * 16, [np.ones((64, 8192), np.float32)], n_cols=8192,\n"
            "                 filenames=[str(i) for i in range(64)], skipped=[], info={})\n"
            "except StorageError as e:\n"
            "    print(e); sys.exit(1)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, (result.returncode, result.stderr)  # not -SIGBUS
    assert "no space left" in result.stdout
    assert not [p for p in small_disk.iterdir() if p.name.startswith(".")and p.name != ".locks"]


# 2. disk full while extracting keeps the good download -----------------------------------------

def test_full_disk_while_extracting_keeps_the_download(http_server, synth_archive, tmp_path, monkeypatch):
    http_server.files["/ESC-50-master.zip"] = synth_archive.read_bytes()
    url = http_server.url + "/ESC-50-master.zip"
    monkeypatch.setattr(archive.shutil, "copyfileobj", _enospc)
    with pytest.raises(StorageError, match="disk full.*archive is kept"):
        ds.prepare(url, tmp_path, progress=False)
    kept = paths.download_path(url, tmp_path)
    assert kept.read_bytes() == synth_archive.read_bytes()
    assert not list(tmp_path.glob(".extract-*"))
    monkeypatch.undo()
    n = len(http_server.requests)
    assert len(ds.prepare(url, tmp_path, progress=False)) == 24  # the rerun uses the kept archive
    assert len(http_server.requests) == n


# 3. another URL with the same file name is another download ------------------------------------

def test_same_file_name_from_another_url_is_downloaded_anew(http_server, synth_archive, tmp_path):
    other = synth.make_archive(tmp_path / "other.zip", n_folds=2)
    http_server.files["/a/master.zip"] = synth_archive.read_bytes()
    http_server.files["/b/master.zip"] = other.read_bytes()
    first = ds.prepare(http_server.url + "/a/master.zip", tmp_path / "data", progress=False)
    second = ds.prepare(http_server.url + "/b/master.zip", tmp_path / "data", progress=False)
    assert first.folds == [1, 2, 3] and second.folds == [1, 2]
    record = json.loads((tmp_path / "data" / "dataset.json").read_text())
    assert record["source"].endswith("/b/master.zip") and record["n_clips"] == len(second)


# 4. a checksum given is always checked ----------------------------------------------------------

def test_sha256_is_checked_even_when_the_dataset_is_recorded(http_server, synth_archive, tmp_path):
    http_server.files["/ESC-50-master.zip"] = synth_archive.read_bytes()
    url = http_server.url + "/ESC-50-master.zip"
    ds.prepare(url, tmp_path, progress=False)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        ds.prepare(url, tmp_path, sha256="0" * 64, progress=False)
    assert paths.download_path(url, tmp_path).is_file()  # a good download is not deleted for it
    from esc50ann.fileio import sha256

    right = sha256(synth_archive)
    assert len(ds.prepare(url, tmp_path, sha256=right, progress=False)) == 24
    assert json.loads((tmp_path / "dataset.json").read_text())["archive_sha256"] == right


# stale temporaries of killed processes ----------------------------------------------------------

def test_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that is gone
    dead = tmp_path / f".extract-{child.pid}-0123abcd"
    dead.mkdir()
    (dead / "big.wav").write_bytes(b"x" * 1000)
    mine = tmp_path / owned_name(".extract-")
    mine.mkdir()
    assert remove_stale(tmp_path, ".extract-*") == [dead]
    assert not dead.exists() and mine.exists()


def test_extraction_killed_with_sigkill_is_cleaned_by_the_next_run(synth_archive, tmp_path):
    """Kill a real extraction half-way (kill -9), then extract again: no .extract-* left."""
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "from esc50ann import archive\n"
            "real = archive._extract_one\n"
            "def slow(*a):\n"
            "    real(*a); print('wrote', flush=True); time.sleep(30)\n"
            "archive._extract_one = slow\n"
            "archive.extract(%r, %r, progress=False)\n") % (os.getcwd(), str(synth_archive), str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "wrote"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list(tmp_path.glob(".extract-*"))) == 1  # what the kill left
    archive.extract(synth_archive, tmp_path, progress=False)
    assert not list(tmp_path.glob(".extract-*")) and (tmp_path / "ESC-50-master" / "meta" / "esc50.csv").is_file()


# 5. overflow on the final update ----------------------------------------------------------------

def test_overflow_on_the_last_update_is_the_divergence_error():
    from esc50ann.errors import ModelError
    from esc50ann.model import ANNClassifier

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 5)).astype(np.float32), np.arange(64) % 4
    model = ANNClassifier(hidden_layer_sizes=(8,), solver="sgd", learning_rate=1e100, batch_size=64, max_epochs=1)
    with pytest.raises(ModelError, match=r"^training diverged at epoch 1 \(weights not finite"):
        model.fit(X, y)  # one batch: its loss was finite, the update that followed was not


def test_non_finite_weights_are_never_written(tmp_path):
    from esc50ann import modelfile
    from esc50ann.errors import ModelError

    with pytest.raises(ModelError, match="non-finite values in 'W1'"):
        modelfile.write(tmp_path / "m.npz", {"W1": np.array([[np.inf]], np.float32)}, {})
    assert not (tmp_path / "m.npz").exists()


def test_diverging_run_exits_1_and_writes_no_model(synth_archive, tmp_path, capsys):
    from esc50ann import cli

    code = cli.main(["--quiet", "run", "quick", "--source", str(synth_archive), "--data-dir", str(tmp_path / "d"),
                     "--out", str(tmp_path / "run"), "--jobs", "1", "--set", "training.solver=sgd",
                     "--set", "training.learning_rate=1e100", "--set", "training.batch_size=10000",
                     "--set", "training.max_epochs=1", "--set", "evaluation.validation=none"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("esc50ann: error:") and "diverged" in err and err.count("\n") == 1
    assert not list((tmp_path / "run").glob("*.npz")) and not (tmp_path / "run" / "metrics.json").exists()


# worker processes die with their parent --------------------------------------------------------

def _children(pid):
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the worker processes")
def test_loky_workers_exit_when_the_run_is_killed():
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "from esc50ann.parallel import Runner\n"
            "def task(i):\n"
            "    print('working', flush=True); time.sleep(120)\n"
            "list(Runner(2).map(task, [(0,), (1,)]))\n") % os.getcwd()
    env = {k: v for k, v in os.environ.items() if k != "ESC50ANN_MAIN_PID"}  # the child is its own main process
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().startswith("working")  # both workers may print on one line
    workers = [pid for pid in _children(proc.pid) if "loky" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.2)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, "workers outlived their killed parent"


# hostile archives and URLs -----------------------------------------------------------------------

def _zip(path, members):
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def test_many_small_zero_members_are_refused_as_a_whole(tmp_path):
    from esc50ann.errors import DatasetError

    bomb = _zip(tmp_path / "bomb.zip", [("ESC-50-master/meta/esc50.csv", b"filename\n")] +
                [(f"ESC-50-master/audio/{i}.wav", b"\0" * (1 << 20)) for i in range(40)])
    assert bomb.stat().st_size < 200_000  # 40 MiB of zeros in a few hundred KB
    with pytest.raises(DatasetError, match="overall compression ratio"):
        archive.extract(bomb, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "ESC-50-master").exists()


def test_encrypted_member_is_one_line(tmp_path):
    import zipfile

    from esc50ann.errors import DatasetError

    path = _zip(tmp_path / "enc.zip", [("ESC-50-master/meta/esc50.csv", b"filename\n")])
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the "encrypted" flag bit
        at = data.find(signature)
        data[at + offset] |= 1
    path.write_bytes(bytes(data))
    assert zipfile.ZipFile(path).infolist()[0].flag_bits & 1
    with pytest.raises(DatasetError, match="is encrypted"):
        archive.extract(path, tmp_path / "out", progress=False)


def test_redirect_loop_is_one_line(http_server, tmp_path):
    from esc50ann.download import fetch

    http_server.redirects = {"/a": "/b", "/b": "/a"}
    with pytest.raises(DownloadError, match="redirect loop") as info:
        fetch(http_server.url + "/a", tmp_path / "x", backoff=0, progress=False)
    assert "\n" not in str(info.value)


def test_a_trickling_server_is_given_up_on(http_server, tmp_path):
    from esc50ann.download import fetch

    http_server.trickle = 0.05
    with pytest.raises(DownloadError, match="stalled"):
        fetch(http_server.url + "/data.bin", tmp_path / "x", retries=0, stall_seconds=0.5, progress=False)


@pytest.mark.parametrize("source, words", [
    ("ftp://example.org/ESC-50.zip", ["unsupported URL scheme 'ftp'"]),
    ("http://[::1", ["malformed URL"]),
])
def test_bad_sources_are_one_line(tmp_path, source, words):
    from esc50ann.errors import Esc50Error

    with pytest.raises(Esc50Error) as info:
        ds.prepare(source, tmp_path, progress=False)
    assert "\n" not in str(info.value) and all(w in str(info.value) for w in words)


# model files are checked from their member headers before any array is loaded -------------------

def _model(tmp_path):
    from esc50ann.model import ANNClassifier

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 4)).astype(np.float32), np.arange(20) % 2
    return ANNClassifier(hidden_layer_sizes=(3,), max_epochs=1).fit(X, y).save(tmp_path / "m.npz")


def _add_member(path, name, header_shape, dtype="<f8", payload=b"\0" * 64):
    import zipfile

    header = {"descr": dtype, "fortran_order": False, "shape": header_shape}
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(name, buffer.getvalue() + payload)


@pytest.mark.parametrize("member, shape, words", [
    ("junk.npy", (2 ** 28,), ["declares", "junk.npy"]),     # 2 GiB declared, 64 bytes held
    ("junk.npy", (8,), ["unknown array 'junk'"]),
    ("notes.txt", (8,), ["unexpected member 'notes.txt'"]),
])
def test_crafted_members_are_refused_before_loading(tmp_path, monkeypatch, member, shape, words):
    from esc50ann import modelfile
    from esc50ann.errors import ModelError

    path = _model(tmp_path)
    _add_member(path, member, shape)
    loaded = []
    real = modelfile._load_member
    monkeypatch.setattr(modelfile, "_load_member", lambda zf, name: loaded.append(name) or real(zf, name))
    with pytest.raises(ModelError) as info:
        modelfile.read(path)
    assert all(w in str(info.value) for w in words), info.value
    assert set(loaded) <= {"header"}  # nothing but the JSON header was read


# tampered files are noticed on load and repaired from the kept archive ---------------------------

def test_tampered_dataset_is_repaired_from_the_kept_archive(http_server, synth_archive, tmp_path, capsys):
    from esc50ann import cli
    from esc50ann.errors import DatasetError

    http_server.files["/ESC-50-master.zip"] = synth_archive.read_bytes()
    url = http_server.url + "/ESC-50-master.zip"
    d = ds.prepare(url, tmp_path, progress=False)
    clip = d.root / "audio" / d.meta.filename[3]
    good = clip.read_bytes()
    clip.write_bytes(good[:-100])  # truncated by someone
    with pytest.raises(DatasetError, match="changed since verification"):
        ds.load(tmp_path)
    n = len(http_server.requests)
    assert cli.main(["--quiet", "download", "--data-dir", str(tmp_path)]) == 0  # no --source: repair
    assert "dataset ready" in capsys.readouterr().out
    assert clip.read_bytes() == good and len(http_server.requests) == n  # from the kept archive, no download
    assert len(ds.load(tmp_path)) == 24


# never a traceback: each input that used to end in one ------------------------------------------

@pytest.fixture(scope="module")
def user(synth_archive, tmp_path_factory):
    """A data root with the synthetic dataset and a tiny final model."""
    from esc50ann import cli

    root = tmp_path_factory.mktemp("user")
    data = root / "data"
    assert cli.main(["--quiet", "download", "--source", str(synth_archive), "--data-dir", str(data)]) == 0
    assert cli.main(["--quiet", "train", "quick", "--all", "--save", str(root / "m.npz"), "--data-dir", str(data),
                     "--set", "training.max_epochs=1"]) == 0
    return root


def _one_line(capsys, *args):
    from esc50ann import cli

    code = cli.main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("esc50ann: error: ") and err.count("\n") == 1, (code, err)
    return err


def test_pipeline_file_not_utf8(user, capsys):
    (user / "bad.toml").write_bytes(b'name = "\xff\xfe"\n')
    assert "not UTF-8" in _one_line(capsys, "run", user / "bad.toml", "--data-dir", user / "data")


def test_network_too_large_for_memory(user, capsys):
    err = _one_line(capsys, "--quiet", "run", "quick", "--data-dir", user / "data", "--jobs", 1,
                    "--set", "model.hidden_layer_sizes=[2000000000]")
    assert "does not fit in memory" in err


GOOD_METRICS = (b'{"pipeline": {"name": "p"}, "folds": [1, 2], "accuracy_mean": 0.5, "accuracy_std": 0.1, '
                b'"fold_accuracy": {"1": 0.4, "2": 0.6}}')


@pytest.mark.parametrize("metrics, report, words", [
    (b"\xff{}", None, ["metrics.json", "damaged"]),
    (b"[1, 2]", None, ["metrics.json", "expected a JSON object", "got an array"]),
    (b"{}", None, ["metrics.json", "no 'pipeline'"]),
    (GOOD_METRICS.replace(b"0.5", b'"high"'), None, ["metrics.json", "accuracy_mean"]),
    (GOOD_METRICS, b"\xff\xfe", ["report.md", "damaged"]),
    (json.dumps({"sweep": "s", "folds": [1, 2], "nested_accuracy_mean": 0.5, "nested_accuracy_std": 0.1,
                 "optimistic_accuracy_mean": 0.6, "nested_fold_accuracy": {"1": 0.5},
                 "chosen_configuration": {"1": {}, "2": {}}}).encode(), None,
     ["metrics.json", "a chosen configuration for a fold without a nested accuracy"]),
])
def test_report_of_damaged_files(tmp_path, capsys, metrics, report, words):
    (tmp_path / "metrics.json").write_bytes(metrics)
    if report is not None:
        (tmp_path / "report.md").write_bytes(report)
    err = _one_line(capsys, "report", tmp_path, "--markdown")
    assert all(w in err for w in words)


@pytest.mark.parametrize("change", [{"root": 5}, {"files": {"a.wav": 1}}, {"stats": [1]}, {"source": None}])
def test_dataset_record_of_the_wrong_shape(user, tmp_path, capsys, change):
    data = tmp_path / "data"
    shutil.copytree(user / "data", data, ignore=shutil.ignore_patterns("cache", "runs"))
    record = json.loads((data / "dataset.json").read_text())
    (data / "dataset.json").write_text(json.dumps({**record, **change}))
    assert "dataset.json: damaged" in _one_line(capsys, "info", "--data-dir", data)


def test_huge_integer_in_the_metadata(tmp_path, capsys):
    folder = synth.make_dataset_folder(tmp_path / "d")
    csv = next(folder.rglob("esc50.csv"))
    lines = csv.read_text().splitlines()
    cells = lines[1].split(",")
    cells[1] = "9" * 30  # the fold
    lines[1] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    err = _one_line(capsys, "download", "--source", csv.parent.parent, "--data-dir", tmp_path / "data")
    assert "row" in err and "'fold'" in err


def test_predict_on_huge_finite_samples(user, tmp_path, capsys):
    import soundfile as sf

    sf.write(tmp_path / "huge.wav", np.full(44100 * 5, 3e38, np.float32), 44100, subtype="FLOAT")
    assert "non-finite features" in _one_line(capsys, "predict", user / "m.npz", tmp_path / "huge.wav")


def test_every_clip_skipped(user, monkeypatch, tmp_path, capsys):
    from esc50ann import recipe
    from esc50ann.errors import FeatureError

    def unreadable(path, config, **kw):
        raise FeatureError(f"cannot read audio file {path}")

    monkeypatch.setattr(recipe, "clip_features", unreadable)
    (tmp_path / "skip.toml").write_text('[features]\non_error = "skip"\nn_mels = 20\n[model]\nhidden_layer_sizes = [4]\n')
    err = _one_line(capsys, "--quiet", "run", tmp_path / "skip.toml", "--data-dir", user / "data", "--jobs", 1)
    assert "every one of the 24 clips was skipped" in err


# leftovers of killed writers are removed by the next writer of the same place --------------------

def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_model_save_killed_with_sigkill_leaves_a_temporary_the_next_save_removes(tmp_path):
    from esc50ann import fileio

    target = tmp_path / "m.npz"
    target.write_bytes(b"the old model")
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "from esc50ann.fileio import atomic_path\n"
            "with atomic_path(%r) as tmp:\n"
            "    tmp.write_bytes(b'half a model'); print('writing', flush=True); time.sleep(60)\n") % (
        os.getcwd(), str(target))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = list(tmp_path.glob(".m.npz.*.tmp"))
    assert len(left) == 1 and target.read_bytes() == b"the old model"  # what the kill left; the old file intact
    fileio.write_text(target, "the new model")
    assert not left[0].exists() and target.read_text() == "the new model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_stale_temporaries_of_a_run_folder_go_live_and_recent_ones_stay(cli_root, tmp_path, capsys):
    """A rerun into the same folder removes what a killed run left: temporaries named by a dead
    process, and nameless old ones; a live writer's (another run writing there now) are kept."""
    from conftest import run_cli

    out = tmp_path / "run"
    out.mkdir()
    dead = out / f".confusion.csv.{_dead_pid()}-0123abcd.tmp"
    old = out / ".report.md.k3j_x9.tmp"  # a name without an owner (as mkstemp gave): removed when old
    live = out / f".confusion.csv.{os.getppid()}-0123abcd.tmp"  # an owner that is still running
    young = out / ".predictions.csv.q1w2e3.tmp"
    for path in (dead, old, live, young):
        path.write_text("partial")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    code, _, err = run_cli(capsys, "--quiet", "run", cli_root / "tiny.toml", "--data-dir", cli_root / "data",
                           "--out", out, "--jobs", 1, "--set", "training.max_epochs=2")
    assert code == 0, err
    assert not dead.exists() and not old.exists() and live.exists() and young.exists()
    assert (out / "metrics.json").is_file()


def test_remove_stale_reads_owners_from_every_kind_of_name(tmp_path):
    pid = _dead_pid()
    names = [f".extract-{pid}-0123abcd", f".{'a' * 16}.tmp-{pid}-0123abcd", f".m.npz.{pid}-0123abcd.tmp"]
    for name in names:
        (tmp_path / name).write_text("x")
    removed = {p.name for p in remove_stale(tmp_path, ".*")}
    assert removed == set(names)


# errno texts become statements naming the path ----------------------------------------------------

def _cli_one_line(capsys, *args):
    from conftest import run_cli

    code, _, err = run_cli(capsys, *args)
    assert code == 1 and err.startswith("esc50ann: error: ") and err.count("\n") == 1, (code, err)
    assert "Errno" not in err, err
    return err


def test_a_data_root_that_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("not a folder")
    err = _cli_one_line(capsys, "info", "--data-dir", tmp_path / "f")
    assert f"{tmp_path / 'f'}: the data root is a file, not a folder" in err and "--data-dir" in err
    err = _cli_one_line(capsys, "download", "--source", tmp_path, "--data-dir", tmp_path / "f" / "inside")
    assert f"{tmp_path / 'f' / 'inside'}: it lies in {tmp_path / 'f'}, a file, not a folder" in err


def test_a_folder_where_a_sweep_task_file_belongs(cli_root, tmp_path, capsys, monkeypatch):
    from esc50ann import sweep as sweep_mod

    (tmp_path / "s.toml").write_text(f'pipeline = "{cli_root / "tiny.toml"}"\n[values]\n"training.max_epochs" = [1]\n')
    sweep = sweep_mod.Sweep.from_toml(tmp_path / "s.toml")
    blocked = sweep_mod._task_path(tmp_path / "out", sweep, sweep_mod.Task(0, 2, 3))
    blocked.mkdir(parents=True)
    monkeypatch.setattr(sweep_mod, "run_task", lambda *a: pytest.fail("a task ran"))
    err = _cli_one_line(capsys, "--quiet", "sweep", tmp_path / "s.toml", "--data-dir", cli_root / "data",
                        "--out", tmp_path / "out", "--jobs", 1)
    assert f"{blocked}: is a folder, where a sweep task file belongs" in err


def test_a_folder_where_the_model_file_belongs(cli_root, tmp_path, capsys):
    (tmp_path / "m.npz").mkdir()
    err = _cli_one_line(capsys, "--quiet", "train", cli_root / "tiny.toml", "--all", "--save", tmp_path / "m.npz",
                        "--data-dir", cli_root / "data", "--set", "training.max_epochs=1")
    assert f"{tmp_path / 'm.npz'}: is a folder, where a file belongs" in err


def test_run_folder_inside_a_file(cli_root, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    err = _cli_one_line(capsys, "--quiet", "run", cli_root / "tiny.toml", "--data-dir", cli_root / "data",
                        "--out", tmp_path / "f" / "run", "--jobs", 1, "--set", "training.max_epochs=1")
    assert f"{tmp_path / 'f'} is a file, where a folder belongs" in err


@pytest.mark.parametrize("where", ["write", "replace"])
def test_a_full_disk_names_the_file_and_keeps_the_old_one(cli_root, tmp_path, capsys, monkeypatch, where):
    from conftest import run_cli

    model = tmp_path / "m.npz"
    model.write_bytes(b"the previous model")
    args = ["--quiet", "train", cli_root / "tiny.toml", "--all", "--save", model, "--data-dir", cli_root / "data",
            "--set", "training.max_epochs=1"]
    assert run_cli(capsys, "--quiet", "features", cli_root / "tiny.toml", "--data-dir", cli_root / "data")[0] == 0
    if where == "replace":
        real = os.replace
        monkeypatch.setattr(os, "replace", lambda a, b: _enospc() if str(b).endswith(".npz") else real(a, b))
    else:  # the disk fills while the model's bytes are written
        monkeypatch.setattr(np, "savez", lambda fh, **arrays: (fh.write(b"part of a model"), _enospc()))
    err = _cli_one_line(capsys, *args)
    assert f"{model}: no space left on the device" in err
    monkeypatch.undo()
    assert model.read_bytes() == b"the previous model" and sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


# a closed stdout ends quietly ---------------------------------------------------------------------

def test_a_closed_pipe_on_stdout_ends_quietly_in_process(cli_root, tmp_path, capsys, monkeypatch):
    from esc50ann import cli

    read, write = os.pipe()
    os.close(read)  # the reader went away: `| head -1` after its line
    closed = os.fdopen(write, "w")
    monkeypatch.setattr(sys, "stdout", closed)
    assert cli.main(["pipelines"]) == 0
    monkeypatch.undo()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("command", ["report", "pipelines"])
def test_a_command_into_a_closed_pipe_exits_0_with_nothing_on_stderr(tmp_path, command):
    """`esc50ann report RUN | head` for real: a long output breaks the pipe while printing, a short
    one (`pipelines`) only when the last buffer is flushed -- quiet too, not "Exception ignored"."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_bytes(GOOD_METRICS)
    (out / "report.md").write_text("| a line of a long report |\n" * 5000)
    read, write = os.pipe()
    os.close(read)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    args = ["report", str(out)] if command == "report" else ["pipelines"]
    proc = subprocess.run([sys.executable, "-m", "esc50ann", *args], stdout=write, stderr=subprocess.PIPE, text=True,
                          timeout=120, env=env)
    os.close(write)
    assert (proc.returncode, proc.stderr) == (0, "")


# warnings: one line, never numpy's or a library's raw form ----------------------------------------

def test_huge_samples_give_no_numpy_warning(tmp_path):
    import warnings

    from esc50ann.recipe import FeatureConfig, signal_features

    y = np.random.default_rng(0).normal(size=44100).astype(np.float32) * np.float32(1e30)
    config = FeatureConfig(duration=1.0, n_mels=32, deltas=True, n_mfcc=13, modulation=(1.0, 4.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning would raise here
        x = signal_features(y, 44100, config)
    assert x.shape == (32 * 6 * 2 + 13 * 6 + (32 + 13) * 2,) and np.isnan(x).all()  # the callers say non-finite


def test_a_library_warning_is_one_line_naming_the_library(capsys, monkeypatch, tmp_path):
    import warnings

    from esc50ann import cli, report

    def warns(runs_dir):
        warnings.warn_explicit("Some\n  long text", UserWarning, "/x/lib/python3.11/site-packages/joblib/parallel.py", 7)
        warnings.warn("cache entry 0123 is damaged", stacklevel=1)
        return real(runs_dir)

    real = report.list_runs
    monkeypatch.setattr(report, "list_runs", warns)
    assert cli.main(["runs", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().err == ("esc50ann: warning: joblib: Some long text\n"
                                       "esc50ann: warning: cache entry 0123 is damaged\n")


def test_a_worker_shows_warnings_in_the_one_line_form(capsys):
    import warnings

    from esc50ann import parallel

    def task():
        warnings.warn("numbers went odd", RuntimeWarning)
        return 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert parallel._in_worker(task, 0, ()) == (0, 1)  # what a worker process runs
    assert capsys.readouterr().err == "esc50ann: warning: numbers went odd\n"


def test_runs_leaves_out_notes_that_name_no_folder(tmp_path, capsys):
    from conftest import run_cli

    notes = tmp_path / "runs" / "elsewhere"
    notes.mkdir(parents=True)
    (notes / "long.txt").write_text("x" * 5000 + "\n")  # a path no file system takes: ENAMETOOLONG
    (notes / "nul.txt").write_bytes(b"a\0b\n")
    (notes / "file.txt").write_text(str(notes / "nul.txt") + "\n")  # a file, not a folder
    good = tmp_path / "elsewhere-run"
    good.mkdir()
    (good / "metrics.json").write_bytes(GOOD_METRICS)
    (notes / "good.txt").write_text(str(good) + "\n")
    code, out, err = run_cli(capsys, "runs", "--data-dir", tmp_path)
    assert (code, err) == (0, "") and out.count("\n") == 1 and str(good) in out
