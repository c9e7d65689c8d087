"""Signal processing of one clip: reading, log-mel against librosa, band statistics, pooling."""
import librosa
import numpy as np
import pytest
import soundfile as sf

import synth
from esc50ann import audio as A
from esc50ann.errors import FeatureError

SR = synth.SAMPLE_RATE


def _wav(path, y, sr=SR, subtype="PCM_16"):
    sf.write(path, y, sr, subtype=subtype)
    return path


# --------------------------------------------------------------------------- load_clip

def test_load_clip_pads_crops_and_mixes(tmp_path):
    short = _wav(tmp_path / "short.wav", synth.tone(0, 0, duration=1.0))
    y, sr = A.load_clip(short, duration=5.0)
    assert sr == SR and y.shape == (5 * SR,) and y.dtype == np.float32
    np.testing.assert_array_equal(y[:SR], sf.read(short, dtype="float32")[0])
    assert not y[SR:].any()

    long = _wav(tmp_path / "long.wav", synth.tone(1, 1, duration=7.0))
    y, _ = A.load_clip(long, duration=5.0)
    np.testing.assert_array_equal(y, sf.read(long, dtype="float32")[0][:5 * SR])

    stereo = np.stack([synth.tone(0, 2), 0.5 * synth.tone(14, 3)], axis=1)
    path = _wav(tmp_path / "stereo.wav", stereo, subtype="FLOAT")
    y, _ = A.load_clip(path, duration=5.0)
    np.testing.assert_allclose(y, stereo.mean(axis=1), atol=1e-7)


def test_load_clip_other_rate_native_and_resampled(tmp_path):
    path = _wav(tmp_path / "22k.wav", synth.tone(0, 0, sample_rate=22050, duration=4.0), sr=22050)
    y, sr = A.load_clip(path, duration=5.0)
    assert sr == 22050 and y.shape == (5 * 22050,)
    y, sr = A.load_clip(path, duration=5.0, sample_rate=16000)
    assert sr == 16000 and y.shape == (80000,) and y.dtype == np.float32
    ref = librosa.resample(sf.read(path, dtype="float32")[0], orig_sr=22050, target_sr=16000, res_type="soxr_hq")
    np.testing.assert_allclose(y[:60000], ref[:60000], atol=1e-4)


def test_load_clip_rejects_bad_files_by_name(tmp_path):
    nan = synth.tone(0, 0)
    nan[1000] = np.nan
    cases = {
        "nan.wav": lambda p: _wav(p, nan, subtype="FLOAT"),
        "empty.wav": lambda p: _wav(p, np.zeros(0, np.float32)),
        "text.wav": lambda p: p.write_text("not audio at all"),
        "missing.wav": lambda p: None,
    }
    for name, make in cases.items():
        make(tmp_path / name)
        with pytest.raises(FeatureError, match=name) as info:
            A.load_clip(tmp_path / name, duration=5.0)
        assert "\n" not in str(info.value)
    with pytest.raises(FeatureError, match="non-finite"):
        A.load_clip(tmp_path / "nan.wav", duration=5.0)
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(FeatureError, match=r"empty audio file .*zero.wav \(0 bytes\)$"):
        A.load_clip(tmp_path / "zero.wav", duration=5.0)
    with pytest.raises(FeatureError) as info:
        A.load_clip(tmp_path / "text.wav", duration=5.0)
    assert str(info.value).count("text.wav") == 1  # the path said once, not again by soundfile


# --------------------------------------------------------------------------- spectra and pooling

def test_log_mel_matches_librosa():
    y = synth.tone(14, 5)
    ours = A.log_mel(y, SR, n_fft=1024, hop_length=256, n_mels=64, fmin=50.0, fmax=16000.0, top_db=80.0)
    ref = librosa.power_to_db(librosa.feature.melspectrogram(
        y=y, sr=SR, n_fft=1024, hop_length=256, n_mels=64, fmin=50.0, fmax=16000.0), ref=np.max, top_db=80.0)
    assert ours.shape == ref.shape == (64, 1 + len(y) // 256) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_power_spectrogram_and_blocked_mel_match_librosa():
    y = synth.tone(1, 6, duration=2.0)  # 173 frames: two blocks of MEL_BLOCK
    P = A.power_spectrogram(y, n_fft=2048, hop_length=512)
    ref = np.abs(librosa.stft(y, n_fft=2048, hop_length=512)) ** 2
    assert P.shape == ref.shape and P.dtype == np.float32
    np.testing.assert_allclose(P, ref, rtol=1e-3, atol=1e-3 * ref.max())
    M = A.mel_power(y, SR, n_fft=2048, hop_length=512, n_mels=40, fmin=0.0, fmax=None)  # > 1 block
    np.testing.assert_allclose(M, A.mel_basis(sr=SR, n_fft=2048, n_mels=40) @ P, rtol=1e-5, atol=1e-6 * M.max())


def test_band_stats_against_numpy():
    a = np.array([[0.0, 1.0, 3.0, 2.0], [5.0, 5.0, 4.0, 8.0]], np.float32)
    b = np.array([[1.0, -1.0, 1.0, -1.0]], np.float32)
    got = A.band_stats([a, b])
    expect = []
    for c in (a, b):
        d = c[:, 1:] - c[:, :-1]
        expect += [c.mean(1), c.std(1), c.min(1), c.max(1), np.abs(d).mean(1), d.std(1)]
    np.testing.assert_allclose(got, np.concatenate(expect), rtol=1e-6)
    assert got.shape == (6 * 3,) and got.dtype == np.float32
    assert got[:2].tolist() == [1.5, 5.5] and got[8:10].tolist() == pytest.approx([4 / 3, 5 / 3])


def test_flatten_pools_time_keeping_the_tail():
    a = np.arange(10, dtype=np.float32).reshape(2, 5)
    np.testing.assert_array_equal(A.flatten([a], time_pool=1), a.ravel())
    np.testing.assert_allclose(A.flatten([a, a[:1]], time_pool=2), [0.5, 2.5, 4, 5.5, 7.5, 9, 0.5, 2.5, 4])


# --------------------------------------------------------------------------- augmentation and modulation

def test_pitch_shift_moves_a_tone_like_a_tone_of_that_pitch():
    t = np.arange(SR) / SR
    tone = lambda f: np.sin(2 * np.pi * f * t).astype(np.float32)  # noqa: E731
    mel = dict(n_fft=2048, hop_length=512, n_mels=128, fmin=0.0, fmax=None)
    shifted = A.mel_power(tone(1000.0), SR, semitones=(0.0, 12.0, -12.0, 7.0), **mel)
    assert shifted.shape == (4, 128, 1 + SR // 512) and shifted.dtype == np.float32
    np.testing.assert_allclose(shifted[0], A.mel_power(tone(1000.0), SR, **mel), rtol=1e-5)  # 0: unshifted
    peak = lambda M: int(M.mean(axis=1).argmax())  # noqa: E731
    for block, freq in zip(shifted[1:], (2000.0, 500.0, 1000.0 * 2 ** (7 / 12))):
        assert abs(peak(block) - peak(A.mel_power(tone(freq), SR, **mel))) <= 1, freq
    # a shift keeps the clip's duration (frames) and loses no energy upwards
    assert shifted[1].sum() == pytest.approx(shifted[0].sum(), rel=0.05)


def test_modulation_spectrum_finds_the_rate_of_an_amplitude_modulation():
    rng = np.random.default_rng(0)
    t = np.arange(5 * SR) / SR
    S = A.log_mel((rng.standard_normal(t.size) * (1.2 + np.sin(2 * np.pi * 5.0 * t))).astype(np.float32), SR,
                  n_fft=1024, hop_length=512, n_mels=16)
    edges = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    mod = A.modulation_spectrum(S, frame_rate=SR / 512, edges=edges)
    assert mod.shape == (16, 6) and mod.dtype == np.float32
    assert (mod.argmax(axis=1) == edges.index(4.0)).mean() > 0.8  # 5 Hz lies in the 4-8 Hz bin
    steady = A.modulation_spectrum(np.zeros((3, 40), np.float32), frame_rate=SR / 512, edges=edges)
    np.testing.assert_allclose(steady, np.log(1e-3), rtol=1e-6)  # no fluctuation; short: empty bins are 0
    assert np.isfinite(A.modulation_spectrum(S[:, :3], frame_rate=SR / 512, edges=edges)).all()
