"""A synthetic ESC-50-shaped dataset, generated inside the tests (no real audio in the repo).

Each class is a tone at its own frequency plus a little noise, so a classifier can learn it;
clips are 5 s, 44.1 kHz, mono, 16-bit like the official WAVs unless told otherwise.

    root = make_dataset_folder(tmp_path)          # tmp_path/ESC-50-master/{meta,audio}
    zip_path = make_archive(tmp_path / "esc.zip")  # the same, zipped like the download
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

SAMPLE_RATE = 44100
DURATION = 5.0
COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]

# A pipeline small enough to cross-validate the synthetic dataset in seconds.
TINY_PIPELINE = """
name = "tiny"
[features]
n_mels = 32
[model]
hidden_layer_sizes = [16]
loss = "cross_entropy"
[training]
solver = "adam"
learning_rate = 0.01
batch_size = 8
max_epochs = 30
patience = 5
"""

# (target, category, esc10): real ESC-50 ids, so the ESC-10 subset is exercised too.
CLASSES = [(0, "dog", True), (1, "rooster", True), (14, "chirping_birds", False), (36, "vacuum_cleaner", False)]


def tone(target: int, seed: int, sample_rate: int = SAMPLE_RATE, duration: float = DURATION,
         channels: int = 1) -> np.ndarray:
    """A class-specific tone with noise: shape (n_samples,) or (n_samples, channels), float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(sample_rate * duration))) / sample_rate
    freq = 220.0 * 2 ** (target / 12)  # a semitone apart per class id
    y = 0.5 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * (1 + target % 5) * t))
    y += 0.05 * rng.standard_normal(t.size)
    y = y.astype(np.float32)
    return np.repeat(y[:, None], channels, axis=1) if channels > 1 else y


def metadata(n_folds: int = 3, clips_per_class: int = 2, classes=CLASSES) -> pd.DataFrame:
    """Rows laid out like meta/esc50.csv: each (fold, class) gets its own source recordings."""
    rows = []
    for fold in range(1, n_folds + 1):
        for target, category, esc10 in classes:
            for k in range(clips_per_class):
                src = 100000 + fold * 1000 + target * 10 + k
                take = "A"
                rows.append([f"{fold}-{src}-{take}-{target}.wav", fold, target, category, esc10, src, take])
    return pd.DataFrame(rows, columns=COLUMNS)


def wav_bytes(y: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def clips(meta: pd.DataFrame):
    """Yield (filename, wav bytes) for every metadata row."""
    for i, row in enumerate(meta.itertuples()):
        yield row.filename, wav_bytes(tone(row.target, seed=i))


def make_dataset_folder(parent: Path, n_folds: int = 3, clips_per_class: int = 2,
                        classes=CLASSES) -> Path:
    """Write parent/ESC-50-master/{meta/esc50.csv, audio/*.wav}; return the ESC-50-master folder."""
    root = Path(parent) / "ESC-50-master"
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(exist_ok=True)
    meta = metadata(n_folds, clips_per_class, classes)
    meta.to_csv(root / "meta" / "esc50.csv", index=False)
    for name, data in clips(meta):
        (root / "audio" / name).write_bytes(data)
    return root


def make_archive(path: Path, n_folds: int = 3, clips_per_class: int = 2, classes=CLASSES,
                 extra_members: dict[str, bytes] | None = None) -> Path:
    """Write a zip laid out like the official ESC-50-master.zip; return its path."""
    meta = metadata(n_folds, clips_per_class, classes)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ESC-50-master/meta/esc50.csv", meta.to_csv(index=False))
        for name, data in clips(meta):
            z.writestr("ESC-50-master/audio/" + name, data)
        for name, data in (extra_members or {}).items():
            z.writestr(name, data)
    return Path(path)


# Other layouts (esc50ann.layouts): (label, class id) pairs, and the odd formats users have.
OTHER_CLASSES = [("bark", 0), ("chime", 14), ("hum", 36)]
RATES = (8000, 16000, 22050, 44100, 48000)


def make_class_tree(root: Path, clips_per_class: int = 5, classes=OTHER_CLASSES,
                    name=lambda k: f"clip{k}") -> Path:
    """root/<label>/[sub/]<name(k)>.<wav|flac|ogg>: lengths 1-7 s, every rate of ``RATES``, mono and
    stereo, some one folder deeper; return root."""
    formats = ("wav", "flac", "wav", "ogg", "wav")
    for c, (label, target) in enumerate(classes):
        for k in range(clips_per_class):
            i = c * clips_per_class + k
            rate, channels = RATES[i % len(RATES)], 1 + i % 2
            folder = Path(root) / label / ("sub" if k % 3 == 2 else "")
            folder.mkdir(parents=True, exist_ok=True)
            fmt = formats[i % len(formats)]
            y = tone(target, seed=i, sample_rate=rate, duration=1.0 + (i * 1.5) % 6.0, channels=channels)
            sf.write(folder / f"{name(k)}.{fmt}", y, rate, format=fmt.upper())
    return Path(root)


def make_urbansound(root: Path, n_folds: int = 10, clips_per_fold: int = 1, classes=OTHER_CLASSES) -> Path:
    """root/metadata/UrbanSound8K.csv and root/audio/fold<k>/<fsID>-<classID>-0-<n>.wav (up to 4 s,
    mixed rates) laid out like UrbanSound8K; return root."""
    rows = []
    for fold in range(1, n_folds + 1):
        (Path(root) / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
        for label, target in classes:
            for n in range(clips_per_fold):
                fs_id = 1000 * fold + 10 * target + n
                name = f"{fs_id}-{target}-0-{n}.wav"
                rate = RATES[len(rows) % len(RATES)]
                sf.write(Path(root) / "audio" / f"fold{fold}" / name,
                         tone(target, seed=len(rows), sample_rate=rate, duration=0.5 + len(rows) % 4), rate)
                rows.append([name, fs_id, 0.0, 1.0, 1, fold, target, label])
    (Path(root) / "metadata").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID",
                                "class"]).to_csv(Path(root) / "metadata" / "UrbanSound8K.csv", index=False)
    return Path(root)
