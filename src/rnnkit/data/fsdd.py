"""The Free Spoken Digit Dataset's folder, read into speech manifests split by speaker.

The Free Spoken Digit Dataset (FSDD, github.com/Jakobovski/free-spoken-digit-dataset, CC
BY-SA 4.0) holds mono 8 kHz WAV files named ``{digit}_{speaker}_{index}.wav``, one spoken
digit each. A recogniser scored on speakers it trained on measures how well it remembers
them, not how well it hears: the data set's own convention (recordings 0 to 4 of every
speaker as the test set) does that. Here the splits are by speaker instead: the test
speakers' recordings are in ``test.csv`` alone, the validation speakers' in ``val.csv``
alone, and the rest in ``train.csv``.

A manifest written here has a third column, ``speaker``, beside ``path,transcript``
(:mod:`rnnkit.data.manifests` reads the first two and ignores the rest); a transcript is the
digit's English word, as a recogniser of spoken words writes it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from rnnkit.data.corpus import CorpusError
from rnnkit.data.manifests import write_manifest

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FILE_NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)\.wav$")


class Recording(NamedTuple):
    path: Path
    digit: int
    speaker: str
    index: int


def read_recordings(folder: str | Path) -> list[Recording]:
    """Every ``{digit}_{speaker}_{index}.wav`` of ``folder`` (or of its ``recordings/``, as
    the data set's repository has it), sorted; a WAV named otherwise is an error naming it."""
    folder = Path(folder)
    if (folder / "recordings").is_dir():
        folder = folder / "recordings"
    if not folder.is_dir():
        raise CorpusError(f"{folder}: not a directory of FSDD recordings")
    recordings, strangers = [], []
    for path in sorted(folder.glob("*.wav")):
        match = FILE_NAME.match(path.name)
        if match is None:
            strangers.append(path.name)
            continue
        digit, speaker, index = match.groups()
        recordings.append(Recording(path.resolve(), int(digit), speaker, int(index)))
    if strangers:
        shown = ", ".join(strangers[:3]) + (" ..." if len(strangers) > 3 else "")
        raise CorpusError(
            f"{folder}: {len(strangers)} WAV file(s) not named digit_speaker_index.wav "
            f"(e.g. 7_george_12.wav): {shown}"
        )
    if not recordings:
        raise CorpusError(f"{folder}: no digit_speaker_index.wav files")
    return recordings


def split_speakers(speakers: list[str], test: list[str], val: list[str]) -> dict[str, list]:
    """Speakers of each split. Without ``val``, the last training speaker (by name) becomes
    the validation speaker; every named speaker must exist and be in one split only."""
    known = sorted(set(speakers))
    unknown = sorted(set(test + val) - set(known))
    if unknown:
        raise CorpusError(f"no recordings of speaker(s) {unknown}; the speakers are {known}")
    both = sorted(set(test) & set(val))
    if both:
        raise CorpusError(f"speaker(s) {both} named for both test and validation")
    rest = [s for s in known if s not in test and s not in val]
    if not val and len(rest) > 1:
        val = rest[-1:]
        rest = rest[:-1]
    if not test or not val or not rest:
        raise CorpusError(
            f"{len(known)} speakers {known}: need at least one for each of training, "
            f"validation and test (test {test}, validation {val}, training {rest})"
        )
    return {"train": rest, "val": list(val), "test": list(test)}


def write_manifests(folder, out, test: list[str], val: list[str] | None = None) -> list[str]:
    """``train.csv``, ``val.csv`` and ``test.csv`` in ``out``, split by speaker; returns a
    line per split saying what it holds."""
    recordings = read_recordings(folder)
    splits = split_speakers([r.speaker for r in recordings], list(test), list(val or []))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for split, speakers in splits.items():
        rows = [
            (str(r.path), DIGITS[r.digit], r.speaker) for r in recordings if r.speaker in speakers
        ]
        path = write_manifest(out / f"{split}.csv", rows, ("path", "transcript", "speaker"))
        written.append(f"fsdd {split}: {path} ({len(rows)} recordings of {', '.join(speakers)})")
    return written
