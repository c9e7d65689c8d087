"""Checking the audio files of a dataset: format, checksum and a cheap fingerprint.

``verify_clips`` hashes and checks every clip a metadata table lists; ``fingerprint`` is the
size and modification time of one file, what every later load (and the feature cache key)
compares to notice a file changed without hashing it again.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import soundfile as sf
from joblib import Parallel, delayed

from esc50ann import fileio
from esc50ann import progress as progress_mod
from esc50ann.errors import one_line
from esc50ann.parallel import n_processes

# The official clips: 5 s, 44.1 kHz, mono.
SAMPLE_RATE = 44100
N_CHANNELS = 1
N_SAMPLES = 5 * SAMPLE_RATE
# How many bad files a one-line error message lists before "and N more".
SHOWN_PROBLEMS = 5


def fingerprint(path: str | Path) -> list[int] | None:
    """``[size, mtime_ns]`` of the file ``path``, or None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def fingerprints(audio_dir: str | Path, filenames) -> dict[str, list[int] | None]:
    """filename -> ``fingerprint`` of each file under ``audio_dir``."""
    return {str(name): fingerprint(Path(audio_dir) / str(name)) for name in filenames}


def changed_files(audio_dir: str | Path, recorded: dict | None) -> list[str]:
    """The files of ``recorded`` (filename -> fingerprint, as ``fingerprints`` gives) whose size or
    modification time differs now (none when nothing was recorded)."""
    if not isinstance(recorded, dict):
        return []
    now = fingerprints(audio_dir, recorded)
    return [name for name, stat in recorded.items() if now[str(name)] != stat]


def check_clip(path: Path, expected_sha256: str | None = None, strict: bool = True) -> tuple[str | None, list[str]]:
    """Hash one audio file and check its format (with ``strict``, ESC-50's exact one).

    Returns
    -------
    sha256 : str or None
        None when the file cannot be read at all.
    reasons : list of str
        What is wrong with it; empty when nothing is.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None, ["missing"]
    except OSError as e:
        return None, [f"unreadable ({one_line(e)})"]
    digest = fileio.sha256(data)
    reasons = []
    if expected_sha256 is not None and digest != expected_sha256:
        reasons.append("changed since verification (sha256 mismatch)")
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        return digest, reasons + [f"unreadable by soundfile ({one_line(e)})"]
    if not strict:
        return digest, reasons + ([] if info.frames > 0 else ["no samples"])
    if info.samplerate != SAMPLE_RATE:
        reasons.append(f"sample rate {info.samplerate} Hz, expected {SAMPLE_RATE}")
    if info.channels != N_CHANNELS:
        reasons.append(f"{info.channels} channels, expected {N_CHANNELS}")
    if info.frames != N_SAMPLES:
        reasons.append(f"{info.frames} frames, expected {N_SAMPLES}")
    return digest, reasons


def verify_clips(audio_dir: Path, filenames, *, expected: dict | None = None, strict: bool = True,
                 n_jobs: int = -1, progress: bool = True) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Check and hash every file ``filenames`` names under ``audio_dir``.

    A clip is good when it exists, soundfile can read its header, and it is ``SAMPLE_RATE`` Hz,
    ``N_CHANNELS`` channel(s), ``N_SAMPLES`` frames long; with ``expected`` its SHA-256 must also
    be unchanged. Without ``strict`` (other datasets than ESC-50) any readable, non-empty file is good.

    Parameters
    ----------
    audio_dir : Path
    filenames : iterable of str
    expected : dict, optional
        A previous manifest, filename -> SHA-256.
    n_jobs : int
        Threads (hashing and file reads release the GIL), as ``parallel.n_processes`` counts them;
        -1 for all cores.
    progress : bool
        Show a progress bar.

    Returns
    -------
    manifest : dict[str, str]
        filename -> SHA-256 for every file that could be read.
    problems : list of (filename, reason)
        Every bad file, in the order given.
    """
    audio_dir = Path(audio_dir)
    expected = expected or {}
    names = [str(n) for n in filenames]
    jobs = (delayed(check_clip)(audio_dir / n, expected.get(n), strict) for n in names)
    results = Parallel(n_jobs=n_processes(n_jobs, len(names)), prefer="threads", return_as="generator")(jobs)
    manifest, problems = {}, []
    for name, (digest, reasons) in zip(names, progress_mod.bar(results, total=len(names), desc="verify",
                                                               unit="clip", enabled=progress, leave=False)):
        if digest is not None:
            manifest[name] = digest
        if reasons:
            problems.append((name, "; ".join(reasons)))
    return manifest, problems


def describe_problems(problems: list[tuple[str, str]], total: int, root: Path) -> str:
    """One line: how many files are bad and the first few ``name: reason``."""
    shown = "; ".join(f"{name}: {reason}" for name, reason in problems[:SHOWN_PROBLEMS])
    more = f"; and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    return f"{len(problems)} of {total} audio files in {root} are bad: {shown}{more}"
