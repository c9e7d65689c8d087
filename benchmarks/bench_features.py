"""Benchmark the feature stage against the loop a newcomer would write.

    python benchmarks/bench_features.py --source /tmp/esc50-dev/ESC-50-master [--limit N]
        [--naive-limit M] [--config stats|flat] [--profile] [--json out.json]

On the same clips it times
  1. cold ``extract`` (fresh temporary cache, all cores, loky worker start-up included),
  2. the same cold ``extract`` in one process (n_jobs=1: the per-core cost, no start-up),
  3. warm ``extract`` (cache hit: memory map + checksum, no audio),
  4. the naive loop: per file ``librosa.load(path, sr=22050)`` then
     ``librosa.feature.melspectrogram`` + ``librosa.power_to_db``, in this process.
Each timed phase starts with the audio in the page cache; librosa is imported before any timing, so no side pays for that import in this process
(workers started by the cold run do pay their own imports). With ``--naive-limit M`` the
naive loop runs on the first M clips and its time is scaled linearly to all N clips.
``--profile`` adds a per-step breakdown of one clip's cost. The machine's load average is
printed: other processes on a shared box skew every number.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path


from esc50ann import audio
from esc50ann import features as F
from esc50ann.dataset import Dataset
from esc50ann.metadata import load_metadata
from esc50ann.recipe import FeatureConfig


def find_root(source: Path, scratch: Path) -> Path:
    """The folder holding meta/esc50.csv, extracting a zip into ``scratch`` first."""
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as z:
            z.extractall(scratch)
        source = scratch
    for cand in (source, source / "ESC-50-master"):
        if (cand / "meta" / "esc50.csv").is_file():
            return cand
    sys.exit(f"no meta/esc50.csv under {source}")


def prewarm(paths) -> None:
    """Read every file's bytes so each timed phase starts with the audio in the page cache
    (this VM reclaims idle page cache, so whichever phase ran first would pay the disk)."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 20):
                pass


def naive(paths) -> None:
    import librosa

    for p in paths:
        y, sr = librosa.load(p, sr=22050)
        librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr))


def profile(paths, config: FeatureConfig, n: int = 50) -> dict:
    """Mean ms per clip of each step of ``recipe.clip_features`` (one process, one thread)."""
    from threadpoolctl import threadpool_limits

    steps = {"read (soundfile)": 0.0, "stft+mel (blocked)": 0.0, "to dB": 0.0, "summarise": 0.0}
    with threadpool_limits(1):
        for p in paths[:n]:
            t0 = time.perf_counter()
            y, sr = audio.load_clip(p, duration=config.duration, sample_rate=config.sample_rate)
            t1 = time.perf_counter()
            M = audio.mel_power(y, sr, n_fft=config.n_fft, hop_length=config.hop_length, n_mels=config.n_mels,
                                fmin=config.fmin, fmax=config.fmax)
            t3 = time.perf_counter()
            S = audio._power_to_db(M, config.top_db)
            t4 = time.perf_counter()
            planes = audio.planes(S, deltas=config.deltas, n_mfcc=config.n_mfcc)
            if config.representation == "flat":
                audio.flatten(planes, time_pool=config.time_pool)
            else:
                audio.band_stats(planes)
            t5 = time.perf_counter()
            for k, dt in zip(steps, (t1 - t0, t3 - t1, t4 - t3, t5 - t4)):
                steps[k] += dt
    return {k: 1000 * v / min(n, len(paths)) for k, v in steps.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, type=Path, help="ESC-50 folder or zip")
    ap.add_argument("--limit", type=int, default=None, help="use the first N clips")
    ap.add_argument("--naive-limit", type=int, default=None, help="time the naive loop on M clips, scaled")
    ap.add_argument("--config", choices=["stats", "flat"], default="stats")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)

    import librosa
    librosa.feature.melspectrogram, librosa.power_to_db  # noqa: B018 (force the lazy imports now)

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        root = find_root(a.source, scratch / "src")
        meta = load_metadata(root / "meta" / "esc50.csv")
        if a.limit:
            meta = meta.iloc[: a.limit].reset_index(drop=True)
        ds = Dataset(root, meta)
        paths = [str(p) for p in ds.audio_paths]
        n = len(paths)
        config = FeatureConfig(representation=a.config)
        print(f"{n} clips from {root}; config={a.config}; cores={os.cpu_count()}; "
              f"load average before={os.getloadavg()[0]:.2f}")

        prewarm(paths)
        t = time.perf_counter()
        cold = F.extract(ds, config, scratch / "cache1", n_jobs=-1, progress=False)
        t_cold = time.perf_counter() - t
        prewarm(paths)
        t, c = time.perf_counter(), time.process_time()
        F.extract(ds, config, scratch / "cache2", n_jobs=1, progress=False)
        t_serial, c_serial = time.perf_counter() - t, time.process_time() - c
        t = time.perf_counter()
        warm = F.extract(ds, config, scratch / "cache1", n_jobs=-1, progress=False)
        t_warm = time.perf_counter() - t
        assert warm.from_cache and not cold.from_cache

        m = min(a.naive_limit or n, n)
        prewarm(paths[:m])
        t, c = time.perf_counter(), time.process_time()
        naive(paths[:m])
        t_naive, c_naive = (time.perf_counter() - t) * n / m, (time.process_time() - c) * n / m

        rows = [("cold extract (all cores)", t_cold), ("cold extract (n_jobs=1)", t_serial),
                ("warm extract (cache hit)", t_warm),
                (f"naive loop{' (scaled from %d clips)' % m if m < n else ''}", t_naive)]
        print(f"\n{'':40s} {'total s':>9s} {'ms/clip':>9s}")
        for name, sec in rows:
            print(f"{name:40s} {sec:9.3f} {1000 * sec / n:9.2f}")
        print(f"\nnaive / cold (all cores) = {t_naive / t_cold:.1f}x;  naive / cold (1 core) = "
              f"{t_naive / t_serial:.1f}x;  warm load = {t_warm * 1000:.0f} ms for {n} clips; "
              f"X {cold.X.shape} {cold.X.dtype}; load average after={os.getloadavg()[0]:.2f}")
        # CPU seconds are less distorted than wall time when other processes share the cores.
        print(f"CPU time per clip: ours (n_jobs=1) {1000 * c_serial / n:.2f} ms, naive {1000 * c_naive / n:.2f} ms"
              f" -> {c_naive / c_serial:.1f}x per core")
        result = {"clips": n, "config": a.config, "cold_s": t_cold, "cold_serial_s": t_serial,
                  "warm_s": t_warm, "naive_s": t_naive, "naive_measured_clips": m,
                  "naive_over_cold": t_naive / t_cold, "naive_over_serial": t_naive / t_serial,
                  "cpu_serial_s": c_serial, "cpu_naive_s": c_naive,
                  "shape": list(cold.X.shape), "loadavg": os.getloadavg()[0]}
        if a.profile:
            prof = profile(paths, config)
            print("\nper-clip breakdown, one process, one thread (ms):")
            for k, v in prof.items():
                print(f"  {k:20s} {v:6.2f}")
            print(f"  {'total':20s} {sum(prof.values()):6.2f}")
            result["profile_ms"] = prof
        if a.json:
            a.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
