"""Parallel text for sequence to sequence: TSV pairs, tokens, vocabularies, bucketed batches.

- :func:`read_pairs` reads ``source<TAB>target`` lines (further columns ignored, so the
  Tatoeba/Anki files read as they are); a bad line (no tab, an empty side) is skipped and
  named by file and line number; a file with no good line is an error, and so is a byte
  that is not UTF-8 or a NUL byte (a binary file), named by file and line.
  :func:`read_keyed_pairs` also gives each pair's third column, its key (a Bible verse's
  ``Genesis 1:1``), "" where there is none.
- :func:`split_by_group` keeps each group (a chapter, a source sentence) in one split.
- :func:`tokenize` splits at word level (words and single punctuation marks, Unicode-aware)
  or character level; :class:`TokenVocab` maps tokens to ids with ``<pad>`` 0, ``<sos>`` 1,
  ``<eos>`` 2 and ``<unk>`` 3 first, keeping tokens seen at least ``min_freq`` times.
- :func:`bucket_batches` groups pairs of similar length so little of a batch is padding;
  :func:`padding_fraction` says how much is.

Shape letters: B batch (pairs), S source length, T target length (with <sos> or <eos>).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from rnnkit.data.files import DataError, read_bytes
from rnnkit.data.vocab import json_field

PAD, SOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<sos>", "<eos>", "<unk>")
_WORD = re.compile(r"\w+|[^\w\s]")  # a run of letters/digits, or one punctuation mark
_NO_SPACE_BEFORE = re.compile(r" ([.,;:!?%)\]}»])")
_NO_SPACE_AFTER = re.compile(r"([¿¡(\[{«]) ")

Pair = tuple[str, str]


class PairsError(DataError):
    """Parallel text that cannot be used; the message names the file and the problem."""


# --- reading ---


def parse_line(line: str) -> tuple[Pair | None, str, str]:
    """A (source, target) pair from one TSV line and its third column ("" if none), or
    (None, "", why the line is bad)."""
    columns = line.rstrip("\r\n").split("\t")
    if len(columns) < 2:
        return None, "", "no tab"
    source, target = columns[0].strip(), columns[1].strip()
    if not source or not target:
        return None, "", "empty source" if not source else "empty target"
    return (source, target), columns[2].strip() if len(columns) > 2 else "", ""


def read_keyed_pairs(path: str | Path) -> tuple[list[Pair], list[str], list[str]]:
    """The good pairs of a TSV file, each pair's key (its third column, "" if it has none),
    and one ``file:line: why`` message per bad line."""
    path = Path(path)
    if not path.is_file():
        raise PairsError(f"{path}: no such file")
    pairs, keys, bad = [], [], []
    for number, raw in enumerate(read_bytes(path, PairsError).splitlines(), start=1):
        line = decode_line(raw, path, number)
        if not line.strip():
            continue
        pair, key, why = parse_line(line)
        if pair is None:
            bad.append(f"{path}:{number}: {why}")
        else:
            pairs.append(pair)
            keys.append(key)
    if not pairs:
        detail = f" ({len(bad)} bad lines, first {bad[0]})" if bad else " (the file is empty)"
        raise PairsError(f"{path}: no line of the form source<TAB>target{detail}")
    return pairs, keys, bad


def read_pairs(path: str | Path) -> tuple[list[Pair], list[str]]:
    """The good pairs of a TSV file, and one ``file:line: why`` message per bad line."""
    pairs, _, bad = read_keyed_pairs(path)
    return pairs, bad


def decode_line(raw: bytes, path: Path, number: int) -> str:
    """One line as text; a bad UTF-8 byte or a NUL is an error naming the file and line."""
    if b"\0" in raw:
        raise PairsError(
            f"{path}:{number}: a NUL byte at byte {raw.index(0)} of the line: this looks like "
            "a binary file (or UTF-16 text), not UTF-8 text"
        )
    try:
        return raw.decode("utf-8").lstrip("\ufeff") if number == 1 else raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PairsError(
            f"{path}:{number}: not valid UTF-8 at byte {err.start} of the line ({err.reason})"
        ) from None


def bad_lines_summary(bad: list[str], shown: int = 5) -> str:
    """One line for the user: how many lines were skipped, and the first few."""
    more = f", and {len(bad) - shown} more" if len(bad) > shown else ""
    return f"skipped {len(bad)} bad line(s): " + "; ".join(bad[:shown]) + more


@dataclass
class Splits:
    """Pairs for training, validation and the final test."""

    train: list[Pair]
    val: list[Pair]
    test: list[Pair]


def split_by_source(pairs, val_fraction: float, test_fraction: float, seed: int, name: str = ""):
    """(train, val, test) pairs, split at random by distinct source sentence; ``name`` (the
    file) is named when there are too few."""
    return split_by_group(pairs, [s for s, _ in pairs], val_fraction, test_fraction, seed, name)


def joined_groups(pairs, groups: list[str]) -> dict[str, str]:
    """Each group -> the group standing for it once groups that share a source sentence are
    joined (union-find), so that no source sentence can sit in two splits."""
    parent: dict[str, str] = {}

    def root(group: str) -> str:
        while parent.setdefault(group, group) != group:
            parent[group] = parent[parent[group]]  # path halving
            group = parent[group]
        return group

    first_group_of: dict[str, str] = {}
    for (source, _), group in zip(pairs, groups, strict=True):
        a, b = root(group), root(first_group_of.setdefault(source, group))
        if a != b:
            parent[max(a, b)] = min(a, b)  # the smaller name stands for both: seed-stable
    return {group: root(group) for group in groups}


def split_by_group(
    pairs, groups: list[str], val_fraction: float, test_fraction: float, seed: int, name=""
):
    """(train, val, test) pairs, each group whole in one split: the groups (joined where they
    share a source sentence) are shuffled, and test then validation take whole groups until
    they hold their fraction of the pairs. Split by chapter, neighbouring verses of a test
    verse are not in training; split by source sentence, no source is on both sides."""
    unit_of = joined_groups(pairs, groups)
    size = Counter(unit_of[g] for g in groups)
    units = sorted(size)
    random.Random(seed).shuffle(units)
    n_test, n_val = round(len(pairs) * test_fraction), round(len(pairs) * val_fraction)
    part, held = {}, [0, 0, 0]
    for unit in units:
        which = 2 if held[2] < n_test else 1 if held[1] < n_val else 0
        part[unit], held[which] = which, held[which] + size[unit]
    splits = ([], [], [])
    for pair, group in zip(pairs, groups, strict=True):
        splits[part[unit_of[group]]].append(pair)
    if not splits[0] or not splits[1]:
        raise PairsError(
            f"{name or 'the pairs'}: {len(units)} distinct groups of pairs leave an empty train "
            f"or val split (validation {val_fraction}, test {test_fraction})"
        )
    return splits


# --- tokens ---


def tokenize(text: str, level: Literal["word", "char"] = "word", lowercase: bool = True):
    """Word level: words and punctuation marks as separate tokens; or one token per character.

    ``str.lower`` is Unicode-aware ("ÁRBOL" -> "árbol"); ``\\w`` matches letters of every
    script, so "¿Dónde está?" -> ["¿", "dónde", "está", "?"].
    """
    text = text.lower() if lowercase else text
    if level == "char":
        return list(" ".join(text.split()))
    return _WORD.findall(text)


def detokenize(tokens: list[str], level: Literal["word", "char"] = "word") -> str:
    """Join tokens back into text; word level closes up the space around punctuation."""
    if level == "char":
        return "".join(tokens)
    text = " ".join(tokens)
    return _NO_SPACE_AFTER.sub(r"\1", _NO_SPACE_BEFORE.sub(r"\1", text))


class TokenVocab:
    """Tokens <-> ids, the four special tokens first; unseen tokens map to ``<unk>``."""

    def __init__(self, tokens: list[str]):
        if tuple(tokens[:4]) != SPECIALS or len(set(tokens)) != len(tokens):
            raise ValueError(f"a vocabulary is distinct tokens starting with {SPECIALS}")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, sentences: list[list[str]], min_freq: int = 1) -> TokenVocab:
        """The tokens seen at least ``min_freq`` times, most frequent first (ties by text)."""
        if min_freq < 1:
            raise ValueError(f"min_freq must be at least 1, got {min_freq}")
        counts = Counter(t for s in sentences for t in s)
        kept = sorted(
            (t for t, n in counts.items() if n >= min_freq and t not in SPECIALS),
            key=lambda t: (-counts[t], t),
        )
        return cls(list(SPECIALS) + kept)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: list[str]) -> list[int]:
        return [self.index.get(t, UNK) for t in tokens]

    def decode(self, ids) -> list[str]:
        """Tokens up to the first ``<eos>``, without ``<sos>`` and ``<pad>``."""
        out = []
        for i in map(int, ids):
            if i == EOS:
                break
            if i not in (PAD, SOS):
                out.append(self.tokens[i])
        return out

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"tokens": self.tokens}, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> TokenVocab:
        """The vocabulary saved in ``path``; a damaged or hand-edited file is a DataError."""
        tokens = json_field(path, "tokens")
        if not all(isinstance(t, str) for t in tokens):
            raise DataError(f"{path}: every token must be a string")
        try:
            return cls(tokens)
        except ValueError as err:
            raise DataError(f"{path}: not a vocabulary ({err})") from None


def drop_long(pairs: list[tuple[list, list]], max_length: int) -> tuple[list, int]:
    """The pairs whose sides both have at most ``max_length`` tokens, and how many were dropped."""
    kept = [p for p in pairs if len(p[0]) <= max_length and len(p[1]) <= max_length]
    return kept, len(pairs) - len(kept)


# --- batches ---


@dataclass
class Batch:
    """Padded id tensors of a batch of pairs, batch first."""

    source: torch.Tensor  # (B, S) source ids, PAD after each sentence's end
    source_lengths: torch.Tensor  # (B,) real source tokens
    target_in: torch.Tensor  # (B, T) <sos> y_1 ... y_n, the decoder's inputs
    target_out: torch.Tensor  # (B, T) y_1 ... y_n <eos>, what it should predict
    teacher_forcing: float = 1.0  # the chance each step is fed the truth, not its own guess

    def to(self, device) -> Batch:
        move = [t.to(device) for t in (self.source, self.source_lengths)]
        targets = self.target_in.to(device), self.target_out.to(device)
        return Batch(*move, *targets, self.teacher_forcing)


def pad(sequences: list[list[int]], value: int = PAD) -> torch.Tensor:
    """(B, max length) int64, each row padded at its end with ``value``."""
    longest = max(len(s) for s in sequences)
    return torch.tensor([s + [value] * (longest - len(s)) for s in sequences], dtype=torch.long)


def make_batch(pairs: list[tuple[list[int], list[int]]], teacher_forcing: float = 1.0) -> Batch:
    """A :class:`Batch` from (source ids, target ids) pairs, neither holding <sos>/<eos>."""
    sources = [s for s, _ in pairs]
    lengths = torch.tensor([len(s) for s in sources], dtype=torch.long)
    target_in = pad([[SOS] + t for _, t in pairs])
    target_out = pad([t + [EOS] for _, t in pairs])
    return Batch(pad(sources), lengths, target_in, target_out, teacher_forcing)


def bucket_batches(lengths: list[tuple[int, int]], batch_size: int, seed: int) -> list[list[int]]:
    """Indices of pairs in batches of similar (source, target) length, in shuffled order.

    Pairs are shuffled, sorted by length (a stable sort, so equal lengths stay shuffled),
    cut into batches of ``batch_size`` and the batches shuffled: a new ``seed`` gives new
    batches with the same little padding.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order.sort(key=lambda i: lengths[i])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """The fraction of token slots that are padding when ``batches`` are padded to their longest."""
    slots = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1.0 - sum(lengths[i] for b in batches for i in b) / max(slots, 1)


def padding_report(lengths: list[tuple[int, int]], batch_size: int, seed: int) -> str:
    """How much of the batches is padding, bucketed by length and, for scale, not."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    shuffled = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    bucketed = bucket_batches(lengths, batch_size, seed)
    parts = []
    for side, name in ((0, "source"), (1, "target")):
        sizes = [n[side] for n in lengths]
        parts.append(
            f"{padding_fraction(sizes, bucketed):.1%} of {name} slots "
            f"({padding_fraction(sizes, shuffled):.1%} unbucketed)"
        )
    return "padding in length-bucketed batches: " + ", ".join(parts)
