"""A character vocabulary with an explicit unknown symbol.

Index 0 is the unknown symbol, shown as U+FFFD (the Unicode replacement character); the
characters of the training text follow in code-point order. A character never seen in
training (in ``--prime`` or in an evaluation file) maps to it instead of raising
``KeyError``, and sampling never produces it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rnnkit.data.files import DataError, read_json, write_json

UNKNOWN = "\ufffd"


class Vocab:
    """Characters <-> indices; ``encode`` maps unseen characters to :data:`UNKNOWN` (index 0)."""

    def __init__(self, symbols: list[str]):
        if not symbols or symbols[0] != UNKNOWN or len(set(symbols)) != len(symbols):
            raise ValueError("a vocabulary is a list of distinct characters starting with U+FFFD")
        if any(len(s) != 1 for s in symbols):
            raise ValueError("every vocabulary symbol must be exactly one character")
        self.symbols = list(symbols)
        self.unknown = 0
        codes = np.array([ord(s) for s in symbols], dtype=np.int64)
        self._order = np.argsort(codes)  # for searchsorted lookups in encode
        self._sorted_codes = codes[self._order]

    @classmethod
    def build(cls, text: str) -> Vocab:
        return cls([UNKNOWN] + sorted(set(text) - {UNKNOWN}))

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> torch.Tensor:
        """(N,) int64 indices; characters not in the vocabulary become the unknown index."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        where = np.searchsorted(self._sorted_codes, codes).clip(0, len(self) - 1)
        found = self._sorted_codes[where] == codes
        ids = np.where(found, self._order[where], self.unknown)
        return torch.from_numpy(ids)

    def unseen(self, text: str) -> list[str]:
        """The distinct characters of ``text`` that the vocabulary lacks, in order of appearance."""
        known = set(self.symbols)
        return list(dict.fromkeys(c for c in text if c not in known))

    def decode(self, ids) -> str:
        return "".join(self.symbols[int(i)] for i in ids)

    def save(self, path: Path) -> None:
        write_json(path, {"symbols": self.symbols}, ensure_ascii=False)

    @classmethod
    def load(cls, path: Path) -> Vocab:
        """The vocabulary saved in ``path``; a damaged or hand-edited file is a DataError."""
        symbols = json_field(path, "symbols")
        try:
            return cls(symbols)
        except (TypeError, ValueError) as err:
            raise DataError(f"{path}: not a vocabulary ({err})") from None


def json_field(path: Path, key: str) -> list:
    """The list under ``key`` of a JSON object file, naming the file and line when it is not."""
    value = read_json(path)
    if not isinstance(value.get(key), list):
        raise DataError(f"{path}: expected a JSON object with a list {key!r}")
    return value[key]
