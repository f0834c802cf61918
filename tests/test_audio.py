"""WAV reading and log-mel features: hand-computed spectra, exact streaming, honest errors."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.io import wavfile

from rnnkit.data.audio import (
    AudioError,
    LogMel,
    LogMelStream,
    feature_stats,
    mel,
    mel_to_hz,
    normalise,
    normalise_utterance,
    read_wav,
    write_wav,
)
from rnnkit.data.corpus import CorpusError


def htk_mel(hz: float) -> float:
    """The mel scale written out again here, apart from the module's own."""
    return 2595 * math.log10(1 + hz / 700)


def test_mel_scale_is_htks():
    assert mel(700) == pytest.approx(2595 * math.log10(2))  # 781.17...
    assert mel(1000) == pytest.approx(1000.0, abs=0.05)  # the scale's defining point
    hz = np.array([0.0, 125.0, 4000.0, 7999.0])
    np.testing.assert_allclose(mel_to_hz(mel(hz)), hz, atol=1e-9)


def test_tiny_frame_power_spectrum_by_hand():
    # 4 samples at 4 Hz, n_fft 4: periodic Hamming w = 0.54 - 0.46 cos(pi n / 2)
    # = [0.08, 0.54, 1.0, 0.54]; the frame [1, 0, -1, 0] windowed is [0.08, 0, -1, 0],
    # so X[k] = 0.08 - (-1)^k: X = [-0.92, 1.08, -0.92] and |X|^2 = [0.8464, 1.1664, 0.8464].
    logmel = LogMel(sample_rate=4, n_mels=1, win_ms=1000, hop_ms=1000)
    assert (logmel.win, logmel.hop, logmel.fft_size) == (4, 4, 4)
    np.testing.assert_allclose(logmel.window, [0.08, 0.54, 1.0, 0.54], atol=1e-12)
    power = logmel.power(np.array([1.0, 0.0, -1.0, 0.0]))
    np.testing.assert_allclose(power, [[0.8464, 1.1664, 0.8464]], atol=1e-12)
    # one filter from 0 to 2 Hz, peak at mel(2) / 2: bins 0 and 2 Hz sit on its feet,
    # bin 1 Hz just past the peak, on the falling side.
    weight = (htk_mel(2) - htk_mel(1)) / (htk_mel(2) / 2)
    features = logmel(np.array([1.0, 0.0, -1.0, 0.0]))
    assert features.shape == (1, 1) and features.dtype == np.float32
    assert features[0, 0] == pytest.approx(math.log(1.1664 * weight), rel=1e-6)


def test_sine_on_a_filter_peak_by_hand():
    # 512-sample frames at 16 kHz, n_fft 512: bins every 31.25 Hz, so 1000 Hz is bin 32.
    # A sine of amplitude A is two exponentials of A / 2; the periodic Hamming window's DFT
    # is 0.54 N at bin 0, -0.23 N at bins +-1 and 0 elsewhere, so the power is
    # (A/2 * 0.54 * 512)^2 at bin 32, (A/2 * 0.23 * 512)^2 at bins 31 and 33, 0 elsewhere.
    amplitude = 0.5
    peak, side = (0.25 * 0.54 * 512) ** 2, (0.25 * 0.23 * 512) ** 2  # 4777.5744, 866.7136
    # one filter with its peak at mel(1000): fmax is where the mel scale reaches 2 mel(1000).
    fmax = 700 * (10 ** (2 * htk_mel(1000) / 2595) - 1)
    logmel = LogMel(n_mels=1, win_ms=32, hop_ms=32, fmax=fmax)
    wave = amplitude * np.sin(2 * np.pi * 1000 * np.arange(3 * 512) / 16000)

    power = logmel.power(wave)
    assert power.shape == (3, 257)
    np.testing.assert_allclose(power[:, 31:34], [[side, peak, side]] * 3, rtol=1e-9)
    assert np.delete(power, [31, 32, 33], axis=1).max() < 1e-6

    below = htk_mel(968.75) / htk_mel(1000)  # rising side of the triangle at bin 31
    above = (2 * htk_mel(1000) - htk_mel(1031.25)) / htk_mel(1000)  # falling, bin 33
    expected = math.log(peak + side * (below + above))
    np.testing.assert_allclose(logmel(wave), np.full((3, 1), expected), rtol=1e-6)


def test_sine_energy_splits_between_the_two_filters_around_it():
    # 1000 Hz lies between mel edges 14 and 15 of 40 bands up to 8 kHz (69.3 mel apart),
    # and so do bins 31 to 33: the falling side of filter 13 and the rising side of filter
    # 14 sum to one there, so those two filters hold all the power and the others none.
    logmel = LogMel(n_mels=40, win_ms=32, hop_ms=32)
    wave = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(512) / 16000)
    energy = np.exp(logmel(wave).astype(np.float64))[0]  # (40,)
    total = (0.25 * 0.54 * 512) ** 2 + 2 * (0.25 * 0.23 * 512) ** 2  # 6511.0016
    assert energy[13] + energy[14] == pytest.approx(total, rel=1e-5)
    assert np.delete(energy, [13, 14]).max() < 1e-6


def test_frames_are_not_padded_and_cover_their_own_samples():
    logmel = LogMel()  # 400-sample frames every 160 samples
    assert (logmel.win, logmel.hop, logmel.fft_size) == (400, 160, 512)
    wave = np.random.default_rng(0).uniform(-1, 1, 1000)
    features = logmel(wave)
    assert features.shape == (1 + (1000 - 400) // 160, 40) == (4, 40)
    np.testing.assert_array_equal(features[2], logmel(wave[320:720])[0])
    assert logmel(wave[:399]).shape == (0, 40)
    assert logmel(wave[:400]).shape == (1, 40)


def test_silence_is_the_floor():
    features = LogMel(floor=1e-10)(np.zeros(1600))
    np.testing.assert_allclose(features, math.log(1e-10), rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stream_of_chunks_gives_exactly_the_whole_waves_frames(seed):
    rng = np.random.default_rng(seed)
    logmel = LogMel(n_mels=23, win_ms=20, hop_ms=7.5)
    wave = rng.standard_normal(8000).astype(np.float32) * 0.1
    stream, chunks, start = LogMelStream(logmel), [], 0
    while start < wave.size:
        size = int(rng.choice([0, 1, 7, 119, 160, 400, 1000]))
        chunks.append(stream.push(wave[start : start + size]))
        start += size
    assert all(c.shape[1] == 23 and c.dtype == np.float32 for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), logmel(wave))


def test_configuration_is_checked():
    with pytest.raises(ValueError, match="too many for n_fft=512"):
        LogMel(n_mels=128)
    assert LogMel(n_mels=128, n_fft=2048).filters.shape == (128, 1025)
    with pytest.raises(ValueError, match="at least the frame length 400"):
        LogMel(n_fft=256)
    with pytest.raises(ValueError, match="fmin < fmax"):
        LogMel(fmax=9000)
    with pytest.raises(ValueError, match="mono wave"):
        LogMel()(np.zeros((2, 1600)))


# --- WAV files ---


def dominant_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.argmax(spectrum) * rate / wave.size)


def test_round_trip_through_16_bit_pcm(tmp_path):
    wave = 0.8 * np.sin(np.linspace(0, 60, 4000)).astype(np.float32)
    write_wav(tmp_path / "a.wav", wave)
    rate, raw = wavfile.read(tmp_path / "a.wav")
    assert (rate, raw.dtype, raw.shape) == (16000, np.int16, (4000,))
    back = read_wav(tmp_path / "a.wav")
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, wave, atol=0.5 / 32768 + 1e-9)


def test_stereo_is_averaged_and_other_rates_resampled(tmp_path):
    t = np.arange(44100) / 44100  # one second
    left = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)  # (samples, 2)
    wavfile.write(tmp_path / "s.wav", 44100, stereo)
    wave = read_wav(tmp_path / "s.wav")
    assert wave.shape == (16000,) and wave.dtype == np.float32
    assert dominant_hz(wave, 16000) == pytest.approx(440, abs=1.5)
    assert np.abs(wave[1000:-1000]).max() == pytest.approx(0.25, abs=0.01)  # (0.5 + 0) / 2


@pytest.mark.parametrize(
    "samples, expected",
    [
        (np.array([0, 64, 128, 255], dtype=np.uint8), [-1.0, -0.5, 0.0, 127 / 128]),
        (np.array([-32768, 0, 16384], dtype=np.int16), [-1.0, 0.0, 0.5]),
        (np.array([-(2**31), 2**30], dtype=np.int32), [-1.0, 0.5]),
        (np.array([-2.0, 0.25, 1.5], dtype=np.float32), [-1.0, 0.25, 1.0]),
    ],
)
def test_every_pcm_format_is_read_as_floats_in_range(tmp_path, samples, expected):
    wavfile.write(tmp_path / "f.wav", 16000, samples)
    np.testing.assert_allclose(read_wav(tmp_path / "f.wav"), expected, atol=1e-6)


def test_unreadable_files_are_named(tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00not a wave at all")
    with pytest.raises(AudioError, match=r"junk\.wav: not a readable WAV file"):
        read_wav(tmp_path / "junk.wav")
    with pytest.raises(CorpusError, match=r"missing\.wav: no such file"):
        read_wav(tmp_path / "missing.wav")
    wavfile.write(tmp_path / "nan.wav", 16000, np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(AudioError, match=r"nan\.wav: samples that are not finite"):
        read_wav(tmp_path / "nan.wav")


# --- normalisation ---


def test_global_stats_are_those_of_all_frames_together():
    rng = np.random.default_rng(3)
    a, b = rng.normal(2, 3, (50, 4)), rng.normal(-1, 0.5, (7, 4))
    mean, std = feature_stats([a, b, np.zeros((0, 4))])
    both = np.concatenate([a, b])
    np.testing.assert_allclose(mean, both.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(std, both.std(axis=0), rtol=1e-5)
    normed = normalise(both.astype(np.float32), mean, std)
    np.testing.assert_allclose(normed.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(normed.std(axis=0), 1, atol=1e-5)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        normalise(both, mean[:3], std[:3])


def test_per_utterance_normalisation_survives_a_constant_band():
    features = np.stack([np.arange(10.0), np.full(10, 7.0)], axis=1).astype(np.float32)
    normed = normalise_utterance(features)
    assert normed.shape == (10, 2) and np.isfinite(normed).all()
    np.testing.assert_allclose(normed[:, 1], 0)
    np.testing.assert_allclose([normed[:, 0].mean(), normed[:, 0].std()], [0, 1], atol=1e-6)


# --- hostile files: a float wave in range, or an AudioError naming the file ---

HOSTILE = settings(max_examples=60)  # conftest.py's profile, with more examples


def a_wav(tmp_path, rate: int, samples: np.ndarray) -> bytes:
    wavfile.write(tmp_path / "valid.wav", rate, samples)
    return (tmp_path / "valid.wav").read_bytes()


def read_or_refuse(path):
    try:
        wave = read_wav(path)
    except AudioError as err:
        assert str(err).startswith(f"{path}: "), str(err)
        return
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert np.isfinite(wave).all() and np.abs(wave).max(initial=0) <= 1


@HOSTILE
@given(
    rate=st.sampled_from([8000, 16000, 22050, 44100]),
    dtype=st.sampled_from([np.uint8, np.int16, np.int32, np.float32, np.float64]),
    channels=st.integers(1, 3),
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    keep=st.integers(0, 300),
)
def test_damaged_wav_files_are_read_or_refused_by_name(
    tmp_path, rate, dtype, channels, edits, keep
):
    samples = (np.random.default_rng(0).uniform(-0.5, 0.5, (100, channels)) * 100).astype(dtype)
    raw = bytearray(a_wav(tmp_path, rate, samples))
    for offset, value in edits:
        if offset < len(raw):
            raw[offset] = value
    (tmp_path / "hostile.wav").write_bytes(bytes(raw[:keep]) if keep < 300 else bytes(raw))
    read_or_refuse(tmp_path / "hostile.wav")


@HOSTILE
@given(raw=st.binary(max_size=120))
def test_arbitrary_bytes_are_refused_by_name(tmp_path, raw):
    (tmp_path / "bytes.wav").write_bytes(raw)
    read_or_refuse(tmp_path / "bytes.wav")


def test_a_sample_rate_no_sound_has_is_refused(tmp_path):
    wavfile.write(tmp_path / "slow.wav", 10, np.zeros(50, dtype=np.int16))
    with pytest.raises(AudioError, match=r"slow\.wav: sample rate 10 Hz, expected 1000 to"):
        read_wav(tmp_path / "slow.wav")


def test_24_bit_pcm_is_read(tmp_path):
    import wave

    values = [-(2**23), 0, 2**22, 2**23 - 1]
    with wave.open(str(tmp_path / "24.wav"), "wb") as out:
        out.setnchannels(1), out.setsampwidth(3), out.setframerate(16000)
        out.writeframes(b"".join(v.to_bytes(3, "little", signed=True) for v in values))
    np.testing.assert_allclose(read_wav(tmp_path / "24.wav"), [-1.0, 0.0, 0.5, 1.0], atol=1e-6)
