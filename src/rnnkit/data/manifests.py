"""Manifests of spoken corpora and their log-mel features, cached.

A manifest is a CSV with a ``path,transcript`` header, paths relative to the manifest's
folder (or absolute), WAV files of any rate and channel count. :func:`read_manifest` names
every bad row by its line; :func:`load_features` reads the files into log-mel features,
skips unreadable and silent files with the reasons, and keeps the features in an ``.npz``
cache beside the manifest, keyed by the log-mel settings (never pickled).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rnnkit.data.audio import AudioError, LogMel, read_wav
from rnnkit.data.corpus import CorpusError
from rnnkit.data.files import decode_text, read_bytes

SILENCE = 1e-4  # a file whose peak is below this (about -80 dBFS) is silent


class Entry(NamedTuple):
    path: Path  # resolved against the manifest's folder
    transcript: str  # words separated by single spaces


@dataclass(frozen=True)
class Manifest:
    """The (wav path, transcript) entries of a manifest CSV."""

    path: Path
    entries: tuple[Entry, ...] = field(repr=False)
    speakers: tuple[str, ...] = field(default=(), repr=False)  # each entry's, if named

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def write_manifest(path: Path, rows: list[tuple], header=("path", "transcript")) -> Path:
    """A manifest CSV of ``rows``; columns after the first two (a speaker) are kept as given."""
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def bad_rows(path: Path, problems: list[str]) -> CorpusError:
    shown = "; ".join(problems[:5]) + (
        f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    )
    return CorpusError(f"{path}: {len(problems)} bad rows: {shown}")


def read_manifest(path: str | Path) -> Manifest:
    """The entries of a ``path,transcript`` CSV; every bad row is named by its line number."""
    path = Path(path)
    text = decode_text(path, read_bytes(path, CorpusError), CorpusError)
    try:
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise CorpusError(f"{path}: not a readable manifest CSV ({err})") from None
    header = [name.strip().lower() for name in lines[0]] if lines else []
    if "path" not in header or "transcript" not in header:
        raise CorpusError(f"{path}: the first line must name the columns path,transcript")
    at, said = header.index("path"), header.index("transcript")
    who = header.index("speaker") if "speaker" in header else None
    entries, speakers, problems = [], [], []
    for number, row in enumerate(lines[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank lines are allowed
        if len(row) <= max(at, said):
            problems.append(f"line {number}: {len(row)} columns, expected {len(header)}")
            continue
        wav, transcript = Path(row[at].strip()), " ".join(row[said].split())
        wav = wav if wav.is_absolute() else path.parent / wav
        if not transcript:
            problems.append(f"line {number}: empty transcript")
        elif not wav.is_file():
            problems.append(f"line {number}: no such file {wav}")
        else:
            entries.append(Entry(wav, transcript))
            speakers.append(row[who].strip() if who is not None and who < len(row) else "")
    if problems:
        raise bad_rows(path, problems)
    if not entries:
        raise CorpusError(f"{path}: no entries")
    return Manifest(path, tuple(entries), tuple(speakers) if who is not None else ())


# --- features ---


@dataclass(frozen=True)
class Loaded:
    """Log-mel features of a manifest's usable files, and the files skipped with why."""

    features: list[np.ndarray]  # (T_i, M) float32 each, not normalised
    transcripts: list[str]
    paths: list[Path]
    skipped: list[tuple[Path, str]]  # (file, reason)
    speakers: list[str] = field(default_factory=list)  # of each file kept ("" unnamed)

    def warning(self) -> str:
        """One line for the caller to print, or "" when nothing was skipped."""
        if not self.skipped:
            return ""
        total = len(self.paths) + len(self.skipped)
        first = "; ".join(f"{p} ({why})" for p, why in self.skipped[:3])
        return f"skipped {len(self.skipped)} of {total} files: {first}" + (
            " ..." if len(self.skipped) > 3 else ""
        )


def problem(wave: np.ndarray, logmel: LogMel) -> str:
    """Why a wave is unusable, or ""."""
    if wave.size == 0 or np.abs(wave).max() < SILENCE:
        return "silent"
    if logmel.frame_count(wave.size) == 0:
        return f"shorter than one {logmel.win_ms:g} ms frame"
    return ""


def extract(manifest: Manifest, logmel: LogMel) -> tuple[list, list[int], list[tuple[int, str]]]:
    """(features, indices of the entries kept, (index, reason) of those skipped)."""
    features, kept, skipped = [], [], []
    for index, (path, _) in enumerate(manifest):
        try:
            wave = read_wav(path, logmel.sample_rate)
        except AudioError as err:
            skipped.append((index, str(err).removeprefix(f"{path}: ")))
            continue
        why = problem(wave, logmel)
        if why:
            skipped.append((index, why))
            continue
        features.append(logmel(wave))
        kept.append(index)
    return features, kept, skipped


def fingerprint(manifest: Manifest, logmel: LogMel) -> str:
    """Changes when the manifest, any of its files or the log-mel settings do."""
    digest = hashlib.sha256(manifest.path.read_bytes())
    digest.update(repr(sorted(asdict(logmel).items())).encode())
    for path, _ in manifest:
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def cache_path(manifest: Manifest, logmel: LogMel) -> Path:
    key = hashlib.sha256(repr(sorted(asdict(logmel).items())).encode()).hexdigest()[:12]
    return manifest.path.with_name(f"{manifest.path.stem}.logmel-{key}.npz")


def read_cache(path: Path, stamp: str):
    """(features, kept, skipped) from the cache, or None if it is missing or stale."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["fingerprint"]) != stamp:
                return None
            frames, bounds = saved["frames"], np.cumsum(saved["lengths"])[:-1]
            skipped = list(zip(saved["skipped"].tolist(), saved["reasons"].tolist(), strict=True))
            return list(np.split(frames, bounds)), saved["kept"].tolist(), skipped
    except (OSError, KeyError, ValueError):
        return None


def write_cache(path: Path, stamp: str, features, kept, skipped, n_mels: int) -> None:
    """Save atomically; a folder that cannot be written to only loses the cache."""
    temporary = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # one per process
    try:
        np.savez(
            temporary,
            fingerprint=np.array(stamp),
            frames=np.concatenate(features) if features else np.zeros((0, n_mels), np.float32),
            lengths=np.array([len(f) for f in features], dtype=np.int64),
            kept=np.array(kept, dtype=np.int64),
            skipped=np.array([i for i, _ in skipped], dtype=np.int64),
            reasons=np.array([why for _, why in skipped], dtype=str),
        )
        temporary.replace(path)
    except OSError:
        temporary.unlink(missing_ok=True)


def load_features(manifest: Manifest | str | Path, logmel: LogMel | None = None, cache=True):
    """:class:`Loaded` features of a manifest's files (cached beside it when ``cache``)."""
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    logmel = logmel or LogMel()
    stamp, where = fingerprint(manifest, logmel), cache_path(manifest, logmel)
    found = read_cache(where, stamp) if cache else None
    if found is None:
        found = extract(manifest, logmel)
        if cache:
            write_cache(where, stamp, *found, logmel.n_mels)
    features, kept, skipped = found
    entries = manifest.entries
    return Loaded(
        features,
        [entries[i].transcript for i in kept],
        [entries[i].path for i in kept],
        [(entries[i].path, why) for i, why in skipped],
        [manifest.speakers[i] if manifest.speakers else "" for i in kept],
    )
