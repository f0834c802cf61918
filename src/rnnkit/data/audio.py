"""Audio for speech recognition: WAV files in and out, and log-mel filterbank features.

A log-mel frame, as HTK computes it (Young et al., *The HTK Book*, section 5.4) and
Kaldi's ``compute-fbank-feats`` after it:

1. frame ``i`` is the ``win`` samples ``[i * hop, i * hop + win)``;
2. times a periodic Hamming window ``w[n] = 0.54 - 0.46 cos(2 pi n / win)``;
3. zero-padded to ``n_fft`` and transformed: power ``|X[k]|^2`` for ``k = 0 .. n_fft / 2``
   (not divided by ``n_fft``);
4. summed through ``n_mels`` triangular filters, equally spaced on the mel scale
   ``mel(f) = 2595 log10(1 + f / 700)`` between ``fmin`` and ``fmax``; filter ``m`` rises
   from edge ``m`` to edge ``m + 1`` and falls to edge ``m + 2``, linearly in mel (as HTK;
   librosa draws its triangles linearly in Hz);
5. ``log(max(energy, floor))``.

Departures from HTK and Kaldi, on purpose: no pre-emphasis, no dither and no per-frame DC
removal, so a frame is a function of its samples alone and a stream of chunks gives
exactly the frames of the whole wave (:class:`LogMelStream`). Frames are not centre-padded
either: a wave of ``n`` samples gives ``1 + (n - win) // hop`` frames, none if ``n < win``.
The window is periodic (DFT-even, Harris 1978), so a sine on a bin centre lands in exactly
three bins, which the tests check by hand.

Shapes: ``T`` frames, ``M`` mel bands, ``K = n_fft // 2 + 1`` frequency bins.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.io import wavfile

from rnnkit.data.corpus import CorpusError

SAMPLE_RATE = 16000  # what the features and the synthesised corpus use
MIN_RATE, MAX_RATE = 1000, 768000  # Hz; a header outside these is damaged
STD_FLOOR = 1e-5  # normalisation never divides by less than this


class AudioError(CorpusError):
    """A WAV file that cannot be used; the message names the file and the problem."""


# --- WAV files ---


def to_float(samples: np.ndarray) -> np.ndarray:
    """PCM samples of any WAV sample format as float32 in [-1, 1]."""
    if samples.dtype == np.uint8:  # 8-bit WAV is unsigned, silence at 128
        return ((samples.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if np.issubdtype(samples.dtype, np.integer):  # 16, 24 (left-justified in int32) or 32 bit
        return (samples.astype(np.float64) / -float(np.iinfo(samples.dtype).min)).astype(np.float32)
    return np.clip(samples, -1.0, 1.0).astype(np.float32)


def read_wav(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The samples of a WAV file, mono float32 in [-1, 1] at ``sample_rate``.

    Channels are averaged; other rates are resampled with a polyphase filter
    (``scipy.signal.resample_poly``). Raises :class:`AudioError` naming the file.
    """
    try:
        with warnings.catch_warnings():  # unknown chunks (LIST, cue...) are skipped quietly
            warnings.simplefilter("ignore", wavfile.WavFileWarning)
            rate, samples = wavfile.read(str(path))
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except Exception as err:  # scipy's parser meets a damaged header with ValueError,
        # struct.error, UnboundLocalError...: each means the file is not a WAV it can read
        raise AudioError(f"{path}: not a readable WAV file ({err})") from None
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"{path}: sample rate {rate} Hz, expected {MIN_RATE} to {MAX_RATE}")
    if samples.ndim == 2:  # (samples, channels)
        samples = to_float(samples).mean(axis=1)
    wave = to_float(samples)
    if not np.isfinite(wave).all():
        raise AudioError(f"{path}: samples that are not finite numbers (NaN or infinity)")
    return resample(wave, rate, sample_rate)


def resample(wave: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """``wave`` recorded at ``rate`` Hz, as heard at ``sample_rate`` Hz."""
    if rate == sample_rate or wave.size == 0:
        return wave.astype(np.float32)
    from scipy.signal import resample_poly  # here: scipy.signal takes a second to import

    common = math.gcd(rate, sample_rate)
    out = resample_poly(wave.astype(np.float64), sample_rate // common, rate // common)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write a mono wave in [-1, 1] as 16-bit PCM (values beyond are clipped).

    Scaled by 32768, as :func:`to_float` reads it back, so a round trip errs by half a step.
    """
    pcm = np.clip(np.round(np.asarray(wave, dtype=np.float64) * 32768), -32768, 32767)
    pcm = pcm.astype(np.int16)
    wavfile.write(str(path), sample_rate, pcm)


# --- log-mel filterbank ---


def mel(hz):
    """Hz to mel, HTK's formula (The HTK Book, eq. 5.13)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mels):
    """Mel to Hz, the inverse of :func:`mel`."""
    return 700.0 * (10.0 ** (np.asarray(mels, dtype=np.float64) / 2595.0) - 1.0)


def mel_filters(n_mels: int, n_fft: int, sample_rate: int, fmin: float, fmax: float):
    """(M, K) triangular filters, linear in mel between equally spaced mel edges."""
    edges = np.linspace(mel(fmin), mel(fmax), n_mels + 2)  # (M + 2,)
    bins = mel(np.arange(n_fft // 2 + 1) * sample_rate / n_fft)  # (K,) in mel
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - low) / (centre - low)
    falling = (high - bins) / (high - centre)
    return np.maximum(0.0, np.minimum(rising, falling))  # (M, K)


@dataclass(frozen=True)
class LogMel:
    """Log-mel filterbank features of a mono wave: ``logmel(wave) -> (T, M) float32``."""

    sample_rate: int = SAMPLE_RATE  # Hz of the waves given
    n_mels: int = 40  # mel bands, M
    win_ms: float = 25.0  # frame length
    hop_ms: float = 10.0  # frame step
    n_fft: int | None = None  # DFT size; None: the next power of two from the frame length
    fmin: float = 0.0  # Hz, lower edge of the lowest filter
    fmax: float | None = None  # Hz, upper edge of the highest filter; None: sample_rate / 2
    floor: float = 1e-10  # energies below this are taken as this before the log

    def __post_init__(self):
        if self.win < 1 or self.hop < 1:
            raise ValueError(
                f"a frame needs at least one sample: win_ms={self.win_ms} and "
                f"hop_ms={self.hop_ms} at {self.sample_rate} Hz give {self.win} and {self.hop}"
            )
        if self.fft_size < self.win:
            raise ValueError(
                f"n_fft must be at least the frame length {self.win}, got {self.n_fft}"
            )
        if not 0 <= self.fmin < self.top <= self.sample_rate / 2:
            raise ValueError(
                f"expected 0 <= fmin < fmax <= {self.sample_rate / 2} Hz, "
                f"got fmin={self.fmin}, fmax={self.fmax}"
            )
        if self.n_mels < 1 or self.floor <= 0:
            raise ValueError(f"expected n_mels >= 1 and floor > 0, got {self.n_mels}, {self.floor}")
        empty = np.flatnonzero(self.filters.max(axis=1) == 0)
        if empty.size:
            raise ValueError(
                f"{self.n_mels} mel bands are too many for n_fft={self.fft_size}: "
                f"band {empty[0]} holds no frequency bin (use fewer bands or a larger n_fft)"
            )

    @property
    def win(self) -> int:
        """Samples per frame."""
        return round(self.sample_rate * self.win_ms / 1000)

    @property
    def hop(self) -> int:
        """Samples between the starts of neighbouring frames."""
        return round(self.sample_rate * self.hop_ms / 1000)

    @property
    def fft_size(self) -> int:
        return self.n_fft if self.n_fft is not None else 1 << max(0, self.win - 1).bit_length()

    @property
    def top(self) -> float:
        return self.fmax if self.fmax is not None else self.sample_rate / 2

    @cached_property
    def filters(self) -> np.ndarray:
        """(M, K) mel filter weights (computed once per config)."""
        return mel_filters(self.n_mels, self.fft_size, self.sample_rate, self.fmin, self.top)

    @cached_property
    def sparse_filters(self) -> sparse.csr_matrix:
        """The filters as a sparse (M, K) matrix: a tenth of them is not zero."""
        return sparse.csr_matrix(self.filters)

    @cached_property
    def window(self) -> np.ndarray:
        """(win,) periodic Hamming window."""
        return 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(self.win) / self.win)

    def frame_count(self, n_samples: int) -> int:
        """How many whole frames ``n_samples`` samples hold (no padding)."""
        return 0 if n_samples < self.win else 1 + (n_samples - self.win) // self.hop

    def power(self, wave: np.ndarray) -> np.ndarray:
        """(T, K) power spectra of the frames of ``wave``."""
        wave = np.asarray(wave, dtype=np.float64)
        if wave.ndim != 1:
            raise ValueError(f"expected a mono wave of shape (samples,), got {wave.shape}")
        count = self.frame_count(wave.size)
        if count == 0:
            return np.zeros((0, self.fft_size // 2 + 1))
        frames = np.lib.stride_tricks.sliding_window_view(wave, self.win)[:: self.hop][:count]
        spectrum = np.fft.rfft(frames * self.window, n=self.fft_size, axis=1)  # (T, K)
        return spectrum.real**2 + spectrum.imag**2

    def energies(self, power: np.ndarray) -> np.ndarray:
        """(T, M) filterbank energies of (T, K) power spectra.

        A sparse product, not ``power @ filters.T``: BLAS runs that small product on threads
        that, on a busy machine, cost 5 to 50 times its work (measured on 2 shared cores).
        """
        return np.asarray((self.sparse_filters @ power.T).T)

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        energy = self.energies(self.power(wave))  # (T, M)
        return np.log(np.maximum(energy, self.floor)).astype(np.float32)


class LogMelStream:
    """Log-mel frames of a wave given in chunks of any sizes, as soon as they are whole.

    The frames of all pushes, concatenated, are exactly ``logmel(whole_wave)``: a frame
    is computed once all its samples have arrived, from those samples alone.
    """

    def __init__(self, logmel: LogMel):
        self.logmel = logmel
        self.pending = np.zeros(0, dtype=np.float64)  # samples not yet consumed by a frame

    def push(self, samples: np.ndarray) -> np.ndarray:
        """(new frames, M) log-mel frames completed by ``samples``."""
        samples = np.asarray(samples, dtype=np.float64).reshape(-1)
        self.pending = np.concatenate([self.pending, samples])
        count = self.logmel.frame_count(self.pending.size)
        if count == 0:
            return np.zeros((0, self.logmel.n_mels), dtype=np.float32)
        used = self.pending[: (count - 1) * self.logmel.hop + self.logmel.win]
        energy = self.logmel.energies(self.logmel.power(used))  # (new frames, M)
        self.pending = self.pending[count * self.logmel.hop :]
        return np.log(np.maximum(energy, self.logmel.floor)).astype(np.float32)


# --- normalisation ---


def feature_stats(features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(M,) mean and standard deviation over every frame of every utterance."""
    frames = [f for f in features if len(f)]
    if not frames:
        raise ValueError("feature statistics need at least one frame, got none")
    count = sum(len(f) for f in frames)
    mean = sum(f.sum(axis=0, dtype=np.float64) for f in frames) / count
    square = sum(((f - mean) ** 2).sum(axis=0, dtype=np.float64) for f in frames) / count
    return mean.astype(np.float32), np.sqrt(square).astype(np.float32)


def normalise(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(T, M) features less ``mean``, over ``std`` (floored at STD_FLOOR): global normalisation."""
    if mean.shape != features.shape[1:] or std.shape != features.shape[1:]:
        raise ValueError(
            f"expected mean and std of shape {features.shape[1:]}, got {mean.shape}, {std.shape}"
        )
    return ((features - mean) / np.maximum(std, STD_FLOOR)).astype(np.float32)


def normalise_utterance(features: np.ndarray) -> np.ndarray:
    """(T, M) features less their own mean, over their own deviation, per band (CMVN)."""
    if len(features) == 0:
        return features.astype(np.float32)
    return normalise(features, *feature_stats([features]))
