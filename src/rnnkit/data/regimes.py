"""Per-step tagging data: a noisy signal that switches between regimes, and .npz files.

The generated signal (the tagging task's demo) is a Markov chain over four regimes; each
regime lasts a geometric number of steps (at least ``min_duration``) and then switches to
another one at random. Every step is labelled with the regime that produced it:
- 0 ``calm``: Gaussian noise around 0, standard deviation ``noise``;
- 1 ``oscillating``: a sine of period 8 plus the same noise;
- 2 ``shifted``: the calm noise around the level 1.5;
- 3 ``volatile``: noise of standard deviation 1.
No single step tells its regime (a calm step and a volatile one can have the same value), so
a tagger has to look at the steps around it: the point of a recurrent, ideally
bidirectional, tagger.

User data is an ``.npz`` file with one of two layouts (no pickled objects, so a file cannot
run code when it is loaded):
- flat: ``inputs`` (sum of T_i, F) and ``labels`` (sum of T_i,) of all sequences end to end,
  with ``lengths`` (N,) giving each T_i;
- padded: ``inputs`` (N, T, F), ``labels`` (N, T) and ``lengths`` (N,); steps past a
  sequence's length are ignored.
Labels are integers or strings (whole-number floats are read as integers); a 1-D (flat) or
2-D (padded) ``inputs`` means one feature.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnkit.data.files import DataError

REGIMES = ("calm", "oscillating", "shifted", "volatile")
OSCILLATION_PERIOD = 8
SHIFT = 1.5


class TagDataError(DataError):
    """A tagging file that cannot be used; the message names the file and the problem."""


@dataclass
class Tagged:
    """Sequences of feature vectors with one label per step."""

    name: str  # where they came from: "regimes" or a path
    inputs: list[np.ndarray]  # N arrays of (T_i, F) float32
    labels: list[np.ndarray]  # N arrays of (T_i,) labels (ints or strings)

    def __len__(self) -> int:
        return len(self.inputs)


def regime_signal(regime: int, steps: np.ndarray, noise: float, rng) -> np.ndarray:
    """The values of one regime at time ``steps`` (a global clock keeps the sine's phase)."""
    if regime == 3:
        return rng.normal(0.0, 1.0, len(steps))
    wave = np.sin(2 * np.pi * steps / OSCILLATION_PERIOD) if regime == 1 else 0.0
    level = SHIFT if regime == 2 else 0.0
    return level + wave + rng.normal(0.0, noise, len(steps))


def regime_sequence(length: int, mean_duration: float, min_duration: int, noise: float, rng):
    """One signal (T, 1) and its regime labels (T,)."""
    labels = np.empty(length, dtype=np.int64)
    regime, start = int(rng.integers(len(REGIMES))), 0
    while start < length:
        duration = min_duration + int(rng.geometric(1.0 / max(mean_duration - min_duration, 1)))
        labels[start : start + duration] = regime
        start += duration
        regime = (regime + int(rng.integers(1, len(REGIMES)))) % len(REGIMES)  # a new regime
    signal = np.empty(length)
    for regime in range(len(REGIMES)):
        steps = np.flatnonzero(labels == regime)
        signal[steps] = regime_signal(regime, steps, noise, rng)
    return signal[:, None].astype(np.float32), labels


def generate_regimes(
    sequences: int = 600,
    min_length: int = 60,
    max_length: int = 160,
    mean_duration: float = 20.0,
    min_duration: int = 5,
    noise: float = 0.3,
    seed: int = 0,
) -> Tagged:
    """``sequences`` signals of random lengths in [min_length, max_length], seeded."""
    rng = np.random.default_rng(seed)
    inputs, labels = [], []
    for _ in range(sequences):
        length = int(rng.integers(min_length, max_length + 1))
        x, y = regime_sequence(length, mean_duration, min_duration, noise, rng)
        inputs.append(x)
        labels.append(y)
    return Tagged("regimes", inputs, labels)


# --- .npz files ---


def npz_arrays(path: str) -> dict:
    file = Path(path)
    if not file.is_file():
        raise TagDataError(f"{path}: no such file (and not the built-in 'regimes')")
    try:
        archive = np.load(file, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise TagDataError(f"{path}: not an .npz archive (a single .npy array?)")
        with archive:
            return {name: archive[name] for name in archive.files}
    except TagDataError:
        raise
    except ValueError as err:
        raise TagDataError(f"{path}: not a readable .npz without pickled objects ({err})") from None
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error, RuntimeError) as err:
        raise TagDataError(f"{path}: not a readable .npz file ({err})") from None


def check_keys(path: str, arrays: dict) -> None:
    missing = [k for k in ("inputs", "labels", "lengths") if k not in arrays]
    if missing:
        raise TagDataError(
            f"{path}: missing array(s) {missing}; found {sorted(arrays)} (expected inputs, "
            "labels and lengths, flat or padded: see rnnkit.data.regimes)"
        )


def check_lengths(path: str, lengths: np.ndarray) -> np.ndarray:
    """``lengths`` as int64: a non-empty 1-D array of positive integers."""
    if lengths.dtype.kind not in "iu" or lengths.ndim != 1 or lengths.size == 0:
        raise TagDataError(
            f"{path}: 'lengths' must be 1-D positive integers, got dtype {lengths.dtype} "
            f"shape {lengths.shape}"
        )
    if (lengths < 1).any():
        raise TagDataError(f"{path}: 'lengths' must be positive, got {lengths.min()}")
    return lengths.astype(np.int64)


def check_labels(path: str, labels: np.ndarray) -> np.ndarray:
    """Integer or string labels; floats only when every one is a whole number."""
    if labels.dtype.kind in "iuUS":
        return labels
    if labels.dtype.kind == "b":
        return labels.astype(np.int64)
    if labels.dtype.kind == "f" and np.isfinite(labels).all() and (labels == labels.round()).all():
        return labels.astype(np.int64)
    raise TagDataError(
        f"{path}: 'labels' must be integers or strings, got dtype {labels.dtype}"
        + (" with values that are not whole numbers" if labels.dtype.kind == "f" else "")
    )


def split_sequences(path: str, inputs, labels, lengths) -> tuple[list, list]:
    """Cut flat or padded arrays into per-sequence arrays, checking every shape."""
    if labels.ndim == 2:  # padded: (N, T) labels, (N, T, F) inputs
        if inputs.shape[:2] != labels.shape or labels.shape[0] != len(lengths):
            raise TagDataError(
                f"{path}: padded inputs {inputs.shape} and labels {labels.shape} must agree "
                f"on (N, T), with N = len(lengths) = {len(lengths)}"
            )
        if lengths.max() > labels.shape[1]:
            raise TagDataError(f"{path}: a length {lengths.max()} exceeds T = {labels.shape[1]}")
        xs = [x[:n] for x, n in zip(inputs, lengths, strict=True)]
        return xs, [y[:n] for y, n in zip(labels, lengths, strict=True)]
    if len(inputs) != len(labels) or len(labels) != lengths.sum():
        raise TagDataError(
            f"{path}: flat inputs ({len(inputs)} steps) and labels ({len(labels)}) must both "
            f"have sum(lengths) = {lengths.sum()} steps"
        )
    cuts = np.cumsum(lengths)[:-1]
    return np.split(inputs, cuts), np.split(labels, cuts)


def load_npz(path: str) -> Tagged:
    arrays = npz_arrays(path)
    check_keys(path, arrays)
    inputs, labels = arrays["inputs"], check_labels(path, arrays["labels"])
    if inputs.dtype.kind not in "biuf":
        raise TagDataError(f"{path}: 'inputs' must be numbers, got dtype {inputs.dtype}")
    if labels.ndim not in (1, 2) or inputs.ndim not in (labels.ndim, labels.ndim + 1):
        raise TagDataError(
            f"{path}: inputs {inputs.shape} and labels {labels.shape}: expected flat inputs "
            "(sum of T_i, F) with labels (sum of T_i,), or padded (N, T, F) with (N, T)"
        )
    if inputs.ndim == labels.ndim:  # one feature
        inputs = inputs[..., None]
    lengths = check_lengths(path, arrays["lengths"])
    xs, ys = split_sequences(path, inputs, labels, lengths)
    for i, x in enumerate(xs):
        if not np.isfinite(x).all():
            step = int(np.argwhere(~np.isfinite(x))[0][0])
            raise TagDataError(f"{path}: sequence {i}, step {step}: inputs are NaN or infinite")
    return Tagged(path, [x.astype(np.float32) for x in xs], list(ys))


def save_npz(path: str, data: Tagged) -> None:
    """Write ``data`` in the flat layout."""
    np.savez(
        path,
        inputs=np.concatenate(data.inputs),
        labels=np.concatenate(data.labels),
        lengths=np.array([len(y) for y in data.labels]),
    )


def load_tagged(data: str, seed: int = 0, sequences: int = 600) -> Tagged:
    """The built-in ``regimes`` (generated with ``seed``) or an ``.npz`` file."""
    if data == "regimes":
        return generate_regimes(sequences=sequences, seed=seed)
    return load_npz(data)
